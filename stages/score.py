"""Stage: score a policy's cached samples on one benchmark.

Reads ``samples.jsonl`` (from ``stages.evaluate``) and the bench rows, scores every sample with
the verifier rewards of the bench's task, and writes ``scores.json``: avg@n with a bootstrap
interval over prompts, each prompt's avg@n (``per_prompt``, for paired comparisons), unbiased
pass@k, maj@k over answer equivalence classes (the math checker's, for maths), format and
truncation rates, lengths, the reflection ("aha") analytics overall and by correct / incorrect /
truncated, and a few example completions. The config is the ``eval/{bench}/score`` snapshot
(rewards, ks, estimator settings), so changing a reward weight reruns this job only.

    python -m stages.score --config results/.config/eval/countdown/score.json \\
        --input samples=results/r1zero/eval/grpo/countdown/samples.jsonl --input data=results/data/countdown/test.jsonl \\
        --output scores=results/r1zero/eval/grpo/countdown/scores.json
"""
from __future__ import annotations

import logging
import re
import time
from pathlib import Path

from pipeline.artifacts import provenance, read_jsonl, write_json_atomic
from pipeline.stage_cli import run_stage
from stages.core import reflection
from stages.core.eval_metrics import bootstrap_interval, summarise_samples
from stages.core.scoring import verifier_provenance

log = logging.getLogger("r1zero.score")
FORMAT_REWARD = "format_strict"
NUM_EXAMPLES = 3  # completions kept in scores.json for the report's examples
GENERATED_FIELDS = ("prompt_id", "sample_index", "completion", "truncated", "num_tokens")


def policy_and_run(path: str) -> tuple[str, str]:
    """(policy, run) from an artefact path: ``results/{run}/{policy}/model``, ``results/models/{base}/model``,
    ``results/{run}/eval/{policy}/{bench}/samples.jsonl`` or ``results/models/{base}/eval/{bench}/samples.jsonl``.

    Example:
        >>> policy_and_run("results/r1/eval/step_000040/countdown/samples.jsonl")
        ('step_000040', 'r1')
        >>> policy_and_run("results/models/tiny/eval/countdown/samples.jsonl"), policy_and_run("results/r1/grpo/model")
        (('base', 'base'), ('grpo', 'r1'))
    """
    parts = Path(path).parts
    if len(parts) >= 5 and parts[-3] == "eval" and parts[-5] == "models":
        return "base", "base"
    if len(parts) >= 5 and parts[-4] == "eval":
        return parts[-3], parts[-5]
    if len(parts) >= 3 and parts[-3] == "models":
        return "base", "base"
    if len(parts) >= 3:
        return parts[-2], parts[-3]
    return "policy", "run"


def step_of(policy: str) -> int | None:
    """The training step of a snapshot policy (``step_000040`` -> 40), None for other policies."""
    match = re.fullmatch(r"step_(\d+)", policy)
    return int(match.group(1)) if match else None


def answer_key(text: str, row: dict) -> str | None:
    """The normalised answer used for majority voting (maj@k).

    Taken the way the ``math`` reward takes it (the strict policy: caps, then the answer tag or the
    last box), so a vote never counts an answer that the reward would not have read.
    """
    from verifiers.math_answer import extract_prediction
    from verifiers.math_policy import get_policy

    answer, _rule = extract_prediction(text, get_policy("strict"), row.get("answer"))
    return re.sub(r"\s+", "", answer) if answer else None


def check_samples(samples: list[dict], rows_by_id: dict, where: str) -> None:
    for number, sample in enumerate(samples, start=1):
        missing = [name for name in GENERATED_FIELDS if name not in sample]
        if missing:
            raise ValueError(f"{where}:{number}: sample is missing field(s) {missing}")
        if sample["prompt_id"] not in rows_by_id:
            raise ValueError(f"{where}:{number}: prompt_id {sample['prompt_id']!r} is not in the bench's data")


