"""The vectorised functions agree with plain-Python loops written from the formulas, on random
inputs with masks and unequal lengths; and one on-policy epoch of the clipped loss has the plain
policy gradient."""
from __future__ import annotations

import math
import random

import pytest
import torch

from stages.core import algorithms as alg

SEEDS = [0, 1, 2, 3, 4]


def random_batch(seed: int, num_groups: int = 3, group_size: int = 4, max_len: int = 7):
    """Rewards, log-probs and a right-padded mask with lengths 1..max_len (one row may be empty)."""
    rng = random.Random(seed)
    batch = num_groups * group_size
    lengths = [rng.randint(1, max_len) for _ in range(batch)]
    lengths[rng.randrange(batch)] = 0  # a fully masked row (e.g. a masked truncation)
    mask = [[1.0 if t < n else 0.0 for t in range(max_len)] for n in lengths]
    return {
        "group_size": group_size,
        "rewards": [float(rng.choice([0.0, 0.25, 1.0])) for _ in range(batch)],
        "lengths": lengths,
        "mask": mask,
        "per_token": [[rng.uniform(-2, 2) for _ in range(max_len)] for _ in range(batch)],
        "logp": [[-rng.uniform(0.05, 3) for _ in range(max_len)] for _ in range(batch)],
        "old_logp": [[-rng.uniform(0.05, 3) for _ in range(max_len)] for _ in range(batch)],
        "values": [[rng.uniform(-1, 1) for _ in range(max_len)] for _ in range(batch)],
        "token_rewards": [[rng.uniform(-0.1, 0.1) for _ in range(max_len)] for _ in range(batch)],
        "token_adv": [[rng.uniform(-2, 2) for _ in range(max_len)] for _ in range(batch)],
    }


