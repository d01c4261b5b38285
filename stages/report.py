"""Per-run report: a score table, a training summary and plots, as Markdown and self-contained HTML.

``python -m stages.report --config CFG.json --input metrics=results/R/grpo/metrics.jsonl
--input scores=results/R/eval/base/countdown/scores.json --input scores=... --output report=results/R/report``

config: ``{"run": name, "title": str, "formats": ["md", "html"]}``, all optional (Markdown is
always written; ``html`` adds ``report.html``; without ``run`` the run is the name of the
directory above the output, as in ``results/{run}/report``, so one config snapshot serves every run). inputs: ``metrics`` (GRPO metrics.jsonl), ``sft_metrics``
(optional SFT loss log), ``scores`` (one or more scores.json). The output directory holds
``report.md``, ``report.html``, ``reward_vs_step.png``, ``length_vs_step.png``,
``eval_accuracy.png`` (and ``sft_loss_vs_step.png`` with an SFT log) and ``meta.json``.

A seeded run (config ``seeds: {seed run: seed}``, in the order of the ``metrics`` inputs, one per
seed run) gets a report over its seeds instead: ``scores.csv`` (avg@n pooled per prompt over the
seeds, with its bootstrap interval over prompts), ``scores_per_seed.csv`` (each seed, and the
mean over seeds with a Student-t interval across seeds), ``training_seeds.png``/``.csv`` (reward,
accuracy, length and reflection rate vs step: the mean over seeds and its t interval) and
``eval_curves.png``/``curves.csv`` (checkpoints pooled over seeds).

Every input is read and checked before anything is written, and the directory is built under a
temporary name, so bad input (a metrics line that is not JSON, a scores file without "policy")
stops with the file and line/field named and leaves no output behind.

The document helpers here (``Block``, ``render_markdown``, ``render_html``) are shared with
``stages.compare``.
"""
from __future__ import annotations

import base64
import html
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

from pydantic import BaseModel, ConfigDict, ValidationError

from pipeline.artifacts import atomic_directory, provenance, write_json_atomic, write_text_atomic
from pipeline.stage_cli import run_stage
from stages.core import plots
from stages.core.reflection import find_markers

LOG = logging.getLogger("stages.report")

POLICY_ORDER = ("base", "sft", "grpo")  # training order; other policy names sort after these
SCORE_REQUIRED_FIELDS = ("policy", "bench", "pass@1")
MISSING = "n/a"

# Training metrics summarised as first/last/best; "best" is the max for these.
SUMMARY_METRICS = ("reward/total", "accuracy")


class ReportConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run: str | None = None  # None: read from the output path results/{run}/report
    title: str | None = None
    formats: list[Literal["md", "html"]] = ["md", "html"]
    # A seeded run's report: seed run -> seed, in the order of the metrics inputs (one per seed run).
    seeds: dict[str, int] | None = None
    bootstrap_resamples: int = 1000  # seeds only: the pooled avg@n interval (over prompts)
    confidence_level: float = 0.95  # seeds only: that interval and the t interval across seeds


# ----------------------------------------------------------------------------- loading inputs

def load_metrics(path: str | Path) -> list[dict]:
    """Records of a metrics JSONL file, each a JSON object with a numeric ``step``.

    A bad line stops with ``path:line`` and what is wrong; an empty file is an error too.

    Example:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "m.jsonl")
        >>> _ = open(p, "w").write('{"step": 1, "accuracy": 0.5}\\n\\n{"step": 2}\\n')
        >>> [r["step"] for r in load_metrics(p)]
        [1, 2]
    """
    records = []
    with open(path) as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{line_number}: not valid JSON ({error.msg})") from None
            if not isinstance(record, dict):
                raise ValueError(f"{path}:{line_number}: expected a JSON object, got {type(record).__name__}")
            if not _is_number(record.get("step")):
                raise ValueError(f"{path}:{line_number}: record has no numeric 'step' field")
            records.append(record)
    if not records:
        raise ValueError(f"{path}: no metrics records (empty file)")
    return records


def load_scores(path: str | Path, required: Sequence[str] = SCORE_REQUIRED_FIELDS) -> dict:
    """A scores.json as a dict, checked for the ``required`` fields and the types the tables read."""
    try:
        with open(path) as handle:
            scores = json.load(handle)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}:{error.lineno}: not valid JSON ({error.msg})") from None
    if not isinstance(scores, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(scores).__name__}")
    for name in required:
        if name not in scores:
            raise ValueError(f"{path}: missing field {name!r} (scores.json needs {list(required)})")
    if "pass@1" in scores and not _is_number(scores["pass@1"]):
        raise ValueError(f"{path}: field 'pass@1' must be a number, got {scores['pass@1']!r}")
    for name in ("pass@k", "maj@k"):
        table = scores.get(name, {})
        if not isinstance(table, dict) or not all(str(k).isdigit() and (_is_number(v) or v is None) for k, v in table.items()):
            raise ValueError(f"{path}: field {name!r} must map k (digits) to a number, got {table!r}")
    return scores


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def as_path_list(value: str | list[str] | None) -> list[str]:
    """An input that may be absent, one path, or a list of paths, as a list."""
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def check_unique_scores(scored: list[tuple[str, dict]], key_fields: Sequence[str]) -> None:
    """Two score files for the same (run,) policy and bench are an error naming both files."""
    seen: dict[tuple, str] = {}
    for path, scores in scored:
        key = tuple(scores[name] for name in key_fields)
        if key in seen:
            described = ", ".join(f"{name}={value!r}" for name, value in zip(key_fields, key))
            raise ValueError(f"two scores files for {described}: {seen[key]} and {path}")
        seen[key] = path


# ----------------------------------------------------------------------------- summaries

def metric_series(records: Sequence[dict], key: str) -> plots.Series:
    """(steps, values) of ``key`` over the records that carry it as a finite number, in step
    order, one value per step (the last logged).

    Example:
        >>> metric_series([{"step": 1, "kl": 0.1}, {"step": 2}, {"step": 3, "kl": None}, {"step": 4, "kl": 0.3}], "kl")
        ([1, 4], [0.1, 0.3])
    """
    by_step: dict[float, float] = {}
    for record in records:
        value = record.get(key)
        if _is_number(value):
            # A run resumed from a checkpoint may log a step twice: the later record wins.
            by_step[record["step"]] = float(value)
    steps = sorted(by_step)
    return steps, [by_step[step] for step in steps]


