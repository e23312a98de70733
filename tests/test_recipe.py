"""The recipe as users run it: `python recipes/sft.py` and `accelerate launch recipes/sft.py`.

Fast tests run the script in a subprocess on the tiny model; the `slow` ones go
through `accelerate launch` with one process and with two CPU processes
(`--multi_gpu --num_processes 2`: `--cpu --num_processes 2` silently starts
one), with real synthesis through the builder.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from selfguide_hf.run_dir import MANIFEST_NAME, checkpoint_step, last_complete_checkpoint
from tests.fake_hub import FakeHub
from tests.test_training import write_rows

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "sft.py"
CPU_CONFIG = ROOT / "recipes" / "configs" / "smollm2-135m_lora_cpu.yaml"
TOKEN = "hf_RECIPEtokenThatMustNeverLeak987654"
# Synthesis a random tiny model can get through (as in tests/test_builder.py): gibberish inputs,
# but label likelihood always yields a label.
TINY_SYNTHESIS = {
    "prompts_per_round": 2,
    "input_max_new_tokens": 12,
    "drop_truncated": False,
    "input_filters_classification": ["empty", "duplicate"],
    "classification_annotation": "likelihood",
}


def env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **extra}


def recipe_args(model: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--config", str(CPU_CONFIG), "--task", "task199", "--model", str(model), "--output_dir", str(out),
        "--max_steps", "2", "--torch_threads", "1", "--disable_tqdm", "true", "--max_length", "512", *extra,
    ]  # fmt: skip


def run_recipe(args: list[str], timeout: int = 600, **env_extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(RECIPE), *args],
        capture_output=True,
        text=True,
        env=env(**env_extra),
        cwd=ROOT,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_rows(tmp_path_factory.mktemp("recipe-rows") / "rows.jsonl", n=8)


def _run_recipe_here(args: list[str], monkeypatch: pytest.MonkeyPatch) -> int:
    """The script as `python recipes/sft.py ARGS` runs it, in this process (a new one spends ~12 s importing)."""
    import runpy

    monkeypatch.setattr(sys, "argv", [str(RECIPE), *args])
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(RECIPE), run_name="__main__")
    return int(done.value.code)


def test_recipe_config_errors_are_one_clear_line(tmp_path: Path, monkeypatch, capsys) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("task: task199\nlearning_rat: 1.0e-4\n")
    assert _run_recipe_here(["--config", str(config)], monkeypatch) == 2
    stderr = capsys.readouterr().err
    assert f"error: {config}: unknown key 'learning_rat' (did you mean 'learning_rate'?)" in stderr
    assert "Traceback" not in stderr
    assert (
        _run_recipe_here(["--config", str(CPU_CONFIG), "--output_dir", str(tmp_path / "x")], monkeypatch) == 2
    )
    assert "error: no task given" in capsys.readouterr().err


def test_recipe_trains_with_the_cpu_config_and_pushes_to_a_local_hub(
    tmp_path: Path, tiny_model_dir: Path, rows: Path
) -> None:
    out = tmp_path / "out"
    with FakeHub() as hub:
        args = recipe_args(tiny_model_dir, out, "--dataset_path", str(rows))
        args += ["--push_to_hub", "true", "--hub_model_id", "me/tiny-task199", "--hub_token", TOKEN]
        args += ["--push_dataset", "true", "--dataset_hub_id", "me/tiny-task199-data"]
        done = run_recipe(args, HF_ENDPOINT=hub.endpoint, HF_HUB_OFFLINE="0", TRANSFORMERS_OFFLINE="0")
        assert done.returncode == 0, done.stderr[-3000:]
        model_files = hub.files("me/tiny-task199")
        data_files = hub.files("me/tiny-task199-data", "dataset")
    assert (out / "adapter_model.safetensors").is_file() and (out / "README.md").is_file()
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["method"] == "lora" and manifest["identity"]["model"]["lora_dropout"] == 0.0
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md", "tokenizer.json"} <= set(
        model_files
    )
    card = model_files["README.md"].decode()
    assert "accelerate launch recipes/sft.py --config" in card and "--hub_token" not in card
    assert "me/tiny-task199-data" in card
    assert {"README.md", "data/train-00000-of-00001.parquet"} == set(data_files)
    # The token is nowhere: not in uploads, logs, or anything left in the output folder.
    for name, content in {**model_files, **data_files}.items():
        assert TOKEN.encode() not in content, name
    assert TOKEN not in done.stdout and TOKEN not in done.stderr
    for path in out.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path


def _wait_for_checkpoint(out: Path, proc: subprocess.Popen, timeout: float = 300) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = last_complete_checkpoint(out)
        if found:
            return found
        if proc.poll() is not None:
            raise AssertionError(f"run ended before a checkpoint: {proc.stderr.read()[-3000:]}")
        time.sleep(0.05)
    raise AssertionError("no checkpoint in time")


def test_killed_run_resumes_from_its_checkpoint(tmp_path: Path, tiny_model_dir: Path, rows: Path) -> None:
    out = tmp_path / "out"
    args = recipe_args(tiny_model_dir, out, "--dataset_path", str(rows))
    args += ["--max_steps", "120", "--save_strategy", "steps", "--save_steps", "3", "--save_total_limit", "2"]
    args += [
        "--per_device_train_batch_size",
        "1",
        "--gradient_accumulation_steps",
        "1",
        "--logging_steps",
        "40",
    ]
    proc = subprocess.Popen(
        [sys.executable, str(RECIPE), *args],
        env=env(),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = _wait_for_checkpoint(out, proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    killed_at = checkpoint_step(last_complete_checkpoint(out))
    assert killed_at is not None and killed_at < 120, first
    assert not (out / "adapter_model.safetensors").exists()  # the run did not finish

    done = run_recipe([*args, "--resume_from_checkpoint", "last"])
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"resuming from {out / f'checkpoint-{killed_at}'} (step {killed_at})" in done.stderr
    assert checkpoint_step(last_complete_checkpoint(out)) == 120
    state = json.loads((Path(last_complete_checkpoint(out)) / "trainer_state.json").read_text())
    logged = [entry["step"] for entry in state["log_history"] if "loss" in entry]
    assert logged and logged[-1] == 120
    assert (out / "adapter_model.safetensors").is_file()


# --------------------------------------------------------------- accelerate launch
PROBE = """
    # Count the generation work of this process, then run the recipe.
    import json, os, sys
    from selfguide_hf import generation
    counts = {"generate": 0, "score": 0}
    real_generate = generation.TransformersEngine.generate
    real_score = generation.TransformersEngine.score_choices
    def generate(self, prompts, sampling):
        counts["generate"] += len(prompts)
        return real_generate(self, prompts, sampling)
    def score_choices(self, prompts, choices):
        counts["score"] += len(prompts)
        return real_score(self, prompts, choices)
    generation.TransformersEngine.generate = generate
    generation.TransformersEngine.score_choices = score_choices
    sys.path.insert(0, os.path.join(os.environ["SELFGUIDE_ROOT"], "recipes"))
    import sft
    code = sft.main(sys.argv[2:])
    with open(f"{sys.argv[1]}.{os.environ.get('RANK', '0')}", "w") as handle:
        json.dump(counts, handle)
    sys.exit(code)
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _launch(tmp_path: Path, launch_flags: list[str], recipe: list[str], tag: str) -> tuple[dict, ...]:
    probe = tmp_path / "probe.py"
    probe.write_text(textwrap.dedent(PROBE))
    counts = tmp_path / f"counts-{tag}"
    accelerate = Path(sys.executable).with_name("accelerate")
    command = [str(accelerate), "launch", *launch_flags, "--main_process_port", str(_free_port())]
    command += [str(probe), str(counts), *recipe]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        env=env(SELFGUIDE_ROOT=str(ROOT), TMPDIR=str(tmp_path)),  # torchelastic leaves its folders there
        cwd=ROOT,
        timeout=1800,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    files = sorted(tmp_path.glob(f"counts-{tag}.*"))
    return tuple(json.loads(f.read_text()) for f in files)


