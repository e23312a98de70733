"""The `selfguide` command: synthesize, train, evaluate, or all of them (`run`).

Each subcommand is a thin layer over library calls; `run` chains them and
writes the report. Reruns reuse the cached synthetic data, a finished adapter
and finished evaluations, so an interrupted `run` picks up where it stopped.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger("selfguide_hf")

DEFAULT_NUM_INPUTS = 200
DEFAULT_MAX_EVAL = 200


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--task", required=True, help="a bundled task name (e.g. task190), a spec file or an NI task file"
    )
    parser.add_argument(
        "--model", default=None, help="Hub id or local folder; default: the embedded SmolLM2-135M-Instruct"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", type=Path, default=None, help="default: outputs/<task>")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads; default: every core, or 1 when other jobs already keep them busy",
    )
    parser.add_argument("-v", "--verbose", action="store_true")


def _add_synthesis(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--num-inputs", type=int, default=DEFAULT_NUM_INPUTS, help="raw inputs to synthesize")
    parser.add_argument("--preset", default="default", help="synthesis preset: default or paper")
    parser.add_argument(
        "--synthesis-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one synthesis parameter (JSON value), e.g. num_samples=5; repeatable",
    )


def _add_training(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--method", default="lora", choices=["lora", "qlora", "full"])
    parser.add_argument("--epochs", type=float, default=None, help="default: the recipe's CPU default")
    parser.add_argument("--learning-rate", type=float, default=None)


def _add_eval(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--eval-file", type=Path, default=None, help="JSONL or CSV with input and output")
    parser.add_argument("--split", default="test", help="bundled split when no --eval-file (validation/test)")
    parser.add_argument("--max-eval", type=int, default=DEFAULT_MAX_EVAL, help="rows to score (0 = all)")
    parser.add_argument("--batch-size", type=int, default=8)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="selfguide", description="SELF-GUIDE: a model improves at one task on data it writes itself."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    synth = sub.add_parser("synthesize", help="write the synthetic task data (cached)")
    _add_common(synth)
    _add_synthesis(synth)
    train = sub.add_parser("train", help="synthesize (cached) and finetune an adapter")
    _add_common(train)
    _add_synthesis(train)
    _add_training(train)
    evaluate = sub.add_parser("evaluate", help="score a model (optionally with an adapter) on the task")
    _add_common(evaluate)
    _add_eval(evaluate)
    evaluate.add_argument("--adapter", type=Path, default=None, help="a trained adapter folder")
    evaluate.add_argument(
        "--predictions", type=Path, default=None, help="write every answer here (JSONL) for inspection"
    )
    run = sub.add_parser("run", help="synthesize, train, evaluate baseline and self-guided, report")
    _add_common(run)
    _add_synthesis(run)
    _add_training(run)
    _add_eval(run)
    return parser


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """`KEY=VALUE` pairs; values are JSON when they parse, strings otherwise."""
    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--synthesis-option expects KEY=VALUE, got {pair!r}")
        try:
            overrides[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key.strip()] = value
    return overrides


def _output_dir(args: argparse.Namespace, spec_name: str) -> Path:
    return args.output_dir or Path("outputs") / spec_name


# --------------------------------------------------------------- commands
def cmd_synthesize(args: argparse.Namespace) -> dict[str, Any]:
    from selfguide_hf.builder import build_selfguide_dataset, get_funnel
    from selfguide_hf.task import TaskSpec

    spec = TaskSpec.load(args.task)
    dataset = build_selfguide_dataset(
        args.task,
        model=args.model,
        num_inputs=args.num_inputs,
        seed=args.seed,
        preset=args.preset,
        **parse_overrides(args.synthesis_option),
    )
    out = _output_dir(args, spec.name) / "synthetic"
    out.mkdir(parents=True, exist_ok=True)
    dataset.to_json(str(out / "train.jsonl"))
    funnel = get_funnel(dataset)
    (out / "funnel.json").write_text(json.dumps(funnel, indent=2) + "\n", encoding="utf-8")
    print(f"{len(dataset)} synthetic pairs -> {out / 'train.jsonl'}")
    return {"dataset": dataset, "funnel": funnel}


# The recipe's CPU settings (recipes/configs/smollm2-135m_lora_cpu.yaml), measured in docs/TRAINING.md.
CPU_TRAINING_DEFAULTS: dict[str, Any] = {
    "lora_r": 16,
    "lora_alpha": 32,
    "lora_dropout": 0.0,
    "lora_target_modules": "all-linear",
    "gradient_checkpointing": False,
    "per_device_train_batch_size": 2,
    "gradient_accumulation_steps": 4,
    "max_length": 1024,
    "learning_rate": 2.0e-4,
    "lr_scheduler_type": "linear",
    "num_train_epochs": 3,
    "logging_steps": 5,
}


def training_argv(args: argparse.Namespace, adapter_dir: Path) -> list[str]:
    """The recipe's flags for this CLI call (same parser, so same checks and defaults)."""
    settings = dict(CPU_TRAINING_DEFAULTS)
    if args.epochs is not None:
        settings["num_train_epochs"] = args.epochs
    if args.learning_rate is not None:
        settings["learning_rate"] = args.learning_rate
    synthesis = {"preset": args.preset, **parse_overrides(args.synthesis_option)}
    argv = [
        "--task", str(args.task),
        "--model", args.model or "default",
        "--method", args.method,
        "--num_inputs", str(args.num_inputs),
        "--synthesis_seed", str(args.seed),
        "--synthesis", json.dumps(synthesis),
        "--output_dir", str(adapter_dir),
    ]  # fmt: skip
    for key, value in settings.items():
        argv += [f"--{key}", str(value)]
    if getattr(args, "threads", None):
        argv += ["--torch_threads", str(args.threads)]
    return argv


