"""Several runs side by side: one score table, each run's gain over the base, overlaid curves.

``python -m stages.compare --config CFG.json --input metrics=results/a/grpo/metrics.jsonl
--input metrics=results/b/grpo/metrics.jsonl --input scores=... --output report=results/compare/a_vs_b``

config: ``{"runs": [names], "title": str, "name": str}`` (title and name optional; the name of
the comparison, as in ``results/compare/{name}``, goes into the default title). inputs: ``metrics`` (one metrics.jsonl
per run, in the order of ``runs``; may be left out), ``scores`` (scores.json files of any of the
runs and of the shared base). Each scores file is grouped by its ``run`` field; without one the
run (and a missing policy or bench) is read from the path:

    results/{run}/eval/{policy}/{bench}/scores.json
    results/models/{base}/eval/{bench}/scores.json      the base policy shared by runs: run "base"

The output directory holds ``compare.md``, ``compare.html``, ``reward_vs_step.png``,
``accuracy_vs_step.png``, ``length_vs_step.png`` (one line per run) and ``meta.json``.

A seeded run is compared by its name with ``members: {run: [seed runs]}`` in the config: its
seed runs' scores are pooled per prompt (one row, with the number of seeds; the paired test uses
every seed), and its training curves are the mean over seeds.

``compare_runs(results_dir, runs, out_dir)`` finds the files itself by those patterns; the
``r1zero compare`` command calls it.
"""
from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from pydantic import BaseModel, ConfigDict, Field

from pipeline.artifacts import atomic_directory, provenance, write_json_atomic, write_text_atomic
from pipeline.stage_cli import run_stage
from stages.core import plots
from stages.core.eval_metrics import paired_bootstrap, pool_per_prompt
from stages.report import (MISSING, Block, as_path_list, check_unique_scores, eval_curves, fmt_duration, fmt_fraction,
                           fmt_interval, fmt_signed, fmt_tokens, largest_k, load_metrics, load_scores, metric_series,
                           parse_config, policy_sort_key, render_html, render_markdown, summarise_training, write_csv)

LOG = logging.getLogger("stages.compare")

SHARED_BASE_RUN = "base"  # the run name given to results/models/{base}/eval/... scores
# Curves overlaid across runs: (metrics key, file name, y label).
CURVES = (("reward/total", "reward_vs_step.png", "total reward"),
          ("accuracy", "accuracy_vs_step.png", "accuracy"),
          ("completions/mean_length", "length_vs_step.png", "mean completion length (tokens)"))


class CompareConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    runs: list[str] = Field(min_length=1)
    title: str | None = None
    name: str | None = None  # the comparison's name (results/compare/{name})
    # A seeded run -> its seed runs (results/{seed run}/...); a run not listed here is its own
    # only member. Metrics inputs are one per member, in the order of runs, then members.
    members: dict[str, list[str]] = Field(default_factory=dict)

    def members_of(self, run: str) -> list[str]:
        return self.members.get(run, [run])


# ----------------------------------------------------------------------------- scores

def identity_from_path(path: str | Path) -> dict[str, str]:
    """run, policy, bench (and model for the shared base) read from a scores.json path.

    Example:
        >>> identity_from_path("results/r1/eval/grpo/countdown/scores.json")
        {'run': 'r1', 'policy': 'grpo', 'bench': 'countdown'}
        >>> identity_from_path("results/models/tiny/eval/math/scores.json")
        {'run': 'base', 'policy': 'base', 'bench': 'math', 'model': 'tiny'}
    """
    parts = Path(path).parts
    if len(parts) >= 5 and parts[-3] == "eval" and parts[-5] == "models":
        return {"run": SHARED_BASE_RUN, "policy": "base", "bench": parts[-2], "model": parts[-4]}
    if len(parts) >= 5 and parts[-4] == "eval":
        return {"run": parts[-5], "policy": parts[-3], "bench": parts[-2]}
    return {}