def _synthesis_args(model: Path, out: Path, cache: Path) -> list[str]:
    return recipe_args(
        model,
        out,
        "--num_inputs",
        "8",
        "--synthesis",
        json.dumps(TINY_SYNTHESIS),
        "--synthesis_cache_dir",
        str(cache),
        "--min_pairs",
        "1",
    )


@pytest.mark.slow
def test_accelerate_launch_one_and_two_cpu_processes(tmp_path: Path, tiny_model_dir: Path) -> None:
    one = _launch(
        tmp_path,
        ["--num_processes", "1"],
        _synthesis_args(tiny_model_dir, tmp_path / "one", tmp_path / "c1"),
        "one",
    )
    assert len(one) == 1 and one[0]["generate"] > 0
    assert (tmp_path / "one" / "adapter_model.safetensors").is_file()

    two = _launch(
        tmp_path,
        ["--multi_gpu", "--num_processes", "2"],
        _synthesis_args(tiny_model_dir, tmp_path / "two", tmp_path / "c2"),
        "two",
    )
    assert len(two) == 2, "two processes should have run"
    # The synthesis was split, not done twice: together the ranks generated as many inputs as one
    # process did alone (twice would be double), each a share; annotation (label scoring) was shared too.
    assert two[0]["generate"] + two[1]["generate"] == one[0]["generate"]
    assert two[0]["generate"] > 0 and two[1]["generate"] > 0
    assert two[0]["score"] > 0 and two[1]["score"] > 0
    # One adapter, written once, on the same synthetic rows.
    out = tmp_path / "two"
    assert len(list(out.rglob("adapter_model.safetensors"))) == 1
    assert json.loads((out / MANIFEST_NAME).read_text())["method"] == "lora"
    assert len((out / "synthetic" / "train.jsonl").read_text().splitlines()) > 0
    funnel = json.loads((out / "synthetic" / "funnel.json").read_text())
    assert funnel["raw_inputs"] == 8