def t(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def assert_close(actual: torch.Tensor, expected, tol: float = 1e-9) -> None:
    expected = torch.as_tensor(expected, dtype=torch.float64)
    assert torch.allclose(actual.double(), expected, atol=tol), (actual, expected)


# --- reference loops ---------------------------------------------------------------------------


def loop_advantages(name: str, rewards: list[float], group_size: int, eps: float = 1e-6) -> list[float]:
    out = []
    all_mean = sum(rewards) / len(rewards)
    for start in range(0, len(rewards), group_size):
        group = rewards[start : start + group_size]
        mean = sum(group) / len(group)
        std = math.sqrt(sum((r - mean) ** 2 for r in group) / len(group))
        for i, r in enumerate(group):
            if name == "grpo":
                out.append((r - mean) / (std + eps))
            elif name == "dr_grpo":
                out.append(r - mean)
            elif name == "rloo":
                out.append(r - (sum(group) - group[i]) / (len(group) - 1))
            elif name in ("reinforce_pp", "reinforce_pp_baseline"):
                out.append(r if name == "reinforce_pp" else r - mean)
    if name.startswith("reinforce_pp"):
        centre = sum(out) / len(out) if name == "reinforce_pp_baseline" else all_mean
        std = math.sqrt(sum((a - centre) ** 2 for a in out) / len(out))
        out = [(a - centre) / (std + eps) for a in out]
    return out


def loop_aggregate(name: str, per_token, mask, constant: float) -> float:
    if name == "token_mean":
        total = sum(x * m for row, mrow in zip(per_token, mask) for x, m in zip(row, mrow))
        count = sum(sum(mrow) for mrow in mask)
        return total / count if count else 0.0
    if name == "seq_mean_token_mean":
        means = [sum(x * m for x, m in zip(row, mrow)) / sum(mrow) for row, mrow in zip(per_token, mask) if sum(mrow)]
        return sum(means) / len(means) if means else 0.0
    sums = [sum(x * m for x, m in zip(row, mrow)) / constant for row, mrow in zip(per_token, mask)]
    return sum(sums) / len(sums)


def loop_gae(token_rewards, values, lengths, gamma: float, lam: float):
    advantages, returns = [], []
    for rewards_row, values_row, n in zip(token_rewards, values, lengths):
        adv_row = [0.0] * len(values_row)
        next_adv, next_value = 0.0, 0.0
        for step in reversed(range(n)):
            delta = rewards_row[step] + gamma * next_value - values_row[step]
            next_adv = delta + gamma * lam * next_adv
            next_value = values_row[step]
            adv_row[step] = next_adv
        advantages.append(adv_row)
        returns.append([a + v if s < n else 0.0 for s, (a, v) in enumerate(zip(adv_row, values_row))])
    return advantages, returns


def loop_policy_loss(logp, old_logp, adv, mask, eps_low, eps_high, dual_c):
    out = []
    for lrow, orow, arow, mrow in zip(logp, old_logp, adv, mask):
        row = []
        for lp, olp, a, m in zip(lrow, orow, arow, mrow):
            ratio = math.exp(lp - olp)
            objective = min(ratio * a, min(max(ratio, 1 - eps_low), 1 + eps_high) * a)
            loss = -objective
            if dual_c is not None and a < 0:
                loss = min(loss, -dual_c * a)
            row.append(loss * m)
        out.append(row)
    return out


# --- agreement ---------------------------------------------------------------------------------


def outcome_advantages(name: str, batch: dict) -> torch.Tensor:
    context = alg.AdvantageContext(t(batch["rewards"]), t(batch["mask"]), batch["group_size"])
    return alg.ADVANTAGE_ESTIMATORS[name](context).advantages


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", sorted(set(alg.ADVANTAGE_ESTIMATORS) - {"gae"}))
def test_advantage_estimators_match_loops(name, seed):
    batch = random_batch(seed)
    expected = loop_advantages(name, batch["rewards"], batch["group_size"])
    actual = outcome_advantages(name, batch)
    assert_close(actual, expected, tol=1e-5)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", sorted(alg.LOSS_AGGREGATIONS))
def test_loss_aggregations_match_loops(name, seed):
    batch = random_batch(seed)
    expected = loop_aggregate(name, batch["per_token"], batch["mask"], constant=11.0)
    actual = alg.LOSS_AGGREGATIONS[name](t(batch["per_token"]), t(batch["mask"]), constant=11.0)
    assert_close(actual, expected)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("gamma, lam", [(1.0, 1.0), (0.99, 0.95), (0.5, 0.0)])
def test_gae_matches_loop(seed, gamma, lam):
    batch = random_batch(seed)
    token_rewards = alg.outcome_to_token_rewards(t(batch["rewards"]), t(batch["mask"])).double()
    token_rewards = token_rewards + t(batch["token_rewards"]) * t(batch["mask"])  # e.g. a KL penalty
    exp_adv, exp_ret = loop_gae(token_rewards.tolist(), batch["values"], batch["lengths"], gamma, lam)
    adv, ret = alg.gae_advantages(token_rewards, t(batch["values"]), t(batch["mask"]), gamma, lam)
    assert_close(adv, exp_adv)
    assert_close(ret, exp_ret)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("dual_c", [None, 3.0])
@pytest.mark.parametrize("token_level", [False, True])
def test_policy_loss_matches_loop(seed, dual_c, token_level):
    batch = random_batch(seed)
    seq_adv = loop_advantages("grpo", batch["rewards"], batch["group_size"])
    adv_rows = batch["token_adv"] if token_level else [[a] * len(batch["mask"][0]) for a in seq_adv]
    expected = loop_policy_loss(batch["logp"], batch["old_logp"], adv_rows, batch["mask"], 0.2, 0.28, dual_c)
    adv = t(batch["token_adv"]) if token_level else t(seq_adv)
    actual, stats = alg.policy_loss(t(batch["logp"]), t(batch["old_logp"]), adv, t(batch["mask"]),
                                    clip_eps_low=0.2, clip_eps_high=0.28, dual_clip_c=dual_c)
    assert_close(actual, expected)
    assert 0.0 <= stats["clip_frac"] <= 1.0


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", ["k1", "k2", "k3"])
def test_kl_estimators_match_loops(name, seed):
    batch = random_batch(seed)
    formulas = {
        "k1": lambda lp, ref: lp - ref,
        "k2": lambda lp, ref: 0.5 * (lp - ref) ** 2,
        "k3": lambda lp, ref: math.exp(ref - lp) - (ref - lp) - 1,
    }
    expected = [[formulas[name](lp, ref) for lp, ref in zip(a, b)] for a, b in zip(batch["logp"], batch["old_logp"])]
    assert_close(alg.KL_ESTIMATORS[name](t(batch["logp"]), t(batch["old_logp"])), expected, tol=1e-9)


# --- on-policy gradient ----------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS[:3])
@pytest.mark.parametrize("aggregation", sorted(alg.LOSS_AGGREGATIONS))
@pytest.mark.parametrize("dual_c", [None, 3.0])
def test_one_on_policy_epoch_has_the_plain_policy_gradient(seed, aggregation, dual_c):
    """old_logp == logp.detach() makes every ratio 1, inside any clip range: the gradient must be
    exactly that of -A * log p aggregated the same way (REINFORCE with the group baseline)."""
    batch = random_batch(seed)
    adv = outcome_advantages("grpo", batch)
    mask = t(batch["mask"])
    aggregate = alg.LOSS_AGGREGATIONS[aggregation]

    logp_clip = t(batch["logp"]).requires_grad_(True)
    per_token, _ = alg.policy_loss(logp_clip, logp_clip.detach(), adv, mask,
                                   clip_eps_low=0.2, clip_eps_high=0.28, dual_clip_c=dual_c)
    aggregate(per_token, mask, constant=9.0).backward()

    logp_pg = t(batch["logp"]).requires_grad_(True)
    aggregate(-adv[:, None] * logp_pg, mask, constant=9.0).backward()

    assert_close(logp_clip.grad, logp_pg.grad, tol=1e-12)
    assert logp_clip.grad.abs().sum() > 0  # the test would be vacuous with a zero gradient


def ppo_on_one_batch(clip_eps: float, num_epochs: int = 30) -> list[float]:
    """A toy policy (one categorical over 4 tokens, one token per completion) trained for many
    epochs in 2 minibatches on one rollout batch, with the log-probs stored at rollout time as
    old_logp. Returns the final ratios pi/pi_old of the four sampled tokens."""
    logits = torch.zeros(4, requires_grad=True)
    actions = torch.tensor([[0], [1], [2], [3]])
    adv = torch.tensor([1.0, -1.0, 0.0, 0.0])
    mask = torch.ones(4, 1)
    old_logp = torch.log_softmax(logits, 0).detach()[actions]  # (4, 1), fixed for all epochs
    optimizer = torch.optim.SGD([logits], lr=0.1)
    for _epoch in range(num_epochs):
        for minibatch in (torch.tensor([0, 1]), torch.tensor([2, 3])):
            logp = torch.log_softmax(logits, 0)[actions[minibatch]]  # (2, 1)
            loss, _ = alg.policy_loss(logp, old_logp[minibatch], adv[minibatch], mask[minibatch],
                                      clip_eps_low=min(clip_eps, 0.99), clip_eps_high=clip_eps)
            optimizer.zero_grad()
            alg.token_mean(loss, mask[minibatch]).backward()
            optimizer.step()
    return (torch.log_softmax(logits, 0)[actions] - old_logp).exp().view(-1).tolist()


def test_many_epochs_with_stored_old_logprobs_stop_at_the_clip():
    """Once ratio > 1 + eps on the positive-advantage token (and < 1 - eps on the negative one),
    the clipped loss has no gradient: the policy stops there. Without the clip it runs on."""
    clipped = ppo_on_one_batch(clip_eps=0.2)
    assert 1.2 <= clipped[0] < 1.3 and 0.7 < clipped[1] <= 0.8
    unclipped = ppo_on_one_batch(clip_eps=100.0)
    assert unclipped[0] > 2.5 and unclipped[1] < 0.3
