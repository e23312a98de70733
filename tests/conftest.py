"""Shared fixtures: an offline hub, and a tiny randomly initialised model built on the fly.

The hub is switched off before anything imports transformers or datasets, so
a test that reaches for the network fails instead of silently downloading.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

_HF_HOME = tempfile.mkdtemp(prefix="selfguide-test-hf-")
atexit.register(shutil.rmtree, _HF_HOME, ignore_errors=True)  # one per session, else /tmp fills up
os.environ.update(
    {
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HOME": _HF_HOME,
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "TOKENIZERS_PARALLELISM": "false",
        # `--engine auto` means transformers in tests; the vLLM tests ask for it by name.
        "SELFGUIDE_ENGINE": "transformers",
    }
)

import pytest  # noqa: E402

from tests.tiny_model import build_tiny_model  # noqa: E402

NI_DIR = Path(__file__).resolve().parent.parent.parent / "shared" / "ni"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: minutes-long test (real model or real launch)")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ~100k-parameter Llama with a locally trained BPE tokenizer and a chat template."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tiny_plain_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same tiny model without a chat template (plain prompt format)."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-plain-model"), chat_template=False)


@pytest.fixture(scope="session")
def ni_dir() -> Path:
    if not NI_DIR.is_dir():
        pytest.skip(f"{NI_DIR} not found (the shared NI tasks sit beside the repository)")
    return NI_DIR


@pytest.fixture(scope="module", autouse=True)
def stop_a_local_ray_cluster() -> Iterator[None]:
    """A module that started a local Ray cluster (--engine ray, selfguide sweep) stops it when done:
    its daemons would otherwise poll on the cores for the rest of the suite."""
    yield
    import sys

    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()
