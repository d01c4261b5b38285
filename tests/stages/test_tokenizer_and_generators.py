"""The tiny tokenizer survives the AutoTokenizer path; generators make valid, distinct problems."""
from __future__ import annotations

import random

import pytest

from stages.core import generators
from stages.core.tiny_corpus import arithmetic_drill, countdown_completion
from verifiers.countdown import countdown_check, countdown_reward

ROUND_TRIP_TEXTS = [
    ("Use 7 5 9 to make 7.\n", "the case that lost its spaces through a custom pre-tokenizer"),
    ("User: use 3 5 7 to make 8.\nAssistant: <think>3*5=15,15-7=8 yes</think><answer>(3*5)-7</answer>", "template + tags"),
    ("  leading and  double  spaces\t\ttabs\n\n", "whitespace runs"),
    ("unicode: é ü 你好 ∑ 🙂", "non-ASCII goes through byte-level symbols"),
    ("<think></think><answer></answer>", "tags with nothing between"),
]


@pytest.mark.parametrize("text,reason", ROUND_TRIP_TEXTS, ids=[r for _, r in ROUND_TRIP_TEXTS])
def test_tiny_tokenizer_round_trips_through_autotokenizer(text, reason, tmp_path):
    from transformers import AutoTokenizer, Qwen2Config

    from stages.core.tokenizer import build_tiny_tokenizer

    built = build_tiny_tokenizer()
    built.save_pretrained(tmp_path)
    Qwen2Config(vocab_size=len(built)).save_pretrained(tmp_path)  # the path users, vLLM and eval take
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded.decode(loaded.encode(text)) == text, reason
    assert loaded.encode(text) == built.encode(text)


def test_tags_are_single_tokens():
    from stages.core.tokenizer import TAG_TOKENS, build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer()
    for tag in TAG_TOKENS:
        assert len(tokenizer.encode(tag)) == 1, tag


@pytest.mark.parametrize("ordered", [False, True])
def test_countdown_rows_have_valid_reference_answers(ordered):
    rows = generators.countdown_rows(200, seed=1, ordered=ordered, max_number=9)
    keys = set()
    for row in rows:
        ok, reason = countdown_check(row["answer"], row["meta"]["numbers"], row["meta"]["target"])
        assert ok, f"{row['answer']} for {row['meta']}: {reason}"
        keys.add((tuple(row["meta"]["numbers"]) if ordered else tuple(sorted(row["meta"]["numbers"])), row["meta"]["target"]))
    assert len(keys) == len(rows), "problems are distinct"


def test_ordered_problems_are_solvable_left_to_right():
    rng = random.Random(5)
    for _ in range(100):
        problem = generators.random_countdown_problem(rng, ordered=True)
        assert generators.find_chain(problem.numbers, problem.target, ordered=True) is not None


def test_arithmetic_rows_answers_are_exact():
    from verifiers.math_answer import is_equivalent

    rows = generators.arithmetic_rows(20, seed=2)
    assert len({row["question"] for row in rows}) == 20
    for row in rows:
        assert is_equivalent(row["meta"]["expression"], row["answer"]), row
        assert not is_equivalent(row["meta"]["expression"], str(int(row["answer"]) + 1)), row


def test_careful_completions_are_correct_and_score_full_marks():
    rng = random.Random(0)
    for _ in range(50):
        problem = generators.random_countdown_problem(rng, ordered=True, max_number=7)
        text = countdown_completion(rng, problem, style="careful", hint_prob=1.0, max_attempts=3, ordered=True)
        example = {"task": "countdown", "meta": {"numbers": list(problem.numbers), "target": problem.target,
                                                 "prompt_ends_with_think": True}}
        assert countdown_reward(text, example) == 1.0, text


def test_guess_and_careful_traces_check_their_arithmetic():
    rng = random.Random(3)
    problem = generators.random_countdown_problem(rng, ordered=True)
    careful = countdown_completion(rng, problem, style="careful", hint_prob=0.0, max_attempts=6, ordered=True)
    for line in careful.split("</think>")[0].splitlines():
        verdict = line.rsplit(" ", 1)[1]
        value = int(line.split("=")[-1].split()[0])
        assert verdict == ("yes" if value == problem.target else "no"), line
    drill = arithmetic_drill(rng, problem, num_facts=4, ordered=True)
    assert len(drill.splitlines()) == 4 and "<answer>" not in drill
