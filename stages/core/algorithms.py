"""RL objective pieces for the GRPO stage: small pure tensor functions chosen by name.

Shapes: B completions (groups of ``group_size`` are contiguous blocks), T completion tokens
(right-padded), ``mask`` (B, T) with 1 on real completion tokens. Nothing here holds state
except the KL controllers, and nothing branches on a config name: the loop looks each choice
up in a registry (``ADVANTAGE_ESTIMATORS``, ``LOSS_AGGREGATIONS``, ``KL_ESTIMATORS``,
``KL_PLACEMENTS``, ``TRUNCATIONS``, ``POLICY_LOSSES``, ``ROLLOUT_CORRECTIONS``).

Example (one GRPO step on one group of four):
    >>> import torch
    >>> ctx = AdvantageContext(rewards=torch.tensor([1.0, 0.8, 0.4, 0.2]), mask=torch.ones(4, 3), group_size=4)
    >>> [round(a, 2) for a in ADVANTAGE_ESTIMATORS["grpo"](ctx).advantages.tolist()]
    [1.26, 0.63, -0.63, -1.26]
"""
from __future__ import annotations

import abc
import dataclasses
import re
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
# One signature for every estimator: a context in, advantages (and critic returns) out
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class AdvantageContext:
    """Everything any advantage estimator may read. Estimators take what they need.

    ``rewards`` are the outcome rewards the advantages see (after any truncation shaping);
    ``kl_penalty`` is beta * KL_t per token when the KL sits in the reward (0 on padding), else
    None; ``values`` are the critic's values at rollout time (gae only).
    """

    rewards: torch.Tensor  # (B,)
    mask: torch.Tensor  # (B, T) loss mask
    group_size: int
    eps: float = 1e-6
    kl_penalty: torch.Tensor | None = None  # (B, T)
    old_logp: torch.Tensor | None = None  # (B, T)
    ref_logp: torch.Tensor | None = None  # (B, T)
    values: torch.Tensor | None = None  # (B, T)
    gamma: float = 1.0
    lam: float = 1.0
    whiten: bool = False

    def token_rewards(self) -> torch.Tensor:
        """(B, T): the outcome reward on the last real token, minus the per-token KL penalty."""
        token_rewards = outcome_to_token_rewards(self.rewards, self.mask)
        return token_rewards if self.kl_penalty is None else kl_penalised_rewards(token_rewards, self.kl_penalty, 1.0)

    def sequence_returns(self) -> torch.Tensor:
        """(B,): the undiscounted return of each completion, reward minus its summed KL penalty."""
        rewards = self.rewards.float()
        return rewards if self.kl_penalty is None else rewards - self.kl_penalty.sum(-1)


@dataclasses.dataclass(frozen=True)
class AdvantageResult:
    advantages: torch.Tensor  # (B,) one per completion, or (B, T) per token
    returns: torch.Tensor | None = None  # (B, T) regression targets for a critic


def _group_estimator(fn: Callable[..., torch.Tensor]) -> Callable[[AdvantageContext], AdvantageResult]:
    """Outcome estimators with a group baseline see one return per completion; a reward-side
    KL penalty is summed over the completion first (verl's GRPO does the same)."""

    def estimator(ctx: AdvantageContext) -> AdvantageResult:
        return AdvantageResult(fn(ctx.sequence_returns(), ctx.group_size, eps=ctx.eps))

    estimator.__doc__ = fn.__doc__
    return estimator


def reinforce_pp_estimator(ctx: AdvantageContext) -> AdvantageResult:
    """REINFORCE++ (Hu 2025, arXiv:2501.03262): with a per-token KL penalty in the reward, each token's
    return-to-go r - beta * sum_{i>=t} KL_i, whitened over every real token of the batch. With
    no per-token reward (KL in the loss, or none), the return is one number per completion and
    is whitened over the batch's completions.

    >>> ctx = AdvantageContext(torch.tensor([1.0, 0.0]), torch.ones(2, 2), group_size=1,
    ...                        kl_penalty=torch.tensor([[0.5, 0.0], [0.0, 0.0]]))
    >>> [round(a, 3) for a in reinforce_pp_estimator(ctx).advantages.view(-1).tolist()]
    [0.302, 1.508, -0.905, -0.905]
    """
    if ctx.kl_penalty is None:
        return AdvantageResult(reinforce_pp_advantages(ctx.rewards, ctx.group_size, eps=ctx.eps))
    _grouped(ctx.rewards, ctx.group_size)  # same shape check as the outcome form
    return AdvantageResult(reinforce_pp_token_advantages(ctx.token_rewards(), ctx.mask, ctx.gamma, eps=ctx.eps))


