"""AlgorithmConfig validation, preset resolution, every preset value, and the docs table."""
from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.algorithm_config import (
    PRESET_FIELDS,
    PRESET_SAMPLING,
    PRESET_SAMPLING_SOURCES,
    PRESET_SOURCES,
    PRESETS,
    SOURCE_LEGEND,
    AlgorithmConfig,
    presets_markdown_table,
    resolve_algorithm,
)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "algorithms.md"

# Typed out from the sources (see docs/algorithms.md), not copied from PRESETS: a changed preset
# value must fail here. Fields a recipe does not use carry the project defaults.
INERT_GAE = dict(gamma=1.0, gae_lambda=1.0, critic="value_head", value_coef=0.5, value_clip_eps=0.2,
                 critic_lr=None, whiten_advantages=False)
# Recipes that predate rollout-mismatch correction; the inert values are the project defaults.
NO_CORRECTION = dict(rollout_correction="none", rollout_is_cap=2.0, rollout_ratio_low=0.5, rollout_ratio_high=5.0)
EXPECTED = {
    "deepseekmath_grpo": dict(
        advantage_estimator="grpo", advantage_eps=1e-6, loss_aggregation="seq_mean_token_mean",
        loss_constant=None, clip_eps_low=0.2, clip_eps_high=0.2, dual_clip_c=None, kl_estimator="k3",
        kl_mode="loss", kl_coef=0.04, kl_target_nats_per_seq=None, kl_horizon=10000, ref_refresh_steps=None,
        entropy_coef=0.0, num_epochs=1, num_minibatches=1, dynamic_sampling=False, max_sampling_rounds=3,
        truncation="keep", overlong_buffer_tokens=0, overlong_penalty_factor=1.0, **INERT_GAE,
        policy_loss="ppo_clip", **NO_CORRECTION,
    ),
    "dr_grpo": dict(
        advantage_estimator="dr_grpo", advantage_eps=1e-6, loss_aggregation="seq_mean_token_sum_norm",
        loss_constant=None, clip_eps_low=0.2, clip_eps_high=0.2, dual_clip_c=None, kl_estimator="none",
        kl_mode="loss", kl_coef=0.0, kl_target_nats_per_seq=None, kl_horizon=10000, ref_refresh_steps=None,
        entropy_coef=0.0, num_epochs=1, num_minibatches=8, dynamic_sampling=False, max_sampling_rounds=3,
        truncation="keep", overlong_buffer_tokens=0, overlong_penalty_factor=1.0, **INERT_GAE,
        policy_loss="ppo_clip", **NO_CORRECTION,
    ),
    "dapo": dict(
        advantage_estimator="grpo", advantage_eps=1e-6, loss_aggregation="token_mean",
        loss_constant=None, clip_eps_low=0.2, clip_eps_high=0.28, dual_clip_c=None, kl_estimator="none",
        kl_mode="loss", kl_coef=0.0, kl_target_nats_per_seq=None, kl_horizon=10000, ref_refresh_steps=None,
        entropy_coef=0.0, num_epochs=1, num_minibatches=16, dynamic_sampling=True, max_sampling_rounds=10,
        truncation="overlong_penalty", overlong_buffer_tokens=4096, overlong_penalty_factor=1.0, **INERT_GAE,
        policy_loss="ppo_clip", **NO_CORRECTION,
    ),
    "tinyzero_ppo": dict(
        advantage_estimator="gae", advantage_eps=1e-6, whiten_advantages=True, loss_aggregation="token_mean",
        loss_constant=None, clip_eps_low=0.2, clip_eps_high=0.2, dual_clip_c=None, kl_estimator="k1",
        kl_mode="reward", kl_coef=0.001, kl_target_nats_per_seq=None, kl_horizon=10000, ref_refresh_steps=None,
        entropy_coef=0.001, num_epochs=1, num_minibatches=2, dynamic_sampling=False, max_sampling_rounds=3,
        truncation="keep", overlong_buffer_tokens=0, overlong_penalty_factor=1.0, gamma=1.0, gae_lambda=1.0,
        critic="separate", value_coef=1.0, value_clip_eps=0.5, critic_lr=1e-5, policy_loss="ppo_clip", **NO_CORRECTION,
    ),
    # GSPO Sec. 5.1: clip 3e-4 / 4e-4, 4 minibatches per rollout batch, no KL term.
    "gspo": dict(
        advantage_estimator="grpo", advantage_eps=1e-6, loss_aggregation="seq_mean_token_mean",
        loss_constant=None, policy_loss="gspo", clip_eps_low=3e-4, clip_eps_high=4e-4, dual_clip_c=None,
        kl_estimator="none", kl_mode="loss", kl_coef=0.0, kl_target_nats_per_seq=None, kl_horizon=10000,
        ref_refresh_steps=None, entropy_coef=0.0, num_epochs=1, num_minibatches=4, dynamic_sampling=False,
        max_sampling_rounds=3, truncation="keep", overlong_buffer_tokens=0, overlong_penalty_factor=1.0,
        **INERT_GAE, **NO_CORRECTION,
    ),
    # MiniMax-M1 Sec. 3.1: token-level CISPO, no lower bound on the IS weight, no KL; eps_high 5 (NeMo-RL).
    "cispo": dict(
        advantage_estimator="grpo", advantage_eps=1e-6, loss_aggregation="token_mean",
        loss_constant=None, policy_loss="cispo", clip_eps_low=1.0, clip_eps_high=5.0, dual_clip_c=None,
        kl_estimator="none", kl_mode="loss", kl_coef=0.0, kl_target_nats_per_seq=None, kl_horizon=10000,
        ref_refresh_steps=None, entropy_coef=0.0, num_epochs=1, num_minibatches=1, dynamic_sampling=False,
        max_sampling_rounds=3, truncation="keep", overlong_buffer_tokens=0, overlong_penalty_factor=1.0,
        **INERT_GAE, **NO_CORRECTION,
    ),
    "nano_aha_moment": dict(
        advantage_estimator="grpo", advantage_eps=1e-4, loss_aggregation="token_mean",
        loss_constant=None, clip_eps_low=0.2, clip_eps_high=0.2, dual_clip_c=None, kl_estimator="k3",
        kl_mode="loss", kl_coef=0.001, kl_target_nats_per_seq=None, kl_horizon=10000, ref_refresh_steps=None,
        entropy_coef=0.0, num_epochs=1, num_minibatches=1, dynamic_sampling=False, max_sampling_rounds=3,
        truncation="keep", overlong_buffer_tokens=0, overlong_penalty_factor=1.0, **INERT_GAE,
        policy_loss="ppo_clip", **NO_CORRECTION,
    ),
}
EXPECTED_SAMPLING = {
    "deepseekmath_grpo": dict(group_size=64, temperature=None, max_new_tokens=1024, lr=1e-6, train_batch_size=1024),
    "dr_grpo": dict(group_size=8, temperature=1.0, top_p=1.0, max_new_tokens=3000, lr=1e-6,
                    prompts_per_rollout=128, train_batch_size=128),
    "dapo": dict(group_size=16, temperature=1.0, top_p=1.0, max_new_tokens=20480, lr=1e-6, prompts_per_step=512,
                 prompts_per_generation_round=1536, prompts_per_minibatch=32, weight_decay=0.1),
    "tinyzero_ppo": dict(group_size=1, temperature=1.0, max_new_tokens=1024, lr=1e-6, prompts_per_step=256,
                         prompts_per_minibatch=128),
    "nano_aha_moment": dict(group_size=4, temperature=1.0, max_new_tokens=1024, lr=1e-6, episodes_per_step=64),
    "gspo": dict(base_model="Qwen3-30B-A3B-Base (cold-start fine-tuned)"),
    "cispo": dict(base_model="MiniMax-Text-01 (MiniMax-M1)"),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_value_of_every_preset(name):
    assert set(EXPECTED[name]) == set(PRESET_FIELDS), "a preset must set every field"
    cfg = resolve_algorithm({"preset": name})
    resolved = cfg.model_dump(exclude={"preset"})
    assert resolved == EXPECTED[name]
    assert cfg.preset == name


@pytest.mark.parametrize("name", sorted(EXPECTED_SAMPLING))
def test_published_sampling_settings(name):
    for key, value in EXPECTED_SAMPLING[name].items():
        assert PRESET_SAMPLING[name][key] == value, key


def test_the_seven_presets_and_only_those():
    assert set(PRESETS) == set(EXPECTED) == set(PRESET_SAMPLING) == set(PRESET_SOURCES) == set(PRESET_SAMPLING_SOURCES)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_value_has_a_source_from_the_legend(name):
    assert set(PRESET_SOURCES[name]) == set(PRESET_FIELDS)
    for field, source in PRESET_SOURCES[name].items():
        assert source.split()[0].rstrip(";:,") in SOURCE_LEGEND, (field, source)
        assert "|" not in source  # would split the Markdown table cell


def test_explicit_fields_override_the_preset():
    cfg = resolve_algorithm({"preset": "dapo", "clip_eps_high": 0.3, "num_minibatches": 4})
    assert (cfg.clip_eps_high, cfg.num_minibatches, cfg.clip_eps_low, cfg.dynamic_sampling) == (0.3, 4, 0.2, True)
    # constructing the model directly applies the preset in the same way
    assert AlgorithmConfig(preset="dr_grpo", kl_coef=0.01, kl_estimator="k3").kl_coef == 0.01


def test_no_preset_gives_the_documented_defaults():
    cfg = resolve_algorithm({})
    assert (cfg.advantage_estimator, cfg.loss_aggregation, cfg.kl_estimator, cfg.kl_coef) == (
        "grpo", "seq_mean_token_mean", "k3", 0.04)


@pytest.mark.parametrize(
    "raw, field, why",
    [
        ({"preset": "ppo2"}, "known presets: cispo, dapo, deepseekmath_grpo", "unknown preset lists the known ones"),
        ({"advantage_estimator": "ppo"}, "advantage_estimator", "not a registered estimator"),
        ({"loss_aggregation": "sum"}, "loss_aggregation", "not a registered aggregation"),
        ({"kl_estimator": "k4"}, "kl_estimator", "not a registered KL estimator"),
        ({"clip_eps": 0.2}, "clip_eps", "unknown field (typo of clip_eps_low)"),
        ({"clip_eps_low": 1.5}, "clip_eps_low", "a lower clip of 1.5 would allow negative ratios"),
        ({"clip_eps_low": 0.2, "clip_eps_high": 0.028}, "clip_eps_high", "clip-higher typo"),
        ({"dual_clip_c": 1.0}, "dual_clip_c", "dual clip must exceed 1"),
        ({"num_epochs": 0}, "num_epochs", "at least one pass"),
        ({"truncation": "overlong_penalty"}, "overlong_buffer_tokens", "penalty needs a buffer"),
        ({"kl_estimator": "none", "kl_target_nats_per_seq": 0.1}, "kl_target_nats_per_seq", "adaptive KL without a KL"),
        ({"kl_estimator": "none", "ref_refresh_steps": 10}, "ref_refresh_steps", "no reference to refresh"),
        ({"gae_lambda": 1.5}, "gae_lambda", "lambda is in [0, 1]"),
        ({"critic": "shared"}, "critic", "value_head or separate"),
    ],
)
def test_invalid_configs_name_the_field(raw, field, why):
    with pytest.raises(ValueError, match=field):
        resolve_algorithm(raw)


def test_literal_errors_list_the_allowed_values():
    with pytest.raises(ValueError, match="'grpo', 'dr_grpo', 'rloo'"):
        resolve_algorithm({"advantage_estimator": "ppo"})


def test_effective_loss_constant_and_flags():
    assert AlgorithmConfig(preset="dr_grpo").effective_loss_constant(3000) == 3000.0
    assert AlgorithmConfig(loss_constant=512).effective_loss_constant(3000) == 512.0
    assert AlgorithmConfig(preset="dapo").uses_reference is False
    assert AlgorithmConfig(preset="deepseekmath_grpo").uses_reference is True
    assert AlgorithmConfig(preset="tinyzero_ppo").uses_critic is True
    assert AlgorithmConfig(preset="nano_aha_moment").uses_critic is False


def test_docs_hold_the_generated_table_and_every_source_key():
    text = DOCS.read_text()
    assert presets_markdown_table() in text, "regenerate the table in docs/algorithms.md"
    for key in SOURCE_LEGEND:
        assert f"**{key}**" in text


def test_table_has_one_row_per_field_and_one_column_per_preset():
    rows = presets_markdown_table().splitlines()
    field_rows = [r for r in rows if r.startswith("| `")]
    assert len(field_rows) == len(PRESET_FIELDS)
    assert all(r.count(" | ") == len(PRESETS) for r in field_rows)
