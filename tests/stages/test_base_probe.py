"""The base probe (stages/core/base_probe.py) and the checking corpus it measures (stages/core/tiny_corpus.py)."""
from __future__ import annotations

import json
import random
from fractions import Fraction

import pytest

from stages.core import generators
from stages.core.base_probe import arithmetic_steps, is_checking, probe_summary, sample_and_probe, step_is_right
from stages.core.reflection import find_markers
from stages.core.tiny_corpus import CHECK_OPENER, check_candidates, countdown_completion
from verifiers.countdown import countdown_reward

STEP_CASES = [
    # (left, op, right, claimed, right?, reason)
    (7, "+", 5, Fraction(12), True, "one-digit sum"),
    (14, "-", 1, Fraction(13), True, "two-digit minus one-digit"),
    (14, "-", 1, Fraction(15), False, "a slip by two"),
    (7, "-", 7, Fraction(1), False, "x - x is 0"),
    (3, "-", 7, Fraction(-4), True, "a negative result is still arithmetic"),
    (7, "/", 2, Fraction(7, 2), True, "exact fraction"),
    (6, "/", 0, Fraction(0), False, "division by zero is never right"),
    (4, "*", 3, Fraction(12), True, "product"),
]


@pytest.mark.parametrize("left,op,right,claimed,expected,reason", STEP_CASES, ids=[c[-1] for c in STEP_CASES])
def test_step_is_right(left, op, right, claimed, expected, reason):
    assert step_is_right(left, op, right, claimed) is expected, reason


def test_arithmetic_steps_reads_every_step_of_a_trace():
    assert arithmetic_steps("let me check\n7+7=14,14+1=15 no, retry\n7+7=14,14-1=13 yes") == [
        (7, "+", 7, Fraction(14)), (14, "+", 1, Fraction(15)), (7, "+", 7, Fraction(14)), (14, "-", 1, Fraction(13))]
    assert arithmetic_steps("3-7=-4, 7/2 = 7/2") == [(3, "-", 7, Fraction(-4)), (7, "/", 2, Fraction(7, 2))]
    assert arithmetic_steps("no arithmetic here") == []


CHECKING_CASES = [
    ("let me check\n2+3=5,5+1=6 no, retry\n2+3=5,5-1=4 yes</think><answer>(2+3)-1</answer>", True, "the corpus's checking trace"),
    ("2+3=5,5+1=6 wait\n2+3=5,5-1=4</think><answer>(2+3)-1</answer>", True, "a marker without a verdict"),
    ("2+3=5,5+1=6 no\n2+3=5,5-1=4 yes</think><answer>(2+3)-1</answer>", True, "yes/no verdicts (the older corpus)"),
    ("2+3=5,5-1=4</think><answer>(2+3)-1</answer>", False, "a guess"),
    ("2+3=5,5-1=4</think><answer>wait (2+3)-1</answer>", False, "a marker in the answer is not reasoning"),
    ("2+3=5,5-1=4 nothing</think><answer>4</answer>", False, "'no' inside a word is not a verdict"),
]


@pytest.mark.parametrize("text,expected,reason", CHECKING_CASES, ids=[c[-1] for c in CHECKING_CASES])
def test_is_checking(text, expected, reason):
    assert is_checking(text) is expected, reason


def test_probe_summary_by_hand():
    texts = ["let me check\n1+2=3,3+3=6 yes</think><answer>(1+2)+3</answer>",   # checks, right, 2 right steps
             "let me check\n1+2=3,3+3=7 no, retry\n1+2=3,3-3=1 yes</think><answer>(1+2)-3</answer>",  # 2 of 4 steps wrong
             "1+2=3,3+3=6</think><answer>(1+2)+3</answer>",                      # guess, right
             "1+2=4,4-3=1</think><answer>(1+2)-3</answer>",                      # guess, wrong, 1 of 2 wrong
             "1+2=3,3-3=0</think><answer>(1+2)-3</answer>"]                      # guess, wrong
    summary = probe_summary(texts, [True, False, True, False, False])
    assert summary["num_completions"] == 5 and summary["pass@1"] == pytest.approx(2 / 5)
    assert summary["checking_rate"] == pytest.approx(2 / 5)
    assert summary["checking"] == {"num": 2, "pass@1": 0.5}
    assert summary["guessing"] == {"num": 3, "pass@1": pytest.approx(1 / 3)}
    assert summary["num_steps"] == 12 and summary["step_accuracy"] == pytest.approx(9 / 12)


