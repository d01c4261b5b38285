"""Stage: generate n completions per test prompt of one benchmark with one policy.

The config holds sampling settings only (the ``eval/{bench}/generate`` snapshot), so a change
of rewards, ks or the estimator never regenerates: ``stages.score`` scores the cached samples.
Each row of ``samples.jsonl``: ``prompt_id``, ``sample_index``, ``completion``, ``truncated``,
``num_tokens``.

    python -m stages.evaluate --config results/.config/eval/countdown/generate.json \\
        --input model=results/r1zero/grpo/model --input data=results/data/countdown/test.jsonl \\
        --output samples=results/r1zero/eval/grpo/countdown/samples.jsonl
"""
from __future__ import annotations

import logging
import time

from pipeline.artifacts import read_jsonl, write_jsonl_atomic
from pipeline.stage_cli import run_stage

log = logging.getLogger("r1zero.evaluate")


def sample_rows(model_dir: str, rows: list[dict], config: dict, device) -> list[list]:
    from stages.core.modeling import load_tokenizer
    from stages.core.prompting import encode_prompts
    from stages.core.rollout import BackendRequest, SamplingSettings, create_backend

    tokenizer = load_tokenizer(model_dir)
    settings = SamplingSettings(num_samples=config["num_samples"], max_new_tokens=config["max_new_tokens"],
                                temperature=config["temperature"], top_p=config["top_p"],
                                stop_strings=tuple(config["stop_strings"]), seed=config["seed"])
    # dtype "auto": the dtype the checkpoint was saved in (config.json), as the policy trained it.
    backend = create_backend(config["backend"], BackendRequest(model_dir, tokenizer, device, dtype="auto", seed=config["seed"],
                                                               batch_size=config["batch_size"]))
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


def read_bench_rows(path: str, max_prompts: int) -> list[dict]:
    rows = read_jsonl(path)
    return rows[:max_prompts] if max_prompts else rows


def generate(config: dict, inputs: dict) -> list[dict]:
    """Unscored sample rows: prompt_id, sample_index, completion, truncated, num_tokens."""
    import torch

    from stages.core.modeling import pick_device, set_cpu_threads

    set_cpu_threads(config.get("_runtime", {}).get("threads"))
    torch.manual_seed(config["seed"])
    device = pick_device(config["device"])
    rows = read_bench_rows(inputs["data"], config["max_prompts"])
    groups = sample_rows(inputs["model"], rows, config, device)
    return [{"prompt_id": row["id"], "sample_index": index, "completion": completion.text,
             "truncated": completion.truncated, "num_tokens": len(completion.token_ids)}
            for row, completions in zip(rows, groups) for index, completion in enumerate(completions)]


def main(config: dict, inputs: dict, outputs: dict) -> None:
    started = time.time()
    for name in ("model", "data"):
        if name not in inputs:
            raise ValueError(f"evaluate: input {name!r} is required (model directory, bench rows)")
    if "samples" not in outputs:
        raise ValueError("evaluate: output 'samples' (samples.jsonl) is required; scoring is stages.score")
    samples = generate(config, inputs)
    write_jsonl_atomic(outputs["samples"], samples)
    log.info("%d samples written to %s in %.1f s", len(samples), outputs["samples"], time.time() - started)


if __name__ == "__main__":
    run_stage(main, description=__doc__)
