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
import torch.nn.functional as F


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


def masked_lm_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy over positions whose *target* token has loss_mask 1."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]  # (B, L-1, V)
    targets = batch["input_ids"][:, 1:]  # (B, L-1)
    mask = batch["loss_mask"][:, 1:]  # (B, L-1)
    losses = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1), reduction="none")
    return (losses * mask.reshape(-1)).sum() / mask.sum().clamp(min=1.0)


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
