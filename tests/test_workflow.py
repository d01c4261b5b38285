"""End-to-end: the reduced (smoke) workflow on CPU, caching, targeted reruns, kill and resume.

These run the real ``snakemake`` command on ``pipeline/config/smoke.yaml`` with results in a
temporary directory; together they take a few minutes on two cores.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
SMOKE = REPO / "pipeline" / "config" / "smoke.yaml"
pytestmark = pytest.mark.slow


def write_config(tmp_path: Path, name: str, mutate=None) -> Path:
    raw = yaml.safe_load(SMOKE.read_text())
    raw["results_dir"] = str(tmp_path / "results")
    if mutate:
        mutate(raw)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return path


def snakemake(config: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    # --configfile takes several values: anything after it would be read as another config file.
    command = [sys.executable, "-m", "snakemake", *args, "--cores", "2", "--configfile", str(config)]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=1200)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def planned_jobs(config: Path, *args: str) -> dict[str, int]:
    """Rule -> job count that a dry run would execute."""
    output = snakemake(config, "-n", *args).stdout
    if "Nothing to be done" in output:
        return {}
    table = output.split("Job stats:")[1].split("total")[0]
    jobs = {}
    for line in table.splitlines():
        match = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if match:
            jobs[match.group(1)] = int(match.group(2))
    jobs.pop("all", None)
    return jobs


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("workflow")
    config = write_config(tmp_path, "smoke.yaml")
    snakemake(config)
    return tmp_path, config


def test_full_run_writes_every_artefact_with_provenance(finished_run):
    tmp_path, _ = finished_run
    results = tmp_path / "results"
    for directory in ["data/countdown", "models/tiny/model", "coldstart/sft/model", "r1zero/grpo/model", "coldstart/grpo/model",
                      "r1zero/report", "compare/smoke"]:
        meta = json.loads((results / directory / "meta.json").read_text())
        assert {"config", "config_hash", "code_version", "inputs", "libraries", "device"} <= set(meta), directory
    for run in ["r1zero", "coldstart"]:
        assert (results / run / "report" / "report.md").exists()
        steps = [json.loads(line)["step"] for line in (results / run / "grpo" / "metrics.jsonl").read_text().splitlines()]
        assert steps == list(range(4))
    scores = json.loads((results / "r1zero/eval/grpo/countdown/scores.json").read_text())
    assert {"pass@1", "pass@k", "maj@k", "format_rate", "truncation_rate", "mean_length"} <= set(scores)
    assert (results / "compare" / "smoke" / "compare.md").exists()
    assert list((results / "logs").rglob("*.log")), "every job has a log file"


def test_nothing_to_do_after_a_complete_run(finished_run):
    _, config = finished_run
    assert planned_jobs(config) == {}


def test_eval_setting_reruns_only_evaluation_and_reports(finished_run):
    tmp_path, _ = finished_run
    config = write_config(tmp_path, "eval_changed.yaml",
                          lambda c: c["evaluation"]["benches"]["countdown"].update(temperature=0.7))
    assert planned_jobs(config) == {"config_snapshot": 1, "generate_base": 1, "generate": 3, "generate_step": 2,
                                    "score_base": 1, "score": 5, "report": 2, "compare": 1}


def test_grpo_setting_reruns_grpo_and_what_follows(finished_run):
    tmp_path, _ = finished_run

    def mutate(c):
        c["runs"]["r1zero"]["grpo"] = dict(c["runs"]["r1zero"]["grpo"], lr=5e-4)

    config = write_config(tmp_path, "grpo_changed.yaml", mutate)
    assert planned_jobs(config) == {"config_snapshot": 1, "grpo": 1, "generate": 1, "generate_step": 1, "score": 2,
                                    "report": 1, "compare": 1}


def test_a_stage_reruns_alone_by_target(finished_run):
    tmp_path, config = finished_run
    target = str(tmp_path / "results" / "data" / "countdown" / "stats.json")
    output = snakemake(config, "-n", "--forcerun", "prepare_data", "--until", "prepare_data").stdout
    assert "prepare_data" in output and target in output


def test_a_dry_run_writes_nothing(tmp_path):
    config = write_config(tmp_path, "fresh.yaml")
    assert planned_jobs(config), "a fresh results dir has everything to do"
    assert not (tmp_path / "results").exists(), "snakemake -n must not write snapshots or anything else"


def test_a_dry_run_after_a_change_leaves_snapshots_alone(finished_run):
    tmp_path, _ = finished_run
    snapshot = tmp_path / "results" / ".config" / "runs" / "r1zero" / "grpo.json"
    before = snapshot.read_text(), snapshot.stat().st_mtime_ns
    def mutate(c):  # a copy: smoke.yaml's runs share one grpo block through a YAML anchor
        c["runs"]["r1zero"]["grpo"] = dict(c["runs"]["r1zero"]["grpo"], lr=3e-4)

    config = write_config(tmp_path, "lr_changed.yaml", mutate)
    assert planned_jobs(config)["grpo"] == 1
    assert (snapshot.read_text(), snapshot.stat().st_mtime_ns) == before


def test_a_reward_of_another_task_plans_no_job(finished_run):
    tmp_path, _ = finished_run
    config = write_config(tmp_path, "code_reward.yaml",
                          lambda c: c["rewards"].update(code={"code_tests": 1.0, "format_strict": 0.1}))
    assert planned_jobs(config) == {}, "a code reward must not rerun Countdown training or evaluation"


def test_an_edit_to_a_module_grpo_imports_reruns_grpo(finished_run):
    _, config = finished_run
    module = REPO / "stages" / "core" / "algorithms.py"
    stat, original = module.stat(), module.read_bytes()
    # A real edit: Snakemake ignores a newer mtime when the file's checksum is the one it recorded.
    module.write_bytes(original + b"\n# an edit made by tests/test_workflow.py; removed when the test ends\n")
    try:
        jobs = planned_jobs(config)
    finally:
        module.write_bytes(original)
        os.utime(module, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert jobs.get("grpo") == 2 and "base_model" not in jobs and "prepare_data" not in jobs, jobs


README_RERUNS = re.compile(r"^\| `(snakemake [^`]+)` \| ([^|]+) \|", re.MULTILINE)


def readme_rerun_rows() -> list[tuple[str, dict[str, int]]]:
    """The README's "Rerunning one stage" table: command -> the jobs it plans on a finished run."""
    section = (REPO / "README.md").read_text().split("### Rerunning one stage")[1].split("\n#")[0]
    rows = []
    for command, jobs in README_RERUNS.findall(section):
        counts = dict((name, int(count)) for name, count in re.findall(r"(\w+) x(\d+)", jobs))
        rows.append((command, counts))
    return rows


