"""RL objective settings: advantage estimator, loss aggregation, clipping, KL, presets, guards.

The GRPO stage reads one ``AlgorithmConfig``; every choice in it is a name looked up in a registry
in ``stages/core/algorithms.py`` (this module imports nothing from ``stages/``). A named preset
fills in the published values of one recipe; fields given explicitly override the preset:

    >>> cfg = resolve_algorithm({"preset": "dapo", "clip_eps_high": 0.3})
    >>> cfg.loss_aggregation, cfg.clip_eps_low, cfg.clip_eps_high
    ('token_mean', 0.2, 0.3)

Where each preset value comes from is recorded beside it in ``PRESET_SOURCES``;
``presets_markdown_table()`` renders both as the table in ``docs/algorithms.md``.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

AdvantageEstimatorName = Literal["grpo", "dr_grpo", "rloo", "reinforce_pp", "reinforce_pp_baseline", "gae"]
LossAggregationName = Literal["seq_mean_token_mean", "token_mean", "seq_mean_token_sum_norm"]
KLEstimatorName = Literal["none", "k1", "k2", "k3"]
PolicyLossName = Literal["ppo_clip", "gspo", "cispo"]
RolloutCorrectionName = Literal["none", "tis", "seq_tis", "mis", "seq_mis", "icepop"]


class AlgorithmConfig(BaseModel):
    """Every knob of the RL objective. Sampling settings (temperature, lr, batch sizes) live in
    the GRPO stage config; ``PRESET_SAMPLING`` records the published ones for reference."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    preset: str | None = None  # when set, the preset's values are the defaults

    # Advantages. Groups are contiguous blocks of group_size completions of one prompt.
    advantage_estimator: AdvantageEstimatorName = "grpo"
    advantage_eps: float = Field(1e-6, gt=0)  # added to the std before dividing (z-scores)
    whiten_advantages: bool = False  # batch-whiten token advantages after GAE (verl's PPO does)

    # Loss aggregation over (B, T) per-token losses.
    loss_aggregation: LossAggregationName = "seq_mean_token_mean"
    loss_constant: float | None = Field(None, gt=0)  # Dr. GRPO's normaliser; None -> max_new_tokens

    # Policy loss: the PPO clip, GSPO's sequence ratio, or CISPO's clipped IS weight. The clip
    # range is [1 - eps_low, 1 + eps_high] for all three. eps_high > eps_low is DAPO's
    # clip-higher; eps_low 1.0 removes the lower bound (CISPO); dual_clip_c caps negative-A loss.
    policy_loss: PolicyLossName = "ppo_clip"
    clip_eps_low: float = Field(0.2, gt=0, le=1)
    clip_eps_high: float = Field(0.2, gt=0)
    dual_clip_c: float | None = Field(None, gt=1)

    # KL to the reference model.
    kl_estimator: KLEstimatorName = "k3"
    kl_mode: Literal["loss", "reward"] = "loss"  # a loss term, or a per-token reward penalty
    kl_coef: float = Field(0.04, ge=0)  # beta (the initial beta when adaptive)
    # Adaptive beta (Ziegler et al. 2019) when set: the target KL per completion (summed over its
    # tokens, in nats), the paper's unit -- not the per-token mean the ``kl`` metric shows.
    kl_target_nats_per_seq: float | None = Field(None, gt=0)
    kl_horizon: int = Field(10000, gt=0)  # samples over which beta may change by up to 20 %
    ref_refresh_steps: int | None = Field(None, gt=0)  # copy the policy into the reference every N

    entropy_coef: float = Field(0.0, ge=0)  # loss -= entropy_coef * entropy

    # Optimisation over one rollout batch: num_epochs passes, each in num_minibatches steps.
    num_epochs: int = Field(1, ge=1)
    num_minibatches: int = Field(1, ge=1)

    # DAPO dynamic sampling: drop groups with equal rewards, resample until the batch is full.
    dynamic_sampling: bool = False
    max_sampling_rounds: int = Field(3, ge=1)  # generation rounds per step, the first included

    # Rollout-vs-trainer mismatch (rho_t = pi_old / pi_rollout per token, from the backend's
    # log-probs): how to correct for it. The raw ratio is logged whatever is chosen here.
    rollout_correction: RolloutCorrectionName = "none"
    rollout_is_cap: float = Field(2.0, gt=0)  # tis / seq_tis: weights are min(rho, cap)
    rollout_ratio_low: float = Field(0.5, gt=0)  # mis / seq_mis / icepop: keep rho in [low, high]
    rollout_ratio_high: float = Field(5.0, gt=0)

    # Completions cut off at max_new_tokens.
    truncation: Literal["keep", "mask", "overlong_penalty"] = "keep"
    overlong_buffer_tokens: int = Field(0, ge=0)  # DAPO L_cache: the penalty ramps over these
    overlong_penalty_factor: float = Field(1.0, ge=0)  # penalty at the length limit

    # gae only: per-token rewards, a learned critic, clipped value loss.
    gamma: float = Field(1.0, ge=0, le=1)
    gae_lambda: float = Field(1.0, ge=0, le=1)
    critic: Literal["value_head", "separate"] = "value_head"
    value_coef: float = Field(0.5, ge=0)  # weight of the value loss (value_head: in the policy loss)
    value_clip_eps: float | None = Field(0.2, gt=0)  # None: unclipped value loss
    critic_lr: float | None = Field(None, gt=0)  # None: the policy's lr

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, raw: Any) -> Any:
        """Preset values first, explicit fields on top (so an override always wins)."""
        if not isinstance(raw, dict) or raw.get("preset") is None:
            return raw
        name = raw["preset"]
        if name not in PRESETS:
            raise ValueError(f"preset: unknown preset {name!r}; known presets: {', '.join(sorted(PRESETS))}")
        return {**PRESETS[name], **raw}

    @model_validator(mode="after")
    def _check_combinations(self) -> "AlgorithmConfig":
        if self.truncation == "overlong_penalty" and self.overlong_buffer_tokens <= 0:
            raise ValueError(
                "overlong_buffer_tokens: must be > 0 when truncation='overlong_penalty' "
                "(DAPO uses 4096 of a 20480-token limit); or set truncation to 'keep' or 'mask'"
            )
        if self.kl_target_nats_per_seq is not None and self.kl_estimator == "none":
            raise ValueError("kl_target_nats_per_seq: adaptive KL needs a kl_estimator (k1, k2 or k3), not 'none'")
        if self.dual_clip_c is not None and self.policy_loss != "ppo_clip":
            raise ValueError(f"dual_clip_c: only defined for policy_loss 'ppo_clip', not {self.policy_loss!r}; leave it None")
        if not self.rollout_ratio_low < 1.0 < self.rollout_ratio_high:
            raise ValueError(f"rollout_ratio_low / rollout_ratio_high: need low < 1 < high (IcePop uses 0.5 and 5.0), "
                             f"got {self.rollout_ratio_low} and {self.rollout_ratio_high}")
        if self.rollout_is_cap < 1.0:
            raise ValueError(f"rollout_is_cap: {self.rollout_is_cap} would down-weight on-policy tokens (rho = 1); "
                             "use a cap >= 1 (TIS uses 2)")
        if self.ref_refresh_steps is not None and self.kl_estimator == "none":
            raise ValueError("ref_refresh_steps: there is no reference model when kl_estimator='none'")
        if self.clip_eps_low < 1.0 and self.clip_eps_high < self.clip_eps_low * 0.5:  # 1.0: no lower bound (CISPO)
            # Allowed by the maths but almost surely a typo (e.g. 0.028 for 0.28).
            raise ValueError(
                f"clip_eps_high: {self.clip_eps_high} is less than half of clip_eps_low "
                f"({self.clip_eps_low}); DAPO's clip-higher uses eps_high >= eps_low (0.28 vs 0.2)"
            )
        return self

    @property
    def uses_reference(self) -> bool:
        """True when a reference model must be kept (some KL term is active)."""
        return self.kl_estimator != "none" and (self.kl_coef > 0 or self.kl_target_nats_per_seq is not None)

    @property
    def uses_critic(self) -> bool:
        return self.advantage_estimator == "gae"

    @property
    def old_logprobs_from_update(self) -> bool:
        """True when the update's own first forward can serve as the old log-probs: one epoch of
        one minibatch, and nothing needs them before the update (a reward-side KL, a critic, a
        mismatch correction all do). Saves one forward pass per step."""
        return (self.num_epochs == 1 and self.num_minibatches == 1 and self.kl_mode == "loss"
                and not self.uses_critic and self.rollout_correction == "none")

    def effective_loss_constant(self, max_new_tokens: int) -> float:
        """Dr. GRPO's normaliser: ``loss_constant``, or the generation budget when unset.

        >>> AlgorithmConfig(preset="dr_grpo").effective_loss_constant(3000)
        3000.0
        """
        return float(self.loss_constant if self.loss_constant is not None else max_new_tokens)


