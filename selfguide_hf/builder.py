"""SELF-GUIDE synthetic data as a ``datasets`` builder, so the cache is keyed by the whole config.

``load_dataset("selfguide", task=..., model=..., num_inputs=N, seed=S)`` (after
``import selfguide_hf``) and :func:`build_selfguide_dataset` both go through
:class:`SelfGuideDataset`. The cache key covers every synthesis parameter,
the task's content, the model's weights and the code that makes the rows, so
an identical call (in any process) is a cache hit and any change is a miss.

Generation happens before ``datasets`` takes its lock on the cache folder:
under ``accelerate launch`` every process joins the synthesis (the work is
split), then the main process writes the dataset and the others read it.
Finished rounds are checkpointed in ``<cache_dir>/selfguide_work/<config id>``
and removed once the dataset is written; ``datasets`` writes the data into an
``.incomplete`` folder renamed at the end, so nothing half-written is served.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
from datasets import DownloadMode

from selfguide_hf.distributed import process_state
from selfguide_hf.funnel import DEFAULT_MIN_PAIRS, FUNNEL_JSON, Funnel, shortfall
from selfguide_hf.hub_hook import DATASET_NAME, code_hash
from selfguide_hf.synthesis import SynthesisResult, synthesize
from selfguide_hf.synthesis_config import PRESETS, SynthesisConfig
from selfguide_hf.task import TaskSpec

logger = logging.getLogger(__name__)

__all__ = ["SelfGuideConfig", "SelfGuideDataset", "build_selfguide_dataset", "get_funnel"]

WORK_DIR = "selfguide_work"
FEATURES = datasets.Features(
    {
        "prompt": datasets.Value("string"),
        "completion": datasets.Value("string"),
        "input": datasets.Value("string"),
        "output": datasets.Value("string"),
        "round": datasets.Value("int32"),
        "vote_share": datasets.Value("float64"),
        "num_agreeing": datasets.Value("int32"),  # null for likelihood annotation (no samples)
        "reasoning": datasets.Value(
            "string"
        ),  # the training reasoning (reasoning_target "reasoning"), else ""
    }
)
_BUILDER_CONFIG_FIELDS = {"name", "version", "data_dir", "data_files", "description"}


class _ExplicitNone:
    """Stands for a parameter explicitly set to None: datasets skips None overrides."""

    def __repr__(self) -> str:
        return "None"


EXPLICIT_NONE = _ExplicitNone()


@dataclass
class SelfGuideConfig(datasets.BuilderConfig, SynthesisConfig):
    """Every synthesis parameter (see :class:`SynthesisConfig`) plus what to synthesize with.

    ``task``: a bundled task name, a spec file, an NI v2 task file or a
    :class:`TaskSpec`. ``model``: a Hub id, a local folder, or None for the
    embedded default. The fingerprints are filled in when the builder is made
    and are what the cache is keyed on (not the names).
    """

    task: Any = None
    model: str | None = None
    revision: str | None = None  # of a Hub model; the cache is keyed by the commit it resolves to
    # the model's local folder when the caller resolved it already (the pipeline): not resolved again
    model_path: str | None = None
    batch_size: int = 8  # sequences decoded together; part of the key (it changes the sampled stream)
    min_pairs: int = (
        DEFAULT_MIN_PAIRS  # fewer rows (or a label with < 2) is logged as a warning; not part of the key
    )
    engine: str = "auto"  # transformers, vllm or auto (resolved before keying: the engine is part of the key)
    vllm_options: dict | None = None  # memory and parallelism of a vLLM engine; not part of the key
    task_fingerprint: str = ""
    corpus_fingerprint: str = ""  # the corpus's bytes: an edited corpus file is another dataset
    embedding_fingerprint: str = ""  # a local embedding model's bytes (retriever "embeddings" only)
    model_fingerprint: str = ""  # weights and tokenizer files (the chat template changes every prompt)

    def __post_init__(self) -> None:
        datasets.BuilderConfig.__post_init__(self)
        SynthesisConfig.__post_init__(self)

    @classmethod
    def parameter_names(cls) -> list[str]:
        """What `load_dataset("selfguide", ...)` accepts as keyword arguments."""
        hidden = _BUILDER_CONFIG_FIELDS | {
            "task_fingerprint",
            "model_fingerprint",
            "corpus_fingerprint",
            "embedding_fingerprint",
        }
        return sorted(f for f in cls.__dataclass_fields__ if f not in hidden)

    def synthesis_config(self) -> SynthesisConfig:
        return SynthesisConfig(**{name: getattr(self, name) for name in SynthesisConfig.field_names()})

    def task_spec(self) -> TaskSpec:
        """The task, parsed once (kept beside ``task``, which stays as the caller gave it)."""
        if self.task is None:
            raise ValueError(
                'load_dataset("selfguide", task=...) needs a task: a bundled task name (e.g. "task190"), '
                "a spec file or a Natural Instructions task file"
            )
        spec = getattr(self, "_spec", None)
        if spec is None:
            spec = self._spec = TaskSpec.load(self.task)
        return spec

    def resolved_model(self) -> str:
        """The model's local folder, resolved once (or as the caller resolved it)."""
        if not self.model_path:
            from selfguide_hf.models import resolve_model

            self.model_path = resolve_model(self.model, self.revision)
        return self.model_path

    def resolve(self) -> None:
        """Validate and fill in the fingerprints of the task content and the model weights."""
        from selfguide_hf.models import tokenizer_fingerprint, weights_fingerprint

        for name in self.parameter_names():
            if isinstance(getattr(self, name), _ExplicitNone):
                setattr(self, name, None)
        SynthesisConfig.__post_init__(self)  # overrides were set after construction: check them again
        if not isinstance(self.batch_size, int) or isinstance(self.batch_size, bool) or self.batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {self.batch_size!r}")
        from selfguide_hf.engines import resolve_engine

        self.engine_requested = getattr(self, "engine_requested", self.engine)
        self.task_fingerprint = self.task_spec().fingerprint()
        if self.corpus:
            from selfguide_hf.corpus import CorpusError, corpus_fingerprint

            if not Path(self.corpus).exists():
                raise CorpusError(f"{self.corpus}: no such corpus file or folder")
            self.corpus = str(Path(self.corpus).resolve())
            self.corpus_fingerprint = corpus_fingerprint(self.corpus)
            if self.corpus_retriever == "embeddings":
                from selfguide_hf.corpus import embedding_model_fingerprint

                self.embedding_fingerprint = embedding_model_fingerprint(self.corpus_embedding_model)
        resolved = self.resolved_model()
        self.model_fingerprint = f"{weights_fingerprint(resolved)}-{tokenizer_fingerprint(resolved)}"
        # decided before the key is made: data made by a fallback engine must not sit under vLLM's key
        self.engine = resolve_engine(self.engine_requested, resolved)

    def cache_key(self) -> str:
        import hashlib

        blob = json.dumps(
            {
                "synthesis": self.synthesis_config().to_dict(),
                "task": self.task_fingerprint,
                "model": self.model_fingerprint,
                "batch_size": self.batch_size,
                "engine": self.engine,
                "corpus": self.corpus_fingerprint,
                # only when set: data made before this field existed keeps its key
                **({"embedding_model": self.embedding_fingerprint} if self.embedding_fingerprint else {}),
            },
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def create_config_id(self, config_kwargs: dict, custom_features: Any = None) -> str:
        """The cache folder name: the preset plus a hash of everything that changes the rows."""
        self.resolve()
        return f"{self.name}-{self.cache_key()}"


def _preset_config(name: str) -> SelfGuideConfig:
    return SelfGuideConfig(
        name=name,
        version=datasets.Version("1.0.0"),
        description=f"SELF-GUIDE synthetic task data, {name} preset",
        **{k: v for k, v in vars(PRESETS[name]).items()},
    )


class SelfGuideDataset(datasets.GeneratorBasedBuilder):
    """Synthetic prompt/completion pairs the model wrote for itself, as one ``train`` split."""

    VERSION = datasets.Version("1.0.0")
    BUILDER_CONFIG_CLASS = SelfGuideConfig
    BUILDER_CONFIGS = [_preset_config(name) for name in ("default", "paper")]  # noqa: RUF012
    DEFAULT_CONFIG_NAME = "default"
    config: SelfGuideConfig

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("dataset_name", DATASET_NAME)
        kwargs.setdefault("hash", code_hash())
        for key in ("data_files", "data_dir"):
            if kwargs.get(key) is not None:
                raise ValueError(f"the selfguide dataset has no {key}: it generates its data")
        unknown = sorted(set(kwargs) - set(SelfGuideConfig.parameter_names()) - _BUILDER_ARGS)
        if unknown:
            raise ValueError(
                f"unknown selfguide parameter(s) {unknown}; known parameters: {SelfGuideConfig.parameter_names()}"
            )
        params = set(SelfGuideConfig.parameter_names())
        kwargs = {k: (EXPLICIT_NONE if v is None and k in params else v) for k, v in kwargs.items()}
        self._result: SynthesisResult | None = None
        self._cpu_threads: int | None = None  # what the synthesis engine computed on, when on a CPU
        super().__init__(*args, **kwargs)

    # ------------------------------------------------------------ datasets API
    def as_dataset(self, *args: Any, **kwargs: Any) -> Any:
        """The split, with a warning when it is too small to train on (pipeline runs stop there instead)."""
        dataset = super().as_dataset(*args, **kwargs)
        split = dataset.get("train") if isinstance(dataset, datasets.DatasetDict) else dataset
        if isinstance(split, datasets.Dataset):
            try:
                funnel = get_funnel(split)
            except ValueError:
                funnel = None
            spec = self.config.task_spec()
            facts = shortfall(list(split["output"]), spec.labels, self.config.min_pairs, funnel)
            if facts is not None:
                logger.warning(
                    "selfguide %s: %s; more num_inputs would help (the rows so far stay cached)",
                    spec.name,
                    facts,
                )
        return dataset

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(description="SELF-GUIDE synthetic task data", features=FEATURES)

    def _split_generators(self, dl_manager: Any) -> list[datasets.SplitGenerator]:
        return [datasets.SplitGenerator(name=datasets.Split.TRAIN)]

    def _generate_examples(self) -> Any:
        result = self._result or self._synthesize(process_state())
        for i, row in enumerate(result.rows):
            yield i, {"reasoning": "", **row}  # checkpointed rows from before the reasoning column

    def _download_and_prepare(self, dl_manager: Any, verification_mode: Any, **kwargs: Any) -> None:
        super()._download_and_prepare(dl_manager, verification_mode, **kwargs)
        if self._result is not None:  # self._output_dir is the .incomplete folder renamed at the end
            self._result.funnel.save(self._output_dir)

    def download_and_prepare(self, output_dir: str | None = None, *args: Any, **kwargs: Any) -> None:
        """Synthesize (on every process, resuming from checkpoints) unless cached, then write the split."""
        mode = DownloadMode(kwargs.get("download_mode") or DownloadMode.REUSE_DATASET_IF_EXISTS)
        target = output_dir or self._cache_dir
        cached = os.path.isfile(os.path.join(target, datasets.config.DATASET_INFO_FILENAME))
        if cached and mode == DownloadMode.REUSE_DATASET_IF_EXISTS:
            logger.info("selfguide: served from the cache %s", target)
            return super().download_and_prepare(output_dir, *args, **kwargs)
        state = process_state()
        with self._synthesis_lock(state):
            self._prepare_locked(state, output_dir, mode, *args, **kwargs)

    @contextlib.contextmanager
    def _synthesis_lock(self, state: Any) -> Iterator[None]:
        """One synthesis of a config at a time (main process): a second one stops with a clear line."""
        from filelock import FileLock, Timeout

        if not state.is_main_process:
            yield
            return
        self.work_dir.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.work_dir) + ".lock", timeout=0)
        try:
            lock.acquire()
        except Timeout:
            raise RuntimeError(
                f"another run holds the selfguide dataset cache {self.work_dir} (it is synthesizing the "
                "same data); wait for it to finish, then load again for a cache hit"
            ) from None
        try:
            yield
        finally:
            lock.release()
            Path(lock.lock_file).unlink(missing_ok=True)  # leave the cache folder as datasets made it

    def _prepare_locked(
        self, state: Any, output_dir: str | None, mode: DownloadMode, *args: Any, **kwargs: Any
    ) -> None:
        if mode == DownloadMode.FORCE_REDOWNLOAD and state.is_main_process:
            shutil.rmtree(self.work_dir, ignore_errors=True)
        state.wait_for_everyone()
        self._result = self._synthesize(state)
        if state.is_main_process:
            self.info.description = json.dumps(self._description(), ensure_ascii=False)
            super().download_and_prepare(output_dir, *args, **kwargs)
            shutil.rmtree(self.work_dir, ignore_errors=True)
            print(self._result.funnel.format_table())
            logger.info("selfguide: funnel saved in %s", output_dir or self._cache_dir)
        state.wait_for_everyone()
        if not state.is_main_process:
            kwargs["download_mode"] = DownloadMode.REUSE_DATASET_IF_EXISTS
            super().download_and_prepare(output_dir, *args, **kwargs)

    # ----------------------------------------------------------------- ours
    @property
    def work_dir(self) -> Path:
        """Where finished rounds are checkpointed until the dataset is written."""
        return Path(self._cache_dir_root) / WORK_DIR / f"{self.config_id}-{self.hash}"

    def _description(self) -> dict[str, Any]:
        assert self._result is not None
        spec = self.config.task_spec()
        return {
            "selfguide": {
                "task": spec.name,
                "model": self.config.model or "default",
                "model_fingerprint": self.config.model_fingerprint,
                "preset": self.config.name,
                "engine": self.config.engine,
                # not in the key (a machine setting, like the GPU), but on a CPU it changes the rows
                **({"cpu_threads": self._cpu_threads} if self._cpu_threads else {}),
                "synthesis": self.config.synthesis_config().to_dict(),
                "funnel": self._result.funnel.to_dict(),
            }
        }

    def _synthesize(self, state: Any) -> SynthesisResult:
        from transformers import AutoConfig, AutoTokenizer

        spec = self.config.task_spec()
        resolved = self.config.resolved_model()
        tokenizer = AutoTokenizer.from_pretrained(resolved)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        context = getattr(AutoConfig.from_pretrained(resolved), "max_position_embeddings", None)

        def make_engine() -> Any:
            from selfguide_hf.engines import make_engine as start_engine

            engine = start_engine(
                self.config.engine,
                resolved,
                tokenizer,
                batch_size=self.config.batch_size,
                seed=self.config.seed,
                device=getattr(state, "device", None),
                max_model_len=context,
                **(self.config.vllm_options or {}),
            )
            self._cpu_threads = cpu_threads(engine)
            return engine

        logger.info("selfguide: synthesizing %s with %s (%s)", spec.name, resolved, self.config_id)
        return synthesize(
            spec,
            make_engine,
            tokenizer,
            self.config.synthesis_config(),
            work_dir=self.work_dir,
            state=state,
            context_length=context,
            show_progress=state.is_main_process,
            key=self.config.model_fingerprint,
        )


