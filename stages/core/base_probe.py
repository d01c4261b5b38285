"""What the base knows before RL: does checking pay, and is its arithmetic reliable?

R1-Zero's "aha" (responses that grow longer as the model learns to re-check) only appears when
the base already checks sometimes *and* checking is more often right than guessing: RL
amplifies behaviour that pays (understand-r1-zero, SimpleRL-Zoo). This probe measures both on
sampled base completions:

- each completion is *checking* when it holds a reflection marker (stages/core/reflection.py,
  the published lists) or the compare-with-target pattern (an attempt line ending in " yes" or
  " no"), else *guessing*; pass@1 is measured per class;
- every ``a op b = c`` step the completion writes is checked with exact arithmetic, giving the
  per-step arithmetic accuracy (a check is only as good as the arithmetic it compares).

Example:
    >>> rows = [("7+5=12,12-9=3 check 3 vs 3 yes</think><answer>(7+5)-9</answer>", True),
    ...         ("7+5=12,12+9=20</think><answer>(7+5)+9</answer>", False)]
    >>> summary = probe_summary([t for t, _ in rows], [c for _, c in rows])
    >>> summary["checking"]["pass@1"], summary["guessing"]["pass@1"], summary["step_accuracy"]
    (1.0, 0.0, 0.75)
"""
from __future__ import annotations

import re
from fractions import Fraction
from typing import Sequence

from stages.core.reflection import UNION, has_reflection, split_think_answer

# "a op b = c" with non-negative integer operands, as the traces write them ("7+5=12"); a result
# may be a fraction ("7/2=7/2") or negative (a slip the checker should count as wrong, not skip).
STEP_PATTERN = re.compile(r"(\d+)\s*([-+*/])\s*(\d+)\s*=\s*(-?\d+(?:/\d+)?)")
# An attempt compared with the target and judged: the line (or the text) ends in "yes" or "no".
VERDICT_PATTERN = re.compile(r"\b(?:yes|no)\s*(?:$|\n|</think>)", re.I)
# A written comparison and its verdict, as the checking traces write them: "=15 vs 15 yes",
# "=10 vs 15 no, retry". The verdict is consistent when it says yes exactly when the two agree.
JUDGED_PATTERN = re.compile(r"=\s*(-?\d+)\s+vs\s+(-?\d+)\s+(yes|no)\b", re.I)


def arithmetic_steps(text: str) -> list[tuple[int, str, int, Fraction]]:
    """The ``a op b = c`` steps written in ``text``, in order.

    Example:
        >>> arithmetic_steps("7+5=12,12-9=4 no")
        [(7, '+', 5, Fraction(12, 1)), (12, '-', 9, Fraction(4, 1))]
    """
    return [(int(a), op, int(b), Fraction(c)) for a, op, b, c in STEP_PATTERN.findall(text or "")]


def step_is_right(left: int, op: str, right: int, claimed: Fraction) -> bool:
    """Whether one written step is exact arithmetic (a division by zero is wrong).

    Example:
        >>> step_is_right(12, "-", 9, Fraction(3)), step_is_right(12, "/", 0, Fraction(0))
        (True, False)
    """
    if op == "/" and right == 0:
        return False
    value = {"+": left + right, "-": left - right, "*": left * right}.get(op)
    return (Fraction(left, right) if op == "/" else Fraction(value)) == claimed


def judged_comparisons(text: str) -> list[bool]:
    """For each written "R vs T yes/no", whether the verdict matches the comparison.

    A check only does work when its verdict follows the numbers it wrote; a policy that learned
    to write "yes" whatever the numbers keeps the look of checking without the substance.

    Example:
        >>> judged_comparisons("5+3=8,8+2=10 vs 4 no, retry\\n5-3=2,2+2=4 vs 4 yes\\n1+1=3 vs 4 yes")
        [True, True, False]
    """
    return [(result == target) == (verdict.lower() == "yes") for result, target, verdict in JUDGED_PATTERN.findall(text or "")]


def is_checking(text: str, list_name: str = UNION) -> bool:
    """A completion checks when its reasoning holds a reflection marker or a yes/no verdict.

    Example:
        >>> is_checking("2+3=5 wait, retry"), is_checking("2+3=5,5+1=6 yes</think>"), is_checking("2+3=5</think>")
        (True, True, False)
    """
    think, _ = split_think_answer(text)
    reasoning = think or text or ""
    return has_reflection(reasoning, list_name) or VERDICT_PATTERN.search(reasoning + "\n") is not None


def _class_summary(correct: Sequence[bool]) -> dict:
    count = len(correct)
    return {"num": count, "pass@1": sum(map(bool, correct)) / count if count else None}


