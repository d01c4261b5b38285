"""Bench and training-set presets: each bench's fixture (its dataset's real schema) becomes example
rows through the preset's mapping, every protocol carries a citation, configs name benches by
preset with overrides, and a missing dataset is reported before any job with how to provide it."""
from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
import yaml

from pipeline.config import DEFAULT_CONFIG, ConfigError, stage_snapshots, validate_config
from pipeline.presets import BENCH_PRESETS, TRAIN_PRESETS, bench_preset, cached_copies, dataset_preset, hub_source
from pipeline.workflow import Workflow
from stages import bench_data

FIXTURES = Path(__file__).resolve().parents[2] / "data" / "fixtures" / "benches"

# preset -> (rows expected from its fixture, the gold answers in order; None for code benches)
EXPECTED = {
    "gsm8k": (3, ["36", "100", "1295"]),
    "math500": (3, ["11", "5", "\\frac{3}{4}"]),
    "aime2024": (2, ["66", "100"]),
    "aime2025": (2, ["24", "24"]),
    "amc2023": (2, ["210.0", "81.0"]),
    "minerva_math": (2, ["4", "12"]),
    "olympiadbench": (2, ["3", "32"]),
    "humaneval": (2, None),
    "mbpp": (2, None),
    "livecodebench": (1, None),
}


def _default() -> dict:
    return yaml.safe_load(DEFAULT_CONFIG.read_text())


def _prepare(tmp_path: Path, preset: str, local_path: str, split: str | None = None) -> tuple[list[dict], dict]:
    config = {"bench": preset, "preset": preset, "split": split, "revision": None, "local_path": local_path,
              "allow_download": False, "prompt": {"template": "data/prompts/r1zero.txt", "format": "plain", "system": None}}
    outputs = {name: str(tmp_path / file) for name, file in
               (("data", "test.jsonl"), ("stats", "stats.json"), ("meta", "meta.json"))}
    bench_data.main(config, {}, outputs)
    rows = [json.loads(line) for line in open(outputs["data"])]
    return rows, json.loads(open(outputs["stats"]).read())


def test_every_bench_preset_has_a_fixture_and_an_expectation():
    assert set(EXPECTED) == set(BENCH_PRESETS)
    assert {path.stem for path in FIXTURES.glob("*.jsonl")} == set(BENCH_PRESETS)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_becomes_example_rows(name, tmp_path):
    preset = bench_preset(name)
    rows, stats = _prepare(tmp_path, name, str(FIXTURES / f"{name}.jsonl"))
    count, golds = EXPECTED[name]
    assert len(rows) == count and stats["num_rows"] == count and stats["preset"] == name
    assert all(row["task"] == preset.task for row in rows)
    assert all(row["question"] in row["prompt"] for row in rows), "the template wraps the question"
    assert len({row["id"] for row in rows}) == count, "ids are unique"
    if golds is not None:
        assert [row["answer"] for row in rows] == golds
    else:
        assert all(row["tests"]["cases"] for row in rows), "code rows carry checkable tests"


@pytest.mark.parametrize("name", sorted(BENCH_PRESETS))
def test_every_protocol_cites_its_source(name):
    preset = bench_preset(name)
    assert preset.default_protocol in preset.protocols
    for protocol in preset.protocols.values():
        assert "arXiv" in protocol.source or "README" in protocol.source or "scripts" in protocol.source, protocol.source
        assert protocol.num_samples >= 1 and protocol.max_new_tokens >= 1 and 0 < protocol.top_p <= 1
    assert preset.citation and preset.hf_id.count("/") == 1 and preset.revision


def test_livecodebench_keeps_stdin_problems_only(tmp_path):
    rows, stats = _prepare(tmp_path, "livecodebench", str(FIXTURES / "livecodebench.jsonl"))
    assert rows[0]["tests"] == {"kind": "stdio", "cases": [{"input": "1 2\n", "output": "3\n"},
                                                           {"input": "10 -4\n", "output": "6\n"}]}
    assert len(stats["rows_skipped"]) == 1 and "functional" in stats["rows_skipped"][0]


def test_local_dataset_directory_is_read_through_datasets(tmp_path):
    directory = tmp_path / "math500_copy"
    directory.mkdir()
    shutil.copy(FIXTURES / "math500.jsonl", directory / "test.jsonl")
    rows, _ = _prepare(tmp_path, "math500", str(directory))
    assert [row["answer"] for row in rows] == EXPECTED["math500"][1]


def test_a_fixture_in_the_wrong_schema_names_file_row_and_field(tmp_path):
    with pytest.raises(Exception, match=r"aime2024\.jsonl row 1: field 'question' is missing"):
        _prepare(tmp_path, "amc2023", str(FIXTURES / "aime2024.jsonl"))  # aime rows say 'problem', amc reads 'question'


