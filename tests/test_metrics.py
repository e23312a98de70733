"""Tests for selfguide_hf.metrics: hand-computed scores, label extraction, offline loading.

ROUGE-L arithmetic below uses rouge_score's default tokenizer (lowercase, words of
[a-z0-9], everything else a separator) and the Porter stemmer, which only touches
tokens longer than 3 characters: "cats"->"cat", "running"->"run", "runs"->"run",
"quickly"->"quickli", "jumps"/"jumped"->"jump", "bites"->"bite",
"connections"/"connected"->"connect".
F1 = 2PR / (P + R) with P = LCS / len(prediction), R = LCS / len(reference).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from selfguide_hf import metrics
from selfguide_hf.metrics import (
    METRIC_NAMES,
    compute_exact_match,
    compute_rouge_l,
    exact_match_score,
    extract_label,
    load_metric,
    metric_path,
    normalize_answer,
    rouge_l_score,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
METRICS_DIR = REPO_ROOT / "selfguide_hf" / "metrics"
NLI = ["E", "C", "N"]


# ------------------------------------------------------------------ normalize_answer


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("  The  ANSWER, is:\n 'Yes'! ", "the answer is yes"),
        ("Not-Entailment", "notentailment"),  # punctuation deleted, not spaced
        ("\u201cYes\u201d\u2026", "yes"),  # Unicode quotes and ellipsis are punctuation
        ("a\t\tb\n\nc", "a b c"),
        ("$100 + 5%", "100 5"),  # ASCII symbols in string.punctuation go too
        ("", ""),
        (None, ""),
        ("  ...  ", ""),
    ],
)
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


# --------------------------------------------------------------------- extract_label


@pytest.mark.parametrize(
    ("answer", "labels", "expected"),
    [
        # last occurrence wins
        ("It's positive, not negative.", ["positive", "negative"], "negative"),
        ("Negative? No: positive", ["positive", "negative"], "positive"),
        # word boundaries: single letters are not found inside words
        ("No, the answer is C", NLI, "C"),  # "N" of "No", "e" of "the" ignored
        ("Entailment", NLI, None),
        ("Neutral", NLI, None),
        ("N.", NLI, "N"),
        ("(E)", NLI, "E"),
        ("answer:n", NLI, "N"),  # case-insensitive, ':' is a boundary
        ("E or C?  I pick N", NLI, "N"),
        # labels that are prefixes / substrings of each other
        ("10", ["1", "10"], "10"),
        ("1", ["1", "10"], "1"),
        ("10 or 1", ["1", "10"], "1"),
        ("Not entailment", ["entailment", "not entailment"], "not entailment"),
        ("Entailment", ["entailment", "not entailment"], "entailment"),
        ("entailment, well, not entailment", ["entailment", "not entailment"], "not entailment"),
        ("not entailment but entailment", ["not entailment", "entailment"], "entailment"),
        # multiword labels: any whitespace between words, any case
        ("NOT\n  Entailment.", ["entailment", "Not Entailment"], "Not Entailment"),
        ("notentailment", ["not entailment"], None),
        # overlapping matches: the one ending last, then the longer one
        ("a b c", ["a b", "b c"], "b c"),
        ("yes or no", ["no", "yes or no"], "yes or no"),
        ("yes or no", ["yes or no", "no"], "yes or no"),
        # labels with punctuation at their edges
        ("Answer: (B).", ["(A)", "(B)"], "(B)"),
        # returned as spelled in labels; duplicates differing in case are one label
        ("entailment", ["Entailment", "entailment"], "Entailment"),
        ("SUPPORT", ["support", "undermine"], "support"),
        # nothing to find
        ("", NLI, None),
        (None, NLI, None),
        ("C", [], None),
        ("C", None, None),
        ("C", ["", "  "], None),
        ("Supporting", ["support", "undermine"], None),
    ],
)
def test_extract_label(answer, labels, expected):
    assert extract_label(answer, labels) == expected


def test_extract_label_rejects_bad_labels():
    with pytest.raises(TypeError, match="list of strings"):
        extract_label("yes", "yes")
    with pytest.raises(TypeError, match="must be a string"):
        extract_label("1", [1, 2])


# ----------------------------------------------------------------------- exact match


def test_exact_match_score():
    # label extracted ("C"), normalised "c" == "c"
    assert exact_match_score("The answer is C.", ["C"], labels=NLI) == 100.0
    # no label named ("N" inside "No" does not count): whole answer "no" != "n"
    assert exact_match_score("No.", "N", labels=NLI) == 0.0
    # without labels the whole answer is compared after normalisation
    assert exact_match_score("  YES! ", "yes") == 100.0
    assert exact_match_score("The answer is C.", "C") == 0.0
    # last label wins even if an earlier one is right
    assert exact_match_score("C? no, E", "C", labels=NLI) == 0.0
    # max over references
    assert exact_match_score("cat", ["dog", "Cat."]) == 100.0
    assert exact_match_score("cat", ["dog", "cow"]) == 0.0
    # the extracted label is normalised too: "(B)" -> "b"
    assert exact_match_score("I choose (B)", "b", labels=["(A)", "(B)"]) == 100.0
    # an empty / missing answer matches nothing but an empty reference
    assert exact_match_score("", ["yes"]) == 0.0
    assert exact_match_score(None, ["yes"]) == 0.0


def test_compute_exact_match_corpus():
    out = compute_exact_match(
        predictions=["The answer is C.", "No.", "yes", "Entailment, so E"],
        references=[["C"], "N", ["no", "Yes!"], "e"],
        labels=NLI,
    )
    # per example: C==C -> 100; "no"!="n" -> 0; "yes" in refs -> 100; E==e -> 100
    # mean = 300 / 4 = 75.0
    assert out["exact_match"] == pytest.approx(75.0)
    assert out["scores"] == [100.0, 0.0, 100.0, 100.0]
    assert out["extracted_predictions"] == ["C", "No.", "yes", "E"]


def test_compute_exact_match_errors():
    with pytest.raises(ValueError, match="differ in length"):
        compute_exact_match(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="no examples"):
        compute_exact_match([], [])
    with pytest.raises(ValueError, match="empty list of references"):
        compute_exact_match(["a"], [[]])
    with pytest.raises(TypeError, match="not a single string"):
        compute_exact_match("a", "a")


# --------------------------------------------------------------------------- ROUGE-L


@pytest.mark.parametrize(
    ("prediction", "reference", "expected"),
    [
        # [the cat are run] vs [a cat run quickli]: LCS = cat run = 2
        # P = 2/4, R = 2/4, F = 0.5
        ("the cats are running", "a cat runs quickly", 50.0),
        # [the cat sat on the mat] vs [the cat is on the mat]: LCS = the cat on the mat = 5
        # P = 5/6, R = 5/6, F = 5/6
        ("the cat sat on the mat", "the cat is on the mat", 100 * 5 / 6),
        # [the quick brown fox jump] vs [the fox jump]: LCS = 3
        # P = 3/5, R = 3/3, F = 2 * 0.6 * 1 / 1.6 = 0.75
        ("the quick brown fox jumps", "the fox jumped", 75.0),
        # stemming alone makes these equal: [connect] vs [connect]
        ("connections", "connected", 100.0),
        # a subsequence, not a bag: [dog bite man] vs [man bite dog]: LCS = 1
        # P = R = 1/3, F = 1/3
        ("dog bites man", "man bites dog", 100 / 3),
        # case and punctuation are dropped by the tokenizer
        ("The CAT!", "the cat", 100.0),
        # no common token
        ("dog bites man", "the cat is on the mat", 0.0),
        # empty, blank, or token-less predictions score 0
        ("", "the cat", 0.0),
        ("   \n", "the cat", 0.0),
        ("!!!", "the cat", 0.0),
        (None, "the cat", 0.0),
    ],
)
def test_rouge_l_score(prediction, reference, expected):
    assert rouge_l_score(prediction, reference) == pytest.approx(expected)
    assert rouge_l_score(prediction, [reference]) == pytest.approx(expected)


def test_rouge_l_max_over_references():
    # vs "dog bites man": 0; vs "the cat is on the mat": 5/6 (see above) -> max 5/6
    refs = ["dog bites man", "the cat is on the mat"]
    assert rouge_l_score("the cat sat on the mat", refs) == pytest.approx(100 * 5 / 6)
    # order of references does not matter
    assert rouge_l_score("the cat sat on the mat", refs[::-1]) == pytest.approx(100 * 5 / 6)


def test_compute_rouge_l_corpus():
    out = compute_rouge_l(
        predictions=["the cats are running", "the quick brown fox jumps", ""],
        references=["a cat runs quickly", ["x y", "the fox jumped"], ["anything"]],
    )
    # per example 50, 75 (max over refs), 0 -> mean 125 / 3
    assert out["scores"] == pytest.approx([50.0, 75.0, 0.0])
    assert out["rouge_l"] == pytest.approx(125 / 3)


def test_compute_rouge_l_errors():
    with pytest.raises(ValueError, match="differ in length"):
        compute_rouge_l(["a"], ["a", "b"])
    with pytest.raises(ValueError, match="no examples"):
        compute_rouge_l([], [])
    with pytest.raises(ValueError, match="empty list of references"):
        rouge_l_score("a", [])
    with pytest.raises(TypeError, match="must be a string"):
        rouge_l_score("a", [1])


# ------------------------------------------------------------ registry / module files


def test_unknown_metric_lists_known_names():
    with pytest.raises(ValueError, match="unknown metric 'bleu'") as info:
        load_metric("bleu")
    for name in METRIC_NAMES:
        assert name in str(info.value)
    with pytest.raises(ValueError, match="exact_match, rouge_l"):
        metric_path("accuracy")


def test_metric_paths_follow_evaluate_layout():
    # evaluate.load(folder) loads folder/<folder name>.py
    assert set(METRIC_NAMES) == {"exact_match", "rouge_l"}
    for name in METRIC_NAMES:
        folder = Path(metric_path(name))
        assert folder.parent == METRICS_DIR
        script = folder / f"{folder.name}.py"
        assert script.is_file()
        # evaluate copies only this file: relative imports would break in the copy
        for line in script.read_text(encoding="utf-8").splitlines():
            assert not line.startswith("from ."), line
            assert not line.startswith("import ."), line
    assert metric_path("Rouge-L") == metric_path("rouge_l")


# ------------------------------------------------ evaluate modules, in this process
# These use the process's own evaluate cache (HF_HOME); the isolated, offline,
# empty-HF_HOME check is the subprocess test further down.


def test_load_metric_is_cached_and_matches_core():
    em = load_metric("exact_match")
    assert load_metric("EXACT-MATCH") is em
    assert em.name == "ni_exact_match"
    assert "SELF-GUIDE" in em.citation and "Natural" in em.citation

    preds = ["The answer is C.", "No.", "yes", "Entailment, so E"]
    refs = [["C"], "N", ["no", "Yes!"], "e"]  # mixed single strings and lists
    out = em.compute(predictions=preds, references=refs, labels=NLI)
    assert out == compute_exact_match(preds, refs, labels=NLI)
    assert out["exact_match"] == pytest.approx(75.0)

    rl = load_metric("rouge_l")
    assert load_metric("rouge_l") is rl
    preds = ["the cats are running", "the quick brown fox jumps", ""]
    refs = ["a cat runs quickly", ["x y", "the fox jumped"], ["anything"]]
    out = rl.compute(predictions=preds, references=refs)
    assert out["rouge_l"] == pytest.approx(125 / 3)
    assert out["scores"] == pytest.approx([50.0, 75.0, 0.0])


def test_evaluate_module_streaming_and_errors():
    em = load_metric("exact_match")
    # add / add_batch with mixed reference forms, labels given at compute time
    em.add(prediction="I think E", reference="E")
    em.add_batch(predictions=["N", "no"], references=[["N", "C"], "C"])
    em.add_batch(predictions=[], references=[])  # an empty shard is a no-op
    out = em.compute(labels=NLI)
    # E==E -> 100; N in refs -> 100; "no" names no label, "no" != "c" -> 0: 200/3
    assert out["exact_match"] == pytest.approx(200 / 3)
    assert out["extracted_predictions"] == ["E", "N", "no"]

    # state is reset after compute
    assert em.compute(predictions=["x"], references=["x"])["exact_match"] == 100.0

    with pytest.raises(ValueError, match="differ in length"):
        em.compute(predictions=["a", "b"], references=["a"])
    with pytest.raises(ValueError, match="no examples"):
        em.compute(predictions=[], references=[])
    with pytest.raises(ValueError, match="no examples"):
        em.compute()
    # the module still works after the errors
    rl = load_metric("rouge_l")
    with pytest.raises(ValueError, match="differ in length"):
        rl.compute(predictions=["a"], references=["a", "b"])
    assert rl.compute(predictions=["a b"], references=["a b"])["rouge_l"] == 100.0


# ------------------------------------------------- offline, empty HF_HOME, subprocess

_OFFLINE_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import evaluate

    em = evaluate.load(sys.argv[1])
    rl = evaluate.load(sys.argv[2])
    out = {
        "em": em.compute(
            predictions=["The answer is C.", "No."], references=["C", ["N"]],
            labels=["E", "C", "N"],
        ),
        "rl": rl.compute(
            predictions=["the cats are running", "the cat sat on the mat"],
            references=[["a cat runs quickly"], "the cat is on the mat"],
        ),
        "em_name": em.name,
        "rl_name": rl.name,
        "module_file": sys.modules[type(em).__module__].__file__,
    }
    print(json.dumps(out))
    """
)


