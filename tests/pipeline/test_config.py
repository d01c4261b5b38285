"""Config validation and per-stage snapshots (what reruns when a setting changes)."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from pipeline.config import (DEFAULT_CONFIG, ConfigError, layered_config, read_yaml, stage_snapshots, validate_config,
                             write_snapshots)

CONFIG_DIR = Path(DEFAULT_CONFIG).parent


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_validate(path):
    cfg = validate_config(layered_config(read_yaml(path)), str(path))  # as the workflow reads it
    assert cfg.runs, "every shipped config defines at least one run"


def _default() -> dict:
    return read_yaml(DEFAULT_CONFIG)


BAD_CONFIGS = [
    # (mutation, text the error must contain, reason)
    (lambda c: c["runs"]["r1zero"]["grpo"].update(lrr=1e-3), "runs.r1zero.grpo.lrr: unknown key; allowed here: dataset, steps",
     "a misspelt key names itself and lists the allowed keys"),
    (lambda c: c["runs"]["r1zero"]["grpo"].update(steps="many"), "runs.r1zero.grpo.steps", "wrong type names the field"),
    (lambda c: c["runs"]["r1zero"]["grpo"].update(group_size=0), "group_size", "out of range"),
    (lambda c: c["runs"]["r1zero"].update(base="qwen"), "runs.r1zero.base: unknown model 'qwen'; known: tiny", "dangling reference"),
    (lambda c: c["datasets"]["countdown"]["source"].update(seed=1), "datasets.countdown.source.seed: unknown key; allowed here: kind, name, options",
     "keys inside a tagged union are checked against that member"),
    (lambda c: c["runs"]["r1zero"]["grpo"]["algorithm"].update(advantage_estimator="ppo"), "advantage_estimator",
     "unknown estimator"),
    (lambda c: c["models"]["tiny"].update(kind="hf"), "needs path", "an hf model needs a path"),
    (lambda c: c.update(runz={}), "runz: unknown key", "top-level typo"),
    (lambda c: c["evaluation"]["benches"]["countdown"].update(dataset="gsm8k"), "unknown dataset 'gsm8k'", "bench dataset reference"),
]


@pytest.mark.parametrize("mutate,expected,reason", BAD_CONFIGS, ids=[b[2] for b in BAD_CONFIGS])
def test_bad_config_error_names_the_field(mutate, expected, reason, tmp_path):
    raw = _default()
    raw["results_dir"] = str(tmp_path / "results")
    mutate(raw)
    with pytest.raises(ConfigError) as error:
        validate_config(raw, "my.yaml")
    assert expected in str(error.value), reason
    assert str(error.value).startswith("my.yaml"), "the message names the file"
    assert not (tmp_path / "results").exists(), "nothing is written for an invalid config"


def _changed_snapshots(mutate) -> set[str]:
    raw = _default()
    before = stage_snapshots(validate_config(raw))
    changed = copy.deepcopy(raw)
    mutate(changed)
    after = stage_snapshots(validate_config(changed))
    return {key for key in before if before[key] != after.get(key)}


def test_eval_setting_changes_only_eval_snapshot():
    changed = _changed_snapshots(lambda c: c["evaluation"]["benches"]["countdown"].update(num_samples=4))
    assert changed == {"eval/countdown/generate"}


def test_grpo_setting_changes_only_that_runs_grpo_snapshot():
    def mutate(c):
        c["runs"]["r1zero"]["grpo"] = dict(c["runs"]["r1zero"]["grpo"], lr=1e-5)

    assert _changed_snapshots(mutate) == {"runs/r1zero/grpo"}


def test_model_setting_does_not_touch_data_snapshot():
    changed = _changed_snapshots(lambda c: c["models"]["tiny"]["pretrain"].update(max_steps=10))
    assert changed == {"models/tiny"}


def test_write_snapshots_touches_only_changed_files(tmp_path):
    cfg = validate_config(_default())
    paths = write_snapshots(cfg, tmp_path)
    mtimes = {key: path.stat().st_mtime_ns for key, path in paths.items()}
    raw = _default()
    raw["evaluation"]["benches"]["countdown"]["temperature"] = 0.5
    paths = write_snapshots(validate_config(raw), tmp_path)
    touched = {key for key, path in paths.items() if path.stat().st_mtime_ns != mtimes[key]}
    assert touched == {"eval/countdown/generate"}


def test_a_task_reward_reaches_only_stages_of_that_task():
    def add_code_weight(c):
        c["rewards"]["code"] = {"code_tests": 0.5, "format_strict": 0.1}

    assert not {k for k in _changed_snapshots(add_code_weight) if k.startswith("runs/")}, \
        "a code reward must not rerun Countdown training"
    snapshot = stage_snapshots(validate_config(_default()))["runs/r1zero/grpo"]
    assert set(snapshot["rewards"]) == {"countdown"}
    changed = _changed_snapshots(lambda c: c["rewards"]["countdown"].update(format_strict=0.2))
    assert {"runs/r1zero/grpo", "runs/coldstart/grpo"} <= changed


def test_grpo_dataset_without_rewards_for_its_task_is_refused():
    raw = _default()
    del raw["rewards"]["countdown"]
    with pytest.raises(ConfigError, match=r"runs\.r1zero\.grpo\.dataset: 'countdown' has countdown rows but rewards: has no"):
        validate_config(raw, "my.yaml")


# ---------------------------------------------------------------- layering onto the default
def test_a_file_that_adds_one_run_is_layered_onto_the_default():
    user = {"runs": {"drgrpo": {"base": "tiny", "grpo": {"dataset": "countdown", "algorithm": {"preset": "dr_grpo"}}}}}
    cfg = validate_config(layered_config(user))
    assert set(cfg.runs) == {"r1zero", "coldstart", "drgrpo"}
    assert cfg.runs["drgrpo"].grpo.algorithm.loss_aggregation == "seq_mean_token_sum_norm"


def test_one_setting_inside_a_default_run_changes_only_that_setting():
    cfg = validate_config(layered_config({"runs": {"r1zero": {"grpo": {"lr": 5e-5}}}}))
    default = validate_config(_default())
    assert cfg.runs["r1zero"].grpo.lr == 5e-5
    assert cfg.runs["r1zero"].grpo.steps == default.runs["r1zero"].grpo.steps
    assert cfg.runs["coldstart"] == default.runs["coldstart"]


def test_null_leaves_out_a_default_run():
    cfg = validate_config(layered_config({"runs": {"coldstart": None}}))
    assert set(cfg.runs) == {"r1zero"}


def test_a_whole_config_is_not_layered():
    raw = _default()
    raw["inherit_default"] = False
    raw["runs"] = {"only": dict(raw["runs"]["r1zero"])}
    assert set(validate_config(layered_config(raw)).runs) == {"only"}


def test_check_config_show_prints_the_merged_config(tmp_path, capsys):
    from pipeline.cli import main

    path = tmp_path / "one_run.yaml"
    path.write_text("runs:\n  r1zero:\n    grpo: {steps: 7}\n")
    assert main(["check-config", str(path), "--show"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["runs"]["r1zero"]["grpo"]["steps"] == 7 and "coldstart" in shown["runs"] and "datasets" in shown
