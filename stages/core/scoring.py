"""Scoring sampled completions with the configured verifier rewards.

The *primary* reward of a task is the first one listed in its weights (``countdown`` for
countdown, ``math`` for math); a completion is *correct* when the primary reward reaches its
maximum. Accuracy in training logs and evaluation uses this definition.

Tasks scored with a math reward also get ``math_rejected_<reason>`` parts (0 or 1 per
completion, one per cap of ``verifiers.math_policy.CAP_REASONS``): the training log shows them
as ``reward/math_rejected_<reason>``, the fraction of a step's completions rejected by that cap
before any answer was extracted. They are diagnostics: not rewards, never weighted.

Example:
    >>> rows = [{"task": "countdown", "meta": {"numbers": [3, 5], "target": 8}}]
    >>> scored = score_completions(["<answer>3+5</answer>"], rows, {"countdown": {"countdown": 1.0}})
    >>> scored.totals, scored.correct
    ([1.0], [True])
"""
from __future__ import annotations

from dataclasses import dataclass

from verifiers.math_policy import rejection_parts
from verifiers.registry import REWARD_RANGES, score_batch


@dataclass
class Scored:
    totals: list[float]
    parts: list[dict[str, float]]
    correct: list[bool]

    def mean_parts(self) -> dict[str, float]:
        names = sorted({name for part in self.parts for name in part})
        return {name: sum(p.get(name, 0.0) for p in self.parts) / max(1, len(self.parts)) for name in names}


def primary_reward(weights: dict[str, float]) -> str:
    return next(iter(weights))


def prefetch_code_results(completions: list[str], rows: list[dict]) -> None:
    """Run the sandboxes of a whole batch's code completions in parallel before scoring.

    The code rewards read the results from their cache; without this, scoring waits on one
    sandbox at a time (50-100 ms each, seconds for a program that times out).
    """
    picked = [(c, r) for c, r in zip(completions, rows) if r.get("task") == "code"]
    if picked:
        from verifiers.code_reward import code_results_batch

        code_results_batch([c for c, _ in picked], [r for _, r in picked])


def score_completions(completions: list[str], rows: list[dict], weights_by_task: dict[str, dict[str, float]]) -> Scored:
    results = score_batch(completions, rows, weights_by_task)
    totals = [total for total, _ in results]
    parts = [{**part, **rejection_parts(completion, weights_by_task[row["task"]])}
             for (_, part), completion, row in zip(results, completions, rows)]
    correct = []
    for row, part in zip(rows, parts):
        name = primary_reward(weights_by_task[row["task"]])
        correct.append(part.get(name, 0.0) >= REWARD_RANGES[name][1])
    return Scored(totals, parts, correct)


def verifier_provenance(rewards_by_task: dict) -> dict:
    """Which math policy decided each math reward, and which bwrap ran the code sandbox.

    Example:
        >>> verifier_provenance({"math": {"math": 1.0}})["math_policy"]["rewards"]
        {'math': 'strict'}
    """
    from verifiers.math_policy import policy_provenance
    from verifiers.sandbox import sandbox_provenance

    names = sorted({name for weights in rewards_by_task.values() for name in weights})
    return {"math_policy": policy_provenance(names), "sandbox": sandbox_provenance()}
