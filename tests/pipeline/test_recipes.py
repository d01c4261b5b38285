"""The paper recipes in pipeline/config/: each against its cited values, valid, and fitting the
hardware its header names according to the memory plan (the ``# plan:`` line is run as written).
"""
from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml

from pipeline import cli
from pipeline.algorithm_config import PRESET_SAMPLING
from pipeline.config import load_config

CONFIG_DIR = Path(__file__).resolve().parents[2] / "pipeline" / "config"

# Typed out from the sources each file cites (not read from the files): a changed value fails here.
# Per run: model, data, steps, batch, lengths, sampling, optimiser, algorithm preset and overrides.
EXPECTED = {
    "tinyzero_qwen2.5-3b.yaml": {
        "runs": {"r1zero": dict(model="Qwen/Qwen2.5-3B", steps=19200, prompts_per_step=256, group_size=1,
                                max_new_tokens=1024, temperature=1.0, lr=1e-6, preset="tinyzero_ppo")},
        "data": dict(kind="preset", name="countdown_3to4", train=327680, test=1024),
        "hardware": "2 x 80 GB",
    },
    "nano_aha_moment_qwen2.5-3b.yaml": {
        "runs": {"r1zero": dict(model="Qwen/Qwen2.5-3B", steps=1000, prompts_per_step=16, group_size=4,
                                max_new_tokens=1024, temperature=1.0, lr=1e-6, preset="nano_aha_moment",
                                micro_batch_size=4, gradient_checkpointing=True, gpu_memory_utilization=0.2,
                                enable_sleep_mode=True)},
        "data": dict(kind="preset", name="countdown_3to4", train=0, test=500),
        "hardware": "1 x 80 GB",
    },
    "simplerl_zoo_qwen2.5-0.5b-1.5b.yaml": {
        "runs": {
            name: dict(model=model, steps=100, prompts_per_step=1024, group_size=8, max_new_tokens=8192,
                       temperature=1.0, lr=1e-6, preset="deepseekmath_grpo", kl_coef=1e-4, num_minibatches=4)
            for name, model in (("simplerl-0.5b", "Qwen/Qwen2.5-0.5B"), ("simplerl-1.5b", "Qwen/Qwen2.5-1.5B"))
        },
        "data": dict(kind="hf", path="hkust-nlp/SimpleRL-Zoo-Data", name="simplelr_qwen_level3to5",
                     fields={"question": "question", "answer": "gt_answer"}),
        "hardware": "8 x 80 GB",
    },
    "drgrpo_qwen2.5-math-1.5b.yaml": {
        "runs": {"drgrpo": dict(model="Qwen/Qwen2.5-Math-1.5B", steps=400, prompts_per_step=128, group_size=8,
                                max_new_tokens=3000, temperature=1.0, lr=1e-6, preset="dr_grpo",
                                gradient_checkpointing=True, gpu_memory_utilization=0.35)},
        "data": dict(kind="hf", path="hkust-nlp/SimpleRL-Zoo-Data", name="simplelr_qwen_level3to5",
                     fields={"question": "question", "answer": "gt_answer"}),
        "hardware": "8 x 80 GB",
    },
    "dapo_qwen2.5-32b.yaml": {
        "runs": {"dapo": dict(model="Qwen/Qwen2.5-32B", steps=5000, prompts_per_step=512, group_size=16,
                              max_new_tokens=20480, temperature=1.0, lr=1e-6, warmup_steps=10, weight_decay=0.1,
                              preset="dapo")},
        "data": dict(kind="hf", path="open-r1/DAPO-Math-17k-Processed", name="en",
                     fields={"question": "prompt", "answer": "solution"}),
        "hardware": "128 x 96 GB",
    },
    "gsm8k_qwen2.5-math-1.5b.yaml": {
        "runs": {"drgrpo": dict(model="Qwen/Qwen2.5-Math-1.5B", steps=400, prompts_per_step=128, group_size=8,
                                max_new_tokens=3000, temperature=1.0, lr=1e-6, preset="dr_grpo")},
        "data": dict(kind="hf", path="openai/gsm8k", name="main"),
        "hardware": "1 x 80 GB",
    },
}
# Recipes whose run copies a preset's published sampling settings: they must agree with the table.
PRESET_SAMPLING_KEYS = {"group_size", "max_new_tokens", "lr"}


