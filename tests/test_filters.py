"""The keep/drop rules, on plain strings (no model)."""

from __future__ import annotations

import pytest

from selfguide_hf.filters import (
    FILTERS,
    FilterContext,
    Verdict,
    apply_filters,
    format_markers,
    get_filter,
    leading_marker,
    length_window,
    map_label,
    normalize_answer,
    register_filter,
    self_consistency_vote,
)


# ------------------------------------------------------------------ length window
def test_length_window_is_the_papers_int_mu_pm_2_sigma() -> None:
    # lengths 10, 20, 30: mu = 20, population sigma = sqrt(200/3) = 8.165
    assert length_window([10, 20, 30]) == (int(20 - 2 * 8.1649658), int(20 + 2 * 8.1649658)) == (3, 36)


def test_length_window_empty_when_demonstrations_have_one_length() -> None:
    assert length_window([50]) is None
    assert length_window([40, 40, 40]) is None
    assert length_window([]) is None


def test_length_window_sigma_floor_widens_few_demonstrations() -> None:
    # task738-like: two demonstrations 150 and 125 chars -> a 24-char window in the paper
    assert length_window([150, 125]) == (112, 162)
    assert length_window([150, 125], min_sigma_ratio=0.5) == (0, 275)


def test_length_filter_bounds_are_half_open() -> None:
    ctx = FilterContext(length_window=(3, 6))
    keep = get_filter("length")
    assert not keep("ab", ctx).keep
    assert keep("abc", ctx).keep
    assert keep("abcde", ctx).keep
    assert keep("abcdef", ctx).reason == "length"
    assert keep("x" * 100, FilterContext(length_window=None)).keep


# ------------------------------------------------------------------ simple filters
def test_empty_filter_strips() -> None:
    assert get_filter("empty")("  \n ", FilterContext()) == Verdict.dropped("empty", "  \n ")
    assert get_filter("empty")("  hi ", FilterContext()) == Verdict.kept("hi")


def test_noise_filter_is_case_sensitive_for_task_strings_and_catches_chat() -> None:
    ctx = FilterContext(noise_strings=("input", "\n\n", "Therefore"))
    noise = get_filter("noise")
    assert noise("the input is", ctx).reason == "noise"
    assert noise("Input: a claim", ctx).keep  # the paper's noise match is case-sensitive
    assert noise("one\n\ntwo", ctx).reason == "noise"
    assert noise("Sure, I'd be happy to help with that", ctx).reason == "chat_phrase"
    assert noise("OF COURSE! here it is", ctx).reason == "chat_phrase"
    assert noise("a plain sentence", ctx).keep
    assert noise("Sure, I'd be happy to help", FilterContext(chat_phrases=())).keep


def test_duplicate_filter_ignores_case_spacing_and_punctuation() -> None:
    ctx = FilterContext(seen={normalize_answer("The cat sat.")})
    dup = get_filter("duplicate")
    assert dup("the  cat sat", ctx).reason == "duplicate"
    assert dup("THE CAT SAT!", ctx).reason == "duplicate"
    assert dup("the cat stood", ctx).keep


def test_format_markers_come_from_every_demonstration() -> None:
    demos = ["claim: a b.\nperspective: c", "Claim: d.\nperspective: e f"]
    assert format_markers(demos) == ("claim", "perspective")
    assert format_markers(["Sentence 1: a. Sentence 2: b.", "Sentence 1: c. Sentence 2: d."]) == (
        "sentence 1",
        "sentence 2",
    )
    assert format_markers(["Who won?", "What is it?"]) == ()
    assert format_markers(["Note: x", "plain"]) == ()


def test_format_filter_needs_every_marker() -> None:
    ctx = FilterContext(format_markers=("claim", "perspective"))
    fmt = get_filter("format")
    assert fmt("claim: x\nPerspective: y", ctx).keep
    assert fmt("claim: x", ctx).reason == "format"
    assert fmt("I'm ready to help!", ctx).reason == "format"
    assert fmt("anything", FilterContext()).keep


def test_unwrap_strips_an_announcing_first_line_only() -> None:
    ctx = FilterContext(format_markers=("claim",))
    unwrap = get_filter("unwrap")
    assert unwrap("Example 3:\nclaim: x", ctx).text == "claim: x"
    assert unwrap("New input: claim: x", ctx).text == "claim: x"
    assert unwrap("Here is a new input:\n\nclaim: x", ctx).text == "claim: x"
    assert unwrap("claim:\nx", ctx).text == "claim:\nx"  # a field marker is content, not a header
    assert unwrap("plain text", ctx).text == "plain text"


def test_leading_marker_is_shared_by_all_inputs() -> None:
    assert leading_marker(["claim: a\nperspective: b", "claim: c"]) == "claim: "
    assert leading_marker(["Premise: a <sep> Hypothesis: b", "premise: c"]) == "Premise: "
    assert leading_marker(["Statement: a", "Statment: b", "Statement: c"]) == "Statement: "  # a typo
    assert leading_marker(["Sentence 1: a", "no marker here"]) == ""
    assert leading_marker(["Who won?"]) == ""


