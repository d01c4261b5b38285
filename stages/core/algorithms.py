"""RL objective pieces for the GRPO stage: small pure tensor functions chosen by name.

Shapes: B completions (groups of ``group_size`` are contiguous blocks), T completion tokens
(right-padded), ``mask`` (B, T) with 1 on real completion tokens. Nothing here holds state
except the KL controllers, and nothing branches on a config name: the loop looks each choice
up in a registry (``ADVANTAGE_ESTIMATORS``, ``LOSS_AGGREGATIONS``, ``KL_ESTIMATORS``).

Example (one GRPO step on one group of four):
    >>> import torch
    >>> adv = ADVANTAGE_ESTIMATORS["grpo"](torch.tensor([1.0, 0.8, 0.4, 0.2]), group_size=4)
    >>> [round(a, 2) for a in adv.tolist()]
    [1.26, 0.63, -0.63, -1.26]
"""
from __future__ import annotations

import abc

from typing import TYPE_CHECKING, Callable

import torch

if TYPE_CHECKING:  # only for annotations: stages may import pipeline, but keep import light
    from pipeline.algorithm_config import AlgorithmConfig

# Log-ratios are clamped before exp(): a ratio of e^20 already means the sample is useless,
# and an inf would turn the whole loss into nan.
_MAX_LOG_RATIO = 20.0


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def _grouped(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """(B,) -> (B // group_size, group_size); refuses a batch that is not whole groups."""
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D (B,), got shape {tuple(rewards.shape)}")
    if group_size < 1 or rewards.numel() % group_size != 0:
        raise ValueError(f"batch of {rewards.numel()} rewards is not a whole number of groups of {group_size}")
    return rewards.float().view(-1, group_size)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` where ``mask`` is 1; 0 when the mask is empty.

    >>> masked_mean(torch.tensor([[1.0, 3.0, 9.0]]), torch.tensor([[1, 1, 0]]))
    tensor(2.)
    """
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Shift and scale the masked entries to mean 0, std 1 (population std); padding -> 0.

    >>> w = masked_whiten(torch.tensor([[1.0, 3.0, 7.0]]), torch.tensor([[1, 1, 0]]))
    >>> w.tolist()
    [[-1.0, 1.0, 0.0]]
    """
    mask = mask.to(values.dtype)
    mean = masked_mean(values, mask)
    var = masked_mean((values - mean) ** 2, mask)
    return (values - mean) * torch.rsqrt(var + eps) * mask


def _last_token_index(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Index of the last real token per row, and whether the row has any token."""
    mask = mask.bool()
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    last = torch.where(mask, positions, torch.full_like(positions, -1)).max(dim=1).values
    return last.clamp(min=0), last >= 0


# ---------------------------------------------------------------------------------------------
# Advantages
# ---------------------------------------------------------------------------------------------


def grpo_advantages(rewards: torch.Tensor, group_size: int, *, eps: float = 1e-6) -> torch.Tensor:
    """GRPO (DeepSeekMath Sec. 4.1.2): z-score within each group, population std.

    A group whose rewards are all equal gets advantages 0, not nan.

    >>> [round(a, 4) for a in grpo_advantages(torch.tensor([1.0, 0.0, 0.5, 0.5]), group_size=2).tolist()]
    [1.0, -1.0, 0.0, 0.0]
    """
    groups = _grouped(rewards, group_size)
    mean = groups.mean(dim=1, keepdim=True)
    std = groups.std(dim=1, unbiased=False, keepdim=True)
    return ((groups - mean) / (std + eps)).view(-1)


def dr_grpo_advantages(rewards: torch.Tensor, group_size: int, *, eps: float = 1e-6) -> torch.Tensor:
    """Dr. GRPO (Liu et al. 2025): subtract the group mean, no division by the std (which
    up-weights too-easy and too-hard questions).

    >>> dr_grpo_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0]), group_size=4).tolist()
    [0.75, -0.25, -0.25, -0.25]
    """
    del eps  # same signature as the others; nothing is divided here
    groups = _grouped(rewards, group_size)
    return (groups - groups.mean(dim=1, keepdim=True)).view(-1)


def rloo_advantages(rewards: torch.Tensor, group_size: int, *, eps: float = 1e-6) -> torch.Tensor:
    """RLOO (Ahmadian et al. 2024): baseline = mean of the *other* G-1 rewards of the group,
    which equals G/(G-1) * (r - group mean).

    >>> rloo_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0]), group_size=4).tolist()
    [1.0, -0.3333333432674408, -0.3333333432674408, -0.3333333432674408]
    """
    del eps
    if group_size < 2:
        raise ValueError("rloo needs group_size >= 2 (the baseline leaves one sample out)")
    groups = _grouped(rewards, group_size)
    others_mean = (groups.sum(dim=1, keepdim=True) - groups) / (group_size - 1)
    return (groups - others_mean).view(-1)


def reinforce_pp_advantages(rewards: torch.Tensor, group_size: int, *, eps: float = 1e-6) -> torch.Tensor:
    """REINFORCE++ (Hu 2025, arXiv:2501.03262): no per-prompt baseline; the (KL-penalised)
    return is normalised over the whole global batch. ``group_size`` only checks the shape.

    >>> [round(a, 4) for a in reinforce_pp_advantages(torch.tensor([1.0, 0.0, 1.0, 0.0]), group_size=2).tolist()]
    [1.0, -1.0, 1.0, -1.0]
    """
    flat = _grouped(rewards, group_size).view(-1)
    return (flat - flat.mean()) / (flat.std(unbiased=False) + eps)


def reinforce_pp_baseline_advantages(rewards: torch.Tensor, group_size: int, *, eps: float = 1e-6) -> torch.Tensor:
    """REINFORCE++-baseline (later versions of the same paper): subtract the group mean, then
    normalise over the global batch.

    >>> adv = reinforce_pp_baseline_advantages(torch.tensor([1.0, 0.0, 3.0, 3.0]), group_size=2)
    >>> [round(a, 4) for a in adv.tolist()]  # centred [0.5, -0.5, 0, 0], batch std 0.3536
    [1.4142, -1.4142, 0.0, 0.0]
    """
    centred = dr_grpo_advantages(rewards, group_size)
    return (centred - centred.mean()) / (centred.std(unbiased=False) + eps)


AdvantageFn = Callable[..., torch.Tensor]

# Outcome-level estimators: fn(rewards (B,), group_size, *, eps) -> (B,). The token-level one,
# "gae", needs values and per-token rewards and is ``gae_advantages`` below.
ADVANTAGE_ESTIMATORS: dict[str, AdvantageFn] = {
    "grpo": grpo_advantages,
    "dr_grpo": dr_grpo_advantages,
    "rloo": rloo_advantages,
    "reinforce_pp": reinforce_pp_advantages,
    "reinforce_pp_baseline": reinforce_pp_baseline_advantages,
}


def outcome_to_token_rewards(rewards: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Place each completion's scalar reward on its last real token (zeros elsewhere).

    >>> outcome_to_token_rewards(torch.tensor([2.0, 5.0]), torch.tensor([[1, 1, 0], [1, 1, 1]]))
    tensor([[0., 2., 0.],
            [0., 0., 5.]])
    """
    last, has_tokens = _last_token_index(mask)  # (B,), (B,)
    token_rewards = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)  # (B, T)
    token_rewards[torch.arange(mask.shape[0], device=mask.device), last] = rewards.float() * has_tokens
    return token_rewards


def discounted_returns(token_rewards: torch.Tensor, mask: torch.Tensor, gamma: float) -> torch.Tensor:
    """Return-to-go G_t = sum_{k>=t} gamma^(k-t) r_k over real tokens (masked tokens skipped).

    >>> discounted_returns(torch.tensor([[0.0, 0.0, 1.0]]), torch.ones(1, 3), gamma=0.5).tolist()
    [[0.25, 0.5, 1.0]]
    """
    mask = mask.to(token_rewards.dtype)
    returns = torch.zeros_like(token_rewards)  # (B, T)
    running = torch.zeros_like(token_rewards[:, 0])  # (B,)
    for t in reversed(range(token_rewards.shape[1])):
        m = mask[:, t]
        running = torch.where(m.bool(), token_rewards[:, t] + gamma * running, running)
        returns[:, t] = running * m
    return returns


def reinforce_pp_token_advantages(
    token_rewards: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0, *, eps: float = 1e-8
) -> torch.Tensor:
    """REINFORCE++ with per-token rewards (e.g. outcome reward minus a per-token KL penalty):
    return-to-go, then whitened over every real token of the batch.

    >>> a = reinforce_pp_token_advantages(torch.tensor([[0.0, 1.0], [0.0, 0.0]]), torch.ones(2, 2))
    >>> [round(x, 3) for x in a.view(-1).tolist()]
    [1.0, 1.0, -1.0, -1.0]
    """
    return masked_whiten(discounted_returns(token_rewards, mask, gamma), mask, eps)


def gae_advantages(
    token_rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016) over real tokens.

    delta_t = r_t + gamma * V_{t+1} - V_t, with V after the last real token = 0;
    A_t = delta_t + gamma * lam * A_{t+1}; returns = A + V (the critic's regression target).
    Masked positions are skipped (the next *real* token's value is used) and come out as 0.

    >>> adv, ret = gae_advantages(torch.tensor([[0.0, 0.0, 1.0]]), torch.tensor([[0.5, 0.5, 0.5]]),
    ...                           torch.ones(1, 3), gamma=1.0, lam=1.0)
    >>> adv.tolist(), ret.tolist()
    ([[0.5, 0.5, 0.5]], [[1.0, 1.0, 1.0]])
    """
    maskf = mask.to(values.dtype)
    values = values.detach() * maskf  # (B, T)
    advantages = torch.zeros_like(values)  # (B, T)
    next_value = torch.zeros_like(values[:, 0])  # (B,)
    next_advantage = torch.zeros_like(values[:, 0])  # (B,)
    for t in reversed(range(values.shape[1])):
        real = mask[:, t].bool()
        delta = token_rewards[:, t] + gamma * next_value - values[:, t]
        advantage_t = delta + gamma * lam * next_advantage
        next_advantage = torch.where(real, advantage_t, next_advantage)
        next_value = torch.where(real, values[:, t], next_value)
        advantages[:, t] = advantage_t * maskf[:, t]
    returns = (advantages + values) * maskf
    return advantages, returns


# ---------------------------------------------------------------------------------------------
# Loss aggregation: (B, T) per-token losses -> scalar
# ---------------------------------------------------------------------------------------------


def seq_mean_token_mean(per_token: torch.Tensor, mask: torch.Tensor, *, constant: float | None = None) -> torch.Tensor:
    """Original GRPO: mean over sequences of each sequence's token mean. Long completions get
    less weight per token. Sequences with no real token (e.g. masked truncations) are left out.

    >>> seq_mean_token_mean(torch.tensor([[1.0, 1.0, 1.0], [4.0, 0.0, 0.0]]), torch.tensor([[1, 1, 1], [1, 0, 0]]))
    tensor(2.5000)
    """
    del constant
    mask = mask.to(per_token.dtype)
    tokens_per_seq = mask.sum(dim=1)  # (B,)
    seq_means = (per_token * mask).sum(dim=1) / tokens_per_seq.clamp(min=1.0)  # (B,)
    has_tokens = (tokens_per_seq > 0).to(per_token.dtype)
    return (seq_means * has_tokens).sum() / has_tokens.sum().clamp(min=1.0)


def token_mean(per_token: torch.Tensor, mask: torch.Tensor, *, constant: float | None = None) -> torch.Tensor:
    """DAPO: mean over every real token of the batch; every token weighs the same.

    >>> token_mean(torch.tensor([[1.0, 1.0, 1.0], [4.0, 0.0, 0.0]]), torch.tensor([[1, 1, 1], [1, 0, 0]]))
    tensor(1.7500)
    """
    del constant
    return masked_mean(per_token, mask)


def seq_mean_token_sum_norm(per_token: torch.Tensor, mask: torch.Tensor, *, constant: float | None = None) -> torch.Tensor:
    """Dr. GRPO: each sequence's token *sum* divided by a constant (the generation budget),
    averaged over sequences. No length normalisation, so no length bias. ``constant=None``
    uses T, the padded length; the loop should pass ``cfg.effective_loss_constant(max_new_tokens)``.

    >>> seq_mean_token_sum_norm(torch.tensor([[1.0, 1.0, 1.0], [4.0, 0.0, 0.0]]),
    ...                         torch.tensor([[1, 1, 1], [1, 0, 0]]), constant=10.0)
    tensor(0.3500)
    """
    mask = mask.to(per_token.dtype)
    divisor = float(constant) if constant is not None else float(per_token.shape[1])
    if divisor <= 0:
        raise ValueError(f"loss constant must be > 0, got {divisor}")
    return ((per_token * mask).sum(dim=1) / divisor).mean()


AggregationFn = Callable[..., torch.Tensor]
LOSS_AGGREGATIONS: dict[str, AggregationFn] = {
    "seq_mean_token_mean": seq_mean_token_mean,
    "token_mean": token_mean,
    "seq_mean_token_sum_norm": seq_mean_token_sum_norm,
}


# ---------------------------------------------------------------------------------------------
# KL estimators (Schulman, "Approximating KL divergence", 2020), per token, sampled from the policy
# ---------------------------------------------------------------------------------------------


def kl_none(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """No KL term: zeros (the loop can skip the reference forward pass entirely)."""
    del ref_logp
    return torch.zeros_like(logp)


def kl_k1(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """k1 = log pi - log pi_ref: unbiased, high variance, can be negative.

    >>> kl_k1(torch.tensor([-1.0]), torch.tensor([-1.5]))
    tensor([0.5000])
    """
    return logp - ref_logp


def kl_k2(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """k2 = 0.5 * (log pi - log pi_ref)^2: biased, low variance, >= 0.

    >>> kl_k2(torch.tensor([-1.0]), torch.tensor([-1.5]))
    tensor([0.1250])
    """
    return 0.5 * (logp - ref_logp) ** 2


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """k3 = exp(ref - logp) - (ref - logp) - 1: unbiased, low variance, >= 0 (DeepSeekMath Eq. 4).

    >>> round(kl_k3(torch.tensor([-1.0]), torch.tensor([-1.5])).item(), 4)
    0.1065
    """
    log_ratio = (ref_logp - logp).clamp(-_MAX_LOG_RATIO, _MAX_LOG_RATIO)
    return torch.expm1(log_ratio) - log_ratio  # expm1: exact near 0, where it matters most


KLFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
KL_ESTIMATORS: dict[str, KLFn] = {"none": kl_none, "k1": kl_k1, "k2": kl_k2, "k3": kl_k3}


def kl_penalised_rewards(token_rewards: torch.Tensor, kl_per_token: torch.Tensor, beta: float) -> torch.Tensor:
    """Reward-side KL (InstructGPT/TinyZero): r_t - beta * KL_t. Pass a KL that is 0 on padding.

    >>> kl_penalised_rewards(torch.tensor([[0.8]]), torch.tensor([[0.05]]), beta=6.0)
    tensor([[0.5000]])
    """
    return token_rewards - beta * kl_per_token


# ---------------------------------------------------------------------------------------------
# Policy, value and entropy terms
# ---------------------------------------------------------------------------------------------


def policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_eps_low: float,
    clip_eps_high: float,
    dual_clip_c: float | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Per-token clipped surrogate loss, -min(r*A, clip(r, 1-eps_low, 1+eps_high)*A).

    ``advantages`` is (B,) (one per completion) or (B, T). With ``dual_clip_c`` (> 1), the loss
    of a negative-advantage token is also capped at -c*A (Ye et al. 2020), so one token whose
    ratio exploded cannot dominate. Returns the (B, T) loss (0 on padding; aggregate it with
    ``LOSS_AGGREGATIONS``) and float stats over real tokens: clip_frac, dual_clip_frac,
    ratio_mean, ratio_max, approx_kl (k3 of old vs new).

    >>> loss, stats = policy_loss(torch.log(torch.tensor([[1.35]])), torch.zeros(1, 1), torch.tensor([0.2]),
    ...                           torch.ones(1, 1), clip_eps_low=0.2, clip_eps_high=0.2)
    >>> round(-loss.item(), 4), stats["clip_frac"]
    (0.24, 1.0)
    """
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(1)  # (B, 1), broadcast over tokens
    maskf = mask.to(logp.dtype)
    log_ratio = (logp - old_logp).clamp(-_MAX_LOG_RATIO, _MAX_LOG_RATIO)  # (B, T)
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_eps_low, 1.0 + clip_eps_high)
    loss = torch.maximum(unclipped, clipped)  # (B, T): the pessimistic bound
    dual_clipped = torch.zeros_like(loss, dtype=torch.bool)
    if dual_clip_c is not None:
        if dual_clip_c <= 1.0:
            raise ValueError(f"dual_clip_c must be > 1, got {dual_clip_c}")
        cap = -advantages * dual_clip_c
        dual_clipped = (advantages < 0) & (loss > cap)
        loss = torch.where(advantages < 0, torch.minimum(loss, cap), loss)
    loss = loss * maskf
    with torch.no_grad():
        stats = {
            "clip_frac": masked_mean((clipped > unclipped).to(logp.dtype), maskf).item(),
            "dual_clip_frac": masked_mean(dual_clipped.to(logp.dtype), maskf).item(),
            "ratio_mean": masked_mean(ratio, maskf).item(),
            "ratio_max": (ratio * maskf).max().item() if maskf.any() else 0.0,
            "approx_kl": masked_mean(kl_k3(logp, old_logp), maskf).item(),
        }
    return loss, stats


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_eps: float | None,
    aggregation: str = "token_mean",
    constant: float | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO's clipped value loss: 0.5 * max((V - R)^2, (V_clip - R)^2), where V_clip stays within
    clip_eps of the value at rollout time. ``clip_eps=None`` gives the plain squared error.

    >>> loss, stats = value_loss(torch.tensor([[2.0]]), torch.tensor([[0.0]]), torch.tensor([[1.0]]),
    ...                          torch.ones(1, 1), clip_eps=0.5)
    >>> loss.item(), stats["value_clip_frac"]
    (0.5, 0.0)
    """
    unclipped = (values - returns) ** 2
    if clip_eps is None:
        per_token = 0.5 * unclipped
        clipped_frac = 0.0
    else:
        values_clipped = old_values + torch.clamp(values - old_values, -clip_eps, clip_eps)
        clipped = (values_clipped - returns) ** 2
        per_token = 0.5 * torch.maximum(unclipped, clipped)
        clipped_frac = masked_mean((clipped > unclipped).to(values.dtype), mask).item()
    loss = LOSS_AGGREGATIONS[aggregation](per_token, mask, constant=constant)
    with torch.no_grad():
        stats = {
            "value_clip_frac": clipped_frac,
            "value_mean": masked_mean(values, mask).item(),
            "explained_variance": _explained_variance(values, returns, mask),
        }
    return loss, stats


def _explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """1 - Var(R - V) / Var(R): 1 is a perfect critic, 0 no better than a constant."""
    var_returns = masked_mean((returns - masked_mean(returns, mask)) ** 2, mask)
    residual = returns - values
    var_residual = masked_mean((residual - masked_mean(residual, mask)) ** 2, mask)
    if var_returns.item() == 0.0:
        return 0.0
    return (1.0 - var_residual / var_returns).item()


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of softmax(logits) per position: logsumexp(z) - sum(softmax(z) * z).

    Computed in float32 (bf16 logits lose the small probabilities that make up the tail).

    >>> round(entropy_from_logits(torch.zeros(1, 1, 4)).item(), 4)  # uniform over 4: ln 4
    1.3863
    """
    logits = logits.float()
    probs = torch.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - (probs * logits).sum(dim=-1)


# ---------------------------------------------------------------------------------------------
# Truncation and dynamic sampling
# ---------------------------------------------------------------------------------------------


def overlong_penalty(
    lengths: torch.Tensor, max_new_tokens: int, buffer_tokens: int, penalty_factor: float
) -> torch.Tensor:
    """DAPO soft overlong punishment, added to the reward: 0 up to max - buffer tokens, then
    a linear ramp down to -penalty_factor at max_new_tokens.

    >>> overlong_penalty(torch.tensor([10, 16, 18, 20]), max_new_tokens=20, buffer_tokens=4, penalty_factor=1.0).tolist()
    [0.0, 0.0, -0.5, -1.0]
    """
    if not 0 < buffer_tokens <= max_new_tokens:
        raise ValueError(f"buffer_tokens must be in (0, max_new_tokens={max_new_tokens}], got {buffer_tokens}")
    free_tokens = max_new_tokens - buffer_tokens
    excess = (lengths.float() - free_tokens).clamp(min=0.0, max=float(buffer_tokens))
    return 0.0 - excess * (penalty_factor / buffer_tokens)  # 0.0 - x: no -0.0 in the logs


def drop_truncated(mask: torch.Tensor, truncated: torch.Tensor) -> torch.Tensor:
    """``truncation: mask``: zero the loss mask of completions that hit max_new_tokens (DAPO's
    overlong filtering), so an unfinished answer is neither rewarded nor punished.

    >>> drop_truncated(torch.ones(2, 2), torch.tensor([False, True])).tolist()
    [[1.0, 1.0], [0.0, 0.0]]
    """
    return mask * (~truncated.bool()).to(mask.dtype).unsqueeze(1)


def group_reward_std(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """Population std of each group's rewards, (B // group_size,).

    >>> group_reward_std(torch.tensor([1.0, 1.0, 0.0, 1.0]), group_size=2).tolist()
    [0.0, 0.5]
    """
    return _grouped(rewards, group_size).std(dim=1, unbiased=False)


def keep_groups_with_spread(rewards: torch.Tensor, group_size: int, eps: float = 1e-6) -> torch.Tensor:
    """DAPO dynamic sampling filter: True for groups whose rewards are not all equal (only
    those carry a learning signal under group baselines).

    >>> keep_groups_with_spread(torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0, 0.0]), group_size=2).tolist()
    [False, True, False]
    """
    groups = _grouped(rewards, group_size)
    return (groups.max(dim=1).values - groups.min(dim=1).values) > eps


# ---------------------------------------------------------------------------------------------
# KL coefficient controllers
# ---------------------------------------------------------------------------------------------


class KLController(abc.ABC):
    """Holds beta, the KL coefficient; ``update`` is called once per step with the measured KL."""

    beta: float

    @abc.abstractmethod
    def update(self, measured_kl: float, num_samples: int) -> None:
        """Adjust ``beta`` after a step that measured ``measured_kl`` over ``num_samples``."""


class FixedKLController(KLController):
    """Constant beta.

    >>> c = FixedKLController(0.04); c.update(5.0, 64); c.beta
    0.04
    """

    def __init__(self, beta: float) -> None:
        self.beta = float(beta)

    def update(self, measured_kl: float, num_samples: int) -> None:
        del measured_kl, num_samples


class AdaptiveKLController(KLController):
    """Ziegler et al. 2019: beta *= 1 + clip(KL/target - 1, -0.2, 0.2) * n / horizon.

    Raises beta when the measured KL exceeds the target and lowers it otherwise; the clip keeps
    one noisy step from moving beta by more than 20 % * n / horizon.

    >>> c = AdaptiveKLController(init_beta=0.1, target=0.05, horizon=100)
    >>> c.update(measured_kl=1.0, num_samples=50); round(c.beta, 4)  # error clipped to +0.2
    0.11
    """

    def __init__(self, init_beta: float, target: float, horizon: int) -> None:
        if target <= 0 or horizon <= 0:
            raise ValueError(f"target and horizon must be > 0, got {target}, {horizon}")
        self.beta = float(init_beta)
        self.target = float(target)
        self.horizon = int(horizon)

    def update(self, measured_kl: float, num_samples: int) -> None:
        proportional_error = min(max(measured_kl / self.target - 1.0, -0.2), 0.2)
        self.beta *= 1.0 + proportional_error * num_samples / self.horizon


def make_kl_controller(cfg: "AlgorithmConfig") -> KLController:
    """Fixed beta = kl_coef, adaptive when kl_target is set, beta 0 when there is no KL term."""
    if cfg.kl_estimator == "none":
        return FixedKLController(0.0)
    if cfg.kl_target is not None:
        return AdaptiveKLController(cfg.kl_coef, cfg.kl_target, cfg.kl_horizon)
    return FixedKLController(cfg.kl_coef)


# ---------------------------------------------------------------------------------------------
# Listing (``r1zero algorithms``)
# ---------------------------------------------------------------------------------------------

ESTIMATOR_DESCRIPTIONS = {
    "grpo": "group z-score (r - mean_g) / (std_g + eps), population std (DeepSeekMath)",
    "dr_grpo": "group mean baseline r - mean_g, no std division (Dr. GRPO)",
    "rloo": "leave-one-out baseline: r_i - mean of the other G-1 rewards (RLOO)",
    "reinforce_pp": "no group baseline; (KL-penalised) return whitened over the global batch (REINFORCE++)",
    "reinforce_pp_baseline": "group mean subtracted, then whitened over the global batch (REINFORCE++-baseline)",
    "gae": "PPO: learned critic, per-token rewards, TD errors, GAE(gamma, lambda), clipped value loss",
}
AGGREGATION_DESCRIPTIONS = {
    "seq_mean_token_mean": "mean over sequences of per-sequence token means (original GRPO)",
    "token_mean": "mean over all real tokens in the batch (DAPO token-level loss)",
    "seq_mean_token_sum_norm": "per-sequence token sums / a constant, mean over sequences (Dr. GRPO)",
}
KL_DESCRIPTIONS = {
    "none": "no KL term, no reference model",
    "k1": "log pi - log pi_ref (unbiased, high variance)",
    "k2": "0.5 (log pi - log pi_ref)^2 (biased, low variance)",
    "k3": "exp(ref - logp) - (ref - logp) - 1 (unbiased, low variance, >= 0)",
}


def describe_algorithms() -> str:
    """Every estimator, aggregation, KL estimator and preset, one line each.

    >>> "dr_grpo" in describe_algorithms()
    True
    """
    from pipeline.algorithm_config import PRESETS, PRESET_SAMPLING

    lines = ["Advantage estimators:"]
    lines += [f"  {name:<24}{text}" for name, text in ESTIMATOR_DESCRIPTIONS.items()]
    lines.append("Loss aggregations:")
    lines += [f"  {name:<24}{text}" for name, text in AGGREGATION_DESCRIPTIONS.items()]
    lines.append("KL estimators (kl_mode: 'loss' term or per-token 'reward' penalty):")
    lines += [f"  {name:<24}{text}" for name, text in KL_DESCRIPTIONS.items()]
    lines.append("Presets:")
    for name, values in PRESETS.items():
        lines.append(f"  {name:<24}{_preset_summary(values, PRESET_SAMPLING.get(name, {}))}")
    return "\n".join(lines)


def _preset_summary(values: dict, sampling: dict) -> str:
    clip = f"clip {values['clip_eps_low']}/{values['clip_eps_high']}"
    kl = "no KL" if values["kl_estimator"] == "none" else f"{values['kl_estimator']} KL in {values['kl_mode']}, beta {values['kl_coef']}"
    extras = [e for e, on in (("dynamic sampling", values["dynamic_sampling"]),
                              (f"truncation {values['truncation']}", values["truncation"] != "keep")) if on]
    group = f"G={sampling['group_size']}" if "group_size" in sampling else ""
    parts = [values["advantage_estimator"], values["loss_aggregation"], clip, kl, *extras, group]
    return ", ".join(p for p in parts if p)