def test_preset_bench_takes_its_protocol_and_overrides_win():
    raw = _default()
    raw["evaluation"]["benches"] = {
        "aime": {"preset": "aime2024", "local_path": str(FIXTURES / "aime2024.jsonl")},
        "aime_r1": {"preset": "aime2024", "protocol": "open_r1", "max_new_tokens": 1024,
                    "local_path": str(FIXTURES / "aime2024.jsonl")},
    }
    cfg = validate_config(raw)
    aime, aime_r1 = cfg.evaluation.benches["aime"], cfg.evaluation.benches["aime_r1"]
    assert (aime.num_samples, aime.temperature, aime.max_new_tokens, aime.ks) == (1, 0.0, 3000, [1])
    assert (aime_r1.num_samples, aime_r1.temperature, aime_r1.top_p, aime_r1.max_new_tokens) == (32, 0.6, 0.95, 1024)
    assert aime_r1.ks == [1, 4, 8, 16, 32] and aime.split == "train"
    snaps = stage_snapshots(cfg)
    assert snaps["eval/aime/score"]["rewards"] == {"math": raw["rewards"]["math"]}, "the bench's task's rewards only"
    assert snaps["eval/aime/data"]["preset"] == "aime2024"
    assert "rewards" not in snaps["eval/aime/generate"], "generation never depends on rewards"


@pytest.mark.parametrize("bench, match", [
    ({"preset": "aime2026"}, r"unknown bench preset 'aime2026'; known: aime2024"),
    ({"preset": "math500", "protocol": "greedy"}, r"unknown protocol 'greedy'; known: oat_zero, open_r1, simplerl_zoo"),
    ({"preset": "math500", "dataset": "countdown"}, r"exactly one of dataset: .* or preset:"),
    ({"dataset": "countdown", "local_path": "x.jsonl"}, r"local_path: only for a preset bench"),
])
def test_bad_preset_benches_are_refused(bench, match):
    raw = _default()
    raw["evaluation"]["benches"]["bad"] = bench
    with pytest.raises(ConfigError, match=match):
        validate_config(raw)


def test_missing_dataset_fails_before_any_job_naming_preset_and_remedies(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_DATASETS_CACHE"):
        monkeypatch.delenv(name, raising=False)
    raw = _default()
    raw["evaluation"]["benches"]["math500"] = {"preset": "math500"}
    workflow = Workflow.from_snakemake_config({**raw, "inherit_default": False})
    [message] = workflow.missing_bench_data()
    assert "evaluation.benches.math500: preset 'math500' (HuggingFaceH4/MATH-500" in message
    assert "huggingface-cli download --repo-type dataset HuggingFaceH4/MATH-500" in message
    assert "evaluation.benches.math500.local_path" in message and "allow_download: true" in message
    # Once the hub cache holds it, nothing is missing.
    (tmp_path / "hf" / "hub" / "datasets--HuggingFaceH4--MATH-500").mkdir(parents=True)
    assert cached_copies("HuggingFaceH4/MATH-500") and workflow.missing_bench_data() == []


def test_missing_local_path_is_reported():
    raw = _default()
    raw["evaluation"]["benches"]["gsm"] = {"preset": "gsm8k", "local_path": "no/such/file.jsonl"}
    workflow = Workflow.from_snakemake_config({**raw, "inherit_default": False})
    assert workflow.missing_bench_data() == ["evaluation.benches.gsm.local_path: no/such/file.jsonl does not exist "
                                             "(preset 'gsm8k')"]


def test_training_presets_as_hub_sources():
    assert set(TRAIN_PRESETS) == {"countdown_3to4", "simplerl_math_l3to5", "orz_57k", "deepscaler_40k"}
    source = hub_source(dataset_preset("simplerl_math_l3to5"))
    assert source == {"kind": "hf", "path": "hkust-nlp/SimpleRL-Zoo-Data", "name": "simplelr_qwen_level3to5",
                      "splits": {"train": "train"}, "task": "math", "fields": {"question": "question", "answer": "gt_answer"},
                      "answer_format": "plain"}
    raw = _default()
    raw["datasets"]["deepscaler"] = {"source": hub_source(dataset_preset("deepscaler_40k")), "splits": {"train": 0}}
    validate_config(copy.deepcopy(raw))  # a valid datasets: entry
    with pytest.raises(ValueError, match="need their converter"):
        hub_source(dataset_preset("countdown_3to4"))


def test_readme_bench_table_matches_the_presets():
    from pipeline.presets import presets_markdown_table

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert presets_markdown_table() in readme, "regenerate: python -c 'from pipeline.presets import presets_markdown_table as t; print(t())'"
