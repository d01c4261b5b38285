"""Code rewards: program extraction, MBPP/HumanEval converters on the fixtures, reward values, registry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from verifiers.code_reward import (
    UnsupportedTestError,
    code_all_pass_reward,
    code_results_batch,
    code_tests_reward,
    extract_program,
    tests_from_humaneval,
    tests_from_mbpp,
)
from verifiers.sandbox import run_program

FIXTURES = Path(__file__).resolve().parents[2] / "data" / "fixtures" / "code"
MBPP = [json.loads(line) for line in (FIXTURES / "mbpp_sample.jsonl").read_text().splitlines()]
HUMANEVAL = [json.loads(line) for line in (FIXTURES / "humaneval_sample.jsonl").read_text().splitlines()]
FENCE = "```"

EXTRACTION = [
    (f"<think>t</think><answer>{FENCE}python\nA\n{FENCE}</answer>", "A\n", "python block inside the answer"),
    (f"<answer>{FENCE}python\nA\n{FENCE}\n{FENCE}python\nB\n{FENCE}</answer>", "B\n", "the last python block wins"),
    (f"<answer>{FENCE}python\nA\n{FENCE}\n{FENCE}text\nB\n{FENCE}</answer>", "A\n", "python preferred over other languages"),
    (f"<answer>{FENCE}\nC\n{FENCE}</answer>", "C\n", "an unlabelled block when no python block"),
    ("<answer>  print(1)\n</answer>", "print(1)", "bare answer text"),
    (f"{FENCE}python\nX\n{FENCE}<answer>{FENCE}py\nY\n{FENCE}</answer>", "Y\n", "blocks outside the answer are ignored"),
    ("<answer>first</answer> <answer>second</answer>", "second", "the last answer block"),
    (f"reasoning {FENCE}python\nZ\n{FENCE} end", "Z\n", "no answer tags: last python block of the completion"),
    ("just prose, no code", "", "no answer tags and no block: nothing"),
    (f"<answer>{FENCE}python\nW\n", f"{FENCE}python\nW", "unclosed fence and answer: no block, the answer text"),
]


@pytest.mark.parametrize("completion, program, reason", EXTRACTION, ids=[r for *_, r in EXTRACTION])
def test_extract_program(completion, program, reason):
    assert extract_program(completion) == program, reason


def test_mbpp_converter_hand_checked_row():
    tests = tests_from_mbpp(MBPP[1])
    assert tests == {"kind": "call", "fn_name": "common_items", "cases": [
        {"args": [{"__tuple__": [3, 4, 5, 6]}, {"__tuple__": [5, 7, 4, 10]}], "kwargs": {}, "expected": {"__tuple__": [4, 5]}},
        {"args": [{"__tuple__": [1, 2]}, {"__tuple__": [3, 4]}], "kwargs": {}, "expected": {"__tuple__": []}},
        {"args": [{"__tuple__": [9, 1, 1]}, {"__tuple__": [1, 9]}], "kwargs": {}, "expected": {"__tuple__": [1, 9]}},
    ]}


def test_mbpp_converter_keyword_arguments_and_int_keys():
    assert tests_from_mbpp(MBPP[6])["cases"][2] == {"args": [["a"]], "kwargs": {"n": 1}, "expected": [["a"]]}
    assert tests_from_mbpp(MBPP[5])["cases"][0]["expected"] == {"__dict__": [[97, 0], [98, 1]]}


def test_mbpp_challenge_tests_are_opt_in():
    assert len(tests_from_mbpp(MBPP[3])["cases"]) == 3
    assert len(tests_from_mbpp(MBPP[3], include_challenge=True)["cases"]) == 4


def test_mbpp_unsupported_asserts_are_reported_or_listed():
    with pytest.raises(UnsupportedTestError, match=r"(?s)row 5: 2 unsupported.*test 0: .assert math.isclose"):
        tests_from_mbpp(MBPP[4])
    lenient = tests_from_mbpp(MBPP[4], strict=False)
    assert len(lenient["cases"]) == 1 and len(lenient["unsupported"]) == 2
    assert lenient["setup_code"] == "import math"


@pytest.mark.parametrize("assert_text, reason", [
    ("assert f(x) == 1", "argument is a name, not a literal"),
    ("assert f(1) != 2", "not an == comparison"),
    ("assert f(1) == g(2)", "expected side is a call"),
    ("assert f(*[1]) == 1", "star-args unpacking"),
    ("assert obj.f(1) == 1", "method call, not a named function"),
    ("assert f(1) == __import__('os').system('true')", "never evaluated: a call is not a literal"),
    ("x = 1", "not an assert"),
    ("assert f(1) ==", "syntax error"),
])
def test_mbpp_rejects_asserts_of_other_shapes(assert_text, reason):
    with pytest.raises(UnsupportedTestError):
        tests_from_mbpp({"task_id": 0, "test_list": [assert_text], "test_setup_code": ""})


def test_mbpp_reference_solutions_pass_their_tests():
    items = [(row["code"].replace("\r\n", "\n"), tests_from_mbpp(row, strict=False)) for row in MBPP]
    assert [run_program(code, tests).fraction_passed for code, tests in items] == [1.0] * len(MBPP)


def test_humaneval_converter_hand_checked_row():
    tests = tests_from_humaneval(HUMANEVAL[1])  # `assert True` lines are skipped, messages ignored
    assert tests == {"kind": "call", "fn_name": "is_rotation", "cases": [
        {"args": ["abcd", "cdab"], "kwargs": {}, "expected": True},
        {"args": ["abcd", "acbd"], "kwargs": {}, "expected": False},
        {"args": ["", ""], "kwargs": {}, "expected": True},
    ]}


def test_humaneval_prelude_carries_imports_and_helpers():
    assert tests_from_humaneval(HUMANEVAL[0])["prelude"] == "from typing import List"
    assert "def shift_char" in tests_from_humaneval(HUMANEVAL[2])["prelude"]


def test_humaneval_unsupported_statements_are_reported_or_listed():
    with pytest.raises(UnsupportedTestError, match=r"(?s)2 unsupported.*abs\(candidate.*For statement"):
        tests_from_humaneval(HUMANEVAL[4])
    assert len(tests_from_humaneval(HUMANEVAL[4], strict=False)["cases"]) == 1


def test_humaneval_canonical_solutions_pass():
    # The model writes the whole function; prompt + canonical body is such a program. For row 2
    # the helper comes from the prelude, so the program may omit it.
    programs = [row["prompt"] + row["canonical_solution"] for row in HUMANEVAL]
    programs[2] = "def caesar(text, k):\n" + HUMANEVAL[2]["canonical_solution"]
    results = [run_program(p, tests_from_humaneval(row, strict=False)) for p, row in zip(programs, HUMANEVAL)]
    assert [r.fraction_passed for r in results] == [1.0] * len(HUMANEVAL)


def example(tests: dict) -> dict:
    return {"id": "t", "source": "test", "task": "code", "prompt": "", "answer": None, "tests": tests, "meta": {}}


REWARD_CASES = [
    ("def running_max(numbers):\n    return sorted(numbers)", 1 / 3, 0.0, "sorted() is right only on []"),
    ("def running_max(numbers):\n    out, best = [], None\n    for n in numbers:\n"
     "        best = n if best is None else max(best, n)\n        out.append(best)\n    return out", 1.0, 1.0, "correct"),
    ("def running_max(numbers):\n    raise ValueError", 0.0, 0.0, "always raises"),
    ("print('no function here')", 0.0, 0.0, "does not define the entry point"),
]


@pytest.mark.parametrize("program, fraction, all_pass, reason", REWARD_CASES, ids=[r for *_, r in REWARD_CASES])
def test_rewards_on_humaneval_fixture(program, fraction, all_pass, reason):
    # sorted([]) == [] passes; [1,3,2,5] -> [1,2,3,5] fails; [-1,-2] -> [-2,-1] fails: 1/3.
    ex = example(tests_from_humaneval(HUMANEVAL[0]))
    completion = f"<think>plan</think><answer>{FENCE}python\n{program}\n{FENCE}</answer>"
    assert code_tests_reward(completion, ex) == pytest.approx(fraction), reason
    assert code_all_pass_reward(completion, ex) == all_pass, reason


@pytest.mark.parametrize("completion, ex, reason", [
    ("<answer></answer>", example({"kind": "call", "fn_name": "f", "cases": [{"expected": 1}]}), "empty program"),
    ("<answer>def f(): return 1</answer>", example({"kind": "call", "cases": []}), "malformed tests"),
    ("<answer>def f(): return 1</answer>", {"task": "code"}, "no tests at all"),
    (None, example({"kind": "call", "fn_name": "f", "cases": [{"expected": 1}]}), "completion is not text"),
])
def test_rewards_are_zero_not_errors_on_bad_inputs(completion, ex, reason):
    assert code_tests_reward(completion, ex) == 0.0, reason
    assert code_all_pass_reward(completion, ex) == 0.0, reason


def test_stdio_example_reward():
    ex = example({"kind": "stdio", "cases": [{"input": "3\n", "output": "9"}, {"input": "4\n", "output": "16"}]})
    completion = f"<answer>{FENCE}python\nn = int(input())\nprint(n * n)\n{FENCE}</answer>"
    assert code_tests_reward(completion, ex) == 1.0


def test_batch_results_match_single_rewards():
    ex = example(tests_from_humaneval(HUMANEVAL[0]))
    completions = [f"<answer>{FENCE}python\n{program}\n{FENCE}</answer>" for program, *_ in REWARD_CASES] + ["no code"]
    results = code_results_batch(completions, [ex] * len(completions), num_workers=2)
    assert [r.fraction_passed if r else None for r in results] == pytest.approx([1 / 3, 1.0, 0.0, 0.0, None])


def test_rewards_are_registered():
    from verifiers.registry import REWARD_RANGES, REWARDS, safe_reward

    assert REWARD_RANGES["code_tests"] == (0.0, 1.0) and REWARD_RANGES["code_all_pass"] == (0.0, 1.0)
    ex = example({"kind": "call", "fn_name": "f", "cases": [{"args": [], "expected": 1}]})
    assert safe_reward("code_tests", "<answer>def f():\n    return 1</answer>", ex) == 1.0
    assert REWARDS["code_all_pass"]("<answer>def f():\n    return 2</answer>", ex) == 0.0


def test_batch_fills_the_cache_the_rewards_read(monkeypatch):
    import verifiers.code_reward as code_reward

    ex = example({"kind": "call", "fn_name": "f", "cases": [{"args": [], "expected": 7}]})
    completion = "<answer>def f():\n    return 7  # batch-cache test</answer>"
    code_results_batch([completion], [ex])

    def no_sandbox(*args, **kwargs):
        raise AssertionError("the reward ran the sandbox again instead of reading the cache")

    monkeypatch.setattr(code_reward, "run_program", no_sandbox)
    assert code_tests_reward(completion, ex) == 1.0 and code_all_pass_reward(completion, ex) == 1.0
