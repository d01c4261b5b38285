"""The aha curve over seeds: does the embedded default's `r1zero` (pipeline/config/default.yaml,
or an experiment layered onto it with --experiment) raise held-out accuracy, response length and
reflection rate together, for every seed?

Runs the `r1zero` path (data, tiny base, GRPO per seed, held-out evaluation
of the base, the snapshots and the final policy, the seeded report) with Snakemake in its own
results directory, then prints issue 14's three "done when" quantities for each seed:

- held-out pass@1 (avg@n over the test split) of the final policy minus the base's (>= 0.20);
- mean response length at the last GRPO step over its minimum over the run (>= 1.3), from the
  training rollouts; per-step values of 128 completions are noisy, so the check uses the
  trailing moving average the report plots (window = 5% of the steps) for both the last value and
  the minimum, and the raw ratio is printed beside it;
- reflection rate (the share of completions with a marker of the union of the published lists)
  at the last step over step 0 (>= 2), again smoothed at the end (step 0 is one batch), with the
  held-out evaluation's base and final reflection rates beside it (800 samples each).

It also draws docs/img/aha_curves.png (stages/core/plots.py, ``plot_aha_curves``): training
accuracy, length and reflection per seed, with the held-out evaluations as dashed lines.

Usage:
    python benchmarks/bench_aha_seeds.py                              # seeds 0 and 1, /tmp/bench_aha
    python benchmarks/bench_aha_seeds.py --seeds 0,1,2 --results-dir /tmp/aha3
    python benchmarks/bench_aha_seeds.py --analyse-only --results-dir /tmp/bench_aha/results

Example output row:
    | r1zero-seed0 | 0.512 | 0.781 | +0.269 | 31.0 | 44.2 | 1.43 | 0.19 | 0.55 | 2.89 | yes |
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from stages.core import plots  # noqa: E402

RUN = "r1zero"
BENCH = "countdown"
MIN_ACCURACY_GAIN = 0.20
MIN_LENGTH_RATIO = 1.3
MIN_REFLECTION_RATIO = 2.0


def run_workflow(results_dir: Path, seeds: list[int], cores: int, experiment: Path | None = None) -> float:
    """Snakemake on the default (with ``experiment`` layered on, if given) with ``r1zero`` seeded;
    returns the wall time in seconds."""
    # Inside the results directory, so that two runs in sibling directories never share it.
    config_path = results_dir / "bench_aha.yaml"
    config_path.parent.mkdir(parents=True, exist_ok=True)
    config_path.write_text(json.dumps({"results_dir": str(results_dir), "runs": {RUN: {"seeds": seeds}}}))
    started = time.time()
    config_files = ([str(experiment)] if experiment else []) + [str(config_path)]
    subprocess.run(["snakemake", str(results_dir / RUN / "report"), "--cores", str(cores), "--configfile", *config_files],
                   cwd=REPO_ROOT, check=True)
    return time.time() - started


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def series(records: list[dict], key: str) -> plots.Series:
    points = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
    return [p[0] for p in points], [p[1] for p in points]


def held_out_accuracy(scores: dict) -> float:
    return scores["avg@n"] if isinstance(scores.get("avg@n"), (int, float)) else scores["pass@1"]


def held_out_reflection(scores: dict) -> float | None:
    return ((scores.get("reflection") or {}).get("all") or {}).get("reflection_rate")


def held_out_curves(results_dir: Path, seed_run: str, base: dict, final: dict, final_step: int) -> dict[str, plots.Series]:
    """Held-out points per panel: the base at step 0, every evaluated snapshot, the final policy."""
    points = [(0, base)]
    for path in sorted((results_dir / seed_run / "eval").glob(f"step_*/{BENCH}/scores.json")):
        points.append((int(path.parts[-3].split("_")[1]), json.loads(path.read_text())))
    points.append((final_step, final))
    return {"accuracy": ([s for s, _ in points], [held_out_accuracy(x) for _, x in points]),
            "completions/mean_length": ([s for s, _ in points], [x["mean_length"] for _, x in points]),
            "completions/reflection_rate": ([s for s, _ in points], [held_out_reflection(x) or 0.0 for _, x in points])}


def seed_quantities(results_dir: Path, seed_run: str, base: dict) -> dict:
    """The three done-when quantities of one seed run, raw and smoothed."""
    metrics = read_jsonl(results_dir / seed_run / "grpo" / "metrics.jsonl")
    final = json.loads((results_dir / seed_run / "eval" / "grpo" / BENCH / "scores.json").read_text())
    steps, lengths = series(metrics, "completions/mean_length")
    _, reflection = series(metrics, "completions/reflection_rate")
    window = plots.smoothing_window(len(lengths))
    smooth_length = plots.moving_average(lengths, window)
    smooth_reflection = plots.moving_average(reflection, window)
    quantities = {
        "run": seed_run, "window": window,
        "base_pass1": held_out_accuracy(base), "final_pass1": held_out_accuracy(final),
        "length_min": min(smooth_length), "length_last": smooth_length[-1],
        "length_ratio_raw": lengths[-1] / min(lengths),
        "reflection_step0": reflection[0], "reflection_last": smooth_reflection[-1],
        "reflection_last_raw": reflection[-1],
        "eval_reflection_base": held_out_reflection(base), "eval_reflection_final": held_out_reflection(final),
        "eval_length_base": base.get("mean_length"), "eval_length_final": final.get("mean_length"),
    }
    quantities["gain"] = quantities["final_pass1"] - quantities["base_pass1"]
    quantities["length_ratio"] = quantities["length_last"] / quantities["length_min"]
    quantities["reflection_ratio"] = (quantities["reflection_last"] / quantities["reflection_step0"]
                                      if quantities["reflection_step0"] else float("inf"))
    quantities["done"] = (quantities["gain"] >= MIN_ACCURACY_GAIN and quantities["length_ratio"] >= MIN_LENGTH_RATIO
                          and quantities["reflection_ratio"] >= MIN_REFLECTION_RATIO)
    quantities["curves"] = {key: series(metrics, key) for key, _ in plots.AHA_PANELS}
    quantities["held_out"] = held_out_curves(results_dir, seed_run, base, final, steps[-1] + 1)
    return quantities


def table(rows: list[dict]) -> str:
    header = ("| run | base pass@1 | final pass@1 | gain | length min | length last | ratio (raw) | reflection step 0 "
              "| reflection last (raw) | ratio | held-out reflection base -> final | done |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for q in rows:
        lines.append(
            f"| {q['run']} | {q['base_pass1']:.3f} | {q['final_pass1']:.3f} | {q['gain']:+.3f} | {q['length_min']:.1f} | "
            f"{q['length_last']:.1f} | {q['length_ratio']:.2f} ({q['length_ratio_raw']:.2f}) | {q['reflection_step0']:.3f} | "
            f"{q['reflection_last']:.3f} ({q['reflection_last_raw']:.3f}) | {q['reflection_ratio']:.2f} | "
            f"{_fmt(q['eval_reflection_base'])} -> {_fmt(q['eval_reflection_final'])} | {'yes' if q['done'] else 'no'} |")
    return "\n".join(lines)


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1", help="comma-separated GRPO seeds (default 0,1)")
    parser.add_argument("--results-dir", type=Path, default=Path("/tmp/bench_aha/results"))
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--experiment", type=Path, default=None,
                        help="a config layered onto default.yaml (default: none, the embedded default itself)")
    parser.add_argument("--analyse-only", action="store_true", help="read an existing results directory, run nothing")
    parser.add_argument("--plot", type=Path, default=REPO_ROOT / "docs" / "img" / "aha_curves.png")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    results_dir = args.results_dir.resolve()
    if not args.analyse_only:
        wall_s = run_workflow(results_dir, seeds, args.cores, args.experiment)
        print(f"workflow wall time: {wall_s:.0f} s", file=sys.stderr)
    base = json.loads((results_dir / "models" / "tiny" / "eval" / BENCH / "scores.json").read_text())
    rows = [seed_quantities(results_dir, f"{RUN}-seed{seed}", base) for seed in seeds]
    print(f"Done when: gain >= {MIN_ACCURACY_GAIN}, length ratio >= {MIN_LENGTH_RATIO}, reflection ratio >= "
          f"{MIN_REFLECTION_RATIO} (training rollouts; last and min smoothed over {rows[0]['window']} steps)")
    print(table(rows))
    plots.plot_aha_curves(args.plot, {q["run"]: q["curves"] for q in rows},
                          title=f"{RUN}: accuracy, length and reflection vs step ({', '.join(f'seed {s}' for s in seeds)})",
                          held_out={q["run"]: q["held_out"] for q in rows})
    print(f"plot: {args.plot}", file=sys.stderr)


if __name__ == "__main__":
    main()