def resolve_algorithm(raw: dict | None) -> AlgorithmConfig:
    """Validate a raw mapping (e.g. the ``algorithm:`` block of a YAML config).

    The preset (if any) supplies defaults; every other key overrides it. Errors name the
    field and what is allowed.

    >>> resolve_algorithm({"preset": "nano_aha_moment"}).kl_coef
    0.001
    >>> resolve_algorithm({"preset": "ppo2"})
    Traceback (most recent call last):
    ...
    ValueError: preset: unknown preset 'ppo2'; known presets: cispo, dapo, deepseekmath_grpo, dr_grpo, gspo, nano_aha_moment, tinyzero_ppo
    """
    raw = dict(raw or {})
    name = raw.get("preset")
    if name is not None and name not in PRESETS:
        raise ValueError(f"preset: unknown preset {name!r}; known presets: {', '.join(sorted(PRESETS))}")
    try:
        return AlgorithmConfig.model_validate(raw)
    except ValidationError as err:
        raise ValueError(_readable_errors(err)) from None


def _readable_errors(err: ValidationError) -> str:
    lines = ["invalid algorithm config:"]
    for item in err.errors():
        field = ".".join(str(p) for p in item["loc"]) or "(config)"
        lines.append(f"  {field}: {item['msg']} (got {item.get('input')!r})")
    return "\n".join(lines)


