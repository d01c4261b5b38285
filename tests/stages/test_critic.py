"""Critic: value head on a tiny random Qwen2, shared or separate trunk, save/load, training."""
from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, Qwen2Config

from stages.core import algorithms as alg
from stages.core.critic import Critic, ValueHead, make_critic, value_head_path


@pytest.fixture()
def policy() -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2)
    return AutoModelForCausalLM.from_config(cfg).eval()


IDS = torch.tensor([[5, 6, 7, 8, 9], [3, 4, 1, 0, 0]])
ATTN = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])


def test_value_head_returns_the_policy_logits_and_zero_initial_values(policy):
    head = ValueHead(policy)
    logits, values = head(IDS, ATTN)
    assert logits.shape == (2, 5, 64) and values.shape == (2, 5)
    with torch.no_grad():
        expected = policy(input_ids=IDS, attention_mask=ATTN).logits
    assert torch.allclose(logits, expected, atol=1e-5)  # one pass, same logits as the plain model
    assert (values == 0).all()  # zero-initialised head
    assert torch.equal(head.values(IDS, ATTN), values)


def test_shared_trunk_critic_trains_only_the_head(policy):
    critic = make_critic(policy, "value_head")
    assert critic.shares_policy_trunk and critic.model.model is policy
    params = list(critic.parameters())
    assert [tuple(p.shape) for p in params] == [(1, 32), (1,)]


def test_separate_critic_is_an_independent_copy(policy):
    critic = make_critic(policy, "separate")
    assert not critic.shares_policy_trunk and critic.model.model is not policy
    num_policy_params = sum(p.numel() for p in policy.parameters())
    assert sum(p.numel() for p in critic.parameters()) == num_policy_params + 33  # trunk + head
    with torch.no_grad():
        next(critic.model.model.parameters()).add_(1.0)
    assert not torch.equal(next(critic.model.model.parameters()), next(policy.parameters()))


def test_separate_critic_from_a_base_model_dir(policy, tmp_path):
    policy.save_pretrained(tmp_path / "base")
    critic = make_critic(policy, "separate", base_model_dir=tmp_path / "base")
    for mine, theirs in zip(critic.model.model.parameters(), policy.parameters()):
        assert torch.equal(mine, theirs)


def test_unknown_kind_is_refused(policy):
    with pytest.raises(ValueError, match="value_head"):
        make_critic(policy, "shared")


def test_save_and_load_round_trip_keeps_the_model_dir_plain(policy, tmp_path):
    head = ValueHead(policy)
    with torch.no_grad():
        head.value_head.weight.normal_()
        head.value_head.bias.fill_(0.3)
    model_dir = tmp_path / "model"
    head.save_pretrained(model_dir)
    assert value_head_path(model_dir).exists() and value_head_path(model_dir).parent == tmp_path
    assert not list(model_dir.glob("*value_head*"))  # vLLM loads every safetensors file in the dir
    loaded = ValueHead.from_pretrained(model_dir)
    assert torch.allclose(loaded.values(IDS, ATTN), head.values(IDS, ATTN), atol=1e-5)
    AutoModelForCausalLM.from_pretrained(model_dir)  # still a plain HF directory


def test_shared_critic_save_writes_only_the_head(policy, tmp_path):
    critic = make_critic(policy, "value_head")
    critic.save(tmp_path / "model")
    assert value_head_path(tmp_path / "model").exists() and not (tmp_path / "model").exists()


def test_from_pretrained_without_a_head_file_starts_from_zero(policy, tmp_path):
    policy.save_pretrained(tmp_path / "model")
    assert (ValueHead.from_pretrained(tmp_path / "model").values(IDS, ATTN) == 0).all()


def test_clipped_value_loss_trains_a_separate_critic_towards_gae_returns(policy):
    """A few optimiser steps on one batch: the loss goes down and the trunk gets gradients."""
    critic = make_critic(policy, "separate").train()
    mask = ATTN.float()
    token_rewards = alg.outcome_to_token_rewards(torch.tensor([1.0, 0.0]), mask)
    with torch.no_grad():
        old_values = critic.values(IDS, ATTN)
    _, returns = alg.gae_advantages(token_rewards, old_values, mask, gamma=1.0, lam=1.0)
    optimizer = torch.optim.Adam(critic.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        loss, _ = alg.value_loss(critic.values(IDS, ATTN), old_values, returns, mask, clip_eps=None)
        optimizer.zero_grad()
        loss.backward()
        losses.append(loss.item())
        optimizer.step()
    assert losses[-1] < 0.5 * losses[0]
    trunk_grads = [p.grad for p in critic.model.model.base_model.parameters() if p.grad is not None]
    assert trunk_grads and any(g.abs().sum() > 0 for g in trunk_grads)


def test_critic_is_the_interface_make_critic_returns(policy):
    assert isinstance(make_critic(policy, "value_head"), Critic)
