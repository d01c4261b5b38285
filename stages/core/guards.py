"""Training guards: catch a GRPO run that has stopped learning, and say what to change.

Each step the loop passes its metrics record to ``TrainingGuards.check``. A condition that holds
returns a warning; one that has held for ``patience_steps`` consecutive steps raises
``GuardStop`` with a message naming what went wrong and which setting to change. A metric
absent from the record (or None) is not checked, so e.g. a run without a reference model never
trips the KL guard.

Metric keys read (first one present wins):
    frac_reward_zero_std       fraction of groups whose rewards are all equal
    reward/std                 std of the total reward over the whole batch
    completions/clipped_ratio  fraction of completions that hit max_new_tokens
    kl                         mean per-token KL to the reference
    clip_frac                  fraction of tokens where the PPO clip was active
    rollout/logprob_abs_diff   mean |rollout log-prob - trainer log-prob| per token

Example:
    >>> from pipeline.algorithm_config import GuardConfig
    >>> guards = TrainingGuards(GuardConfig(patience_steps=2))
    >>> guards.check(1, {"completions/clipped_ratio": 0.99})[0].split(":")[0]
    'step 1 truncation'
    >>> try:
    ...     guards.check(2, {"completions/clipped_ratio": 0.99})
    ... except GuardStop as stop:
    ...     print(stop.message[:66])
    truncation for 2 consecutive steps (step 2): 99% of completions hi
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from pipeline.algorithm_config import GuardConfig


class GuardStop(RuntimeError):
    """Raised to stop a run; ``condition`` is the guard's name, ``message`` the advice."""

    def __init__(self, message: str, condition: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.condition = condition


METRIC_KEYS: dict[str, tuple[str, ...]] = {
    "frac_reward_zero_std": ("frac_reward_zero_std",),
    "reward_std": ("reward/std", "reward/total_std"),
    "clipped_ratio": ("completions/clipped_ratio",),
    "kl": ("kl", "policy/kl"),
    "clip_frac": ("clip_frac", "policy/clip_frac"),
    "logprob_abs_diff": ("rollout/logprob_abs_diff",),
}


@dataclass(frozen=True)
class _Condition:
    name: str
    metric: str  # key into METRIC_KEYS
    fires: Callable[[float, GuardConfig], bool]
    advice: Callable[[float, GuardConfig], str]


def _at_least(threshold: float, value: float) -> bool:
    return not math.isfinite(value) or value >= threshold


def _above(threshold: float, value: float) -> bool:
    # nan/inf count as "above": a KL of nan is the runaway this guard exists for.
    return not math.isfinite(value) or value > threshold


CONDITIONS: tuple[_Condition, ...] = (
    _Condition(
        "no_reward_spread",
        "frac_reward_zero_std",
        lambda v, c: _at_least(c.max_frac_reward_zero_std, v),
        lambda v, c: (
            f"{v:.0%} of groups got identical rewards for every completion, so every advantage is 0 "
            "and nothing is learned. The task is too hard or too easy for this model, or the verifier "
            "never matches: look at a few completions and their rewards; then raise group_size or the "
            "sampling temperature, enable algorithm.dynamic_sampling, or filter the data to problems "
            "of medium difficulty."
        ),
    ),
    _Condition(
        "constant_reward",
        "reward_std",
        lambda v, c: not math.isfinite(v) or v <= c.min_batch_reward_std,
        lambda v, c: (
            f"the reward is constant over the whole batch (std {v:.2g}). Usually every reward is 0: the "
            "answer format does not match what the verifier extracts, the prompt template is wrong, or "
            "max_new_tokens cuts the answer off. Score a few completions by hand with the reward "
            "functions and check the prompt template and stop strings."
        ),
    ),
    _Condition(
        "truncation",
        "clipped_ratio",
        lambda v, c: _at_least(c.max_clipped_ratio, v),
        lambda v, c: (
            f"{v:.0%} of completions hit max_new_tokens (limit {c.max_clipped_ratio:.0%}), so almost no "
            "answer is finished and scored. Raise max_new_tokens, add a stop string after the answer "
            "tag, or set algorithm.truncation to 'overlong_penalty' (DAPO) to push lengths back down."
        ),
    ),
    _Condition(
        "kl_runaway",
        "kl",
        lambda v, c: _above(c.max_kl, v),
        lambda v, c: (
            f"KL to the reference is {v:.3g} per token (limit {c.max_kl:g}): the policy is running away "
            "from the reference. Lower the learning rate, raise algorithm.kl_coef or set "
            "algorithm.kl_target_nats_per_seq (adaptive beta), or set algorithm.ref_refresh_steps if drifting is intended."
        ),
    ),
    _Condition(
        "clip_runaway",
        "clip_frac",
        lambda v, c: _above(c.max_clip_frac, v),
        lambda v, c: (
            f"the PPO clip is active on {v:.0%} of tokens (limit {c.max_clip_frac:.0%}): each update moves "
            "the policy far outside the trust region. Lower the learning rate, use fewer "
            "algorithm.num_epochs or algorithm.num_minibatches per rollout, or check that old log-probs "
            "are computed with the same temperature as the trainer's."
        ),
    ),
    _Condition(
        "stale_rollout_weights",
        "logprob_abs_diff",
        lambda v, c: _above(c.max_logprob_abs_diff, v),
        lambda v, c: (
            f"rollout log-probs differ from the trainer's by {v:.3g} nats per token (limit "
            f"{c.max_logprob_abs_diff:g}): the rollout engine is most likely sampling with stale "
            "weights (sync_weights not called after the optimiser step, or it failed), or the two "
            "disagree on temperature, dtype or the tokenizer. Check the backend's weight sync first."
        ),
    ),
)


def _lookup(metrics: dict, metric: str) -> float | None:
    for key in METRIC_KEYS[metric]:
        value = metrics.get(key)
        if value is not None:
            return float(value)
    return None


class TrainingGuards:
    """Counts consecutive steps each condition holds; see the module docstring."""

    def __init__(self, cfg: GuardConfig) -> None:
        self.cfg = cfg
        self.streaks: dict[str, int] = {cond.name: 0 for cond in CONDITIONS}

    def check(self, step: int, metrics: dict) -> list[str]:
        """Warnings for this step; raises ``GuardStop`` once a condition has held for
        ``patience_steps`` consecutive steps. A step where a condition's metric is absent
        leaves its streak unchanged (absence is not evidence of recovery)."""
        if not self.cfg.enabled:
            return []
        warnings = []
        for cond in CONDITIONS:
            value = _lookup(metrics, cond.metric)
            if value is None:
                continue
            if not cond.fires(value, self.cfg):
                self.streaks[cond.name] = 0
                continue
            self.streaks[cond.name] += 1
            advice = cond.advice(value, self.cfg)
            if self.streaks[cond.name] >= self.cfg.patience_steps:
                raise GuardStop(
                    f"{cond.name} for {self.streaks[cond.name]} consecutive steps (step {step}): {advice}",
                    condition=cond.name,
                )
            warnings.append(f"step {step} {cond.name}: {advice}")
        return warnings