class GuardConfig(BaseModel):
    """When ``TrainingGuards`` (stages/core/guards.py) warns, and when it stops the run.

    Each condition warns on every step it holds and stops the run once it has held for
    ``patience_steps`` consecutive steps. A metric missing from a step's record is not checked.
    """

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    patience_steps: int = Field(5, ge=1)
    # frac_reward_zero_std >= this: (nearly) every group has equal rewards, so no advantages.
    max_frac_reward_zero_std: float = Field(1.0, gt=0, le=1)
    # reward/std (over the whole batch) <= this: the reward is constant, e.g. always 0.
    min_batch_reward_std: float = Field(1e-6, ge=0)
    # completions/clipped_ratio >= this: nearly every completion hit max_new_tokens.
    max_clipped_ratio: float = Field(0.95, gt=0, le=1)
    # kl above this: the policy runs away from the reference.
    max_kl: float = Field(1.0, gt=0)
    # clip_frac above this: updates far outside the trust region.
    max_clip_frac: float = Field(0.5, gt=0, le=1)
    # rollout/logprob_abs_diff above this (nats per token): the sampler's weights are stale.
    max_logprob_abs_diff: float = Field(0.5, gt=0)


# --------------------------------------------------------------------------------------------
# Presets. Every field of AlgorithmConfig (except ``preset``) is set, so that a preset is the
# whole recipe and not "the published values plus whatever our defaults are today".
# Sources (keys into SOURCE_LEGEND) are recorded per value in PRESET_SOURCES.
# --------------------------------------------------------------------------------------------

_GAE_INERT = {  # gae-only fields for presets without a critic (values unused)
    "gamma": 1.0,
    "gae_lambda": 1.0,
    "critic": "value_head",
    "value_coef": 0.5,
    "value_clip_eps": 0.2,
    "critic_lr": None,
    "whiten_advantages": False,
}
_PPO_CLIP = {"policy_loss": "ppo_clip"}
_NO_CORRECTION = {  # recipes that predate rollout-mismatch correction (the values are the defaults)
    "rollout_correction": "none",
    "rollout_is_cap": 2.0,
    "rollout_ratio_low": 0.5,
    "rollout_ratio_high": 5.0,
}

