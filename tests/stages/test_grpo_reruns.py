"""A rerun redoes the work: finished jobs leave nothing to resume; other code never resumes."""
from __future__ import annotations

import json

import pytest

import stages.grpo as grpo
from tests.stages.test_learning import grpo_config, toy_reward  # noqa: F401  (fixture)


def _run(config, tiny_model_dir, toy_rows_file, out):
    outputs = {"model": str(out / "model"), "metrics": str(out / "metrics.jsonl"), "snapshots": str(out / "snapshots"),
               "scratch": str(out)}
    grpo.main(config, {"model": str(tiny_model_dir), "train": str(toy_rows_file)}, outputs)
    return json.loads((out / "model" / "meta.json").read_text())


def _small_config(**overrides):
    config = grpo_config({"advantage_estimator": "grpo"}, **{"steps": 3, "checkpoint_every": 1, **overrides})
    config["prompts_per_step"] = 2
    return config


def test_a_forced_rerun_after_a_finished_run_trains_every_step(toy_reward, tiny_model_dir, toy_rows_file, tmp_path):
    config = _small_config()
    assert _run(config, tiny_model_dir, toy_rows_file, tmp_path)["steps_trained_this_invocation"] == 3
    assert not (tmp_path / "checkpoints").exists(), "a finished job leaves no checkpoint to resume"
    assert not (tmp_path / "metrics.partial.jsonl").exists()
    # Snakemake deletes declared outputs before it reruns a job; the scratch dir stays.
    for name in ["model", "metrics.jsonl", "snapshots"]:
        path = tmp_path / name
        path.unlink() if path.is_file() else __import__("shutil").rmtree(path)
    assert _run(config, tiny_model_dir, toy_rows_file, tmp_path)["steps_trained_this_invocation"] == 3


def _crash_at(monkeypatch, crash_step):
    original = grpo.GRPOTrainer.step

    def step(self, index):
        if index == crash_step:
            raise KeyboardInterrupt("simulated kill")
        return original(self, index)

    monkeypatch.setattr(grpo.GRPOTrainer, "step", step)
    return original


def test_an_interrupted_run_resumes_but_not_under_other_code(toy_reward, tiny_model_dir, toy_rows_file, tmp_path,
                                                              monkeypatch):
    config = _small_config()
    original = _crash_at(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        _run(config, tiny_model_dir, toy_rows_file, tmp_path)
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("step_*")) == ["step_000000", "step_000001"]
    monkeypatch.setattr(grpo.GRPOTrainer, "step", original)
    # The same config, model and data, but the code of the stage (or a module it imports) changed.
    monkeypatch.setattr(grpo, "code_hash", lambda module: "edited-code")
    meta = _run(config, tiny_model_dir, toy_rows_file, tmp_path)
    assert meta["steps_trained_this_invocation"] == 3, "a checkpoint written by other code must not be resumed"
    assert list(tmp_path.glob("stale-*/checkpoints/step_000001")), "the stale checkpoint is moved aside, not deleted"


def test_weight_snapshots_are_published_every_eval_every_steps(toy_reward, tiny_model_dir, toy_rows_file, tmp_path,
                                                                monkeypatch):
    config = _small_config(steps=4, eval_every=2)
    original = _crash_at(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        _run(config, tiny_model_dir, toy_rows_file, tmp_path)
    assert not (tmp_path / "snapshots").exists(), "an interrupted run publishes no snapshot directory"
    monkeypatch.setattr(grpo.GRPOTrainer, "step", original)
    _run(config, tiny_model_dir, toy_rows_file, tmp_path)
    published = sorted(p.name for p in (tmp_path / "snapshots").iterdir())
    assert published == ["step_000002", "step_000004"]
    from transformers import AutoModelForCausalLM, AutoTokenizer

    AutoModelForCausalLM.from_pretrained(tmp_path / "snapshots" / "step_000004")
    AutoTokenizer.from_pretrained(tmp_path / "snapshots" / "step_000004")
    assert json.loads((tmp_path / "snapshots" / "step_000002" / "meta.json").read_text())["step"] == 2


def test_progress_bar_fields_show_reward_accuracy_kl_and_length():
    fields = grpo.progress_fields({"reward/total": 0.5, "accuracy": 0.25, "kl": 0.001234, "completions/mean_length": 23.4})
    assert fields == {"reward": "0.5", "acc": "0.25", "kl": "0.00123", "len": "23.4"}
