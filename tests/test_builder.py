"""`load_dataset("selfguide", ...)`, the builder's cache key, resume after SIGKILL, and the datasets hook."""

from __future__ import annotations

import inspect
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path
from typing import Any

import datasets
import pytest
import torch
from datasets import load_dataset, load_dataset_builder

import selfguide_hf  # noqa: F401  (installs the hook)
from selfguide_hf import builder as builder_module
from selfguide_hf.builder import SelfGuideConfig, SelfGuideDataset, build_selfguide_dataset, get_funnel
from selfguide_hf.funnel import FUNNEL_JSON, FUNNEL_PNG
from selfguide_hf.synthesis import SynthesisError

REPO = Path(__file__).resolve().parent.parent
# Filters a random model can pass: its inputs are gibberish, but label likelihood always gives a label.
TINY = {
    "num_inputs": 4,
    "prompts_per_round": 2,
    "input_max_new_tokens": 12,
    "drop_truncated": False,
    "input_filters_classification": ["empty", "duplicate"],
}


@pytest.fixture
def kwargs(tiny_model_dir: Path, tmp_path: Path) -> dict[str, Any]:
    return {"task": "task738", "model": str(tiny_model_dir), "cache_dir": str(tmp_path / "cache"), **TINY}


def count_synthesis(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count calls of the synthesis the builder runs."""
    calls: list[int] = []
    real = builder_module.synthesize

    def counting(*args: Any, **kw: Any) -> Any:
        calls.append(1)
        return real(*args, **kw)

    monkeypatch.setattr(builder_module, "synthesize", counting)
    return calls


def run_script(code: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )


# ----------------------------------------------------------------------- the hook
def test_hook_relies_on_datasets_internals(kwargs: dict[str, Any]) -> None:
    """Fails loudly when the datasets internals the hook patches change shape."""
    import datasets.load as load

    # 1. load_dataset_builder looks the module factory up as a module global at call time
    assert "dataset_module_factory(" in inspect.getsource(load.load_dataset_builder)
    assert getattr(load.dataset_module_factory, "_selfguide_hook", False), (
        "import selfguide_hf did not install the hook"
    )
    assert next(iter(inspect.signature(load.dataset_module_factory).parameters)) == "path"
    # 2. a DatasetModule is (module path, hash, builder kwargs) and the builder class is found by import
    module = load.dataset_module_factory("selfguide")
    assert (module.module_path, module.builder_kwargs) == (
        "selfguide_hf.builder",
        {"dataset_name": "selfguide"},
    )
    assert load.get_dataset_builder_class(module) is SelfGuideDataset
    # 3. other names still reach datasets
    with pytest.raises(Exception) as excinfo:
        load.dataset_module_factory("surely-not-a-dataset-name-xyz")
    assert "selfguide" not in str(excinfo.value)
    # 4. the whole path resolves to our builder and config, without generating anything
    builder = load_dataset_builder("selfguide", **kwargs)
    assert isinstance(builder, SelfGuideDataset)
    assert builder.config.num_inputs == 4 and builder.config.task == "task738"
    assert builder.dataset_name == "selfguide"


# ----------------------------------------------------------------------- load_dataset
def test_load_dataset_then_cache_hit(kwargs: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    calls = count_synthesis(monkeypatch)
    ds = load_dataset("selfguide", split="train", **kwargs)
    assert calls == [1]
    from selfguide_hf.builder import FEATURES
    from selfguide_hf.synthesis import ROW_COLUMNS

    assert list(FEATURES) == list(ROW_COLUMNS)  # what the loop writes is what the builder declares
    assert set(ds.column_names) == set(ROW_COLUMNS)
    assert set(ds["reasoning"]) == {""}  # filled only when training on chain-of-thought reasoning
    counts = Counter(ds["output"])
    assert set(counts) <= {"support", "undermine"} and len(set(counts.values())) == 1
    funnel = get_funnel(ds)
    assert funnel["raw_inputs"] == 4 and funnel["kept"] == len(ds)
    # the tiny model computes on a CPU: the thread count that drew these rows is kept with them
    assert json.loads(ds.info.description)["selfguide"]["cpu_threads"] == torch.get_num_threads()
    folder = Path(ds.cache_files[0]["filename"]).parent
    assert json.loads((folder / FUNNEL_JSON).read_text())["kept"] == len(ds)
    assert (folder / FUNNEL_PNG).stat().st_size > 1000
    assert not (Path(kwargs["cache_dir"]) / "selfguide_work").exists() or not any(
        (Path(kwargs["cache_dir"]) / "selfguide_work").iterdir()
    )

    again = load_dataset("selfguide", split="train", **kwargs)
    assert calls == [1], "the second identical call must be served from the cache"
    assert again.to_list() == ds.to_list()
    assert get_funnel(again) == funnel


def test_cache_hit_in_a_new_process(kwargs: dict[str, Any]) -> None:
    first = load_dataset("selfguide", split="train", **kwargs)
    code = """
        import json, sys
        import selfguide_hf
        from selfguide_hf import builder
        def refuse(*args, **kwargs):
            raise SystemExit("generated instead of reading the cache")
        builder.synthesize = refuse
        from datasets import load_dataset
        ds = load_dataset("selfguide", split="train", **json.loads(sys.argv[1]))
        print(json.dumps(list(ds["input"])))
    """
    done = run_script(code, json.dumps(kwargs))
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == list(first["input"])


def test_force_redownload_regenerates(kwargs: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    calls = count_synthesis(monkeypatch)
    load_dataset("selfguide", split="train", **kwargs)
    ds = load_dataset("selfguide", split="train", download_mode="force_redownload", **kwargs)
    assert calls == [1, 1] and len(ds) > 0


def test_python_api_shares_the_cache(kwargs: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    calls = count_synthesis(monkeypatch)
    ds = build_selfguide_dataset(**kwargs)
    assert isinstance(ds, datasets.Dataset) and calls == [1]
    via_load = load_dataset("selfguide", split="train", **kwargs)
    assert calls == [1] and list(via_load["input"]) == list(ds["input"])
    assert get_funnel(ds)["kept"] == len(ds)


def test_unknown_parameter_is_named(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="num_input"):
        load_dataset_builder("selfguide", **{**kwargs, "num_input": 3})
    with pytest.raises(ValueError, match="min_frequency"):
        load_dataset_builder("selfguide", **{**kwargs, "min_frequency": 3})
    with pytest.raises(ValueError, match="needs a task"):
        load_dataset_builder("selfguide", **{k: v for k, v in kwargs.items() if k != "task"})


def test_cache_key_covers_parameters_task_content_and_weights(
    kwargs: dict[str, Any], tiny_plain_model_dir: Path, tmp_path: Path
) -> None:
    def config_id(**changes: Any) -> str:
        return load_dataset_builder("selfguide", **{**kwargs, **changes}).config_id

    base = config_id()
    assert config_id() == base
    assert config_id(seed=1) != base
    assert config_id(min_frequency=0.5) != base
    assert config_id(model=str(tiny_plain_model_dir)) != base  # other weights
    assert config_id(input_filters_classification=("empty", "duplicate")) == base  # list or tuple alike
    spec = json.loads((REPO / "selfguide_hf" / "data" / "tasks" / "task738" / "spec.json").read_text())
    copy = tmp_path / "spec.json"
    copy.write_text(json.dumps(spec))
    assert config_id(task=str(copy)) == base  # same content, other path: same data
    spec["instruction"] += " Answer carefully."
    copy.write_text(json.dumps(spec))
    assert config_id(task=str(copy)) != base
    assert load_dataset_builder("selfguide", "paper", **kwargs).config_id.startswith("paper-")


def test_explicit_none_overrides_a_preset(kwargs: dict[str, Any]) -> None:
    builder = load_dataset_builder("selfguide", **{**kwargs, "input_top_k": None})
    assert builder.config.input_top_k is None
    assert load_dataset_builder("selfguide", **kwargs).config.input_top_k == 40


def test_task_from_spec_file_and_ni_file(kwargs: dict[str, Any], ni_dir: Path) -> None:
    spec_ds = load_dataset(
        "selfguide", split="train", **{**kwargs, "task": str(ni_dir / "task738" / "spec.json")}
    )
    assert set(spec_ds["output"]) <= {"support", "undermine"}
    ni_file = next((ni_dir / "task738").glob("task*.json"), ni_dir / "task738" / "task.json")
    ni_ds = load_dataset("selfguide", split="train", **{**kwargs, "task": str(ni_file)})
    assert len(ni_ds) > 0 and all(row["prompt"].endswith("assistant\n") for row in ni_ds)


def test_everything_filtered_is_an_error_and_caches_nothing(kwargs: dict[str, Any]) -> None:
    bad = {
        **kwargs,
        "input_filters_classification": ["empty", "length"],
        "length_min_sigma_ratio": 0.0,
        "length_sigmas": 0.1,
    }
    with pytest.raises(SynthesisError, match="raw inputs"):
        load_dataset("selfguide", split="train", **bad)
    builder = load_dataset_builder("selfguide", **bad)
    assert not Path(builder.cache_dir, "dataset_info.json").exists()


# ----------------------------------------------------------------------- resume
SLOW_RUN = """
    import json, sys, time
    import selfguide_hf
    from selfguide_hf import synthesis
    real = synthesis._Synthesis.run_round
    def run_round(self, r):
        with open(sys.argv[2], "a") as log:
            log.write(f"{r}\\n")
        if r == 2 and sys.argv[3] == "hang":
            time.sleep(600)  # the test SIGKILLs us here, rounds 0-1 checkpointed
        return real(self, r)
    synthesis._Synthesis.run_round = run_round
    from datasets import load_dataset
    from selfguide_hf.builder import get_funnel
    ds = load_dataset("selfguide", split="train", **json.loads(sys.argv[1]))
    print(json.dumps(get_funnel(ds)))
"""


def test_sigkill_then_rerun_reuses_finished_rounds(kwargs: dict[str, Any], tmp_path: Path) -> None:
    params = {**kwargs, "num_inputs": 8}  # 4 rounds of 2
    log = tmp_path / "rounds.log"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(SLOW_RUN), json.dumps(params), str(log), "hang"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    work = Path(params["cache_dir"]) / "selfguide_work"
    try:
        deadline = time.time() + 240
        while not list(work.glob("*/round_00001.json")) or log.read_text().split() != ["0", "1", "2"]:
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.time() < deadline, "no checkpoint appeared"
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert sorted(p.name for p in work.glob("*/round_*.json")) == ["round_00000.json", "round_00001.json"]
    assert not list(Path(params["cache_dir"]).glob("selfguide/*/*/*/dataset_info.json")), (
        "half a run was cached"
    )

    log.write_text("")
    done = run_script(SLOW_RUN, json.dumps(params), str(log), "go")
    assert done.returncode == 0, done.stderr[-2000:]
    assert log.read_text().split() == ["2", "3"], "finished rounds were generated again"
    funnel = json.loads(done.stdout.strip().splitlines()[-1])
    assert funnel["raw_inputs"] == 8 and funnel["notes"]["rounds_reused"] == 2


# ----------------------------------------------------------------------- multi-process
DIST_RUN = """
    import json, sys
    from accelerate import PartialState
    state = PartialState(cpu=True)
    import selfguide_hf
    from selfguide_hf import generation
    counted = []
    real = generation.TransformersEngine.generate
    def generate(self, prompts, sampling):
        counted.append(len(prompts))
        return real(self, prompts, sampling)
    generation.TransformersEngine.generate = generate
    from datasets import load_dataset
    ds = load_dataset("selfguide", split="train", **json.loads(sys.argv[1]))
    with open(f"{sys.argv[2]}.{state.process_index}", "w") as out:
        json.dump({"rows": ds.to_list(), "prompts": sum(counted)}, out)
    from selfguide_hf.distributed import end_processes
    end_processes()
"""


def launch_two(code: str, kwargs: dict[str, Any], tmp_path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run ``code`` in two gloo processes; each writes a JSON result, returned by rank."""
    script = tmp_path / "dist.py"
    script.write_text(textwrap.dedent(code))
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--standalone",  # a free port of its own: a fixed one can be held by an earlier run
        str(script),
        json.dumps(kwargs),
        str(out),
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    rank0, rank1 = (json.loads(Path(f"{out}.{i}").read_text()) for i in (0, 1))
    return rank0, rank1


@pytest.mark.slow
def test_two_processes_split_the_work(kwargs: dict[str, Any], tmp_path: Path) -> None:
    rank0, rank1 = launch_two(DIST_RUN, kwargs, tmp_path)
    assert rank0["rows"] == rank1["rows"] and rank0["rows"]
    assert rank0["prompts"] == rank1["prompts"] == kwargs["num_inputs"] // 2  # each did half the inputs


DIST_CORPUS = """
    import json, sys
    from accelerate import PartialState
    state = PartialState(cpu=True)
    import selfguide_hf
    from selfguide_hf import distributed, synthesis
    from selfguide_hf.corpus import CorpusError
    ranked = []
    real = synthesis.rank_corpus
    def rank(*args, **kw):
        ranked.append(1)
        return real(*args, **kw)
    synthesis.rank_corpus = rank
    def fail():
        raise CorpusError("c.jsonl: broken on the main process")
    try:
        distributed.on_main_process(state, fail)
        error = None
    except CorpusError as exc:
        error = str(exc)
    import threading
    class Unpicklable(Exception):
        def __init__(self):
            super().__init__("holds a lock")
            self.lock = threading.Lock()
    def fail_unpicklable():
        raise Unpicklable()
    try:
        distributed.on_main_process(state, fail_unpicklable)
        unpicklable = None
    except RuntimeError as exc:
        unpicklable = str(exc)
    from datasets import load_dataset
    ds = load_dataset("selfguide", split="train", **json.loads(sys.argv[1]))
    with open(f"{sys.argv[2]}.{state.process_index}", "w") as out:
        json.dump(
            {"rows": ds.to_list(), "ranked": len(ranked), "error": error, "unpicklable": unpicklable}, out
        )
    distributed.end_processes()
"""


@pytest.mark.slow
def test_two_processes_rank_the_corpus_once(kwargs: dict[str, Any], tmp_path: Path) -> None:
    """The main process reads and ranks the corpus and shares the rows; its errors reach every rank."""
    corpus = tmp_path / "c.jsonl"
    rows = [f"claim: Topic {i} matters. perspective: It helps {i} people." for i in range(12)]
    corpus.write_text("".join(json.dumps({"text": row}) + "\n" for row in rows))
    rank0, rank1 = launch_two(DIST_CORPUS, {**kwargs, "corpus": str(corpus)}, tmp_path)
    assert rank0["error"] == rank1["error"] == "c.jsonl: broken on the main process"
    # an exception that cannot be pickled reaches every rank as text, not as a hang on rank 1
    assert rank0["unpicklable"] == rank1["unpicklable"] == "Unpicklable: holds a lock"
    assert (rank0["ranked"], rank1["ranked"]) == (1, 0)
    assert rank0["rows"] == rank1["rows"] and rank0["rows"]
    assert {row["input"] for row in rank0["rows"]} <= set(rows)


# ----------------------------------------------------------------------- real model
@pytest.mark.slow
def test_embedded_model_task199(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The issue's done-when: task199 on the embedded model gives balanced pairs, then a cache hit."""
    torch.set_num_threads(1)  # a shared 2-core machine: 2 OpenMP threads can be 30x slower under load
    from selfguide_hf.vllm_engine import vllm_available

    calls = count_synthesis(monkeypatch)
    params = {"task": "task199", "model": "default", "num_inputs": 20, "seed": 0, "cache_dir": str(tmp_path)}
    # what a user gets by default (engine auto: vLLM where installed); ~3x faster than transformers here
    params["engine"] = "vllm" if vllm_available() else "transformers"
    ds = load_dataset("selfguide", split="train", **params)
    counts = Counter(ds["output"])
    assert set(counts) == {"yes", "no"} and counts["yes"] == counts["no"] > 0, counts
    funnel = get_funnel(ds)
    assert funnel["raw_inputs"] == 20 and funnel["kept"] == len(ds)
    folder = Path(ds.cache_files[0]["filename"]).parent
    assert (folder / FUNNEL_JSON).is_file() and (folder / FUNNEL_PNG).is_file()
    start = time.time()
    again = load_dataset("selfguide", split="train", **params)
    assert calls == [1] and time.time() - start < 30 and list(again["input"]) == list(ds["input"])


def test_selfguide_config_lists_every_synthesis_parameter() -> None:
    from selfguide_hf.synthesis import SynthesisConfig

    names = set(SelfGuideConfig.parameter_names())
    assert set(SynthesisConfig.field_names()) <= names
    assert {"task", "model", "batch_size"} <= names
    assert not {"task_fingerprint", "model_fingerprint", "data_files"} & names
