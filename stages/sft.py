"""Stage: cold-start SFT on chain-of-thought traces (DeepSeek-R1's cold start), loss on completion tokens only.

Sources: ``tiny_traces`` writes checked Countdown traces for train prompts, in the tiny corpus's
``checking`` or ``careful`` style (``trace_style``), keeping those whose answer the countdown
verifier accepts (the tiny default's stand-in for R1's curated long-CoT set); ``files`` reads
JSONL rows with ``prompt`` and ``completion``.

    python -m stages.sft --config results/.config/runs/coldstart/sft.json --input model=results/models/tiny/model \\
        --input data=results/data/countdown/train.jsonl --output model=results/coldstart/sft/model
"""
from __future__ import annotations

import logging
import random
import time

import torch

from pipeline.artifacts import atomic_directory, provenance, read_jsonl, write_json_atomic, write_jsonl_atomic
from stages.core.distributed import DistributedRun, run_stage_process, stage_ranks
from stages.core.generators import COUNTDOWN_OPS, CountdownProblem, find_chain
from stages.core.lm_training import cosine_lr, length_bucketed_batches, masked_lm_loss, num_loss_tokens, pad_batch
from stages.core.memory_plan import check_stage_fits
from stages.core.modeling import load_causal_lm, load_tokenizer, pick_device, set_cpu_threads, torch_dtype
from stages.core.precision import MixedPrecision
from stages.core.prompting import render_prompt
from stages.core.tiny_corpus import countdown_completion
from verifiers.countdown import countdown_reward

log = logging.getLogger("r1zero.sft")
# Attempts a tiny trace may take before it gives up: enough that a careful search (hint 0.8)
# practically always hits, and every clean chain of an ordered three-number problem fits.
TRACE_MAX_ATTEMPTS = 20


def tiny_trace_pairs(rows: list[dict], config: dict) -> list[tuple[dict, str]]:
    """(row, completion) pairs in ``config["trace_style"]``, kept only when the project's countdown
    verifier scores the trace's answer right: the cold start imitates successful searches only.

    Example:
        >>> from stages.core.generators import countdown_rows
        >>> rows = countdown_rows(3, seed=0, num_numbers=3, max_number=9, ops="+-", ordered=True)
        >>> config = {"seed": 0, "num_examples": 2, "trace_style": "checking", "hint_prob": 0.8}
        >>> [completion.splitlines()[0] for _, completion in tiny_trace_pairs(rows, config)]
        ['let me check', 'let me check']
    """
    rng = random.Random(config["seed"])
    pairs = []
    for row in rows:
        if row["task"] != "countdown":
            continue
        numbers, target = row["meta"]["numbers"], row["meta"]["target"]
        chain_options = {"ordered": row["meta"].get("ordered", False), "ops": row["meta"].get("ops", COUNTDOWN_OPS)}
        chain = find_chain(numbers, target, rng, **chain_options)
        if chain is None:
            continue
        problem = CountdownProblem(tuple(numbers), target, chain)
        completion = countdown_completion(rng, problem, style=config["trace_style"], hint_prob=config["hint_prob"],
                                          max_attempts=TRACE_MAX_ATTEMPTS, **chain_options)
        if countdown_reward(completion, row) < 1.0:
            continue  # a search that gave up (careful: 20 misses; checking: none can, see check_candidates)
        pairs.append((row, completion))
        if len(pairs) == config["num_examples"]:
            break
    return pairs


def file_pairs(rows: list[dict], path: str, limit: int) -> list[tuple[dict, str]]:
    pairs = []
    for number, row in enumerate(rows, start=1):
        if not isinstance(row.get("prompt"), (str, list)) or not isinstance(row.get("completion"), str):
            raise ValueError(f"{path}:{number}: needs 'prompt' (text or chat messages) and 'completion' (text)")
        pairs.append((row, row["completion"]))
    return pairs[:limit]


def encode_pairs(tokenizer, pairs: list[tuple[dict, str]]) -> tuple[list[list[int]], list[list[int]]]:
    """Token ids and loss masks (1 on completion tokens and the EOS, 0 on the prompt)."""
    sequences, masks = [], []
    for row, completion in pairs:
        prompt_ids = tokenizer.encode(render_prompt(tokenizer, row["prompt"]), add_special_tokens=False)
        completion_ids = tokenizer.encode(completion, add_special_tokens=False) + [tokenizer.eos_token_id]
        sequences.append(prompt_ids + completion_ids)
        masks.append([0] * len(prompt_ids) + [1] * len(completion_ids))
    return sequences, masks