def test_probe_summary_empty_class_and_bad_input():
    summary = probe_summary(["1+1=2</think><answer>1+1</answer>"], [True])
    assert summary["checking"] == {"num": 0, "pass@1": None} and summary["guessing"]["pass@1"] == 1.0
    assert probe_summary(["</think><answer>2</answer>"], [False])["step_accuracy"] is None
    with pytest.raises(ValueError, match="2 texts but 1 verdicts"):
        probe_summary(["a", "b"], [True])


def _problems(count: int, seed: int = 0, **options):
    rng = random.Random(seed)
    return [generators.random_countdown_problem(rng, **options) for _ in range(count)]


def _example(problem) -> dict:
    return {"task": "countdown", "meta": {"numbers": list(problem.numbers), "target": problem.target,
                                          "prompt_ends_with_think": True}}


def test_corpus_checking_traces_are_right_use_published_markers_and_probe_as_checking():
    rng = random.Random(1)
    for problem in _problems(200, num_numbers=3, ops="+-", ordered=True):
        text = countdown_completion(rng, problem, style="checking", hint_prob=0.0, max_attempts=4, ordered=True, ops="+-")
        assert text.startswith(CHECK_OPENER) and is_checking(text), text
        assert countdown_reward(text, _example(problem)) == 1.0, text  # at most 4 clean ordered chains: the search hits
        assert "check" in find_markers(text, "understand_r1_zero"), text
        if " no, retry" in text:
            assert "retry" in find_markers(text, "open_reasoner_zero"), text
        assert probe_summary([text], [True])["step_accuracy"] == 1.0, text


def test_corpus_guesses_never_check_and_hit_only_by_chance():
    rng = random.Random(2)
    problems = _problems(400, seed=3, num_numbers=3, ops="+-", ordered=True)
    guesses = [countdown_completion(rng, p, style="guess", hint_prob=0.0, max_attempts=4, ordered=True, ops="+-")
               for p in problems]
    assert not any(is_checking(text) for text in guesses)
    hit_rate = sum(countdown_reward(t, _example(p)) for t, p in zip(guesses, problems)) / len(problems)
    # A random clean chain of three ordered numbers with + and - hits about 43% of the time (measured over
    # 3000 problems): checking has to beat that.
    assert 0.3 < hit_rate < 0.6
    assert probe_summary(guesses, [True] * len(guesses))["step_accuracy"] == 1.0


def test_check_candidates_try_each_clean_chain_once_in_order_and_stop_at_the_hit():
    for problem in _problems(100, seed=4, num_numbers=3, ops="+-", ordered=True):
        tried = check_candidates(random.Random(0), problem, max_attempts=4, ordered=True, ops="+-")
        traces = [chain.trace() for chain in tried]
        assert len(set(traces)) == len(traces)
        assert tried[-1].values()[-1] == problem.target
        assert all(chain.values()[-1] != problem.target for chain in tried[:-1])
        ops_order = ["".join(step.op for step in chain.steps) for chain in tried]
        assert ops_order == sorted(ops_order, key=lambda ops: [{"+": 0, "-": 1}[op] for op in ops])


def test_check_candidates_give_up_after_max_attempts_and_unordered_search_always_can_hit():
    problem = generators.CountdownProblem((9, 1, 1), 7, generators.Chain(9, (generators.ChainStep("-", 1, False),
                                                                          generators.ChainStep("-", 1, False))))
    tried = check_candidates(random.Random(0), problem, max_attempts=2, ordered=True, ops="+-")
    assert [c.trace() for c in tried] == ["9+1=10,10+1=11", "9+1=10,10-1=9"]  # -- (the hit) comes last, after -+
    rng = random.Random(5)
    for problem in _problems(100, seed=6, num_numbers=3, ops="+-*"):
        tried = check_candidates(rng, problem, max_attempts=3, ops="+-*")
        assert 1 <= len(tried) <= 3 and tried[-1].values()[-1] == problem.target