PRESETS: dict[str, dict[str, Any]] = {
    "deepseekmath_grpo": {
        "advantage_estimator": "grpo",
        "advantage_eps": 1e-6,
        "loss_aggregation": "seq_mean_token_mean",
        "loss_constant": None,
        "clip_eps_low": 0.2,
        "clip_eps_high": 0.2,
        "dual_clip_c": None,
        "kl_estimator": "k3",
        "kl_mode": "loss",
        "kl_coef": 0.04,
        "kl_target_nats_per_seq": None,
        "kl_horizon": 10000,
        "ref_refresh_steps": None,
        "entropy_coef": 0.0,
        "num_epochs": 1,
        "num_minibatches": 1,
        "dynamic_sampling": False,
        "max_sampling_rounds": 3,
        "truncation": "keep",
        "overlong_buffer_tokens": 0,
        "overlong_penalty_factor": 1.0,
        **_GAE_INERT,
        **_PPO_CLIP,
        **_NO_CORRECTION,
    },
    "dr_grpo": {
        "advantage_estimator": "dr_grpo",
        "advantage_eps": 1e-6,
        "loss_aggregation": "seq_mean_token_sum_norm",
        "loss_constant": None,
        "clip_eps_low": 0.2,
        "clip_eps_high": 0.2,
        "dual_clip_c": None,
        "kl_estimator": "none",
        "kl_mode": "loss",
        "kl_coef": 0.0,
        "kl_target_nats_per_seq": None,
        "kl_horizon": 10000,
        "ref_refresh_steps": None,
        "entropy_coef": 0.0,
        "num_epochs": 1,
        "num_minibatches": 8,
        "dynamic_sampling": False,
        "max_sampling_rounds": 3,
        "truncation": "keep",
        "overlong_buffer_tokens": 0,
        "overlong_penalty_factor": 1.0,
        **_GAE_INERT,
        **_PPO_CLIP,
        **_NO_CORRECTION,
    },
    "dapo": {
        "advantage_estimator": "grpo",
        "advantage_eps": 1e-6,
        "loss_aggregation": "token_mean",
        "loss_constant": None,
        "clip_eps_low": 0.2,
        "clip_eps_high": 0.28,
        "dual_clip_c": None,
        "kl_estimator": "none",
        "kl_mode": "loss",
        "kl_coef": 0.0,
        "kl_target_nats_per_seq": None,
        "kl_horizon": 10000,
        "ref_refresh_steps": None,
        "entropy_coef": 0.0,
        "num_epochs": 1,
        "num_minibatches": 16,
        "dynamic_sampling": True,
        "max_sampling_rounds": 10,
        "truncation": "overlong_penalty",
        "overlong_buffer_tokens": 4096,
        "overlong_penalty_factor": 1.0,
        **_GAE_INERT,
        **_PPO_CLIP,
        **_NO_CORRECTION,
    },
    "tinyzero_ppo": {
        "advantage_estimator": "gae",
        "advantage_eps": 1e-6,
        "whiten_advantages": True,
        "loss_aggregation": "token_mean",
        "loss_constant": None,
        "clip_eps_low": 0.2,
        "clip_eps_high": 0.2,
        "dual_clip_c": None,
        "kl_estimator": "k1",
        "kl_mode": "reward",
        "kl_coef": 0.001,
        "kl_target_nats_per_seq": None,
        "kl_horizon": 10000,
        "ref_refresh_steps": None,
        "entropy_coef": 0.001,
        "num_epochs": 1,
        "num_minibatches": 2,
        "dynamic_sampling": False,
        "max_sampling_rounds": 3,
        "truncation": "keep",
        "overlong_buffer_tokens": 0,
        "overlong_penalty_factor": 1.0,
        "gamma": 1.0,
        "gae_lambda": 1.0,
        "critic": "separate",
        "value_coef": 1.0,
        "value_clip_eps": 0.5,
        "critic_lr": 1e-5,
        **_PPO_CLIP,
        **_NO_CORRECTION,
    },
    "nano_aha_moment": {
        "advantage_estimator": "grpo",
        "advantage_eps": 1e-4,
        "loss_aggregation": "token_mean",
        "loss_constant": None,
        "clip_eps_low": 0.2,
        "clip_eps_high": 0.2,
        "dual_clip_c": None,
        "kl_estimator": "k3",
        "kl_mode": "loss",
        "kl_coef": 0.001,
        "kl_target_nats_per_seq": None,
        "kl_horizon": 10000,
        "ref_refresh_steps": None,
        "entropy_coef": 0.0,
        "num_epochs": 1,
        "num_minibatches": 1,
        "dynamic_sampling": False,
        "max_sampling_rounds": 3,
        "truncation": "keep",
        "overlong_buffer_tokens": 0,
        "overlong_penalty_factor": 1.0,
        **_GAE_INERT,
        **_PPO_CLIP,
        **_NO_CORRECTION,
    },
    "gspo": {
        "advantage_estimator": "grpo",
        "advantage_eps": 1e-6,
        "loss_aggregation": "seq_mean_token_mean",
        "loss_constant": None,
        "policy_loss": "gspo",
        "clip_eps_low": 3e-4,
        "clip_eps_high": 4e-4,
        "dual_clip_c": None,
        "kl_estimator": "none",
        "kl_mode": "loss",
        "kl_coef": 0.0,
        "kl_target_nats_per_seq": None,
        "kl_horizon": 10000,
        "ref_refresh_steps": None,
        "entropy_coef": 0.0,
        "num_epochs": 1,
        "num_minibatches": 4,
        "dynamic_sampling": False,
        "max_sampling_rounds": 3,
        "truncation": "keep",
        "overlong_buffer_tokens": 0,
        "overlong_penalty_factor": 1.0,
        **_GAE_INERT,
        **_NO_CORRECTION,
    },
    "cispo": {
        "advantage_estimator": "grpo",
        "advantage_eps": 1e-6,
        "loss_aggregation": "token_mean",
        "loss_constant": None,
        "policy_loss": "cispo",
        "clip_eps_low": 1.0,
        "clip_eps_high": 5.0,
        "dual_clip_c": None,
        "kl_estimator": "none",
        "kl_mode": "loss",
        "kl_coef": 0.0,
        "kl_target_nats_per_seq": None,
        "kl_horizon": 10000,
        "ref_refresh_steps": None,
        "entropy_coef": 0.0,
        "num_epochs": 1,
        "num_minibatches": 1,
        "dynamic_sampling": False,
        "max_sampling_rounds": 3,
        "truncation": "keep",
        "overlong_buffer_tokens": 0,
        "overlong_penalty_factor": 1.0,
        **_GAE_INERT,
        **_NO_CORRECTION,
    },
}

