"""Padding-free forward passes: each distinct prompt run once, completions in length buckets.

The GRPO update's loss and gradients through ``share_prompts=True`` must equal the padded
full pass's (float64, so the only difference is summation order) to 1e-5.
"""
from __future__ import annotations

import pytest
import torch
from transformers import Qwen2ForCausalLM

from stages.core import algorithms as algos
from stages.core.microbatch import length_buckets
from stages.core.modeling import (completion_logprobs, distinct_prompts, enable_gradient_checkpointing,
                                  prompt_sharing_pays, tiny_qwen2_config)

VOCAB = 61


def tiny_model(seed: int = 0) -> Qwen2ForCausalLM:
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(tiny_qwen2_config(vocab_size=VOCAB, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
                                               max_position_embeddings=64))
    return model.double()


def grpo_batch(seed: int = 3, group_size: int = 4):
    """Three groups of ``group_size`` rows: prompts of 7, 4 and 5 tokens left-padded to 7, then
    completions of varied lengths (1 to 12) right-padded to 12, as a rollout batch is laid out."""
    generator = torch.Generator().manual_seed(seed)
    prompt_lengths, width, prompt_width = [7, 4, 5], 12, 7
    rows = len(prompt_lengths) * group_size
    ids = torch.randint(1, VOCAB, (rows, prompt_width + width), generator=generator)  # (B, P + T)
    attention = torch.zeros_like(ids)
    completion_lengths = [12, 3, 2, 3, 1, 2, 11, 4, 3, 3, 2, 5][:rows]
    for group, length in enumerate(prompt_lengths):
        prompt = torch.randint(1, VOCAB, (length,), generator=generator)
        for row in range(group * group_size, (group + 1) * group_size):
            ids[row, :prompt_width] = 0
            ids[row, prompt_width - length:prompt_width] = prompt
            attention[row, prompt_width - length:prompt_width + completion_lengths[row]] = 1
    ids[attention == 0] = 0
    completion_mask = attention[:, prompt_width:].double()  # (B, T)
    return ids, attention, width, completion_mask


def grpo_loss(model, ids, attention, width, mask, *, share_prompts: bool):
    """A GRPO step's loss: PPO-clip on group-std advantages plus beta * k3 KL, token mean."""
    logp, entropy = completion_logprobs(model, ids, attention, width, temperature=0.9, with_entropy=True,
                                        share_prompts=share_prompts)  # (B, T)
    generator = torch.Generator().manual_seed(7)
    rewards = torch.rand(ids.shape[0], generator=generator, dtype=torch.float64)
    advantages = algos.ADVANTAGE_ESTIMATORS["grpo"](algos.AdvantageContext(
        rewards=rewards, mask=mask, group_size=4, eps=1e-6, kl_penalty=None, old_logp=None, ref_logp=None, values=None,
        gamma=1.0, lam=1.0, whiten=False)).advantages
    old_logp = logp.detach() + 0.05 * torch.randn(logp.shape, generator=generator, dtype=torch.float64)
    ref_logp = logp.detach() - 0.1 * torch.rand(logp.shape, generator=generator, dtype=torch.float64)
    per_token, _ = algos.POLICY_LOSSES["ppo_clip"](logp, old_logp, advantages, mask, clip_eps_low=0.2, clip_eps_high=0.2,
                                                   dual_clip_c=None)
    kl = algos.KL_ESTIMATORS["k3"](logp, ref_logp)
    total = per_token + 0.01 * kl - 0.001 * entropy
    return (total * mask).sum() / mask.sum(), logp


def loss_and_grads(model, share_prompts: bool):
    ids, attention, width, mask = grpo_batch()
    model.zero_grad(set_to_none=True)
    loss, logp = grpo_loss(model, ids, attention, width, mask, share_prompts=share_prompts)
    loss.backward()
    return loss.detach(), logp.detach() * mask, {name: p.grad.clone() for name, p in model.named_parameters()}


