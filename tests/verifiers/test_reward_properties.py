"""Property tests over every registered reward: random and hostile text never breaks a reward.

For each name in ``REWARDS`` (iterated, so rewards registered later are covered too) and any
completion, the raw reward function must return a float inside ``REWARD_RANGES[name]``, must not
raise, and must return within a time bound. The example passed along is well formed for that
reward (a malformed *example* is a data error, which ``safe_reward`` guards separately).
"""

import math
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from verifiers.registry import REWARD_RANGES, REWARDS, score

# Code rewards run each completion in a sandbox (tens of milliseconds and up): fewer examples.
SANDBOXED_PREFIX = "code"
MAX_EXAMPLES_CHEAP = 150
MAX_EXAMPLES_MATH = 40
MAX_EXAMPLES_SANDBOXED = 20


def _budget(name: str) -> int:
    if name.startswith(SANDBOXED_PREFIX):
        return MAX_EXAMPLES_SANDBOXED
    return MAX_EXAMPLES_MATH if name == "math" else MAX_EXAMPLES_CHEAP


def _time_bound_s(name: str) -> float:
    """Per-call wall-clock bound, generous for a shared, busy 2-core machine."""
    if name.startswith(SANDBOXED_PREFIX):
        return 30.0
    if name == "math":
        return 5.0  # the math verifier's own per-comparison timeout is 2 s, plus worker start
    return 1.0


HOSTILE_TEXTS = [
    "",
    "9**9**9**9",
    "<answer>9**9**9**9</answer>",
    '__import__("os").system("echo pwned")',
    '<answer>__import__("os").system("echo pwned")</answer>',
    "(" * 10_000 + "1" + ")" * 10_000,
    "<think></think><answer>" + "(" * 10_000 + "1" + ")" * 10_000 + "</answer>",
    "<answer>" + "9" * 50_000 + "</answer>",
    "<answer>" + "1+" * 20_000 + "1</answer>",
    "<answer>" + "-" * 20_000 + "1</answer>",
    "<answer>1/0</answer>",
    "<answer>\\boxed{" * 2_000 + "}" * 2_000 + "</answer>",
    "<think>" * 5_000 + "</think>" * 5_000 + "<answer>" * 5_000 + "</answer>" * 5_000,
    "<think><answer><think><answer>1</answer></think></answer></think>",
    "<answer>" + "x" * 300_000 + "</answer>",
    "\x00\x01\x02<answer>\ud7ff\uffff\U0010ffff</answer>\x7f",
    "<answer>1e999999999</answer>",
    "<answer>10^10^10^10</answer>",
    "<answer>\\frac{1}{0}</answer>",
    "<answer>" + "\\sqrt{" * 500 + "2" + "}" * 500 + "</answer>",
    "<answer>lambda: (yield)</answer>",
    "<answer>```python\nwhile True: pass\n```</answer>",
    "<answer>```python\nimport os; os.fork()\n```</answer>",
]

_hostile = st.sampled_from(HOSTILE_TEXTS)
_expression = st.recursive(
    st.integers(min_value=0, max_value=10**30).map(str),
    lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from(["+", "-", "*", "/", "**", "%", "//", " ", "="]), inner).map("".join),
        inner.map(lambda e: f"({e})"),
        inner.map(lambda e: f"-{e}"),
    ),
    max_leaves=30,
)
_fragment = st.one_of(st.text(max_size=200), _expression, _hostile)
_tag = st.sampled_from(["<think>", "</think>", "<answer>", "</answer>", "<|im_end|>", "\\boxed{", "}", "\n"])
_tag_soup = st.lists(st.one_of(_tag, _fragment), max_size=12).map("".join)
_wrapped = st.tuples(_fragment, _fragment).map(lambda parts: f"<think>{parts[0]}</think>\n<answer>{parts[1]}</answer>")
COMPLETIONS = st.one_of(st.text(), _hostile, _expression, _tag_soup, _wrapped)


# A function-call test in verifiers.code_reward's format: f(x) must return 2 * x.
CODE_TESTS = {"kind": "call", "fn_name": "f", "cases": [{"args": [1], "expected": 2}, {"args": [3], "expected": 6}]}


def _example(numbers: list[int], target: int, answer: str, prompt_ends_with_think: bool) -> dict:
    """One row carrying every field a registered reward reads (countdown meta, math gold, code tests)."""
    return {
        "id": "property",
        "source": "hypothesis",
        "task": "property",
        "prompt": "Use the numbers to reach the target.",
        "answer": answer,
        "tests": CODE_TESTS,
        "meta": {"numbers": numbers, "target": target, "prompt_ends_with_think": prompt_ends_with_think},
    }


EXAMPLES = st.builds(
    _example,
    numbers=st.lists(st.integers(min_value=0, max_value=100), min_size=1, max_size=6),
    target=st.integers(min_value=-1000, max_value=1000),
    answer=st.one_of(st.sampled_from(["4", "\\frac{1}{2}", "x^2+1", "(1, 2)", "-3.5"]), st.text(max_size=30)),
    prompt_ends_with_think=st.booleans(),
)


def _assert_bounded(name: str, completion: str, example: dict) -> None:
    low, high = REWARD_RANGES[name]
    start_s = time.perf_counter()
    value = REWARDS[name](completion, example)
    elapsed_s = time.perf_counter() - start_s
    assert isinstance(value, (int, float)) and not isinstance(value, bool), (name, value)
    assert math.isfinite(value) and low <= value <= high, (name, value)
    assert elapsed_s < _time_bound_s(name), (name, elapsed_s, completion[:200])


@pytest.mark.parametrize("name", sorted(REWARDS))
def test_reward_is_bounded_on_random_and_hostile_text(name):
    @settings(
        max_examples=_budget(name),
        deadline=None,  # timing is asserted per call instead, with a per-reward bound
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        database=None,
    )
    @given(completion=COMPLETIONS, example=EXAMPLES)
    def check(completion, example):
        _assert_bounded(name, completion, example)

    check()


@pytest.mark.parametrize("hostile", HOSTILE_TEXTS, ids=[f"hostile{i}" for i in range(len(HOSTILE_TEXTS))])
@pytest.mark.parametrize("name", sorted(REWARDS))
def test_reward_is_bounded_on_each_hostile_text(name, hostile):
    example = _example([9, 9, 9, 9], 24, "4", prompt_ends_with_think=False)
    _assert_bounded(name, hostile, example)


_CHEAP = sorted(name for name in REWARDS if _budget(name) == MAX_EXAMPLES_CHEAP)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
@given(completion=COMPLETIONS, example=EXAMPLES, weights=st.lists(st.floats(-3, 3), min_size=len(_CHEAP), max_size=len(_CHEAP)))
def test_score_total_is_the_weighted_sum_of_parts(completion, example, weights):
    spec = dict(zip(_CHEAP, weights))
    total, parts = score(completion, example, spec)
    assert set(parts) == set(spec)
    assert total == pytest.approx(sum(spec[name] * parts[name] for name in spec))
    for name, value in parts.items():
        low, high = REWARD_RANGES[name]
        assert low <= value <= high


@settings(max_examples=100, deadline=None, database=None)
@given(completion=COMPLETIONS, example=EXAMPLES)
def test_strict_format_implies_lenient_implies_full_tag_credit(completion, example):
    # strict is a special case of lenient, and lenient means every tag is used once in order.
    strict, lenient, tags = (REWARDS[n](completion, example) for n in ("format_strict", "format_lenient", "format_tags"))
    assert strict <= lenient
    assert lenient == 0.0 or tags == 1.0
