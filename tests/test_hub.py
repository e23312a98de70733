"""Hub push end to end against a real HTTP server on 127.0.0.1 standing in for the Hub.

Checks the files that arrive (adapter, tokenizer, run records, model card;
dataset shard and dataset card) and that the token is in no uploaded file and
no log line.
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest

from selfguide_hf import cards, hub, pipeline, publish
from selfguide_hf.bundled import bundled_spec
from selfguide_hf.run_dir import MANIFEST_NAME
from tests.fake_hub import FakeHub
from tests.test_training import TASK, run_recipe, synthetic_rows, tiny_argv, write_rows

TOKEN = "hf_FAKEtokenThatMustNeverLeak0123456789"


@pytest.fixture
def fake_hub(monkeypatch: pytest.MonkeyPatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # conftest switches the real hub off
    with FakeHub() as server:
        monkeypatch.setattr(constants, "ENDPOINT", server.endpoint)
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        yield server


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path):
    tmp = tmp_path_factory.mktemp("hub-run")
    rows = write_rows(tmp / "rows.jsonl")
    argv = tiny_argv(tiny_model_dir, tmp / "out", rows)
    argv += ["--push_to_hub", "true", "--hub_model_id", "me/tiny-selfguide", "--hub_token", TOKEN]
    argv += ["--push_dataset", "true", "--dataset_hub_id", "me/tiny-selfguide-data"]
    run, result = run_recipe(argv)
    data = pipeline.build_synthetic_dataset(run)
    return run, data, result


def test_push_adapter_and_dataset(fake_hub: FakeHub, trained_run, caplog: pytest.LogCaptureFixture) -> None:
    run, data, result = trained_run
    caplog.set_level(logging.DEBUG)
    url = publish.push_run_adapter(run, data, result)
    assert url and url.startswith(fake_hub.endpoint + "/me/tiny-selfguide")
    assert publish.push_run_dataset(run, data)

    files = fake_hub.files("me/tiny-selfguide")
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md", "tokenizer.json"} <= set(files)
    assert MANIFEST_NAME in files
    assert not any(name.startswith("checkpoint-") or name == "training_args.bin" for name in files)
    card = files["README.md"].decode()
    assert card.startswith("---\n") and "library_name: peft" in card  # base_model: a local path is left out
    assert "2407.12874" in card and TASK in card and "accelerate launch recipes/sft.py" in card
    assert "me/tiny-selfguide" in card  # usage snippet names the repository
    # The local path of the base model is rewritten to a loadable name only when it is local cache;
    # here the tiny model is a local folder given explicitly, so it stays as given.
    adapter_config = json.loads(files["adapter_config.json"])
    assert adapter_config["base_model_name_or_path"] == publish.public_model_id(run)

    data_files = fake_hub.files("me/tiny-selfguide-data", "dataset")
    assert set(data_files) == {hub.DATASET_FILE, "README.md"}
    import pyarrow.parquet as pq

    table = pq.read_table(io.BytesIO(data_files[hub.DATASET_FILE]))
    assert table.num_rows == 8 and {"input", "output"} <= set(table.column_names)
    assert "Funnel" in data_files["README.md"].decode()

    # The token travels only in the Authorization header.
    token = TOKEN.encode()
    for repo_files in fake_hub.state.files.values():
        for name, content in repo_files.items():
            assert token not in content, name
    assert all(TOKEN in header for header in fake_hub.state.auth_headers)
    assert TOKEN not in caplog.text
    assert not fake_hub.state.unexpected


def test_push_refuses_a_file_holding_the_token(fake_hub: FakeHub, tmp_path: Path) -> None:
    (tmp_path / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "x", "note": TOKEN}))
    (tmp_path / "adapter_model.safetensors").write_bytes(b"weights")
    with pytest.raises(hub.HubPushError, match=r"appears in \['adapter_config.json'\]") as info:
        hub.push_adapter(tmp_path, "me/leak", "card", token=TOKEN)
    assert TOKEN not in str(info.value)
    assert not fake_hub.state.repos  # nothing was sent


def test_push_needs_weights(tmp_path: Path) -> None:
    with pytest.raises(hub.HubPushError, match="no adapter or model weights"):
        hub.adapter_files(tmp_path, "card")


def test_embedded_base_path_is_rewritten_to_hub_id() -> None:
    config = json.dumps({"base_model_name_or_path": "/root/.cache/selfguide_hf/models/smollm2"}).encode()
    out = json.loads(hub.rewrite_adapter_base(config, "HuggingFaceTB/SmolLM2-135M-Instruct", []))
    assert out["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    kept = json.loads(
        hub.rewrite_adapter_base(json.dumps({"base_model_name_or_path": "org/m"}).encode(), "x", [])
    )
    assert kept["base_model_name_or_path"] == "org/m"


def test_push_to_existing_repo(fake_hub: FakeHub, tmp_path: Path) -> None:
    (tmp_path / "adapter_config.json").write_text("{}")
    (tmp_path / "adapter_model.safetensors").write_bytes(b"w1")
    hub.push_adapter(tmp_path, "me/again", "first", token=TOKEN)
    (tmp_path / "adapter_model.safetensors").write_bytes(b"w2")
    hub.push_adapter(tmp_path, "me/again", "second", token=TOKEN)  # create_repo answers 409: exist_ok
    assert fake_hub.files("me/again")["adapter_model.safetensors"] == b"w2"
    assert fake_hub.files("me/again")["README.md"] == b"second"


# --------------------------------------------------------------------- cards
def _info(**overrides) -> cards.CardInfo:
    spec = bundled_spec(TASK)
    values = {
        "spec": spec,
        "base_model": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "method": "lora",
        "manifest": {"lora": {"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"}},
        "training": {"epochs": 3, "learning_rate": 2e-4},
        "synthesis": {"num_inputs": 160, "seed": 42, "parameters": {"min_frequency": 0.3, "num_samples": 10}},
        "funnel": {"raw_inputs": 160, "dropped": {"length": 20, "noise": 3}, "kept": 64},
        "evaluation": {"split": "test", "before": {"exact_match": 0.7}, "after": {"exact_match": 50.0}},
        "command": "accelerate launch recipes/sft.py --config c.yaml --task task199",
        "license": "apache-2.0",
        "num_rows": 64,
    }
    values.update(overrides)
    return cards.CardInfo(**values)


def test_model_card_content() -> None:
    from huggingface_hub import ModelCard

    text = cards.model_card(_info())
    card = ModelCard(text)
    assert card.data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert card.data.license == "apache-2.0" and card.data.library_name == "peft"
    assert "| dropped.length | 20 |" in text and "| raw_inputs | 160 |" in text
    assert "| exact_match | 0.7 | 50 |" in text
    assert "lora_r | 16" in text and "arXiv" in text and "zhao2024selfguide" in text
    assert "<summary>All synthesis parameters</summary>" in text and '"min_frequency": 0.3' in text
    assert "accelerate launch recipes/sft.py --config c.yaml --task task199" in text


def test_card_says_when_not_evaluated_and_survives_braces() -> None:
    text = cards.model_card(_info(evaluation=None, funnel=None, synthesis={"note": "{{ not jinja }} {%"}))
    assert "Not evaluated" in text and "No funnel recorded" in text and "{{ not jinja }}" in text


def test_dataset_card_content() -> None:
    from huggingface_hub import DatasetCard

    text = cards.dataset_card(_info())
    card = DatasetCard(text)
    assert card.data.license == "apache-2.0"
    assert "64 rows" in text and "| kept | 64 |" in text and "vote_share" in text


def test_synthetic_rows_helper_has_builder_columns() -> None:
    assert {"input", "output", "round", "vote_share", "num_agreeing"} <= set(synthetic_rows(2).column_names)


# ----------------------------------------------------- what a real push leaks
@pytest.fixture(scope="module")
def hub_copy_of_model(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model as a local copy of a Hub model (the marker the embedded model's conversion writes)."""
    import shutil

    from selfguide_hf.models import EMBEDDED_MODEL_ID, MARKER

    out = tmp_path_factory.mktemp("home") / "models" / "copy-of-smollm2"
    shutil.copytree(tiny_model_dir, out)
    (out / MARKER).write_text(json.dumps({"model_id": EMBEDDED_MODEL_ID}))
    return out