def load_compare_scores(paths: Sequence[str], runs: Sequence[str]) -> list[dict]:
    """Read every scores file, fill run/policy/bench from the path where the file lacks them,
    and check each belongs to one of ``runs`` (or the shared base)."""
    scored = []
    for path in paths:
        scores = dict(load_scores(path, required=("pass@1",)))
        from_path = identity_from_path(path)
        for name in ("run", "policy", "bench"):
            if scores.get(name) is None:
                if name not in from_path:
                    raise ValueError(f"{path}: no {name!r} field, and the path matches neither "
                                     "results/{run}/eval/{policy}/{bench}/scores.json nor "
                                     "results/models/{base}/eval/{bench}/scores.json")
                scores[name] = from_path[name]
        scores["_model"] = from_path.get("model")
        if scores["run"] not in runs and scores["run"] != SHARED_BASE_RUN:
            raise ValueError(f"{path}: belongs to run {scores['run']!r}, which is not among the runs compared {list(runs)}")
        scored.append((path, scores))
    _name_shared_bases(scores for _, scores in scored)
    check_unique_scores(scored, ("run", "policy", "bench"))
    return [scores for _, scores in scored]


def _name_shared_bases(score_iter: Iterable[dict]) -> None:
    """With several base models under results/models/, label each base row by its model."""
    shared = [s for s in score_iter if s["run"] == SHARED_BASE_RUN and s["_model"]]
    if len({s["_model"] for s in shared}) > 1:
        for scores in shared:
            scores["policy"] = f"base:{scores['_model']}"


def row_label(run: str, policy: str) -> str:
    """``run/policy``; the shared base is just ``base`` (or ``base:{model}``)."""
    return policy if run == SHARED_BASE_RUN else f"{run}/{policy}"


def final_policy(policies: Sequence[str]) -> str | None:
    """The policy a run ends with: grpo if it has one, else sft, else its last non-base policy."""
    for name in ("grpo", "sft"):
        if name in policies:
            return name
    others = sorted((p for p in policies if p != "base"), key=policy_sort_key)
    return others[-1] if others else None


# ----------------------------------------------------------------------------- tables

@dataclass(frozen=True)
class BenchColumns:
    bench: str
    k_pass: int | None
    k_maj: int | None


def bench_columns(score_list: Sequence[dict]) -> list[BenchColumns]:
    columns = []
    for bench in sorted({s["bench"] for s in score_list}):
        bench_scores = [s for s in score_list if s["bench"] == bench]
        columns.append(BenchColumns(bench, largest_k(bench_scores, "pass@k"), largest_k(bench_scores, "maj@k")))
    return columns


def _metric(scores: dict | None, name: str, k: int | None = None) -> Any:
    if scores is None:
        return None
    if name in ("pass@k", "maj@k"):
        return scores.get(name, {}).get(str(k)) if k else None
    return scores.get(name)


def ordered_rows(score_list: Sequence[dict], runs: Sequence[str]) -> list[tuple[str, str]]:
    """(run, policy) pairs: the shared base first, then each run in config order, policies in training order."""
    pairs = {(s["run"], s["policy"]) for s in score_list}
    order = [SHARED_BASE_RUN, *runs]
    return sorted(pairs, key=lambda pair: (order.index(pair[0]), policy_sort_key(pair[1])))


