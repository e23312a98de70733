"""The `selfguide` command: synthesize, train, evaluate, or all of them (`run`).

Each subcommand is a thin layer over library calls; `run` chains them and
writes the report. Reruns reuse the cached synthetic data, a finished adapter
and finished evaluations, so an interrupted `run` picks up where it stopped.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

logger = logging.getLogger("selfguide_hf")

DEFAULT_NUM_INPUTS = 200
DEFAULT_MAX_EVAL = 200
# Synthesis parameters that have a flag of their own: `--synthesis-option KEY=...` names the flag.
SYNTHESIS_KEYS_WITH_FLAGS: dict[str, str] = {
    "task": "--task",
    "model": "--model",
    "preset": "--preset",
    "seed": "--seed",
    "num_inputs": "--num-inputs",
    "corpus": "--corpus",
    "corpus_field": "--corpus-field",
    "corpus_mode": "--corpus-mode",
    "corpus_retriever": "--corpus-retriever",
    "corpus_embedding_model": "--corpus-embedding-model",
    "cache_dir": "the HF_DATASETS_CACHE environment variable",
}


def _number(kind: type, low: float, inclusive: bool = True):
    """An argparse type: a number of ``kind`` at least (or above) ``low``, refused with the value named."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__}, got {text!r}") from None
        if value < low or (value == low and not inclusive):
            bound = f">= {low}" if inclusive else f"> {low}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text}")
        return value

    return parse


POSITIVE_INT = _number(int, 1)
COUNT = _number(int, 0)
POSITIVE_FLOAT = _number(float, 0, inclusive=False)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--task", required=True, help="a bundled task name (e.g. task190), a spec file or an NI task file"
    )
    parser.add_argument(
        "--model", default=None, help="Hub id or local folder; default: the embedded SmolLM2-135M-Instruct"
    )
    parser.add_argument("--seed", type=COUNT, default=0)
    parser.add_argument("--output-dir", type=Path, default=None, help="default: outputs/<task>")
    parser.add_argument(
        "--threads",
        type=POSITIVE_INT,
        default=None,
        help="torch CPU threads; default: every core, or 1 when other jobs already keep them busy",
    )
    parser.add_argument(
        "--engine",
        choices=["auto", "transformers", "vllm"],
        default="auto",
        help="generation engine for synthesis and evaluation; auto: vLLM when installed, else transformers",
    )
    parser.add_argument("--kv-cache-gb", type=POSITIVE_FLOAT, default=None, help="vLLM's KV cache (GiB)")
    parser.add_argument(
        "--tensor-parallel-size", type=POSITIVE_INT, default=1, help="GPUs one vLLM model is split over"
    )
    parser.add_argument("-v", "--verbose", action="store_true")


def _add_key_value_option(parser: argparse.ArgumentParser, flag: str, what: str, example: str) -> None:
    help_text = f"override {what} (JSON value), e.g. {example}; repeatable"
    parser.add_argument(flag, action="append", default=[], metavar="KEY=VALUE", help=help_text)


def _add_synthesis(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--num-inputs", type=POSITIVE_INT, default=DEFAULT_NUM_INPUTS, help="raw inputs to synthesize"
    )
    parser.add_argument("--preset", default="default", help="synthesis preset: default or paper")
    _add_key_value_option(parser, "--synthesis-option", "one synthesis parameter", "num_samples=5")
    parser.add_argument("--corpus", type=Path, default=None, help="unlabeled texts to take task inputs from")
    parser.add_argument("--corpus-field", default="text", help="the corpus's text column (default: text)")
    parser.add_argument(
        "--corpus-mode",
        choices=["inputs", "rewrite"],
        default="inputs",
        help="inputs: retrieved texts are the inputs; rewrite: the model rewrites each (ReBase)",
    )
    parser.add_argument(
        "--corpus-retriever",
        choices=["bm25", "embeddings"],
        default="bm25",
        help="how corpus rows are found: bm25 (shared words) or embeddings (shared meaning)",
    )
    parser.add_argument(
        "--corpus-embedding-model",
        default="sentence-transformers/all-MiniLM-L6-v2",
        help="sentence-transformers model for --corpus-retriever embeddings",
    )
    parser.add_argument(
        "--min-pairs",
        type=POSITIVE_INT,
        default=16,
        help="stop before training when fewer synthetic pairs survive (or a label has < 2); 1 trains anyway",
    )


