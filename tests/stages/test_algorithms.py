"""Hand-computed values and invariants for stages/core/algorithms.py."""
from __future__ import annotations

import math
import typing

import pytest
import torch

from pipeline.algorithm_config import AlgorithmConfig, PRESETS
from stages.core import algorithms as alg

T = torch.tensor


OUTCOME_ESTIMATORS = sorted(set(alg.ADVANTAGE_ESTIMATORS) - {"gae"})


def advantages_of(name: str, rewards: torch.Tensor, group_size: int, **context) -> torch.Tensor:
    """The registered estimator on a context of outcome rewards (no KL in the reward, no critic)."""
    mask = context.pop("mask", torch.ones(rewards.shape[0], 3))
    return alg.ADVANTAGE_ESTIMATORS[name](alg.AdvantageContext(rewards, mask, group_size, **context)).advantages


def close(actual: torch.Tensor, expected, tol: float = 1e-4) -> None:
    assert torch.allclose(actual.float(), torch.as_tensor(expected, dtype=torch.float32), atol=tol), (actual, expected)


# --- advantages ------------------------------------------------------------------------------

REWARDS = T([1.0, 0.8, 0.4, 0.2])  # mean 0.6, deviations +-0.4 / +-0.2, population var 0.1


@pytest.mark.parametrize(
    "name, expected, why",
    [
        ("grpo", [0.4 / math.sqrt(0.1), 0.2 / math.sqrt(0.1), -0.2 / math.sqrt(0.1), -0.4 / math.sqrt(0.1)],
         "z-score with population std 0.316: about [1.26, 0.63, -0.63, -1.26]"),
        ("dr_grpo", [0.4, 0.2, -0.2, -0.4], "mean 0.6 subtracted, no std"),
        ("rloo", [1.0 - 1.4 / 3, 0.8 - 1.6 / 3, 0.4 - 2.0 / 3, 0.2 - 2.2 / 3],
         "each minus the mean of the other three"),
        ("reinforce_pp", [0.4 / math.sqrt(0.1), 0.2 / math.sqrt(0.1), -0.2 / math.sqrt(0.1), -0.4 / math.sqrt(0.1)],
         "one group = the whole batch, so batch whitening equals the group z-score"),
    ],
)
def test_advantages_of_one_group(name, expected, why):
    close(advantages_of(name, REWARDS, 4), expected)


def test_grpo_matches_the_rounded_numbers_of_the_issue():
    adv = advantages_of("grpo", REWARDS, 4)
    assert [round(a, 2) for a in adv.tolist()] == [1.26, 0.63, -0.63, -1.26]


def test_groups_are_contiguous_blocks_with_their_own_baseline():
    rewards = T([1.0, 0.0, 5.0, 7.0])  # groups [1, 0] and [5, 7]
    close(advantages_of("dr_grpo", rewards, 2), [0.5, -0.5, -1.0, 1.0])
    close(advantages_of("grpo", rewards, 2), [1.0, -1.0, -1.0, 1.0])


def test_reinforce_pp_uses_batch_statistics_not_group_ones():
    rewards = T([1.0, 0.0, 1.0, 1.0])  # batch mean 0.75, population std sqrt(0.1875)
    std = math.sqrt(0.1875)
    close(advantages_of("reinforce_pp", rewards, 2), [0.25 / std, -0.75 / std, 0.25 / std, 0.25 / std])
    # -baseline: centred per group [0.5, -0.5, 0, 0] (batch std sqrt(0.125)), then whitened
    close(advantages_of("reinforce_pp_baseline", rewards, 2),
          [0.5 / math.sqrt(0.125), -0.5 / math.sqrt(0.125), 0.0, 0.0])


@pytest.mark.parametrize("name", OUTCOME_ESTIMATORS)
def test_a_group_with_equal_rewards_gets_zero_advantage_not_nan(name):
    rewards = T([1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 1.0])
    adv = advantages_of(name, rewards, 4)
    assert torch.isfinite(adv).all()
    if name != "reinforce_pp":  # the batch baseline (no group one) keeps a signal here
        close(adv[:4], [0.0, 0.0, 0.0, 0.0])


@pytest.mark.parametrize("name", OUTCOME_ESTIMATORS)
def test_a_batch_that_is_not_whole_groups_is_refused(name):
    with pytest.raises(ValueError, match="whole number of groups"):
        advantages_of(name, T([1.0, 0.0, 1.0]), 2)


def test_rloo_refuses_groups_of_one():
    with pytest.raises(ValueError, match="group_size >= 2"):
        alg.rloo_advantages(T([1.0, 0.0]), group_size=1)