def test_sample_and_probe_counts_every_sample_with_a_tiny_random_model():
    import torch
    from transformers import AutoModelForCausalLM

    from stages.core.modeling import tiny_qwen2_config
    from stages.core.tokenizer import build_tiny_tokenizer

    torch.manual_seed(0)
    tokenizer = build_tiny_tokenizer()
    config = tiny_qwen2_config(vocab_size=len(tokenizer), hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=None,
                               intermediate_size=None, max_position_embeddings=128, eos_token_id=tokenizer.eos_token_id)
    model = AutoModelForCausalLM.from_config(config)
    rows = generators.countdown_rows(3, seed=0, question_style="compact", num_numbers=3, ops="+-", ordered=True)
    summary = sample_and_probe(model, tokenizer, rows, "User: {question}.\nAssistant: <think>", num_samples=2,
                               max_new_tokens=8, seed=0)
    assert summary["num_completions"] == 6 and summary["num_prompts"] == 3
    assert summary["checking"]["num"] + summary["guessing"]["num"] == 6
    assert set(summary["examples"]) == {"checking", "guessing"}


def test_report_shows_the_base_probe_from_the_base_evaluation_samples(tmp_path):
    from stages import report

    data = [{"id": "q1", "task": "countdown", "meta": {"numbers": [1, 2, 3], "target": 0}},
            {"id": "q2", "task": "countdown", "meta": {"numbers": [4, 4, 3], "target": 11}}]
    samples = [{"prompt_id": "q1", "completion": "let me check\n1+2=3,3+3=6 no, retry\n1+2=3,3-3=0 yes</think><answer>(1+2)-3</answer>"},
               {"prompt_id": "q1", "completion": "1+2=3,3+3=6</think><answer>(1+2)+3</answer>"},
               {"prompt_id": "q2", "completion": "4+4=8,8+3=12</think><answer>(4+4)+3</answer>"},
               {"prompt_id": "q2", "completion": "4+4=8,8-3=5</think><answer>(4+4)-3</answer>"}]
    (tmp_path / "samples.jsonl").write_text("".join(json.dumps(row) + "\n" for row in samples))
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(row) + "\n" for row in data))
    base = {"policy": "base", "bench": "countdown",
            "meta": {"inputs": {"samples": {str(tmp_path / "samples.jsonl"): "h"}, "data": {str(tmp_path / "test.jsonl"): "h"}}}}
    trained = {**base, "policy": "grpo"}
    (bench, probe), = report.base_probes([base, trained])
    assert bench == "countdown" and probe["checking"] == {"num": 1, "pass@1": 1.0}
    assert probe["guessing"] == {"num": 3, "pass@1": pytest.approx(1 / 3)}  # only (4+4)+3 = 11 hits
    assert probe["num_steps"] == 10 and probe["step_accuracy"] == pytest.approx(9 / 10)  # 4+4=8,8+3=12 is the slip
    header, rows = report.base_probe_table([(bench, probe)])
    assert rows[-1] == ["countdown", "4", "all", "0.500", "0.900 (10 steps)"]
    (tmp_path / "samples.jsonl").unlink()
    assert report.base_probe_blocks([base]) == []  # the samples are gone: no section, no error


def test_plot_aha_curves_draws_seeds_held_out_points_and_empty_panels(tmp_path):
    from stages.core import plots

    steps = list(range(40))
    runs = {"seed 0": {"accuracy": (steps, [0.3 + 0.01 * s for s in steps]),
                       "completions/mean_length": (steps, [30.0 + s for s in steps])},
            "seed 1": {"accuracy": (steps, [0.3] * 40)}}
    held_out = {"seed 0": {"accuracy": ([0, 40], [0.4, 0.8])}}
    path = tmp_path / "aha.png"
    plots.plot_aha_curves(path, runs, title="t", held_out=held_out)  # no reflection series anywhere: a "no data" panel
    assert path.read_bytes()[:4] == b"\x89PNG" and path.stat().st_size > 10_000


def test_judged_comparisons_follow_the_written_numbers_not_the_answer():
    from stages.core.base_probe import judged_comparisons

    genuine = "let me check\n5+3=8,8+2=10 vs 4 no, retry\n5-3=2,2+2=4 vs 4 yes"
    decorative = "let me check\n2+1=4,4+8=13 vs 11 yes"  # says yes to 13 vs 11: the look of a check
    assert judged_comparisons(genuine) == [True, True]
    assert judged_comparisons(decorative) == [False]
    assert judged_comparisons("15 vs 15 no") == []  # no written result: nothing judged
    summary = probe_summary([genuine, decorative, "1+1=2</think>"], [True, True, False])
    assert summary["num_verdicts"] == 3 and summary["verdict_consistency"] == pytest.approx(2 / 3)
    assert probe_summary(["1+1=2</think>"], [True])["verdict_consistency"] is None