def test_shared_prompt_update_equals_the_padded_one_loss_and_gradients():
    model = tiny_model()
    ids, attention, width, _ = grpo_batch()
    assert prompt_sharing_pays(model, ids, attention, width)  # the shared path really runs
    padded_loss, padded_logp, padded_grads = loss_and_grads(model, share_prompts=False)
    shared_loss, shared_logp, shared_grads = loss_and_grads(model, share_prompts=True)
    assert torch.allclose(shared_loss, padded_loss, rtol=0, atol=1e-5)
    assert torch.allclose(shared_logp, padded_logp, rtol=0, atol=1e-5)
    for name, grad in padded_grads.items():
        assert grad.abs().max() > 0, name  # every parameter gets a gradient: the check is not vacuous
        assert torch.allclose(shared_grads[name], grad, rtol=0, atol=1e-5), name


def test_shared_prompt_logprobs_and_entropy_without_grad_match():
    model = tiny_model(seed=1)
    ids, attention, width, mask = grpo_batch(seed=5)
    with torch.no_grad():
        padded = completion_logprobs(model, ids, attention, width, with_entropy=True)
        shared = completion_logprobs(model, ids, attention, width, with_entropy=True, share_prompts=True)
    for expected, got in zip(padded, shared):
        assert torch.allclose(got * mask, expected * mask, rtol=0, atol=1e-8)


def test_rows_without_a_shared_prompt_take_the_padded_path():
    model = tiny_model()
    ids, attention, width, _ = grpo_batch(group_size=1)  # three rows, three different prompts
    assert not prompt_sharing_pays(model, ids, attention, width)


def test_gradient_checkpointing_takes_the_padded_path():
    """transformers drops the KV cache under gradient checkpointing; the shared pass needs it."""
    model = tiny_model()
    enable_gradient_checkpointing(model)
    model.train()
    ids, attention, width, _ = grpo_batch()
    assert not prompt_sharing_pays(model, ids, attention, width)
    with torch.no_grad():  # no gradients: nothing is checkpointed, the cache works
        assert prompt_sharing_pays(model, ids, attention, width)
    loss, _ = grpo_loss(model, ids, attention, width, grpo_batch()[3], share_prompts=True)
    loss.backward()  # runs (padded) with checkpointing on


def test_distinct_prompts_keep_a_real_pad_id_token_apart_from_padding():
    ids = torch.tensor([[0, 4, 9], [0, 4, 9], [0, 0, 4]])  # row 2's prompt [0, 4] holds a real token 0
    attention = torch.tensor([[0, 1, 1], [0, 1, 1], [1, 1, 1]])
    unique_ids, unique_mask, inverse = distinct_prompts(ids, attention, 1)
    assert unique_ids.shape[0] == 2
    assert inverse[0] == inverse[1] != inverse[2]
    assert unique_mask[inverse[2]].tolist() == [1, 1]


@pytest.mark.parametrize("lengths, overhead, expected", [
    ([5, 5, 5], 1, [[0, 1, 2]]),  # equal lengths: splitting saves no padding, only adds calls
    ([1, 100], 0, [[0], [1]]),  # 1 + 100 < 2 x 100
    ([1, 100], 200, [[0, 1]]),  # one call: 200 + 200 < 1 + 100 + 400
    ([30, 2, 2, 31], 10, [[1, 2], [0, 3]]),  # 2 x 2 + 2 x 31 + 20 = 86 < 4 x 31 + 10 = 134
    ([], 10, []),
    ([0, 0], 10, [[0, 1]]),  # empty completions count as one position
])
def test_length_buckets_minimise_padded_tokens_plus_call_cost(lengths, overhead, expected):
    assert length_buckets(lengths, overhead) == expected


def test_length_buckets_rejects_negative_overhead():
    with pytest.raises(ValueError, match="overhead_tokens"):
        length_buckets([1, 2], -1)
