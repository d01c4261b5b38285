"""Micro-batches: split a minibatch into pieces that fit in memory, with exact gradients.

Every forward pass of the GRPO stage (old log-probs, reference, critic values, the update) runs
over micro-batches. Two ways to cut them, both pure functions of the completion lengths:

- ``micro_batch_size``: a fixed number of sequences per micro-batch, in order;
- ``max_tokens_per_micro_batch``: dynamic batching. Sequences sorted by length are packed
  greedily so that (number of sequences) x (longest prompt + completion in the piece), the size
  of the padded tensor, stays under the budget. A single sequence longer than the budget gets a
  micro-batch of its own.

A loss aggregated over a micro-batch is not the minibatch loss: a mean over the micro-batch's
tokens weights a token of a short micro-batch more. ``loss_normaliser`` gives the divisor of the
*whole* minibatch for each aggregation; every micro-batch divides its sum by it, so the
micro-batch losses add up to the minibatch loss and the accumulated gradient equals the
unbatched one (tests/stages/test_microbatch.py checks 1, 2 and 5 micro-batches and a budget).

Example:
    >>> split_by_count(5, 2)
    [[0, 1], [2, 3], [4]]
    >>> split_by_tokens([9, 2, 3, 8], max_tokens=18)  # sorted by length: [1, 2] (2 x 3) then [3, 0] (2 x 9)
    [[1, 2], [3, 0]]
    >>> loss_normaliser("token_mean", torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]]))
    3.0
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch


def split_by_count(num_sequences: int, micro_batch_size: int | None) -> list[list[int]]:
    """Consecutive pieces of at most ``micro_batch_size`` sequences (None: one piece).

    >>> split_by_count(3, None)
    [[0, 1, 2]]
    """
    if num_sequences < 1:
        return []
    size = micro_batch_size or num_sequences
    if size < 1:
        raise ValueError(f"micro_batch_size: {size} must be >= 1")
    return [list(range(start, min(start + size, num_sequences))) for start in range(0, num_sequences, size)]


def split_by_tokens(lengths: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Dynamic batching: indices grouped so that len(piece) x max length in piece <= max_tokens.

    ``lengths`` are the padded row lengths each sequence needs (prompt + completion tokens).
    Sorting by length first keeps sequences of similar length together, so little padding is
    computed. A sequence longer than ``max_tokens`` alone exceeds it; it gets its own piece.

    >>> split_by_tokens([4, 4, 4, 4], max_tokens=10)
    [[0, 1], [2, 3]]
    >>> split_by_tokens([30, 2], max_tokens=10)  # 30 alone is over budget: a piece of its own
    [[1], [0]]
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens_per_micro_batch: {max_tokens} must be >= 1")
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    pieces: list[list[int]] = []
    current: list[int] = []
    for index in order:
        longest = max(lengths[index], max((lengths[i] for i in current), default=0))
        if current and (len(current) + 1) * longest > max_tokens:
            pieces.append(current)
            current = []
        current.append(index)
    if current:
        pieces.append(current)
    return pieces


def split_minibatch(lengths: Sequence[int], *, micro_batch_size: int | None,
                    max_tokens_per_micro_batch: int | None) -> list[list[int]]:
    """The micro-batches of one minibatch: a token budget when set, else a sequence count.

    >>> split_minibatch([5, 5, 5], micro_batch_size=2, max_tokens_per_micro_batch=None)
    [[0, 1], [2]]
    """
    if max_tokens_per_micro_batch is not None:
        return split_by_tokens(lengths, max_tokens_per_micro_batch)
    return split_by_count(len(lengths), micro_batch_size)


def _num_tokens(mask: torch.Tensor) -> float:
    return float(mask.sum())


def _num_sequences_with_tokens(mask: torch.Tensor) -> float:
    return float((mask.sum(dim=1) > 0).sum())


def _num_sequences(mask: torch.Tensor) -> float:
    return float(mask.shape[0])


# aggregation name -> the minibatch divisor it uses (see stages/core/algorithms.py)
NORMALISERS: dict[str, Callable[[torch.Tensor], float]] = {
    "token_mean": _num_tokens,
    "seq_mean_token_mean": _num_sequences_with_tokens,
    "seq_mean_token_sum_norm": _num_sequences,
}


def loss_normaliser(aggregation: str, mask: torch.Tensor) -> float:
    """The divisor of ``aggregation`` over the whole minibatch whose loss mask is ``mask`` (B, T).

    At least 1, like the aggregations themselves (an all-masked minibatch has loss 0, not nan).

    >>> loss_normaliser("seq_mean_token_mean", torch.tensor([[1.0, 1.0], [0.0, 0.0]]))
    1.0
    >>> loss_normaliser("seq_mean_token_sum_norm", torch.tensor([[1.0, 1.0], [0.0, 0.0]]))
    2.0
    """
    if aggregation not in NORMALISERS:
        raise ValueError(f"loss_aggregation: no normaliser for {aggregation!r}; known: {', '.join(NORMALISERS)}")
    return max(1.0, NORMALISERS[aggregation](mask))


def trimmed_width(mask: torch.Tensor) -> int:
    """Completion columns a micro-batch needs: up to its longest real completion (at least 1).

    >>> trimmed_width(torch.tensor([[1.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]]))
    2
    """
    real_columns = mask.bool().any(dim=0).nonzero()
    return max(1, int(real_columns.max()) + 1) if real_columns.numel() else 1


def length_buckets(lengths: Sequence[int], overhead_tokens: int) -> list[list[int]]:
    """Rows grouped into buckets of similar length, each to be padded only to its own longest row.

    Minimises sum over buckets of (rows x longest length + ``overhead_tokens``): the padded
    tokens computed plus a fixed cost per extra forward call, expressed in tokens. Rows are sorted
    by length and cut into contiguous runs by dynamic programming (exact, O(n^2) for n rows).
    A length of 0 counts as 1 (a forward needs one position).

    >>> length_buckets([20, 21, 70, 22], overhead_tokens=16)  # 3 x 22 + 1 x 70 + 16 < 4 x 70
    [[0, 1, 3], [2]]
    >>> length_buckets([20, 21, 70, 22], overhead_tokens=1000)  # a call costs more than the padding
    [[0, 1, 3, 2]]
    """
    if overhead_tokens < 0:
        raise ValueError(f"overhead_tokens: {overhead_tokens} must be >= 0")
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    sorted_lengths = [max(1, lengths[i]) for i in order]
    # best[j]: least cost of the first j sorted rows; cut[j]: where their last bucket starts.
    best = [0.0] + [float("inf")] * len(order)
    cut = [0] * (len(order) + 1)
    for end in range(1, len(order) + 1):
        longest = sorted_lengths[end - 1]  # sorted: the bucket's last row is its longest
        for start in range(end):
            cost = best[start] + (end - start) * longest + overhead_tokens
            if cost < best[end]:
                best[end], cut[end] = cost, start
    buckets, end = [], len(order)
    while end > 0:
        buckets.append(order[cut[end]:end])
        end = cut[end]
    return buckets[::-1]