def first_last_best(series: plots.Series, best: Literal["max", "min"] = "max") -> dict | None:
    """First, last and best value of a series, with the step of the best; None when empty.

    Example:
        >>> first_last_best(([1, 2, 3], [0.2, 0.9, 0.5]))
        {'first': 0.2, 'last': 0.5, 'best': 0.9, 'best_step': 2}
    """
    steps, values = series
    if not values:
        return None
    pick = max if best == "max" else min
    best_index = pick(range(len(values)), key=values.__getitem__)
    return {"first": values[0], "last": values[-1], "best": values[best_index], "best_step": steps[best_index]}


def summarise_training(records: Sequence[dict]) -> dict:
    """Steps, total time and first/last/best of reward and accuracy over a GRPO metrics log.

    Total time is the sum of ``time/step_s`` over distinct steps (None when no record has it).
    """
    step_times = metric_series(records, "time/step_s")[1]
    steps = [record["step"] for record in records]
    return {
        "num_records": len(records),
        "num_steps": len(set(steps)),
        "first_step": min(steps),
        "last_step": max(steps),
        "total_time_s": sum(step_times) if step_times else None,
        "metrics": {key: first_last_best(metric_series(records, key)) for key in SUMMARY_METRICS},
    }


def policy_sort_key(policy: str) -> tuple[int, str]:
    """Training order (base, sft, grpo), then other policies by name."""
    return (POLICY_ORDER.index(policy) if policy in POLICY_ORDER else len(POLICY_ORDER), policy)


def largest_k(score_list: Sequence[dict], table: str) -> int | None:
    """The largest k present in any of the scores' ``pass@k``/``maj@k`` tables."""
    ks = [int(k) for scores in score_list for k, value in scores.get(table, {}).items() if value is not None]
    return max(ks) if ks else None


# ----------------------------------------------------------------------------- formatting

def fmt_fraction(value: Any) -> str:
    """A score in [0, 1] to three decimals; ``n/a`` for a missing value."""
    return f"{value:.3f}" if _is_number(value) else MISSING


def fmt_tokens(value: Any) -> str:
    return f"{value:.1f}" if _is_number(value) else MISSING


def fmt_signed(value: Any, digits: int = 3) -> str:
    return f"{value:+.{digits}f}" if _is_number(value) else MISSING


def fmt_interval(value: Any, interval: Any) -> str:
    """``0.412 [0.380, 0.445]``: a score with its interval (the score alone when there is none).

    Example:
        >>> fmt_interval(0.5, [0.25, 0.75]), fmt_interval(0.5, None), fmt_interval(None, None)
        ('0.500 [0.250, 0.750]', '0.500', 'n/a')
    """
    if not _is_number(value):
        return MISSING
    if isinstance(interval, (list, tuple)) and len(interval) == 2 and all(_is_number(v) for v in interval):
        return f"{value:.3f} [{interval[0]:.3f}, {interval[1]:.3f}]"
    return f"{value:.3f}"


def fmt_duration(seconds: Any) -> str:
    """``1234.5`` -> ``1234.5 s (20.6 min)``."""
    if not _is_number(seconds):
        return MISSING
    return f"{seconds:.1f} s ({seconds / 60:.1f} min)" if seconds >= 60 else f"{seconds:.1f} s"


# ----------------------------------------------------------------------------- documents

@dataclass
class Block:
    """One piece of a report: ``kind`` is heading1/heading2/paragraph/table/image/code.

    For a table, ``header`` and ``rows`` hold the cells; for an image, ``text`` is the file name
    inside the report directory and ``alt`` its caption.
    """

    kind: Literal["heading1", "heading2", "paragraph", "table", "image", "code"]
    text: str = ""
    header: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    alt: str = ""


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(blocks: Sequence[Block]) -> str:
    """GitHub-flavoured Markdown; images are linked by their file name in the same directory.

    Example:
        >>> print(render_markdown([Block("heading1", "T"), Block("table", header=["a", "b"], rows=[["1", "x|y"]])]))
        # T
        <BLANKLINE>
        | a | b |
        | --- | --- |
        | 1 | x\\|y |
        <BLANKLINE>
    """
    parts = []
    for block in blocks:
        if block.kind == "heading1":
            parts.append(f"# {block.text}")
        elif block.kind == "heading2":
            parts.append(f"## {block.text}")
        elif block.kind == "paragraph":
            parts.append(block.text)
        elif block.kind == "table":
            lines = ["| " + " | ".join(_md_cell(cell) for cell in block.header) + " |",
                     "| " + " | ".join("---" for _ in block.header) + " |"]
            lines += ["| " + " | ".join(_md_cell(cell) for cell in row) + " |" for row in block.rows]
            parts.append("\n".join(lines))
        elif block.kind == "image":
            parts.append(f"![{block.alt}]({block.text})")
        elif block.kind == "code":
            fence = "````" if "```" in block.text else "```"
            parts.append(f"{fence}text\n{block.text}\n{fence}")
    return "\n\n".join(parts) + "\n"


_HTML_STYLE = """body { font-family: sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f3f3f3; }
img { max-width: 100%; display: block; margin: 1em 0; }
code { background: #f3f3f3; padding: 0 0.2em; }
pre { background: #f7f7f7; padding: 0.6em; white-space: pre-wrap; font-size: 0.85em; }"""


def _html_inline(text: str) -> str:
    """Escape, then turn Markdown `code` spans into <code>."""
    escaped = html.escape(text)
    pieces = escaped.split("`")
    return "".join(f"<code>{piece}</code>" if index % 2 else piece for index, piece in enumerate(pieces))


