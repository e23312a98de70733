"""The `selfguide` command: each subcommand is a slice of the one pipeline.

    selfguide synthesize|train|run|evaluate|plan [--config recipe.yaml] [flags]
    selfguide sweep --tasks task199,task738 [--jobs N] [--ray-address ADDR] [run flags]

The flags are the settings of `selfguide_hf.settings` (the recipe's, with
dashes or underscores), read by the same parser as `recipes/sft.py`, so a
recipe config works here too and flags override it. Reruns reuse the cached
synthetic data, a finished adapter and finished evaluations, so an
interrupted `run` picks up where it stopped. Errors are one line, with the
exit code of `errors.EXIT_CODES` (the same as the recipe's).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from selfguide_hf import pipeline
from selfguide_hf.errors import ConfigError
from selfguide_hf.settings_parser import parse_settings

logger = logging.getLogger("selfguide_hf")

USAGE = """usage: selfguide {synthesize,train,evaluate,run,plan,sweep} [--config FILE.yaml] [flags]

SELF-GUIDE: a model improves at one task on data it writes itself.

commands:
  synthesize  write the synthetic task data (cached)
  train       synthesize (cached) and finetune an adapter, write its card, push when asked
  evaluate    score the model (or --adapter DIR) on the task's rows; --predictions FILE keeps every answer
  run         synthesize, train, evaluate the base and the tuned model, report
  plan        the settings chosen for this machine and each stage's memory, from the model's config.json
              alone (no weights); --gpu-memory-gb N plans for a card you do not have, --json for a script;
              exit 2 when the run would not fit
  sweep       `run` for many tasks at once (--tasks A,B,...), each a Ray task on a local cluster or the one at
              --ray-address (--jobs N at once here; --cpus-per-task, --gpus-per-task), then one table of
              verdicts; --output-dir holds a folder per task (default outputs/sweep); exit 1 if a task failed

`selfguide COMMAND --help` lists every flag: the settings of recipes/sft.py (docs/TRAINING.md),
plus --synthesis-option KEY=VALUE, --training-option KEY=VALUE, --push-to-hub REPO,
--push-dataset REPO, --private, -v. --output-dir is the run folder (the adapter goes in
<output-dir>/adapter)."""


# --------------------------------------------------------------- commands
def cmd_synthesize(run: Any, extra: dict[str, Any]) -> None:
    with pipeline.locked(run):
        data = pipeline.build_synthetic_dataset(run)
    print(f"{len(data.dataset)} synthetic pairs -> {run.run_dir / pipeline.SYNTHETIC_DIR / 'train.jsonl'}")


def cmd_train(run: Any, extra: dict[str, Any]) -> None:
    """Synthesize (cached), train (or reuse) the adapter, write its card and push when asked."""
    pipeline.run_all(run)
    print(f"adapter -> {run.output_dir}")


def cmd_evaluate(run: Any, extra: dict[str, Any]) -> None:
    """Score the model, or the model with --adapter, on the task's rows (no cache: always scores)."""
    result = pipeline.evaluate_only(run, extra["adapter"], extra["predictions"])
    line = f"{run.spec.name}: {run.spec.metric} = {result.score:.2f} on {result.num_examples} rows"
    if result.majority_rate is not None:
        line += f" (majority-class rate {result.majority_rate:.2f})"
    print(line)


def cmd_run(run: Any, extra: dict[str, Any]) -> None:
    report = pipeline.run_all(run)
    print()
    print(pipeline.format_report_table(report))
    print(f"\nreport: {run.run_dir / pipeline.REPORT_MD}  figure: {run.run_dir / pipeline.REPORT_PNG}")
    if report.get("verdict_sentence"):
        print(f"\n{report['verdict_sentence']}.")


def cmd_plan(settings: tuple[Any, Any, Any], extra: dict[str, Any]) -> int:
    """Print the resolved settings and the memory table (or one JSON object); 2 when it does not fit."""
    import json

    sg_args, training_args, model_args = settings
    plan = pipeline.plan_run(*settings, gpu_memory_gb=extra["gpu-memory-gb"])
    if plan is None:
        raise ConfigError(f"--model {sg_args.model}: no memory plan for this model (see the warning above)")
    resolved = {
        "model": sg_args.model,
        "method": sg_args.method,
        "dtype": model_args.dtype,
        "bf16": training_args.bf16,
        "fp16": training_args.fp16,
        "gradient_checkpointing": training_args.gradient_checkpointing,
        "per_device_train_batch_size": training_args.per_device_train_batch_size,
        "max_length": training_args.max_length,
        "lora_r": model_args.lora_r,
        "engine": sg_args.engine,
    }
    if extra["json"]:
        print(json.dumps({**plan.to_dict(), "settings": resolved}, indent=2))
    else:
        print("settings: " + ", ".join(f"{k} {v}" for k, v in resolved.items()))
        print(plan.format_table())
    if not plan.fits:
        print(f"selfguide plan: error: {pipeline.what_to_change(plan)}", file=sys.stderr)
        return 2
    return 0


