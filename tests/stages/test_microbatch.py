"""Micro-batches: the pure splitting and normaliser functions, and exact gradient accumulation
through the real GRPO trainer (1, 2 and 5 micro-batches and a token budget give the gradient of
the whole minibatch, for every aggregation, policy loss, the KL and entropy terms and critics)."""
from __future__ import annotations

import math
import random

import pytest
import torch

import stages.grpo as grpo
from stages.core import algorithms as alg
from stages.core.microbatch import loss_normaliser, split_by_count, split_by_tokens, split_minibatch, trimmed_width
from stages.core.rollout import Completion
from tests.stages.test_learning import grpo_config, toy_reward  # noqa: F401  (fixture)

# --- pure pieces -------------------------------------------------------------------------------


def test_split_by_count_keeps_order_and_covers_every_row():
    assert split_by_count(5, 2) == [[0, 1], [2, 3], [4]]
    assert split_by_count(5, None) == [[0, 1, 2, 3, 4]]
    assert split_by_count(5, 9) == [[0, 1, 2, 3, 4]]
    with pytest.raises(ValueError, match="micro_batch_size"):
        split_by_count(5, -1)


@pytest.mark.parametrize(
    "lengths, budget, expected, why",
    [
        ([4, 4, 4, 4], 8, [[0, 1], [2, 3]], "two rows of 4 fill 8 exactly"),
        ([4, 4, 4, 4], 7, [[0], [1], [2], [3]], "a second row of 4 would make 8 > 7"),
        ([2, 9, 3], 9, [[0, 2], [1]], "sorted by length: 2 and 3 pad to 2 x 3 = 6; 9 goes alone"),
        ([30, 2], 10, [[1], [0]], "a row over budget still gets a piece of its own"),
        ([5, 1, 1, 1], 5, [[1, 2, 3], [0]], "short rows are packed together"),
    ],
)
def test_split_by_tokens_packs_sorted_rows_under_the_budget(lengths, budget, expected, why):
    pieces = split_by_tokens(lengths, budget)
    assert pieces == expected, why
    assert sorted(i for piece in pieces for i in piece) == list(range(len(lengths)))


def test_split_minibatch_prefers_the_token_budget():
    assert split_minibatch([3, 3, 3], micro_batch_size=1, max_tokens_per_micro_batch=None) == [[0], [1], [2]]
    assert split_minibatch([3, 3, 3], micro_batch_size=None, max_tokens_per_micro_batch=9) == [[0, 1, 2]]


def test_loss_normalisers_are_the_aggregations_divisors():
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    assert loss_normaliser("token_mean", mask) == 4.0  # real tokens
    assert loss_normaliser("seq_mean_token_mean", mask) == 2.0  # sequences with a token
    assert loss_normaliser("seq_mean_token_sum_norm", mask) == 3.0  # all sequences
    assert loss_normaliser("token_mean", torch.zeros(2, 2)) == 1.0  # empty: loss 0, not nan
    with pytest.raises(ValueError, match="loss_aggregation"):
        loss_normaliser("sum", mask)


@pytest.mark.parametrize("aggregation", sorted(alg.LOSS_AGGREGATIONS))
def test_micro_batch_sums_with_the_global_normaliser_equal_the_whole(aggregation):
    torch.manual_seed(0)
    per_token = torch.randn(7, 5)
    mask = (torch.arange(5).expand(7, 5) < torch.tensor([[5], [1], [0], [3], [2], [5], [4]])).float()
    whole = alg.LOSS_AGGREGATIONS[aggregation](per_token, mask, constant=6.0)
    norm = loss_normaliser(aggregation, mask)
    pieces = [alg.LOSS_AGGREGATIONS[aggregation](per_token[rows], mask[rows], constant=6.0, normaliser=norm)
              for rows in ([0], [1, 2, 3, 4], [5, 6])]
    assert torch.allclose(sum(pieces), whole, atol=1e-6)
    # Without the global normaliser the pieces' mean is not the whole (the bug this guards against).
    local = [alg.LOSS_AGGREGATIONS[aggregation](per_token[rows], mask[rows], constant=6.0)
             for rows in ([0], [1, 2, 3, 4], [5, 6])]
    assert not math.isclose(sum(local).item() / 3, whole.item(), abs_tol=1e-4)


def test_trimmed_width():
    assert trimmed_width(torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]])) == 2
    assert trimmed_width(torch.zeros(2, 3)) == 1


# --- exact accumulation through the trainer ------------------------------------------------------

CASES = {
    "ppo_clip_kl_entropy": {"advantage_estimator": "grpo", "kl_estimator": "k3", "kl_coef": 0.1, "entropy_coef": 0.01,
                            "dual_clip_c": 3.0, "num_minibatches": 2},
    "gspo": {"advantage_estimator": "grpo", "policy_loss": "gspo", "clip_eps_low": 0.05, "clip_eps_high": 0.08,
             "kl_estimator": "k2", "kl_coef": 0.05, "num_minibatches": 2},
    "cispo": {"advantage_estimator": "dr_grpo", "policy_loss": "cispo", "clip_eps_low": 1.0, "clip_eps_high": 0.1,
              "kl_estimator": "none", "num_minibatches": 2},
    "gae_value_head": {"advantage_estimator": "gae", "critic": "value_head", "kl_estimator": "k1", "kl_mode": "reward",
                       "kl_coef": 0.01, "num_minibatches": 2, "entropy_coef": 0.01},
    "gae_separate": {"advantage_estimator": "gae", "critic": "separate", "kl_estimator": "none", "num_minibatches": 2},
}


