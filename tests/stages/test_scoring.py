"""Scoring completions: totals, named parts, correctness by the primary reward, batched code sandboxes."""
from __future__ import annotations

from stages.core.scoring import prefetch_code_results, primary_reward, score_completions

COUNTDOWN = {"task": "countdown", "meta": {"numbers": [3, 5, 7], "target": 8, "prompt_ends_with_think": True}}
CODE = {"task": "code", "tests": {"kind": "call", "fn_name": "add", "cases": [{"args": [1, 2], "expected": 3},
                                                                             {"args": [2, 2], "expected": 4}]}}
WEIGHTS = {"countdown": {"countdown": 1.0, "format_strict": 0.1}, "code": {"code_tests": 1.0}}


def test_totals_parts_and_correctness():
    completions = ["3*5=15,15-7=8 yes</think><answer>(3*5)-7</answer>", "</think><answer>3+5+7</answer>"]
    scored = score_completions(completions, [COUNTDOWN, COUNTDOWN], WEIGHTS)
    assert scored.correct == [True, False]
    assert scored.totals == [1.1, 0.0]  # the second has empty reasoning: strict format gives 0
    assert scored.parts[0] == {"countdown": 1.0, "format_strict": 1.0}
    assert scored.mean_parts() == {"countdown": 0.5, "format_strict": 0.5}
    assert primary_reward(WEIGHTS["countdown"]) == "countdown"


def test_code_completions_are_scored_after_a_parallel_prefetch():
    right = "<think>sum</think><answer>```python\ndef add(a, b):\n    return a + b\n```</answer>"
    half = "<think>x</think><answer>```python\ndef add(a, b):\n    return 3\n```</answer>"
    completions, rows = [right, half], [CODE, CODE]
    prefetch_code_results(completions, rows)
    scored = score_completions(completions, rows, WEIGHTS)
    assert scored.totals == [1.0, 0.5] and scored.correct == [True, False]
