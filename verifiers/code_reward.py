"""Code rewards (fraction of tests passed, all-pass) and MBPP/HumanEval test converters.

An example row for a code task::

    {"id": "mbpp/2", "source": "mbpp", "task": "code", "prompt": "...", "answer": null,
     "tests": {"kind": "call", "fn_name": "similar_elements", "cases": [...]}, "meta": {}}

The program is taken from the completion: the last ```python fenced block inside the last
``<answer>...</answer>``; else the last fenced block of any language there; else the answer text
itself. Without answer tags the same rules apply to the whole completion, except that bare text
(reasoning prose) is not taken as a program.

Rewards run the program in the bwrap sandbox (``verifiers.sandbox``). If bwrap cannot run here
they raise ``SandboxUnavailable`` rather than silently scoring every sample 0; set the
environment variable ``R1ZERO_ALLOW_UNSANDBOXED=1`` to opt into unsandboxed runs (loud warning).

Converters parse dataset asserts with ``ast`` and ``ast.literal_eval`` (never ``eval``): only
``assert f(<literals>) == <literal>`` (either side) becomes a case; anything else is reported.
"""

from __future__ import annotations

import ast
import json
import logging
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence

from verifiers.sandbox import (
    SandboxLimits,
    SandboxResult,
    TestsFormatError,
    run_many,
    run_program,
    validate_tests,
)
from verifiers.sandbox_harness import encode_value

log = logging.getLogger(__name__)

ALLOW_UNSANDBOXED_ENV = "R1ZERO_ALLOW_UNSANDBOXED"
DEFAULT_LIMITS = SandboxLimits()

_ANSWER_RE = re.compile(r"<answer>(.*?)(?:</answer>|\Z)", re.DOTALL)
# A fence opens with ``` and an optional language word, ends its line, and closes at the next
# ```. Models often open a fence mid-sentence ("Here it is: ```python"), so no line anchors.
_FENCE_RE = re.compile(r"```[ \t]*([\w+.-]*)[^\n]*\n(.*?)```", re.DOTALL)
_PYTHON_LANGS = {"python", "py", "python3", "py3"}


class UnsupportedTestError(ValueError):
    """A dataset row's asserts are not all of the shape ``assert f(literals) == literal``."""


# ----------------------------------------------------------------------------------------------
# Program extraction
# ----------------------------------------------------------------------------------------------


def extract_program(completion: str) -> str:
    """The program a completion submits ('' when there is none).

    >>> extract_program("<think>x</think><answer>```python\\nprint(1)\\n```</answer>")
    'print(1)\\n'
    >>> extract_program("<answer>def f():\\n    return 2</answer>")
    'def f():\\n    return 2'
    >>> extract_program("I think the answer is 42.")
    ''
    """
    if not isinstance(completion, str):
        return ""
    answers = _ANSWER_RE.findall(completion)
    scope = answers[-1] if answers else completion
    blocks = _FENCE_RE.findall(scope)
    python_blocks = [body for lang, body in blocks if lang.lower() in _PYTHON_LANGS]
    if python_blocks:
        return python_blocks[-1]
    if blocks:
        return blocks[-1][1]
    return scope.strip() if answers else ""


# ----------------------------------------------------------------------------------------------
# Rewards
# ----------------------------------------------------------------------------------------------


def _allow_unsandboxed() -> bool:
    return os.environ.get(ALLOW_UNSANDBOXED_ENV, "") == "1"


class _ResultCache:
    """(program, tests) -> (fraction passed, all passed), least recently used out first.

    ``code_tests`` and ``code_all_pass`` are usually both computed for each completion, and a
    trainer can fill the cache for a whole batch in parallel (``code_results_batch``) before
    scoring sample by sample. Thread-safe: ``run_many`` workers may share it.
    """

    def __init__(self, max_entries: int):
        self.max_entries = max_entries
        self.entries: OrderedDict[tuple[str, str], tuple[float, bool]] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: tuple[str, str]) -> tuple[float, bool] | None:
        with self.lock:
            if key in self.entries:
                self.entries.move_to_end(key)
                return self.entries[key]
        return None

    def put(self, key: tuple[str, str], result: SandboxResult) -> None:
        with self.lock:
            self.entries[key] = (result.fraction_passed, result.all_passed)
            self.entries.move_to_end(key)
            while len(self.entries) > self.max_entries:
                self.entries.popitem(last=False)


_RESULTS = _ResultCache(max_entries=4096)


def _tests_json(example) -> str | None:
    tests = example.get("tests") if isinstance(example, dict) else None
    try:
        validate_tests(tests)
    except TestsFormatError as error:
        example_id = example.get("id") if isinstance(example, dict) else None
        log.warning("code reward: example %r has bad tests: %s", example_id, error)
        return None
    return json.dumps(tests, sort_keys=True)


