"""Stage: evaluate one policy on one benchmark.

Samples n completions per test prompt, scores them with the same verifiers as training, and
writes every sample (``samples.jsonl``) and the summary (``scores.json``): pass@1 (mean over
n), pass@k (unbiased estimator), maj@k, format rate, truncation rate, mean response length
overall and split by correct/incorrect.

    python -m stages.evaluate --config results/.config/eval/countdown.json --input model=results/r1zero/grpo/model \\
        --input data=results/data/countdown/test.jsonl --output samples=.../samples.jsonl --output scores=.../scores.json
"""
from __future__ import annotations

import logging
import re
import time
from pathlib import Path

import torch

from pipeline.artifacts import provenance, read_json, read_jsonl, write_json_atomic, write_jsonl_atomic
from pipeline.stage_cli import run_stage
from stages.core.eval_metrics import summarise_samples
from stages.core.modeling import load_causal_lm, load_tokenizer, pick_device, resolve_model_path, set_cpu_threads
from stages.core.prompting import encode_prompts
from stages.core.rollout import SamplingSettings, make_backend, resolve_backend_name, vllm_max_model_len
from stages.core.scoring import prefetch_code_results, score_completions

log = logging.getLogger("r1zero.evaluate")
FORMAT_REWARD = "format_strict"


def policy_and_run(model_dir: str) -> tuple[str, str]:
    """(policy, run) from the artefact path: results/{run}/{policy}/model or results/models/{base}/model."""
    parts = Path(model_dir).resolve().parts
    if len(parts) >= 3 and parts[-3] == "models":
        return "base", "base"
    if len(parts) >= 3:
        return parts[-2], parts[-3]
    return "policy", "run"


def answer_key(text: str, row: dict) -> str | None:
    """The normalised answer used for majority voting (maj@k)."""
    from verifiers.math_answer import extract_answer

    answer = extract_answer(text, fallbacks=())
    return re.sub(r"\s+", "", answer) if answer else None


def sample_rows(model_dir: str, rows: list[dict], config: dict, device) -> list[list]:
    tokenizer = load_tokenizer(model_dir)
    settings = SamplingSettings(num_samples=config["num_samples"], max_new_tokens=config["max_new_tokens"],
                                temperature=config["temperature"], top_p=config["top_p"],
                                stop_strings=tuple(config["stop_strings"]), seed=config["seed"])
    backend_name = resolve_backend_name(config["backend"])
    log.info("rollout backend: %s (asked for %r)", backend_name, config["backend"])
    if backend_name == "hf":
        backend = make_backend("hf", model=load_causal_lm(model_dir, device=device), tokenizer=tokenizer, device=device,
                               batch_size=config["batch_size"])
    else:
        from transformers import AutoConfig

        local_dir = resolve_model_path(model_dir)
        backend = make_backend("vllm", model_dir=local_dir, tokenizer=tokenizer, seed=config["seed"],
                               max_model_len=vllm_max_model_len(AutoConfig.from_pretrained(local_dir)))
    try:
        prompts = encode_prompts(tokenizer, rows)
        chunk = max(1, 256 // config["num_samples"])  # bounded memory, progress visible
        groups = []
        from tqdm import tqdm

        for start in tqdm(range(0, len(rows), chunk), desc="evaluate", mininterval=5):
            groups += backend.generate(prompts[start:start + chunk], settings)
        return groups
    finally:
        backend.close()


def main(config: dict, inputs: dict, outputs: dict) -> None:
    started = time.time()
    set_cpu_threads(config.get("_runtime", {}).get("threads"))
    torch.manual_seed(config["seed"])
    device = pick_device(config["device"])
    rows = read_jsonl(inputs["data"])
    if config["max_prompts"]:
        rows = rows[:config["max_prompts"]]
    groups = sample_rows(inputs["model"], rows, config, device)
    prefetch_code_results([c.text for group in groups for c in group], [row for row, group in zip(rows, groups) for _ in group])
    samples = []
    for row, completions in zip(rows, groups):
        scored = score_completions([c.text for c in completions], [row] * len(completions), config["rewards"])
        for index, (completion, total, parts, correct) in enumerate(zip(completions, scored.totals, scored.parts, scored.correct)):
            samples.append({
                "prompt_id": row["id"], "sample_index": index, "completion": completion.text,
                "answer": answer_key(completion.text, row), "reward": total, "rewards": parts, "correct": bool(correct),
                "format_ok": parts.get(FORMAT_REWARD, _format_ok(completion.text, row)) >= 1.0,
                "truncated": completion.truncated, "num_tokens": len(completion.token_ids),
            })
    policy, run = policy_and_run(inputs["model"])
    scores = {"policy": policy, "run": run, "bench": config["bench"], **summarise_samples(samples, config["ks"])}
    model_meta = Path(inputs["model"]) / "meta.json"
    scores["model_config_hash"] = read_json(model_meta).get("config_hash") if model_meta.exists() else None
    scores["meta"] = provenance(stage="evaluate", config=config, inputs=inputs, started_at=started)
    write_jsonl_atomic(outputs["samples"], samples)
    write_json_atomic(outputs["scores"], scores)
    log.info("%s/%s on %s: pass@1 %.3f", run, policy, config["bench"], scores["pass@1"])


def _format_ok(text: str, row: dict) -> float:
    from verifiers.format_reward import format_strict

    return format_strict(text, row)


if __name__ == "__main__":
    run_stage(main, description=__doc__)