# Published sampling / optimiser settings of each recipe, for documentation and for the GRPO
# stage config's presets. None: not stated in the source.
PRESET_SAMPLING: dict[str, dict[str, Any]] = {
    "deepseekmath_grpo": {
        "group_size": 64, "temperature": None, "max_new_tokens": 1024, "lr": 1e-6,
        "train_batch_size": 1024, "base_model": "DeepSeekMath-Instruct 7B",
    },
    "dr_grpo": {
        "group_size": 8, "temperature": 1.0, "top_p": 1.0, "max_new_tokens": 3000, "lr": 1e-6,
        "lr_schedule": "constant", "prompts_per_rollout": 128, "train_batch_size": 128,
        "base_model": "Qwen2.5-Math-1.5B / 7B",
    },
    "dapo": {
        "group_size": 16, "temperature": 1.0, "top_p": 1.0, "max_new_tokens": 20480, "lr": 1e-6,
        "lr_warmup_steps": 10, "weight_decay": 0.1, "grad_clip": 1.0,
        "prompts_per_step": 512, "prompts_per_generation_round": 1536, "prompts_per_minibatch": 32,
        "base_model": "Qwen2.5-32B",
    },
    "tinyzero_ppo": {
        "group_size": 1, "temperature": 1.0, "top_p": 1.0, "max_new_tokens": 1024, "lr": 1e-6,
        "prompts_per_step": 256, "prompts_per_minibatch": 128, "grad_clip": 1.0,
        "base_model": "Qwen2.5-3B",
    },
    "nano_aha_moment": {
        "group_size": 4, "temperature": 1.0, "top_p": 1.0, "max_new_tokens": 1024, "lr": 1e-6,
        "episodes_per_step": 64, "grad_clip": 1.0, "base_model": "Qwen2.5-3B",
    },
    "gspo": {"base_model": "Qwen3-30B-A3B-Base (cold-start fine-tuned)"},
    "cispo": {"base_model": "MiniMax-Text-01 (MiniMax-M1)"},
}

PRESET_SAMPLING_SOURCES: dict[str, str] = {
    "deepseekmath_grpo": "DSM Sec. 4.2 (temperature not stated)",
    "dr_grpo": "DRG README train command (Qwen2.5-Math-1.5B, 8 GPUs)",
    "dapo": "DAPO-sh; DAPO Sec. 4.1",
    "tinyzero_ppo": "TZ-sh; TZ-yaml (temperature, top_p, grad_clip)",
    "nano_aha_moment": "NAM constants and DeepSpeed config",
    "gspo": "GSPO Sec. 5.1 (sampling settings not stated)",
    "cispo": "M1 Sec. 4 (sampling settings of the full run not restated here)",
}

SOURCE_LEGEND: dict[str, str] = {
    "DSM": "Shao et al. 2024, DeepSeekMath (arXiv:2402.03300): Eq. 3-4, Sec. 4.1-4.2",
    "DRG": "Liu et al. 2025, Understanding R1-Zero-Like Training (arXiv:2503.20783), Sec. 3.1; "
    "sail-sg/understand-r1-zero README train command",
    "OAT": "sail-sg/oat, oat/algorithms/ppo.py (PPOArgs defaults; PPOLearner: masked_sum with "
    "constant_normalizer=generate_max_length for critic_type=drgrpo)",
    "DAPO": "Yu et al. 2025, DAPO (arXiv:2503.14476): Sec. 2.3, 3.1-3.4, 4.1",
    "DAPO-sh": "volcengine/verl recipe/dapo/run_dapo_qwen2.5_32b.sh",
    "TZ-sh": "Jiayi-Pan/TinyZero scripts/train_tiny_zero.sh (overrides)",
    "TZ-yaml": "TinyZero verl/trainer/config/ppo_trainer.yaml (defaults not overridden by the script)",
    "TZ-code": "TinyZero verl/trainer/ppo/core_algos.py (GAE with masked_whiten; masked-mean "
    "policy loss; clipped value loss with factor 0.5) and ray_trainer.apply_kl_penalty",
    "NAM": "McGill-NLP/nano-aha-moment nano_r1_script.py (constants, create_training_episodes, "
    "compute_pg_loss)",
    "GSPO": "Zheng et al. 2025, Group Sequence Policy Optimization (arXiv:2507.18071): the GSPO objective, Sec. 5.1",
    "M1": "MiniMax 2025, MiniMax-M1 (arXiv:2506.13585): Sec. 3.1 (CISPO)",
    "NEMO": "NVIDIA NeMo-RL docs, algorithms/cispo (ratio_clip_min 1.0, ratio_clip_max 5.0)",
    "TRL": "Hugging Face TRL paper index, GSPO entry (beta=0.0 to reproduce the paper)",
    "TIS": "Yao et al. 2025, Your Efficient RL Framework Secretly Brings You Off-Policy RL Training "
    "(fengyao.notion.site): truncated IS, C = 2",
    "IcePop": "Ling Team 2025, Small Leak Can Sink a Great Ship: Boost RL Training on MoE with IcePop (blog): mask band [0.5, 5]",
    "inert": "not used by this recipe: the value is this project's default and has no effect",
    "n/s": "not stated in the source; the value shown is the common default (PPO eps 0.2; verl "
    "eps 1e-6) and is inert or near-inert for this recipe, as the note says",
}

