"""Inputs from a user's corpus (ReBase): loading, BM25 order, the cache key, and runs in both modes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from selfguide_hf.bundled import bundled_spec
from selfguide_hf.corpus import CorpusError, corpus_fingerprint, load_corpus, rank_corpus

ROWS = [
    "The stock market fell sharply today.",
    "claim: Cats should be kept indoors. perspective: Indoor cats live longer.",
    "  ",
    "A recipe for lemon cake with three eggs.",
    "claim: Dogs need daily walks. perspective: Walking keeps dogs healthy and calm.",
    "the stock market fell sharply today",  # a duplicate once case and punctuation are ignored
]


def write_corpus(path: Path, rows: list[str] = ROWS, field: str = "text") -> Path:
    path.write_text("".join(json.dumps({field: row, "id": i}) + "\n" for i, row in enumerate(rows)))
    return path


def test_bm25_puts_the_task_like_rows_first(tmp_path: Path) -> None:
    texts = load_corpus(write_corpus(tmp_path / "c.jsonl"))
    assert len(texts) == 4  # the empty row and the duplicate are gone
    order = [texts[i] for i in rank_corpus(texts, bundled_spec("task738"))]  # claims and perspectives
    assert order[:2] == [ROWS[4], ROWS[1]] or order[:2] == [ROWS[1], ROWS[4]]
    assert set(order[2:]) == {ROWS[0], ROWS[3]}


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".txt", ".parquet", "folder"])
def test_every_corpus_format_loads(suffix: str, tmp_path: Path) -> None:
    from datasets import Dataset

    rows = [r for r in ROWS if r.strip() and "," not in r]
    data = Dataset.from_dict({"text": rows})
    path = tmp_path / f"c{suffix if suffix != 'folder' else ''}"
    if suffix == ".jsonl":
        data.to_json(str(path))
    elif suffix == ".csv":
        data.to_csv(str(path), index=False)
    elif suffix == ".txt":
        path.write_text("\n".join(rows) + "\n")
    elif suffix == ".parquet":
        data.to_parquet(str(path))
    else:
        data.save_to_disk(str(path))
    assert len(load_corpus(path)) == len(rows) - 1  # one duplicate after normalisation


def test_corpus_errors_name_the_file_and_field(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="no such corpus file"):
        load_corpus(tmp_path / "missing.jsonl")
    with pytest.raises(CorpusError, match=r"no field 'body' \(it has \['text', 'id'\]\)"):
        load_corpus(write_corpus(tmp_path / "c.jsonl"), field="body")
    with pytest.raises(CorpusError, match="holds no non-empty text"):
        load_corpus(write_corpus(tmp_path / "empty.jsonl", ["", "  "]))
    with pytest.raises(CorpusError, match=r"unsupported corpus type '\.xml'"):
        (tmp_path / "c.xml").write_text("<a/>")
        load_corpus(tmp_path / "c.xml")


def test_an_edited_corpus_is_another_dataset(tiny_model_dir: Path, tmp_path: Path) -> None:
    from selfguide_hf.builder import SelfGuideDataset

    corpus = write_corpus(tmp_path / "c.jsonl")
    params = {
        "task": "task738",
        "model": str(tiny_model_dir),
        "cache_dir": str(tmp_path / "cache"),
        "corpus": str(corpus),
    }
    before = SelfGuideDataset(**params).config_id
    assert SelfGuideDataset(**params).config_id == before  # the same file: the same data
    fingerprint = corpus_fingerprint(corpus)
    write_corpus(
        corpus, [*ROWS, "claim: Birds sing. perspective: Songs mark territory."]
    )  # same path, new row
    assert corpus_fingerprint(corpus) != fingerprint
    assert SelfGuideDataset(**params).config_id != before


@pytest.mark.parametrize("mode", ["inputs", "rewrite"])
def test_selfguide_run_with_a_corpus(mode: str, tiny_model_dir: Path, tmp_path: Path, monkeypatch) -> None:
    from selfguide_hf import cli, synthesis
    from tests.test_cli import run_args

    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    prompts_seen: list[str] = []
    real = synthesis._Synthesis.generate_inputs

    def generate_inputs(self, round_index, prompts):
        prompts_seen.extend(prompts)
        return real(self, round_index, prompts)

    monkeypatch.setattr(synthesis._Synthesis, "generate_inputs", generate_inputs)
    corpus = write_corpus(tmp_path / "c.jsonl")
    out = tmp_path / "run"
    args = run_args(tiny_model_dir, out, "--corpus", str(corpus), "--corpus-mode", mode, "--num-inputs", "3")
    args[args.index("--min-pairs") + 1] = "1"
    assert cli.main(args) == 0
    funnel = json.loads((out / "synthetic" / "funnel.json").read_text())
    assert funnel["raw_inputs"] == 3 and funnel["notes"]["corpus"]["mode"] == mode
    assert funnel["notes"]["corpus"]["fingerprint"] == corpus_fingerprint(corpus)
    rows = [json.loads(line)["input"] for line in (out / "synthetic" / "train.jsonl").open()]
    if mode == "inputs":
        assert prompts_seen == [] and set(rows) <= {r.strip() for r in ROWS}  # no model call writes inputs
        assert ROWS[0] not in rows or ROWS[3] not in rows  # the least task-like rows were not taken first
    else:
        assert len(prompts_seen) == 3 and all("Here is a text from another source" in p for p in prompts_seen)
        assert any(ROWS[1] in p or ROWS[4] in p for p in prompts_seen)


def test_a_bad_corpus_fails_before_synthesis(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    from selfguide_hf import cli
    from tests.test_cli import run_args

    corpus = write_corpus(tmp_path / "c.jsonl")
    args = run_args(tiny_model_dir, tmp_path / "run", "--corpus", str(corpus), "--corpus-field", "body")
    assert cli.main(args) == 2
    assert "no field 'body'" in capsys.readouterr().err