def test_report_flags_checks_that_became_decoration(tmp_path):
    """Base checks that work, a snapshot whose checks keep the words but not the arithmetic."""
    from stages import report

    data = [{"id": "q1", "task": "countdown", "meta": {"numbers": [2, 1, 8], "target": 11}}]
    files = {"base": ["let me check\n2+1=3,3+8=11 vs 11 yes</think><answer>(2+1)+8</answer>",
                      "2+1=3,3-8=5</think><answer>(2+1)-8</answer>"],
             "step_000040": ["let me check\n2+1=4,4+8=13 vs 11 yes</think><answer>(2+1)+8</answer>",
                             "let me check\n2+1=2,2+8=12 vs 11 yes</think><answer>(2+1)+8</answer>"]}
    (tmp_path / "test.jsonl").write_text(json.dumps(data[0]) + "\n")
    scores = []
    for policy, completions in files.items():
        path = tmp_path / f"{policy}.jsonl"
        path.write_text("".join(json.dumps({"prompt_id": "q1", "completion": c}) + "\n" for c in completions))
        scores.append({"policy": policy, "bench": "countdown", "step": 40 if policy != "base" else None,
                       "meta": {"inputs": {"samples": {str(path): "h"}, "data": {str(tmp_path / "test.jsonl"): "h"}}}})
    blocks = report.check_quality_blocks(list(reversed(scores)))  # any input order: rows in training order
    header, rows = blocks[-1].header, blocks[-1].rows
    by_policy = {row[0]: dict(zip(header, row)) for row in rows}
    assert [row[0] for row in rows] == ["base", "step_000040"]
    assert by_policy["base"]["written steps right"] == "0.750" and by_policy["base"]["verdicts consistent"] == "1.000"
    assert by_policy["step_000040"]["checking share"] == "1.000"
    assert by_policy["step_000040"]["pass@1 checking"] == "1.000"  # every answer is right ...
    assert by_policy["step_000040"]["verdicts consistent"] == "0.000"  # ... and no verdict follows its numbers
    assert by_policy["step_000040"]["written steps right"] == "0.000"


def test_seeded_report_labels_each_seed_run_and_keeps_the_base_once(tmp_path):
    from stages import report

    (tmp_path / "test.jsonl").write_text(json.dumps({"id": "q1", "task": "countdown",
                                                     "meta": {"numbers": [2, 1, 8], "target": 11}}) + "\n")
    (tmp_path / "s.jsonl").write_text(json.dumps({"prompt_id": "q1", "completion": "2+1=3,3+8=11</think><answer>(2+1)+8</answer>"}) + "\n")
    inputs = {"samples": {str(tmp_path / "s.jsonl"): "h"}, "data": {str(tmp_path / "test.jsonl"): "h"}}
    scores = [{"run": run, "policy": policy, "bench": "countdown", "step": None, "meta": {"inputs": inputs}}
              for run, policy in [("r1zero-seed1", "grpo"), ("base", "base"), ("r1zero-seed0", "grpo")]]
    rows = report.check_quality_blocks(scores, label_runs=True)[-1].rows
    assert [row[0] for row in rows] == ["base", "r1zero-seed0: grpo", "r1zero-seed1: grpo"]
    assert [row[0] for row in report.check_quality_blocks(scores)[-1].rows] == ["base", "grpo", "grpo"]


def test_probe_of_a_mixed_bench_checks_its_countdown_rows_and_refuses_unknown_ids():
    from stages.core.base_probe import probe_eval_samples

    rows = [{"id": "c", "task": "countdown", "meta": {"numbers": [1, 2, 3], "target": 6}},
            {"id": "m", "task": "math", "meta": {}}]
    samples = [{"prompt_id": "c", "completion": "1+2=3,3+3=6</think><answer>(1+2)+3</answer>"},
               {"prompt_id": "m", "completion": "2+2=5</think><answer>5</answer>"}]
    summary = probe_eval_samples(samples, rows)
    assert summary["num_completions"] == 1 and summary["step_accuracy"] == 1.0  # the math row's "2+2=5" is not counted
    with pytest.raises(ValueError, match="sample 0: prompt_id 'x' is no row of the data"):
        probe_eval_samples([{"prompt_id": "x", "completion": ""}], rows)
