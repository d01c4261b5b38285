"""TrainingGuards: each condition at and around its threshold, patience, resets, advice."""
from __future__ import annotations

import math

import pytest

from pipeline.algorithm_config import GuardConfig
from stages.core.guards import CONDITIONS, METRIC_KEYS, GuardStop, TrainingGuards

HEALTHY = {
    "frac_reward_zero_std": 0.3,
    "reward/std": 0.4,
    "completions/clipped_ratio": 0.1,
    "kl": 0.02,
    "clip_frac": 0.05,
    "rollout/logprob_abs_diff": 0.01,
}


def run_steps(records: list[dict], **cfg) -> list[list[str]]:
    guards = TrainingGuards(GuardConfig(**cfg))
    return [guards.check(step, record) for step, record in enumerate(records, start=1)]


# (condition, metric key, bad value, value just on the healthy side, words the advice must contain)
CASES = [
    ("no_reward_spread", "frac_reward_zero_std", 1.0, 0.97, ["dynamic_sampling", "group_size"]),
    ("constant_reward", "reward/std", 0.0, 0.01, ["verifier", "prompt template"]),
    ("truncation", "completions/clipped_ratio", 0.95, 0.94, ["max_new_tokens", "overlong_penalty"]),
    ("kl_runaway", "kl", 1.01, 1.0, ["kl_coef", "learning rate"]),
    ("clip_runaway", "clip_frac", 0.51, 0.5, ["learning rate", "num_epochs"]),
    ("stale_rollout_weights", "rollout/logprob_abs_diff", 0.6, 0.5, ["stale", "sync_weights"]),
]


@pytest.mark.parametrize("name, key, bad, ok, advice_words", CASES)
def test_condition_warns_then_stops_after_patience(name, key, bad, ok, advice_words):
    guards = TrainingGuards(GuardConfig(patience_steps=3))
    for step in (1, 2):
        warnings = guards.check(step, {**HEALTHY, key: bad})
        assert len(warnings) == 1 and warnings[0].startswith(f"step {step} {name}:")
    with pytest.raises(GuardStop) as stop:
        guards.check(3, {**HEALTHY, key: bad})
    assert stop.value.condition == name
    assert "3 consecutive steps" in stop.value.message
    for word in advice_words:
        assert word in stop.value.message


@pytest.mark.parametrize("name, key, bad, ok, advice_words", CASES)
def test_value_on_the_healthy_side_of_the_threshold_is_quiet(name, key, bad, ok, advice_words):
    assert run_steps([{**HEALTHY, key: ok}] * 6, patience_steps=2) == [[]] * 6


def test_every_condition_has_a_case_and_a_metric_key():
    assert {c.name for c in CONDITIONS} == {case[0] for case in CASES}
    assert {c.metric for c in CONDITIONS} == set(METRIC_KEYS)


def test_a_healthy_step_resets_the_streak():
    bad = {**HEALTHY, "kl": 5.0}
    warnings = run_steps([bad, bad, HEALTHY, bad, bad], patience_steps=3)  # never 3 in a row
    assert [len(w) for w in warnings] == [1, 1, 0, 1, 1]


def test_a_missing_metric_neither_advances_nor_resets_the_streak():
    guards = TrainingGuards(GuardConfig(patience_steps=3))
    guards.check(1, {"kl": 5.0})
    guards.check(2, {"reward/std": 0.3})  # kl not logged this step
    guards.check(3, {"kl": 5.0})
    with pytest.raises(GuardStop, match="kl_runaway"):
        guards.check(4, {"kl": 5.0})


def test_metrics_that_are_none_or_absent_are_not_checked():
    assert run_steps([{}, {"kl": None, "clip_frac": None}], patience_steps=1) == [[], []]


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_non_finite_kl_counts_as_a_runaway(value):
    with pytest.raises(GuardStop, match="kl_runaway"):
        run_steps([{"kl": value}], patience_steps=1)


def test_aliases_of_metric_keys_are_read():
    with pytest.raises(GuardStop, match="clip_runaway"):
        run_steps([{"policy/clip_frac": 0.9}], patience_steps=1)


def test_several_conditions_warn_in_the_same_step():
    warnings = run_steps([{**HEALTHY, "kl": 3.0, "completions/clipped_ratio": 1.0}], patience_steps=5)
    assert len(warnings[0]) == 2


def test_disabled_guards_never_warn_or_stop():
    assert run_steps([{"kl": 100.0}] * 3, enabled=False, patience_steps=1) == [[], [], []]


def test_thresholds_come_from_the_config():
    assert run_steps([{"kl": 3.0}], max_kl=5.0, patience_steps=1) == [[]]
    with pytest.raises(GuardStop):
        run_steps([{"frac_reward_zero_std": 0.9}], max_frac_reward_zero_std=0.8, patience_steps=1)


def test_guard_config_rejects_nonsense():
    with pytest.raises(ValueError, match="patience_steps"):
        GuardConfig(patience_steps=0)
    with pytest.raises(ValueError, match="max_clipped_ratio"):
        GuardConfig(max_clipped_ratio=1.5)
    with pytest.raises(ValueError, match="max_kl_typo"):
        GuardConfig(max_kl_typo=1.0)