def cmd_train(args: argparse.Namespace) -> Path:
    """Train (or reuse) the adapter in <output-dir>/adapter; returns its folder."""
    from selfguide_hf import training
    from selfguide_hf.task import TaskSpec

    spec = TaskSpec.load(args.task)
    adapter_dir = _output_dir(args, spec.name) / "adapter"
    argv = training_argv(args, adapter_dir)
    sg_args, training_args, model_args = training.parse_recipe_args(argv)
    saved = training.read_manifest(adapter_dir)
    if saved is not None and (adapter_dir / "adapter_model.safetensors").is_file():
        wanted = training.run_manifest(
            sg_args, spec, training.resolve_model(sg_args.model), model_args, training_args
        )
        if not training.manifest_differences(saved, wanted):
            print(f"reusing the finished adapter in {adapter_dir}")
            return adapter_dir
    run = training.prepare_run(sg_args, training_args, model_args, ["selfguide", "train", *argv])
    data = training.build_synthetic_dataset(run)
    result = training.train_adapter(run, data)
    training.write_run_outputs(run, data, result)
    print(f"adapter -> {adapter_dir}")
    return adapter_dir


def _load_for_eval(model_name: str | None, adapter: Path | None) -> tuple[Any, Any]:
    from selfguide_hf.models import load_causal_lm

    if adapter is not None and not (adapter / "adapter_config.json").is_file():
        return load_causal_lm(str(adapter))  # full finetuning saved a whole model
    model, tokenizer = load_causal_lm(model_name)
    if adapter is not None:
        from peft import PeftModel

        from selfguide_hf.models import resolve_model
        from selfguide_hf.training import check_adapter_base

        check_adapter_base(adapter, resolve_model(model_name), model_name)
        model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
        model.eval()
    return model, tokenizer


def _eval_rows(args: argparse.Namespace, spec: Any) -> list[dict[str, Any]]:
    from selfguide_hf.evaluation import load_eval_rows

    return load_eval_rows(spec, args.eval_file, split=args.split, max_eval=args.max_eval or None)


