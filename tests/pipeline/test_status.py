"""``r1zero status`` reads progress from the artefacts and the partial metrics of a running job."""
from __future__ import annotations

import json
from pathlib import Path

from pipeline.status import status_lines
from pipeline.workflow import Workflow


def _line(lines: list[str], kind: str, name: str) -> str:
    return next(line for line in lines if line.split()[:2] == [kind, name])


def test_status_shows_a_running_grpo_step_and_finished_stages(tmp_path):
    w = Workflow.from_snakemake_config({"results_dir": str(tmp_path)})
    Path(w.paths.data_stats("countdown")).parent.mkdir(parents=True)
    Path(w.paths.data_stats("countdown")).write_text("{}")
    scratch = Path(w.paths.grpo_scratch("r1zero"))
    scratch.mkdir(parents=True)
    records = [{"step": s, "reward/total": 0.1 * s, "accuracy": 0.05 * s, "completions/mean_length": 20, "time/step_s": 2.0}
               for s in range(3)]
    (scratch / "metrics.partial.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + '{"step": 3, "rew')
    lines = status_lines(w)
    assert _line(lines, "data", "countdown").split()[2] == "done"
    grpo = _line(lines, "grpo", "r1zero")
    assert "running" in grpo and "step 3/160" in grpo and "reward 0.200" in grpo, grpo
    assert "pending" in _line(lines, "grpo", "coldstart")


def test_status_command_exits_cleanly(tmp_path, capsys):
    from pipeline.cli import main

    config = tmp_path / "c.yaml"
    config.write_text(f"results_dir: {tmp_path}/results\n")
    assert main(["status", "--configfile", str(config)]) == 0
    assert "grpo    r1zero" in capsys.readouterr().out