def test_config_literals_name_exactly_the_registries():
    hints = typing.get_type_hints(AlgorithmConfig)
    estimators = set(typing.get_args(hints["advantage_estimator"]))
    assert estimators == set(alg.ADVANTAGE_ESTIMATORS)
    assert set(typing.get_args(hints["loss_aggregation"])) == set(alg.LOSS_AGGREGATIONS)
    assert set(typing.get_args(hints["kl_estimator"])) == set(alg.KL_ESTIMATORS)
    assert set(alg.ESTIMATOR_DESCRIPTIONS) == estimators


# --- per-token rewards and GAE -----------------------------------------------------------------


def test_outcome_reward_lands_on_the_last_real_token():
    mask = T([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]])
    token_rewards = alg.outcome_to_token_rewards(T([2.0, -1.0, 9.0]), mask)
    close(token_rewards, [[0, 0, 2, 0], [-1, 0, 0, 0], [0, 0, 0, 0]])  # empty row: reward dropped


def test_gae_on_a_three_step_episode_worked_by_hand():
    # r = [0, 0, 1], V = [0.5, 0.6, 0.7], gamma 0.9, lambda 0.8 (gamma*lambda = 0.72)
    # delta_2 = 1 - 0.7 = 0.3; delta_1 = 0.9*0.7 - 0.6 = 0.03; delta_0 = 0.9*0.6 - 0.5 = 0.04
    # A_2 = 0.3; A_1 = 0.03 + 0.72*0.3 = 0.246; A_0 = 0.04 + 0.72*0.246 = 0.21712
    rewards, values = T([[0.0, 0.0, 1.0, 0.0, 0.0]]), T([[0.5, 0.6, 0.7, 9.0, 9.0]])
    mask = T([[1, 1, 1, 0, 0]])  # padding values (9.0) must not leak in
    adv, returns = alg.gae_advantages(rewards, values, mask, gamma=0.9, lam=0.8)
    close(adv, [[0.21712, 0.246, 0.3, 0.0, 0.0]], tol=1e-6)
    close(returns, [[0.71712, 0.846, 1.0, 0.0, 0.0]], tol=1e-6)


def test_gae_with_gamma_and_lambda_one_is_return_minus_value():
    adv, returns = alg.gae_advantages(T([[0.0, 0.0, 1.0]]), T([[0.5, 0.6, 0.7]]), torch.ones(1, 3), gamma=1.0, lam=1.0)
    close(adv, [[0.5, 0.4, 0.3]])
    close(returns, [[1.0, 1.0, 1.0]])


def test_gae_with_lambda_zero_is_the_one_step_td_error():
    adv, _ = alg.gae_advantages(T([[0.0, 0.0, 1.0]]), T([[0.5, 0.6, 0.7]]), torch.ones(1, 3), gamma=0.9, lam=0.0)
    close(adv, [[0.04, 0.03, 0.3]])


def test_discounted_returns_and_reinforce_pp_token_advantages():
    returns = alg.discounted_returns(T([[0.0, 0.0, 1.0], [0.0, 2.0, 0.0]]), T([[1, 1, 1], [1, 1, 0]]), gamma=0.5)
    close(returns, [[0.25, 0.5, 1.0], [1.0, 2.0, 0.0]])
    adv = alg.reinforce_pp_token_advantages(T([[0.0, 1.0], [0.0, 0.0]]), torch.ones(2, 2))
    close(adv, [[1.0, 1.0], [-1.0, -1.0]])


def test_kl_penalty_folded_into_the_reward():
    # reward 0.8, KL 0.05, beta 6: 0.8 - 6 * 0.05 = 0.5
    close(alg.kl_penalised_rewards(T([[0.8]]), T([[0.05]]), beta=6.0), [[0.5]])


# --- loss aggregation ------------------------------------------------------------------------

PER_TOKEN = T([[1.0, 2.0, 3.0], [4.0, 100.0, 100.0]])  # 100s sit on padding and must not count
MASK = T([[1, 1, 1], [1, 0, 0]])


@pytest.mark.parametrize(
    "name, constant, expected, why",
    [
        ("seq_mean_token_mean", None, 3.0, "sequence means 2 and 4, averaged"),
        ("token_mean", None, 2.5, "(1+2+3+4) / 4 real tokens"),
        ("seq_mean_token_sum_norm", 10.0, 0.5, "(6/10 + 4/10) / 2 sequences"),
        ("seq_mean_token_sum_norm", None, 10.0 / 6.0, "constant defaults to T = 3: (6/3 + 4/3) / 2"),
    ],
)
def test_loss_aggregations_on_unequal_lengths(name, constant, expected, why):
    close(alg.LOSS_AGGREGATIONS[name](PER_TOKEN, MASK, constant=constant), expected)


