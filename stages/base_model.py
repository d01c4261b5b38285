"""Stage: resolve the base policy.

``kind: hf`` -- a hub id or local HF directory: checked to load with AutoTokenizer/AutoConfig and
recorded as a pointer (``source.json``), not copied (a 3B model does not belong in results/).
``kind: tiny`` -- where no weights can be downloaded: build a tiny Qwen2-architecture model with
a byte-level tokenizer in the normal HF format and pretrain it from scratch on a synthetic
Countdown corpus (stages/core/tiny_corpus.py) so that it is a weak base: it sometimes follows
the template and sometimes answers correctly, with pass@8 well above pass@1. Test prompts of
the dataset are kept out of the corpus. After pretraining, the base is probed on those held-out
prompts (stages/core/base_probe.py): pass@1 of its checking vs guessing completions and its
per-step arithmetic accuracy, written to ``base_probe.json`` and meta.json (``base_probe``).

    python -m stages.base_model --config results/.config/models/tiny.json \\
        --input test=results/data/countdown/test.jsonl --output model=results/models/tiny/model
"""
from __future__ import annotations

import logging
import os
import random
import time

import torch

from pipeline.artifacts import atomic_directory, provenance, read_jsonl, repo_path, write_json_atomic
from pipeline.stage_cli import run_stage
from stages.core.prompting import read_template
from stages.core import generators
from stages.core.base_probe import sample_and_probe
from stages.core.lm_training import cosine_lr, length_bucketed_batches, masked_lm_loss, pad_batch
from stages.core.modeling import POINTER_FILE, pick_device, set_cpu_threads, tiny_qwen2_config
from stages.core.tiny_corpus import arithmetic_drill, countdown_completion, sample_style
from stages.core.tokenizer import build_tiny_tokenizer

log = logging.getLogger("r1zero.base_model")

# The base probe samples a few completions of held-out prompts: 100 prompts x 4 samples is about
# ten seconds for the tiny base on one core and puts a pass@1 of 0.8 within about +-0.05. The
# token limit leaves room for the longest checking trace (four attempts) the corpus writes.
PROBE_PROMPTS = 100
PROBE_SAMPLES_PER_PROMPT = 4
PROBE_MAX_NEW_TOKENS = 160
PROBE_BASE_FILE = "base_probe.json"


def corpus_sequences(tokenizer, pretrain: dict, source: dict, template: str, held_out: set[str]) -> list[list[int]]:
    """Token sequences of prompt + completion in a sampled style, skipping held-out problems."""
    rng = random.Random(pretrain["seed"])
    options = {k: v for k, v in source["options"].items() if k != "question_style"}
    style = source["options"].get("question_style", "compact")
    chain_options = {"ordered": options.get("ordered", False), "ops": options.get("ops", generators.COUNTDOWN_OPS)}
    sequences = []
    while len(sequences) < pretrain["num_sequences"]:
        problem = generators.random_countdown_problem(rng, **options)
        if _problem_key(problem.numbers, problem.target) in held_out:
            continue
        text_style = sample_style(rng, pretrain["styles"])
        if text_style == "drill":
            text = arithmetic_drill(rng, problem, **chain_options)
        else:
            question = generators.countdown_question(problem.numbers, problem.target, style, chain_options["ops"])
            text = template.replace("{question}", question) + countdown_completion(
                rng, problem, style=text_style, hint_prob=pretrain["hint_prob"], max_attempts=pretrain["max_attempts"],
                **chain_options)
        sequences.append(tokenizer.encode(text) + [tokenizer.eos_token_id])
    return sequences


def _problem_key(numbers, target) -> str:
    return f"{sorted(numbers)}->{target}"


def pretrain_tiny(model, tokenizer, sequences: list[list[int]], pretrain: dict, device: torch.device) -> list[dict]:
    """Plain next-token pretraining (loss on every token); returns the loss log."""
    from tqdm import tqdm

    optimizer = torch.optim.AdamW(model.parameters(), lr=pretrain["lr"], weight_decay=0.01, betas=(0.9, 0.98))
    lengths = [len(s) for s in sequences]
    rng = random.Random(pretrain["seed"])
    batches, history = [], []
    model.train()
    for step in tqdm(range(pretrain["max_steps"]), desc="pretrain tiny base", mininterval=5):
        if not batches:
            batches = length_bucketed_batches(len(sequences), lengths, pretrain["batch_size"], rng)
        indices = batches.pop()
        batch = pad_batch([sequences[i] for i in indices], [[1] * lengths[i] for i in indices], tokenizer.pad_token_id)
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(step, pretrain["max_steps"], pretrain["lr"], pretrain["warmup_steps"])
        loss = masked_lm_loss(model, {k: v.to(device) for k, v in batch.items()})
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % 20 == 0 or step == pretrain["max_steps"] - 1:
            history.append({"step": step, "loss": round(loss.item(), 5)})
    return history


