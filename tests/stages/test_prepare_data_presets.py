"""Training data named by preset: TinyZero's Countdown and the maths sets, from local copies in
each dataset's own schema (no network), and the check that stops a run before any job when the
data or the hub model is missing."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.config import ConfigError, layered_config, validate_config
from pipeline.workflow import Workflow
from stages.prepare_data import DataError
from tests.stages.test_prepare_data import run
from verifiers.registry import REWARDS

FIXTURES = Path(__file__).resolve().parents[2] / "data" / "fixtures" / "train_presets"


def test_countdown_3to4_rows_become_countdown_problems_with_a_carved_test_split(tmp_path):
    source = {"kind": "preset", "name": "countdown_3to4", "local_path": str(FIXTURES / "countdown_3to4.jsonl")}
    rows, stats = run(tmp_path, source, {"train": 8, "test": 4})
    assert stats["counts"] == {"train": 8, "test": 4}
    raw = [json.loads(line) for line in (FIXTURES / "countdown_3to4.jsonl").read_text().splitlines()]
    assert [r["meta"]["numbers"] for r in rows["test"]] == [r["nums"] for r in raw[8:12]], "test = the rows after train"
    row = rows["train"][0]
    assert row["task"] == "countdown" and row["meta"]["target"] == raw[0]["target"]
    assert all(str(n) in row["question"] for n in raw[0]["nums"]) and str(raw[0]["target"]) in row["question"]


def test_a_countdown_preset_row_is_scored_by_the_countdown_reward(tmp_path):
    path = tmp_path / "tz.jsonl"
    path.write_text('{"target": 16, "nums": [3, 5, 2]}\n{"target": 1, "nums": [1, 2, 3]}\n')
    rows, _ = run(tmp_path / "out", {"kind": "preset", "name": "countdown_3to4", "local_path": str(path)},
                  {"train": 1, "test": 1})
    example = rows["train"][0]
    assert REWARDS["countdown"]("<think>x</think><answer>(3 + 5) * 2</answer>", example) == 1.0
    assert REWARDS["countdown"]("<think>x</think><answer>3 + 5 + 2</answer>", example) == 0.0


def test_maths_preset_maps_its_columns(tmp_path):
    source = {"kind": "preset", "name": "deepscaler_40k", "local_path": str(FIXTURES / "deepscaler_40k.jsonl")}
    rows, _ = run(tmp_path, source, {"train": 0, "test": 1})
    assert len(rows["train"]) == 3 and len(rows["test"]) == 1, "train 0 means all rows but the test rows"
    assert rows["train"][1]["answer"] == "\\frac{5}{6}" and rows["train"][1]["task"] == "math"
    assert rows["train"][0]["question"] == "What is $1+2$?"


def test_a_preset_with_too_few_rows_is_refused(tmp_path):
    source = {"kind": "preset", "name": "countdown_3to4", "local_path": str(FIXTURES / "countdown_3to4.jsonl")}
    with pytest.raises(DataError, match="12 rows, fewer than splits.train"):
        run(tmp_path, source, {"train": 10, "test": 5})


def test_a_bad_countdown_row_is_named(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"nums": [1, 2], "target": 3}\n{"nums": "12", "target": 3}\n')
    source = {"kind": "preset", "name": "countdown_3to4", "local_path": str(path)}
    with pytest.raises(DataError, match="row 2: needs 'nums'"):
        run(tmp_path / "out", source, {"train": 1, "test": 1})


def _config(tmp_path, **datasets_and_models):
    user = {"results_dir": str(tmp_path / "results"), **datasets_and_models}
    return Workflow.from_snakemake_config(user)


def test_unknown_preset_names_the_known_ones():
    with pytest.raises(ConfigError, match="unknown dataset preset 'nope'; known: countdown_3to4"):
        validate_config(layered_config({"datasets": {"x": {"source": {"kind": "preset", "name": "nope"}}}}), "my.yaml")


def test_a_missing_preset_or_hub_model_is_reported_before_any_job(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "ds"))
    w = _config(tmp_path, datasets={"tz": {"source": {"kind": "preset", "name": "countdown_3to4"}}},
                models={"big": {"kind": "hf", "path": "Qwen/Qwen2.5-3B"}})
    problems = "\n".join(w.missing_inputs())
    assert "datasets.tz.source: preset 'countdown_3to4' (Jiayi-Pan/Countdown-Tasks-3to4" in problems
    assert "models.big.path: 'Qwen/Qwen2.5-3B' is neither a local directory nor in the Hugging Face cache" in problems
    assert "huggingface-cli download Qwen/Qwen2.5-3B" in problems and "models.big.allow_download: true" in problems
    # In the cache (as huggingface_hub lays it out), or allowed to download: nothing to report.
    (tmp_path / "hub" / "models--Qwen--Qwen2.5-3B").mkdir(parents=True)
    (tmp_path / "hub" / "datasets--Jiayi-Pan--Countdown-Tasks-3to4").mkdir(parents=True)
    assert w.missing_inputs() == []


def test_a_missing_local_path_is_named(tmp_path):
    w = _config(tmp_path, datasets={"tz": {"source": {"kind": "preset", "name": "orz_57k",
                                                       "local_path": str(tmp_path / "nowhere.jsonl")}}})
    assert w.missing_inputs() == [f"datasets.tz.source.local_path: {tmp_path / 'nowhere.jsonl'} does not exist "
                                  "(preset 'orz_57k')"]