def render_html(blocks: Sequence[Block], image_dir: str | Path, title: str) -> str:
    """A self-contained HTML page: the images are read from ``image_dir`` and embedded as base64."""
    body = []
    for block in blocks:
        if block.kind in ("heading1", "heading2"):
            tag = "h1" if block.kind == "heading1" else "h2"
            body.append(f"<{tag}>{_html_inline(block.text)}</{tag}>")
        elif block.kind == "paragraph":
            body.append(f"<p>{_html_inline(block.text)}</p>")
        elif block.kind == "table":
            header = "".join(f"<th>{html.escape(cell)}</th>" for cell in block.header)
            rows = "".join("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>\n" for row in block.rows)
            body.append(f"<table>\n<thead><tr>{header}</tr></thead>\n<tbody>\n{rows}</tbody>\n</table>")
        elif block.kind == "image":
            encoded = base64.b64encode((Path(image_dir) / block.text).read_bytes()).decode("ascii")
            body.append(f'<img alt="{html.escape(block.alt)}" src="data:image/png;base64,{encoded}">')
        elif block.kind == "code":
            body.append(f"<pre>{html.escape(block.text)}</pre>")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{html.escape(title)}</title>\n<style>\n{_HTML_STYLE}\n</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")


# ----------------------------------------------------------------------------- report content

def score_table(score_list: Sequence[dict]) -> tuple[list[str], list[list[str]]]:
    """Rows: policy; columns: for each bench, pass@1, pass@k (largest k), maj@k, format rate,
    truncation rate, mean length, mean length of correct and of incorrect samples."""
    benches = sorted({scores["bench"] for scores in score_list})
    policies = sorted({scores["policy"] for scores in score_list}, key=policy_sort_key)
    by_key = {(scores["policy"], scores["bench"]): scores for scores in score_list}
    header = ["policy"]
    columns: list[tuple[str, Any]] = []  # (bench, getter)
    for bench in benches:
        bench_scores = [s for s in score_list if s["bench"] == bench]
        k_pass, k_maj = largest_k(bench_scores, "pass@k"), largest_k(bench_scores, "maj@k")
        bench_columns = [
            ("pass@1", lambda s: fmt_fraction(s.get("pass@1"))),
            (f"pass@{k_pass or 'k'}", lambda s, k=k_pass: fmt_fraction(s.get("pass@k", {}).get(str(k)))),
            (f"maj@{k_maj or 'k'}", lambda s, k=k_maj: fmt_fraction(s.get("maj@k", {}).get(str(k)))),
            ("format rate", lambda s: fmt_fraction(s.get("format_rate"))),
            ("truncation rate", lambda s: fmt_fraction(s.get("truncation_rate"))),
            ("mean length", lambda s: fmt_tokens(s.get("mean_length"))),
            ("mean length correct", lambda s: fmt_tokens(s.get("mean_length_correct"))),
            ("mean length incorrect", lambda s: fmt_tokens(s.get("mean_length_incorrect"))),
            ("avg@n [95% CI]", lambda s: fmt_interval(s.get("avg@n"), s.get("avg@n_interval"))),
        ]
        header += [f"{bench} {name}" for name, _ in bench_columns]
        columns += [(bench, getter) for _, getter in bench_columns]
    rows = []
    for policy in policies:
        row = [policy]
        for bench, getter in columns:
            scores = by_key.get((policy, bench))
            row.append(getter(scores) if scores is not None else MISSING)
        rows.append(row)
    return header, rows


def eval_bars(score_list: Sequence[dict]) -> list[plots.EvalBar]:
    """Bars for ``plots.plot_eval_accuracy``: pass@1 per policy per bench, pass@k at the bench's largest k."""
    bars = []
    for bench in sorted({s["bench"] for s in score_list}):
        bench_scores = sorted((s for s in score_list if s["bench"] == bench), key=lambda s: policy_sort_key(s["policy"]))
        k = largest_k(bench_scores, "pass@k")
        for scores in bench_scores:
            pass_k = scores.get("pass@k", {}).get(str(k)) if k else None
            bars.append(plots.EvalBar(policy=scores["policy"], bench=bench, pass_at_1=float(scores["pass@1"]),
                                      pass_at_k=pass_k, k=k if pass_k is not None else None))
    return bars


def training_blocks(summary: dict) -> list[Block]:
    steps_text = (f"Steps: {summary['num_records']} records, step {summary['first_step']} to {summary['last_step']}. "
                  f"Total step time: {fmt_duration(summary['total_time_s'])}.")
    rows = []
    for key, values in summary["metrics"].items():
        if values is None:
            rows.append([key, MISSING, MISSING, MISSING, MISSING])
        else:
            rows.append([key, fmt_fraction(values["first"]), fmt_fraction(values["last"]),
                         fmt_fraction(values["best"]), str(values["best_step"])])
    return [Block("paragraph", steps_text), Block("table", header=["metric", "first", "last", "best", "best step"], rows=rows)]


def sft_blocks(records: Sequence[dict]) -> list[Block]:
    loss = first_last_best(metric_series(records, "loss"), best="min")
    if loss is None:
        return [Block("paragraph", f"SFT log: {len(records)} records, none with a 'loss'.")]
    text = (f"SFT: {len(records)} records, step {records[0]['step']} to {records[-1]['step']}. "
            f"Loss {loss['first']:.4f} first, {loss['last']:.4f} last, {loss['best']:.4f} lowest (step {loss['best_step']}).")
    return [Block("paragraph", text), Block("image", "sft_loss_vs_step.png", alt="SFT loss vs step")]


# ----------------------------------------------------------------------------- curves over training

TRAINING_REFLECTION_KEY = "completions/reflection_rate"  # what GRPO logs per step (stages/core/reflection.py)
NUM_EXAMPLE_COMPLETIONS = 2  # per step shown, first and last archived step
EXAMPLE_MAX_CHARS = 800


def eval_point(step: float, scores: dict) -> plots.EvalPoint:
    """A curve point from one scores.json (avg@n, else pass@1; its interval; length; reflection rate)."""
    accuracy = scores.get("avg@n", scores.get("pass@1"))
    interval = scores.get("avg@n_interval") or [None, None]
    reflection_rate = ((scores.get("reflection") or {}).get("all") or {}).get("reflection_rate")
    return plots.EvalPoint(step=step, accuracy=float(accuracy), low=interval[0], high=interval[1],
                           mean_length=scores.get("mean_length"), reflection_rate=reflection_rate)