def probe_summary(texts: Sequence[str], correct: Sequence[bool], list_name: str = UNION) -> dict:
    """pass@1 of checking vs guessing completions, the checking share, per-step arithmetic accuracy
    and verdict consistency (``judged_comparisons``).

    ``correct``: each completion's verdict (the task reward). Empty classes give ``pass@1`` None;
    no arithmetic step at all gives ``step_accuracy`` None, no written "R vs T yes/no" gives
    ``verdict_consistency`` None.

    Example:
        >>> probe_summary(["1+1=2 wait</think>", "1+1=3</think>"], [True, False])["checking_rate"]
        0.5
    """
    if len(texts) != len(correct):
        raise ValueError(f"probe_summary: {len(texts)} texts but {len(correct)} verdicts")
    checking = [is_checking(text, list_name) for text in texts]
    reasoning = [split_think_answer(text)[0] or text for text in texts]
    steps = [step for text in reasoning for step in arithmetic_steps(text)]
    right = sum(step_is_right(*step) for step in steps)
    verdicts = [consistent for text in reasoning for consistent in judged_comparisons(text)]
    return {
        "num_completions": len(texts),
        "pass@1": sum(map(bool, correct)) / len(texts) if texts else None,
        "checking_rate": sum(checking) / len(texts) if texts else None,
        "checking": _class_summary([c for c, flag in zip(correct, checking) if flag]),
        "guessing": _class_summary([c for c, flag in zip(correct, checking) if not flag]),
        "num_steps": len(steps),
        "step_accuracy": right / len(steps) if steps else None,
        "num_verdicts": len(verdicts),
        "verdict_consistency": sum(verdicts) / len(verdicts) if verdicts else None,
        "marker_list": list_name,
    }


def sample_and_probe(model, tokenizer, rows: Sequence[dict], template: str, *, num_samples: int,
                     max_new_tokens: int, temperature: float = 1.0, seed: int = 0) -> dict:
    """Sample ``num_samples`` completions per Countdown row with the ``hf`` rollout backend, score them
    with the countdown reward, and summarise with ``probe_summary``; two example completions of
    each class are kept.

    Example:
        >>> sample_and_probe(model, tokenizer, test_rows[:32], template, num_samples=4,
        ...                  max_new_tokens=128)["checking"]["pass@1"]   # doctest: +SKIP
        0.81
    """
    from stages.core.rollout import SamplingSettings
    from stages.core.rollout_hf import HFBackend
    from verifiers.countdown import countdown_reward

    prompts = [tokenizer.encode(template.replace("{question}", row["question"])) for row in rows]
    settings = SamplingSettings(num_samples=num_samples, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed)
    groups = HFBackend(model, tokenizer).generate(prompts, settings)
    texts, correct = [], []
    for row, group in zip(rows, groups):
        for completion in group:
            texts.append(completion.text)
            correct.append(countdown_reward(completion.text, row) == 1.0)
    summary = probe_summary(texts, correct)
    summary["examples"] = {kind: [t for t in texts if is_checking(t) == (kind == "checking")][:2]
                           for kind in ("checking", "guessing")}
    summary.update(num_prompts=len(rows), num_samples_per_prompt=num_samples, temperature=temperature)
    return summary


def probe_eval_samples(samples: Sequence[dict], rows: Sequence[dict]) -> dict | None:
    """``probe_summary`` of evaluation samples (``prompt_id``, ``completion``) of Countdown rows (``id``,
    ``meta.numbers``, ``meta.target``), each judged with the countdown reward; None when no row is Countdown.

    Example:
        >>> rows = [{"id": "q", "task": "countdown", "meta": {"numbers": [1, 2, 3], "target": 6}}]
        >>> samples = [{"prompt_id": "q", "completion": "1+2=3,3+3=6</think><answer>(1+2)+3</answer>"},
        ...            {"prompt_id": "q", "completion": "let me check\\n1+2=3,3+3=6 yes</think><answer>(1+2)+3</answer>"}]
        >>> summary = probe_eval_samples(samples, rows)
        >>> summary["guessing"], summary["checking"]
        ({'num': 1, 'pass@1': 1.0}, {'num': 1, 'pass@1': 1.0})
    """
    from verifiers.countdown import countdown_reward

    by_id = {row["id"]: row for row in rows if row.get("task") == "countdown"}
    other_ids = {row.get("id") for row in rows if row.get("task") != "countdown"}
    if not by_id:
        return None
    texts, correct = [], []
    for index, sample in enumerate(samples):
        row = by_id.get(sample.get("prompt_id"))
        if row is None and sample.get("prompt_id") in other_ids:
            continue  # a mixed bench: only its Countdown rows have arithmetic steps to check
        if row is None:
            raise ValueError(f"sample {index}: prompt_id {sample.get('prompt_id')!r} is no row of the data")
        texts.append(str(sample.get("completion", "")))
        correct.append(countdown_reward(texts[-1], row) == 1.0)
    return probe_summary(texts, correct)
