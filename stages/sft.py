"""Stage: cold-start SFT on chain-of-thought traces (DeepSeek-R1's cold start), loss on completion tokens only.

Sources: ``tiny_traces`` writes careful, checked Countdown traces for train prompts (the
tiny default's stand-in for R1's curated long-CoT set); ``files`` reads JSONL rows with
``prompt`` and ``completion``.

    python -m stages.sft --config results/.config/runs/coldstart/sft.json --input model=results/models/tiny/model \\
        --input data=results/data/countdown/train.jsonl --output model=results/coldstart/sft/model
"""
from __future__ import annotations

import logging
import random
import time

import torch

from pipeline.artifacts import atomic_directory, provenance, read_jsonl, write_json_atomic, write_jsonl_atomic
from pipeline.stage_cli import run_stage
from stages.core.generators import COUNTDOWN_OPS, CountdownProblem, find_chain
from stages.core.lm_training import cosine_lr, length_bucketed_batches, masked_lm_loss, num_loss_tokens, pad_batch
from stages.core.memory_plan import check_stage_fits
from stages.core.modeling import load_causal_lm, load_tokenizer, pick_device, set_cpu_threads, torch_dtype
from stages.core.precision import MixedPrecision
from stages.core.prompting import render_prompt
from stages.core.tiny_corpus import countdown_completion

log = logging.getLogger("r1zero.sft")


def tiny_trace_pairs(rows: list[dict], config: dict) -> list[tuple[dict, str]]:
    """(row, completion) pairs: careful, checked traces that end in a correct answer."""
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
        pairs.append((row, countdown_completion(rng, problem, style="careful", hint_prob=config["hint_prob"],
                                                         max_attempts=20, **chain_options)))
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


def train(model, tokenizer, sequences, masks, config: dict, device) -> list[dict]:
    from tqdm import tqdm

    optimizer = torch.optim.AdamW(model.parameters(), lr=config["lr"], weight_decay=0.0)
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
        optimizer.zero_grad(set_to_none=True)
        loss = accumulate_gradients(model, [sequences[i] for i in indices], [masks[i] for i in indices],
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
    history = train(model, tokenizer, sequences, masks, config, device)
    model.to(torch_dtype(config.get("dtype", "float32")))  # config.json then records the dtype (dtype: auto reads it)
    with atomic_directory(outputs["model"]) as out_dir:
        model.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
        write_jsonl_atomic(out_dir / "sft_metrics.jsonl", history)
        write_json_atomic(out_dir / "meta.json", provenance(stage="sft", config=config, inputs=inputs, started_at=started,
                                                            extra={"num_examples": len(pairs), "final_loss": history[-1]["loss"]}))


if __name__ == "__main__":
    run_stage(main, description=__doc__)
