"""The reward registry: every reward by name, its range, and the weighted scorer.

A reward is a plain function ``(completion: str, example: dict) -> float``. The config maps each
task to reward names and weights, e.g.::

    rewards:
      countdown: {countdown: 1.0, format_strict: 0.1}
      math: {math: 1.0, format_tags: 0.1}

``score`` returns the weighted total and every named part (unweighted), so each reward is
logged by name; a weight of 0 logs a reward without training on it.

Rewards from modules with heavy imports (sympy for ``math``) are registered as lazy proxies:
importing this module stays cheap, and the real function loads on its first call.

Math rewards: one per named policy of ``verifiers.math_policy`` (``math`` is the ``strict``
policy, the others are ``math_<policy>``: ``math_lenient``, ``math_exact``, ``math_text``), so
a config chooses the policy of each task by reward name. ``verifiers.math_policy.
policy_provenance(names)`` records the chosen policies in an artefact's provenance.

Errors: ``score`` never lets a reward's exception or a bad value (NaN, out of range, not a
number) escape. It gives that reward its low value, counts it per name (``reward_error_counts``)
and logs the first traceback per name, so a broken verifier is visible without killing a run.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import math
from collections import Counter
from collections.abc import Callable, Sequence

from verifiers.countdown import countdown_reward
from verifiers.format_reward import format_lenient, format_strict, format_tags
from verifiers.math_policy import POLICIES, reward_name

RewardFn = Callable[[str, dict], float]

log = logging.getLogger(__name__)


class LazyReward:
    """A reward function imported from ``module:attr`` on first call; with ``key``, the entry
    ``key`` of the dict ``module.attr``.

    >>> reward = LazyReward("verifiers.format_reward", "format_tags")
    >>> reward("<think>a</think>", {})
    0.5
    """

    def __init__(self, module: str, attr: str, key: str | None = None):
        self.module = module
        self.attr = attr
        self.key = key
        self.__name__ = key or attr
        self._fn: RewardFn | None = None

    def load(self) -> RewardFn:
        if self._fn is None:
            found = getattr(importlib.import_module(self.module), self.attr)
            self._fn = found[self.key] if self.key is not None else found
        return self._fn

    def __call__(self, completion: str, example: dict) -> float:
        return self.load()(completion, example)

    def __repr__(self) -> str:
        return f"LazyReward({self.module}:{self.attr}{'' if self.key is None else f'[{self.key!r}]'})"


def _module_exists(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


REWARDS: dict[str, RewardFn] = {
    "format_strict": format_strict,
    "format_lenient": format_lenient,
    "format_tags": format_tags,
    "countdown": countdown_reward,
}
REWARD_RANGES: dict[str, tuple[float, float]] = {
    "format_strict": (0.0, 1.0),
    "format_lenient": (0.0, 1.0),
    "format_tags": (0.0, 1.0),
    "countdown": (0.0, 1.0),
}
REWARD_DESCRIPTIONS: dict[str, str] = {
    "format_strict": "1 if the completion is exactly <think>reasoning</think><answer>answer</answer>",
    "format_lenient": "1 if one think block and one answer block appear, in order, anywhere",
    "format_tags": "0.25 per think/answer tag used exactly once and in order",
    "countdown": "1 if the last answer reaches the target using each given number once with + - * /",
}

# Verifiers written in other modules, registered only when their module is in the tree (it may
# land later than this file). Each: name -> (module, function, range, description).
OPTIONAL_REWARDS: dict[str, tuple[str, str, tuple[float, float], str]] = {
    "code_tests": (
        "verifiers.code_reward",
        "code_tests_reward",
        (0.0, 1.0),
        "fraction of the example's tests that the program in the answer passes, run in the sandbox",
    ),
    "code_all_pass": (
        "verifiers.code_reward",
        "code_all_pass_reward",
        (0.0, 1.0),
        "1 if the program in the answer passes every test of the example, run in the sandbox",
    ),
    "random_coin": (
        "verifiers.random_reward",
        "random_coin",
        (0.0, 1.0),
        "control: a coin flip seeded by (example id, completion) that never reads correctness",
    ),
}

for _name, (_module, _attr, _range, _description) in OPTIONAL_REWARDS.items():
    if _module_exists(_module):
        REWARDS[_name] = LazyReward(_module, _attr)
        REWARD_RANGES[_name] = _range
        REWARD_DESCRIPTIONS[_name] = _description

# One math reward per policy, all through verifiers.math_answer.judge (the path `r1zero verify`
# takes too), so training, evaluation and the audit give one verdict.
for _policy in POLICIES.values():
    _name = reward_name(_policy.name)
    REWARDS[_name] = LazyReward("verifiers.math_answer", "MATH_REWARDS", key=_name)
    REWARD_RANGES[_name] = (0.0, 1.0)
    REWARD_DESCRIPTIONS[_name] = f"1 if the answer equals the gold under the {_policy.name!r} math policy: {_policy.description}"

_error_counts: Counter[str] = Counter()


def reward_error_counts() -> dict[str, int]:
    """How many calls of each reward raised or returned a bad value in this process.

    >>> isinstance(reward_error_counts(), dict)
    True
    """
    return dict(_error_counts)


def reset_reward_error_counts() -> None:
    """Forget the error counts (e.g. at the start of each logged step)."""
    _error_counts.clear()


def _is_weight(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def resolve_weights(spec: dict[str, float]) -> dict[str, float]:
    """Validate a {reward name: weight} spec and return it with float weights.

    Weights may be negative (a penalty) or zero (logged, not trained on), never NaN or inf.

    >>> resolve_weights({"countdown": 1, "format_strict": 0.1})
    {'countdown': 1.0, 'format_strict': 0.1}
    >>> resolve_weights({"acc": 1.0})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: unknown reward 'acc'; known rewards: ...countdown, format_lenient, format_strict, format_tags...
    """
    if not isinstance(spec, dict) or not spec:
        raise ValueError(f"reward weights must be a non-empty mapping of name to weight, got {spec!r}")
    for name, weight in spec.items():
        if name not in REWARDS:
            raise ValueError(f"unknown reward {name!r}; known rewards: {', '.join(sorted(REWARDS))}")
        if not _is_weight(weight):
            raise ValueError(f"weight of reward {name!r} must be a finite number, got {weight!r}")
    return {name: float(weight) for name, weight in spec.items()}


def safe_reward(name: str, completion: str, example: dict) -> float:
    """Call one registered reward; never raises for a known name.

    An exception, or a result that is not a finite number inside the reward's range, gives the
    reward's low value and is counted in ``reward_error_counts``.

    >>> safe_reward("countdown", "<answer>1+2</answer>", {"meta": {"numbers": [1, 2], "target": 3}})
    1.0
    >>> safe_reward("countdown", "<answer>1+2</answer>", {})  # malformed example: counted, low value
    0.0
    """
    low, high = REWARD_RANGES[name]
    try:
        value = REWARDS[name](completion, example)
        if not _is_weight(value) or not low <= value <= high:
            raise ValueError(f"reward {name!r} returned {value!r}, outside [{low}, {high}]")
        return float(value)
    except Exception:  # a reward must never take the training loop down; count and log it
        if not _error_counts[name]:
            log.warning("reward %r failed; giving %s (logged once per reward)", name, low, exc_info=True)
        _error_counts[name] += 1
        return float(low)


def _weighted(completion: str, example: dict, weights: dict[str, float]) -> tuple[float, dict[str, float]]:
    parts = {name: safe_reward(name, completion, example) for name in weights}
    total = sum(weights[name] * value for name, value in parts.items())
    return total, parts


def score(completion: str, example: dict, weights: dict[str, float]) -> tuple[float, dict[str, float]]:
    """Weighted total of the named rewards and each reward's own (unweighted) value.

    >>> ex = {"task": "countdown", "meta": {"numbers": [3, 5], "target": 8}}
    >>> score("<think>3+5</think><answer>3+5</answer>", ex, {"countdown": 1.0, "format_strict": 0.5})
    (1.5, {'countdown': 1.0, 'format_strict': 1.0})
    """
    return _weighted(completion, example, resolve_weights(weights))


def score_batch(
    completions: Sequence[str],
    examples: Sequence[dict],
    weights_by_task: dict[str, dict[str, float]],
) -> list[tuple[float, dict[str, float]]]:
    """``score`` for each (completion, example) pair, weights chosen by ``example["task"]``.

    All tasks and weights are validated before any reward runs, so a config error fails at
    once rather than after a slow batch.

    >>> ex = {"task": "countdown", "meta": {"numbers": [3, 5], "target": 2}}
    >>> completions = ["<answer>5-3</answer>", "<answer>3-5</answer>"]
    >>> score_batch(completions, [ex, ex], {"countdown": {"countdown": 1}})
    [(1.0, {'countdown': 1.0}), (0.0, {'countdown': 0.0})]
    """
    if len(completions) != len(examples):
        raise ValueError(f"{len(completions)} completions but {len(examples)} examples")
    resolved = {task: resolve_weights(spec) for task, spec in weights_by_task.items()}
    for example in examples:
        task = example.get("task") if isinstance(example, dict) else None
        if task not in resolved:
            configured = ", ".join(sorted(resolved)) or "(none)"
            raise ValueError(f"no reward weights for task {task!r}; configured tasks: {configured}")
    return [_weighted(c, ex, resolved[ex["task"]]) for c, ex in zip(completions, examples)]