_INERT_GAE_SOURCES = {f: "inert" for f in _GAE_INERT}
_CORRECTION_SOURCES = {
    "rollout_correction": "n/s: the recipe predates rollout-mismatch correction",
    "rollout_is_cap": "inert; TIS C = 2 when turned on",
    "rollout_ratio_low": "inert; IcePop alpha = 0.5 when turned on",
    "rollout_ratio_high": "inert; IcePop beta = 5 when turned on",
}

PRESET_SOURCES: dict[str, dict[str, str]] = {
    "deepseekmath_grpo": {
        "advantage_estimator": "DSM Sec. 4.1.2 (r - mean)/std",
        "advantage_eps": "n/s",
        "loss_aggregation": "DSM Eq. 3: 1/G sum_i 1/len(o_i) sum_t",
        "loss_constant": "inert",
        "clip_eps_low": "n/s; inert: one update per rollout, ratio = 1",
        "clip_eps_high": "n/s; inert: one update per rollout, ratio = 1",
        "dual_clip_c": "DSM Eq. 3 (none)",
        "kl_estimator": "DSM Eq. 4 (unbiased estimator)",
        "kl_mode": "DSM Sec. 4.1.1 (KL in the loss, not the reward)",
        "kl_coef": "DSM Sec. 4.2",
        "kl_target_nats_per_seq": "DSM Sec. 4.2 (fixed coefficient)",
        "kl_horizon": "inert",
        "ref_refresh_steps": "DSM Sec. 4.2 (no refresh; Alg. 1's per-iteration reset is iterative RL)",
        "entropy_coef": "DSM Eq. 3 (no entropy term)",
        "num_epochs": "DSM Sec. 4.2 (single update per exploration stage)",
        "num_minibatches": "DSM Sec. 4.2 (single update per exploration stage)",
        "dynamic_sampling": "DSM (none)",
        "max_sampling_rounds": "inert",
        "truncation": "DSM (none stated)",
        "overlong_buffer_tokens": "inert",
        "overlong_penalty_factor": "inert",
        **_INERT_GAE_SOURCES,
        "policy_loss": "DSM Eq. 3 (clipped surrogate)",
        **_CORRECTION_SOURCES,
    },
    "dr_grpo": {
        "advantage_estimator": "DRG Sec. 3.1 (no std normalisation); OAT",
        "advantage_eps": "inert",
        "loss_aggregation": "DRG Sec. 3.1; OAT masked_sum / generate_max_length",
        "loss_constant": "OAT: generate_max_length (3000 in DRG's run) = max_new_tokens",
        "clip_eps_low": "OAT PPOArgs.cliprange",
        "clip_eps_high": "OAT PPOArgs.cliprange",
        "dual_clip_c": "OAT (none)",
        "kl_estimator": "DRG --beta 0",
        "kl_mode": "inert",
        "kl_coef": "DRG --beta 0",
        "kl_target_nats_per_seq": "inert",
        "kl_horizon": "inert",
        "ref_refresh_steps": "inert",
        "entropy_coef": "OAT (entropy logged only)",
        "num_epochs": "DRG --num_ppo_epochs 1",
        "num_minibatches": "DRG: 128 prompts x 8 samples / train_batch_size 128",
        "dynamic_sampling": "DRG (none)",
        "max_sampling_rounds": "inert",
        "truncation": "OAT ignore_no_eos=False (truncated kept)",
        "overlong_buffer_tokens": "inert",
        "overlong_penalty_factor": "inert",
        **_INERT_GAE_SOURCES,
        "policy_loss": "OAT (PPO clipped surrogate)",
        **_CORRECTION_SOURCES,
    },
    "dapo": {
        "advantage_estimator": "DAPO Sec. 2.2 (group z-score); DAPO-sh adv_estimator=grpo",
        "advantage_eps": "DAPO-sh (verl's default GRPO epsilon)",
        "loss_aggregation": "DAPO Sec. 3.3 token-level loss; DAPO-sh use_token_level_loss",
        "loss_constant": "inert",
        "clip_eps_low": "DAPO Sec. 3.1; DAPO-sh clip_ratio_low",
        "clip_eps_high": "DAPO Sec. 3.1; DAPO-sh clip_ratio_high",
        "dual_clip_c": "DAPO objective (none)",
        "kl_estimator": "DAPO Sec. 2.3 (KL removed); DAPO-sh kl_loss_coef=0",
        "kl_mode": "inert",
        "kl_coef": "DAPO-sh kl_coef=0.0, kl_loss_coef=0.0",
        "kl_target_nats_per_seq": "inert",
        "kl_horizon": "inert",
        "ref_refresh_steps": "inert",
        "entropy_coef": "DAPO-sh entropy_coeff=0",
        "num_epochs": "DAPO-sh (verl ppo_epochs default 1)",
        "num_minibatches": "DAPO Sec. 4.1 (16 gradient updates per rollout); DAPO-sh 512/32",
        "dynamic_sampling": "DAPO Sec. 3.2; DAPO-sh enable_filter_groups",
        "max_sampling_rounds": "DAPO-sh max_num_gen_batches",
        "truncation": "DAPO Sec. 3.4 soft overlong punishment; DAPO-sh enable_overlong_buffer",
        "overlong_buffer_tokens": "DAPO Sec. 4.1 (L_cache); DAPO-sh overlong_buffer_len",
        "overlong_penalty_factor": "DAPO Sec. 3.4 (-1 at the limit); DAPO-sh overlong_penalty_factor",
        **_INERT_GAE_SOURCES,
        "policy_loss": "DAPO Sec. 3.1 (clipped surrogate)",
        **_CORRECTION_SOURCES,
    },
    "tinyzero_ppo": {
        "advantage_estimator": "TZ-yaml adv_estimator=gae",
        "advantage_eps": "inert",
        "whiten_advantages": "TZ-code compute_gae_advantage_return (masked_whiten)",
        "loss_aggregation": "TZ-code masked_mean over tokens",
        "loss_constant": "inert",
        "clip_eps_low": "TZ-yaml actor.clip_ratio",
        "clip_eps_high": "TZ-yaml actor.clip_ratio",
        "dual_clip_c": "TZ-code (none)",
        "kl_estimator": "TZ-yaml kl_penalty=kl (log-ratio)",
        "kl_mode": "TZ-yaml use_kl_loss=False; TZ-code apply_kl_penalty",
        "kl_coef": "TZ-sh algorithm.kl_ctrl.kl_coef",
        "kl_target_nats_per_seq": "TZ-yaml kl_ctrl.type=fixed",
        "kl_horizon": "inert",
        "ref_refresh_steps": "TZ-sh (none)",
        "entropy_coef": "TZ-yaml actor.entropy_coeff",
        "num_epochs": "TZ-yaml actor.ppo_epochs",
        "num_minibatches": "TZ-sh train_batch_size 256 / ppo_mini_batch_size 128",
        "dynamic_sampling": "TZ-sh (none)",
        "max_sampling_rounds": "inert",
        "truncation": "TZ-sh (none)",
        "overlong_buffer_tokens": "inert",
        "overlong_penalty_factor": "inert",
        "gamma": "TZ-yaml algorithm.gamma",
        "gae_lambda": "TZ-yaml algorithm.lam",
        "critic": "TZ-sh critic.model.path=$BASE_MODEL (separate model)",
        "value_coef": "TZ-code (critic loss = clipped value loss, own optimizer)",
        "value_clip_eps": "TZ-yaml critic.cliprange_value",
        "critic_lr": "TZ-sh critic.optim.lr",
        "policy_loss": "TZ-code compute_policy_loss (PPO clip)",
        **_CORRECTION_SOURCES,
    },
    "nano_aha_moment": {
        "advantage_estimator": "NAM create_training_episodes (r - mean)/(std + 1e-4)",
        "advantage_eps": "NAM create_training_episodes",
        "loss_aggregation": "NAM compute_pg_loss: sum / total_response_len",
        "loss_constant": "inert",
        "clip_eps_low": "inert: NAM uses -A log p with one on-policy step (same gradient)",
        "clip_eps_high": "inert: NAM uses -A log p with one on-policy step (same gradient)",
        "dual_clip_c": "NAM (none)",
        "kl_estimator": "NAM compute_pg_loss exp(ref-logp)-(ref-logp)-1",
        "kl_mode": "NAM compute_pg_loss (added to the loss)",
        "kl_coef": "NAM KL_COEFFICIENT",
        "kl_target_nats_per_seq": "NAM (fixed)",
        "kl_horizon": "inert",
        "ref_refresh_steps": "NAM (none)",
        "entropy_coef": "NAM (entropy logged only)",
        "num_epochs": "NAM (one pass per iteration)",
        "num_minibatches": "NAM (one optimizer step: grad accumulation over 64 episodes)",
        "dynamic_sampling": "NAM (none)",
        "max_sampling_rounds": "inert",
        "truncation": "NAM (truncated completions trained without EOS)",
        "overlong_buffer_tokens": "inert",
        "overlong_penalty_factor": "inert",
        **_INERT_GAE_SOURCES,
        "policy_loss": "inert: NAM uses -A log p with one on-policy step (same gradient)",
        **_CORRECTION_SOURCES,
    },
    "gspo": {
        "advantage_estimator": "GSPO objective (group-normalised advantage)",
        "advantage_eps": "n/s",
        "loss_aggregation": "GSPO objective: 1/G sum over sequences",
        "loss_constant": "inert",
        "policy_loss": "GSPO objective (sequence ratio, computed in the GSPO-token form)",
        "clip_eps_low": "GSPO Sec. 5.1 (3e-4)",
        "clip_eps_high": "GSPO Sec. 5.1 (4e-4)",
        "dual_clip_c": "GSPO objective (none)",
        "kl_estimator": "GSPO objective (no KL term); TRL beta=0.0",
        "kl_mode": "inert",
        "kl_coef": "GSPO objective (no KL term); TRL beta=0.0",
        "kl_target_nats_per_seq": "inert",
        "kl_horizon": "inert",
        "ref_refresh_steps": "inert",
        "entropy_coef": "GSPO objective (none)",
        "num_epochs": "GSPO Sec. 5.1 (one pass)",
        "num_minibatches": "GSPO Sec. 5.1 (rollout batch split into 4 minibatches)",
        "dynamic_sampling": "GSPO (none)",
        "max_sampling_rounds": "inert",
        "truncation": "GSPO (none stated)",
        "overlong_buffer_tokens": "inert",
        "overlong_penalty_factor": "inert",
        **_INERT_GAE_SOURCES,
        **_CORRECTION_SOURCES,
    },
    "cispo": {
        "advantage_estimator": "M1 Sec. 3.1 (group-relative advantage)",
        "advantage_eps": "n/s",
        "loss_aggregation": "M1 Sec. 3.1 CISPO objective: divided by the total response tokens (token-level)",
        "loss_constant": "inert",
        "policy_loss": "M1 Sec. 3.1 (clipped, stop-gradient IS weight times log pi)",
        "clip_eps_low": "M1 Sec. 3.1 (no lower bound on the IS weight): 1.0 gives bound 0",
        "clip_eps_high": "n/s in M1 (tuned); NEMO ratio_clip_max 5.0",
        "dual_clip_c": "M1 (none)",
        "kl_estimator": "M1 Sec. 3.1 CISPO objective (no KL term)",
        "kl_mode": "inert",
        "kl_coef": "M1 Sec. 3.1 CISPO objective (no KL term)",
        "kl_target_nats_per_seq": "inert",
        "kl_horizon": "inert",
        "ref_refresh_steps": "inert",
        "entropy_coef": "M1 Sec. 3.1 CISPO objective (none)",
        "num_epochs": "n/s; one pass",
        "num_minibatches": "n/s; one optimizer step per rollout (set more to go off-policy)",
        "dynamic_sampling": "n/s",
        "max_sampling_rounds": "inert",
        "truncation": "n/s",
        "overlong_buffer_tokens": "inert",
        "overlong_penalty_factor": "inert",
        **_INERT_GAE_SOURCES,
        **_CORRECTION_SOURCES,
    },
}