def eval_curves(final_scores: Sequence[dict], step_scores: Sequence[dict], final_step: int | None) -> dict[str, list[plots.EvalPoint]]:
    """Per bench: the start policy at step 0 (sft when the run has one, else the base), every
    evaluated snapshot at its step, and the final GRPO policy at ``final_step``.

    Example:
        >>> final = [{"policy": "base", "bench": "b", "pass@1": 0.1}, {"policy": "grpo", "bench": "b", "pass@1": 0.6}]
        >>> steps = [{"policy": "step_000020", "step": 20, "bench": "b", "pass@1": 0.4}]
        >>> [(p.step, p.accuracy) for p in eval_curves(final, steps, 40)["b"]]
        [(0, 0.1), (20, 0.4), (40, 0.6)]
    """
    curves: dict[str, list[plots.EvalPoint]] = {}
    policies = {s["policy"] for s in final_scores}
    start_policy = "sft" if "sft" in policies else "base"
    for scores in final_scores:
        if scores["policy"] == start_policy:
            curves.setdefault(scores["bench"], []).append(eval_point(0, scores))
        elif scores["policy"] == "grpo" and final_step is not None:
            curves.setdefault(scores["bench"], []).append(eval_point(final_step, scores))
    for scores in step_scores:
        curves.setdefault(scores["bench"], []).append(eval_point(scores["step"], scores))
    return {bench: sorted(points, key=lambda p: p.step) for bench, points in sorted(curves.items())}


def curve_table(curves: dict[str, list[plots.EvalPoint]]) -> tuple[list[str], list[list[str]]]:
    header = ["bench", "step", "avg@n [95% CI]", "mean length", "reflection rate"]
    rows = [[bench, f"{point.step:g}", fmt_interval(point.accuracy, [point.low, point.high]),
             fmt_tokens(point.mean_length), fmt_fraction(point.reflection_rate)]
            for bench, points in curves.items() for point in points]
    return header, rows


def training_order(scores: dict) -> tuple:
    """Sort key of scores: base, sft, snapshots by step, then the final policies."""
    is_step = scores.get("step") is not None
    rank = 2 if is_step else policy_sort_key(scores["policy"])[0] + (0 if scores["policy"] in ("base", "sft") else 3)
    return rank, scores.get("step") or 0, scores["policy"], scores["bench"]


def reflection_table(score_list: Sequence[dict]) -> tuple[list[str], list[list[str]]]:
    """Per policy or checkpoint (step_NNNNNN, in step order) and bench: reflection rate and
    think/answer length (characters) by outcome."""
    header = ["policy", "bench", "outcome", "responses", "reflection rate", "think chars", "answer chars"]
    rows = []
    for scores in sorted(score_list, key=training_order):
        for outcome, group in (scores.get("reflection") or {}).items():
            if isinstance(group, dict) and "num" in group:
                rows.append([scores["policy"], scores["bench"], outcome, str(group["num"]),
                             fmt_fraction(group["reflection_rate"]), fmt_tokens(group["think_chars"]),
                             fmt_tokens(group["answer_chars"])])
    return header, rows


def rollout_examples(rollouts_dir: str | Path | None) -> list[tuple[int, list[dict]]]:
    """(step, the first completions) of the first and the last archived rollout step, [] when none."""
    if not rollouts_dir or not Path(rollouts_dir).is_dir():
        return []
    files = sorted(Path(rollouts_dir).glob("step_*.jsonl"))
    chosen = files[:1] + files[-1:] if len(files) > 1 else files
    examples = []
    for path in chosen:
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        examples.append((int(path.stem.split("_")[1]), records[:NUM_EXAMPLE_COMPLETIONS]))
    return examples


def example_blocks(examples: list[tuple[int, list[dict]]]) -> list[Block]:
    if not examples:
        return [Block("paragraph", "No archived training rollouts (grpo logging.rollouts_every).")]
    blocks = []
    for step, records in examples:
        blocks.append(Block("paragraph", f"Step {step}:"))
        for record in records:
            text = str(record.get("completion", ""))
            shown = text if len(text) <= EXAMPLE_MAX_CHARS else text[:EXAMPLE_MAX_CHARS] + " [...]"
            markers = ", ".join(find_markers(text)) or "none"
            blocks.append(Block("code", f"reward {record.get('reward')}, reflection markers: {markers}\n{shown}"))
    return blocks


def base_probes(score_list: Sequence[dict]) -> list[tuple[str, dict]]:
    """(bench, base probe) for each Countdown bench the base was evaluated on: checking vs guessing
    pass@1 and per-step arithmetic accuracy of its evaluation samples (stages/core/base_probe.py),
    read from the samples and data files its scores.json lists as inputs; none when they are gone."""
    return [(bench, probe) for bench, _, probe in policy_probes([s for s in score_list if s.get("policy") == "base"])]


def policy_probes(score_list: Sequence[dict], label_runs: bool = False) -> list[tuple[str, str, dict]]:
    """(bench, policy label, probe) for every evaluated policy or snapshot (``step_NNNNNN``) of a
    Countdown bench whose samples and data files (its scores.json's inputs) still exist; with
    ``label_runs`` (a seeded report) the label names the seed run too."""
    from stages.core.base_probe import probe_eval_samples

    probes = []
    for scores in score_list:
        inputs = (scores.get("meta") or {}).get("inputs") or {}
        samples, data = list(inputs.get("samples") or {}), list(inputs.get("data") or {})
        if len(samples) != 1 or len(data) != 1:
            continue
        if not (Path(samples[0]).is_file() and Path(data[0]).is_file()):
            LOG.warning("probe skipped for %s %s: %s or %s is missing", scores.get("policy"), scores.get("bench"),
                        samples[0], data[0])
            continue
        probe = probe_eval_samples(_jsonl(samples[0]), _jsonl(data[0]))
        if probe is not None:
            label = str(scores.get("policy"))
            if label_runs and scores.get("run") and scores.get("policy") != "base":
                label = f"{scores['run']}: {label}"
            probes.append((str(scores.get("bench")), label, probe))
    return probes


