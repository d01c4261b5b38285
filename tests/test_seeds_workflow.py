"""Seeds in the workflow (``runs.<run>.seeds``), through the real ``snakemake`` dry run on tiny configs
built from ``pipeline/config/smoke.yaml``: each seed is its own run (``<run>-seed<k>``) with its own
GRPO, evaluation and snapshot cells, one report per seeded run, and a change of the seed list plans
only the new seed's jobs (plus the report and comparison that aggregate the seeds)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from pipeline.config import stage_snapshots, validate_config
from pipeline.workflow import Workflow
from tests.test_eval_workflow import planned_jobs, snakemake, two_benches_three_checkpoints, write_config

pytestmark = pytest.mark.slow


def two_seeds_grid(raw: dict) -> None:
    """Two seeds x two benches (countdown, a GSM8K preset) x three GRPO snapshots (steps 2, 4, 6 of 8)."""
    two_benches_three_checkpoints(raw)
    raw["runs"]["r1zero"]["seeds"] = [0, 1]


def test_two_seeds_two_benches_three_checkpoints_dry_run_with_the_right_job_count(tmp_path):
    jobs = planned_jobs(write_config(tmp_path, "seeds.yaml", two_seeds_grid))
    assert jobs == {
        "prepare_data": 1, "prepare_bench": 1, "base_model": 1,
        "grpo": 2,                            # one GRPO job per seed
        "generate_base": 2, "score_base": 2,  # the base is shared by the seeds: once per bench
        "generate": 2 * 2,                    # final grpo policy: 2 seeds x 2 benches
        "generate_step": 2 * 3 * 2,           # 2 seeds x 3 snapshots x 2 benches
        "score": 2 * 2 + 2 * 3 * 2,
        "report_seeds": 1,                    # results/r1zero/report over both seeds
    }


def test_each_seed_is_its_own_run_with_its_seed(tmp_path):
    config = write_config(tmp_path, "seeds.yaml", two_seeds_grid)
    output = snakemake(config, "-n").stdout
    assert re.search(r"output: \S+/r1zero-seed0/grpo/model", output)
    assert re.search(r"output: \S+/r1zero-seed1/eval/step_000004/gsm8k/samples.jsonl", output)
    assert re.search(r"output: \S+/results/r1zero/report\b", output), "the seeded run's report"
    snapshots = stage_snapshots(validate_config(yaml.safe_load(config.read_text())))
    assert [snapshots[f"runs/r1zero-seed{k}/grpo"]["seed"] for k in (0, 1)] == [0, 1]
    assert "runs/r1zero/grpo" not in snapshots


def stand_in_for_a_finished_run(config: Path) -> int:
    """Make ``config`` look finished without training: the config snapshots are written for real (so
    Snakemake records their params, as a real run would), every other planned output is created
    empty (a file, or a directory for a path without a suffix: models, snapshots, reports). Plans are
    judged on params (``planned_jobs``), so their dates do not matter. Returns the number of stand-ins."""
    workflow = Workflow.from_snakemake_config(yaml.safe_load(config.read_text()))
    snakemake(config, *[workflow.paths.config_snapshot(key) for key in workflow.snapshots])
    output = snakemake(config, "-n").stdout
    paths = [Path(path.strip()) for line in output.splitlines() if line.strip().startswith("output:")
             for path in line.split("output:", 1)[1].split(",")]
    for path in paths:
        if path.suffix:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("{}\n")
        else:
            path.mkdir(parents=True, exist_ok=True)
    return len(paths)


def seeded_runs(raw: dict, coldstart_seeds: list[int]) -> None:
    """Both smoke runs seeded (r1zero: 0, 1; coldstart, which has SFT: ``coldstart_seeds``), with curves."""
    two_benches_three_checkpoints(raw)
    smoke = yaml.safe_load((Path(__file__).resolve().parent.parent / "pipeline/config/smoke.yaml").read_text())
    raw["runs"]["coldstart"] = {**smoke["runs"]["coldstart"], "grpo": dict(raw["runs"]["r1zero"]["grpo"])}
    raw["runs"]["r1zero"]["seeds"] = [0, 1]
    raw["runs"]["coldstart"]["seeds"] = coldstart_seeds


def test_adding_a_seed_plans_only_that_seeds_jobs(tmp_path):
    config = write_config(tmp_path, "one_seed.yaml", lambda raw: seeded_runs(raw, [0]))
    assert stand_in_for_a_finished_run(config) > 50
    # Judged against what the unchanged config plans: nothing, unless another edit in the working
    # tree touched a stage module since (those jobs count as planned already).
    baseline = planned_jobs(config)
    changed = planned_jobs(write_config(tmp_path, "two_seeds.yaml", lambda raw: seeded_runs(raw, [0, 3])))
    jobs = {rule: count for rule, count in changed.items() if baseline.get(rule) != count}
    assert jobs == {
        "sft": 1, "grpo": 1,            # coldstart-seed3 only: no other run retrains
        "generate": 2 * 2,              # its sft and grpo policies x 2 benches
        "generate_step": 3 * 2,         # its 3 snapshots x 2 benches
        "score": 2 * 2 + 3 * 2,
        "report_seeds": 1,              # coldstart's report now pools 2 seeds; r1zero's is untouched
        "compare": 1,                   # compare uses all seeds
    }
