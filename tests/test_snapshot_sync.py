"""A changed config reruns what it changes even where Snakemake has no metadata record of the
snapshots (a results directory copied elsewhere, or a deleted .snakemake): the Snakefile rewrites
stale snapshots before the DAG is built (pipeline/workflow.py, ``Workflow.stale_snapshots``)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.workflow import Workflow, is_dry_run

REPO = Path(__file__).resolve().parent.parent
SMOKE = REPO / "pipeline" / "config" / "smoke.yaml"


def smoke_config(results: Path, train_rows: int) -> dict:
    raw = yaml.safe_load(SMOKE.read_text())
    raw["results_dir"] = str(results)
    raw["datasets"]["countdown"]["splits"]["train"] = train_rows
    return raw


def test_stale_snapshots_are_found_and_rewritten_only_when_their_text_differs(tmp_path):
    before = Workflow.from_snakemake_config(smoke_config(tmp_path, 200))
    assert before.stale_snapshots() == {}  # nothing written yet: nothing stale (a fresh dir is the rule's job)
    for key, text in before.snapshots.items():
        Path(before.paths.config_snapshot(key)).parent.mkdir(parents=True, exist_ok=True)
        Path(before.paths.config_snapshot(key)).write_text(text)
    assert before.stale_snapshots() == {}
    after = Workflow.from_snakemake_config(smoke_config(tmp_path, 40))
    assert after.stale_snapshots() == {"data/countdown": "config changed"}
    untouched = Path(after.paths.config_snapshot("models/tiny")).stat().st_mtime_ns
    assert list(after.sync_snapshots()) == ["data/countdown"]
    assert json.loads(Path(after.paths.config_snapshot("data/countdown")).read_text())["splits"]["train"] == 40
    assert Path(after.paths.config_snapshot("models/tiny")).stat().st_mtime_ns == untouched
    assert after.stale_snapshots() == {}


def test_a_run_that_becomes_seeded_gets_its_group_report_snapshot_over_the_old_report(tmp_path):
    """r1zero becomes seeded: its group report's snapshot is new, and the unseeded report at the
    same path must come out older than it (Snakemake keeps an output whose input is only missing)."""
    unseeded = Workflow.from_snakemake_config(smoke_config(tmp_path, 200))
    for key, text in unseeded.snapshots.items():
        Path(unseeded.paths.config_snapshot(key)).parent.mkdir(parents=True, exist_ok=True)
        Path(unseeded.paths.config_snapshot(key)).write_text(text)
    raw = smoke_config(tmp_path, 200)
    raw["runs"]["r1zero"]["seeds"] = [0, 1]
    assert "report/r1zero" not in Workflow.from_snakemake_config(raw).stale_snapshots()  # no old report: the rule's job
    old_report = Path(unseeded.paths.report("r1zero"))
    old_report.mkdir(parents=True)
    seeded = Workflow.from_snakemake_config(raw)
    # The comparison's member list now names the seed runs; the group's snapshot is new over an old report.
    assert sorted(seeded.stale_snapshots()) == ["compare", "report/r1zero"]
    seeded.sync_snapshots()
    snapshot = Path(seeded.paths.config_snapshot("report/r1zero"))
    assert snapshot.read_text() == seeded.snapshots["report/r1zero"]
    assert snapshot.stat().st_mtime_ns > old_report.stat().st_mtime_ns
    assert seeded.stale_snapshots() == {}


@pytest.mark.parametrize(("argv", "dry"), [(["snakemake", "-n"], True), (["snakemake", "-pn", "-c2"], True),
                                           (["snakemake", "--dry-run"], True), (["snakemake", "-c2", "-p"], False),
                                           (["snakemake", "--lint"], True), (["snakemake", "--lint=json"], True),
                                           (["snakemake", "--summary"], True), (["snakemake", "-l"], True),
                                           (["snakemake", "--report", "report.zip"], True),
                                           (["snakemake", "--configfile", "n.yaml"], False), (["snakemake", "-R", "all"], False)])
def test_dry_run_flags_are_read_from_the_command_line(argv, dry):
    assert is_dry_run(argv) == dry


def snakemake(config: Path, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "snakemake", *args, "--cores", "1", "--configfile", str(config)]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    return result


@pytest.mark.slow
def test_a_copied_results_dir_reruns_a_changed_stage(tmp_path):
    """Without the parse-time rewrite the copied snapshot keeps the old settings and 200 rows come back."""
    first = tmp_path / "first.yaml"
    first.write_text(yaml.safe_dump(smoke_config(tmp_path / "a", 200)))
    snakemake(first, str(tmp_path / "a" / "data" / "countdown" / "train.jsonl"))
    shutil.copytree(tmp_path / "a", tmp_path / "b")  # copy2: mtimes kept, no metadata records for b
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(smoke_config(tmp_path / "b", 40)))
    target = tmp_path / "b" / "data" / "countdown" / "train.jsonl"
    snapshot = tmp_path / "b" / ".config" / "data" / "countdown.json"

    run = snakemake(changed, str(target))
    assert "snapshot data/countdown (config changed)" in run.stderr
    assert len(target.read_text().splitlines()) == 40  # without the rewrite: 200, the stage rerun on the old snapshot
    assert json.loads(snapshot.read_text())["splits"]["train"] == 40
