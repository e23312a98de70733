"""The one orchestrator of a SELF-GUIDE run, behind both `selfguide run` and `recipes/sft.py`.

    prepare_run -> synthesize -> train -> evaluate (base, then tuned) -> report + card -> push

The task is parsed, the model resolved and fingerprinted and its memory planned once, in
`prepare_run`. Every stage is reused only on a full match of what it depends on (`run_dir`):
the synthetic data through the `datasets` cache, the adapter by its training identity, each
evaluation by its key; a rerun names the settings that changed. Every command of both fronts is
a slice of this module, so the same settings give the same numbers.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from selfguide_hf import publish
from selfguide_hf.distributed import end_processes
from selfguide_hf.draws import combine_draws, draw_run
from selfguide_hf.engines import resolve_engine, shared_engines
from selfguide_hf.errors import ConfigError, exit_code
from selfguide_hf.eval_stage import (
    check_rows_fit,
    eval_rows,
    evaluate,
    evaluate_in_context,
    evaluate_only,
    shared_vllm,
)
from selfguide_hf.fingerprints import hash_value
from selfguide_hf.funnel import more_inputs_advice, shortfall
from selfguide_hf.memory_plan import MemoryPlan, what_to_change
from selfguide_hf.models import (
    EMBEDDED_DESCRIPTION,
    ModelResolutionError,
    base_model_id,
    is_embedded_copy,
    resolve_model,
    tokenizer_fingerprint,
    weights_fingerprint,
)
from selfguide_hf.report import REPORT_MD, REPORT_PNG
from selfguide_hf.report import format_table as format_report_table
from selfguide_hf.run import SelfGuideRun, SyntheticData
from selfguide_hf.run_dir import (
    MANIFEST_NAME,
    RunMismatchError,
    adapter_state,
    check_adapter_base,
    check_output_dir,
    checkpoint_step,
    clear_run,
    describe_changes,
    file_digests,
    folder_lock,
    read_manifest,
    remove_partial_saves,
    resume_checkpoint,
    run_differences,
    sanitized_command,
    write_json_atomic,
)
from selfguide_hf.settings import (
    AUTO_METHOD,
    SelfGuideArguments,
    default_folders,
    synthesis_config,
    synthesis_overrides,
)
from selfguide_hf.settings_parser import reconcile_model_args
from selfguide_hf.task import TaskSpec, TaskSpecError
from selfguide_hf.trainer import TrainResult, load_dataset_file, set_cpu_threads, train_adapter
from selfguide_hf.training_identity import manifest as new_manifest
from selfguide_hf.training_identity import run_keys, synthesis_settings, training_identity

logger = logging.getLogger(__name__)

SYNTHETIC_DIR = "synthetic"
EVAL_NAME = "selfguide_eval.json"
__all__ = [
    "REPORT_MD",
    "REPORT_PNG",
    "build_synthetic_dataset",
    "end_processes",
    "error_exit",
    "evaluate_only",
    "format_report_table",
    "plan_run",
    "prepare_run",
    "run_all",
    "train",
    "what_to_change",
]


def error_exit(exc: Exception, prefix: str = "") -> int:
    """A front's answer to an error: one line and the exit code of `errors.EXIT_CODES`; a bug re-raises."""
    code = exit_code(exc)
    if code is None:
        raise exc
    print(f"{prefix}error: {exc}", file=sys.stderr)
    end_processes(wait=False)  # no barrier other ranks may never reach
    return code


def _say(message: str) -> None:
    print(message, flush=True)