def _header(path: Path) -> list[str]:
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("# ").rstrip())
    return lines


def test_every_recipe_file_is_listed():
    recipes = {p.name for p in CONFIG_DIR.glob("*.yaml") if "plan:" in p.read_text()}
    assert recipes == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_recipe_validates_and_carries_the_cited_values(name):
    path = CONFIG_DIR / name
    cfg = load_config(path)
    expected = EXPECTED[name]
    assert set(cfg.runs) == set(expected["runs"])
    for run_name, values in expected["runs"].items():
        run = cfg.runs[run_name]
        grpo = run.grpo
        assert cfg.models[run.base].path == values["model"]
        assert cfg.models[run.base].dtype == "bfloat16"
        actual = {
            "model": cfg.models[run.base].path, "steps": grpo.steps, "prompts_per_step": grpo.prompts_per_step,
            "group_size": grpo.group_size, "max_new_tokens": grpo.max_new_tokens, "temperature": grpo.temperature,
            "lr": grpo.lr, "warmup_steps": grpo.warmup_steps, "weight_decay": grpo.weight_decay,
            "preset": grpo.algorithm.preset, "kl_coef": grpo.algorithm.kl_coef,
            "num_minibatches": grpo.algorithm.num_minibatches, "micro_batch_size": grpo.micro_batch_size,
            "gradient_checkpointing": grpo.gradient_checkpointing,
            "gpu_memory_utilization": grpo.rollout.gpu_memory_utilization,
            "enable_sleep_mode": grpo.rollout.enable_sleep_mode,
        }
        assert {key: actual[key] for key in values} == values, run_name
        # The memory settings are explicit in every recipe, never left to defaults.
        assert grpo.micro_batch_size or grpo.max_tokens_per_micro_batch
        assert grpo.gradient_checkpointing is True
        dataset = cfg.datasets[grpo.dataset]
        _check_data(dataset, expected["data"])


def _check_data(dataset, expected: dict) -> None:
    source = dataset.source
    assert source.kind == expected["kind"]
    if source.kind == "generator":
        assert source.name == expected["name"]
        for key in ("num_numbers", "max_number", "max_target"):
            assert source.options[key] == expected[key], key
        assert dataset.splits["test"] == expected["test"]
    elif source.kind == "preset":  # a published training set by name (pipeline/presets.py)
        assert source.name == expected["name"]
        assert (dataset.splits["train"], dataset.splits["test"]) == (expected["train"], expected["test"])
    else:
        assert (source.path, source.name) == (expected["path"], expected["name"])
        if "fields" in expected:
            assert source.fields == expected["fields"]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_preset_sampling_matches_the_published_table(name):
    cfg = load_config(CONFIG_DIR / name)
    for run in cfg.runs.values():
        published = PRESET_SAMPLING.get(run.grpo.algorithm.preset, {})
        if name.startswith(("simplerl", "gsm8k")):
            continue  # not the preset's own recipe: SimpleRL-Zoo borrows the GRPO objective; GSM8K is our data
        for key in PRESET_SAMPLING_KEYS & set(published):
            assert getattr(run.grpo, key) == published[key], (name, key)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_header_names_sources_and_hardware(name):
    header = "\n".join(_header(CONFIG_DIR / name))
    assert "Hardware: " + EXPECTED[name]["hardware"] in header
    assert "Sources" in header or "Not a\npublished recipe" in header or "not a published recipe" in header.lower()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_memory_plan_fits_the_header_hardware(name, capsys):
    """Run the header's ``plan:`` line as written: every stage must fit."""
    plan_lines = [line for line in _header(CONFIG_DIR / name) if line.startswith("plan: r1zero plan ")]
    assert len(plan_lines) == 1, "the header names one `plan: r1zero plan ...` line"
    argv = shlex.split(plan_lines[0].removeprefix("plan: r1zero "))
    assert argv[1] == f"pipeline/config/{name}"
    argv[1] = str(CONFIG_DIR / name)
    code = cli.main(argv)
    out = capsys.readouterr().out
    assert code == 0, out
    assert "verdict: every stage fits" in out


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_recipe_is_whole(name):
    raw = yaml.safe_load((CONFIG_DIR / name).read_text())
    assert raw["inherit_default"] is False  # a paper recipe is not layered onto the tiny default