# ------------------------------------------------------------------ labels
@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("support", "support"),
        ("SUPPORT", "support"),
        ("  Undermine.", "undermine"),
        ("Supporting", "support"),  # word start, label of 4+ chars
        ("The perspective undermines the claim.", "undermine"),
        ("It could support or undermine it", None),
        ("no idea at all", None),
    ],
)
def test_map_label_two_labels(answer: str, expected: str | None) -> None:
    label, reason = map_label(answer, ("support", "undermine"))
    assert label == expected
    if expected is None:
        assert reason in ("no_label", "ambiguous_label")


def test_map_label_short_labels_need_whole_words() -> None:
    labels = ("E", "C", "N")
    assert map_label("E", labels) == ("E", "")
    assert map_label("The answer is N.", labels) == ("N", "")
    assert map_label("Entailment", labels) == (None, "no_label")  # "E" is not the start-of-word rule
    assert map_label("no", ("yes", "no")) == ("no", "")
    assert map_label("Not sure", ("yes", "no")) == (None, "no_label")
    assert map_label("yes or no", ("yes", "no")) == (None, "ambiguous_label")
    assert map_label("2", ("1", "2", "3")) == ("2", "")


def test_label_filter_rewrites_to_the_canonical_label() -> None:
    ctx = FilterContext(labels=("Entailment", "Neutral", "Contradiction"))
    assert apply_filters(" neutral ", ["empty", "label"], ctx) == Verdict.kept("Neutral")
    assert apply_filters("maybe", ["empty", "label"], ctx).reason == "no_label"


# ------------------------------------------------------------------ vote
def test_vote_majority_share_and_min_frequency() -> None:
    assert self_consistency_vote(["a", "b", "a", "A "], 0.3) == ("a", 0.75, 3)
    assert self_consistency_vote(["a", "b", "c", "d"], 0.3) == (None, 0.25, 1)
    assert self_consistency_vote([], 0.3) == (None, 0.0, 0)


def test_vote_ties_go_to_the_shortest() -> None:
    winner, share, count = self_consistency_vote(["long answer", "short", "long answer", "short"], 0.3)
    assert (winner, share, count) == ("short", 0.5, 2)


# ------------------------------------------------------------------ registry
def test_registry_order_and_first_drop_wins() -> None:
    assert {"empty", "length", "noise", "duplicate", "label", "format", "unwrap"} <= set(FILTERS)
    ctx = FilterContext(length_window=(0, 3), noise_strings=("x",))
    assert apply_filters("xxxx", ["empty", "length", "noise"], ctx).reason == "length"
    assert apply_filters("xxxx", ["empty", "noise", "length"], ctx).reason == "noise"


def test_unknown_filter_name_is_an_error_naming_it() -> None:
    with pytest.raises(ValueError, match="'nope'"):
        get_filter("nope")


def test_register_filter_rejects_a_second_function_under_a_name() -> None:
    @register_filter("test_always_keep")
    def always_keep(text: str, ctx: FilterContext) -> Verdict:
        return Verdict.kept(text)

    try:
        assert apply_filters("t", ["test_always_keep"], FilterContext()).keep
        with pytest.raises(ValueError, match="already registered"):
            register_filter("test_always_keep")(lambda text, ctx: Verdict.kept(text))
    finally:
        FILTERS.pop("test_always_keep")


# ------------------------------------------------------------------ novelty
def test_rouge_l_f1_is_the_lcs_f_measure() -> None:
    from selfguide_hf.filters import rouge_l_f1

    assert rouge_l_f1(["the", "cat", "sat", "on", "the", "mat"], ["the", "cat", "sat"]) == pytest.approx(
        2 * 3 / 9
    )
    assert rouge_l_f1(["a", "b", "c", "d"], ["d", "c", "b", "a"]) == pytest.approx(2 * 1 / 8)
    assert rouge_l_f1([], ["a"]) == 0.0 and rouge_l_f1(["a"], ["a"]) == 1.0


def test_novelty_filter_drops_near_copies_of_accepted_inputs_and_demonstrations() -> None:
    from selfguide_hf.filters import NoveltyIndex

    index = NoveltyIndex(["Premise: a man walks his dog in the park. Hypothesis: a man is outside."])
    ctx = FilterContext(novelty=index, novelty_threshold=0.7)
    near = "Premise: a man walks his dog in the park. Hypothesis: a person is outside."
    assert apply_filters(near, ("novelty",), ctx) == Verdict.dropped("novelty", near)
    new = "Premise: two children build a sandcastle. Hypothesis: the kids are at the beach."
    assert apply_filters(new, ("novelty",), ctx).keep
    index.add(new)  # accepted: now a near copy of it is refused too
    assert not apply_filters(new.replace("two", "three"), ("novelty",), ctx).keep
    loose = FilterContext(novelty=index, novelty_threshold=0.95)
    assert apply_filters(near, ("novelty",), loose).keep  # 0.95 lets a paraphrase through


def test_novelty_index_agrees_with_the_pairwise_definition() -> None:
    import random

    from selfguide_hf.filters import NoveltyIndex, _words, rouge_l_f1

    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(30)]
    texts = [" ".join(rng.choices(vocab, k=rng.randint(3, 12))) for _ in range(60)]
    index = NoveltyIndex(texts[:40])
    for text in texts[40:]:
        best = max(rouge_l_f1(_words(text), _words(other)) for other in texts[:40])
        for threshold in (0.3, 0.5, 0.7):
            assert index.exceeds(text, threshold) == (best > threshold)