def check_quality_table(probes: Sequence[tuple[str, str, dict]]) -> tuple[list[str], list[list[str]]]:
    """One row per policy: how much it checks, and whether its written checks still do work."""
    header = ["policy", "bench", "completions", "checking share", "pass@1 checking", "pass@1 guessing",
              "written steps right", "verdicts consistent"]
    rows = [[policy, bench, str(probe["num_completions"]), fmt_fraction(probe["checking_rate"]),
             fmt_fraction(probe["checking"]["pass@1"]), fmt_fraction(probe["guessing"]["pass@1"]),
             fmt_fraction(probe["step_accuracy"]), fmt_fraction(probe.get("verdict_consistency"))]
            for bench, policy, probe in probes]
    return header, rows


def check_quality_blocks(score_list: Sequence[dict], label_runs: bool = False) -> list[Block]:
    """The "are the checks real?" section over the base, every snapshot and the final policy."""
    ordered = sorted(score_list, key=lambda scores: (str(scores.get("run") if label_runs and scores.get("policy") != "base" else ""),
                                                      *training_order(scores)))
    probes = policy_probes(ordered, label_runs)
    if not probes:
        return []
    return [Block("heading2", "Are the checks real?"),
            Block("paragraph", "A rising reflection rate shows that the policy writes checks, not that they work. "
                               "Per evaluated policy: the share of `a op b = c` steps it writes that are right, and "
                               "the share of its written \"R vs T yes/no\" verdicts that follow the numbers. When RL "
                               "keeps the checking words but these fall, the checks have become decoration: the "
                               "answer is found some other way (the superficial self-reflection of "
                               "understand-r1-zero)."),
            table_block(*check_quality_table(probes))]


