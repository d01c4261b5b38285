"""Reflection markers: named lists with sources, word-boundary case-insensitive matching, think vs
answer length, aggregation by outcome."""
from __future__ import annotations

import doctest

import pytest

from stages.core import reflection
from stages.core.reflection import (MARKER_LISTS, aggregate, analyse_response, find_markers, has_reflection, markers,
                                    reflection_rate, split_think_answer)


@pytest.mark.parametrize("text, list_name, expected, reason", [
    ("Wait, that is wrong.", "union", ["wait"], "capitalised, followed by punctuation"),
    ("WAIT", "open_reasoner_zero", ["wait"], "upper case"),
    ("The awaited result", "union", [], "inside a longer word"),
    ("waiting for 3", "union", [], "a longer word starting with the marker"),
    ("I will re-evaluate.", "simplerl_zoo", ["re-evaluate"], "hyphenated marker"),
    ("so reevaluate", "simplerl_zoo", ["reevaluate"], "unhyphenated spelling is its own marker"),
    ("Let me check\nagain", "simplerl_zoo", ["check again"], "a phrase across a line break"),
    ("double-check it", "union", ["double-check"], "hyphenated phrase in the union"),
    ("double-check it", "understand_r1_zero", [], "'check' inside 'double-check' is not the word check"),
    ("Alternatively, however, retry", "open_reasoner_zero", ["alternatively", "however", "retry"], "sorted, distinct"),
    ("wait wait wait", "union", ["wait"], "each marker once"),
    ("", "union", [], "empty text"),
])
def test_find_markers(text, list_name, expected, reason):
    assert find_markers(text, list_name) == expected, reason


def test_every_list_names_its_source_and_the_union_holds_them_all():
    assert set(MARKER_LISTS) == {"simplerl_zoo", "open_reasoner_zero", "understand_r1_zero"}
    for entry in MARKER_LISTS.values():
        assert "arXiv" in entry.source and entry.words
    union = set(markers("union"))
    assert all(set(entry.words) <= union for entry in MARKER_LISTS.values())
    assert len(union) == len(markers("union")), "no repeats"


def test_unknown_list_is_refused_with_the_known_ones():
    with pytest.raises(ValueError, match="unknown reflection marker list 'orz'; known: simplerl_zoo, open_reasoner_zero"):
        find_markers("wait", "orz")


def test_reflection_rate_counts_responses_not_markers():
    texts = ["wait wait, recheck", "plain", "Alternatively", "retry"]
    assert reflection_rate(texts, "open_reasoner_zero") == 0.75
    assert reflection_rate(texts, "simplerl_zoo") == 0.25
    assert reflection_rate([], "union") == 0.0
    assert has_reflection("Hmm, let me double check", "understand_r1_zero")


@pytest.mark.parametrize("text, expected, reason", [
    ("<think>a b</think><answer>7</answer>", ("a b", "7"), "both blocks"),
    ("steps here</think> <answer>7</answer>", ("steps here", "7"), "the prompt opened <think>"),
    ("<think>unfinished reasoning", ("unfinished reasoning", ""), "truncated inside think"),
    ("<think>x</think><answer>1</answer><answer>2</answer>", ("x", "2"), "the last answer counts"),
    ("no tags at all", ("no tags at all", ""), "no tags: all reasoning, no answer"),
])
def test_split_think_answer(text, expected, reason):
    assert split_think_answer(text) == expected, reason


def test_markers_in_the_answer_only_count_when_there_is_no_think():
    assert analyse_response("<think>3</think><answer>wait 3</answer>")["markers"] == []
    assert analyse_response("no think, wait")["markers"] == ["wait"]


def test_aggregate_by_outcome():
    rows = [
        dict(analyse_response("<think>wait</think><answer>1</answer>"), correct=True, truncated=False),
        dict(analyse_response("<think>ok</think><answer>2</answer>"), correct=True, truncated=False),
        dict(analyse_response("<think>recheck</think><answer>3</answer>"), correct=False, truncated=False),
        dict(analyse_response("<think>long and wait"), correct=False, truncated=True),
    ]
    summary = aggregate(rows)
    assert summary["all"] == {"num": 4, "reflection_rate": 0.75, "think_chars": (4 + 2 + 7 + 13) / 4, "answer_chars": 0.75}
    assert summary["correct"]["num"] == 2 and summary["correct"]["reflection_rate"] == 0.5
    assert summary["incorrect"] == {"num": 1, "reflection_rate": 1.0, "think_chars": 7.0, "answer_chars": 1.0}
    assert summary["truncated"]["num"] == 1, "a truncated response counts as truncated, not incorrect"
    assert aggregate([])["correct"] == {"num": 0, "reflection_rate": None, "think_chars": None, "answer_chars": None}


def test_module_docstring_examples():
    assert doctest.testmod(reflection).failed == 0


def test_reflection_metrics_for_the_training_log():
    from stages.core.reflection import reflection_metrics

    metrics = reflection_metrics(["<think>Wait</think><answer>1</answer>", "<think>no", "<think>recheck</think><answer>22</answer>"],
                                 correct=[True, False, False], truncated=[False, True, False], list_name="union")
    assert metrics == {"completions/reflection_rate": 2 / 3, "reflection/rate_correct": 1.0, "reflection/rate_incorrect": 1.0,
                       "reflection/rate_truncated": 0.0, "reflection/think_chars": (4 + 2 + 7) / 3,
                       "reflection/answer_chars": 1.0}
    assert reflection_metrics([], [], []) == {}
    with pytest.raises(ValueError, match="2 texts, 1 verdicts"):
        reflection_metrics(["a", "b"], [True], [False, False])
