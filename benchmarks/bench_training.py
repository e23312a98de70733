"""Training throughput and peak memory of the SFT step on the embedded model, on CPU.

What it answers (issue 4):
  * tokens/s and peak RSS of LoRA, QLoRA and full finetuning on the same synthetic-like rows;
  * the recipe's default CPU config against TRL's default `SFTConfig` with the same adapter
    (target: >= 2x faster);
  * the recipe (`recipes/sft.py`, end to end) against a bare `SFTTrainer` with the same
    settings (target: <= 10 % slower).

The rows are a bundled task's validation split rendered with the task prompt
(`to_sft_dataset`, the recipe's own conversion), standing in for synthetic rows.
Every measurement runs in a fresh subprocess (clean peak RSS, no warm caches
shared between variants) and the variants are interleaved round by round, so
a burst of load from other jobs on a shared machine hits all of them alike;
the report gives the median and the best round.

    python benchmarks/bench_training.py                       # all variants, 2 rounds
    python benchmarks/bench_training.py --variants trl-default recipe-cpu --rounds 3
    python benchmarks/bench_training.py --json results.json

Tokens are the non-padding tokens the trainer saw (TRL's ``num_tokens``); the
first optimizer step is left out of the rate (allocator and thread-pool warm-up).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CPU_CONFIG = ROOT / "recipes" / "configs" / "smollm2-135m_lora_cpu.yaml"
QLORA_CPU_CONFIG = ROOT / "recipes" / "configs" / "smollm2-135m_qlora_cpu.yaml"

# TRL's defaults as a user gets them on CPU (fp32: use_cpu, bf16 off), LoRA r16 on all linear layers.
TRL_DEFAULT: dict[str, Any] = {"use_cpu": True, "bf16": False}
TRL_DEFAULT_LORA: dict[str, Any] = {
    "lora_r": 16,
    "lora_alpha": 32,
    "lora_dropout": 0.05,
    "lora_target_modules": None,
}

# name -> (how it runs, method, settings source)
VARIANTS: dict[str, dict[str, Any]] = {
    "trl-default": {"kind": "bare", "method": "lora", "config": None},
    "recipe-cpu": {"kind": "bare", "method": "lora", "config": CPU_CONFIG},
    "recipe-cpu-e2e": {"kind": "recipe", "method": "lora", "config": CPU_CONFIG},
    "bare-cpu-e2e": {"kind": "bare-e2e", "method": "lora", "config": CPU_CONFIG},
    "qlora-cpu": {"kind": "bare", "method": "qlora", "config": QLORA_CPU_CONFIG},
    "full-cpu": {"kind": "bare", "method": "full", "config": CPU_CONFIG},
}
DEFAULT_VARIANTS = ["trl-default", "recipe-cpu", "qlora-cpu", "full-cpu", "bare-cpu-e2e", "recipe-cpu-e2e"]
RUN_KEYS = {
    "output_dir",
    "num_train_epochs",
    "max_steps",
    "save_strategy",
    "save_steps",
    "push_to_hub",
    "hub_model_id",
}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_rows(task: str, rows: int, path: Path) -> None:
    """Synthetic-like rows: the first `rows` of the task's validation split, first reference as output."""
    from selfguide_hf.bundled import load_eval_split

    split = load_eval_split(task, "validation")
    with path.open("w", encoding="utf-8") as handle:
        for row in split.select(range(min(rows, len(split)))):
            record = {
                "input": row["input"],
                "output": row["output"][0],
                "round": 0,
                "vote_share": 1.0,
                "num_agreeing": 1,
            }
            handle.write(json.dumps(record) + "\n")


def yaml_settings(config: Path | None) -> dict[str, Any]:
    if config is None:
        return {}
    import yaml

    data = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
    from selfguide_hf.settings import SelfGuideArguments  # the declared self-guide settings

    kept = {k: v for k, v in data.items() if k not in set(SelfGuideArguments.declared()) | RUN_KEYS}
    kept["compact_lm_head"] = data.get("compact_lm_head", True)
    return kept


# ------------------------------------------------------------------- workers
class _Clock:
    """Trainer callback: wall and CPU time at each step end, with TRL's running token count."""

    def __init__(self) -> None:
        from transformers import TrainerCallback

        clock = self

        class Callback(TrainerCallback):
            def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                clock.marks.append(
                    (time.perf_counter(), time.process_time(), clock.trainer._total_train_tokens)
                )

        self.callback = Callback()
        self.marks: list[tuple[float, float, int]] = []
        self.trainer: Any = None

    def rates(self) -> dict[str, Any]:
        if len(self.marks) < 2:
            raise RuntimeError("need at least 2 optimizer steps to time")
        (w0, c0, t0), (w1, c1, t1) = self.marks[0], self.marks[-1]
        return {
            "tokens_timed": t1 - t0,
            "seconds_timed": round(w1 - w0, 2),
            "tokens_per_s": round((t1 - t0) / (w1 - w0), 1),
            "tokens_per_cpu_s": round((t1 - t0) / (c1 - c0), 1),
            "steps": len(self.marks),
        }


