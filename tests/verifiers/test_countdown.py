"""Countdown checker, reward and solver: tables of cases with the reason for each."""

import itertools
import random
import time
from fractions import Fraction

import pytest

from verifiers.countdown import countdown_check, countdown_reward, extract_answer, solve_countdown

NUMBERS = [1, 3, 4, 6]

# (id, answer_text, numbers, target, correct, words expected in the reason)
CHECK_CASES = [
    ("correct_simple", "(6+4)*3-1", NUMBERS, 29, True, "correct"),
    ("correct_with_spaces_and_newline", " ( 6 + 4 ) *\n3 - 1 ", NUMBERS, 29, True, "correct"),
    ("correct_claimed_result", "(6+4)*3-1 = 29", NUMBERS, 29, True, "correct"),
    ("fraction_intermediate_hits_target", "6/(1-3/4)", NUMBERS, 24, True, "correct"),
    ("fraction_cancels_exactly", "1/3*6*4", NUMBERS, 8, True, "correct"),
    ("unicode_times_and_minus", "(6+4)×3−1", NUMBERS, 29, True, "correct"),
    ("repeated_number_given_twice", "5*5-1", [5, 5, 1], 24, True, "correct"),
    ("wrong_target", "6*4+3-1", NUMBERS, 24, False, "evaluates to 26"),
    ("claimed_result_differs", "(6+4)*3-1 = 30", NUMBERS, 29, False, "claimed result"),
    ("number_reused", "6*4*1*1", NUMBERS, 24, False, "reused"),
    ("number_missing", "6*4", NUMBERS, 24, False, "not used: [1, 3]"),
    ("extra_number", "6*4*1*3*2", NUMBERS, 144, False, "not available"),
    ("number_not_in_list", "6*4+3-1+0", NUMBERS, 26, False, "not available"),
    ("repeated_number_used_once", "5*5", [5, 5, 1], 25, False, "not used: [1]"),
    ("power", "(6-4)**3*1", NUMBERS, 8, False, "power"),
    ("xor_is_not_power", "6^4+3-1", NUMBERS, 4, False, "characters not allowed"),
    ("division_by_zero", "6/(4-3-1)", NUMBERS, 24, False, "division by zero"),
    ("unary_minus", "-1+6*4+3-2", [1, 6, 4, 3, 2], 24, False, "unary"),
    ("unary_plus", "+1*6*4", [1, 6, 4], 24, False, "unary"),
    ("float_literal", "6*4.0*1", [6, 4, 1], 24, False, "non-integer"),
    ("scientific_literal", "6*4e0", [6, 4], 24, False, "characters not allowed"),
    ("underscore_literal", "6*1_0", [6, 10], 60, False, "characters not allowed"),
    ("leading_zero_literal", "06*4", [6, 4], 24, False, "not an expression"),
    ("huge_literal", "1" * 20 + "-" + "1" * 20 + "+24", [int("1" * 20), int("1" * 20), 24], 24, False, "digits"),
    ("tower_of_powers", "9**9**9**9", [9, 9, 9, 9], 1, False, "power"),
    ("deep_parentheses", "(" * 100 + "6*4" + ")" * 100, [6, 4], 24, False, "nested deeper"),
    ("too_long", "1+" * 400 + "1", [1] * 401, 401, False, "longer than"),
    # Must not be cut at the cap right after "= 24" and then accepted.
    ("claimed_result_then_text_beyond_cap", "6*4" + " " * 500 + "=" + " " * 70 + "24" + "and more", [6, 4], 24, False, "longer than"),
    ("function_call", "__import__('os')", NUMBERS, 0, False, "characters not allowed"),
    ("names_and_text", "six times four", [6, 4], 24, False, "characters not allowed"),
    ("text_around_expression", "The answer is 6*4", [6, 4], 24, False, "characters not allowed"),
    ("empty", "  ", NUMBERS, 24, False, "empty"),
    ("unbalanced", "(6*4", [6, 4], 24, False, "not an expression"),
    ("two_equals_signs", "6*4 = 24 = 24", [6, 4], 24, False, "claimed result"),
    ("comparison", "6*4 == 24", [6, 4], 24, False, "claimed result"),
]


@pytest.mark.parametrize(
    ("answer", "numbers", "target", "correct", "reason_part"),
    [case[1:] for case in CHECK_CASES],
    ids=[case[0] for case in CHECK_CASES],
)
def test_countdown_check_table(answer, numbers, target, correct, reason_part):
    ok, reason = countdown_check(answer, numbers, target)
    assert ok is correct
    assert reason_part in reason


def _example(numbers, target, **meta):
    return {"task": "countdown", "meta": {"numbers": numbers, "target": target, **meta}}


EX = _example(NUMBERS, 24)

# (id, completion, example, reward)
REWARD_CASES = [
    ("correct", "<think>6/(1-3/4)</think>\n<answer>6/(1-3/4)</answer>", EX, 1.0),
    ("correct_with_claimed_result", "<think>r</think><answer> 6/(1-3/4) = 24 </answer>", EX, 1.0),
    ("last_answer_wins", "<think>r</think><answer>6*4</answer> no wait <answer>6/(1-3/4)</answer>", EX, 1.0),
    ("last_answer_wrong", "<think>r</think><answer>6/(1-3/4)</answer><answer>6*4</answer>", EX, 0.0),
    ("wrong_answer", "<think>r</think><answer>6*4*1*3</answer>", EX, 0.0),
    ("no_answer_tag", "<think>6/(1-3/4)</think> 6/(1-3/4)", EX, 0.0),
    ("answer_only_inside_think", "<think>maybe <answer>6/(1-3/4)</answer></think> done", EX, 0.0),
    ("unclosed_think", "<think>I think <answer>6/(1-3/4)</answer>", EX, 0.0),
    ("text_around_expression", "<think>r</think><answer>It is 6/(1-3/4).</answer>", EX, 0.0),
    ("no_think_block_at_all", "<answer>6/(1-3/4)</answer>", EX, 1.0),
    ("prompt_ends_with_think", "6/(1-3/4)</think><answer>6/(1-3/4)</answer>", _example(NUMBERS, 24, prompt_ends_with_think=True), 1.0),
    ("prompt_think_never_closed", "<answer>6/(1-3/4)</answer>", _example(NUMBERS, 24, prompt_ends_with_think=True), 0.0),
    ("unclosed_answer", "<think>r</think><answer>6/(1-3/4)", EX, 0.0),
    ("empty", "", EX, 0.0),
]