def gae_estimator(ctx: AdvantageContext) -> AdvantageResult:
    """PPO: GAE over per-token rewards (outcome on the last token, minus any KL penalty) with
    the critic's values; returns are the critic's targets. Optionally batch-whitened (verl).

    >>> ctx = AdvantageContext(torch.tensor([1.0]), torch.ones(1, 3), group_size=1, values=torch.full((1, 3), 0.5))
    >>> gae_estimator(ctx).advantages.tolist(), gae_estimator(ctx).returns.tolist()
    ([[0.5, 0.5, 0.5]], [[1.0, 1.0, 1.0]])
    """
    if ctx.values is None:
        raise ValueError("advantage_estimator 'gae' needs critic values in the context")
    values = ctx.values * ctx.mask  # (B, T)
    advantages, returns = gae_advantages(ctx.token_rewards(), values, ctx.mask, ctx.gamma, ctx.lam)
    if ctx.whiten:
        advantages = masked_whiten(advantages, ctx.mask)
    return AdvantageResult(advantages, returns)


AdvantageFn = Callable[[AdvantageContext], AdvantageResult]
ADVANTAGE_ESTIMATORS: dict[str, AdvantageFn] = {
    "grpo": _group_estimator(grpo_advantages),
    "dr_grpo": _group_estimator(dr_grpo_advantages),
    "rloo": _group_estimator(rloo_advantages),
    "reinforce_pp": reinforce_pp_estimator,
    "reinforce_pp_baseline": _group_estimator(reinforce_pp_baseline_advantages),
    "gae": gae_estimator,
}


# ---------------------------------------------------------------------------------------------
# Loss aggregation: (B, T) per-token losses -> scalar
# ---------------------------------------------------------------------------------------------


# Every aggregation is (sum of per-sequence or per-token terms) / a normaliser. ``normaliser``
# None divides by this batch's own count; a micro-batch passes the count of its whole minibatch
# (``stages.core.microbatch.loss_normaliser``) so that summing micro-batch losses gives exactly
# the minibatch loss, and accumulated gradients equal the unbatched ones.


def seq_mean_token_mean(per_token: torch.Tensor, mask: torch.Tensor, *, constant: float | None = None,
                        normaliser: float | None = None) -> torch.Tensor:
    """Original GRPO: mean over sequences of each sequence's token mean. Long completions get
    less weight per token. Sequences with no real token (e.g. masked truncations) are left out.
    ``normaliser``: the number of sequences with tokens (default: this batch's).

    >>> seq_mean_token_mean(torch.tensor([[1.0, 1.0, 1.0], [4.0, 0.0, 0.0]]), torch.tensor([[1, 1, 1], [1, 0, 0]]))
    tensor(2.5000)
    """
    del constant
    mask = mask.to(per_token.dtype)
    tokens_per_seq = mask.sum(dim=1)  # (B,)
    seq_means = (per_token * mask).sum(dim=1) / tokens_per_seq.clamp(min=1.0)  # (B,)
    has_tokens = (tokens_per_seq > 0).to(per_token.dtype)
    divisor = has_tokens.sum().clamp(min=1.0) if normaliser is None else normaliser
    return (seq_means * has_tokens).sum() / divisor


def token_mean(per_token: torch.Tensor, mask: torch.Tensor, *, constant: float | None = None,
               normaliser: float | None = None) -> torch.Tensor:
    """DAPO: mean over every real token of the batch; every token weighs the same.
    ``normaliser``: the number of real tokens (default: this batch's).

    >>> token_mean(torch.tensor([[1.0, 1.0, 1.0], [4.0, 0.0, 0.0]]), torch.tensor([[1, 1, 1], [1, 0, 0]]))
    tensor(1.7500)
    """
    del constant
    if normaliser is None:
        return masked_mean(per_token, mask)
    return (per_token * mask.to(per_token.dtype)).sum() / normaliser