# ------------------------------------------------------------------ prepare
def prepare_run(
    sg_args: SelfGuideArguments,
    training_args: Any,
    model_args: Any,
    argv: Sequence[str] | None = None,
    *,
    command_prefix: str = "accelerate launch recipes/sft.py",
    owns_output_dir: bool = False,
    front: str = "recipe",
) -> SelfGuideRun:
    """Resolve the task and the model once, check the output folder, keep the Hub token out of the arguments.

    ``sg_args`` and the others come from `settings_parser.parse_settings`, already checked.
    """
    spec = load_task(sg_args)
    default_folders(sg_args, training_args, spec.name)
    try:
        model_path = resolve_model(sg_args.model, model_args.model_revision)
        weights = weights_fingerprint(model_path)
        tokenizer = tokenizer_fingerprint(model_path)
    except ModelResolutionError as exc:
        raise ConfigError(f"--model {sg_args.model}: {exc}") from exc
    plan = plan_run(sg_args, training_args, model_args, spec=spec, model_path=model_path)
    if plan is not None and not plan.fits:  # before any weight loads
        raise ConfigError(f"memory plan: {what_to_change(plan)} (`selfguide plan` prints the table)")
    if plan is not None:
        (_say if plan.hardware.device == "cuda" else logger.info)(f"memory plan: {plan.summary()}")
    # The trainer must not push (we push with our own card after training), and must not pickle
    # the token into checkpoints (training_args.bin).
    hub_token, push, hub_model_id = (
        training_args.hub_token,
        bool(training_args.push_to_hub),
        training_args.hub_model_id,
    )
    training_args.hub_token = None
    training_args.push_to_hub = False
    run = SelfGuideRun(
        args=sg_args,
        training_args=training_args,
        model_args=model_args,
        spec=spec,
        model_path=model_path,
        weights=weights,
        tokenizer=tokenizer,
        base_model_id=base_model_id(model_path, sg_args.model),
        command=f"{command_prefix} {sanitized_command(list(sys.argv[1:] if argv is None else argv))}",
        owns_output_dir=owns_output_dir,
        front=front,
        engine=resolve_engine(sg_args.engine, model_path),
        hub_token=hub_token,
        push_adapter=push,
        hub_model_id=hub_model_id,
        hub_private=training_args.hub_private_repo,
    )
    if run.is_main_process:
        from selfguide_hf.merged_copies import remove_stale_merged_copies

        remove_stale_merged_copies()  # a killed run's merged model in the temp folder (~15 GB for 7B)
    resume = resume_checkpoint(training_args.resume_from_checkpoint, training_args.output_dir)
    if resume is not None:
        saved = read_manifest(training_args.output_dir)
        diffs = run_differences(saved, run_keys(run)) if saved else []
        if diffs:
            raise RunMismatchError(
                f"{training_args.output_dir}: cannot resume a different run ({'; '.join(diffs)})"
            )
        check_adapter_base(resume, weights, sg_args.model)
    elif not owns_output_dir:
        check_output_dir(training_args.output_dir, run_keys(run), sg_args.overwrite_output_dir)
    training_args.resume_from_checkpoint = resume
    checksynthesis_settings(sg_args)
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "0") or 0) or training_args.distributed_state.num_processes
    if training_args.use_cpu:
        set_cpu_threads(sg_args.torch_threads, local)
    return run


def load_task(sg_args: SelfGuideArguments) -> TaskSpec:
    """The task, parsed once for the whole run."""
    if not sg_args.task:
        raise ConfigError(
            "no task given: pass --task with a bundled task name (e.g. task199), a spec file or an NI task file"
        )
    try:
        return TaskSpec.load(sg_args.task)
    except TaskSpecError as exc:
        raise ConfigError(f"--task {sg_args.task}: {exc}") from exc


