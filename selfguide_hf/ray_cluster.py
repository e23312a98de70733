"""The Ray cluster a run works on: a remote one at ``--ray-address``, or a local one on this machine.

Shared by the Ray engine (`ray_engine`) and the many-task sweep (`sweep`), so
both start and quieten Ray the same way.
"""

from __future__ import annotations

import logging
import os
from typing import Any

logger = logging.getLogger(__name__)

__all__ = [
    "PROCESSING_SLOTS",
    "RAY_BACKENDS",
    "local_cores",
    "quiet_ray_loggers",
    "ray_available",
    "start_ray",
]

# "replicas": vLLM engines as Ray actors that stay up for a stage (default); "data": Ray Data LLM's
# processor, which starts its replicas for every call (streaming, restarts failed actors)
RAY_BACKENDS = ("replicas", "data")
PROCESSING_SLOTS = 2  # logical CPUs of a local cluster beyond its cores, for Ray Data's row tasks


def local_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def ray_available() -> bool:
    """Ray Data LLM imports here (the ``[ray]`` extra)."""
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        return False
    try:
        import ray.data.llm  # noqa: F401
    except Exception as exc:
        logger.warning("ray is installed but ray.data.llm does not import (%s: %s)", type(exc).__name__, exc)
        return False
    return True


def quiet_ray_loggers() -> None:
    """Ray's and Ray LLM's loggers at WARNING (Ray LLM makes its loggers as it goes: call again after)."""
    if os.environ.get("SELFGUIDE_RAY_LOGS", "") not in ("", "0"):
        return
    for name in ["ray", *(n for n in list(logging.root.manager.loggerDict) if n.startswith("ray."))]:
        logging.getLogger(name).setLevel(logging.WARNING)


def start_ray(address: str | None = None, num_cpus: int | None = None) -> Any:
    """Connect to the cluster at ``address``, or start a local one sized to this process's cores.

    Worker logs stay in Ray's session folder (``SELFGUIDE_RAY_LOGS=1`` shows them): vLLM's teardown in
    a replica logs errors after every row has returned, which a user must not read as a failure.
    """
    import ray

    if ray.is_initialized():
        return ray
    show = os.environ.get("SELFGUIDE_RAY_LOGS", "") not in ("", "0")
    options: dict[str, Any] = {
        "ignore_reinit_error": True,
        "log_to_driver": show,
        "include_dashboard": False,
        "configure_logging": show,
        "logging_level": logging.INFO if show else logging.ERROR,
    }
    if address:
        options["address"] = address
    else:
        cores = local_cores()
        # logical CPUs: the replicas' cores plus room for Ray Data's light pre- and post-processing
        # tasks, which otherwise wait forever for a core the replicas hold
        options["num_cpus"] = num_cpus or cores + PROCESSING_SLOTS
    if not show:
        # a new local cluster gets Ray's token authentication (its default), without the notice of it
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
        os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")  # the C++ core's notices on the driver
        os.environ.setdefault("RAY_DATA_LOG_LEVEL", "WARNING")  # Ray Data sets its loggers from this
    ray.init(**options)
    if not show:
        quiet_ray_loggers()
    from ray.data import DataContext

    context = DataContext.get_current()
    context.enable_progress_bars = show
    context.print_on_execution_start = show
    return ray