def seq_mean_token_sum_norm(per_token: torch.Tensor, mask: torch.Tensor, *, constant: float | None = None,
                            normaliser: float | None = None) -> torch.Tensor:
    """Dr. GRPO: each sequence's token *sum* divided by a constant (the generation budget),
    averaged over sequences. No length normalisation, so no length bias. ``constant=None``
    uses T, the padded length; the loop should pass ``cfg.effective_loss_constant(max_new_tokens)``.
    ``normaliser``: the number of sequences (default: this batch's B).

    >>> seq_mean_token_sum_norm(torch.tensor([[1.0, 1.0, 1.0], [4.0, 0.0, 0.0]]),
    ...                         torch.tensor([[1, 1, 1], [1, 0, 0]]), constant=10.0)
    tensor(0.3500)
    """
    mask = mask.to(per_token.dtype)
    divisor = float(constant) if constant is not None else float(per_token.shape[1])
    if divisor <= 0:
        raise ValueError(f"loss constant must be > 0, got {divisor}")
    sums = (per_token * mask).sum(dim=1) / divisor  # (B,)
    return sums.mean() if normaliser is None else sums.sum() / normaliser


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


def kl_per_sequence(kl_per_token: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean over completions (with at least one real token) of each completion's summed KL:
    the unit of Ziegler et al.'s adaptive-KL target (nats per sequence, not per token).

    >>> kl_per_sequence(torch.tensor([[0.25, 0.5, 9.0], [0.25, 0.0, 0.0]]), torch.tensor([[1, 1, 0], [1, 0, 0]]))
    0.5
    """
    mask = mask.to(kl_per_token.dtype)
    has_tokens = (mask.sum(dim=1) > 0).to(kl_per_token.dtype)  # (B,)
    sums = (kl_per_token * mask).sum(dim=1)  # (B,)
    return ((sums * has_tokens).sum() / has_tokens.sum().clamp(min=1.0)).item()


def _kl_as_reward_penalty(old_logp, ref_logp, mask, estimator: KLFn, beta: float) -> torch.Tensor:
    return beta * estimator(old_logp, ref_logp) * mask.to(old_logp.dtype)  # (B, T), 0 on padding


def _kl_as_loss_term(logp, ref_logp, estimator: KLFn) -> torch.Tensor:
    return estimator(logp, ref_logp)  # (B, T); the loop adds beta * aggregate(...)


def _nothing(*args, **kwargs) -> None:
    del args, kwargs
    return None


@dataclasses.dataclass(frozen=True)
class KLPlacement:
    """Where the KL to the reference enters the objective (``kl_mode``).

    ``reward_penalty(old_logp, ref_logp, mask, estimator, beta)`` -> (B, T) beta * KL_t that is
    subtracted from the token rewards before the advantages, or None. ``loss_term(logp,
    ref_logp, estimator)`` -> (B, T) KL added to the loss as beta * aggregate(KL), or None.

    >>> KL_PLACEMENTS["reward"].reward_penalty(torch.tensor([[-1.0]]), torch.tensor([[-1.5]]), torch.ones(1, 1), kl_k1, 2.0)
    tensor([[1.]])
    >>> KL_PLACEMENTS["reward"].loss_term(torch.tensor([[-1.0]]), torch.tensor([[-1.5]]), kl_k1) is None
    True
    """

    reward_penalty: Callable[..., torch.Tensor | None]
    loss_term: Callable[..., torch.Tensor | None]
    description: str


KL_PLACEMENTS: dict[str, KLPlacement] = {
    "loss": KLPlacement(_nothing, _kl_as_loss_term, "beta * KL aggregated like the policy loss, added to the loss (GRPO)"),
    "reward": KLPlacement(_kl_as_reward_penalty, _nothing,
                          "beta * KL_t subtracted from each token's reward before the advantages (InstructGPT, PPO)"),
}


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


def gspo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_eps_low: float,
    clip_eps_high: float,
    dual_clip_c: float | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """GSPO (Zheng et al. 2025, arXiv:2507.18071; written in its GSPO-token form):
    one ratio per completion, s = (pi/pi_old)^(1/|y|) = exp(mean token log-ratio), clipped to
    [1 - eps_low, 1 + eps_high] (the paper: 3e-4 / 4e-4). Every token carries s's value and the
    gradient of its own log-prob, so the sequence-mean aggregation gives GSPO's gradient
    s * A * mean_t grad log pi. Returns the (B, T) loss and stats over real tokens.

    >>> logp = torch.log(torch.tensor([[0.5, 0.5]])); old = torch.log(torch.tensor([[0.25, 1.0]]))
    >>> loss, stats = gspo_loss(logp, old, torch.tensor([1.0]), torch.ones(1, 2), clip_eps_low=0.2, clip_eps_high=0.2)
    >>> [round(x, 4) for x in loss.view(-1).tolist()], stats["ratio_mean"]  # geometric mean of 2 and 0.5 is 1
    ([-1.0, -1.0], 1.0)
    """
    if dual_clip_c is not None:
        raise ValueError("dual_clip_c: not defined for the gspo policy loss; leave it None")
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(1)  # (B, 1)
    maskf = mask.to(logp.dtype)
    num_tokens = maskf.sum(dim=1).clamp(min=1.0)  # (B,)
    seq_log_ratio = (((logp - old_logp) * maskf).sum(dim=1) / num_tokens).clamp(-_MAX_LOG_RATIO, _MAX_LOG_RATIO)  # (B,)
    ratio = torch.exp(seq_log_ratio.detach().unsqueeze(1) + logp - logp.detach())  # (B, T), value s, grad of log pi_t
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_eps_low, 1.0 + clip_eps_high)
    loss = torch.maximum(unclipped, clipped) * maskf  # (B, T)
    with torch.no_grad():
        seq_ratio = torch.exp(seq_log_ratio)  # (B,)
        has_tokens = maskf.sum(dim=1) > 0
        stats = {
            "clip_frac": masked_mean((clipped > unclipped).to(logp.dtype), maskf).item(),
            "dual_clip_frac": 0.0,
            "ratio_mean": seq_ratio[has_tokens].mean().item() if has_tokens.any() else 1.0,
            "ratio_max": seq_ratio[has_tokens].max().item() if has_tokens.any() else 0.0,
            "approx_kl": masked_mean(kl_k3(logp, old_logp), maskf).item(),
        }
    return loss, stats


def cispo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_eps_low: float,
    clip_eps_high: float,
    dual_clip_c: float | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """CISPO (MiniMax-M1, arXiv:2506.13585, Sec. 3.1): -sg(clip(r, 1 - eps_low, 1 + eps_high)) * A
    * log pi per token. The weight is clipped and carries no gradient, so unlike the PPO clip no
    token ever loses its gradient; it is only down- or up-weighted. ``clip_eps_low`` 1.0 means no
    lower bound (MiniMax-M1's choice). At r = 1 the gradient is the plain -A grad log pi.

    >>> loss, stats = cispo_loss(torch.log(torch.tensor([[3.0]])), torch.zeros(1, 1), torch.tensor([2.0]),
    ...                          torch.ones(1, 1), clip_eps_low=1.0, clip_eps_high=1.0)
    >>> round(loss.item(), 4), stats["clip_frac"]  # weight clip(3, 0, 2) = 2: -2 * 2 * ln 3
    (-4.3944, 1.0)
    """
    if dual_clip_c is not None:
        raise ValueError("dual_clip_c: not defined for the cispo policy loss; leave it None")
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(1)  # (B, 1)
    maskf = mask.to(logp.dtype)
    ratio = torch.exp((logp - old_logp).clamp(-_MAX_LOG_RATIO, _MAX_LOG_RATIO)).detach()  # (B, T)
    weight = torch.clamp(ratio, 1.0 - clip_eps_low, 1.0 + clip_eps_high)  # (B, T), no gradient
    loss = -advantages * weight * logp * maskf  # (B, T)
    with torch.no_grad():
        stats = {
            "clip_frac": masked_mean((weight != ratio).to(logp.dtype), maskf).item(),
            "dual_clip_frac": 0.0,
            "ratio_mean": masked_mean(ratio, maskf).item(),
            "ratio_max": (ratio * maskf).max().item() if maskf.any() else 0.0,
            "approx_kl": masked_mean(kl_k3(logp, old_logp), maskf).item(),
        }
    return loss, stats


PolicyLossFn = Callable[..., tuple[torch.Tensor, dict[str, float]]]
# fn(logp, old_logp, advantages, mask, *, clip_eps_low, clip_eps_high, dual_clip_c) -> ((B, T), stats)
POLICY_LOSSES: dict[str, PolicyLossFn] = {"ppo_clip": policy_loss, "gspo": gspo_loss, "cispo": cispo_loss}


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_eps: float | None,
    aggregation: str = "token_mean",
    constant: float | None = None,
    normaliser: float | None = None,
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
    loss = LOSS_AGGREGATIONS[aggregation](per_token, mask, constant=constant, normaliser=normaliser)
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


def _overlong_reward_penalty(lengths, truncated, *, max_new_tokens, buffer_tokens, penalty_factor) -> torch.Tensor:
    del truncated
    return overlong_penalty(lengths, max_new_tokens, buffer_tokens, penalty_factor)


def _keep_mask(mask, truncated):
    del truncated
    return mask


@dataclasses.dataclass(frozen=True)
class TruncationHandling:
    """What happens to completions cut off at ``max_new_tokens`` (``truncation``).

    ``reward_penalty(lengths, truncated, *, max_new_tokens, buffer_tokens, penalty_factor)`` ->
    (B,) added to the rewards (the ones dynamic sampling and the advantages see), or None.
    ``loss_mask(mask, truncated)`` -> (B, T) the mask the loss uses.

    >>> TRUNCATIONS["mask"].loss_mask(torch.ones(2, 1), torch.tensor([False, True])).tolist()
    [[1.0], [0.0]]
    """

    reward_penalty: Callable[..., torch.Tensor | None]
    loss_mask: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    description: str


TRUNCATIONS: dict[str, TruncationHandling] = {
    "keep": TruncationHandling(_nothing, _keep_mask, "truncated completions are trained like the others"),
    "mask": TruncationHandling(_nothing, drop_truncated, "truncated completions leave the loss (DAPO overlong filtering)"),
    "overlong_penalty": TruncationHandling(_overlong_reward_penalty, _keep_mask,
                                           "reward ramps to -factor over the last buffer tokens (DAPO soft punishment)"),
}


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
# Rollout-vs-trainer mismatch: importance weights between the rollout engine's log-probs and the
# trainer's old log-probs for the same tokens. The engine samples from mu (other kernels, other
# precision); the objective assumes pi_old. rho_t = pi_old / mu per token; a sequence's rho is
# the product over its tokens.
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class MismatchCorrection:
    """Per-token ``weights`` (B, T) that multiply the policy loss (no gradient), a ``keep``
    mask (B, T) that takes tokens out of the loss entirely (every term, and its normaliser),
    and the fraction of real tokens the correction changed."""

    weights: torch.Tensor
    keep: torch.Tensor
    frac_corrected: float


def _log_ratios(old_logp: torch.Tensor, rollout_logp: torch.Tensor, mask: torch.Tensor):
    maskf = mask.to(old_logp.dtype)
    token_log_ratio = ((old_logp - rollout_logp) * maskf).clamp(-_MAX_LOG_RATIO, _MAX_LOG_RATIO)  # (B, T)
    seq_log_ratio = token_log_ratio.sum(dim=1).clamp(-_MAX_LOG_RATIO, _MAX_LOG_RATIO)  # (B,) log of the product
    return maskf, token_log_ratio, seq_log_ratio


def _fraction(changed: torch.Tensor, maskf: torch.Tensor) -> float:
    return masked_mean(changed.to(maskf.dtype), maskf).item()


def no_correction(old_logp, rollout_logp, mask, *, cap: float, low: float, high: float) -> MismatchCorrection:
    """Trust the rollout: weights 1, nothing masked."""
    del rollout_logp, mask, cap, low, high
    return MismatchCorrection(torch.ones_like(old_logp), torch.ones_like(old_logp), 0.0)


def token_tis(old_logp, rollout_logp, mask, *, cap: float, low: float, high: float) -> MismatchCorrection:
    """Truncated IS per token (Yao et al. 2025, "Your efficient RL framework secretly brings you
    off-policy RL training"): w_t = min(rho_t, cap).

    >>> c = token_tis(torch.log(torch.tensor([[0.9, 0.5]])), torch.log(torch.tensor([[0.3, 0.5]])), torch.ones(1, 2),
    ...               cap=2.0, low=0.5, high=2.0)
    >>> [round(w, 4) for w in c.weights.view(-1).tolist()], c.frac_corrected  # rho = [3, 1]
    ([2.0, 1.0], 0.5)
    """
    del low, high
    maskf, token_log_ratio, _ = _log_ratios(old_logp, rollout_logp, mask)
    ratio = torch.exp(token_log_ratio)  # (B, T)
    return MismatchCorrection(torch.clamp(ratio, max=cap), torch.ones_like(ratio), _fraction(ratio > cap, maskf))


def sequence_tis(old_logp, rollout_logp, mask, *, cap: float, low: float, high: float) -> MismatchCorrection:
    """Truncated IS per sequence (Liu et al. 2025, "When speed kills stability"): every token of
    a completion gets w = min(prod_t rho_t, cap).

    >>> c = sequence_tis(torch.log(torch.tensor([[0.9, 0.5]])), torch.log(torch.tensor([[0.3, 0.5]])), torch.ones(1, 2),
    ...                  cap=2.0, low=0.5, high=2.0)
    >>> [round(w, 4) for w in c.weights.view(-1).tolist()]  # rho_seq = 3 * 1 = 3
    [2.0, 2.0]
    """
    del low, high
    maskf, _, seq_log_ratio = _log_ratios(old_logp, rollout_logp, mask)
    seq_ratio = torch.exp(seq_log_ratio).unsqueeze(1).expand_as(old_logp)  # (B, T)
    return MismatchCorrection(torch.clamp(seq_ratio, max=cap), torch.ones_like(seq_ratio), _fraction(seq_ratio > cap, maskf))


def token_mis(old_logp, rollout_logp, mask, *, cap: float, low: float, high: float) -> MismatchCorrection:
    """Masked IS per token (rejection): tokens with rho_t outside [low, high] leave the loss;
    the others keep weight 1.

    >>> c = token_mis(torch.log(torch.tensor([[0.9, 0.5]])), torch.log(torch.tensor([[0.3, 0.5]])), torch.ones(1, 2),
    ...               cap=2.0, low=0.5, high=2.0)
    >>> c.keep.tolist(), c.frac_corrected
    ([[0.0, 1.0]], 0.5)
    """
    del cap
    maskf, token_log_ratio, _ = _log_ratios(old_logp, rollout_logp, mask)
    ratio = torch.exp(token_log_ratio)
    inside = (ratio >= low) & (ratio <= high)  # (B, T)
    return MismatchCorrection(torch.ones_like(ratio), inside.to(ratio.dtype), _fraction(~inside, maskf))


def sequence_mis(old_logp, rollout_logp, mask, *, cap: float, low: float, high: float) -> MismatchCorrection:
    """Masked IS per sequence (Liu et al. 2025, Seq-MIS as rejection): completions whose
    prod_t rho_t lies outside [low, high] leave the loss whole.

    >>> c = sequence_mis(torch.log(torch.tensor([[0.9, 0.5], [0.5, 0.5]])), torch.log(torch.tensor([[0.3, 0.5], [0.5, 0.5]])),
    ...                  torch.ones(2, 2), cap=2.0, low=0.5, high=2.0)
    >>> c.keep.tolist()
    [[0.0, 0.0], [1.0, 1.0]]
    """
    del cap
    maskf, _, seq_log_ratio = _log_ratios(old_logp, rollout_logp, mask)
    seq_ratio = torch.exp(seq_log_ratio).unsqueeze(1).expand_as(old_logp)  # (B, T)
    inside = (seq_ratio >= low) & (seq_ratio <= high)
    return MismatchCorrection(torch.ones_like(seq_ratio), inside.to(seq_ratio.dtype), _fraction(~inside, maskf))


def icepop(old_logp, rollout_logp, mask, *, cap: float, low: float, high: float) -> MismatchCorrection:
    """IcePop (Ling team 2025, "Small leak can sink a great ship"): two-sided token masking,
    w_t = rho_t inside [low, high] (IcePop: [0.5, 5]) and 0 outside. A masked token still counts
    in the normaliser (the paper's 1/|y| is over all tokens); it only loses its gradient.

    >>> c = icepop(torch.log(torch.tensor([[0.9, 0.6]])), torch.log(torch.tensor([[0.1, 0.5]])), torch.ones(1, 2),
    ...            cap=2.0, low=0.5, high=5.0)
    >>> [round(w, 4) for w in c.weights.view(-1).tolist()], c.keep.tolist()  # rho = [9, 1.2]
    ([0.0, 1.2], [[1.0, 1.0]])
    """
    del cap
    maskf, token_log_ratio, _ = _log_ratios(old_logp, rollout_logp, mask)
    ratio = torch.exp(token_log_ratio)
    inside = (ratio >= low) & (ratio <= high)
    return MismatchCorrection(ratio * inside.to(ratio.dtype), torch.ones_like(ratio), _fraction(~inside, maskf))


CorrectionFn = Callable[..., MismatchCorrection]
ROLLOUT_CORRECTIONS: dict[str, CorrectionFn] = {
    "none": no_correction,
    "tis": token_tis,
    "seq_tis": sequence_tis,
    "mis": token_mis,
    "seq_mis": sequence_mis,
    "icepop": icepop,
}


def rollout_ratio_stats(old_logp: torch.Tensor, rollout_logp: torch.Tensor, mask: torch.Tensor, *,
                        cap: float, low: float, high: float) -> dict[str, float]:
    """The raw trainer/rollout ratio rho_t over real tokens, logged every step whatever the
    correction: mean, min, max, and the fractions of tokens above ``cap`` / outside [low, high].

    >>> stats = rollout_ratio_stats(torch.log(torch.tensor([[0.9, 0.5]])), torch.log(torch.tensor([[0.3, 0.5]])),
    ...                             torch.ones(1, 2), cap=2.0, low=0.5, high=2.0)
    >>> [round(stats[k], 4) for k in ("rollout/ratio_mean", "rollout/ratio_min", "rollout/ratio_max")]
    [2.0, 1.0, 3.0]
    """
    maskf, token_log_ratio, seq_log_ratio = _log_ratios(old_logp, rollout_logp, mask)
    ratio = torch.exp(token_log_ratio)  # (B, T)
    real = maskf.bool()
    if not real.any():
        return {}
    has_tokens = real.any(dim=1)
    return {
        "rollout/ratio_mean": ratio[real].mean().item(),
        "rollout/ratio_min": ratio[real].min().item(),
        "rollout/ratio_max": ratio[real].max().item(),
        "rollout/seq_ratio_mean": torch.exp(seq_log_ratio[has_tokens]).mean().item(),
        "rollout/frac_ratio_above_cap": _fraction(ratio > cap, maskf),
        "rollout/frac_ratio_outside_band": _fraction((ratio < low) | (ratio > high), maskf),
    }


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

    KL and target are per *sequence* (nats summed over a completion, averaged over completions),
    as in the paper; the loop passes ``kl_per_sequence``.

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
    """Fixed beta = kl_coef, adaptive when kl_target_nats_per_seq is set, 0 without a KL term."""
    if cfg.kl_estimator == "none":
        return FixedKLController(0.0)
    if cfg.kl_target_nats_per_seq is not None:
        return AdaptiveKLController(cfg.kl_coef, cfg.kl_target_nats_per_seq, cfg.kl_horizon)
    return FixedKLController(cfg.kl_coef)


# ---------------------------------------------------------------------------------------------
# Listing (``r1zero algorithms``)
# ---------------------------------------------------------------------------------------------

ESTIMATOR_DESCRIPTIONS = {
    "grpo": "group z-score (r - mean_g) / (std_g + eps), population std (DeepSeekMath)",
    "dr_grpo": "group mean baseline r - mean_g, no std division (Dr. GRPO)",
    "rloo": "leave-one-out baseline: r_i - mean of the other G-1 rewards (RLOO)",
    "reinforce_pp": "no group baseline; return-to-go with per-token KL penalty, whitened over the batch (REINFORCE++)",
    "reinforce_pp_baseline": "group mean subtracted, then whitened over the global batch (REINFORCE++-baseline)",
    "gae": "PPO: learned critic, per-token rewards, TD errors, GAE(gamma, lambda), clipped value loss",
}
AGGREGATION_DESCRIPTIONS = {
    "seq_mean_token_mean": "mean over sequences of per-sequence token means (original GRPO)",
    "token_mean": "mean over all real tokens in the batch (DAPO token-level loss)",
    "seq_mean_token_sum_norm": "per-sequence token sums / a constant, mean over sequences (Dr. GRPO)",
}
POLICY_LOSS_DESCRIPTIONS = {
    "ppo_clip": "-min(r A, clip(r, 1-eps_low, 1+eps_high) A) per token; optional dual clip (PPO, GRPO, DAPO)",
    "gspo": "sequence ratio (geometric mean of token ratios), clipped per sequence (GSPO, eps 3e-4/4e-4)",
    "cispo": "-sg(clip(r, 1-eps_low, 1+eps_high)) A log pi: clipped IS weight, no token loses its gradient (CISPO)",
}
CORRECTION_DESCRIPTIONS = {
    "none": "no correction; the raw trainer/rollout ratio is still logged",
    "tis": "token weight min(rho_t, cap) (truncated IS)",
    "seq_tis": "sequence weight min(prod rho_t, cap) (sequence-level truncated IS)",
    "mis": "tokens with rho_t outside [low, high] leave the loss (masked IS)",
    "seq_mis": "completions with prod rho_t outside [low, high] leave the loss (sequence-level masked IS)",
    "icepop": "token weight rho_t inside [low, high], 0 outside (IcePop two-sided masking)",
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
    from pipeline.algorithm_config import PRESET_SAMPLING, PRESET_SOURCES, PRESETS, SOURCE_LEGEND

    lines = ["Advantage estimators:"]
    lines += [f"  {name:<24}{text}" for name, text in ESTIMATOR_DESCRIPTIONS.items()]
    lines.append("Loss aggregations:")
    lines += [f"  {name:<24}{text}" for name, text in AGGREGATION_DESCRIPTIONS.items()]
    lines.append("Policy losses (policy_loss):")
    lines += [f"  {name:<24}{text}" for name, text in POLICY_LOSS_DESCRIPTIONS.items()]
    lines.append("KL estimators (kl_estimator):")
    lines += [f"  {name:<24}{text}" for name, text in KL_DESCRIPTIONS.items()]
    lines.append("KL placement (kl_mode):")
    lines += [f"  {name:<24}{placement.description}" for name, placement in KL_PLACEMENTS.items()]
    lines.append("Truncation (truncation):")
    lines += [f"  {name:<24}{handling.description}" for name, handling in TRUNCATIONS.items()]
    lines.append("Rollout-mismatch correction (rollout_correction; rho_t = pi_old / pi_rollout):")
    lines += [f"  {name:<24}{text}" for name, text in CORRECTION_DESCRIPTIONS.items()]
    lines.append("Presets:")
    for name, values in PRESETS.items():
        lines.append(f"  {name:<24}{_preset_summary(values, PRESET_SAMPLING.get(name, {}))}")
        cited = " ".join(PRESET_SOURCES[name].values())
        keys = [key for key in SOURCE_LEGEND if key not in ("inert", "n/s") and re.search(rf"(^|[\s(;]){re.escape(key)}\b", cited)]
        lines.append(f"  {'':<24}sources: {', '.join(keys)}")
    lines.append("Sources:")
    lines += [f"  {key:<24}{text[:130]}" for key, text in SOURCE_LEGEND.items()]
    return "\n".join(lines)


def _preset_summary(values: dict, sampling: dict) -> str:
    clip = f"clip {values['clip_eps_low']}/{values['clip_eps_high']}"
    kl = "no KL" if values["kl_estimator"] == "none" else f"{values['kl_estimator']} KL in {values['kl_mode']}, beta {values['kl_coef']}"
    extras = [e for e, on in (("dynamic sampling", values["dynamic_sampling"]),
                              (f"truncation {values['truncation']}", values["truncation"] != "keep")) if on]
    group = f"G={sampling['group_size']}" if "group_size" in sampling else ""
    loss = values.get("policy_loss", "ppo_clip")
    correction = values.get("rollout_correction", "none")
    extras += [f"{correction} correction"] if correction != "none" else []
    parts = [values["advantage_estimator"], loss, values["loss_aggregation"], clip, kl, *extras, group]
    return ", ".join(p for p in parts if p)