def test_evaluate_load_by_path_offline_with_empty_hf_home(tmp_path, monkeypatch):
    hf_home = tmp_path / "hf_home"
    hf_home.mkdir()
    workdir = tmp_path / "elsewhere"  # not the repo: the package comes from PYTHONPATH
    workdir.mkdir()
    for var in ("HF_MODULES_CACHE", "HF_METRICS_CACHE", "HF_EVALUATE_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_EVALUATE_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # any Hub call would fail fast
    pythonpath = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)
    monkeypatch.setenv("PYTHONPATH", pythonpath)

    proc = subprocess.run(
        [sys.executable, "-c", _OFFLINE_SCRIPT, metric_path("exact_match"), metric_path("rouge_l")],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])

    # "The answer is C." -> C == C: 100; "No." names no label, "no" != "n": 0 -> 50
    assert out["em"]["exact_match"] == pytest.approx(50.0)
    assert out["em"]["extracted_predictions"] == ["C", "No."]
    # 50 and 83.33 (hand-computed above) -> mean (50 + 250/3) / 2 = 66.67
    assert out["rl"]["rouge_l"] == pytest.approx((50 + 250 / 3) / 2)
    assert out["em_name"] == "ni_exact_match" and out["rl_name"] == "ni_rouge_l"

    # evaluate ran the copy in the modules cache under the empty HF_HOME ...
    modules = hf_home / "modules" / "evaluate_modules" / "metrics"
    assert Path(out["module_file"]).resolve().is_relative_to(modules.resolve())
    for name in ("ni_exact_match", "ni_rouge_l"):
        copies = list((modules / name).glob(f"*/{name}.py"))
        assert len(copies) == 1, copies
        # ... and the copy is the shipped file, byte for byte
        assert copies[0].read_bytes() == (METRICS_DIR / name / f"{name}.py").read_bytes()


def test_helpers_do_not_import_evaluate():
    # the helpers stay cheap: evaluate is imported only by load_metric()
    code = (
        "import sys; import selfguide_hf; before = 'evaluate' in sys.modules; "
        "import selfguide_hf.metrics as m; "
        "m.rouge_l_score('a', 'a'); m.exact_match_score('a', 'a'); "
        "print(before or 'evaluate' not in sys.modules)"
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "True"
    assert metrics.__name__ == "selfguide_hf.metrics"