COMMANDS = {"synthesize": cmd_synthesize, "train": cmd_train, "evaluate": cmd_evaluate, "run": cmd_run}
# Flags of one command that are not settings: what `evaluate` scores, where it writes the answers;
# the card `plan` plans for, and its output as JSON.
COMMAND_FLAGS = {
    "evaluate": ("--adapter", "--predictions"),
    "plan": ("--gpu-memory-gb", "--json"),
    "sweep": ("--tasks", "--jobs", "--cpus-per-task", "--gpus-per-task", "--output-dir"),
}
NUMBER_FLAGS = {"--gpu-memory-gb": float, "--jobs": int, "--cpus-per-task": int, "--gpus-per-task": float}
DEFAULT_SWEEP_DIR = Path("outputs") / "sweep"
SWITCHES = ("--json",)


def split_command_flags(command: str, argv: list[str]) -> tuple[dict[str, Any], list[str]]:
    """The command's own flags (``--adapter DIR``), ``-v``, and the rest (the settings' flags)."""
    extra: dict[str, Any] = {
        "adapter": None,
        "predictions": None,
        "verbose": False,
        "gpu-memory-gb": None,
        "json": False,
        "tasks": None,
        "jobs": 1,
        "cpus-per-task": None,
        "gpus-per-task": None,
        "output-dir": DEFAULT_SWEEP_DIR,
    }
    rest: list[str] = []
    i = 0
    while i < len(argv):
        flag, eq, inline = argv[i].partition("=")
        if flag in ("-v", "--verbose"):
            extra["verbose"] = True
        elif flag in SWITCHES and flag in COMMAND_FLAGS.get(command, ()):
            extra[flag[2:]] = True
        elif flag in COMMAND_FLAGS.get(command, ()):
            if not eq and (i + 1 >= len(argv) or argv[i + 1].startswith("-")):
                raise ConfigError(f"{flag} needs a value")
            extra[flag[2:]] = _command_value(flag, inline if eq else argv[i + 1])
            i += 0 if eq else 1
        else:
            rest.append(argv[i])
        i += 1
    return extra, rest


def _command_value(flag: str, text: str) -> Any:
    if flag == "--tasks":
        tasks = [t.strip() for t in text.split(",") if t.strip()]
        if not tasks:
            raise ConfigError("--tasks: expected task names or spec files, separated by commas")
        return tasks
    kind = NUMBER_FLAGS.get(flag)
    if kind is None:
        return Path(text)
    try:
        value = kind(text)
    except ValueError:
        raise ConfigError(
            f"{flag}: expected {'an integer' if kind is int else 'a number'}, got {text!r}"
        ) from None
    if not 0 < value < 10_000 and not (flag == "--gpus-per-task" and value == 0):
        raise ConfigError(f"{flag}: expected a number > 0, got {text}")
    return value


def cmd_sweep(settings: tuple[Any, Any, Any], extra: dict[str, Any], rest: list[str], argv: list[str]) -> int:
    """Every task's `selfguide run` (the flags checked once, here), then the table of verdicts."""
    if not extra["tasks"]:
        raise ConfigError("selfguide sweep needs --tasks A,B,... (bundled names or spec files)")
    if settings[0].task:
        raise ConfigError("selfguide sweep takes --tasks A,B,..., not --task")
    folders = [pipeline.sweep_folder(task) for task in extra["tasks"]]
    twice = sorted({f for f in folders if folders.count(f) > 1})
    if twice:  # two tasks would write one run folder
        raise ConfigError(
            f"--tasks: more than one task would use the run folder {twice[0]!r}; rename a spec file"
        )
    results, table = pipeline.sweep_tasks(
        extra["tasks"],
        extra["output-dir"],
        rest,
        command="selfguide " + " ".join(argv),
        jobs=extra["jobs"],
        address=settings[0].ray_address,
        cpus_per_task=extra["cpus-per-task"],
        gpus_per_task=extra["gpus-per-task"],
    )
    print(table)
    failed = [row["task"] for row in results["rows"] if "error" in row]
    if failed:
        print(f"selfguide sweep: {len(failed)} of {len(results['rows'])} task(s) failed: {', '.join(failed)}",
              file=sys.stderr)  # fmt: skip
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command = argv[0]
    if command not in (*COMMANDS, "plan", "sweep"):
        print(f"{USAGE}\n\nselfguide: error: unknown command {command!r}", file=sys.stderr)
        return 2
    try:
        extra, rest = split_command_flags(command, argv[1:])
        logging.basicConfig(
            level=logging.INFO if extra["verbose"] else logging.WARNING,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        logger.setLevel(logging.INFO)
        settings = parse_settings(
            rest,
            front="cli",
            evaluate=command in ("run", "plan", "sweep"),
            prog=f"selfguide {command}",
            gpu_memory_gb=extra["gpu-memory-gb"],
        )
        if command == "plan":
            return cmd_plan(settings, extra)
        if command == "sweep":
            return cmd_sweep(settings, extra, rest, argv)
        run = pipeline.prepare_run(
            *settings, argv, command_prefix="selfguide", owns_output_dir=True, front="cli"
        )
        COMMANDS[command](run, extra)
    except Exception as exc:
        return pipeline.error_exit(exc, f"selfguide {command}: ")
    pipeline.end_processes()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
