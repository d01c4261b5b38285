"""Reflection ("aha") markers in completions, and think vs answer length.

R1-Zero reproductions report the share of responses that reflect ("wait", "let me recheck")
as training goes on. Each published list is kept under its own name with its source, plus
their union, so a curve says which list it counts. Matching is case-insensitive on word
boundaries: "wait" counts in "Wait," but not in "awaited"; a phrase matches with any
whitespace between its words.

GRPO logs a per-step rate with ``reflection_rate``; the evaluation stage scores each sample
with ``analyse_response`` and aggregates by correct / incorrect / truncated.

Example:
    >>> find_markers("<think>3+4=8. Wait, let me recheck: 3+4=7.</think><answer>7</answer>")
    ['recheck', 'wait']
    >>> reflection_rate(["Wait, no.", "It is 7.", "I should double-check this."], "simplerl_zoo")
    0.3333333333333333
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable, Sequence


@dataclass(frozen=True)
class MarkerList:
    words: tuple[str, ...]
    source: str


MARKER_LISTS: dict[str, MarkerList] = {
    # The self-reflection keywords SimpleRL-Zoo counted for its "reflection" curves (Zeng et al. 2025,
    # arXiv:2503.18892, section on reflection behaviour; hkust-nlp/simpleRL-reason).
    "simplerl_zoo": MarkerList(
        ("recheck", "rethink", "reassess", "reevaluate", "re-evaluate", "reevaluation", "re-examine", "reexamine",
         "reconsider", "reanalyze", "double-check", "check again", "think again", "verify again", "go over the steps"),
        "SimpleRL-Zoo (Zeng et al. 2025, arXiv:2503.18892)"),
    # The reflection patterns Open-Reasoner-Zero tracked in its training curves (Hu et al. 2025,
    # arXiv:2503.24290, "reflection patterns" in the figure of response length and reflection).
    "open_reasoner_zero": MarkerList(
        ("wait", "recheck", "retry", "alternatively", "however"),
        "Open-Reasoner-Zero (Hu et al. 2025, arXiv:2503.24290)"),
    # The keywords understand-r1-zero used to find self-reflection in base-model and RL responses
    # (Liu et al. 2025, arXiv:2503.20783, section 2.3; sail-sg/understand-r1-zero).
    "understand_r1_zero": MarkerList(
        ("check", "rethink", "recheck", "reevaluate", "re-evaluate", "reconsider", "re-examine", "verify", "wait",
         "mistake", "let me double check", "let's double check"),
        "understand-r1-zero / Dr. GRPO (Liu et al. 2025, arXiv:2503.20783)"),
}
UNION = "union"
THINK_PATTERN = re.compile(r"<think>(.*?)(?:</think>|$)", re.S)
ANSWER_PATTERN = re.compile(r"<answer>(.*?)(?:</answer>|$)", re.S)


def marker_list_names() -> list[str]:
    """Every list name ``find_markers`` accepts, the union last.

    Example:
        >>> marker_list_names()[-1]
        'union'
    """
    return [*MARKER_LISTS, UNION]


def markers(list_name: str = UNION) -> tuple[str, ...]:
    """The words and phrases of a named list (``union``: every list's, sorted, no repeats).

    Example:
        >>> markers("open_reasoner_zero")
        ('wait', 'recheck', 'retry', 'alternatively', 'however')
    """
    if list_name == UNION:
        return tuple(sorted({word for entry in MARKER_LISTS.values() for word in entry.words}))
    if list_name not in MARKER_LISTS:
        raise ValueError(f"unknown reflection marker list {list_name!r}; known: {', '.join(marker_list_names())}")
    return MARKER_LISTS[list_name].words


@lru_cache(maxsize=None)
def _pattern(list_name: str) -> re.Pattern:
    # Longest first, so "re-evaluate" wins over a shorter alternative at the same place; \b on both
    # sides keeps "wait" out of "awaited" and "check" out of "recheck" (which counts as itself).
    words = sorted(markers(list_name), key=len, reverse=True)
    alternatives = "|".join(r"\s+".join(re.escape(part) for part in word.split()) for word in words)
    return re.compile(rf"(?<![\w-])(?:{alternatives})(?![\w-])", re.I)


def find_markers(text: str, list_name: str = UNION) -> list[str]:
    """The distinct markers of ``list_name`` found in ``text``, lower-cased and sorted.

    Example:
        >>> find_markers("Hmm, RECHECK. Awaited answer. Let me double   check.", "understand_r1_zero")
        ['let me double check', 'recheck']
    """
    found = {" ".join(match.group(0).lower().split()) for match in _pattern(list_name).finditer(text or "")}
    return sorted(found)


def has_reflection(text: str, list_name: str = UNION) -> bool:
    """Whether ``text`` holds at least one marker of ``list_name``.

    Example:
        >>> has_reflection("awaited"), has_reflection("wait")
        (False, True)
    """
    return _pattern(list_name).search(text or "") is not None


def reflection_rate(texts: Iterable[str], list_name: str = UNION) -> float:
    """The share of ``texts`` with at least one marker; 0.0 for no texts.

    Example:
        >>> reflection_rate(["Wait.", "no", "Alternatively, 3."], "open_reasoner_zero")
        0.6666666666666666
        >>> reflection_rate([])
        0.0
    """
    flags = [has_reflection(text, list_name) for text in texts]
    return sum(flags) / len(flags) if flags else 0.0


def split_think_answer(text: str) -> tuple[str, str]:
    """(think, answer) of an R1 completion. The think part is the first ``<think>`` block (to the end
    when unclosed), or everything before ``<answer>`` when the prompt itself opened ``<think>``;
    the answer is the last ``<answer>`` block, else what follows ``</think>``.

    Example:
        >>> split_think_answer("<think>2+2</think> <answer>4</answer>")
        ('2+2', '4')
        >>> split_think_answer("5 - 1 = 4 </think><answer>4")  # the prompt ended with <think>
        ('5 - 1 = 4', '4')
    """
    text = text or ""
    think_match = THINK_PATTERN.search(text)
    if think_match:
        think = think_match.group(1)
        rest = text[think_match.end():]
    else:
        head, closed, rest = text.partition("</think>")
        think, rest = (head, rest) if closed else (text.split("<answer>")[0], text)
    answers = ANSWER_PATTERN.findall(rest)
    answer = answers[-1] if answers else ("" if "<answer>" in text else rest if think_match or "</think>" in text else "")
    return think.strip(), answer.strip()


def analyse_response(text: str, list_name: str = UNION) -> dict:
    """Per-response analytics: markers found, and the think and answer lengths in characters.

    Example:
        >>> analyse_response("<think>Wait, 3.</think><answer>3</answer>")
        {'markers': ['wait'], 'reflects': True, 'think_chars': 8, 'answer_chars': 1}
    """
    think, answer = split_think_answer(text)
    found = find_markers(think or text, list_name)
    return {"markers": found, "reflects": bool(found), "think_chars": len(think), "answer_chars": len(answer)}


def aggregate(rows: Sequence[dict]) -> dict:
    """Reflection rate, mean think and answer length over ``rows`` (each an ``analyse_response`` dict
    plus ``correct`` and ``truncated``), overall and by outcome: correct, incorrect (finished but
    wrong) and truncated (cut at the token limit, whatever its verdict). Empty groups give None.

    Example:
        >>> rows = [dict(analyse_response(t), correct=c, truncated=tr)
        ...         for t, c, tr in [("<think>wait</think><answer>1</answer>", True, False), ("<think>no", False, True)]]
        >>> summary = aggregate(rows)
        >>> summary["all"]["reflection_rate"], summary["correct"]["num"], summary["truncated"]["think_chars"]
        (0.5, 1, 2.0)
    """
    groups = {"all": list(rows), "correct": [r for r in rows if r["correct"] and not r["truncated"]],
              "incorrect": [r for r in rows if not r["correct"] and not r["truncated"]],
              "truncated": [r for r in rows if r["truncated"]]}
    return {name: _group_summary(members) for name, members in groups.items()}


def _group_summary(rows: Sequence[dict]) -> dict:
    if not rows:
        return {"num": 0, "reflection_rate": None, "think_chars": None, "answer_chars": None}
    count = len(rows)
    return {"num": count, "reflection_rate": sum(bool(r["reflects"]) for r in rows) / count,
            "think_chars": sum(r["think_chars"] for r in rows) / count,
            "answer_chars": sum(r["answer_chars"] for r in rows) / count}


def reflection_metrics(texts: Sequence[str], correct: Sequence[bool], truncated: Sequence[bool],
                       list_name: str = UNION) -> dict[str, float]:
    """Per-step metrics of a batch of training completions, for the GRPO metrics log: the reflection
    rate overall (``completions/reflection_rate``, the key the report plots) and by outcome, and the
    mean think and answer lengths (characters). Outcomes with no completion are left out.

    Example:
        >>> reflection_metrics(["<think>wait</think><answer>1</answer>", "<think>x</think><answer>2</answer>"],
        ...                    correct=[True, False], truncated=[False, False])
        {'completions/reflection_rate': 0.5, 'reflection/rate_correct': 1.0, 'reflection/rate_incorrect': 0.0, 'reflection/think_chars': 2.5, 'reflection/answer_chars': 1.0}
    """
    if not len(texts) == len(correct) == len(truncated):
        raise ValueError(f"reflection_metrics: {len(texts)} texts, {len(correct)} verdicts, {len(truncated)} truncation flags")
    rows = [dict(analyse_response(text, list_name), correct=bool(c), truncated=bool(t))
            for text, c, t in zip(texts, correct, truncated)]
    summary = aggregate(rows)
    if not rows:
        return {}
    metrics = {"completions/reflection_rate": summary["all"]["reflection_rate"]}
    for outcome in ("correct", "incorrect", "truncated"):
        if summary[outcome]["num"]:
            metrics[f"reflection/rate_{outcome}"] = summary[outcome]["reflection_rate"]
    metrics["reflection/think_chars"] = summary["all"]["think_chars"]
    metrics["reflection/answer_chars"] = summary["all"]["answer_chars"]
    return metrics