def test_the_readme_lists_rerun_commands():
    assert len(readme_rerun_rows()) >= 4


@pytest.mark.parametrize("command,expected", readme_rerun_rows(), ids=[row[0] for row in readme_rerun_rows()])
def test_each_readme_rerun_command_plans_what_it_says(finished_run, command, expected):
    tmp_path, config = finished_run
    results = str(tmp_path / "results")
    args = [a.replace("results/", results + "/", 1) if a.startswith("results/") else a for a in shlex.split(command)[1:]]
    args = [a for a in args if a not in ("--cores", "2")]
    assert planned_jobs(config, *args) == expected


def test_invalid_config_stops_before_anything_is_written(tmp_path):
    config = write_config(tmp_path, "bad.yaml", lambda c: c["runs"]["r1zero"]["grpo"].update(stepz=3))
    result = snakemake(config, check=False)
    assert result.returncode != 0
    assert "runs.r1zero.grpo.stepz: unknown key" in result.stderr + result.stdout
    assert not (tmp_path / "results").exists()


def test_killed_during_grpo_resumes_from_checkpoint(tmp_path):
    def mutate(c):
        c["runs"] = {"r1zero": c["runs"]["r1zero"]}
        c["runs"]["r1zero"]["grpo"].update(steps=60, checkpoint_every=2)

    config = write_config(tmp_path, "resume.yaml", mutate)
    results = tmp_path / "results"
    scratch = results / "r1zero" / "grpo"
    command = [sys.executable, "-m", "snakemake", str(scratch / "metrics.jsonl"), "--cores", "2", "--configfile", str(config)]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 900
        while not list((scratch / "checkpoints").glob("step_*")) and time.time() < deadline:
            assert process.poll() is None, "the workflow ended before GRPO wrote a checkpoint"
            time.sleep(0.5)
    finally:
        os.killpg(process.pid, signal.SIGINT)  # Ctrl-C: the whole foreground group, snakemake and its job
        process.wait(timeout=120)
    assert not (scratch / "model").exists(), "an interrupted GRPO job must not leave a finished-looking model"
    assert not (scratch / "metrics.jsonl").exists()
    checkpoint_steps = sorted(p.name for p in (scratch / "checkpoints").glob("step_*"))
    snakemake(config, str(scratch / "metrics.jsonl"))
    log = (results / "logs" / "grpo" / "r1zero.log").read_text()
    assert "resumed from step_" in log, "the rerun must resume, not start over"
    steps = [json.loads(line)["step"] for line in (scratch / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(60)), "every step logged exactly once after resume"
    meta = json.loads((scratch / "model" / "meta.json").read_text())
    resumed_at = int(checkpoint_steps[-1].split("_")[1]) + 1
    assert meta["steps_trained_this_invocation"] == 60 - resumed_at, "the rerun trains only the missing steps"


def test_zz_forced_rerun_trains_every_step(finished_run):
    """Last in this module: it replaces the finished run's r1zero GRPO model."""
    tmp_path, config = finished_run
    results = tmp_path / "results"
    snakemake(config, str(results / "r1zero" / "grpo" / "metrics.jsonl"), "--forcerun", "grpo")
    meta = json.loads((results / "r1zero" / "grpo" / "model" / "meta.json").read_text())
    assert meta["steps_trained_this_invocation"] == 4, "a forced rerun must train, not resume the finished run"
    log = (results / "logs" / "grpo" / "r1zero.log").read_text()
    assert "training from step 0" in log and "resumed from" not in log