def build_tiny(config: dict, inputs: dict, out_dir, device: torch.device) -> dict:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(config["pretrain"]["seed"])
    tokenizer = build_tiny_tokenizer()
    arch = config["architecture"]
    model_config = tiny_qwen2_config(
        vocab_size=len(tokenizer), hidden_size=arch["hidden_size"], num_layers=arch["num_layers"],
        num_heads=arch["num_heads"], num_kv_heads=arch["num_kv_heads"], intermediate_size=arch["intermediate_size"],
        max_position_embeddings=arch["max_position_embeddings"], eos_token_id=tokenizer.eos_token_id)
    model = AutoModelForCausalLM.from_config(model_config).to(device)
    held_out = {_problem_key(r["meta"]["numbers"], r["meta"]["target"]) for r in read_jsonl(inputs["test"])}
    template = read_template(config["corpus_prompt"]["template"])
    sequences = corpus_sequences(tokenizer, config["pretrain"], config["corpus_source"], template, held_out)
    log.info("tiny base: %d parameters, %d corpus sequences", sum(p.numel() for p in model.parameters()), len(sequences))
    pretrain_started = time.time()
    history = pretrain_tiny(model, tokenizer, sequences, config["pretrain"], device)
    pretrain_s = time.time() - pretrain_started
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    probe = probe_base(model, tokenizer, read_jsonl(inputs["test"]), template, config["pretrain"]["seed"])
    write_json_atomic(os.path.join(out_dir, PROBE_BASE_FILE), probe)
    return {"num_parameters": sum(p.numel() for p in model.parameters()), "pretrain_loss": history,
            "corpus_sequences": len(sequences), "held_out_problems": len(held_out), "pretrain_s": round(pretrain_s, 1),
            "base_probe": probe}


def probe_base(model, tokenizer, test_rows: list[dict], template: str, seed: int) -> dict:
    """Checking vs guessing pass@1 and per-step arithmetic accuracy of the fresh base on held-out prompts."""
    started = time.time()
    probe = sample_and_probe(model, tokenizer, test_rows[:PROBE_PROMPTS], template, num_samples=PROBE_SAMPLES_PER_PROMPT,
                             max_new_tokens=PROBE_MAX_NEW_TOKENS, seed=seed)
    probe["wall_time_s"] = round(time.time() - started, 1)
    log.info("base probe: pass@1 checking %s (%d) vs guessing %s (%d); per-step arithmetic accuracy %s over %d steps",
             _fmt(probe["checking"]["pass@1"]), probe["checking"]["num"], _fmt(probe["guessing"]["pass@1"]),
             probe["guessing"]["num"], _fmt(probe["step_accuracy"]), probe["num_steps"])
    return probe


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def point_at_hub_model(config: dict, out_dir) -> dict:
    """Check the reference resolves and its tokenizer and config load; record where it lives."""
    from transformers import AutoConfig

    from stages.core.modeling import load_tokenizer, resolve_model_path

    local_dir = resolve_model_path(config["path"])
    model_config = AutoConfig.from_pretrained(local_dir)
    load_tokenizer(local_dir)
    write_json_atomic(os.path.join(out_dir, POINTER_FILE), {"model": config["path"], "local_dir": local_dir})
    return {"model_type": model_config.model_type, "local_dir": local_dir}


def main(config: dict, inputs: dict, outputs: dict) -> None:
    started = time.time()
    set_cpu_threads(config.get("_runtime", {}).get("threads"))
    device = pick_device(config["device"])
    with atomic_directory(outputs["model"]) as out_dir:
        extra = build_tiny(config, inputs, out_dir, device) if config["kind"] == "tiny" else point_at_hub_model(config, out_dir)
        write_json_atomic(out_dir / "meta.json", provenance(stage="base_model", config=config, inputs=inputs,
                                                            started_at=started, extra=extra))
    log.info("base model %s written to %s in %.0f s", config["name"], outputs["model"], time.time() - started)


if __name__ == "__main__":
    run_stage(main, description=__doc__)