def plan_run(
    sg_args: SelfGuideArguments,
    training_args: Any,
    model_args: Any,
    *,
    spec: TaskSpec | None = None,
    model_path: str | None = None,
    gpu_memory_gb: float | None = None,
) -> MemoryPlan | None:
    """The memory plan of the settings, from the model's config.json (no weight loads); ``method`` auto
    takes the plan's choice. None, with a warning, for a model the meta device cannot build."""
    from selfguide_hf.memory_plan import plan_for_run

    spec = spec or load_task(sg_args)
    try:
        plan = plan_for_run(
            spec, sg_args.model, model_path, sg_args, training_args, model_args, synthesis_config(sg_args),
            gpu_memory_gb=gpu_memory_gb, engine=sg_args.engine,
        )  # fmt: skip
    except ConfigError:
        raise
    except Exception as exc:
        logger.warning("no memory plan for %s (%s: %s)", sg_args.model, type(exc).__name__, exc)
        plan = None
    if sg_args.method == AUTO_METHOD:
        sg_args.method = plan.method if plan is not None else "lora"
        reconcile_model_args(sg_args, model_args)
    if plan is not None:
        logger.debug("%s", plan.format_table())
    return plan


def sweep_folder(task: str) -> str:
    """The run folder name `selfguide sweep` gives a task."""
    from selfguide_hf.sweep import task_folder

    return task_folder(task)


def sweep_tasks(
    tasks: Sequence[str], out_dir: Path, passthrough: Sequence[str], **options: Any
) -> tuple[dict, str]:
    """`selfguide sweep`: each task's `selfguide run` as a Ray task; the results and their table."""
    from selfguide_hf.sweep import sweep
    from selfguide_hf.sweep_table import sweep_table

    results = sweep(tasks, out_dir, passthrough, **options)
    return results, sweep_table(results)


def checksynthesis_settings(sg_args: SelfGuideArguments) -> None:
    """The corpus is there and has its field before the first generation (its head only: synthesis reads it)."""
    if sg_args.dataset_path or not sg_args.corpus:
        return
    from selfguide_hf.corpus import check_corpus

    check_corpus(sg_args.corpus, sg_args.corpus_field)


# ---------------------------------------------------------------- synthesis
def build_synthetic_dataset(run: SelfGuideRun) -> SyntheticData:
    """The synthetic set through the builder (a cache hit when it exists), on every process.

    Every process calls the builder, which splits generation across the
    processes of a launch. The main process writes the rows and the funnel
    once, to ``<run_dir>/synthetic/``.
    """
    from selfguide_hf.builder import build_selfguide_dataset, get_funnel

    args = run.args
    started = time.perf_counter()
    if args.dataset_path:
        dataset = load_dataset_file(args.dataset_path)
        try:
            funnel = get_funnel(dataset)
        except ValueError:
            funnel = None
        source = f"file:{Path(args.dataset_path).name}"
    else:
        kwargs: dict[str, Any] = synthesis_overrides(args, run.front)
        if args.synthesis_cache_dir:
            kwargs["cache_dir"] = args.synthesis_cache_dir
        kwargs["min_pairs"] = run.args.min_pairs  # the builder warns on the user's threshold, then we stop
        kwargs["engine"] = run.engine
        kwargs["model_path"] = run.model_path  # resolved once, in prepare_run
        if run.vllm_options:
            kwargs["vllm_options"] = run.vllm_options
        if run.model_args.model_revision not in (None, "main"):
            kwargs["revision"] = run.model_args.model_revision
        dataset = build_selfguide_dataset(run.spec, model=run.args.model, preset=args.preset, **kwargs)
        funnel, source = get_funnel(dataset), "builder"
    rows = [
        {k: r[k] for k in ("input", "output", "reasoning") if r.get(k) or k != "reasoning"} for r in dataset
    ]
    data = SyntheticData(dataset, funnel, source, hash_value(rows), any("reasoning" in r for r in rows))
    if run.is_main_process:
        out = run.run_dir / SYNTHETIC_DIR
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / ".train.jsonl.tmp"
        dataset.to_json(str(tmp))
        tmp.replace(out / "train.jsonl")
        if funnel is not None:
            write_json_atomic(out / "funnel.json", funnel)
    run.timings["synthesis"] = time.perf_counter() - started
    logger.info("synthetic dataset: %d rows", len(dataset))
    return data


class TooFewPairsError(ConfigError):
    """Synthesis left too few pairs (or a label with fewer than 2) to train on; the data stays cached."""


