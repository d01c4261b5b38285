"""The evaluation part of the workflow, through the real ``snakemake`` command on tiny configs
built from ``pipeline/config/smoke.yaml``: job counts of the evaluation grid, rescoring without
regenerating, and missing bench data stopping the workflow before any job."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
SMOKE = REPO / "pipeline" / "config" / "smoke.yaml"
GSM8K_FIXTURE = REPO / "data" / "fixtures" / "benches" / "gsm8k.jsonl"
pytestmark = pytest.mark.slow


def write_config(tmp_path: Path, name: str, mutate=None) -> Path:
    raw = yaml.safe_load(SMOKE.read_text())
    raw["results_dir"] = str(tmp_path / "results")
    if mutate:
        mutate(raw)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return path


def snakemake(config: Path, *args: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "snakemake", *args, "--cores", "2", "--configfile", str(config)]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900, env=env)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def planned_jobs(config: Path, *targets: str) -> dict[str, int]:
    """Rule -> job count that a dry run would execute (config snapshots and the target rule left out).

    Reruns are judged on config changes (``--rerun-triggers params``; snapshots reach the stages as
    params of the config_snapshot rule), the change these tests make.
    """
    output = snakemake(config, "-n", *targets, "--rerun-triggers", "params").stdout
    if "Nothing to be done" in output:
        return {}
    table = output.split("Job stats:")[1].split("total")[0]
    jobs = {}
    for line in table.splitlines():
        match = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if match:
            jobs[match.group(1)] = int(match.group(2))
    for name in ("all", "config_snapshot"):
        jobs.pop(name, None)
    return jobs


def two_benches_three_checkpoints(raw: dict) -> None:
    """One run, GRPO snapshots at steps 2, 4, 6 of 8; the countdown bench and a GSM8K preset bench."""
    raw["runs"] = {"r1zero": raw["runs"]["r1zero"]}
    raw["runs"]["r1zero"]["grpo"].update(steps=8, eval_every=2)
    raw["rewards"]["math"] = {"math": 1.0, "format_strict": 0.1}
    raw["evaluation"]["benches"]["gsm8k"] = {"preset": "gsm8k", "local_path": str(GSM8K_FIXTURE), "num_samples": 2,
                                             "max_new_tokens": 32}


def test_grid_of_two_benches_and_three_checkpoints_dry_runs_with_the_right_job_count(tmp_path):
    config = write_config(tmp_path, "grid.yaml", two_benches_three_checkpoints)
    jobs = planned_jobs(config)
    assert jobs == {
        "prepare_data": 1, "prepare_bench": 1, "base_model": 1, "grpo": 1,
        "generate_base": 2, "generate": 2,  # base and final grpo policy, per bench
        "generate_step": 6,                  # 3 snapshots x 2 benches
        "score_base": 2, "score": 2 + 6,
        "report": 1,
    }


def test_a_bench_without_curves_is_evaluated_at_the_end_only(tmp_path):
    def mutate(raw):
        two_benches_three_checkpoints(raw)
        raw["evaluation"]["benches"]["gsm8k"]["curve"] = False

    jobs = planned_jobs(write_config(tmp_path, "no_curve.yaml", mutate))
    assert jobs["generate_step"] == 3 and jobs["score"] == 2 + 3


def test_missing_bench_data_stops_before_any_job(tmp_path):
    def mutate(raw):
        raw["evaluation"]["benches"]["math500"] = {"preset": "math500"}
        raw["rewards"]["math"] = {"math": 1.0}

    config = write_config(tmp_path, "missing.yaml", mutate)
    env = {key: value for key, value in __import__("os").environ.items()
           if key not in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_DATASETS_CACHE")}
    env["HF_HOME"] = str(tmp_path / "empty_hf_home")
    result = snakemake(config, "-n", check=False, env=env)
    assert result.returncode != 0
    message = result.stderr + result.stdout
    assert "evaluation.benches.math500: preset 'math500' (HuggingFaceH4/MATH-500" in message
    assert "huggingface-cli download --repo-type dataset HuggingFaceH4/MATH-500" in message
    assert not (tmp_path / "results").exists(), "nothing is written"


@pytest.fixture(scope="module")
def evaluated_base(tmp_path_factory):
    """The base model's countdown evaluation, generated and scored for real."""
    tmp_path = tmp_path_factory.mktemp("eval_workflow")
    config = write_config(tmp_path, "smoke.yaml")
    target = tmp_path / "results" / "models" / "tiny" / "eval" / "countdown" / "scores.json"
    snakemake(config, str(target))
    return tmp_path, config, target


def test_base_evaluation_writes_samples_then_scores(evaluated_base):
    _, _, target = evaluated_base
    samples = [json.loads(line) for line in (target.parent / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 12 * 4 and "reward" not in samples[0], "generation writes unscored samples"
    scores = json.loads(target.read_text())
    assert scores["policy"] == "base" and scores["num_prompts"] == 12
    assert scores["avg@n_interval"][0] <= scores["avg@n"] <= scores["avg@n_interval"][1]
    assert len(scores["per_prompt"]) == 12 and "correct" in scores["reflection"]


def jobs_after_change(evaluated_base, name: str, mutate) -> dict[str, int]:
    """Jobs a config change plans for the base evaluation, on top of what the unchanged config plans.

    The unchanged config plans nothing after a complete run; it plans more only when a source file
    changed since (another edit in a working tree), and those jobs are counted as already planned.
    """
    tmp_path, config, target = evaluated_base
    baseline = planned_jobs(config, str(target))

    def mutate_here(raw):
        raw["results_dir"] = str(tmp_path / "results")
        mutate(raw)

    changed = planned_jobs(write_config(tmp_path, name, mutate_here), str(target))
    return {rule: count for rule, count in changed.items() if baseline.get(rule) != count}


def test_changing_a_reward_weight_rescores_without_regenerating(evaluated_base):
    jobs = jobs_after_change(evaluated_base, "weight.yaml", lambda raw: raw["rewards"]["countdown"].update(format_strict=0.5))
    assert jobs == {"score_base": 1}


def test_changing_a_sampling_setting_regenerates_and_rescores(evaluated_base):
    def mutate(raw):
        raw["evaluation"]["benches"]["countdown"]["temperature"] = 0.7

    assert set(jobs_after_change(evaluated_base, "temperature.yaml", mutate)) <= {"generate_base", "score_base"}
    tmp_path, _, target = evaluated_base
    assert planned_jobs(tmp_path / "temperature.yaml", str(target)).get("generate_base") == 1, "samples are regenerated"


def test_changing_the_estimator_rescores_only(evaluated_base):
    jobs = jobs_after_change(evaluated_base, "estimator.yaml", lambda raw: raw["evaluation"].update(bootstrap_resamples=500))
    assert jobs == {"score_base": 1}
