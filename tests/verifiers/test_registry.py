"""Reward registry: names, ranges, weight validation, the weighted scorer and its error guard."""

import math
import subprocess
import sys

import pytest

from verifiers import registry
from verifiers.registry import (
    OPTIONAL_REWARDS,
    REWARD_DESCRIPTIONS,
    REWARD_RANGES,
    REWARDS,
    LazyReward,
    reset_reward_error_counts,
    resolve_weights,
    reward_error_counts,
    safe_reward,
    score,
    score_batch,
)

COUNTDOWN = {"task": "countdown", "meta": {"numbers": [3, 5, 7], "target": 22}}
GOOD = "<think>3*5=15, 15+7=22</think><answer>3*5+7</answer>"
WRONG_UNFORMATTED = "<answer>3*5-7</answer> bye"


@pytest.fixture(autouse=True)
def _fresh_error_counts():
    reset_reward_error_counts()
    yield
    reset_reward_error_counts()


def test_core_rewards_are_registered():
    assert {"format_strict", "format_lenient", "format_tags", "countdown"} <= set(REWARDS)


def test_every_reward_has_a_range_and_a_description():
    assert set(REWARD_RANGES) == set(REWARDS)
    assert set(REWARD_DESCRIPTIONS) == set(REWARDS)
    for name, (low, high) in REWARD_RANGES.items():
        assert low < high, name
        assert REWARD_DESCRIPTIONS[name].strip(), name


@pytest.mark.parametrize("name", sorted(OPTIONAL_REWARDS))
def test_optional_reward_is_registered_when_its_module_exists_and_resolves(name):
    module, attr, _range, _description = OPTIONAL_REWARDS[name]
    if registry._module_exists(module):
        assert isinstance(REWARDS[name], LazyReward)
        assert callable(REWARDS[name].load()), f"{module}.{attr} is missing"
    else:
        assert name not in REWARDS


def test_importing_the_registry_is_light():
    # verifiers/ must not import torch or stages/, and lazy proxies keep sympy out until used.
    code = (
        "import sys, verifiers, verifiers.registry; "
        "heavy = [m for m in ('torch', 'sympy', 'stages', 'transformers') if m in sys.modules]; "
        "print(heavy)"
    )
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert output.stdout.strip() == "[]"


def test_package_exposes_registry_names_lazily():
    import verifiers

    assert verifiers.REWARDS is REWARDS
    assert verifiers.score is score
    with pytest.raises(AttributeError):
        verifiers.no_such_name  # noqa: B018


# resolve_weights --------------------------------------------------------------------------------


def test_resolve_weights_returns_floats_in_order_and_allows_penalties():
    assert resolve_weights({"format_tags": -1, "countdown": 2}) == {"format_tags": -1.0, "countdown": 2.0}
    assert list(resolve_weights({"format_tags": 1, "countdown": 2})) == ["format_tags", "countdown"]


def test_resolve_weights_names_the_unknown_reward_and_lists_known_ones():
    with pytest.raises(ValueError) as error:
        resolve_weights({"countdown": 1.0, "acuracy": 1.0})
    message = str(error.value)
    assert "'acuracy'" in message
    assert all(name in message for name in REWARDS)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"countdown": math.nan}, "finite"),
        ({"countdown": math.inf}, "finite"),
        ({"countdown": True}, "finite"),  # a YAML `yes` is not a weight
        ({"countdown": "1.0"}, "finite"),
        ({"countdown": None}, "finite"),
        ({}, "non-empty"),
        (["countdown"], "mapping"),
    ],
    ids=["nan", "inf", "bool", "string", "none", "empty", "not_a_dict"],
)
def test_resolve_weights_rejects_bad_specs(spec, message):
    with pytest.raises(ValueError, match=message):
        resolve_weights(spec)


# score ------------------------------------------------------------------------------------------

# (id, completion, weights, total, parts): totals computed by hand.
SCORE_CASES = [
    ("correct_and_formatted", GOOD, {"countdown": 1.0, "format_strict": 0.5}, 1.5, {"countdown": 1.0, "format_strict": 1.0}),
    ("wrong_and_unformatted", WRONG_UNFORMATTED, {"countdown": 1.0, "format_strict": 0.5}, 0.0, {"countdown": 0.0, "format_strict": 0.0}),
    # format_tags: only <answer> and </answer> are present once and in order -> 0.5.
    ("partial_tags_weighted", WRONG_UNFORMATTED, {"format_tags": 0.2}, 0.1, {"format_tags": 0.5}),
    ("zero_weight_is_logged_not_counted", GOOD, {"countdown": 0.0, "format_tags": 1.0}, 1.0, {"countdown": 1.0, "format_tags": 1.0}),
    ("negative_weight_penalises", GOOD, {"countdown": 1.0, "format_lenient": -0.5}, 0.5, {"countdown": 1.0, "format_lenient": 1.0}),
]


