"""Config validation and per-stage snapshots (what reruns when a setting changes)."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest

from pipeline.config import DEFAULT_CONFIG, ConfigError, read_yaml, stage_snapshots, validate_config, write_snapshots

CONFIG_DIR = Path(DEFAULT_CONFIG).parent


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_validate(path):
    cfg = validate_config(read_yaml(path), str(path))
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
    assert changed == {"eval/countdown"}


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
    assert touched == {"eval/countdown"}
