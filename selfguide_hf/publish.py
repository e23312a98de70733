"""What a run publishes: the model card beside the adapter, and the pushes of adapter and dataset.

The card states the base model by its Hub id, the task, how the synthetic
data was made and how much survived each filter, the evaluation and the
exact command; the pushes go through `selfguide_hf.hub` (huggingface_hub's
commit API) from the main process only, with the token kept in memory.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from selfguide_hf.cards import SPEC_FILE, CardInfo, dataset_card, model_card
from selfguide_hf.models import EMBEDDED_DESCRIPTION, MARKER, is_embedded, is_embedded_copy
from selfguide_hf.run_dir import read_manifest
from selfguide_hf.trainer import TrainResult

if TYPE_CHECKING:  # only the types; importing them would load the recipe arguments (TRL)
    from selfguide_hf.run import SelfGuideRun, SyntheticData

logger = logging.getLogger(__name__)

__all__ = ["card_info", "push_run_adapter", "push_run_dataset", "write_model_card"]


def write_model_card(
    run: SelfGuideRun, data: SyntheticData, result: TrainResult, report: dict[str, Any] | None = None
) -> Path:
    """The model card, as README.md beside the adapter (main process only)."""
    path = run.output_dir / "README.md"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(model_card(card_info(run, data, result, report)), encoding="utf-8")
    tmp.replace(path)
    return path


def public_model_id(run: SelfGuideRun) -> str:
    """The base model as others can name it: its Hub id; a plain local folder only by its folder name."""
    name = run.base_model_id
    if name.startswith(("/", "~", ".")) or (os.sep in name and Path(name).exists()):
        logger.warning(
            "the base model is the local folder %s; published files name it %r", name, Path(name).name
        )
        return Path(name).name
    return name


def local_paths(run: SelfGuideRun) -> dict[str, str]:
    """Every local path a published file could carry, with what to write instead."""
    model = public_model_id(run)
    found: dict[str, str] = {run.model_path: model, str(Path(run.model_path).resolve()): model}
    for folder in (run.output_dir, run.run_dir):
        found[str(folder.resolve())] = folder.name
    corpus = (run.args.synthesis or {}).get("corpus")
    for given in (
        run.args.eval_file,
        run.args.dataset_path,
        run.args.synthesis_cache_dir,
        run.args.task,
        run.args.corpus,
        run.args.corpus_embedding_model,
        corpus,
    ):
        if given and Path(given).exists():
            found[str(Path(given).resolve())] = Path(given).name
            if Path(given).is_absolute():
                found[given] = Path(given).name
    found[str(Path.cwd())] = "."
    found[str(Path.home())] = "~"
    return {local: public for local, public in found.items() if len(local) > 1}


def public_command(run: SelfGuideRun) -> str:
    """The reproduce command with local paths replaced by names (the model by its Hub id)."""
    import shlex

    paths = local_paths(run)
    words = []
    for word in shlex.split(run.command):
        if word in paths:
            word = paths[word]
        elif word.startswith(("/", "~")):
            word = Path(word).name
        words.append(word)
    return shlex.join(words)


def card_info(
    run: SelfGuideRun, data: SyntheticData, result: TrainResult | None, report: dict[str, Any] | None = None
) -> CardInfo:
    targs = run.training_args
    training = {
        "method": run.args.method,
        "epochs": targs.num_train_epochs,
        "max_steps": targs.max_steps if targs.max_steps and targs.max_steps > 0 else None,
        "learning_rate": targs.learning_rate,
        "lr_scheduler": str(getattr(targs.lr_scheduler_type, "value", targs.lr_scheduler_type)),
        "per_device_batch_size": targs.per_device_train_batch_size,
        "gradient_accumulation_steps": targs.gradient_accumulation_steps,
        "max_length": targs.max_length,
        "seed": targs.seed,
    }
    if result is not None:
        training.update({"train_rows": result.train_rows, "train_tokens": result.train_tokens})
        loss = result.metrics.get("train_loss")
        if loss is not None:
            training["train_loss"] = round(float(loss), 4)
    return CardInfo(
        spec=run.spec,
        base_model=public_model_id(run),
        method=run.args.method,
        manifest=read_manifest(run.output_dir) or {},
        training=training,
        synthesis=_synthesis_config(run, data),
        funnel=data.funnel,
        evaluation=_evaluation(report),
        command=public_command(run),
        license=run.args.card_license or default_license(run.model_path, run.args.model),
        dataset_hub_id=run.args.dataset_hub_id if run.args.push_dataset else None,
        num_rows=len(data.dataset),
        base_model_note=EMBEDDED_DESCRIPTION if is_embedded_copy(run.model_path) else "",
    )


def _evaluation(report: dict[str, Any] | None) -> dict[str, Any] | None:
    """What the card states of the evaluation: both summaries (per-row scores left out), the verdict."""
    if not report or not report.get("baseline") or not report.get("self_guided"):
        return None
    before, after = (
        {k: v for k, v in report[key].items() if k not in ("row_scores", "trivial_row_scores", "top_answer")}
        for key in ("baseline", "self_guided")
    )
    evaluation = {"before": before, "after": after, "split": report.get("eval_split", "test")}
    for key in ("interval", "verdict", "verdict_sentence", "trivial_baseline"):
        if report.get(key) is not None:
            evaluation[key] = report[key]
    return evaluation


def _synthesis_config(run: SelfGuideRun, data: SyntheticData) -> dict[str, Any]:
    config: dict[str, Any] = {
        "generator_model": run.base_model_id,
        "num_inputs": run.args.num_inputs,
        "seed": run.synthesis_seed,
        "source": data.source,
        "engine": run.engine,
    }
    if run.args.synthesis:
        config["overrides"] = run.args.synthesis
    recorded = builder_description(data.dataset)
    if recorded:  # what the builder actually used, all parameters included
        config["preset"] = recorded.get("preset")
        config["model_fingerprint"] = recorded.get("model_fingerprint")
        if recorded.get("cpu_threads"):  # on a CPU another count draws other rows from the same seed
            config["cpu_threads"] = recorded["cpu_threads"]
        config["parameters"] = recorded.get("synthesis")
    return config


def builder_description(dataset: Any) -> dict[str, Any] | None:
    """The synthesis record the selfguide builder stores in the dataset info, if it made this dataset."""
    try:
        data = json.loads(dataset.info.description)["selfguide"]
    except (AttributeError, TypeError, ValueError, KeyError):
        return None
    return data if isinstance(data, dict) else None


def default_license(model_path: str, given: str | None) -> str:
    """The base model's license when it is known locally; apache-2.0 for the embedded SmolLM2."""
    if is_embedded(given) or (Path(model_path) / MARKER).is_file():
        return "apache-2.0"
    readme = Path(model_path) / "README.md"
    if readme.is_file():
        try:
            from huggingface_hub import ModelCard

            found = ModelCard.load(readme).data.to_dict().get("license")
            if isinstance(found, str) and found:
                return found
        except Exception as exc:  # a README without a metadata header
            logger.debug("no license in %s: %s", readme, exc)
    return "other"