_BUILDER_ARGS = {
    "cache_dir",
    "dataset_name",
    "config_name",
    "hash",
    "base_path",
    "info",
    "features",
    "token",
    "repo_id",
    "data_files",
    "data_dir",
    "storage_options",
    "writer_batch_size",
    "config_id",
}


def cpu_threads(engine: Any) -> int | None:
    """The CPU threads an engine computes on (None on a GPU).

    Another thread count sums in another order, so on a CPU the same seed draws
    other rows: the count is recorded with the data to reproduce it.
    """
    if hasattr(engine, "threads"):  # vLLM and Ray (per replica); None on a GPU
        return engine.threads
    device = getattr(getattr(engine, "model", None), "device", None)
    if getattr(device, "type", None) != "cpu":
        return None
    import torch

    return torch.get_num_threads()


def build_selfguide_dataset(
    task: str | os.PathLike[str] | TaskSpec,
    model: str | None = None,
    num_inputs: int | None = None,
    seed: int | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    preset: str = "default",
    download_mode: str | DownloadMode | None = None,
    **overrides: Any,
) -> datasets.Dataset:
    """The synthetic ``train`` split for ``task``, built (or read from the cache) through the builder.

    ``overrides`` are synthesis parameters (see :class:`SynthesisConfig`);
    ``preset`` is ``default`` or ``paper``.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; known presets: {sorted(PRESETS)}")
    params: dict[str, Any] = {"task": os.fspath(task) if isinstance(task, os.PathLike) else task, **overrides}
    if model is not None:
        params["model"] = model
    if num_inputs is not None:
        params["num_inputs"] = num_inputs
    if seed is not None:
        params["seed"] = seed
    builder = SelfGuideDataset(
        cache_dir=os.fspath(cache_dir) if cache_dir is not None else None, config_name=preset, **params
    )
    builder.download_and_prepare(download_mode=download_mode)
    return builder.as_dataset(split="train")


def get_funnel(dataset: datasets.Dataset) -> dict[str, Any]:
    """The funnel (raw inputs, drops per filter, kept) of a dataset made by the selfguide builder."""
    try:
        return json.loads(dataset.info.description)["selfguide"]["funnel"]
    except (TypeError, ValueError, KeyError):
        pass
    for cache_file in dataset.cache_files:
        path = Path(cache_file["filename"]).parent / FUNNEL_JSON
        if path.is_file():
            return Funnel.from_dict(json.loads(path.read_text(encoding="utf-8"))).to_dict()
    raise ValueError(
        "this dataset was not made by the selfguide builder (no funnel in its info or cache folder)"
    )