def test_seq_mean_skips_sequences_without_tokens_and_token_sum_norm_counts_them():
    per_token, mask = T([[2.0, 2.0], [7.0, 7.0]]), T([[1, 1], [0, 0]])  # second row fully masked
    close(alg.LOSS_AGGREGATIONS["seq_mean_token_mean"](per_token, mask), 2.0)
    close(alg.LOSS_AGGREGATIONS["token_mean"](per_token, mask), 2.0)
    close(alg.LOSS_AGGREGATIONS["seq_mean_token_sum_norm"](per_token, mask, constant=4.0), 0.5)  # (4/4 + 0)/2


@pytest.mark.parametrize("name", sorted(alg.LOSS_AGGREGATIONS))
def test_an_all_masked_batch_aggregates_to_zero_not_nan(name):
    value = alg.LOSS_AGGREGATIONS[name](torch.ones(2, 3), torch.zeros(2, 3))
    assert value.item() == 0.0


# --- KL estimators ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, expected",
    [
        ("k1", 0.5),  # logp - ref
        ("k2", 0.125),  # 0.5 * 0.5^2
        ("k3", math.exp(-0.5) + 0.5 - 1.0),  # exp(ref - logp) - (ref - logp) - 1
        ("none", 0.0),
    ],
)
def test_kl_estimators_against_their_formulas(name, expected):
    close(alg.KL_ESTIMATORS[name](T([-1.0]), T([-1.5])), [expected], tol=1e-6)


def test_k1_and_k3_are_unbiased_estimates_of_kl_on_a_categorical():
    # E_{x~p}[k(x)] computed exactly by summing over the support, against KL(p || ref).
    gen = torch.Generator().manual_seed(0)
    logp = torch.log_softmax(torch.randn(7, generator=gen), dim=0)
    ref = torch.log_softmax(torch.randn(7, generator=gen), dim=0)
    p = logp.exp()
    true_kl = (p * (logp - ref)).sum()
    for name in ("k1", "k3"):
        close((p * alg.KL_ESTIMATORS[name](logp, ref)).sum(), true_kl.item(), tol=1e-5)
    assert (alg.KL_ESTIMATORS["k3"](logp, ref) >= 0).all()
    assert (alg.KL_ESTIMATORS["k2"](logp, ref) >= 0).all()


def test_k3_stays_finite_for_extreme_log_ratios():
    assert torch.isfinite(alg.kl_k3(T([0.0, -200.0]), T([-200.0, 0.0]))).all()


# --- policy loss -----------------------------------------------------------------------------


def ppo_objective(ratio: float, advantage: float, **clip) -> tuple[float, dict]:
    loss, stats = alg.policy_loss(T([[math.log(ratio)]]), torch.zeros(1, 1), T([advantage]), torch.ones(1, 1), **clip)
    return -loss.item(), stats


@pytest.mark.parametrize(
    "ratio, advantage, clip, expected, clipped, why",
    [
        (1.35, 0.2, dict(clip_eps_low=0.2, clip_eps_high=0.2), 0.24, True, "min(1.35*0.2, 1.2*0.2)"),
        (1.1, 0.2, dict(clip_eps_low=0.2, clip_eps_high=0.2), 0.22, False, "inside the trust region"),
        (0.7, -0.5, dict(clip_eps_low=0.2, clip_eps_high=0.2), -0.4, True, "min(-0.35, 0.8*-0.5)"),
        (0.7, 0.5, dict(clip_eps_low=0.2, clip_eps_high=0.2), 0.35, False, "A>0, ratio<1: unclipped is smaller"),
        (1.25, 1.0, dict(clip_eps_low=0.2, clip_eps_high=0.28), 1.25, False, "clip-higher leaves room to 1.28"),
        (1.35, 1.0, dict(clip_eps_low=0.2, clip_eps_high=0.28), 1.28, True, "clip-higher caps at 1.28"),
        (5.0, -1.0, dict(clip_eps_low=0.2, clip_eps_high=0.2), -5.0, False, "no dual clip: loss grows with ratio"),
        (5.0, -1.0, dict(clip_eps_low=0.2, clip_eps_high=0.2, dual_clip_c=3.0), -3.0, False, "dual clip caps at c*|A|"),
        (2.0, -1.0, dict(clip_eps_low=0.2, clip_eps_high=0.2, dual_clip_c=3.0), -2.0, False, "below the dual cap"),
        (5.0, 1.0, dict(clip_eps_low=0.2, clip_eps_high=0.2, dual_clip_c=3.0), 1.2, True, "dual clip ignores A>0"),
    ],
)
def test_clipped_objective_by_hand(ratio, advantage, clip, expected, clipped, why):
    objective, stats = ppo_objective(ratio, advantage, **clip)
    assert objective == pytest.approx(expected, abs=1e-5)
    assert stats["clip_frac"] == (1.0 if clipped else 0.0)
    assert stats["ratio_mean"] == pytest.approx(ratio, rel=1e-5)