def _add_training(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--method", default="lora", choices=["lora", "qlora", "full"])
    parser.add_argument(
        "--epochs", type=POSITIVE_FLOAT, default=None, help="default: the recipe's CPU default"
    )
    parser.add_argument("--learning-rate", type=POSITIVE_FLOAT, default=None)
    _add_key_value_option(parser, "--training-option", "one SFTConfig / ModelConfig setting", "lora_r=8")
    parser.add_argument("--push-to-hub", metavar="REPO_ID", help="push the adapter with its model card")
    parser.add_argument("--push-dataset", metavar="REPO_ID", help="push the synthetic dataset with its card")
    parser.add_argument(
        "--private",
        action="store_true",
        default=None,
        help="create the pushed repositories private (default: public, the Hub's default)",
    )


def _add_eval(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--eval-file", type=Path, default=None, help="JSONL or CSV with input and output")
    parser.add_argument("--split", default="test", help="bundled split when no --eval-file (validation/test)")
    parser.add_argument("--max-eval", type=COUNT, default=DEFAULT_MAX_EVAL, help="rows to score (0 = all)")
    parser.add_argument("--batch-size", type=POSITIVE_INT, default=8)


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


def parse_overrides(pairs: list[str], flag: str = "--synthesis-option") -> dict[str, Any]:
    """`KEY=VALUE` pairs; values are JSON when they parse, strings otherwise."""
    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{flag} expects KEY=VALUE, got {pair!r}")
        try:
            overrides[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key.strip()] = value
    return overrides


def _run_dir(args: argparse.Namespace, task: str) -> Path:
    """``--output-dir``, or outputs/<task name> (the name read from the spec when --task is a file)."""
    if args.output_dir is not None:
        return Path(args.output_dir)
    from selfguide_hf.task import TaskSpec

    return Path("outputs") / TaskSpec.load(task).name


def _training_settings(args: argparse.Namespace) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    if getattr(args, "epochs", None) is not None:
        settings["num_train_epochs"] = args.epochs
    if getattr(args, "learning_rate", None) is not None:
        settings["learning_rate"] = args.learning_rate
    for key, value in parse_overrides(
        getattr(args, "training_option", None) or [], "--training-option"
    ).items():
        settings[key] = value
    return settings


def make_run(args: argparse.Namespace, argv: list[str]) -> Any:
    """The pipeline's run for this command: the recipe's arguments built from the typed flags."""
    from selfguide_hf.pipeline import prepare_run
    from selfguide_hf.recipe_args import cli_recipe_args

    run_dir = _run_dir(args, args.task)
    overrides = parse_overrides(args.synthesis_option, "--synthesis-option")
    for key, flag in SYNTHESIS_KEYS_WITH_FLAGS.items():
        if key in overrides:
            raise ValueError(f"--synthesis-option {key}=...: give it with {flag}, not as a synthesis option")
    synthesis = {"preset": args.preset, **overrides}
    max_eval = getattr(args, "max_eval", DEFAULT_MAX_EVAL)
    sg_args, training_args, model_args = cli_recipe_args(
        task=args.task,
        model=args.model,
        method=getattr(args, "method", "lora"),
        output_dir=run_dir / "adapter",
        run_dir=run_dir,
        synthesis=synthesis,
        num_inputs=args.num_inputs,
        synthesis_seed=args.seed,
        training=_training_settings(args),
        threads=args.threads,
        eval_file=getattr(args, "eval_file", None),
        eval_split=getattr(args, "split", "test"),
        eval_max_rows=max_eval if max_eval else sys.maxsize,
        eval_batch_size=getattr(args, "batch_size", 8),
        min_pairs=args.min_pairs,
        engine=args.engine,
        corpus=args.corpus,
        corpus_field=args.corpus_field,
        corpus_mode=args.corpus_mode,
        corpus_retriever=args.corpus_retriever,
        corpus_embedding_model=args.corpus_embedding_model,
        vllm_kv_cache_gb=args.kv_cache_gb,
        vllm_tensor_parallel_size=args.tensor_parallel_size,
        push_to_hub=getattr(args, "push_to_hub", None),
        push_dataset=getattr(args, "push_dataset", None),
        private=getattr(args, "private", None),
    )
    return prepare_run(
        sg_args,
        training_args,
        model_args,
        argv,
        command_prefix="selfguide",
        owns_output_dir=True,
        cli_flags=True,
    )


# --------------------------------------------------------------- commands
def cmd_synthesize(args: argparse.Namespace, argv: list[str]) -> None:
    from selfguide_hf.pipeline import SYNTHETIC_DIR, build_synthetic_dataset, locked

    run = make_run(args, argv)
    with locked(run):
        data = build_synthetic_dataset(run)
    print(f"{len(data.dataset)} synthetic pairs -> {run.run_dir / SYNTHETIC_DIR / 'train.jsonl'}")


def cmd_train(args: argparse.Namespace, argv: list[str]) -> None:
    """Train (or reuse) the adapter in <output-dir>/adapter."""
    from selfguide_hf import publish
    from selfguide_hf.pipeline import build_synthetic_dataset, check_enough_data, locked, train

    run = make_run(args, argv)
    with locked(run):
        data = build_synthetic_dataset(run)
        check_enough_data(run, data)
        result = train(run, data)
        publish.write_model_card(run, data, result)
        for url in (publish.push_run_dataset(run, data), publish.push_run_adapter(run, data, result)):
            if url:
                print(f"pushed: {url}")
    print(f"adapter -> {run.output_dir}")


def cmd_evaluate(args: argparse.Namespace, argv: list[str]) -> None:
    """Score the model, or the model with --adapter, on the task's rows (no cache: always scores)."""
    from selfguide_hf.engines import resolve_engine
    from selfguide_hf.evaluation import DEFAULT_MAX_EVAL as EVAL_DEFAULT
    from selfguide_hf.evaluation import evaluate_saved_model, load_eval_rows, write_predictions
    from selfguide_hf.models import resolve_model, weights_fingerprint
    from selfguide_hf.run_dir import check_adapter_base
    from selfguide_hf.task import TaskSpec
    from selfguide_hf.trainer import set_cpu_threads

    spec = TaskSpec.load(args.task)
    max_eval = args.max_eval if args.max_eval is not None else EVAL_DEFAULT
    rows = load_eval_rows(spec, args.eval_file, split=args.split, max_eval=max_eval or None)
    model_path = resolve_model(args.model)
    if args.adapter is not None:
        check_adapter_base(args.adapter, weights_fingerprint(model_path), args.model)
    set_cpu_threads(args.threads)
    result = evaluate_saved_model(
        model_path,
        args.adapter,
        spec,
        rows,
        batch_size=args.batch_size,
        engine=resolve_engine(args.engine, model_path),
        vllm_options={"kv_cache_gb": args.kv_cache_gb} if args.kv_cache_gb else None,
    )
    if args.predictions is not None:
        write_predictions(Path(args.predictions), rows, result.predictions)
    line = f"{spec.name}: {spec.metric} = {result.score:.2f} on {result.num_examples} rows"
    if result.majority_rate is not None:
        line += f" (majority-class rate {result.majority_rate:.2f})"
    print(line)


def cmd_run(args: argparse.Namespace, argv: list[str]) -> None:
    from selfguide_hf.pipeline import run_all
    from selfguide_hf.report import REPORT_MD, REPORT_PNG, format_table

    run = make_run(args, argv)
    report = run_all(run)
    print()
    print(format_table(report))
    print(f"\nreport: {run.run_dir / REPORT_MD}  figure: {run.run_dir / REPORT_PNG}")
    if report.get("verdict_sentence"):
        print(f"\n{report['verdict_sentence']}.")


COMMANDS = {"synthesize": cmd_synthesize, "train": cmd_train, "evaluate": cmd_evaluate, "run": cmd_run}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logger.setLevel(logging.INFO)
    from selfguide_hf.distributed import end_processes
    from selfguide_hf.task import TaskSpecError

    try:
        COMMANDS[args.command](args, argv)
    except (TaskSpecError, ValueError, RuntimeError, OSError) as exc:
        print(f"selfguide {args.command}: error: {exc}", file=sys.stderr)
        end_processes(wait=False)
        return 2
    end_processes()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