def random_batch(trainer: grpo.GRPOTrainer, num_rows: int = 10, seed: int = 0) -> grpo.RolloutBatch:
    """Prompts of 2..6 tokens and completions of 1..12 tokens, so micro-batches differ in shape."""
    rng = random.Random(seed)
    vocab = trainer.policy.config.vocab_size
    prompts = [[rng.randrange(3, vocab) for _ in range(rng.randint(2, 6))] for _ in range(num_rows)]
    completions = []
    for _ in range(num_rows):
        length = rng.randint(1, 12)
        completions.append(Completion("x", [rng.randrange(3, vocab) for _ in range(length)],
                                      [-rng.uniform(0.5, 5.0) for _ in range(length)], "length" if length == 12 else "stop"))
    return grpo.build_batch([{"id": str(i)} for i in range(num_rows)], prompts, completions, trainer.tokenizer.pad_token_id)


def off_policy_tensors(trainer: grpo.GRPOTrainer, batch: grpo.RolloutBatch) -> grpo.StepTensors:
    """The trainer's own step inputs, with old log-probs moved off-policy and random mismatch
    weights, so clipping, ratios and weights all act."""
    torch.manual_seed(1)
    rewards = torch.rand(batch.input_ids.shape[0])
    tensors, _, _ = trainer.prepare(batch, rewards)
    old_logp = tensors.old_logp if tensors.old_logp is not None else trainer.old_logprobs(batch)[0]
    tensors.old_logp = old_logp + 0.3 * torch.randn_like(old_logp)
    tensors.is_weights = 0.5 + torch.rand_like(old_logp)
    return tensors


def minibatch_gradient(trainer: grpo.GRPOTrainer, batch, tensors, rows, **micro) -> torch.Tensor:
    trainer.config.update({"micro_batch_size": None, "max_tokens_per_micro_batch": None, **micro})
    parameters = [p for p in trainer._trainable_parameters()]
    if trainer.critic_optimizer is not None:
        parameters += list(trainer.critic.parameters())
    for parameter in parameters:
        parameter.grad = None
    trainer.accumulate_gradients(batch, rows, tensors)
    return torch.cat([p.grad.reshape(-1) if p.grad is not None else torch.zeros(p.numel()) for p in parameters])


@pytest.mark.parametrize("case", list(CASES))
def test_micro_batched_gradients_equal_the_unbatched_one(case, toy_reward, tiny_model_dir, toy_rows_file):
    config = grpo_config(CASES[case], group_size=5, prompts_per_step=2)
    trainer = grpo.GRPOTrainer(config, {"model": str(tiny_model_dir), "train": str(toy_rows_file)}, torch.device("cpu"))
    batch = random_batch(trainer)
    tensors = off_policy_tensors(trainer, batch)
    rows = torch.tensor([0, 2, 3, 5, 6, 7, 8, 9, 1])  # a shuffled minibatch of 9 of the 10 rows
    longest = int(batch.attention_mask.sum(-1).max())
    for aggregation in sorted(alg.LOSS_AGGREGATIONS):
        trainer.algo.loss_aggregation = aggregation
        trainer.aggregate = alg.LOSS_AGGREGATIONS[aggregation]
        whole = minibatch_gradient(trainer, batch, tensors, rows)
        assert whole.abs().sum() > 0, "a zero gradient would make the comparison vacuous"
        for micro in ({"micro_batch_size": 5}, {"micro_batch_size": 2}, {"max_tokens_per_micro_batch": 2 * longest}):
            gradient = minibatch_gradient(trainer, batch, tensors, rows, **micro)
            assert len(trainer.micro_batches(batch, rows)) > 1, micro  # (the settings stay in trainer.config)
            assert torch.allclose(gradient, whole, atol=1e-5, rtol=0), (aggregation, micro, (gradient - whole).abs().max().item())


def test_micro_batches_give_the_same_old_and_reference_logprobs(toy_reward, tiny_model_dir, toy_rows_file):
    config = grpo_config({"advantage_estimator": "grpo", "kl_estimator": "k3", "num_minibatches": 2})
    trainer = grpo.GRPOTrainer(config, {"model": str(tiny_model_dir), "train": str(toy_rows_file)}, torch.device("cpu"))
    batch = random_batch(trainer)
    whole_old, whole_entropy = trainer.old_logprobs(batch)
    whole_ref = trainer.reference_logprobs(batch)
    trainer.config["max_tokens_per_micro_batch"] = 12
    assert len(trainer.micro_batches(batch, torch.arange(10))) > 3
    old, entropy = trainer.old_logprobs(batch)
    mask = batch.completion_mask
    for batched, whole in ((old, whole_old), (entropy, whole_entropy), (trainer.reference_logprobs(batch), whole_ref)):
        assert torch.allclose(batched * mask, whole * mask, atol=1e-5)