def test_dual_clip_fraction_and_bad_c():
    _, stats = ppo_objective(5.0, -1.0, clip_eps_low=0.2, clip_eps_high=0.2, dual_clip_c=3.0)
    assert stats["dual_clip_frac"] == 1.0
    with pytest.raises(ValueError, match="dual_clip_c"):
        ppo_objective(1.0, 1.0, clip_eps_low=0.2, clip_eps_high=0.2, dual_clip_c=1.0)


def test_sequence_advantages_broadcast_like_token_advantages():
    gen = torch.Generator().manual_seed(1)
    logp, old = -torch.rand(3, 4, generator=gen), -torch.rand(3, 4, generator=gen)
    mask = T([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]])
    adv = T([0.5, -1.0, 2.0])
    clip = dict(clip_eps_low=0.2, clip_eps_high=0.28, dual_clip_c=3.0)
    by_seq, _ = alg.policy_loss(logp, old, adv, mask, **clip)
    by_token, _ = alg.policy_loss(logp, old, adv[:, None].expand(3, 4), mask, **clip)
    close(by_seq, by_token, tol=0)
    assert (by_seq[mask == 0] == 0).all()


def test_clipped_tokens_get_no_gradient():
    # A>0 and ratio above 1+eps: the clipped branch is constant, so the gradient is exactly 0.
    logp = T([[math.log(1.5), math.log(1.1)]]).requires_grad_(True)
    loss, _ = alg.policy_loss(logp, torch.zeros(1, 2), T([1.0]), torch.ones(1, 2), clip_eps_low=0.2, clip_eps_high=0.2)
    loss.sum().backward()
    assert logp.grad[0, 0].item() == 0.0
    assert logp.grad[0, 1].item() == pytest.approx(-1.1)  # d(-A*r)/dlogp = -A*r


def test_value_loss_by_hand():
    # V=2, V_old=0, R=1, eps 0.5: unclipped (2-1)^2 = 1; clipped V=0.5: 0.25; 0.5*max = 0.5
    loss, stats = alg.value_loss(T([[2.0]]), T([[0.0]]), T([[1.0]]), torch.ones(1, 1), clip_eps=0.5)
    assert loss.item() == pytest.approx(0.5) and stats["value_clip_frac"] == 0.0
    # V=0.2, V_old=0, R=1, eps 0.1: unclipped 0.64; clipped V=0.1: 0.81; 0.5*max = 0.405
    loss, stats = alg.value_loss(T([[0.2]]), T([[0.0]]), T([[1.0]]), torch.ones(1, 1), clip_eps=0.1)
    assert loss.item() == pytest.approx(0.405) and stats["value_clip_frac"] == 1.0
    loss, _ = alg.value_loss(T([[0.2]]), T([[0.0]]), T([[1.0]]), torch.ones(1, 1), clip_eps=None)
    assert loss.item() == pytest.approx(0.32)


def test_value_loss_uses_the_named_aggregation():
    values, returns = T([[1.0, 1.0, 1.0], [3.0, 0.0, 0.0]]), torch.zeros(2, 3)
    mask = T([[1, 1, 1], [1, 0, 0]])  # per-token losses 0.5 x3 and 4.5
    by_token, _ = alg.value_loss(values, values, returns, mask, clip_eps=0.2, aggregation="token_mean")
    by_seq, _ = alg.value_loss(values, values, returns, mask, clip_eps=0.2, aggregation="seq_mean_token_mean")
    assert by_token.item() == pytest.approx(6.0 / 4) and by_seq.item() == pytest.approx(2.5)


def test_entropy_from_logits():
    close(alg.entropy_from_logits(torch.zeros(2, 3, 5)), torch.full((2, 3), math.log(5)))
    close(alg.entropy_from_logits(T([[[100.0, 0.0, 0.0]]])), [[0.0]])
    logits = torch.randn(2, 3, 11, generator=torch.Generator().manual_seed(2))
    close(alg.entropy_from_logits(logits), torch.distributions.Categorical(logits=logits).entropy(), tol=1e-5)
    assert alg.entropy_from_logits(logits.bfloat16()).dtype == torch.float32


