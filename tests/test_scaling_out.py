"""`selfguide sweep`: each task's whole run as a Ray task on a local cluster, then one table.

Real Ray, real `selfguide run` processes on the tiny model; one task has a
broken spec and must be a failed row while the other finishes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from selfguide_hf import cli
from tests.test_cli import TINY_SYNTHESIS


def test_sweep_runs_every_task_and_reports_a_failing_one(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    bad = tmp_path / "broken_task.json"
    bad.write_text(json.dumps({"name": "broken", "instruction": ""}))
    out = tmp_path / "sweep"
    args = ["sweep", "--tasks", f"task738,{bad}", "--output-dir", str(out), "--jobs", "2"]
    args += ["--model", str(tiny_model_dir), "--num-inputs", "4", "--max-eval", "4", "--epochs", "1"]
    args += ["--split", "validation", "--min-pairs", "1", "--in-context-pairs", "0"]
    for option in TINY_SYNTHESIS:
        args += ["--synthesis-option", option]
    assert cli.main(args) == 1  # one task failed
    printed = capsys.readouterr()
    results = json.loads((out / "sweep.json").read_text())
    rows = {row["task"]: row for row in results["rows"]}
    assert rows["task738"]["baseline"] is not None and "error" not in rows["task738"]
    assert (out / "task738" / "report.json").is_file() and (out / "task738" / "adapter").is_dir()
    assert "error" in rows[str(bad)] and "broken" in (out / "broken_task" / "sweep-run.log").read_text()
    assert "| task738 | exact_match |" in printed.out and f"| {bad} | failed:" in printed.out
    assert "1 of 2 task(s) failed" in printed.err
    assert "Token authentication" not in printed.err + printed.out  # Ray's notice when the mode is unset
    assert "local Ray cluster" in results["machine"]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--jobs", "2"], "needs --tasks"),
        (["--tasks", "task738", "--task", "task199"], "not --task"),
        (["--tasks", "task738", "--jobs", "two"], "--jobs: expected an integer"),
        (["--tasks", "a/task738.json,b/task738.json"], "run folder 'task738'"),
        (["--tasks", "task738", "--num-inputs", "-3"], "--num-inputs must be a whole number >= 1"),
    ],
)
def test_sweep_flags_are_checked_before_any_task_starts(flags, message, tmp_path: Path, capsys) -> None:
    assert cli.main(["sweep", "--output-dir", str(tmp_path / "sweep"), *flags]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "sweep").exists()


def test_vllm_data_parallel_size_was_removed_and_says_what_replaced_it(tmp_path: Path, capsys) -> None:
    assert cli.main(["run", "--task", "task738", "--vllm-data-parallel-size", "2"]) == 2
    assert "--engine ray --ray-replicas" in capsys.readouterr().err
    config = tmp_path / "c.yaml"
    config.write_text("task: task738\nvllm_data_parallel_size: 2\n")
    assert cli.main(["run", "--config", str(config)]) == 2
    assert "--engine ray --ray-replicas" in capsys.readouterr().err


def test_vllm_under_accelerate_launch_runs_per_process_on_gpus_and_names_ray_on_a_cpu(
    tiny_model_dir: Path, monkeypatch
) -> None:
    """CUDA is mocked (no GPU here): on GPUs each process starts its own engine joined to the launcher's
    process group; on a CPU the refusal names the alternative."""
    from transformers import AutoTokenizer

    from selfguide_hf import engines, vllm_engine
    from selfguide_hf.engines import EngineError, resolve_engine

    vllm = pytest.importorskip("vllm")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(engines, "_on_cuda", lambda: False)
    with pytest.raises(EngineError, match="--engine ray"):
        resolve_engine("vllm")
    monkeypatch.setattr(engines, "_on_cuda", lambda: True)
    assert resolve_engine("vllm") == "vllm"
    assert resolve_engine("auto") == "transformers"  # auto keeps splitting over the processes itself

    started: list[dict] = []

    class FakeLLM:
        def __init__(self, **kwargs):
            started.append(kwargs)

    monkeypatch.setattr(vllm, "LLM", FakeLLM)
    monkeypatch.setattr(vllm_engine, "on_cpu", lambda: False)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    vllm_engine.VLLMEngine(str(tiny_model_dir), tokenizer)
    assert started[-1]["distributed_executor_backend"] == "external_launcher"
    monkeypatch.setenv("WORLD_SIZE", "1")
    vllm_engine.VLLMEngine(str(tiny_model_dir), tokenizer)
    assert "distributed_executor_backend" not in started[-1]