def write_predictions(path: Path, rows: list[dict[str, Any]], predictions: list[str]) -> None:
    """Every eval row with the model's raw answer, so a score can be checked by eye."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for row, prediction in zip(rows, predictions, strict=True):
            record = {"input": row["input"], "references": row["output"], "prediction": prediction}
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    tmp.replace(path)


def cmd_evaluate(
    args: argparse.Namespace,
    adapter: Path | None = None,
    rows: list[dict[str, Any]] | None = None,
    predictions_file: Path | None = None,
) -> dict[str, Any]:
    from selfguide_hf.evaluation import evaluate_model
    from selfguide_hf.task import TaskSpec

    spec = TaskSpec.load(args.task)
    rows = _eval_rows(args, spec) if rows is None else rows
    model, tokenizer = _load_for_eval(
        args.model, adapter if adapter is not None else getattr(args, "adapter", None)
    )
    result = evaluate_model(model, tokenizer, spec, rows, batch_size=args.batch_size)
    predictions_file = predictions_file or getattr(args, "predictions", None)
    if predictions_file is not None:
        write_predictions(Path(predictions_file), rows, result.predictions)
    summary = result.summary()
    line = f"{spec.name}: {spec.metric} = {result.score:.2f} on {result.num_examples} rows"
    if result.majority_rate is not None:
        line += f" (majority-class rate {result.majority_rate:.2f})"
    print(line)
    return summary


def _cached_eval(path: Path, key: dict[str, Any], compute: Any) -> dict[str, Any]:
    """Reuse a finished evaluation when its inputs (model, adapter, rows) are unchanged."""
    if path.is_file():
        saved = json.loads(path.read_text(encoding="utf-8"))
        if saved.get("key") == key:
            logger.info("reusing %s", path)
            return saved["result"]
    result = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"key": key, "result": result}, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
    return result


def cmd_run(args: argparse.Namespace) -> dict[str, Any]:
    from selfguide_hf.models import resolve_model, weights_fingerprint
    from selfguide_hf.report import build_report, format_table, write_report
    from selfguide_hf.task import TaskSpec

    spec = TaskSpec.load(args.task)
    out = _output_dir(args, spec.name)
    args.output_dir = out
    # Read (and check) the eval rows first: a bad eval file fails before synthesis and training.
    rows = _eval_rows(args, spec)
    timings: dict[str, float] = {}

    start = time.time()
    synthesized = cmd_synthesize(args)
    timings["synthesis"] = time.time() - start

    start = time.time()
    adapter = cmd_train(args)
    timings["training"] = time.time() - start

    resolved = resolve_model(args.model)
    key = {
        "model": weights_fingerprint(resolved),
        "task": spec.fingerprint(),
        "eval_file": str(args.eval_file) if args.eval_file else f"bundled:{args.split}",
        "max_eval": args.max_eval,
        # the rows themselves: an eval file edited in place must not reuse old scores
        "rows": hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()[:16],
    }
    start = time.time()
    baseline = _cached_eval(
        out / "eval" / "baseline.json",
        key,
        lambda: cmd_evaluate(args, None, rows, out / "eval" / "baseline.predictions.jsonl"),
    )
    timings["baseline evaluation"] = time.time() - start
    start = time.time()
    tuned_key = dict(key, adapter=weights_fingerprint(adapter))
    tuned = _cached_eval(
        out / "eval" / "self_guided.json",
        tuned_key,
        lambda: cmd_evaluate(args, adapter, rows, out / "eval" / "self_guided.predictions.jsonl"),
    )
    timings["self-guided evaluation"] = time.time() - start

    report = build_report(
        spec.name,
        args.model or "embedded SmolLM2-135M-Instruct",
        spec.metric,
        baseline,
        tuned,
        synthesized["funnel"],
        timings,
        extra={"adapter": str(adapter), "num_inputs": args.num_inputs, "method": args.method},
    )
    paths = write_report(report, out)
    print()
    print(format_table(report))
    print(f"\nreport: {paths['md']}  figure: {paths['png']}")
    return report


COMMANDS = {"synthesize": cmd_synthesize, "train": cmd_train, "evaluate": cmd_evaluate, "run": cmd_run}


def set_threads(requested: int | None) -> None:
    """CPU threads for synthesis and evaluation, by the rule training uses.

    On a machine whose cores other jobs already keep busy, a single thread is
    several times faster than one per core (docs/TRAINING.md); an explicit
    ``--threads`` or ``OMP_NUM_THREADS`` wins.
    """
    import torch

    if torch.cuda.is_available() or (requested is None and os.environ.get("OMP_NUM_THREADS")):
        return
    from selfguide_hf.training import auto_cpu_threads

    threads = requested or auto_cpu_threads(1)
    torch.set_num_threads(threads)
    logger.info("torch CPU threads: %d", threads)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logger.setLevel(logging.INFO)
    from selfguide_hf.task import TaskSpecError

    try:
        set_threads(args.threads)
        COMMANDS[args.command](args)
    except (TaskSpecError, ValueError, RuntimeError, OSError) as exc:
        print(f"selfguide {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