def _sft_config(settings: dict[str, Any], output_dir: str, rows: int, steps: int | None) -> Any:
    from trl import ModelConfig, SFTConfig

    sft_fields = set(SFTConfig.__dataclass_fields__)
    model_fields = set(ModelConfig.__dataclass_fields__)
    unknown = set(settings) - sft_fields - model_fields
    if unknown:
        raise SystemExit(f"unknown settings {sorted(unknown)}")
    sft = {k: v for k, v in settings.items() if k in sft_fields}
    sft.update(
        {
            "output_dir": output_dir,
            "save_strategy": "no",
            "report_to": "none",
            "disable_tqdm": True,
            "logging_steps": 1000,
        }
    )
    rows_per_step = sft.get("per_device_train_batch_size", 8) * sft.get("gradient_accumulation_steps", 1)
    sft["max_steps"] = steps or max(2, rows // rows_per_step)
    return SFTConfig(**sft), {k: v for k, v in settings.items() if k in model_fields}


def worker_bare(
    variant: dict[str, Any], rows_file: Path, rows: int, steps: int | None, threads: int, e2e: bool, task: str
) -> dict[str, Any]:
    """A bare SFTTrainer: load, convert rows, train (and, for -e2e, save) with the variant's settings."""
    import torch
    from trl import ModelConfig, SFTTrainer

    from selfguide_hf import methods, trainer
    from selfguide_hf.bundled import bundled_spec
    from selfguide_hf.models import resolve_model
    from selfguide_hf.settings_parser import recipe_defaults

    started = time.perf_counter()
    torch.set_num_threads(threads)
    if variant["config"] is None:  # TRL as it comes, on CPU in fp32
        settings = {**TRL_DEFAULT, **TRL_DEFAULT_LORA}
    else:  # the recipe's settings: its defaults, then the YAML file
        settings = {**recipe_defaults(), **yaml_settings(variant["config"])}
        settings.pop("report_to", None)
        if settings.pop("compact_lm_head", True):
            trainer.enable_compact_lm_head()
    with tempfile.TemporaryDirectory() as out:
        args, model_settings = _sft_config(settings, out, rows, steps)
        args.completion_only_loss = True  # rows come tokenized (trainer.to_sft_dataset), as in the recipe
        model_args = ModelConfig(**model_settings)
        loaded = methods.load_for_training(variant["method"], resolve_model("default"), model_args, args)
        dataset = trainer.load_dataset_file(rows_file).select(range(rows))
        sft = trainer.to_sft_dataset(dataset, bundled_spec(task), loaded.tokenizer)
        sft_trainer = SFTTrainer(
            model=loaded.model,
            args=args,
            train_dataset=sft,
            processing_class=loaded.tokenizer,
            peft_config=loaded.peft_config,
        )
        clock = _Clock()
        clock.trainer = sft_trainer
        sft_trainer.add_callback(clock.callback)
        sft_trainer.train()
        if e2e:
            sft_trainer.save_model(out)
    return {
        **clock.rates(),
        "process_s": round(time.perf_counter() - started, 2),
        "peak_rss_mb": round(peak_rss_mb()),
    }


def worker_recipe(
    variant: dict[str, Any], rows_file: Path, rows: int, steps: int | None, threads: int, task: str
) -> dict[str, Any]:
    """The recipe's own main() on the same rows and settings (manifest, cards, dataset copy included)."""
    started = time.perf_counter()
    sys.path.insert(0, str(ROOT / "recipes"))
    import sft as recipe  # recipes/sft.py

    from selfguide_hf import trainer

    settings = yaml_settings(variant["config"])
    rows_per_step = settings.get("per_device_train_batch_size", 8) * settings.get(
        "gradient_accumulation_steps", 1
    )
    clock = _Clock()
    original = trainer.make_trainer

    def timed_trainer(*args: Any, **kwargs: Any) -> Any:
        made = original(*args, **kwargs)
        clock.trainer = made
        made.add_callback(clock.callback)
        return made

    trainer.make_trainer = timed_trainer
    with tempfile.TemporaryDirectory() as out:
        argv = [
            "--config", str(variant["config"]), "--task", task, "--dataset_path", str(rows_file),
            "--max_train_rows", str(rows), "--output_dir", out, "--max_steps", str(steps or max(2, rows // rows_per_step)),
            "--torch_threads", str(threads), "--disable_tqdm", "true", "--logging_steps", "1000",
        ]  # fmt: skip
        recipe.main(argv)
    return {
        **clock.rates(),
        "process_s": round(time.perf_counter() - started, 2),
        "peak_rss_mb": round(peak_rss_mb()),
    }


# ------------------------------------------------------------------- driver
def run_variant(
    name: str, rows_file: Path, rows: int, steps: int | None, threads: int, task: str, extra: list[str]
) -> dict[str, Any]:
    command = [sys.executable, __file__, "--worker", name, "--rows-file", str(rows_file), "--rows", str(rows)]
    command += ["--threads", str(threads), "--task", task, *(["--extra", *extra] if extra else [])]
    if steps:
        command += ["--steps", str(steps)]
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    started = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    wall = round(time.perf_counter() - started, 2)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{name} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return {
        **json.loads(lines[-1][len("RESULT ") :]),
        "wall_s": wall,
        "load_avg": round(os.getloadavg()[0], 2),
    }


def summarize(results: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for name, runs in results.items():
        rates = [r["tokens_per_s"] for r in runs]
        summary[name] = {
            "tokens_per_s_median": round(statistics.median(rates), 1),
            "tokens_per_s_best": max(rates),
            "tokens_per_cpu_s_median": round(statistics.median(r["tokens_per_cpu_s"] for r in runs), 1),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
            "wall_s_median": round(statistics.median(r["wall_s"] for r in runs), 1),
            "rounds": len(runs),
        }
    base = summary.get("trl-default")
    if base and "recipe-cpu" in summary:
        summary["speedup_recipe_cpu_vs_trl_default"] = {
            "median": round(summary["recipe-cpu"]["tokens_per_s_median"] / base["tokens_per_s_median"], 2),
            "best": round(summary["recipe-cpu"]["tokens_per_s_best"] / base["tokens_per_s_best"], 2),
        }
    if "recipe-cpu-e2e" in summary and "bare-cpu-e2e" in summary:
        rec, bare = summary["recipe-cpu-e2e"], summary["bare-cpu-e2e"]
        summary["recipe_overhead"] = {
            "wall_median": round(rec["wall_s_median"] / bare["wall_s_median"] - 1, 3),
            "tokens_per_s_median": round(1 - rec["tokens_per_s_median"] / bare["tokens_per_s_median"], 3),
        }
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--variants", nargs="+", default=None, help=f"default: {' '.join(DEFAULT_VARIANTS)}")
    parser.add_argument(
        "--extra",
        nargs="+",
        default=[],
        metavar="NAME=CONFIG.yaml",
        help="extra LoRA variants read from other YAML configs (for trying settings)",
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rows", type=int, default=64, help="rows per run (default 64)")
    parser.add_argument(
        "--steps", type=int, default=None, help="optimizer steps (default: one pass over --rows)"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch threads per run (default 2)")
    parser.add_argument("--task", default="task199")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--rows-file", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    for spec in args.extra:
        name, _, config = spec.partition("=")
        VARIANTS[name] = {"kind": "bare", "method": "lora", "config": Path(config).resolve()}
    names = args.variants or (DEFAULT_VARIANTS + [spec.partition("=")[0] for spec in args.extra])
    unknown = [name for name in names if name not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; known: {sorted(VARIANTS)}")

    if args.worker:
        variant = VARIANTS[args.worker]
        if variant["kind"] == "recipe":
            result = worker_recipe(variant, args.rows_file, args.rows, args.steps, args.threads, args.task)
        else:
            e2e = variant["kind"] == "bare-e2e"
            result = worker_bare(variant, args.rows_file, args.rows, args.steps, args.threads, e2e, args.task)
        print("RESULT " + json.dumps(result), flush=True)
        return 0

    with tempfile.TemporaryDirectory() as tmp:
        rows_file = Path(tmp) / "rows.jsonl"
        write_rows(args.task, args.rows, rows_file)
        results: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
        for round_index in range(args.rounds):
            for name in names:
                result = run_variant(
                    name, rows_file, args.rows, args.steps, args.threads, args.task, args.extra
                )
                results[name].append(result)
                print(f"round {round_index + 1} {name}: {json.dumps(result)}", flush=True)
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "threads": args.threads,
        },
        "rows": args.rows,
        "task": args.task,
        "summary": summarize(results),
        "runs": results,
    }
    print(json.dumps(report["summary"], indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