def check_enough_data(runs: list[SelfGuideRun], synthetic: list[SyntheticData]) -> None:
    """Stop before training on too little data (the funnel's largest drops, what to try): one message
    for every short draw, once all are synthesized and cached."""
    problems = [_shortfall_of(one, data, k, len(runs)) for k, (one, data) in enumerate(zip(runs, synthetic))]
    if any(problems):
        raise TooFewPairsError(
            "; ".join(p for p in problems if p) + f", or {runs[0].flag('min_pairs')} 1 to train anyway"
        )


def _shortfall_of(run: SelfGuideRun, data: SyntheticData, k: int, draws: int) -> str | None:
    if run.args.dataset_path:  # the user's own rows: their call
        return None
    funnel, outputs = data.funnel or {}, list(data.dataset["output"])
    if (facts := shortfall(outputs, run.spec.labels, run.args.min_pairs, funnel)) is None:
        return None
    more = more_inputs_advice(
        run.flag, funnel.get("raw_inputs"), len(data.dataset), funnel.get("dropped") or {}, run.args.min_pairs,
        corpus=(funnel.get("notes") or {}).get("corpus"),
    )  # fmt: skip
    draw = f", draw {k} of {draws} (synthesis seed {run.args.synthesis_seed})" if draws > 1 else ""
    return f"task {run.spec.name}{draw}: {facts}. Try {more}"


# ----------------------------------------------------------------- training
def train(run: SelfGuideRun, data: SyntheticData) -> TrainResult:
    """Train the adapter, or reuse the finished one when nothing it depends on changed."""
    started = time.perf_counter()
    out = run.output_dir
    identity = training_identity(run, data)
    reusable, why = adapter_state(out, identity)
    state = run.training_args.distributed_state
    if reusable and not run.training_args.resume_from_checkpoint:
        saved = read_manifest(out) or {}
        _say(f"reusing the finished adapter in {out}")
        run.timings["training"] = time.perf_counter() - started
        return TrainResult(
            out, saved.get("train_metrics", {}), saved.get("train_rows", 0), saved.get("train_tokens", 0), 0.0
        )
    resume = run.training_args.resume_from_checkpoint
    if resume:
        logger.info("resuming from %s (step %s)", resume, checkpoint_step(resume))
    elif (saved := read_manifest(out)) is not None:
        if any(line.startswith("synthetic_rows:") for line in why):  # name the settings that made new rows
            made = describe_changes(
                {"synthesis": saved.get("synthesis_settings")}, {"synthesis": synthesis_settings(run)}
            )
            why = [*made, *why] if saved.get("synthesis_settings") is not None else why
        _say(f"training the adapter in {out} again: " + "; ".join(why[:6]) + (" ..." if len(why) > 6 else ""))
    manifest = new_manifest(run, data, identity)
    state.wait_for_everyone()  # everyone has read the folder before the main process changes it
    if run.is_main_process:
        remove_partial_saves(out)  # what a killed save left; the run folder is ours (locked)
        if not run.training_args.resume_from_checkpoint:
            clear_run(out, extra=(EVAL_NAME,))
        write_json_atomic(out / MANIFEST_NAME, manifest)  # complete: false until the save succeeded
    state.wait_for_everyone()
    result = train_adapter(
        run.args.method,
        run.model_path,
        run.model_args,
        run.training_args,
        run.spec,
        data.dataset,
        max_train_rows=run.args.max_train_rows,
        compact_lm_head=run.args.compact_lm_head,
    )
    if run.is_main_process:
        manifest.update(
            complete=True,
            files=file_digests(out),
            train_rows=result.train_rows,
            train_tokens=result.train_tokens,
            train_metrics=result.metrics,
        )
        write_json_atomic(out / MANIFEST_NAME, manifest)
    state.wait_for_everyone()
    run.timings["training"] = time.perf_counter() - started
    return result


