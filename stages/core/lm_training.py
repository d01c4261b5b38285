"""Next-token training on token sequences with a loss mask: the base pretraining and the SFT.

Example:
    >>> batch = pad_batch([[1, 2, 3], [4, 5]], [[0, 1, 1], [1, 1]], pad_id=0)
    >>> batch["input_ids"].tolist()
    [[1, 2, 3], [4, 5, 0]]
"""
from __future__ import annotations

import math
import random

import torch

from stages.core.modeling import chunked_head_logprobs


def pad_batch(sequences: list[list[int]], loss_masks: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad token sequences; padding gets attention 0 and loss 0."""
    length = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), length), pad_id, dtype=torch.long)  # (B, L)
    attention = torch.zeros((len(sequences), length), dtype=torch.long)  # (B, L)
    loss_mask = torch.zeros((len(sequences), length), dtype=torch.float)  # (B, L)
    for row, (seq, mask) in enumerate(zip(sequences, loss_masks)):
        input_ids[row, : len(seq)] = torch.tensor(seq)
        attention[row, : len(seq)] = 1
        loss_mask[row, : len(seq)] = torch.tensor(mask, dtype=torch.float)
    return {"input_ids": input_ids, "attention_mask": attention, "loss_mask": loss_mask}


def num_loss_tokens(loss_masks: list[list[int]]) -> int:
    """Target positions that count in the loss: mask 1 on a token that has a token before it.

    >>> num_loss_tokens([[0, 1, 1], [1, 1]])
    3
    """
    return sum(sum(mask[1:]) for mask in loss_masks)


def masked_lm_loss(model, batch: dict[str, torch.Tensor], *, loss_normaliser: float | None = None,
                   chunk_tokens: int = 4096) -> torch.Tensor:
    """Cross-entropy summed over positions whose *target* token has loss_mask 1, divided by
    ``loss_normaliser`` (default: their number in this batch, i.e. the mean).

    Pass the whole optimiser batch's ``num_loss_tokens`` as ``loss_normaliser`` when the batch is
    split into micro-batches: the summed micro-batch gradients then equal the whole batch's.
    Only the hidden states of loss positions reach the LM head, in float32 chunks of
    ``chunk_tokens`` (``chunked_head_logprobs``), so no (B, L, V) logits are made.

    Example:
        >>> from transformers import Qwen2ForCausalLM
        >>> from stages.core.modeling import tiny_qwen2_config
        >>> model = Qwen2ForCausalLM(tiny_qwen2_config(vocab_size=30, hidden_size=16, num_layers=1, num_heads=2))
        >>> loss = masked_lm_loss(model, pad_batch([[1, 2, 3], [4, 5]], [[0, 1, 1], [0, 1]], pad_id=0))
        >>> loss.shape, loss.dtype
        (torch.Size([]), torch.float32)
    """
    hidden = model.base_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                              use_cache=False).last_hidden_state[:, :-1]  # (B, L-1, H)
    selected = batch["loss_mask"][:, 1:] > 0  # (B, L-1): the target token counts
    targets = batch["input_ids"][:, 1:][selected]  # (n,)
    logp, _ = chunked_head_logprobs(model.get_output_embeddings(), hidden[selected].unsqueeze(0), targets.unsqueeze(0),
                                    chunk_tokens=chunk_tokens)  # (1, n)
    normaliser = loss_normaliser if loss_normaliser is not None else max(int(selected.sum()), 1)
    return -logp.sum() / normaliser


def cosine_lr(step: int, total_steps: int, peak_lr: float, warmup_steps: int) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak."""
    if step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return peak_lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def length_bucketed_batches(num_items: int, lengths: list[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffle, then group items of similar length so padding wastes little compute."""
    order = list(range(num_items))
    rng.shuffle(order)
    chunk = batch_size * 50
    batches = []
    for start in range(0, num_items, chunk):
        block = sorted(order[start:start + chunk], key=lambda i: lengths[i])
        batches += [block[i:i + batch_size] for i in range(0, len(block), batch_size)]
    rng.shuffle(batches)
    return batches
