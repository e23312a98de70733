"""What identifies a trained adapter: the run, the rows, every weight-changing setting and the code.

Any difference retrains; a rerun names what changed (`run_dir.describe_changes`). The manifest
written beside the adapter records the identity and the settings that made the rows, so a
rerun can say which synthesis setting gave new rows.
"""

from __future__ import annotations

from typing import Any

from selfguide_hf.fingerprints import stage_sources_hash
from selfguide_hf.run import SelfGuideRun, SyntheticData
from selfguide_hf.settings import SelfGuideArguments, plain_value, synthesis_config, weight_settings

__all__ = ["manifest", "run_keys", "synthesis_settings", "training_identity"]


def run_keys(run: SelfGuideRun) -> dict[str, Any]:
    return {
        "task": run.spec.name,
        "task_fingerprint": run.spec.fingerprint(),
        "weights_fingerprint": run.weights,
        "method": run.args.method,
    }


def training_identity(run: SelfGuideRun, data: SyntheticData) -> dict[str, Any]:
    """Everything the trained weights depend on; any difference retrains, and a rerun names it."""
    targs, margs = run.training_args, run.model_args
    declared = {name: getattr(run.args, name) for name in SelfGuideArguments.of_stage("training")}
    return {
        **run_keys(run),
        "tokenizer": run.tokenizer,
        "synthetic_rows": data.fingerprint,
        **(
            {"answers_with_reasoning": True} if data.reasoning else {}
        ),  # absent otherwise: old adapters match
        "settings": declared,
        "training": weight_settings(targs),
        "model": weight_settings(margs),
        "processes": targs.distributed_state.num_processes,
        "code": stage_sources_hash("trainer"),
    }


def synthesis_settings(run: SelfGuideRun) -> dict[str, Any] | None:
    """Every synthesis parameter of the run (None when it trains on a file): a rerun names what changed."""
    return None if run.args.dataset_path else synthesis_config(run.args, run.front).to_dict()


def manifest(run: SelfGuideRun, data: SyntheticData, identity: dict[str, Any]) -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        package_version = version("selfguide-hf")
    except PackageNotFoundError:  # run from a source tree without installing
        package_version = "unknown"
    return {
        **run_keys(run),
        "base_model": run.base_model_id,
        "identity": identity,
        "complete": False,
        "num_inputs": run.args.num_inputs,
        "synthesis_seed": run.synthesis_seed,
        "synthesis": run.args.synthesis,
        "synthesis_settings": synthesis_settings(run),
        "settings": plain_value({f: getattr(run.args, f) for f in SelfGuideArguments.declared()}),
        "synthetic_source": data.source,
        "selfguide_hf_version": package_version,
    }