# Table order: the AlgorithmConfig field order, without ``preset``.
PRESET_FIELDS: tuple[str, ...] = tuple(f for f in AlgorithmConfig.model_fields if f != "preset")


def _cell(value: Any) -> str:
    if value is None:
        return "None"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and value != 0 and abs(value) < 1e-3:
        return f"{value:.0e}"
    return str(value)


def presets_markdown_table() -> str:
    """One Markdown table: rows are fields, columns are presets, each cell 'value (source)'.

    ``docs/algorithms.md`` holds this table verbatim (a test keeps them in sync).
    """
    names = list(PRESETS)
    lines = ["| field | " + " | ".join(f"`{n}`" for n in names) + " |"]
    lines.append("|---" * (len(names) + 1) + "|")
    for field in PRESET_FIELDS:
        cells = [f"`{_cell(PRESETS[n][field])}` ({PRESET_SOURCES[n][field]})" for n in names]
        lines.append(f"| `{field}` | " + " | ".join(cells) + " |")
    sampling_keys = sorted({k for s in PRESET_SAMPLING.values() for k in s})
    for key in sampling_keys:
        cells = [_sampling_cell(PRESET_SAMPLING[n], key) for n in names]
        lines.append(f"| sampling: `{key}` | " + " | ".join(cells) + " |")
    lines.append("| sampling: source | " + " | ".join(PRESET_SAMPLING_SOURCES[n] for n in names) + " |")
    return "\n".join(lines)


def _sampling_cell(sampling: dict[str, Any], key: str) -> str:
    if key not in sampling:
        return ""
    return "not stated" if sampling[key] is None else f"`{_cell(sampling[key])}`"
