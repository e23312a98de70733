"""GPU smoke test: the whole loop on one CUDA card, each stage's time and peak memory against the plan.

    python benchmarks/gpu_smoke.py --out $OUT          # on a machine with one CUDA GPU (<= 8 min)
    python benchmarks/gpu_smoke.py --dry-run           # the same plumbing on a CPU, tiny model (the suite runs it)

Needs only torch, transformers, peft, accelerate plus trl and datasets (carried as wheels to a bare GPU
machine, see the `device` notes) and the package itself; bitsandbytes is optional (QLoRA is skipped
without it). The model is built there: a random Llama with a realistic shape (~0.5B parameters, 32k
vocabulary) and the tests' locally trained tokenizer, so nothing is downloaded. Steps: `selfguide
plan --json` (the estimate), then `selfguide run` with LoRA (and QLoRA), with the settings the
package chooses for the card (bf16, gradient checkpointing); the peak of each stage is read from
`torch.cuda.max_memory_allocated` (on a CPU, the process's peak RSS) and set beside the plan's.
Writes gpu_smoke.json and gpu_smoke.md to --out.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the tests' tiny tokenizer builder

GIB = 1024**3
# The model the GPU run builds: Qwen2.5-0.5B-like (24 layers, hidden 896, MLP 4864, 14/2 heads) with a
# 32k vocabulary; random weights are enough to measure memory and time.
GPU_SHAPE = {"hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
             "num_attention_heads": 14, "num_key_value_heads": 2, "vocab_size": 32000}  # fmt: skip
TINY_SYNTHESIS = ["prompts_per_round=4", "input_max_new_tokens=24", "drop_truncated=false",
                  'input_filters_classification=["empty", "duplicate"]']  # fmt: skip


def build_model(out: Path, dry_run: bool) -> Path:
    """The tests' tiny model (dry run), or a random Llama of `GPU_SHAPE` with its tokenizer."""
    from tests.tiny_model import build_tiny_model

    tiny = build_tiny_model(out / "tiny", varied_outputs=True, num_heads=2)
    if dry_run:
        return tiny
    import shutil

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(tiny)
    for key, value in GPU_SHAPE.items():
        setattr(config, key, value)
    config.head_dim = config.hidden_size // config.num_attention_heads
    config.max_position_embeddings = 4096
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    folder = out / "model"
    model.save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"):
        if (tiny / name).is_file():
            shutil.copy(tiny / name, folder / name)
    return folder


class StagePeaks:
    """Each pipeline stage's wall time and peak memory (CUDA allocator, or process RSS on a CPU)."""

    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda
        self.rows: dict[str, dict[str, float]] = {}

    @contextlib.contextmanager
    def stage(self, name: str):
        import torch

        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        try:
            yield
        finally:
            if self.cuda:
                torch.cuda.synchronize()
                peak = torch.cuda.max_memory_allocated() / GIB
            else:
                peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 * 1024)
            row = self.rows.setdefault(name, {"seconds": 0.0, "peak_gb": 0.0})
            row["seconds"] += time.perf_counter() - started
            row["peak_gb"] = max(row["peak_gb"], peak)

    def wrap(self, owner: Any, attribute: str, name: str) -> None:
        real = getattr(owner, attribute)

        def measured(*args: Any, **kwargs: Any) -> Any:
            with self.stage(name):
                return real(*args, **kwargs)

        setattr(owner, attribute, measured)


def plan(model: Path, method: str) -> dict[str, Any]:
    """`selfguide plan --json` for this machine: the estimate each measured stage is set beside."""
    from selfguide_hf import cli

    argv = ["plan", "--task", "task738", "--model", str(model), "--method", method, "--json"]
    argv += ["--engine", "transformers"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(argv)
    text = out.getvalue()
    return {"exit": code, **json.loads(text[text.index("{") :])}


def run_method(model: Path, method: str, out: Path, dry_run: bool) -> dict[str, Any]:
    import torch

    from selfguide_hf import cli, pipeline

    peaks = StagePeaks(cuda=torch.cuda.is_available())
    saved = (pipeline.build_synthetic_dataset, pipeline.train_adapter, pipeline.evaluate)
    peaks.wrap(pipeline, "build_synthetic_dataset", "synthesis")
    peaks.wrap(pipeline, "train_adapter", "training")
    peaks.wrap(pipeline, "evaluate", "evaluation")
    size = ["--num-inputs", "8", "--max-eval", "8"] if dry_run else ["--num-inputs", "48", "--max-eval", "32"]
    argv = ["run", "--task", "task738", "--model", str(model), "--output-dir", str(out / method), *size]
    argv += ["--epochs", "1", "--min-pairs", "1", "--method", method, "--engine", "transformers"]
    for option in TINY_SYNTHESIS:
        argv += ["--synthesis-option", option]
    started = time.perf_counter()
    try:
        code = cli.main(argv)
    finally:
        pipeline.build_synthetic_dataset, pipeline.train_adapter, pipeline.evaluate = saved
    report_file = out / method / "report.json"
    report = json.loads(report_file.read_text()) if report_file.is_file() else {}
    return {"exit": code, "wall_s": round(time.perf_counter() - started, 1), "stages": peaks.rows,
            "scores": {k: (report.get(k) or {}).get("score") for k in ("baseline", "self_guided")}}  # fmt: skip


def markdown(results: dict[str, Any]) -> str:
    lines = [f"device: {results['device']}; model: {results['model_params_b'] * 1000:.1f}M parameters", ""]
    lines += ["| method | stage | seconds | peak GB measured | peak GB planned |", "|---|---|---:|---:|---:|"]
    for method, result in results["methods"].items():
        planned = results["plans"][method]
        for stage, row in result["stages"].items():
            lines.append(
                f"| {method} | {stage} | {row['seconds']:.1f} | {row['peak_gb']:.2f} | "
                f"{planned.get(f'{stage}_peak_gb', float('nan')):.2f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dry-run", action="store_true", help="CPU, tiny model: checks the script's plumbing"
    )
    parser.add_argument("--out", type=Path, default=Path("outputs/gpu-smoke"))
    args = parser.parse_args(argv)
    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not args.dry_run:
        print("gpu_smoke: no CUDA device here; --dry-run checks the plumbing on a CPU", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    model = build_model(args.out, args.dry_run)
    import importlib.util

    from selfguide_hf.memory_plan import model_shape

    methods = ["lora", *(["qlora"] if cuda and importlib.util.find_spec("bitsandbytes") else [])]
    results: dict[str, Any] = {
        "device": torch.cuda.get_device_name(0) if cuda else "CPU (dry run)",
        "model_params_b": model_shape(model).total / 1e9,
        "plans": {m: plan(model, m) for m in methods},
        "methods": {},
    }
    for method in methods:
        results["methods"][method] = run_method(model, method, args.out, args.dry_run)
    (args.out / "gpu_smoke.json").write_text(json.dumps(results, indent=2, default=str))
    (args.out / "gpu_smoke.md").write_text(markdown(results))
    print(markdown(results))
    return 0 if all(r["exit"] == 0 for r in results["methods"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