def compare_table(score_list: Sequence[dict], runs: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    """Rows run/policy with its number of seeds; per bench: pass@1, pass@k and maj@k (largest k), mean
    length, avg@n with its interval (a seeded run's pooled over its seeds, see ``pool_seeds``)."""
    columns = bench_columns(score_list)
    by_key = {(s["run"], s["policy"], s["bench"]): s for s in score_list}
    header = ["run/policy", "seeds"]
    for column in columns:
        header += [f"{column.bench} pass@1", f"{column.bench} pass@{column.k_pass or 'k'}",
                   f"{column.bench} maj@{column.k_maj or 'k'}", f"{column.bench} mean length",
                   f"{column.bench} avg@n [95% CI]"]
    rows = []
    for run, policy in ordered_rows(score_list, runs):
        seeds = {s.get("num_seeds", 1) for s in score_list if (s["run"], s["policy"]) == (run, policy)}
        row = [row_label(run, policy), "/".join(str(n) for n in sorted(seeds))]
        for column in columns:
            scores = by_key.get((run, policy, column.bench))
            row += [fmt_fraction(_metric(scores, "pass@1")), fmt_fraction(_metric(scores, "pass@k", column.k_pass)),
                    fmt_fraction(_metric(scores, "maj@k", column.k_maj)), fmt_tokens(_metric(scores, "mean_length")),
                    fmt_interval(_metric(scores, "avg@n"), _metric(scores, "avg@n_interval"))]
        rows.append(row)
    return header, rows


def _difference(final: dict | None, reference: dict | None, name: str, k: int | None = None) -> float | None:
    a, b = _metric(final, name, k), _metric(reference, name, k)
    return a - b if isinstance(a, (int, float)) and isinstance(b, (int, float)) else None


def reference_scores(by_key: dict, run: str, bench: str) -> tuple[str, dict] | None:
    """What a run's final policy is compared with: the run's own base evaluation, else the
    shared base when there is exactly one; None when neither exists."""
    own = by_key.get((run, "base", bench))
    if own is not None:
        return row_label(run, "base"), own
    shared = [(policy, s) for (r, policy, b), s in by_key.items() if r == SHARED_BASE_RUN and b == bench]
    return (row_label(SHARED_BASE_RUN, shared[0][0]), shared[0][1]) if len(shared) == 1 else None


def delta_table(score_list: Sequence[dict], runs: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    """Rows: each run's final policy; per bench: its pass@1, pass@k, maj@k and mean length minus the base's."""
    columns = bench_columns(score_list)
    by_key = {(s["run"], s["policy"], s["bench"]): s for s in score_list}
    header = ["run", "final policy"]
    for column in columns:
        header += [f"{column.bench} vs", f"{column.bench} Δpass@1", f"{column.bench} Δpass@{column.k_pass or 'k'}",
                   f"{column.bench} Δmaj@{column.k_maj or 'k'}", f"{column.bench} Δmean length"]
    rows = []
    for run in runs:
        final = final_policy(sorted({s["policy"] for s in score_list if s["run"] == run}))
        row = [run, final or MISSING]
        for column in columns:
            final_scores = by_key.get((run, final, column.bench)) if final else None
            reference = reference_scores(by_key, run, column.bench)
            ref_label, ref_scores = reference if reference else (MISSING, None)
            row += [ref_label if final_scores is not None else MISSING,
                    fmt_signed(_difference(final_scores, ref_scores, "pass@1")),
                    fmt_signed(_difference(final_scores, ref_scores, "pass@k", column.k_pass)),
                    fmt_signed(_difference(final_scores, ref_scores, "maj@k", column.k_maj)),
                    fmt_signed(_difference(final_scores, ref_scores, "mean_length"), digits=1)]
        rows.append(row)
    return header, rows


# ----------------------------------------------------------------------------- significance

NUM_RESAMPLES = 1000
CONFIDENCE_LEVEL = 0.95


def significance(a_runs: Sequence[dict], b_runs: Sequence[dict], *, num_resamples: int = NUM_RESAMPLES,
                 level: float = CONFIDENCE_LEVEL) -> dict | None:
    """Paired bootstrap of avg@n between two policies, each given as the scores of one or more runs
    (seeds) on the same bench: seeds are pooled per prompt first, then prompts are resampled.
    None when a side has no per-prompt results (scores from before intervals existed).

    Example:
        >>> a = [{"per_prompt": {f"p{i}": 1.0 for i in range(30)}}]
        >>> b = [{"per_prompt": {f"p{i}": 0.0 for i in range(30)}}, {"per_prompt": {f"p{i}": 0.5 for i in range(30)}}]
        >>> result = significance(a, b)
        >>> result["difference"], result["significant"]
        (0.75, True)
    """
    if not a_runs or not b_runs or not all(s.get("per_prompt") for s in [*a_runs, *b_runs]):
        return None
    return paired_bootstrap(pool_per_prompt([s["per_prompt"] for s in a_runs]),
                            pool_per_prompt([s["per_prompt"] for s in b_runs]), num_resamples=num_resamples, level=level)


def significance_pairs(score_list: Sequence[dict], runs: Sequence[str]) -> list[tuple[str, str, str, dict, dict]]:
    """(bench, label A, label B, scores A, scores B): each run's final policy against its base, then
    the final policies of every two runs."""
    by_key = {(s["run"], s["policy"], s["bench"]): s for s in score_list}
    pairs = []
    for column in bench_columns(score_list):
        finals = {}
        for run in runs:
            final = final_policy(sorted({s["policy"] for s in score_list if s["run"] == run}))
            if final and (run, final, column.bench) in by_key:
                finals[run] = (row_label(run, final), by_key[(run, final, column.bench)])
        for run, (label, scores) in finals.items():
            reference = reference_scores(by_key, run, column.bench)
            if reference is not None:
                pairs.append((column.bench, label, reference[0], scores, reference[1]))
        names = list(finals)
        for index, first in enumerate(names):
            for second in names[index + 1:]:
                pairs.append((column.bench, finals[first][0], finals[second][0], finals[first][1], finals[second][1]))
    return pairs


def significance_table(score_list: Sequence[dict], runs: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    """Rows: bench, A, B, avg@n of each, A - B with its paired 95% interval, p, and the verdict."""
    header = ["bench", "A", "B", "A avg@n", "B avg@n", "A - B [95% CI]", "p", "prompts", "verdict"]
    rows = []
    for bench, label_a, label_b, scores_a, scores_b in significance_pairs(score_list, runs):
        # A seeded run's side is every seed's per-prompt accuracies, pooled per prompt.
        result = significance(scores_a.get("seed_scores", [scores_a]), scores_b.get("seed_scores", [scores_b]))
        if result is None:
            rows.append([bench, label_a, label_b, fmt_fraction(scores_a.get("avg@n")), fmt_fraction(scores_b.get("avg@n")),
                         MISSING, MISSING, MISSING, "no per-prompt results"])
            continue
        low, high = result["interval"]
        rows.append([bench, label_a, label_b, fmt_fraction(scores_a.get("avg@n")), fmt_fraction(scores_b.get("avg@n")),
                     f"{result['difference']:+.3f} [{low:+.3f}, {high:+.3f}]", f"{result['p_value']:.3f}",
                     str(result["num_prompts"]), "significant" if result["significant"] else "not significant"])
    return header, rows


def training_table(metrics_by_run: dict[str, list[dict] | None]) -> tuple[list[str], list[list[str]]]:
    header = ["run", "steps", "last reward", "best reward", "last accuracy", "best accuracy", "total step time"]
    # A seeded run's records are the mean over its seeds at each step (``mean_records``).
    rows = []
    for run, records in metrics_by_run.items():
        if records is None:
            rows.append([run] + [MISSING] * (len(header) - 1))
            continue
        summary = summarise_training(records)
        reward, accuracy = summary["metrics"]["reward/total"] or {}, summary["metrics"]["accuracy"] or {}
        rows.append([run, str(summary["num_steps"]), fmt_fraction(reward.get("last")), fmt_fraction(reward.get("best")),
                     fmt_fraction(accuracy.get("last")), fmt_fraction(accuracy.get("best")),
                     fmt_duration(summary["total_time_s"])])
    return header, rows


def compare_blocks(title: str, runs: Sequence[str], score_list: list[dict], metrics_by_run: dict) -> list[Block]:
    """The document: score table with intervals, gains over the base, significance, curves, training."""
    blocks = [Block("heading1", title),
              Block("paragraph", f"Runs: {', '.join(f'`{run}`' for run in runs)}; generated "
                                 f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}."),
              Block("heading2", "Evaluation")]
    if score_list:
        header, rows = compare_table(score_list, runs)
        blocks.append(Block("table", header=header, rows=rows))
        delta_header, delta_rows = delta_table(score_list, runs)
        blocks += [Block("heading2", "Final policy vs base"),
                   Block("paragraph", "Each run's final policy (grpo, else sft) minus the base it started from "
                                      "(the run's own base evaluation, else the shared base)."),
                   Block("table", header=delta_header, rows=delta_rows)]
        significance_header, significance_rows = significance_table(score_list, runs)
        blocks += [Block("heading2", "Is the difference real? (paired bootstrap)"),
                   Block("paragraph", f"avg@n of A minus B over the prompts both were scored on, with a paired "
                                      f"percentile-bootstrap 95% interval ({NUM_RESAMPLES} resamples of prompts). "
                                      "A difference is significant only when its interval excludes 0."),
                   Block("table", header=significance_header, rows=significance_rows)]
    else:
        blocks.append(Block("paragraph", "No evaluation scores were given."))
    header, rows = training_table(metrics_by_run)
    blocks += [Block("heading2", "Training (GRPO)"), Block("table", header=header, rows=rows)]
    blocks += [Block("image", file_name, alt=f"{label} vs step") for _, file_name, label in CURVES]
    blocks += [Block("heading2", "Evaluation over training"),
               Block("paragraph", "Held-out accuracy (avg@n, shaded 95% interval), mean length and reflection rate "
                                  "of each run's checkpoints, one line per run and bench."),
               Block("image", EVAL_CURVES_FILE, alt="evaluation accuracy, length and reflection rate vs step")]
    return blocks


EVAL_CURVES_FILE = "eval_curves.png"


def run_eval_curves(data: "CompareInputs") -> dict[str, list[plots.EvalPoint]]:
    """Curve points of every run, labelled run/bench (the start policy is the run's own sft, else its base)."""
    curves = {}
    for run in data.runs:
        records = data.metrics_by_run.get(run)
        final_step = int(max(r["step"] for r in records)) + 1 if records else None
        own = [s for s in data.scores if s["run"] == run]
        benches = {s["bench"] for s in own}
        shared_base = [s for s in data.scores if s["run"] == SHARED_BASE_RUN and s["bench"] in benches
                       and not any(o["policy"] == "base" and o["bench"] == s["bench"] for o in own)]
        steps = [s for s in data.step_scores if s["run"] == run]
        for bench, points in eval_curves([*own, *[{**s, "policy": "base"} for s in shared_base]], steps, final_step).items():
            curves[f"{run}/{bench}"] = points
    return curves


# ----------------------------------------------------------------------------- seeds

def pool_seeds(score_list: Sequence[dict], members: dict[str, list[str]], *, num_resamples: int = NUM_RESAMPLES,
               level: float = CONFIDENCE_LEVEL) -> list[dict]:
    """Scores of seed runs relabelled as their seeded run, one dict per (run, policy, bench) pooled over
    its seeds (``pool_scores``: avg@n per prompt over seeds, bootstrap over prompts), keeping the
    per-seed dicts in ``seed_scores`` for the paired test. Other scores pass through unchanged.

    Example:
        >>> seeds = [{"run": "r-seed0", "policy": "grpo", "bench": "b", "pass@1": 1.0, "per_prompt": {"p": 1.0}},
        ...          {"run": "r-seed1", "policy": "grpo", "bench": "b", "pass@1": 0.5, "per_prompt": {"p": 0.5}}]
        >>> [(s["run"], s["avg@n"], s["num_seeds"]) for s in pool_seeds(seeds, {"r": ["r-seed0", "r-seed1"]})]
        [('r', 0.75, 2)]
    """
    from stages.core.eval_metrics import pool_scores

    group_of = {member: run for run, names in members.items() for member in names}
    pooled: list[dict] = []
    groups: dict[tuple, list[dict]] = {}
    for scores in score_list:
        if scores["run"] in group_of:
            groups.setdefault((group_of[scores["run"]], scores["policy"], scores["bench"]), []).append(scores)
        else:
            pooled.append(scores)
    for (run, policy, bench), seed_scores in groups.items():
        pooled.append({**pool_scores(seed_scores, num_resamples=num_resamples, level=level), "run": run,
                       "policy": policy, "bench": bench, "step": seed_scores[0].get("step"), "seed_scores": seed_scores})
    return pooled


def mean_records(records_by_seed: Sequence[list[dict]]) -> list[dict]:
    """A seeded run's training log for the comparison: at each step every seed logged, the mean over
    seeds of every numeric metric all of them carry.

    Example:
        >>> mean_records([[{"step": 0, "accuracy": 0.2}, {"step": 1, "accuracy": 0.4}], [{"step": 0, "accuracy": 0.4}]])
        [{'step': 0, 'accuracy': 0.30000000000000004}]
    """
    by_seed = [{record["step"]: record for record in records} for records in records_by_seed]
    shared = sorted(set(by_seed[0]).intersection(*by_seed[1:]))
    merged = []
    for step in shared:
        rows = [seed[step] for seed in by_seed]
        keys = [key for key in rows[0] if key != "step" and all(_is_finite(row.get(key)) for row in rows)]
        merged.append({"step": step, **{key: sum(row[key] for row in rows) / len(rows) for key in keys}})
    return merged


def _is_finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value and abs(value) != float("inf")


# ----------------------------------------------------------------------------- writing

@dataclass
class CompareInputs:
    runs: list[str]
    metrics_by_run: dict[str, list[dict] | None]
    scores: list[dict]
    step_scores: list[dict] = field(default_factory=list)


def read_compare_inputs(runs: Sequence[str], metrics_paths: dict[str, str | None], score_paths: Sequence[str],
                        step_score_paths: Sequence[str] = (), members: dict[str, list[str]] | None = None) -> CompareInputs:
    """Read and check every input. With ``members`` (seeded run -> its seed runs), ``metrics_paths``
    is keyed by seed run, and each seeded run's scores, step scores and metrics are pooled over its seeds."""
    members = members or {}
    concrete = [member for run in runs for member in members.get(run, [run])]
    metrics_by_member = {run: load_metrics(path) if path else None for run, path in metrics_paths.items()}
    step_scores = load_compare_scores(step_score_paths, concrete)
    for path, scores in zip(step_score_paths, step_scores):
        if not isinstance(scores.get("step"), int):
            raise ValueError(f"{path}: a snapshot's scores need an integer 'step' field, got {scores.get('step')!r}")
    metrics_by_run = {}
    for run in runs:
        logs = [metrics_by_member.get(member) for member in members.get(run, [run])]
        metrics_by_run[run] = (logs[0] if len(logs) == 1 else mean_records(logs)) if all(logs) else None
    scores = load_compare_scores(score_paths, concrete)
    return CompareInputs(list(runs), metrics_by_run, pool_seeds(scores, members), pool_seeds(step_scores, members))


def write_compare(out_dir: str | Path, title: str, data: CompareInputs, *, config: dict, inputs: dict, started_at: float) -> Path:
    """Build the comparison directory atomically (all inputs are already read and checked)."""
    blocks = compare_blocks(title, data.runs, data.scores, data.metrics_by_run)
    with atomic_directory(out_dir) as directory:
        for key, file_name, label in CURVES:
            curves = {run: metric_series(records, key) for run, records in data.metrics_by_run.items() if records}
            plots.plot_overlaid(directory / file_name, curves, ylabel=label, title=f"{label} vs step")
        plots.plot_eval_curves(directory / EVAL_CURVES_FILE, run_eval_curves(data), title="evaluation over training")
        if data.scores:
            write_csv(directory / "scores.csv", *compare_table(data.scores, data.runs))
            write_csv(directory / "significance.csv", *significance_table(data.scores, data.runs))
        write_text_atomic(directory / "compare.md", render_markdown(blocks))
        write_text_atomic(directory / "compare.html", render_html(blocks, directory, title))
        files = sorted(p.name for p in directory.iterdir() if not p.name.startswith("."))
        write_json_atomic(directory / "meta.json", provenance(stage="compare", config=config, inputs=inputs,
                                                              started_at=started_at, extra={"files": files}))
    LOG.info("comparison of %s written to %s", ", ".join(data.runs), out_dir)
    return Path(out_dir)


def _default_title(runs: Sequence[str], name: str | None = None) -> str:
    return f"R1-Zero comparison{f' {name!r}' if name else ''}: {', '.join(runs)}"


def _check_runs(runs: Sequence[str]) -> None:
    duplicates = sorted({run for run in runs if list(runs).count(run) > 1})
    if duplicates:
        raise ValueError(f"compare: runs listed twice: {duplicates}")
    if SHARED_BASE_RUN in runs:
        raise ValueError(f"compare: a run may not be called {SHARED_BASE_RUN!r} (the name of the shared base)")


def main(config: dict, inputs: dict, outputs: dict) -> None:
    started_at = time.time()
    cfg = parse_config(config, CompareConfig, "compare")
    _check_runs(cfg.runs)
    if "report" not in outputs:
        raise ValueError("compare: output 'report' (the comparison directory) is required")
    unknown = sorted(set(cfg.members) - set(cfg.runs))
    if unknown:
        raise ValueError(f"compare: members given for {unknown}, which are not among runs {cfg.runs}")
    concrete = [member for run in cfg.runs for member in cfg.members_of(run)]
    metrics_paths = as_path_list(inputs.get("metrics"))
    if metrics_paths and len(metrics_paths) != len(concrete):
        raise ValueError(f"compare: {len(metrics_paths)} 'metrics' inputs for {len(concrete)} runs {concrete}; "
                         "give one metrics.jsonl per run (per seed run of a seeded run), in the order of config 'runs'")
    by_run = dict(zip(concrete, metrics_paths)) if metrics_paths else {run: None for run in concrete}
    data = read_compare_inputs(cfg.runs, by_run, as_path_list(inputs.get("scores")), as_path_list(inputs.get("step_scores")),
                               cfg.members)
    write_compare(outputs["report"], cfg.title or _default_title(cfg.runs, cfg.name), data,
                  config=config, inputs=inputs, started_at=started_at)


def find_run_files(results_dir: str | Path, run: str) -> tuple[str | None, list[str], list[str]]:
    """A run's GRPO metrics (or None), its final scores files and its snapshot (step_*) scores files,
    by the results layout; an error naming the run and the paths looked at when none exists."""
    root = Path(results_dir)
    metrics = root / run / "grpo" / "metrics.jsonl"
    found = sorted(str(p) for p in root.glob(f"{run}/eval/*/*/scores.json"))
    steps = [path for path in found if Path(path).parts[-3].startswith("step_")]
    scores = [path for path in found if path not in steps]
    if not metrics.is_file() and not scores:
        raise FileNotFoundError(f"run {run!r}: nothing found; looked for {metrics} and {root / run / 'eval/*/*/scores.json'}")
    return (str(metrics) if metrics.is_file() else None), scores, steps


def find_seed_runs(results_dir: str | Path, run: str) -> list[str]:
    """The seed runs of a seeded run ``run`` (``results/{run}-seed<k>/``), by seed; [] when none.

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> for name in ("r-seed10", "r-seed2", "r-seedx", "rr-seed0"):
        ...     (root / name).mkdir()
        >>> find_seed_runs(root, "r")
        ['r-seed2', 'r-seed10']
    """
    pattern = re.compile(rf"{re.escape(run)}-seed(-?\d+)")
    seeds = [(int(match.group(1)), path.name) for path in Path(results_dir).glob(f"{run}-seed*")
             if path.is_dir() and (match := pattern.fullmatch(path.name))]
    return [name for _, name in sorted(seeds)]


def compare_runs(results_dir: str, runs: list[str], out_dir: str) -> Path:
    """Compare ``runs`` from the files under ``results_dir``; write the report to ``out_dir``.

    Reads ``{results_dir}/{run}/grpo/metrics.jsonl``, ``{results_dir}/{run}/eval/*/*/scores.json``
    (``step_*`` policies are snapshots, drawn as curves) and the shared base's
    ``{results_dir}/models/*/eval/*/scores.json`` (as run "base"). A run with no ``{run}/grpo`` but
    seed runs ``{run}-seed<k>/`` (``runs.<run>.seeds``) is compared over all its seeds.

    Usage (what ``r1zero compare run_a run_b`` does):
        compare_runs("results", ["run_a", "run_b"], "results/compare/run_a_vs_run_b")
        -> Path("results/compare/run_a_vs_run_b") holding compare.md, compare.html, the PNGs and CSVs, meta.json
    """
    started_at = time.time()
    _check_runs(runs)
    if not runs:
        raise ValueError("compare_runs: no runs given")
    members = {run: seeds for run in runs if not (Path(results_dir) / run / "grpo").exists()
               and (seeds := find_seed_runs(results_dir, run))}
    found = {member: find_run_files(results_dir, member) for run in runs for member in members.get(run, [run])}
    base_scores = sorted(str(p) for p in Path(results_dir).glob("models/*/eval/*/scores.json"))
    score_paths = base_scores + [path for _, paths, _ in found.values() for path in paths]
    step_paths = [path for _, _, paths in found.values() for path in paths]
    metrics_paths = {run: metrics for run, (metrics, _, _) in found.items()}
    data = read_compare_inputs(runs, metrics_paths, score_paths, step_paths, members)
    config = {"runs": list(runs), "title": _default_title(runs), "results_dir": str(results_dir), "members": members}
    inputs = {"metrics": [p for p in metrics_paths.values() if p], "scores": score_paths, "step_scores": step_paths}
    return write_compare(out_dir, config["title"], data, config=config, inputs=inputs, started_at=started_at)


if __name__ == "__main__":
    run_stage(main, description="Compare runs: score table, gains over the base, overlaid training curves.")