def _jsonl(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def base_probe_table(probes: Sequence[tuple[str, dict]]) -> tuple[list[str], list[list[str]]]:
    header = ["bench", "completions", "class", "pass@1", "per-step arithmetic accuracy"]
    rows = []
    for bench, probe in probes:
        for name in ("checking", "guessing"):
            group = probe[name]
            rows.append([bench, str(group["num"]), name, fmt_fraction(group["pass@1"]), ""])
        rows.append([bench, str(probe["num_completions"]), "all", fmt_fraction(probe["pass@1"]),
                     f"{fmt_fraction(probe['step_accuracy'])} ({probe['num_steps']} steps)"])
    return header, rows


def base_probe_blocks(score_list: Sequence[dict]) -> list[Block]:
    probes = base_probes(score_list)
    if not probes:
        return []
    return [Block("heading2", "The base before RL: does checking pay?"),
            Block("paragraph", "The base's evaluation samples, split by whether they check (a reflection marker of "
                               "the published lists, or a yes/no verdict on an attempt) or guess, and the share of "
                               "their `a op b = c` steps that are right. RL can only amplify checking that is more "
                               "often right than guessing."),
            table_block(*base_probe_table(probes))]


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A table as CSV (the Snakemake report shows these as sortable tables)."""
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    write_text_atomic(path, buffer.getvalue())


@dataclass
class ReportInputs:
    metrics: list[dict]
    sft_metrics: list[dict] | None
    scores: list[dict]
    step_scores: list[dict] = field(default_factory=list)
    rollouts: list[tuple[int, list[dict]]] = field(default_factory=list)

    @property
    def final_step(self) -> int:
        """Steps trained: metrics count steps from 0, so the final weights are after last_step + 1."""
        return int(max(record["step"] for record in self.metrics)) + 1

    def curves(self) -> dict[str, list[plots.EvalPoint]]:
        return eval_curves(self.scores, self.step_scores, self.final_step)


def read_report_inputs(inputs: dict) -> ReportInputs:
    """Read and check every input before anything is written."""
    if not inputs.get("metrics"):
        raise ValueError("report: input 'metrics' (the GRPO metrics.jsonl) is required")
    metrics_paths = as_path_list(inputs["metrics"])
    if len(metrics_paths) != 1:
        raise ValueError(f"report: input 'metrics' takes one file, got {metrics_paths}")
    sft_paths = as_path_list(inputs.get("sft_metrics"))
    if len(sft_paths) > 1:
        raise ValueError(f"report: input 'sft_metrics' takes at most one file, got {sft_paths}")
    scored = [(path, load_scores(path)) for path in as_path_list(inputs.get("scores"))]
    check_unique_scores(scored, ("policy", "bench"))
    step_scored = [(path, load_scores(path, required=(*SCORE_REQUIRED_FIELDS, "step")))
                   for path in as_path_list(inputs.get("step_scores"))]
    check_unique_scores(step_scored, ("policy", "bench"))
    for path, scores in step_scored:
        if not _is_number(scores["step"]):
            raise ValueError(f"{path}: field 'step' must be a number (a GRPO snapshot's step), got {scores['step']!r}")
    rollouts = as_path_list(inputs.get("rollouts"))
    return ReportInputs(metrics=load_metrics(metrics_paths[0]),
                        sft_metrics=load_metrics(sft_paths[0]) if sft_paths else None,
                        scores=[scores for _, scores in scored], step_scores=[scores for _, scores in step_scored],
                        rollouts=rollout_examples(rollouts[0] if rollouts else None))


def report_blocks(cfg: ReportConfig, title: str, data: ReportInputs) -> list[Block]:
    blocks = [Block("heading1", title),
              Block("paragraph", f"Run `{cfg.run}`, report generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}."),
              Block("heading2", "Evaluation")]
    if data.scores:
        header, rows = score_table(data.scores)
        blocks.append(Block("table", header=header, rows=rows))
    else:
        blocks.append(Block("paragraph", "No evaluation scores were given."))
    blocks += [Block("paragraph", "avg@n: the mean over n samples per prompt, then over prompts; the interval is a "
                                  "percentile bootstrap over prompts (95%)."),
               Block("image", "eval_accuracy.png", alt="pass@1 per policy and benchmark"),
               *base_probe_blocks(data.scores),
               Block("heading2", "Curves over training"),
               Block("paragraph", "Accuracy (avg@n, shaded 95% interval), mean completion length and reflection rate "
                                  "of the start policy (step 0), every evaluated GRPO snapshot and the final policy."),
               Block("image", "eval_curves.png", alt="accuracy, length and reflection rate vs step"),
               Block("table", header=curve_table(data.curves())[0], rows=curve_table(data.curves())[1]),
               Block("heading2", "Reflection (\"aha\") by outcome"),
               Block("table", header=reflection_table([*data.scores, *data.step_scores])[0],
                     rows=reflection_table([*data.scores, *data.step_scores])[1]),
               *check_quality_blocks([*data.scores, *data.step_scores]),
               Block("heading2", "Example completions (training rollouts, first and last archived step)"),
               *example_blocks(data.rollouts),
               Block("heading2", "Training (GRPO)"),
               *training_blocks(summarise_training(data.metrics)),
               Block("image", "reward_vs_step.png", alt="reward and accuracy vs step"),
               Block("image", "length_vs_step.png", alt="completion length and clipped ratio vs step")]
    if data.sft_metrics is not None:
        blocks += [Block("heading2", "Cold-start SFT"), *sft_blocks(data.sft_metrics)]
    return blocks


def write_plots(directory: Path, run: str, data: ReportInputs) -> None:
    plots.plot_reward_accuracy(directory / "reward_vs_step.png", metric_series(data.metrics, "reward/total"),
                               metric_series(data.metrics, "accuracy"), title=f"{run}: reward and accuracy")
    plots.plot_length_clipped(directory / "length_vs_step.png", metric_series(data.metrics, "completions/mean_length"),
                              metric_series(data.metrics, "completions/clipped_ratio"), title=f"{run}: completion length")
    plots.plot_eval_accuracy(directory / "eval_accuracy.png", eval_bars(data.scores), title=f"{run}: evaluation")
    training_reflection = metric_series(data.metrics, TRAINING_REFLECTION_KEY)
    plots.plot_eval_curves(directory / "eval_curves.png", data.curves(), title=f"{run}: evaluation over training",
                           training_reflection={run: training_reflection} if training_reflection[0] else None)
    if data.scores:
        write_csv(directory / "scores.csv", *score_table(data.scores))
    write_csv(directory / "curves.csv", *curve_table(data.curves()))
    if data.sft_metrics is not None:
        plots.plot_overlaid(directory / "sft_loss_vs_step.png", {run: metric_series(data.sft_metrics, "loss")},
                            ylabel="SFT loss", title=f"{run}: cold-start SFT loss")


# ----------------------------------------------------------------------------- several seeds

# Training curves shown across seeds: (metrics key, panel label, CSV/table name).
SEED_CURVES = (("reward/total", "total reward"), ("accuracy", "accuracy"),
               ("completions/mean_length", "mean length (tokens)"), (TRAINING_REFLECTION_KEY, "reflection rate"))
SEED_CURVES_FILE = "training_seeds.png"


@dataclass
class SeedReportInputs:
    """A seeded run: each seed run's metrics (in seed order), and the scores of all of them.

    ``scores``/``step_scores`` carry ``run`` (the seed run, or ``base`` for the shared base)."""

    seeds: dict[str, int]
    metrics: dict[str, list[dict]]
    scores: list[dict]
    step_scores: list[dict] = field(default_factory=list)
    sft_metrics: dict[str, list[dict]] = field(default_factory=dict)
    rollouts: list[tuple[int, list[dict]]] = field(default_factory=list)

    @property
    def final_step(self) -> int:
        return int(max(record["step"] for records in self.metrics.values() for record in records)) + 1


def read_seed_report_inputs(inputs: dict, seeds: dict[str, int]) -> SeedReportInputs:
    """Read and check every input of a seeded run's report: ``metrics`` and (when given)
    ``sft_metrics`` and ``rollouts`` one per seed run in the order of ``seeds``; scores of those
    runs or of the shared base only."""
    metrics_paths = as_path_list(inputs.get("metrics"))
    if len(metrics_paths) != len(seeds):
        raise ValueError(f"report: {len(metrics_paths)} 'metrics' inputs for {len(seeds)} seed runs {list(seeds)}; "
                         "give one GRPO metrics.jsonl per seed run, in that order")
    for name in ("sft_metrics", "rollouts"):
        paths = as_path_list(inputs.get(name))
        if paths and len(paths) != len(seeds):
            raise ValueError(f"report: {len(paths)} {name!r} inputs for {len(seeds)} seed runs; give one per seed run or none")
    scored = [(path, load_scores(path, required=(*SCORE_REQUIRED_FIELDS, "run"))) for path in as_path_list(inputs.get("scores"))]
    step_scored = [(path, load_scores(path, required=(*SCORE_REQUIRED_FIELDS, "run", "step")))
                   for path in as_path_list(inputs.get("step_scores"))]
    for path, scores in [*scored, *step_scored]:
        if scores["run"] not in seeds and scores["run"] != "base":
            raise ValueError(f"{path}: belongs to run {scores['run']!r}, which is none of the seed runs {list(seeds)}")
    check_unique_scores(scored, ("run", "policy", "bench"))
    check_unique_scores(step_scored, ("run", "policy", "bench"))
    rollouts = as_path_list(inputs.get("rollouts"))
    return SeedReportInputs(
        seeds=dict(seeds), metrics={run: load_metrics(path) for run, path in zip(seeds, metrics_paths)},
        scores=[scores for _, scores in scored], step_scores=[scores for _, scores in step_scored],
        sft_metrics={run: load_metrics(path) for run, path in zip(seeds, as_path_list(inputs.get("sft_metrics")))},
        rollouts=rollout_examples(rollouts[0] if rollouts else None))


def pooled_over_seeds(score_list: Sequence[dict], cfg: ReportConfig) -> list[dict]:
    """One scores dict per (policy, bench): the seeds' scores pooled per prompt (``pool_scores``),
    with ``policy``, ``bench``, ``step`` and ``seed_scores`` (the per-seed dicts) kept."""
    from stages.core.eval_metrics import pool_scores

    groups: dict[tuple[str, str], list[dict]] = {}
    for scores in score_list:
        groups.setdefault((scores["policy"], scores["bench"]), []).append(scores)
    pooled = []
    for (policy, bench), members in groups.items():
        pooled.append({**pool_scores(members, num_resamples=cfg.bootstrap_resamples, level=cfg.confidence_level),
                       "policy": policy, "bench": bench, "step": members[0].get("step"), "seed_scores": members})
    return pooled


def seed_score_table(pooled: Sequence[dict], level: float) -> tuple[list[str], list[list[str]]]:
    """Rows policy x bench: avg@n pooled over seeds with its bootstrap interval over prompts, pass@1,
    pass@k and maj@k (largest k, mean over seeds), mean length, and the number of seeds."""
    k_pass, k_maj = largest_k(pooled, "pass@k"), largest_k(pooled, "maj@k")
    header = ["policy", "bench", f"avg@n pooled [{level:.0%} CI]", "pass@1", f"pass@{k_pass or 'k'}",
              f"maj@{k_maj or 'k'}", "mean length", "seeds"]
    rows = [[scores["policy"], scores["bench"], fmt_interval(scores["avg@n"], scores["avg@n_interval"]),
             fmt_fraction(scores.get("pass@1")), fmt_fraction((scores.get("pass@k") or {}).get(str(k_pass))),
             fmt_fraction((scores.get("maj@k") or {}).get(str(k_maj))), fmt_tokens(scores.get("mean_length")),
             str(scores["num_seeds"])]
            for scores in sorted(pooled, key=lambda s: (policy_sort_key(s["policy"]), s["bench"]))]
    return header, rows


def per_seed_table(pooled: Sequence[dict], seeds: dict[str, int], level: float) -> tuple[list[str], list[list[str]]]:
    """Each seed's own avg@n (with its prompt interval), pass@1 and mean length per policy and bench,
    then a row with the mean over seeds and its t interval across seeds."""
    from stages.core.eval_metrics import seed_interval

    header = ["policy", "bench", "seed", "run", f"avg@n [{level:.0%} CI]", "pass@1", "mean length"]
    rows = []
    for scores in sorted(pooled, key=lambda s: (policy_sort_key(s["policy"]), s["bench"])):
        members = sorted(scores["seed_scores"], key=lambda s: list(seeds).index(s["run"]) if s["run"] in seeds else -1)
        for member in members:
            seed = str(seeds[member["run"]]) if member["run"] in seeds else "shared"
            rows.append([scores["policy"], scores["bench"], seed, member["run"],
                         fmt_interval(member.get("avg@n", member["pass@1"]), member.get("avg@n_interval")),
                         fmt_fraction(member["pass@1"]), fmt_tokens(member.get("mean_length"))])
        if len(members) > 1:
            across = seed_interval([m.get("avg@n", m["pass@1"]) for m in members], level=level)
            rows.append([scores["policy"], scores["bench"], "mean over seeds", f"t interval, {len(members)} seeds",
                         fmt_interval(across["mean"], [across["low"], across["high"]]), MISSING, MISSING])
    return header, rows


def seed_training_bands(data: SeedReportInputs, level: float) -> dict[str, plots.SeedBand]:
    """Per training metric: the mean over seeds at each step with its t interval across seeds."""
    from stages.core.eval_metrics import seed_curve

    bands = {}
    for key, label in SEED_CURVES:
        series = [metric_series(records, key) for records in data.metrics.values()]
        if any(not steps for steps, _ in series):  # a seed that never logged it: no common curve
            bands[label] = plots.SeedBand([], [], [], [], len(series))
            continue
        curve = seed_curve(series, level=level)
        bands[label] = plots.SeedBand(curve["steps"], curve["mean"], curve["low"], curve["high"], curve["num_seeds"])
    return bands


def seed_training_table(bands: dict[str, plots.SeedBand], data: SeedReportInputs,
                        level: float) -> tuple[list[str], list[list[str]]]:
    """Per training metric, at the last step every seed logged: mean [t interval], and each seed's value."""
    header = ["metric", "step", f"mean over seeds [{level:.0%} CI]", *[f"seed {seed}" for seed in data.seeds.values()]]
    rows = []
    for (key, label), band in zip(SEED_CURVES, bands.values()):
        if not band.steps:
            rows.append([label, MISSING, MISSING, *[MISSING] * len(data.seeds)])
            continue
        step = band.steps[-1]
        per_seed = [dict(zip(*metric_series(records, key))).get(step) for records in data.metrics.values()]
        rows.append([label, f"{step:g}", fmt_interval(band.mean[-1], [band.low[-1], band.high[-1]]),
                     *[fmt_fraction(value) if key != "completions/mean_length" else fmt_tokens(value) for value in per_seed]])
    return header, rows


def seed_band_rows(bands: dict[str, plots.SeedBand]) -> tuple[list[str], list[list[str]]]:
    """Every point of every band, for ``training_seeds.csv``."""
    header = ["metric", "step", "mean", "low", "high", "seeds"]
    rows = [[label, f"{step:g}", f"{mean:.6g}", "" if low is None else f"{low:.6g}", "" if high is None else f"{high:.6g}",
             str(band.num_seeds)]
            for label, band in bands.items() for step, mean, low, high in zip(band.steps, band.mean, band.low, band.high)]
    return header, rows


def seed_eval_curves(data: SeedReportInputs, cfg: ReportConfig) -> dict[str, list[plots.EvalPoint]]:
    """Checkpoint curves with every point pooled over seeds (avg@n per prompt over seeds, bootstrap over
    prompts): the start policy at step 0, each snapshot step, the final policy."""
    return eval_curves(pooled_over_seeds(data.scores, cfg), pooled_over_seeds(data.step_scores, cfg), data.final_step)


def table_block(header: list[str], rows: list[list[str]]) -> Block:
    return Block("table", header=header, rows=rows)


def seed_report_blocks(cfg: ReportConfig, title: str, data: SeedReportInputs) -> list[Block]:
    level = cfg.confidence_level
    seeds_text = ", ".join(f"`{run}` (seed {seed})" for run, seed in data.seeds.items())
    pooled = pooled_over_seeds(data.scores, cfg)
    bands = seed_training_bands(data, level)
    curves = seed_eval_curves(data, cfg)
    reflection_scores = [{**s, "policy": f"{s['run']}/{s['policy']}" if s["run"] != "base" else "base"}
                         for s in [*data.scores, *data.step_scores]]
    blocks = [Block("heading1", title),
              Block("paragraph", f"Run `{cfg.run}` over {len(data.seeds)} seeds: {seeds_text}; report generated "
                                 f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}."),
              Block("heading2", "Evaluation (pooled over seeds)")]
    if pooled:
        blocks += [Block("paragraph", f"avg@n pooled: each prompt's accuracy averaged over its n samples and over the "
                                      f"seeds, then over prompts; the interval is a percentile bootstrap over prompts "
                                      f"({level:.0%}). The base model is shared by all seeds (evaluated once)."),
                   table_block(*seed_score_table(pooled, level)),
                   Block("heading2", "Evaluation per seed"),
                   Block("paragraph", f"Each seed's own avg@n; the last row of each group is the mean over seeds with "
                                      f"a Student-t {level:.0%} interval across seeds (the spread between training "
                                      "runs, which the prompt bootstrap above does not see)."),
                   table_block(*per_seed_table(pooled, data.seeds, level))]
    else:
        blocks.append(Block("paragraph", "No evaluation scores were given."))
    blocks += [*base_probe_blocks(data.scores),
               *check_quality_blocks([*data.scores, *data.step_scores], label_runs=True),
               Block("heading2", "Training curves across seeds"),
               Block("paragraph", f"Mean over seeds at each step, shaded with a Student-t {level:.0%} interval of that "
                                  "mean across seeds (wide with two or three seeds: that is the honest width)."),
               Block("image", SEED_CURVES_FILE, alt="reward, accuracy, length and reflection rate vs step across seeds"),
               table_block(*seed_training_table(bands, data, level)),
               Block("heading2", "Curves over training (checkpoints, pooled over seeds)"),
               Block("image", "eval_curves.png", alt="accuracy, length and reflection rate vs step"),
               table_block(*curve_table(curves)),
               Block("heading2", 'Reflection ("aha") by outcome, per seed'),
               table_block(*reflection_table(reflection_scores)),
               Block("heading2", f"Example completions (training rollouts of `{next(iter(data.seeds))}`)"),
               *example_blocks(data.rollouts)]
    return blocks


def write_seed_plots(directory: Path, cfg: ReportConfig, data: SeedReportInputs) -> None:
    level = cfg.confidence_level
    bands = seed_training_bands(data, level)
    plots.plot_seed_bands(directory / SEED_CURVES_FILE, bands, title=f"{cfg.run}: training over {len(data.seeds)} seeds",
                          level=level)
    mean_reflection = seed_curve_series(data, TRAINING_REFLECTION_KEY)
    plots.plot_eval_curves(directory / "eval_curves.png", seed_eval_curves(data, cfg),
                           title=f"{cfg.run}: evaluation over training ({len(data.seeds)} seeds pooled)",
                           training_reflection={f"{cfg.run} (mean of seeds)": mean_reflection} if mean_reflection[0] else None)
    pooled = pooled_over_seeds(data.scores, cfg)
    if pooled:
        write_csv(directory / "scores.csv", *seed_score_table(pooled, level))
        write_csv(directory / "scores_per_seed.csv", *per_seed_table(pooled, data.seeds, level))
    write_csv(directory / "curves.csv", *curve_table(seed_eval_curves(data, cfg)))
    write_csv(directory / "training_seeds.csv", *seed_band_rows(bands))


def seed_curve_series(data: SeedReportInputs, key: str) -> plots.Series:
    """The mean over seeds of one training metric at the steps every seed logged (empty when some seed lacks it)."""
    from stages.core.eval_metrics import seed_curve

    series = [metric_series(records, key) for records in data.metrics.values()]
    if any(not steps for steps, _ in series):
        return [], []
    curve = seed_curve(series)
    return curve["steps"], curve["mean"]


def write_seed_report(outputs: dict, cfg: ReportConfig, inputs: dict, config: dict, started_at: float) -> None:
    data = read_seed_report_inputs(inputs, cfg.seeds)
    title = cfg.title or f"R1-Zero run report: {cfg.run} ({len(data.seeds)} seeds)"
    blocks = seed_report_blocks(cfg, title, data)
    with atomic_directory(outputs["report"]) as directory:
        write_seed_plots(directory, cfg, data)
        write_text_atomic(directory / "report.md", render_markdown(blocks))
        if "html" in cfg.formats:
            write_text_atomic(directory / "report.html", render_html(blocks, directory, title))
        files = sorted(p.name for p in directory.iterdir() if not p.name.startswith("."))
        write_json_atomic(directory / "meta.json", provenance(stage="report", config=config, inputs=inputs,
                                                              started_at=started_at, extra={"files": files}))
    LOG.info("report for run %s over %d seeds written to %s", cfg.run, len(data.seeds), outputs["report"])


def parse_config(config: dict, model: type[BaseModel], stage: str) -> BaseModel:
    """Validate a stage config (keys starting with ``_`` are runtime settings and ignored)."""
    try:
        return model.model_validate({k: v for k, v in config.items() if not k.startswith("_")})
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(config)'}: {e['msg']}" for e in error.errors())
        raise ValueError(f"{stage} config: {problems}") from None


def main(config: dict, inputs: dict, outputs: dict) -> None:
    started_at = time.time()
    cfg = parse_config(config, ReportConfig, "report")
    if "report" not in outputs:
        raise ValueError("report: output 'report' (the report directory) is required")
    if cfg.run is None:
        cfg = cfg.model_copy(update={"run": Path(outputs["report"]).resolve().parent.name})
    if cfg.seeds:
        write_seed_report(outputs, cfg, inputs, config, started_at)
        return
    data = read_report_inputs(inputs)
    title = cfg.title or f"R1-Zero run report: {cfg.run}"
    blocks = report_blocks(cfg, title, data)
    with atomic_directory(outputs["report"]) as directory:
        write_plots(directory, cfg.run, data)
        write_text_atomic(directory / "report.md", render_markdown(blocks))
        if "html" in cfg.formats:
            write_text_atomic(directory / "report.html", render_html(blocks, directory, title))
        files = sorted(p.name for p in directory.iterdir() if not p.name.startswith("."))
        write_json_atomic(directory / "meta.json", provenance(stage="report", config=config, inputs=inputs,
                                                              started_at=started_at, extra={"files": files}))
    LOG.info("report for run %s written to %s", cfg.run, outputs["report"])


if __name__ == "__main__":
    run_stage(main, description="Per-run report: score table, training summary, plots (Markdown and HTML).")
