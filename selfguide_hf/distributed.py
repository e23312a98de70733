"""Spreading model calls over the processes of an ``accelerate`` launch; every process gets all results.

A single process needs no ``accelerate`` state at all: `process_state` returns
a stand-in there instead of ``PartialState()``, because ``PartialState`` is a
process-wide singleton and creating it before ``SFTConfig`` does would fix its
device (and ``cpu``) flags for the rest of the process.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any, TypeVar

from selfguide_hf.generation import GenerationEngine, SamplingParams

T = TypeVar("T")

__all__ = ["end_processes", "generate_distributed", "on_main_process", "process_state", "score_distributed"]


class _SingleProcess:
    """Stands in for ``accelerate.PartialState`` when there is one process."""

    num_processes = 1
    process_index = 0
    is_main_process = True

    def wait_for_everyone(self) -> None:
        return None


def process_state() -> Any:
    """The accelerate state under a multi-process launch, else a single-process stand-in."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from accelerate import PartialState

        return PartialState()
    return _SingleProcess()


def on_main_process(state: Any, compute: Callable[[], T]) -> T:
    """``compute()`` once, on the main process; every process gets its result (or its exception).

    For work that is the same on every rank and costly (reading and ranking a
    large corpus, embedding every row): N ranks would each do all of it. An
    exception on the main process is raised on every process, so no rank
    waits forever for a result that will not come.
    """
    if state.num_processes <= 1:
        return compute()
    from accelerate.utils import broadcast_object_list

    box: list[Any] = [None]
    if state.is_main_process:
        try:
            box[0] = (True, compute())
        except Exception as exc:  # sent to the other ranks, then raised here too
            box[0] = (False, exc if _picklable(exc) else RuntimeError(f"{type(exc).__name__}: {exc}"))
    broadcast_object_list(box, from_process=0)
    ok, value = box[0]
    if not ok:
        raise value
    return value


def _picklable(value: Any) -> bool:
    """Whether ``value`` survives a broadcast; one that does not would fail on rank 0 only, and hang the rest."""
    import pickle

    try:
        pickle.loads(pickle.dumps(value))
    except Exception:
        return False
    return True


def end_processes(wait: bool = True) -> None:
    """Wait for every process, then tear down the process group, at the end of a front door's run.

    A gloo group left to interpreter exit can abort a rank that has finished
    all its work ("terminate called without an active exception", SIGABRT),
    which turns a finished run into a failed launch. Library calls never do
    this: a user's own script may still need the group. After an error,
    ``wait=False`` skips the barrier (the other ranks may never reach it):
    the failed rank exits with its own status, and a rank still waiting on it
    gets a connection error instead of a hang.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()


def score_distributed(
    engine: GenerationEngine, prompts: list[str], choices: list[str], state: Any
) -> list[list[float]]:
    """``engine.score_choices`` with the prompts split over processes; every process gets all scores."""
    if state.num_processes <= 1 or not prompts:
        return engine.score_choices(list(prompts), list(choices))
    from accelerate.utils import gather_object

    with state.split_between_processes(list(enumerate(prompts))) as shard:
        shard = list(shard)
        local = engine.score_choices([p for _, p in shard], list(choices)) if shard else []
        pairs = [(i, s) for (i, _), s in zip(shard, local)]
    ordered = sorted(gather_object(pairs), key=lambda pair: pair[0])
    if [i for i, _ in ordered] != list(range(len(prompts))):
        raise RuntimeError("gathered label scores do not cover the prompts exactly once")
    return [s for _, s in ordered]


def generate_distributed(
    engine: GenerationEngine, prompts: list[str], sampling: SamplingParams, state: Any = None
) -> list[list[str]]:
    """Generate over all processes of an ``accelerate`` launch; every process gets all results.

    Each process takes a contiguous share of the prompts and samples with
    ``seed + process_index`` (so shards do not draw identical samples); the
    results are gathered back in input order. With one process this is just
    ``engine.generate``.
    """
    if state is None:
        from accelerate import PartialState

        state = PartialState()
    if state.num_processes <= 1:
        return engine.generate(list(prompts), sampling)
    from accelerate.utils import gather_object

    if sampling.seed is not None:
        sampling = dataclasses.replace(sampling, seed=sampling.seed + state.process_index)
    with state.split_between_processes(list(enumerate(prompts))) as shard:
        shard = list(shard)
        local = engine.generate([p for _, p in shard], sampling) if shard else []
        pairs = [(i, out) for (i, _), out in zip(shard, local)]
    gathered = gather_object(pairs)
    ordered = sorted(gathered, key=lambda pair: pair[0])
    if [i for i, _ in ordered] != list(range(len(prompts))):
        raise RuntimeError("gathered generation results do not cover the prompts exactly once")
    return [out for _, out in ordered]