def push_run_adapter(
    run: SelfGuideRun, data: SyntheticData, result: TrainResult, report: dict[str, Any] | None = None
) -> str | None:
    """Push the adapter and its model card to --hub_model_id (main process; the token stays in memory)."""
    if not run.push_adapter or not run.is_main_process:
        return None
    from selfguide_hf.hub import push_adapter

    info = card_info(run, data, result, report)
    info.repo_id = run.hub_model_id
    return push_adapter(
        run.output_dir,
        run.hub_model_id,
        model_card(info),
        token=run.hub_token,
        private=run.hub_private,
        base_model_id=public_model_id(run),
        local_base_paths=[run.model_path],
        local_paths=local_paths(run),
        extra_files={SPEC_FILE: task_spec_file(run)},
    )


def task_spec_file(run: SelfGuideRun) -> bytes:
    """The task spec as `TaskSpec.load` reads it: without it nobody else can prompt the adapter right."""
    return (json.dumps(run.spec.to_dict(), indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def push_run_dataset(run: SelfGuideRun, data: SyntheticData) -> str | None:
    """Push the synthetic rows and the dataset card to --dataset_hub_id (main process)."""
    if not run.args.push_dataset or not run.is_main_process:
        return None
    from selfguide_hf.hub import push_dataset

    info = card_info(run, data, None)
    info.repo_id = run.args.dataset_hub_id
    return push_dataset(
        data.dataset,
        run.args.dataset_hub_id,
        dataset_card(info),
        token=run.hub_token,
        private=run.hub_private,
        local_paths=local_paths(run),
    )