def _score(completion: str, example: dict) -> tuple[float, bool]:
    tests_json = _tests_json(example)
    source = extract_program(completion)
    if tests_json is None or not source.strip():
        return 0.0, False
    cached = _RESULTS.get((source, tests_json))
    if cached is not None:
        return cached
    result = run_program(source, json.loads(tests_json), DEFAULT_LIMITS, allow_unsandboxed=_allow_unsandboxed())
    _RESULTS.put((source, tests_json), result)
    return result.fraction_passed, result.all_passed


def code_tests_reward(completion: str, example: dict) -> float:
    """Fraction of the example's tests the submitted program passes, in [0, 1].

    >>> ex = {"task": "code", "tests": {"kind": "call", "fn_name": "f", "cases": [
    ...     {"args": [1], "expected": 2}, {"args": [2], "expected": 5}]}}
    >>> code_tests_reward("<answer>```python\\ndef f(x):\\n    return 2 * x\\n```</answer>", ex)
    0.5
    """
    return _score(completion, example)[0]


def code_all_pass_reward(completion: str, example: dict) -> float:
    """1.0 if the submitted program passes every test of the example, else 0.0.

    >>> code_all_pass_reward("<answer>no code</answer>", {"tests": None})
    0.0
    """
    return 1.0 if _score(completion, example)[1] else 0.0


def code_results_batch(
    completions: Sequence[str],
    examples: Sequence[dict],
    num_workers: int | None = None,
) -> list[SandboxResult | None]:
    """Sandbox results for many completions at once, in parallel (None where nothing ran).

    The results also fill the cache the rewards read, so a trainer can call this once per batch
    and then score sample by sample (``verifiers.registry.score_batch``) without waiting on
    one sandbox at a time. ``result.fraction_passed`` is ``code_tests_reward``.

    >>> code_results_batch(["<answer></answer>"], [{"tests": None}])
    [None]
    """
    keys, jobs, positions = [], [], []
    for position, (completion, example) in enumerate(zip(completions, examples, strict=True)):
        tests_json, source = _tests_json(example), extract_program(completion)
        if tests_json is not None and source.strip():
            keys.append((source, tests_json))
            jobs.append((source, json.loads(tests_json)))
            positions.append(position)
    results: list[SandboxResult | None] = [None] * len(completions)
    ran = run_many(jobs, num_workers, limits=DEFAULT_LIMITS, allow_unsandboxed=_allow_unsandboxed()) if jobs else []
    for key, position, result in zip(keys, positions, ran):
        _RESULTS.put(key, result)
        results[position] = result
    return results


# ----------------------------------------------------------------------------------------------
# Dataset converters
# ----------------------------------------------------------------------------------------------


def _literal(node: ast.AST, what: str):
    try:
        return encode_value(ast.literal_eval(node))
    except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError) as error:
        raise UnsupportedTestError(f"{what} is not a literal ({type(error).__name__})") from None


def _call_case(node: ast.Assert, callee: str | None) -> tuple[str, dict]:
    """(function name, case) from ``assert f(...) == value`` or ``assert value == f(...)``."""
    test = node.test
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq)):
        raise UnsupportedTestError("not a single == comparison")
    left, right = test.left, test.comparators[0]
    call, other = (left, right) if isinstance(left, ast.Call) else (right, left)
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name)):
        raise UnsupportedTestError("no direct call of a named function on either side of ==")
    if callee is not None and call.func.id != callee:
        raise UnsupportedTestError(f"calls {call.func.id!r}, not {callee!r}")
    if any(isinstance(arg, ast.Starred) for arg in call.args) or any(kw.arg is None for kw in call.keywords):
        raise UnsupportedTestError("uses *args or **kwargs unpacking")
    case = {
        "args": [_literal(arg, "an argument") for arg in call.args],
        "kwargs": {kw.arg: _literal(kw.value, f"argument {kw.arg}") for kw in call.keywords},
        "expected": _literal(other, "the expected value"),
    }
    return call.func.id, case


def _parse_assert(text: str) -> ast.Assert:
    try:
        module = ast.parse(text.strip())
    except SyntaxError as error:
        raise UnsupportedTestError(f"does not parse ({error.msg})") from None
    if len(module.body) != 1 or not isinstance(module.body[0], ast.Assert):
        raise UnsupportedTestError("is not a single assert statement")
    return module.body[0]


def _finish(fn_name: str | None, cases: list, problems: list[str], row_id, strict: bool, extra: dict) -> dict:
    if problems and (strict or not cases):
        listed = "\n  ".join(problems)
        raise UnsupportedTestError(f"row {row_id!r}: {len(problems)} unsupported test(s):\n  {listed}")
    if not cases or fn_name is None:
        raise UnsupportedTestError(f"row {row_id!r}: no tests found")
    tests = {"kind": "call", "fn_name": fn_name, "cases": cases, **extra}
    if problems:
        tests["unsupported"] = problems
    validate_tests(tests)
    return tests