# --------------------------------------------------------------------- all
def _all_draws_timings(run: SelfGuideRun, others: list[SelfGuideRun]) -> dict[str, float]:
    """Each stage's seconds summed over the draws (the report's minutes are the whole run's)."""
    timings = dict(run.timings)
    for other in others:
        for stage, seconds in other.timings.items():
            timings[stage] = timings.get(stage, 0.0) + seconds
    return timings


@contextlib.contextmanager
def locked(run: SelfGuideRun) -> Iterator[None]:
    """The run folder is this process's for the block (the main process holds the lock)."""
    if not run.is_main_process:
        yield
        return
    with folder_lock(run.run_dir):
        yield


def run_all(run: SelfGuideRun, rows: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Synthesize, train, evaluate (when asked), write the report and the card, push (when asked)."""
    with locked(run):
        return _run_all(run, rows)


def _run_all(run: SelfGuideRun, rows: list[dict[str, Any]] | None) -> dict[str, Any]:
    from selfguide_hf.report import build_report, write_report

    if run.args.evaluate and rows is None:
        rows = eval_rows(run)  # a bad eval file, or rows over the context, fail before synthesis
        check_rows_fit(run, rows)
    others = [draw_run(run, k) for k in range(1, run.args.draws)]  # --draws N: the same run, seeds + k
    synthetic = []
    with shared_engines():  # one synthesis engine for every draw (its samples follow each call's seed)
        for one in (run, *others):
            synthetic.append(build_synthetic_dataset(one))
    check_enough_data([run, *others], synthetic)
    data = synthetic[0]
    result = train(run, data)
    for other, other_data in zip(others, synthetic[1:], strict=True):
        train(other, other_data)
    report: dict[str, Any] | None = None
    if run.args.evaluate:
        state = run.training_args.distributed_state
        if run.is_main_process:
            assert rows is not None
            with shared_vllm(run, others) as shared:  # one engine for every arm (adapters as LoRAs)
                baseline = evaluate(run, rows, None, "baseline", shared)
                tuned = evaluate(run, rows, run.output_dir, "self_guided", shared)
                in_context = (
                    evaluate_in_context(run, rows, data, shared) if run.args.in_context_pairs else None
                )
                tuned_draws = [tuned] + [
                    evaluate(o, rows, o.output_dir, "self_guided", shared) for o in others
                ]
                in_context_draws = [in_context] + [  # each draw's own pairs in the prompt
                    evaluate_in_context(o, rows, d, shared) for o, d in zip(others, synthetic[1:], strict=True)
                ] if in_context else []  # fmt: skip
            report = build_report(
                run.spec.name,
                run.base_model_id,
                run.spec.metric,
                baseline,
                tuned,
                data.funnel,
                _all_draws_timings(run, others),
                extra={
                    "method": run.args.method,
                    "num_inputs": run.args.num_inputs,
                    "adapter": run.output_dir.name,
                    "min_pairs": run.args.min_pairs,
                    "engine": run.engine,
                    **({"model_note": EMBEDDED_DESCRIPTION} if is_embedded_copy(run.model_path) else {}),
                    "eval_split": Path(run.args.eval_file).name
                    if run.args.eval_file
                    else run.args.eval_split,
                },
                in_context=in_context,
            )
            if others:
                seeds = [(r.synthesis_seed, r.training_args.seed) for r in (run, *others)]
                combine_draws(report, tuned_draws, seeds, in_context_draws)
            write_report(report, run.run_dir)
            write_json_atomic(
                run.output_dir / EVAL_NAME,
                {
                    "split": report["eval_split"],
                    "before": baseline,
                    "after": tuned,
                    "interval": report.get("interval"),
                },
            )
        state.wait_for_everyone()
    if run.is_main_process:
        publish.write_model_card(run, data, result, report)
    if url := publish.push_run_dataset(run, data):
        _say(f"dataset pushed: {url}")
    if url := publish.push_run_adapter(run, data, result, report):
        _say(f"adapter pushed: {url}")
    run.training_args.distributed_state.wait_for_everyone()
    return report or {}