def test_pushed_files_carry_no_local_path(
    fake_hub: FakeHub, hub_copy_of_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`selfguide run --push-to-hub --push-dataset`: nothing pushed names a local path; the base model is its Hub id."""
    from selfguide_hf import cli
    from tests.test_cli import run_args

    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets-cache"))
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    out = tmp_path / "work" / "run"
    args = run_args(hub_copy_of_model, out, "--push-to-hub", "me/pushed", "--push-dataset", "me/pushed-data")
    assert cli.main([*args, "--private"]) == 0
    model_files = fake_hub.files("me/pushed")
    data_files = fake_hub.files("me/pushed-data", "dataset")
    assert {"adapter_model.safetensors", "adapter_config.json", "README.md", MANIFEST_NAME} <= set(
        model_files
    )
    assert {"README.md", hub.DATASET_FILE} <= set(data_files)
    local = [str(tmp_path), str(hub_copy_of_model), str(Path.home()), str(Path.cwd()), str(out.resolve())]
    for name, data in [*model_files.items(), *data_files.items()]:
        for path in local:
            assert path.encode() not in data, f"{name} holds the local path {path}"
        assert TOKEN.encode() not in data
    adapter_config = json.loads(model_files["adapter_config.json"])
    assert adapter_config["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert "base_model: HuggingFaceTB/SmolLM2-135M-Instruct" in model_files["README.md"].decode()
    assert json.loads(model_files[MANIFEST_NAME])["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert [p.get("visibility") for p in fake_hub.state.repos.values()] == ["private", "private"]


def test_a_failed_push_is_one_clear_line(
    fake_hub: FakeHub, hub_copy_of_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    from selfguide_hf import cli
    from tests.test_cli import run_args

    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets-cache"))
    fake_hub.state.fail_commits = 500
    args = run_args(hub_copy_of_model, tmp_path / "run", "--push-to-hub", "me/broken")
    assert cli.main(args) == 3  # errors.EXIT_CODES: the Hub refused
    captured = capsys.readouterr()
    err = [line for line in captured.err.splitlines() if "error" in line]
    assert len(err) == 1 and "pushing to the model repository me/broken failed" in err[0]
    assert "Traceback" not in captured.err and "adapter pushed" not in captured.out
    assert fake_hub.files("me/broken") == {}


def test_the_adapter_carries_its_task_spec_and_a_model_index(fake_hub: FakeHub, trained_run) -> None:
    """Anyone can prompt the adapter as it was trained: the spec is in the repository, the card says how."""
    from huggingface_hub import ModelCard

    from selfguide_hf.cards import SPEC_FILE
    from selfguide_hf.task import TaskSpec

    run, data, result = trained_run
    report = {
        "baseline": {"score": 40.0, "num_examples": 4},
        "self_guided": {"score": 55.0, "num_examples": 4},
        "interval": {
            "delta": 15.0,
            "low": 2.5,
            "high": 27.5,
            "level": 0.95,
            "resamples": 1000,
            "seed": 0,
            "rows": 4,
        },
        "eval_split": "validation",
    }
    publish.push_run_adapter(run, data, result, report)
    files = fake_hub.files("me/tiny-selfguide")
    spec = TaskSpec.from_dict(json.loads(files[SPEC_FILE]), source=SPEC_FILE)
    assert spec.to_dict() == run.spec.to_dict()
    card = files["README.md"].decode()
    assert f'hf_hub_download("me/tiny-selfguide", "{SPEC_FILE}")' in card and "render_task_prompt" in card
    results = ModelCard(card).data.eval_results
    by_name = {r.metric_name: r.metric_value for r in results}
    assert (
        by_name[f"{spec.metric} (self-guided)"] == 55.0 and by_name[f"{spec.metric} (few-shot base)"] == 40.0
    )
    assert any("95% CI 2.5 to 27.5" in name for name in by_name)
    assert "model-index" in card


def test_a_local_embedding_model_folder_is_not_pushed_and_an_unknown_path_is_refused(
    fake_hub: FakeHub, trained_run, tmp_path: Path
) -> None:
    run, data, result = trained_run
    embedding = tmp_path / "my-embedder"
    embedding.mkdir()
    run.args.corpus_embedding_model = str(embedding)  # a local folder given as the embedding model
    run.args.synthesis = {**(run.args.synthesis or {}), "note": str(embedding)}
    try:
        publish.push_run_adapter(run, data, result)
        for name, content in fake_hub.files("me/tiny-selfguide").items():
            assert str(embedding).encode() not in content, name
    finally:
        run.args.synthesis = {k: v for k, v in (run.args.synthesis or {}).items() if k != "note"} or None
    # a path no list knows of, planted in the card: the scan over every text file refuses the push
    planted = "/srv/private/models/secret-7b"
    with pytest.raises(
        hub.HubPushError, match=r"README\.md:\d+ holds a local path '/srv/private/models/secret-7b'"
    ):
        hub.push_adapter(run.output_dir, "me/planted", f"# card\n\nbase: {planted}\n", token=TOKEN)
    assert fake_hub.files("me/planted") == {}


def test_a_run_with_a_local_embedding_model_pushes_no_local_path(
    fake_hub: FakeHub, hub_copy_of_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`selfguide run --corpus ... --corpus-retriever embeddings --corpus-embedding-model <folder> --push-to-hub`."""
    import shutil

    from selfguide_hf import cli, corpus
    from tests.test_cli import run_args
    from tests.test_corpus import write_corpus

    embedder = tmp_path / "private" / "my-embedder"
    shutil.copytree(corpus.resolve_embedding_model(corpus.DEFAULT_EMBEDDING_MODEL), embedder)
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets-cache"))
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    texts = write_corpus(tmp_path / "private" / "texts.jsonl")
    args = run_args(
        hub_copy_of_model,
        tmp_path / "run",
        "--push-to-hub",
        "me/embedded",
        "--push-dataset",
        "me/embedded-data",
    )
    args += [
        "--corpus",
        str(texts),
        "--corpus-retriever",
        "embeddings",
        "--corpus-embedding-model",
        str(embedder),
    ]
    assert cli.main(args) == 0
    pushed = {**fake_hub.files("me/embedded"), **fake_hub.files("me/embedded-data", "dataset")}
    assert "README.md" in pushed and "selfguide_task.json" in pushed
    for name, data in pushed.items():
        assert str(embedder).encode() not in data and str(tmp_path).encode() not in data, name
    assert b"my-embedder" in fake_hub.files("me/embedded")["selfguide_run.json"]  # named, by its folder name
    # the base is the embedded copy (its marker): both cards say what the weights really were
    for card in (pushed["README.md"], fake_hub.files("me/embedded-data", "dataset")["README.md"]):
        assert b"the Q4_1 GGUF of HuggingFaceTB/SmolLM2-135M-Instruct" in card


def test_cards_name_the_cpu_threads_that_drew_the_rows(trained_run) -> None:
    """On a CPU the thread count changes the rows a seed draws: the builder's record reaches the cards."""
    import datasets

    from selfguide_hf.run import SyntheticData

    run, data, _ = trained_run
    recorded = {
        "selfguide": {"preset": "default", "model_fingerprint": "abc", "cpu_threads": 3, "synthesis": {}}
    }
    info = datasets.DatasetInfo(description=json.dumps(recorded))
    made = SyntheticData(datasets.Dataset.from_list([{"input": "x"}], info=info), None, "selfguide", "f")
    config = publish._synthesis_config(run, made)
    assert config["cpu_threads"] == 3
    assert "| cpu_threads | 3 |" in cards.synthesis_text(config)
    assert "cpu_threads" not in publish._synthesis_config(run, data)  # rows from a file: nothing to name
