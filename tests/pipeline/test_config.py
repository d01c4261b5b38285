"""Config validation and per-stage snapshots (what reruns when a setting changes)."""
from __future__ import annotations

import copy
import re
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


# ----------------------------------------------------------------------------- seeds

def _seeded(r1zero_seeds, coldstart_seeds=None):
    raw = _default()
    raw["runs"]["r1zero"]["seeds"] = r1zero_seeds
    if coldstart_seeds is not None:
        raw["runs"]["coldstart"]["seeds"] = coldstart_seeds
    return validate_config(raw)


def test_seeds_expand_into_one_run_per_seed_with_its_seed():
    cfg = _seeded([0, 1, 2], coldstart_seeds=[7])
    assert list(cfg.runs) == ["r1zero-seed0", "r1zero-seed1", "r1zero-seed2", "coldstart-seed7"]
    assert [cfg.runs[f"r1zero-seed{k}"].grpo.seed for k in (0, 1, 2)] == [0, 1, 2]
    assert cfg.runs["coldstart-seed7"].sft.seed == 7 and cfg.runs["coldstart-seed7"].grpo.seed == 7, "SFT is seeded too"
    assert cfg.runs["r1zero-seed1"].grpo.steps == 160, "every other setting is the run's"
    assert cfg.seed_groups() == {"r1zero": ["r1zero-seed0", "r1zero-seed1", "r1zero-seed2"], "coldstart": ["coldstart-seed7"]}
    assert cfg.report_units()["r1zero"] == ["r1zero-seed0", "r1zero-seed1", "r1zero-seed2"]


def test_without_seeds_nothing_changes():
    cfg = validate_config(_default())
    assert list(cfg.runs) == ["r1zero", "coldstart"] and cfg.seed_groups() == {}
    assert cfg.report_units() == {"r1zero": ["r1zero"], "coldstart": ["coldstart"]}
    assert "members" not in stage_snapshots(cfg)["compare"], "an unseeded config keeps its compare snapshot"


def test_adding_a_seed_changes_only_that_seeds_and_the_aggregating_snapshots():
    before, after = stage_snapshots(_seeded([0, 1])), stage_snapshots(_seeded([0, 1, 2]))
    assert {key for key in before if before[key] != after[key]} == {"report/r1zero", "compare"}
    assert set(after) - set(before) == {"runs/r1zero-seed2/grpo"}
    assert after["report/r1zero"]["seeds"] == {"r1zero-seed0": 0, "r1zero-seed1": 1, "r1zero-seed2": 2}
    assert after["compare"]["members"] == {"r1zero": ["r1zero-seed0", "r1zero-seed1", "r1zero-seed2"]}
    assert after["compare"]["runs"] == ["coldstart", "r1zero"]


SEED_ERRORS = [
    ([0, 1, 0], "runs.r1zero: seeds: [0] listed twice", "a seed listed twice"),
    ([0, "1"], "runs.r1zero.seeds.1: Input should be a valid integer", "a seed that is not an int"),
    ([True], "runs.r1zero.seeds.0: Input should be a valid integer", "a bool is not a seed"),
    ([], "runs.r1zero.seeds: List should have at least 1 item", "an empty list"),
]


@pytest.mark.parametrize("seeds,expected,reason", SEED_ERRORS, ids=[e[2] for e in SEED_ERRORS])
def test_bad_seeds_are_named(seeds, expected, reason):
    with pytest.raises(ConfigError, match=re.escape(expected)):
        _seeded(seeds)


def test_a_seed_run_name_may_not_collide_with_another_run():
    raw = _default()
    raw["runs"]["r1zero"]["seeds"] = [0]
    raw["runs"]["r1zero-seed0"] = copy.deepcopy(raw["runs"]["coldstart"])
    with pytest.raises(ConfigError, match=re.escape("runs.r1zero.seeds: seed 0 would be the run 'r1zero-seed0', "
                                                    "which the config already has")) as error:
        validate_config(raw)
    assert "(got {" not in str(error.value), "the whole config is not echoed"


def test_a_seeded_run_may_not_share_its_name_with_a_run():
    raw = _default()
    raw["runs"]["other"] = {**copy.deepcopy(raw["runs"]["r1zero"]), "seed_of": "coldstart"}
    with pytest.raises(ConfigError, match="runs.other.seed_of: 'coldstart' is also the name of a run"):
        validate_config(raw)


def test_compare_names_a_seeded_run_by_its_name():
    raw = _default()
    raw["runs"]["r1zero"]["seeds"] = [0, 1]
    raw["compare"] = {"runs": ["r1zero", "coldstart"]}
    assert stage_snapshots(validate_config(raw))["compare"]["runs"] == ["r1zero", "coldstart"]
    raw["compare"] = {"runs": ["r1zero-seed5"]}
    with pytest.raises(ConfigError, match="compare.runs: unknown run 'r1zero-seed5'; known: coldstart, r1zero"):
        validate_config(raw)


def test_the_expanded_config_validates_again_unchanged():
    cfg = _seeded([0, 1])
    dumped = cfg.model_dump(mode="json")
    again = validate_config(copy.deepcopy(dumped))
    assert again.model_dump(mode="json") == dumped and again.seed_groups() == cfg.seed_groups()


def test_check_config_show_prints_the_seed_runs(tmp_path, capsys):
    from pipeline.cli import main

    path = tmp_path / "seeds.yaml"
    path.write_text("runs:\n  r1zero:\n    seeds: [0, 3]\n")
    assert main(["check-config", str(path), "--show"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert list(shown["runs"]) == ["r1zero-seed0", "r1zero-seed3", "coldstart"]
    assert shown["runs"]["r1zero-seed3"]["grpo"]["seed"] == 3 and shown["runs"]["r1zero-seed3"]["seed_of"] == "r1zero"
