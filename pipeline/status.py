"""``r1zero status``: where a run of the workflow is, read from its artefacts and metrics files.

Snakemake's log says which jobs started and finished; this says how far each long job has got
(GRPO's step, reward and accuracy from its partial metrics), without touching anything.

Example:
    >>> from pipeline.workflow import Workflow
    >>> lines = status_lines(Workflow.from_snakemake_config({"results_dir": "/nonexistent"}))
    >>> lines[1].split()[:3]
    ['data', 'countdown', 'pending']
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from pipeline.workflow import Workflow


def _last_record(path: Path) -> dict | None:
    """The last complete JSON line of a metrics file being appended to (a cut line is skipped)."""
    if not path.exists():
        return None
    for line in reversed(path.read_text().splitlines()):
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            continue
    return None


def _age(path: Path) -> str:
    seconds = time.time() - path.stat().st_mtime
    return f"{seconds:.0f}s ago" if seconds < 120 else f"{seconds / 60:.0f} min ago"


def grpo_status(w: Workflow, run: str) -> tuple[str, str]:
    """(state, detail) of one run's GRPO job: done, running (step k of n, reward, accuracy) or pending."""
    total = w.cfg.runs[run].grpo.steps
    finished = Path(w.paths.grpo_metrics(run))
    if finished.exists() and Path(w.paths.grpo_model(run)).exists():
        last = _last_record(finished) or {}
        return "done", f"{total} steps, final reward {last.get('reward/total', float('nan')):.3f}"
    partial = Path(w.paths.grpo_scratch(run)) / "metrics.partial.jsonl"
    last = _last_record(partial)
    if last is None:
        return "pending", f"{total} steps"
    done = last["step"] + 1
    step_s = last.get("time/step_s") or 0.0
    eta = f", ~{(total - done) * step_s / 60:.0f} min left" if step_s else ""
    detail = (f"step {done}/{total}, reward {last.get('reward/total', float('nan')):.3f}, "
              f"accuracy {last.get('accuracy', float('nan')):.3f}, length {last.get('completions/mean_length', 0):.0f}"
              f"{eta} (updated {_age(partial)})")
    return "running", detail


def _exists(path: str) -> str:
    return "done" if Path(path).exists() else "pending"


def status_lines(w: Workflow) -> list[str]:
    """One line per job group: kind, name, state, detail."""
    rows = [("data", name, _exists(w.paths.data_stats(name)), "") for name in w.cfg.datasets]
    rows += [("base", name, _exists(w.paths.base_model(name)), w.cfg.models[name].kind) for name in w.cfg.models]
    for run in w.cfg.runs:
        if w.cfg.runs[run].sft:
            rows.append(("sft", run, _exists(w.paths.sft_model(run)), ""))
        rows.append(("grpo", run, *grpo_status(w, run)))
        scores = w.scores_of_run(run)
        done = sum(Path(path).exists() for path in scores)
        rows.append(("eval", run, "done" if done == len(scores) else "pending", f"{done}/{len(scores)} scores"))
        rows.append(("report", run, _exists(w.paths.report(run)), ""))
    width = max(len(name) for _, name, _, _ in rows)
    header = f"{'stage':<7} {'name':<{width}} {'state':<8} detail"
    return [header] + [f"{kind:<7} {name:<{width}} {state:<8} {detail}".rstrip() for kind, name, state, detail in rows]