def answer_equivalence(config: dict, task: str | None):
    """maj@k's equivalence for a task's answers: the math checker for maths, None (equal text) otherwise.

    Countdown and code answers are expressions and programs, not values: two that print the same
    number are not the same answer to vote for.
    """
    if config.get("maj_equivalence", "math") != "math" or task != "math":
        return None
    from verifiers.math_answer import is_equivalent

    return is_equivalent


def score_samples(samples: list[dict], rows_by_id: dict, config: dict) -> list[dict]:
    """Each sample with its rewards, verdict, extracted answer and reflection analytics."""
    from stages.core.scoring import prefetch_code_results, score_completions

    rows = [rows_by_id[sample["prompt_id"]] for sample in samples]
    texts = [sample["completion"] for sample in samples]
    prefetch_code_results(texts, rows)
    scored = score_completions(texts, rows, config["rewards"])
    markers = config.get("reflection_markers", reflection.UNION)
    out = []
    for sample, row, total, parts, correct in zip(samples, rows, scored.totals, scored.parts, scored.correct):
        analysis = reflection.analyse_response(sample["completion"], markers)
        out.append({**sample, "answer": answer_key(sample["completion"], row), "reward": total, "rewards": parts,
                    "correct": bool(correct),
                    "format_ok": parts.get(FORMAT_REWARD, _format_ok(sample["completion"], row)) >= 1.0, **analysis})
    return out


def summarise(scored: list[dict], config: dict, task: str | None) -> dict:
    summary = summarise_samples(scored, config["ks"], equivalent=answer_equivalence(config, task),
                                num_resamples=config.get("bootstrap_resamples", 1000), seed=0)
    level = config.get("confidence_level", 0.95)
    if level != 0.95:  # the summary's default interval is 95%; recompute at the configured level
        summary["avg@n_interval"] = list(bootstrap_interval(list(summary["per_prompt"].values()), level=level,
                                                            num_resamples=config.get("bootstrap_resamples", 1000)))
    summary["confidence_level"] = level
    summary["reflection"] = {"markers": config.get("reflection_markers", reflection.UNION),
                             **reflection.aggregate(scored)}
    summary["examples"] = [{"prompt_id": s["prompt_id"], "completion": s["completion"], "correct": s["correct"],
                            "truncated": s["truncated"], "markers": s["markers"]} for s in scored[:NUM_EXAMPLES]]
    return summary


def score(config: dict, samples: list[dict], data_path: str, samples_path: str, started: float,
          inputs: dict) -> dict:
    """scores.json of scored samples; run and policy are read from the samples' (or model's) path."""
    rows_by_id = {row["id"]: row for row in read_jsonl(data_path)}
    check_samples(samples, rows_by_id, samples_path)
    if not samples:
        raise ValueError(f"{samples_path}: no samples to score")
    scored = score_samples(samples, rows_by_id, config)
    tasks = sorted({rows_by_id[s["prompt_id"]].get("task") for s in samples})
    policy, run = policy_and_run(samples_path)
    scores = {"policy": policy, "run": run, "bench": config["bench"], "step": step_of(policy),
              **summarise(scored, config, tasks[0] if len(tasks) == 1 else None)}
    scores["meta"] = provenance(stage="score", config=config, inputs=inputs, started_at=started,
                                extra=verifier_provenance(config["rewards"]))
    return scores


def main(config: dict, inputs: dict, outputs: dict) -> None:
    started = time.time()
    for name in ("samples", "data"):
        if name not in inputs:
            raise ValueError(f"score: input {name!r} is required (samples.jsonl, bench rows)")
    if "scores" not in outputs:
        raise ValueError("score: output 'scores' (scores.json) is required")
    samples = read_jsonl(inputs["samples"])
    scores = score(config, samples, inputs["data"], inputs["samples"], started, inputs)
    write_json_atomic(outputs["scores"], scores)
    log.info("%s/%s on %s: avg@n %.3f [%.3f, %.3f]", scores["run"], scores["policy"], config["bench"], scores["avg@n"],
             *scores["avg@n_interval"])


def _format_ok(text: str, row: dict) -> float:
    from verifiers.format_reward import format_strict

    return format_strict(text, row)



if __name__ == "__main__":
    run_stage(main, description=__doc__)