@pytest.mark.parametrize(
    ("completion", "weights", "total", "parts"),
    [case[1:] for case in SCORE_CASES],
    ids=[case[0] for case in SCORE_CASES],
)
def test_score_table(completion, weights, total, parts):
    got_total, got_parts = score(completion, COUNTDOWN, weights)
    assert got_total == pytest.approx(total)
    assert got_parts == parts


def test_score_rejects_unknown_names_before_scoring():
    with pytest.raises(ValueError, match="unknown reward 'acc'"):
        score(GOOD, COUNTDOWN, {"acc": 1.0})


# the error guard --------------------------------------------------------------------------------


def _raises(completion, example):
    raise RuntimeError("verifier bug")


@pytest.mark.parametrize(
    ("reward", "low_high"),
    [
        (_raises, (0.0, 1.0)),
        (lambda c, e: math.nan, (0.0, 1.0)),
        (lambda c, e: 1.5, (0.0, 1.0)),
        (lambda c, e: "1.0", (0.0, 1.0)),
        (lambda c, e: None, (-1.0, 1.0)),
    ],
    ids=["raises", "nan", "above_range", "string", "none_with_negative_low"],
)
def test_a_broken_reward_gives_its_low_value_and_is_counted(monkeypatch, reward, low_high):
    monkeypatch.setitem(REWARDS, "broken", reward)
    monkeypatch.setitem(REWARD_RANGES, "broken", low_high)
    for _ in range(3):
        assert safe_reward("broken", "anything", {}) == low_high[0]
    assert reward_error_counts() == {"broken": 3}
    total, parts = score("x", {}, {"broken": 2.0, "format_tags": 1.0})
    assert parts == {"broken": low_high[0], "format_tags": 0.0}
    assert total == 2.0 * low_high[0]
    assert reward_error_counts() == {"broken": 4}


def test_malformed_countdown_example_is_counted_not_raised():
    assert safe_reward("countdown", GOOD, {"task": "countdown", "meta": {}}) == 0.0
    assert reward_error_counts() == {"countdown": 1}


def test_an_int_result_in_range_is_returned_as_float(monkeypatch):
    monkeypatch.setitem(REWARDS, "int_reward", lambda c, e: 1)
    monkeypatch.setitem(REWARD_RANGES, "int_reward", (0.0, 1.0))
    value = safe_reward("int_reward", "x", {})
    assert value == 1.0 and type(value) is float
    assert reward_error_counts() == {}


# score_batch ------------------------------------------------------------------------------------

WEIGHTS_BY_TASK = {
    "countdown": {"countdown": 1.0, "format_strict": 0.1},
    "format_only": {"format_tags": 1.0},
}


def test_score_batch_chooses_weights_by_task():
    examples = [COUNTDOWN, {"task": "format_only"}, COUNTDOWN]
    completions = [GOOD, GOOD, WRONG_UNFORMATTED]
    results = score_batch(completions, examples, WEIGHTS_BY_TASK)
    assert [total for total, _ in results] == pytest.approx([1.1, 1.0, 0.0])
    assert [parts for _, parts in results] == [
        {"countdown": 1.0, "format_strict": 1.0},
        {"format_tags": 1.0},
        {"countdown": 0.0, "format_strict": 0.0},
    ]


@pytest.mark.parametrize(
    "bad_example",
    [{"task": "chess"}, {"meta": {}}, "not a dict"],
    ids=["unknown_task", "no_task", "not_a_dict"],
)
def test_score_batch_unknown_task_lists_configured_tasks_before_scoring(monkeypatch, bad_example):
    calls = []
    monkeypatch.setitem(REWARDS, "spy", lambda c, e: calls.append(c) or 0.0)
    monkeypatch.setitem(REWARD_RANGES, "spy", (0.0, 1.0))
    with pytest.raises(ValueError, match="configured tasks: countdown, format_only") as error:
        score_batch(["a", "b"], [{"task": "format_only"}, bad_example], {**WEIGHTS_BY_TASK, "format_only": {"spy": 1.0}})
    assert "no reward weights for task" in str(error.value)
    assert calls == []  # validated up front: no reward ran


def test_score_batch_validates_every_task_spec():
    with pytest.raises(ValueError, match="unknown reward 'nope'"):
        score_batch([GOOD], [COUNTDOWN], {"countdown": {"countdown": 1.0}, "math": {"nope": 1.0}})


def test_score_batch_rejects_length_mismatch():
    with pytest.raises(ValueError, match="2 completions but 1 examples"):
        score_batch([GOOD, GOOD], [COUNTDOWN], WEIGHTS_BY_TASK)


def test_score_batch_of_nothing_is_empty():
    assert score_batch([], [], WEIGHTS_BY_TASK) == []


@pytest.mark.parametrize("module_name", ["verifiers.format_reward", "verifiers.countdown", "verifiers.registry"])
def test_docstring_examples_hold(module_name):
    # The examples in the docstrings are the quickest documentation; keep them true.
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module_name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