def tests_from_mbpp(row: dict, *, include_challenge: bool = False, strict: bool = True) -> dict:
    """A call-tests dict from an MBPP row (``test_list`` asserts, ``test_setup_code``).

    Every assert must be ``assert fn(<literals>) == <literal>`` with one function name. With
    ``strict`` (default) any other assert raises ``UnsupportedTestError`` listing each one;
    otherwise they are dropped and listed under ``"unsupported"``.

    >>> tests_from_mbpp({"task_id": 1, "test_list": ["assert add(1, (2,)) == 3"], "test_setup_code": ""})
    {'kind': 'call', 'fn_name': 'add', 'cases': [{'args': [1, {'__tuple__': [2]}], 'kwargs': {}, 'expected': 3}]}
    """
    asserts = list(row.get("test_list") or [])
    if include_challenge:
        asserts += list(row.get("challenge_test_list") or [])
    fn_name, cases, problems = None, [], []
    for index, text in enumerate(asserts):
        try:
            name, case = _call_case(_parse_assert(text), fn_name)
        except UnsupportedTestError as error:
            problems.append(f"test {index}: {text.strip()!r}: {error}")
            continue
        fn_name = name
        cases.append(case)
    setup = (row.get("test_setup_code") or "").strip()
    return _finish(fn_name, cases, problems, row.get("task_id"), strict, {"setup_code": setup} if setup else {})


def _check_function(module: ast.Module) -> ast.FunctionDef:
    for node in module.body:
        if isinstance(node, ast.FunctionDef) and node.name == "check" and node.args.args:
            return node
    raise UnsupportedTestError("no `def check(candidate):` function in the test code")


def _is_trivial_assert(node: ast.stmt) -> bool:
    """HumanEval's ``assert True, "This prints if this assert fails"`` lines test nothing."""
    return isinstance(node, ast.Assert) and isinstance(node.test, ast.Constant) and node.test.value is True


def _prompt_prelude(prompt: str, entry_point: str) -> str:
    """Everything the prompt defines except the function to write: imports and helpers."""
    try:
        module = ast.parse(prompt)
    except SyntaxError:
        lines = [line for line in prompt.splitlines() if line.startswith(("import ", "from "))]
        return "\n".join(lines)
    kept = [node for node in module.body if not (isinstance(node, ast.FunctionDef) and node.name == entry_point)]
    return "\n".join(ast.get_source_segment(prompt, node) or "" for node in kept)


def tests_from_humaneval(row: dict, *, strict: bool = True) -> dict:
    """A call-tests dict from a HumanEval row (``check(candidate)`` asserts, ``entry_point``).

    ``assert candidate(<literals>) == <literal>`` lines become cases; ``assert True`` lines are
    skipped (they test nothing); any other statement in ``check`` is unsupported (raises with
    ``strict``, else listed under ``"unsupported"``). The prompt's imports and helper functions
    become ``prelude``, so a program that omits ``from typing import List`` still runs.

    >>> row = {"task_id": "HumanEval/0", "prompt": "def inc(x):\\n    pass\\n", "entry_point": "inc",
    ...        "test": "def check(candidate):\\n    assert candidate(1) == 2\\n"}
    >>> tests_from_humaneval(row)["cases"]
    [{'args': [1], 'kwargs': {}, 'expected': 2}]
    """
    row_id, entry_point = row.get("task_id"), row.get("entry_point")
    try:
        check = _check_function(ast.parse(row.get("test") or ""))
    except (SyntaxError, UnsupportedTestError) as error:
        raise UnsupportedTestError(f"row {row_id!r}: {error}") from None
    candidate = check.args.args[0].arg
    cases, problems = [], []
    for node in check.body:
        if _is_trivial_assert(node):
            continue
        text = ast.get_source_segment(row["test"], node) or type(node).__name__
        try:
            if not isinstance(node, ast.Assert):
                raise UnsupportedTestError(f"is a {type(node).__name__} statement, not an assert")
            cases.append(_call_case(node, candidate)[1])
        except UnsupportedTestError as error:
            problems.append(f"line {node.lineno}: {text.strip()[:200]!r}: {error}")
    prelude = _prompt_prelude(row.get("prompt") or "", entry_point or "")
    extra = {"prelude": prelude} if prelude.strip() else {}
    return _finish(entry_point if cases else None, cases, problems, row_id, strict, extra)


# The names start with "test": tell pytest these are converters, for any test module importing them.
tests_from_mbpp.__test__ = False
tests_from_humaneval.__test__ = False
