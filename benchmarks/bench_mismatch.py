"""Rollout-mismatch correction on a toy: does each correction bring training back toward the
unperturbed run?

The same experiment as the learning check in tests/stages/test_learning.py (its stand-in engines
and training function are imported from there), over more seeds and every correction. A tiny
random Qwen2 policy (the test fixture's: seed 0, 2 layers, width 64) is trained by the real GRPO
stage code on CPU for ``--steps`` steps of 4 prompts x 8 completions, while a stand-in engine
samples the completions:

- ``digit_bias``: every digit token's logit raised by ``--strength`` (a systematic,
  reward-correlated engine error); the reward ``digit_target`` peaks at half digits, so the
  engine's extra digits mislead an uncorrected learner;
- ``temperature``: the engine samples at ``--strength`` x the temperature.

Each trained policy is then sampled as the trainer models it (its own weights, temperature 1;
16 prompts x 8) and scored. The table gives, per correction, the mean reward over seeds, the
sample standard deviation and the range, and the share of the perturbation's loss it wins back,
(corrected - perturbed) / (unperturbed - perturbed). Wall time per run is printed on stderr; it
is not the quantity measured here.

Usage:
    python benchmarks/bench_mismatch.py                         # digit_bias, 6 seeds, all corrections
    python benchmarks/bench_mismatch.py --engine temperature --strength 1.5 --reward digit_fraction
    python benchmarks/bench_mismatch.py --seeds 2 --corrections unperturbed,none,seq_tis

Example output row:
    | seq_tis | 0.742 | 0.031 | 0.701-0.780 | 0.95 |
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

# Run as a script from anywhere: the repository root holds the stages and tests packages.
REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

ALL_CORRECTIONS = ("unperturbed", "none", "tis", "seq_tis", "mis", "seq_mis", "icepop")


def write_fixtures(directory: Path) -> tuple[Path, Path]:
    """The learning checks' tiny random policy and 16 toy prompts (tests/stages/conftest.py)."""
    import torch
    from transformers import AutoModelForCausalLM

    from stages.core.modeling import tiny_qwen2_config
    from stages.core.tokenizer import build_tiny_tokenizer

    model_dir, rows_file = directory / "tiny_model", directory / "train.jsonl"
    torch.manual_seed(0)
    tokenizer = build_tiny_tokenizer()
    config = tiny_qwen2_config(vocab_size=len(tokenizer), hidden_size=64, num_layers=2, num_heads=2,
                               max_position_embeddings=128, eos_token_id=tokenizer.eos_token_id)
    AutoModelForCausalLM.from_config(config).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    rows = [{"id": f"toy-{i}", "source": "test", "task": "toy", "question": f"q{i}", "prompt": f"Say digits {i}:",
             "answer": None, "meta": {}} for i in range(16)]
    rows_file.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return model_dir, rows_file


def summary_rows(rewards: dict[str, list[float]]) -> list[tuple[str, float, float, float, float, float | None]]:
    """(correction, mean, sd, min, max, share recovered) per correction, in the order given."""
    means = {name: statistics.fmean(values) for name, values in rewards.items()}
    gap = means.get("unperturbed", float("nan")) - means.get("none", float("nan"))
    rows = []
    for name, values in rewards.items():
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        recovered = (means[name] - means["none"]) / gap if name not in ("unperturbed", "none") and gap > 0 else None
        rows.append((name, means[name], sd, min(values), max(values), recovered))
    return rows


def markdown_table(rewards: dict[str, list[float]]) -> str:
    lines = ["| correction | policy reward (mean) | sd | range | share of the loss won back |",
             "|---|---|---|---|---|"]
    for name, mean, sd, low, high, recovered in summary_rows(rewards):
        shown = "" if recovered is None else f"{recovered:.2f}"
        lines.append(f"| {name} | {mean:.3f} | {sd:.3f} | {low:.3f}-{high:.3f} | {shown} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=("digit_bias", "temperature"), default="digit_bias")
    parser.add_argument("--strength", type=float, default=None, help="digit_bias: logit offset (1.0); temperature: factor (1.5)")
    parser.add_argument("--reward", choices=("digit_target", "digit_fraction"), default="digit_target")
    parser.add_argument("--corrections", default=",".join(ALL_CORRECTIONS))
    parser.add_argument("--seeds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--max-new-tokens", type=int, default=None)
    parser.add_argument("--is-cap", type=float, default=None, help="tis / seq_tis cap")
    parser.add_argument("--ratio-band", default=None, help="mis / seq_mis / icepop band, e.g. 0.2,5")
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args()

    import torch

    from tests.stages.test_learning import TOY_REWARDS, Mismatch, train_under_mismatch
    from verifiers import registry

    torch.set_num_threads(1)
    for name, fn in TOY_REWARDS.items():
        registry.REWARDS[name] = fn
        registry.REWARD_RANGES[name] = (0.0, 1.0)
    overrides = {"engine": args.engine, "reward": args.reward,
                 "strength": args.strength if args.strength is not None else {"digit_bias": 1.0, "temperature": 1.5}[args.engine]}
    for field, value in (("steps", args.steps), ("max_new_tokens", args.max_new_tokens), ("is_cap", args.is_cap)):
        if value is not None:
            overrides[field] = value
    if args.ratio_band:
        overrides["ratio_low"], overrides["ratio_high"] = (float(x) for x in args.ratio_band.split(","))
    setting = dataclasses.replace(Mismatch(), **overrides)
    corrections = args.corrections.split(",")
    unknown = [name for name in corrections if name not in ALL_CORRECTIONS]
    if unknown:
        parser.error(f"--corrections: unknown {unknown}; choose from {', '.join(ALL_CORRECTIONS)}")

    rewards: dict[str, list[float]] = {name: [] for name in corrections}
    logprob_gaps: dict[str, list[float]] = {name: [] for name in corrections}
    with tempfile.TemporaryDirectory() as tmp:
        model_dir, rows_file = write_fixtures(Path(tmp))
        for seed in range(args.seeds):  # seeds outermost: a busy spell slows every correction alike
            for name in corrections:
                started = time.time()
                run = train_under_mismatch(setting, name, seed, model_dir, rows_file)
                rewards[name].append(run.policy_reward)
                logprob_gaps[name].append(run.mean_logprob_gap)
                print(f"seed {seed} {name}: reward {run.policy_reward:.3f}, mean |engine - trainer| log-prob "
                      f"{run.mean_logprob_gap:.3f} ({time.time() - started:.0f} s)", file=sys.stderr, flush=True)
    print(f"{setting}, {args.seeds} seeds\n")
    print(markdown_table(rewards))
    if args.json_out:
        args.json_out.write_text(json.dumps({"setting": dataclasses.asdict(setting), "rewards": rewards,
                                              "mean_logprob_gaps": logprob_gaps}, indent=2) + "\n")


if __name__ == "__main__":
    main()
