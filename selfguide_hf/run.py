"""A resolved SELF-GUIDE run: what every stage reads, made once by `pipeline.prepare_run`.

Its own module so that the stages (`eval_stage`, `publish`) and the
orchestrator (`pipeline`) all depend on it, and not on each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selfguide_hf.settings import SelfGuideArguments, flag_name
from selfguide_hf.task import TaskSpec

__all__ = ["SelfGuideRun", "SyntheticData"]


@dataclass
class SelfGuideRun:
    """Everything resolved once before any stage: the spec, the model folder and weights, the folders."""

    args: SelfGuideArguments
    training_args: Any
    model_args: Any
    spec: TaskSpec
    model_path: str
    weights: str
    tokenizer: str  # the tokenizer files' hash (the chat template changes every prompt)
    base_model_id: str
    command: str
    owns_output_dir: bool = False
    front: str = "recipe"  # "cli": name flags as `selfguide` spells them (--num-inputs)
    engine: str = "transformers"  # resolved once from --engine (auto decided here)
    hub_token: str | None = field(default=None, repr=False)
    push_adapter: bool = False
    hub_model_id: str | None = None
    hub_private: bool | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def output_dir(self) -> Path:
        """The adapter's folder."""
        return Path(self.training_args.output_dir)

    @property
    def run_dir(self) -> Path:
        """Report, evaluations and synthetic data."""
        return Path(self.args.run_dir) if self.args.run_dir else self.output_dir

    @property
    def is_main_process(self) -> bool:
        return bool(self.training_args.distributed_state.is_main_process)

    def flag(self, name: str) -> str:
        """A setting as the user's front spells its flag: ``num_inputs`` -> --num-inputs or --num_inputs."""
        return flag_name(name, self.front)

    @property
    def vllm_options(self) -> dict[str, Any]:
        """What vLLM (or Ray's replicas of it) is started with beyond the model: memory, parallelism, the
        cluster (the data does not depend on them)."""
        options: dict[str, Any] = {}
        if self.args.vllm_kv_cache_gb is not None:
            options["kv_cache_gb"] = self.args.vllm_kv_cache_gb
        if self.args.vllm_tensor_parallel_size > 1:
            options["tensor_parallel_size"] = self.args.vllm_tensor_parallel_size
        if self.engine == "ray":
            options["replicas"] = self.args.ray_replicas
            options["backend"] = self.args.ray_backend
            if self.args.ray_address:
                options["address"] = self.args.ray_address
        return options

    @property
    def synthesis_seed(self) -> int:
        return int(self.args.synthesis_seed)


@dataclass
class SyntheticData:
    dataset: Any
    funnel: dict[str, Any] | None
    source: str
    fingerprint: str
    reasoning: bool = False  # rows carry reasoning: the model is taught to reason, and evaluated so
