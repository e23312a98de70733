"""What starting vLLM needs on this machine, apart from the engine itself.

The CPU thread binding, whether vLLM can serve a model here (head sizes of its
CPU kernels), its import-time scan guards, a quiet start, the LoRA ranks it
serves, and the engine core's processes to wait for on close. Kept apart so
`vllm_engine.py` holds only the `GenerationEngine` contract.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any

logger = logging.getLogger(__name__)

# Up to this many cores, no core is kept back for vLLM's scheduler process.
SMALL_MACHINE_CORES = 4


def cpu_thread_env(threads: int | None) -> dict[str, str]:
    """Environment for vLLM's CPU worker: which cores it computes on (see the module docstring).

    All of this process's cores are named explicitly (``VLLM_CPU_NUM_OF_RESERVED_CPU=0`` is as
    fast, measured, but vLLM warns on every start that it is below its minimum).
    """
    if "VLLM_CPU_OMP_THREADS_BIND" in os.environ or "VLLM_CPU_NUM_OF_RESERVED_CPU" in os.environ:
        return {}
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if not cores:
        return {}
    if threads is not None and threads < len(cores):
        return {"VLLM_CPU_OMP_THREADS_BIND": "nobind", "OMP_NUM_THREADS": str(max(1, threads))}
    if len(cores) <= SMALL_MACHINE_CORES:
        return {"VLLM_CPU_OMP_THREADS_BIND": ",".join(str(core) for core in cores)}
    return {}


def unservable_reason(model_path: str) -> str | None:
    """Why vLLM cannot serve this model here (architecture, or a head size its CPU backend lacks), or None.

    Read from the model's config without starting an engine, so ``auto`` picks
    the engine before anything is keyed on it (the engine is part of the
    synthetic data's identity). A check that itself fails says nothing.
    """
    try:
        from transformers import AutoConfig
        from vllm import ModelRegistry

        config = AutoConfig.from_pretrained(model_path)
        architectures = list(getattr(config, "architectures", None) or [])
        supported = set(ModelRegistry.get_supported_archs())
        if architectures and not supported.intersection(architectures):
            return f"architecture {architectures[0]} is not in vLLM's model registry"
        if on_cpu():
            from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

            text = getattr(config, "text_config", config)
            heads = getattr(text, "num_attention_heads", None)
            head = getattr(text, "head_dim", None) or (text.hidden_size // heads if heads else None)
            sizes = CPUAttentionBackend.get_supported_head_sizes()
            if head is not None and head not in sizes:
                return f"attention head size {head} is not one vLLM's CPU backend supports ({sizes})"
    except Exception as exc:  # the check is advisory: starting the engine will tell
        logger.debug("could not check whether vLLM serves %s: %s", model_path, exc)
    return None


def vllm_available() -> bool:
    """vLLM imports here (torchvision and friends built for another torch break its import chain)."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        return False
    try:
        import vllm  # noqa: F401
    except Exception as exc:  # a broken install: say why once, and let "auto" fall back
        logger.warning("vllm is installed but does not import (%s: %s)", type(exc).__name__, exc)
        return False
    return True


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the duration of a block, then restore them."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def _scan_breakers() -> list[str]:
    """Loaded modules that would crash vLLM's start in this process.

    Started in-process, vLLM scans every attribute of every loaded module and
    reads ``vars(value).get(...)`` (to swap Triton kernels); an object whose
    ``__dict__`` is not a mapping crashes it: llvmlite's, loaded by numba,
    which bm25s loads for the corpus.
    """
    import sys
    import warnings

    found = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # touching deprecated attributes warns
        for name, module in list(sys.modules.items()):
            namespace = getattr(module, "__dict__", None)
            if not isinstance(namespace, dict):
                continue
            for value in list(namespace.values()):
                try:
                    if hasattr(value, "__dict__"):
                        vars(value).get  # noqa: B018 (what vLLM's scan does)
                except Exception:
                    found.append(name)
                    break
    return found


@contextlib.contextmanager
def _hidden_from_vllm_scan() -> Iterator[None]:
    """Take the modules of `_scan_breakers` out of ``sys.modules`` while vLLM starts, then put them back.

    They stay loaded and referenced; only the scan (which swaps GPU kernels, none
    of theirs) does not see them.
    """
    import sys
    import warnings

    hidden = {name: sys.modules.pop(name) for name in _scan_breakers()}
    if hidden:
        logger.debug("hidden from vLLM's start-up scan: %s", sorted(hidden))
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning, module=r"vllm\.triton_utils")
            yield
    finally:
        for name, module in hidden.items():
            sys.modules.setdefault(name, module)


@contextlib.contextmanager
def _quiet_start() -> Iterator[None]:
    """Nothing below ``VLLM_LOGGING_LEVEL`` (default ERROR) from any logger while vLLM starts.

    vLLM logs one warning per weight when it loads fp32 weights as bf16 (366 lines in
    one `make demo`); its loggers inherit no level we could set beforehand, so the
    start is muted as a whole. TRL sets ``VLLM_LOGGING_LEVEL=ERROR`` on import, so the
    variable being set is not a request for logs; its level is the threshold.
    """
    level = logging.getLevelName(os.environ.get("VLLM_LOGGING_LEVEL", "ERROR").strip().upper())
    if not isinstance(level, int) or level <= logging.DEBUG:
        yield
        return
    previous = logging.root.manager.disable
    logging.disable(level - 1)
    try:
        yield
    finally:
        logging.disable(previous)


def _torch_set_num_threads() -> Any:
    import torch

    return torch.set_num_threads


def on_cpu() -> bool:
    import torch

    return not torch.cuda.is_available()


VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)  # the max_lora_rank values vLLM accepts


def served_lora_rank(adapter: str | os.PathLike[str]) -> int:
    """The smallest rank vLLM accepts that holds the adapter's (``r`` in adapter_config.json)."""
    import json
    from pathlib import Path

    config = json.loads((Path(adapter) / "adapter_config.json").read_text(encoding="utf-8"))
    ranks = [int(config.get("r") or 8), *(int(v) for v in (config.get("rank_pattern") or {}).values())]
    need = max(ranks)
    for allowed in VLLM_LORA_RANKS:
        if need <= allowed:
            return allowed
    raise ValueError(f"LoRA rank {need} is above what vLLM serves ({VLLM_LORA_RANKS[-1]})")


def _child_pids() -> set[int]:
    """This process's children, less multiprocessing's resource tracker (it lives as long as we do)."""
    import psutil

    pids = set()
    for child in psutil.Process().children(recursive=True):
        try:
            if "resource_tracker" not in " ".join(child.cmdline()):
                pids.add(child.pid)
        except psutil.NoSuchProcess:
            continue
    return pids


def _wait_for(pids: set[int], timeout: float = 30.0) -> None:
    """Block until these processes (vLLM's engine core and workers) have exited: their memory is back."""
    import psutil

    alive = []
    for pid in pids:
        try:
            alive.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            continue
    _, still = psutil.wait_procs(alive, timeout=timeout)
    still = [p for p in still if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    if still:
        logger.warning("vLLM engine processes %s still running after %.0f s", [p.pid for p in still], timeout)