# --- truncation, dynamic sampling, KL control ------------------------------------------------


@pytest.mark.parametrize(
    "length, expected, why",
    [
        (0, 0.0, "empty"),
        (16, 0.0, "exactly max - buffer: still free"),
        (17, -0.25, "1 of 4 buffer tokens used"),
        (18, -0.5, "half the buffer"),
        (20, -1.0, "at the limit: -penalty_factor"),
        (25, -1.0, "past the limit (cannot happen with a hard cap): no further growth"),
    ],
)
def test_overlong_penalty(length, expected, why):
    close(alg.overlong_penalty(T([length]), max_new_tokens=20, buffer_tokens=4, penalty_factor=1.0), [expected])


def test_overlong_penalty_factor_and_bad_buffer():
    close(alg.overlong_penalty(T([18]), max_new_tokens=20, buffer_tokens=4, penalty_factor=2.0), [-1.0])
    with pytest.raises(ValueError, match="buffer_tokens"):
        alg.overlong_penalty(T([18]), max_new_tokens=20, buffer_tokens=0, penalty_factor=1.0)


def test_drop_truncated_masks_whole_completions():
    mask = T([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    dropped = alg.drop_truncated(mask, T([False, True]))
    close(dropped, [[1, 1, 0], [0, 0, 0]])
    # the truncated completion then leaves token_mean entirely
    close(alg.token_mean(T([[1.0, 3.0, 0.0], [9.0, 9.0, 9.0]]), dropped), 2.0)


def test_group_spread_and_dynamic_sampling_filter():
    rewards = T([1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.5, 0.5 + 1e-9])
    close(alg.group_reward_std(rewards, 2), [0.0, 0.5, 0.0, 0.0])
    assert alg.keep_groups_with_spread(rewards, 2).tolist() == [False, True, False, False]


def test_adaptive_kl_raises_and_lowers_beta():
    controller = alg.AdaptiveKLController(init_beta=0.1, target=0.05, horizon=1000)
    controller.update(measured_kl=0.06, num_samples=100)  # error +0.2 -> beta * 1.02
    assert controller.beta == pytest.approx(0.102)
    controller.update(measured_kl=0.045, num_samples=100)  # error -0.1 -> beta * 0.99
    assert controller.beta == pytest.approx(0.102 * 0.99)
    controller.update(measured_kl=50.0, num_samples=1000)  # error clipped to +0.2 -> * 1.2
    assert controller.beta == pytest.approx(0.102 * 0.99 * 1.2)


@pytest.mark.parametrize(
    "overrides, kind, beta",
    [
        ({}, alg.FixedKLController, 0.04),
        ({"kl_target_nats_per_seq": 0.1, "kl_coef": 0.2}, alg.AdaptiveKLController, 0.2),
        ({"kl_estimator": "none"}, alg.FixedKLController, 0.0),
    ],
)
def test_make_kl_controller(overrides, kind, beta):
    controller = alg.make_kl_controller(AlgorithmConfig(**overrides))
    assert type(controller) is kind and controller.beta == beta


def test_describe_algorithms_lists_every_name():
    text = alg.describe_algorithms()
    names = [*alg.ESTIMATOR_DESCRIPTIONS, *alg.LOSS_AGGREGATIONS, *alg.KL_ESTIMATORS, *PRESETS]
    missing = [n for n in names if n not in text]
    assert not missing
    assert all(len(line) < 160 for line in text.splitlines())


# --- policy losses: GSPO and CISPO -------------------------------------------------------------

LOG = torch.log


def test_gspo_uses_one_geometric_mean_ratio_per_sequence():
    # token ratios 2 and 0.5: geometric mean 1 (inside any clip), arithmetic mean 1.25
    logp, old = LOG(T([[0.5, 0.5, 0.9]])), LOG(T([[0.25, 1.0, 0.1]]))
    mask = T([[1.0, 1.0, 0.0]])  # the third token is padding: its ratio of 9 must not count
    loss, stats = alg.gspo_loss(logp, old, T([2.0]), mask, clip_eps_low=3e-4, clip_eps_high=4e-4)
    close(loss, [[-2.0, -2.0, 0.0]])  # -s * A with s = 1 on every real token
    assert stats["ratio_mean"] == pytest.approx(1.0) and stats["clip_frac"] == 0.0


def test_gspo_clips_the_whole_sequence():
    # ratios 1.21 and 1.0: s = sqrt(1.21) = 1.1 > 1 + 4e-4 with A > 0 -> clipped to 1.0004, no gradient
    logp = LOG(T([[0.55, 0.5]])).requires_grad_(True)
    old = LOG(T([[0.55 / 1.21, 0.5]]))
    loss, stats = alg.gspo_loss(logp, old, T([1.0]), torch.ones(1, 2), clip_eps_low=3e-4, clip_eps_high=4e-4)
    close(loss, [[-1.0004, -1.0004]], tol=1e-6)
    assert stats["clip_frac"] == 1.0
    loss.sum().backward()
    assert logp.grad.abs().max() == 0.0


def test_gspo_gradient_is_the_sequence_ratio_times_the_mean_token_gradient():
    # GSPO: grad = -A * s * (1/|y|) sum_t grad log pi_t; s = exp(mean(0.2, -0.1, 0.5)) inside a wide clip
    logp = T([[-1.0, -2.0, -0.5]]).requires_grad_(True)
    old = T([[-1.2, -1.9, -1.0]])
    loss, _ = alg.gspo_loss(logp, old, T([1.5]), torch.ones(1, 3), clip_eps_low=0.9, clip_eps_high=9.0)
    alg.seq_mean_token_mean(loss, torch.ones(1, 3)).backward()
    s = math.exp((0.2 - 0.1 + 0.5) / 3)
    close(logp.grad, [[-1.5 * s / 3] * 3], tol=1e-6)


def test_cispo_weight_is_clipped_and_carries_no_gradient():
    # ratio 3 -> weight clip(3, 0, 1.5) = 1.5; loss = -1.5 * A * log pi; d/dlogp = -1.5 * A
    logp = LOG(T([[0.6]])).requires_grad_(True)
    old = LOG(T([[0.2]]))
    loss, stats = alg.cispo_loss(logp, old, T([2.0]), torch.ones(1, 1), clip_eps_low=1.0, clip_eps_high=0.5)
    close(loss, [[-1.5 * 2.0 * math.log(0.6)]], tol=1e-6)
    assert stats["clip_frac"] == 1.0 and stats["ratio_mean"] == pytest.approx(3.0)
    loss.sum().backward()
    close(logp.grad, [[-3.0]], tol=1e-6)  # the PPO clip would give 0 here: the token keeps its gradient


def test_dual_clip_is_refused_outside_the_ppo_clip():
    for fn in (alg.gspo_loss, alg.cispo_loss):
        with pytest.raises(ValueError, match="dual_clip_c"):
            fn(torch.zeros(1, 1), torch.zeros(1, 1), T([1.0]), torch.ones(1, 1), clip_eps_low=0.2, clip_eps_high=0.2,
               dual_clip_c=3.0)


@pytest.mark.parametrize("name", sorted(alg.POLICY_LOSSES))
@pytest.mark.parametrize("aggregation", sorted(alg.LOSS_AGGREGATIONS))
def test_every_policy_loss_on_policy_has_the_plain_policy_gradient(name, aggregation):
    torch.manual_seed(0)
    mask = T([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    advantages = T([1.0, -0.5, 2.0])
    logp = (-torch.rand(3, 3) - 0.1).requires_grad_(True)
    per_token, _ = alg.POLICY_LOSSES[name](logp, logp.detach(), advantages, mask, clip_eps_low=0.2, clip_eps_high=0.2)
    alg.LOSS_AGGREGATIONS[aggregation](per_token, mask, constant=5.0).backward()
    plain = logp.detach().clone().requires_grad_(True)
    alg.LOSS_AGGREGATIONS[aggregation](-advantages[:, None] * plain, mask, constant=5.0).backward()
    close(logp.grad, plain.grad, tol=1e-6)


# --- rollout-mismatch corrections ---------------------------------------------------------------

# rho = pi_old / pi_rollout per token: [[3, 1, (pad)], [0.25, 2, 1.5]]
OLD = LOG(T([[0.9, 0.5, 0.5], [0.1, 0.8, 0.6]]))
ROLLOUT = LOG(T([[0.3, 0.5, 0.01], [0.4, 0.4, 0.4]]))
RMASK = T([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])


@pytest.mark.parametrize(
    "name, weights, keep, frac, why",
    [
        ("none", [[1, 1, 1], [1, 1, 1]], [[1, 1, 1], [1, 1, 1]], 0.0, "nothing changes"),
        ("tis", [[2, 1, 1], [0.25, 2, 1.5]], [[1, 1, 1], [1, 1, 1]], 1 / 5, "min(rho, 2): only the 3 is truncated"),
        ("seq_tis", [[2, 2, 2], [0.75, 0.75, 0.75]], [[1, 1, 1], [1, 1, 1]], 2 / 5,
         "sequence rho 3 -> 2; 0.25 * 2 * 1.5 = 0.75 stays"),
        ("mis", [[1, 1, 1], [1, 1, 1]], [[0, 1, 1], [0, 1, 1]], 2 / 5, "3 and 0.25 lie outside [0.5, 2]"),
        ("seq_mis", [[1, 1, 1], [1, 1, 1]], [[0, 0, 0], [1, 1, 1]], 2 / 5, "sequence rho 3 is outside, 0.75 inside"),
        ("icepop", [[0, 1, 0], [0, 2, 1.5]], [[1, 1, 1], [1, 1, 1]], 2 / 5, "rho kept inside [0.5, 2], 0 outside"),
    ],
)
def test_rollout_corrections_by_hand(name, weights, keep, frac, why):
    correction = alg.ROLLOUT_CORRECTIONS[name](OLD, ROLLOUT, RMASK, cap=2.0, low=0.5, high=2.0)
    close(correction.weights * RMASK, T(weights) * RMASK)
    close(correction.keep * RMASK, T(keep) * RMASK)
    assert correction.frac_corrected == pytest.approx(frac), why


def test_raw_ratio_stats_skip_padding():
    stats = alg.rollout_ratio_stats(OLD, ROLLOUT, RMASK, cap=2.0, low=0.5, high=2.0)
    assert stats["rollout/ratio_mean"] == pytest.approx((3 + 1 + 0.25 + 2 + 1.5) / 5, rel=1e-5)
    assert stats["rollout/ratio_min"] == pytest.approx(0.25, rel=1e-5)
    assert stats["rollout/ratio_max"] == pytest.approx(3.0, rel=1e-5)  # the padded 50 is ignored
    assert stats["rollout/seq_ratio_mean"] == pytest.approx((3 + 0.75) / 2, rel=1e-5)
    assert stats["rollout/frac_ratio_above_cap"] == pytest.approx(1 / 5)
    assert stats["rollout/frac_ratio_outside_band"] == pytest.approx(2 / 5)


def _expected_policy_gradient(correction: str | None) -> torch.Tensor:
    """Exact expected gradient, over all four completions of two binary tokens, of the policy
    loss weighted as the trainer weights it (per-token loss x correction weights, summed).

    pi: token 1 with probability 0.5 at both positions; mu (the engine): 0.8 then 0.3. The
    reward, 1 for the completion (1, 1) and 0 otherwise, depends on both tokens; the advantage
    is R - 0.25 (E_pi R). ``correction`` None samples from pi itself."""
    logits = torch.zeros(2, requires_grad=True)  # one per position; pi(1) = sigmoid(logit)
    mu_one = T([0.8, 0.3])
    total = torch.zeros(())
    for first in (0, 1):
        for second in (0, 1):
            tokens = T([first, second])
            pi_one = torch.sigmoid(logits)  # (2,)
            logp = torch.log(torch.where(tokens == 1, pi_one, 1 - pi_one)).unsqueeze(0)  # (1, 2)
            mu_logp = torch.log(torch.where(tokens == 1, mu_one, 1 - mu_one)).unsqueeze(0)  # (1, 2)
            advantage = T([float(first == second == 1) - 0.25])  # (1,)
            per_token, _ = alg.policy_loss(logp, logp.detach(), advantage, torch.ones(1, 2), clip_eps_low=0.2, clip_eps_high=0.2)
            if correction is None:
                probability, weights = logp.detach().sum().exp(), torch.ones(1, 2)
            else:
                probability = mu_logp.sum().exp()
                weights = alg.ROLLOUT_CORRECTIONS[correction](logp.detach(), mu_logp, torch.ones(1, 2), cap=1e6,
                                                              low=1e-6, high=1e6).weights
            total = total + probability * (per_token * weights).sum()
    total.backward()
    return logits.grad


@pytest.mark.parametrize(
    "correction, expected, why",
    [
        (None, [-0.125, -0.125], "on-policy: d/dlogit_1 of E[R] = p1 p2 is p2 p1 (1 - p1) = 0.125; a loss, so negative"),
        ("seq_tis", [-0.125, -0.125], "prod_t pi/mu turns mu's expectation into pi's: the on-policy gradient"),
        ("none", [-0.045, -0.17], "sum_y mu(y) (-A) (y_t - 0.5): mu = 0.24, 0.56, 0.06, 0.14 for 11, 10, 01, 00"),
        ("tis", [-0.075, -0.2], "token 1 reweighted to pi's 0.5, token 2 still mu's 0.3 (and vice versa): "
                                "the other token's distribution stays wrong, and the reward reads it"),
    ],
)
def test_only_sequence_level_weights_give_the_on_policy_gradient(correction, expected, why):
    """Importance sampling's promise, checked exactly by enumeration and by hand: sampling from
    mu and weighting each completion by prod_t pi/mu (seq_tis, cap out of reach) gives the
    on-policy expected gradient; per-token weights do not when the reward depends on several
    tokens (tests/stages/test_learning.py shows the same on a training run)."""
    close(_expected_policy_gradient(correction), expected, tol=1e-6)


# --- KL placement, truncation, REINFORCE++ per-token returns, KL per sequence --------------------


def test_kl_placements():
    old, ref, mask = T([[-1.0, -2.0]]), T([[-1.5, -2.0]]), T([[1.0, 0.0]])
    penalty = alg.KL_PLACEMENTS["reward"].reward_penalty(old, ref, mask, alg.kl_k1, 0.1)
    close(penalty, [[0.05, 0.0]])  # beta * KL on real tokens only
    assert alg.KL_PLACEMENTS["reward"].loss_term(old, ref, alg.kl_k1) is None
    assert alg.KL_PLACEMENTS["loss"].reward_penalty(old, ref, mask, alg.kl_k1, 0.1) is None
    close(alg.KL_PLACEMENTS["loss"].loss_term(old, ref, alg.kl_k1), [[0.5, 0.0]])


def test_truncation_handlings():
    lengths, truncated = T([10, 20]), T([False, True])
    kwargs = dict(max_new_tokens=20, buffer_tokens=4, penalty_factor=1.0)
    close(alg.TRUNCATIONS["overlong_penalty"].reward_penalty(lengths, truncated, **kwargs), [0.0, -1.0])
    assert alg.TRUNCATIONS["keep"].reward_penalty(lengths, truncated, **kwargs) is None
    close(alg.TRUNCATIONS["mask"].loss_mask(torch.ones(2, 2), truncated), [[1, 1], [0, 0]])
    close(alg.TRUNCATIONS["keep"].loss_mask(torch.ones(2, 2), truncated), [[1, 1], [1, 1]])


def test_reinforce_pp_with_reward_kl_uses_per_token_returns_to_go():
    """The paper's per-token KL penalty: a token's return holds only the KL from it onwards. The
    old code folded the whole sequence's KL into one scalar, so every token had the same value."""
    mask = torch.ones(2, 3)
    penalty = T([[0.3, 0.0, 0.1], [0.0, 0.0, 0.0]])  # beta * KL_t
    ctx = alg.AdvantageContext(T([1.0, 0.0]), mask, group_size=1, kl_penalty=penalty)
    returns = [[1 - 0.4, 1 - 0.1, 1 - 0.1], [0.0, 0.0, 0.0]]  # r - sum_{i>=t} beta KL_i
    flat = [x for row in returns for x in row]
    mean = sum(flat) / 6
    std = math.sqrt(sum((x - mean) ** 2 for x in flat) / 6)
    expected = [[(x - mean) / std for x in row] for row in returns]
    advantages = alg.ADVANTAGE_ESTIMATORS["reinforce_pp"](ctx).advantages
    close(advantages, expected, tol=1e-4)
    assert advantages[0, 0] < advantages[0, 1], "the first token carries all the KL, the later ones less"


def test_group_estimators_see_the_summed_kl_penalty():
    ctx = alg.AdvantageContext(T([1.0, 1.0]), torch.ones(2, 2), group_size=2, kl_penalty=T([[0.25, 0.25], [0.0, 0.0]]))
    close(alg.ADVANTAGE_ESTIMATORS["dr_grpo"](ctx).advantages, [-0.25, 0.25])  # returns 0.5 and 1.0


def test_kl_per_sequence_is_the_summed_kl_averaged_over_completions():
    kl = T([[0.1, 0.1, 0.1, 0.1], [0.1, 9.0, 9.0, 9.0], [5.0, 5.0, 5.0, 5.0]])
    mask = T([[1, 1, 1, 1], [1, 0, 0, 0], [0, 0, 0, 0]])  # the empty completion does not count
    assert alg.kl_per_sequence(kl, mask) == pytest.approx((0.4 + 0.1) / 2)
    assert alg.masked_mean(kl, mask).item() == pytest.approx(0.1)  # the per-token mean differs