@pytest.mark.parametrize(
    ("completion", "example", "reward"),
    [case[1:] for case in REWARD_CASES],
    ids=[case[0] for case in REWARD_CASES],
)
def test_countdown_reward_table(completion, example, reward):
    assert countdown_reward(completion, example) == reward


def test_extract_answer_ignores_closing_tag_before_last_open():
    assert extract_answer("</think><answer>1</answer> <answer>2") == "1"


@pytest.mark.parametrize(
    "example",
    [{}, {"meta": {}}, {"meta": {"numbers": [1, 2]}}, {"meta": {"numbers": [1, "2"], "target": 3}}],
    ids=["no_meta", "empty_meta", "no_target", "string_number"],
)
def test_malformed_example_is_a_data_error(example):
    # The registry turns this into a counted low value; called directly it must be loud.
    with pytest.raises(ValueError, match="countdown"):
        countdown_reward("<answer>1+2</answer>", example)


@pytest.mark.parametrize(
    "answer",
    ["9**9**9**9", "(" * 5000 + "1" + ")" * 5000, "-" * 100_000 + "1", "1" * 100_000, "1/" * 200 + "0"],
    ids=["power_tower", "deep_parens", "unary_chain", "huge_literal", "long_division_chain"],
)
def test_hostile_answers_are_rejected_fast(answer):
    start_s = time.perf_counter()
    ok, _reason = countdown_check(answer, [1, 2], 3)
    assert not ok
    assert time.perf_counter() - start_s < 0.1


def _reachable(values):
    """All values an expression tree over exactly these values reaches (brute force)."""
    if len(values) == 1:
        return {values[0]}
    reached = set()
    for i, j in itertools.permutations(range(len(values)), 2):
        rest = [v for k, v in enumerate(values) if k not in (i, j)]
        a, b = values[i], values[j]
        for value in (a + b, a - b, a * b, *((a / b,) if b else ())):
            reached |= _reachable([*rest, value])
    return reached


@pytest.mark.parametrize("seed", range(4))
def test_solver_agrees_with_brute_force_and_checker(seed):
    rng = random.Random(seed)
    numbers = [rng.randint(0, 9) for _ in range(rng.randint(1, 4))]
    reachable = _reachable([Fraction(n) for n in numbers])
    for target in range(-3, 40):
        solution = solve_countdown(numbers, target)
        assert (solution is not None) == (Fraction(target) in reachable), (numbers, target, solution)
        if solution is not None:
            assert countdown_check(solution, numbers, target) == (True, "correct"), solution


# (id, numbers, target, ops, solvable)
SOLVER_CASES = [
    ("classic_24_needs_fractions", [1, 3, 4, 6], 24, "+-*/", True),
    ("classic_24_needs_division", [1, 3, 4, 6], 24, "+-*", False),
    ("product_without_division", [1, 2, 3, 4], 24, "+-*", True),
    ("only_addition_too_small", [1, 3, 4, 6], 24, "+", False),
    ("single_number_is_target", [7], 7, "+-*/", True),
    ("single_number_not_target", [7], 8, "+-*/", False),
    ("zero_target_from_zero_product", [0, 5, 7, 9, 11], 0, "*", True),
    # Both five-number verdicts were confirmed by a brute-force enumeration of all 15,787 values.
    ("five_numbers_fraction_target", [25, 50, 75, 100, 3], 17, "+-*/", True),
    ("five_numbers_unreachable", [25, 50, 75, 100, 3], 421, "+-*/", False),
    ("six_numbers_unreachable_prime", [97, 89, 83, 79, 73, 71], 100003, "+-*/", False),
]


@pytest.mark.parametrize(
    ("numbers", "target", "ops", "solvable"),
    [case[1:] for case in SOLVER_CASES],
    ids=[case[0] for case in SOLVER_CASES],
)
def test_solver_table(numbers, target, ops, solvable):
    solution = solve_countdown(numbers, target, ops)
    assert (solution is not None) is solvable
    if solution is not None:
        assert countdown_check(solution, numbers, target) == (True, "correct")
        assert set(solution) <= set(ops) | set("0123456789()")


def test_solver_bounds_six_numbers_in_time():
    start_s = time.perf_counter()
    assert solve_countdown([2, 3, 5, 7, 11, 13], 99991) is None
    assert time.perf_counter() - start_s < 5.0  # about 0.25 s on a busy 2-core CPU


@pytest.mark.parametrize(
    ("numbers", "ops", "message"),
    [([], "+", "1 to 6"), ([1] * 7, "+", "1 to 6"), ([-1, 2], "+", "non-negative"), ([1, 2], "^", "subset")],
    ids=["no_numbers", "seven_numbers", "negative_number", "unknown_op"],
)
def test_solver_rejects_bad_arguments(numbers, ops, message):
    with pytest.raises(ValueError, match=message):
        solve_countdown(numbers, 3, ops)