def accumulate_gradients(model, sequences: list[list[int]], masks: list[list[int]], pad_id: int, *,
                         micro_batch_size: int, precision: MixedPrecision, device) -> float:
    """Backward over one optimiser batch in micro-batches of ``micro_batch_size`` sequences.

    Each micro-batch's summed token loss is divided by the whole batch's number of loss tokens,
    so the accumulated gradient equals the unbatched mean-loss gradient exactly. Returns the
    batch's mean token loss.
    """
    normaliser = max(num_loss_tokens(masks), 1)
    total = 0.0
    for start in range(0, len(sequences), micro_batch_size):
        batch = pad_batch(sequences[start:start + micro_batch_size], masks[start:start + micro_batch_size], pad_id)
        with precision.autocast():
            loss = masked_lm_loss(model, {k: v.to(device) for k, v in batch.items()}, loss_normaliser=normaliser)
        precision.backward(loss)
        total += loss.item()
    return total


def accumulate_ranked(engine, sequences: list[list[int]], masks: list[list[int]], pad_id: int, *,
                      micro_batch_size: int, precision: MixedPrecision, run: DistributedRun) -> float:
    """``accumulate_gradients`` for one rank of a DeepSpeed run: this rank's contiguous share of
    the optimiser batch, in micro-batches, then one engine step.

    The normaliser is the whole batch's loss-token count (every rank holds the whole batch), and
    each loss is multiplied by the world size because DeepSpeed averages gradients over ranks:
    the update equals the one-process update of the same batch. Every rank runs the same number
    of backward passes (ZeRO reduces gradients in each), padding with a zero-weighted repeat.
    Returns the batch's mean token loss (summed over ranks).
    """
    normaliser = max(num_loss_tokens(masks), 1)
    share = rank_slice(len(sequences), run.rank, run.world_size)
    local = list(range(len(sequences)))[share]
    num_pieces = run.max_int(-(-len(local) // micro_batch_size))
    # Under ZeRO-3 every call of the LM head gathers its weights (a collective), so the head runs
    # once per micro-batch on every rank: one chunk of the whole micro-batch.
    chunk_tokens = 2**62 if run.zero_stage == 3 else 4096
    total = 0.0
    for piece in range(num_pieces):
        rows = local[piece * micro_batch_size:(piece + 1) * micro_batch_size]
        weight = float(run.world_size) if rows else 0.0
        rows = rows or [0]  # a padding pass: same collectives, no gradient
        batch = pad_batch([sequences[i] for i in rows], [masks[i] for i in rows], pad_id)
        run.start_micro_step(engine)
        with precision.autocast():
            loss = masked_lm_loss(engine.module, {k: v.to(run.device) for k, v in batch.items()},
                                  loss_normaliser=normaliser, chunk_tokens=chunk_tokens)
        engine.backward(loss * weight)
        total += loss.item() if weight else 0.0
    engine.step()
    return run.sum_float(total)


def rank_slice(num_items: int, rank: int, world_size: int) -> slice:
    """Rank ``rank``'s contiguous share of ``num_items`` (the first ranks take one more when it
    does not divide).

    >>> [rank_slice(5, r, 2) for r in range(2)]
    [slice(0, 3, None), slice(3, 5, None)]
    """
    base, extra = divmod(num_items, world_size)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (1 if rank < extra else 0))


def train(model, tokenizer, sequences, masks, config: dict, device, run: DistributedRun | None = None) -> list[dict]:
    from tqdm import tqdm

    optimizer = torch.optim.AdamW(model.parameters(), lr=config["lr"], weight_decay=0.0)
    engine = None
    if run is not None:
        engine = run.trainable_engine(model, optimizer, dtype=config.get("dtype", "float32"), max_grad_norm=1.0)
        optimizer = engine.optimizer
    precision = MixedPrecision(config.get("dtype", "float32"), device)
    micro_batch_size = config.get("micro_batch_size") or config["batch_size"]
    rng = random.Random(config["seed"])
    lengths = [len(s) for s in sequences]
    epochs = [length_bucketed_batches(len(sequences), lengths, config["batch_size"], rng) for _ in range(config["epochs"])]
    batches = [b for epoch in epochs for b in epoch]
    history = []
    model.train()
    for step, indices in enumerate(tqdm(batches, desc="sft", mininterval=5)):
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(step, len(batches), config["lr"], config["warmup_steps"])
        batch_sequences, batch_masks = [sequences[i] for i in indices], [masks[i] for i in indices]
        if engine is not None:
            engine.zero_grad()
            loss = accumulate_ranked(engine, batch_sequences, batch_masks, tokenizer.pad_token_id,
                                     micro_batch_size=micro_batch_size, precision=precision, run=run)
            grad_norm = run.grad_norm(engine)
            history.append({"step": step, "loss": round(loss, 5), "grad_norm": round(grad_norm, 5)})
            continue
        optimizer.zero_grad(set_to_none=True)
        loss = accumulate_gradients(model, batch_sequences, batch_masks,
                                    tokenizer.pad_token_id, micro_batch_size=micro_batch_size, precision=precision,
                                    device=device)
        grad_norm = precision.step(optimizer, model.parameters(), max_grad_norm=1.0)
        history.append({"step": step, "loss": round(loss, 5), "grad_norm": round(grad_norm, 5)})
    if precision.num_skipped_steps:
        log.warning("sft: %d of %d float16 steps skipped (inf/nan gradients)", precision.num_skipped_steps, len(batches))
    return history


def main(config: dict, inputs: dict, outputs: dict) -> None:
    started = time.time()
    set_cpu_threads(config.get("_runtime", {}).get("threads"))
    torch.manual_seed(config["seed"])
    device = pick_device(config["device"])
    # A distributed block: this process is one rank of a DeepSpeed run (None: the one-process path).
    with stage_ranks(config, device) as run:
        _train_and_publish(config, inputs, outputs, run.device if run else device, run, started)


def _train_and_publish(config: dict, inputs: dict, outputs: dict, device, run: DistributedRun | None,
                       started: float) -> None:
    tokenizer = load_tokenizer(inputs["model"])
    rows = read_jsonl(inputs["data"])
    pairs = tiny_trace_pairs(rows, config) if config["source"] == "tiny_traces" else file_pairs(rows, inputs["data"], config["num_examples"])
    if not pairs:
        raise ValueError(f"sft: no training pairs from {inputs['data']} (source: {config['source']})")
    sequences, masks = encode_pairs(tokenizer, pairs)
    # Does it fit? Decided from config.json and the longest sequence, before any weights load.
    check_stage_fits("sft", config, inputs["model"], device, seq_tokens=max(len(s) for s in sequences))
    # Trained in float32 master weights (MixedPrecision autocasts the forward); saved in the run's dtype.
    model = load_causal_lm(inputs["model"], device=device, dtype="float32",
                           gradient_checkpointing=config.get("gradient_checkpointing", False))
    log.info("sft: %d examples, %d epochs", len(pairs), config["epochs"])
    history = train(model, tokenizer, sequences, masks, config, device, run)
    dtype = torch_dtype(config.get("dtype", "float32"))
    state = None
    if run is not None:  # the full weights, gathered module by module onto rank 0
        state = run.consolidated_state_dict(model, dtype=dtype)
        if not run.is_main:
            return
    else:
        model.to(dtype)  # config.json then records the dtype (dtype: auto reads it)
    with atomic_directory(outputs["model"]) as out_dir:
        save_model(model, out_dir, state, dtype)
        tokenizer.save_pretrained(out_dir)
        write_jsonl_atomic(out_dir / "sft_metrics.jsonl", history)
        extra = {"num_examples": len(pairs), "final_loss": history[-1]["loss"]}
        if run is not None:
            extra["distributed"] = {"world_size": run.world_size, "zero_stage": run.zero_stage}
        write_json_atomic(out_dir / "meta.json", provenance(stage="sft", config=config, inputs=inputs, started_at=started,
                                                            extra=extra))


def save_model(model, out_dir, state: dict | None, dtype: torch.dtype) -> None:
    """An HF directory; ``state`` (a DeepSpeed run's consolidated weights) replaces the module's own."""
    if state is None:
        model.save_pretrained(out_dir)
        return
    model.config.dtype = dtype  # config.json records the saved dtype, as in the one-process path
    model.save_pretrained(out_dir, state_dict=state)


if __name__ == "__main__":
    run_stage_process(main, description=__doc__)
