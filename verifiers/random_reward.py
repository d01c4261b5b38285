"""The random-reward control: a coin flip that never looks at correctness.

Shao et al. 2025 ("Spurious Rewards: Rethinking Training Signals in RLVR", arXiv:2506.10947)
found that Qwen2.5-Math gains on MATH-500 under rewards that ignore the answer. Training the same
recipe on this reward measures how much of a run's gain the verifier earned.

The flip is deterministic: a hash of the example's id and the completion decides it, so a
rescoring, a resumed run and a test all see the same value, and two different completions of one
prompt flip independently (their group still has reward spread for GRPO).

Example:
    >>> random_coin("<answer>7</answer>", {"id": "cd-1"}) in (0.0, 1.0)
    True
    >>> random_coin("x", {"id": "a"}) == random_coin("x", {"id": "a"})
    True
"""
from __future__ import annotations

import hashlib


def random_coin(completion: str, example: dict) -> float:
    """1.0 or 0.0 with probability 1/2 each, from sha256(example id, completion); reads nothing else.

    Example:
        >>> flips = [random_coin(f"completion {i}", {"id": "p"}) for i in range(400)]
        >>> 0.4 < sum(flips) / len(flips) < 0.6
        True
    """
    example_id = example.get("id") if isinstance(example, dict) else None
    digest = hashlib.sha256(f"{example_id!s}\x00{completion!s}".encode("utf-8", "surrogatepass")).digest()
    return float(digest[0] & 1)
