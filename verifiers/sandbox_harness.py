"""The trusted program that runs *inside* the sandbox and executes untrusted code, one test at a time.

``verifiers.sandbox`` starts ``python -S -c BOOTSTRAP`` inside bubblewrap and writes, marshalled,
this module's compiled code and one *job* on its stdin (marshal is fine: the host is trusted).
The job holds the untrusted source, the test kind, the *inputs* of every case (stdin text, or
call arguments), the limits and a per-run nonce. Expected outputs never enter the sandbox. For
each case the harness forks a child that runs the untrusted code with its own stdin, stdout,
stderr and return-value pipes, and reports what the child produced (stdout text, or the
JSON-encoded return value) as one JSON line on the result channel (the harness's original
stdout, which children never hold). The host validates every line and decides pass/fail itself,
so the worst a program that subverts this harness can do is *claim* outputs, which it could
have produced honestly anyway: it cannot see the expected values, so it cannot forge a pass.

The module is also imported by the host for the value codec (``encode_value``/``decode_value``),
so both sides agree on how Python values travel as JSON. It imports only the standard library.

Tagged JSON: JSON-native values travel as themselves; Python-only values use one-key objects::

    >>> encode_value((1, {2: b"x"}))
    {'__tuple__': [1, {'__dict__': [[2, {'__bytes__': '78'}]]}]}
    >>> decode_value({'__set__': [1, 2]}) == {1, 2}
    True
"""

from __future__ import annotations

# Imports are kept to fast C modules: every run pays for them inside a fresh interpreter, and
# json/selectors/signal would pull in re and enum (about 10 ms per run). The job arrives as
# marshal (trusted: from the host); reports leave as JSON written by ``dump_json`` below.
import _signal
import builtins
import marshal
import math
import os
import resource
import select
import sys
import time

TAG_TUPLE = "__tuple__"
TAG_SET = "__set__"
TAG_FROZENSET = "__frozenset__"
TAG_DICT = "__dict__"
TAG_BYTES = "__bytes__"
TAG_COMPLEX = "__complex__"
TAG_FLOAT = "__float__"
TAG_INT = "__int__"
TAGS = frozenset({TAG_TUPLE, TAG_SET, TAG_FROZENSET, TAG_DICT, TAG_BYTES, TAG_COMPLEX, TAG_FLOAT, TAG_INT})

MAX_NESTING = 200
# Python refuses to print ints with more than 4300 decimal digits (CVE-2020-10735 guard); huge
# ints travel as hex, which has no such limit.
BIG_INT_BITS = 4096

# Exit codes the child uses to tell the harness why it stopped (a program can fake these, which
# only changes the label of its own failure, never a verdict).
EXIT_MEMORY = 120
EXIT_BAD_RETURN = 121
EXIT_NO_FUNCTION = 122
EXIT_INTERNAL = 123

READ_CHUNK_BYTES = 65536
STDERR_KEEP_BYTES = 2048
# After a case's child exits, how long its leftover output may still take to arrive.
DRAIN_AFTER_EXIT_S = 0.2


# ----------------------------------------------------------------------------------------------
# Tagged JSON codec
# ----------------------------------------------------------------------------------------------


def encode_value(value, _depth: int = 0):
    """Turn a Python value of *exact* builtin types into tagged JSON; anything else is refused.

    Exact types only: an ``int`` subclass or an object with a custom ``__eq__`` raises
    ``TypeError``, which is how an "always equal" return value fails instead of passing.

    >>> encode_value([1.5, None, "a", float("inf")])
    [1.5, None, 'a', {'__float__': 'inf'}]
    >>> encode_value(type("X", (int,), {})(3))
    Traceback (most recent call last):
    ...
    TypeError: cannot serialise a value of type X
    """
    if _depth > MAX_NESTING:
        raise TypeError(f"value nested deeper than {MAX_NESTING} levels")
    kind = type(value)
    if value is None or kind is bool or kind is str:
        return value
    if kind is int:
        return {TAG_INT: format(value, "x")} if value.bit_length() > BIG_INT_BITS else value
    if kind is float:
        return value if math.isfinite(value) else {TAG_FLOAT: repr(value)}
    if kind is list:
        return [encode_value(item, _depth + 1) for item in value]
    if kind is tuple:
        return {TAG_TUPLE: [encode_value(item, _depth + 1) for item in value]}
    if kind is set or kind is frozenset:
        tag = TAG_SET if kind is set else TAG_FROZENSET
        return {tag: [encode_value(item, _depth + 1) for item in value]}
    if kind is dict:
        return _encode_dict(value, _depth)
    if kind is bytes:
        return {TAG_BYTES: value.hex()}
    if kind is complex:
        return {TAG_COMPLEX: [encode_value(value.real, _depth + 1), encode_value(value.imag, _depth + 1)]}
    raise TypeError(f"cannot serialise a value of type {kind.__name__}")


def _encode_dict(value: dict, depth: int):
    plain = all(type(key) is str for key in value) and not (len(value) == 1 and next(iter(value)) in TAGS)
    if plain:
        return {key: encode_value(item, depth + 1) for key, item in value.items()}
    return {TAG_DICT: [[encode_value(k, depth + 1), encode_value(v, depth + 1)] for k, v in value.items()]}


def decode_value(obj, _depth: int = 0):
    """Inverse of ``encode_value``: tagged JSON (as parsed by ``json.loads``) to a Python value.

    Raises ``ValueError`` on a malformed tag, so neither side trusts the other's encoding.

    >>> decode_value({"__tuple__": [1, {"__float__": "nan"}]})
    (1, nan)
    >>> decode_value({"__dict__": [[[1, 2], 3]]})
    Traceback (most recent call last):
    ...
    ValueError: bad __dict__ value: unhashable type: 'list'
    """
    if _depth > MAX_NESTING:
        raise ValueError(f"value nested deeper than {MAX_NESTING} levels")
    if isinstance(obj, list):
        return [decode_value(item, _depth + 1) for item in obj]
    if isinstance(obj, dict):
        if len(obj) == 1 and next(iter(obj)) in TAGS:
            tag, payload = next(iter(obj.items()))
            try:
                return _decode_tag(tag, payload, _depth)
            except (TypeError, ValueError, OverflowError) as error:
                raise ValueError(f"bad {tag} value: {error}") from None
        return {key: decode_value(item, _depth + 1) for key, item in obj.items()}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise ValueError(f"not a JSON value: {type(obj).__name__}")


def _decode_items(payload, depth: int) -> list:
    if not isinstance(payload, list):
        raise TypeError("expected a list")
    return [decode_value(item, depth + 1) for item in payload]


def _decode_tag(tag: str, payload, depth: int):
    if tag == TAG_TUPLE:
        return tuple(_decode_items(payload, depth))
    if tag == TAG_SET:
        return set(_decode_items(payload, depth))
    if tag == TAG_FROZENSET:
        return frozenset(_decode_items(payload, depth))
    if tag == TAG_DICT:
        pairs = _decode_items(payload, depth)
        if not all(isinstance(pair, list) and len(pair) == 2 for pair in pairs):
            raise TypeError("expected a list of [key, value] pairs")
        return {key: item for key, item in pairs}
    if tag == TAG_BYTES:
        return bytes.fromhex(payload)
    if tag == TAG_COMPLEX:
        real, imag = _decode_items(payload, depth)
        return complex(real, imag)
    if tag == TAG_FLOAT:
        if payload not in ("nan", "inf", "-inf"):
            raise ValueError(f"expected nan, inf or -inf, got {payload!r}")
        return float(payload)
    if not isinstance(payload, str):  # TAG_INT
        raise TypeError("expected a hex string")
    return int(payload, 16)


# JSON escapes: control characters, quote, backslash, and lone surrogates (which UTF-8 cannot
# carry); str.translate applies them in one C-level pass.
_JSON_ESCAPES = {code: f"\\u{code:04x}" for code in (*range(0x20), *range(0xD800, 0xE000))}
_JSON_ESCAPES.update({ord('"'): '\\"', ord("\\"): "\\\\"})
_JSON_ESCAPES.update({ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"})  # program output is full of these


def dump_json(value) -> str:
    """JSON text for None/bool/int/finite float/str/list/str-keyed dict (``encode_value``'s output).

    The harness writes its reports with this instead of importing ``json`` (see the imports).

    >>> dump_json({"a": [1, 2.5, None, True, "x\\"\\n"]})
    '{"a": [1, 2.5, null, true, "x\\\\"\\\\n"]}'
    """
    if value is None:
        return "null"
    if value is True or value is False:
        return "true" if value else "false"
    kind = type(value)
    if kind is str:
        return '"' + value.translate(_JSON_ESCAPES) + '"'
    if kind is int:
        return str(value)
    if kind is float:
        if not math.isfinite(value):
            raise ValueError("non-finite float")
        return repr(value)
    if kind is list:
        return "[" + ", ".join(dump_json(item) for item in value) + "]"
    if kind is dict:
        return "{" + ", ".join(dump_json(str(key)) + ": " + dump_json(item) for key, item in value.items()) + "}"
    raise TypeError(f"cannot write {kind.__name__} as JSON")


# ----------------------------------------------------------------------------------------------
# Inside the sandbox: set up, then run each case in a forked child
# ----------------------------------------------------------------------------------------------

_SIGNAL_NAMES = {getattr(_signal, name): name for name in (
    "SIGKILL", "SIGSEGV", "SIGABRT", "SIGBUS", "SIGFPE", "SIGILL", "SIGTERM", "SIGXCPU", "SIGXFSZ", "SIGPIPE")}


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, READ_CHUNK_BYTES):
        chunks.append(chunk)
    return b"".join(chunks)


def _redirect_std_fds_to_devnull() -> None:
    """Stray writes by the harness (or a warning) must never land on the result channel."""
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)


def _drop_privileges(job: dict) -> None:
    """Leave uid 0 for the job's unprivileged uid: RLIMIT_NPROC does not bind for root."""
    if os.getuid() != 0 and os.geteuid() != 0:
        return
    uid, gid = job.get("run_as_uid"), job.get("run_as_gid")
    if uid is None and job.get("allow_root") and not job["pid_namespace"]:
        return  # unsandboxed root run where no other uid can read the Python install (warned)
    if not isinstance(uid, int) or not isinstance(gid, int) or uid <= 0 or gid <= 0:
        raise SystemExit("harness: refusing to run untrusted code as root without run_as_uid")
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    if 0 in (os.getuid(), os.geteuid(), os.getgid(), os.getegid()):
        raise SystemExit("harness: could not drop root privileges")


def _count_own_tasks() -> int:
    """Tasks (threads) of this uid, for RLIMIT_NPROC when the uid is shared with the host."""
    uid, count = os.getuid(), 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    count += len(os.listdir(f"/proc/{entry}/task"))
            except OSError:
                continue
    return count


def _apply_limits(limits: dict, shared_uid: bool) -> None:
    """Hard limits the untrusted code inherits and cannot raise again."""
    memory_bytes = int(limits["memory_mb"]) * 1024 * 1024
    file_bytes = int(limits["max_file_size_mb"]) * 1024 * 1024
    # RLIMIT_NPROC counts every task of the uid; a uid shared with the host (unsandboxed, not
    # root) already owns some, so the budget is added on top of them.
    processes = int(limits["max_processes"]) + (_count_own_tasks() if shared_uid else 0)
    for which, value in (
        (resource.RLIMIT_AS, memory_bytes),
        (resource.RLIMIT_FSIZE, file_bytes),
        (resource.RLIMIT_NPROC, processes),
        (resource.RLIMIT_CORE, 0),
        (resource.RLIMIT_NOFILE, 256),
    ):
        resource.setrlimit(which, (value, value))


def _load_prctl():
    """libc's prctl, loaded before privileges drop (the stdlib may be unreadable afterwards)."""
    import ctypes  # only needed in unsandboxed mode, so not imported on the fast path

    return ctypes.CDLL(None, use_errno=True).prctl


def _set_parent_death_signal(prctl) -> None:
    """Without a pid namespace, a case child must die with the harness (PR_SET_PDEATHSIG)."""
    prctl(1, _signal.SIGKILL, 0, 0, 0)  # 1 == PR_SET_PDEATHSIG


def _child_setup(job: dict, fds: dict) -> None:
    os.setpgid(0, 0)
    if not job["pid_namespace"]:
        _set_parent_death_signal(job["prctl"])
    os.dup2(fds["stdin_r"], 0)
    os.dup2(fds["stdout_w"], 1)
    os.dup2(fds["stderr_w"], 2)
    os.dup2(fds["record_w"], 3)
    os.closerange(4, 1024)  # the result channel and every other pipe end
    cpu_s = max(1, math.ceil(float(job["limits"]["cpu_time_s"])))
    # Soft limit: SIGXCPU; the hard limit one second later is SIGKILL, for code that ignores it.
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
    sys.stdin = open(0, encoding="utf-8", errors="replace", closefd=False)
    sys.stdout = open(1, "w", encoding="utf-8", errors="backslashreplace", closefd=False)
    sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace", closefd=False, buffering=1)
    sys.argv = ["program.py"]


def _child_exit(code: int) -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:  # the program may have closed or replaced it; its loss
            pass
    os._exit(code)


def _exit_code_of(error: BaseException) -> int:
    if isinstance(error, SystemExit):
        code = error.code
        if code is None:
            return 0
        return code if isinstance(code, int) else 1
    if isinstance(error, MemoryError):
        return EXIT_MEMORY
    return 1


def _report_exception(error: BaseException) -> None:
    """One line, ``program.py:LINE: Type: message``; ``traceback`` would import re (slow)."""
    line = "?"
    frame = error.__traceback__
    while frame is not None:
        if frame.tb_frame.f_code.co_filename == "program.py":
            line = frame.tb_lineno
        frame = frame.tb_next
    try:
        message = f"program.py:{line}: {type(error).__name__}: {error}"[:1000]
    except BaseException:  # a hostile __str__
        message = f"program.py:{line}: {type(error).__name__}"
    os.write(2, (message + "\n").encode("utf-8", errors="replace"))


def _child_run_stdio(job: dict) -> int:
    code = compile(job["source"], "program.py", "exec")
    exec(code, {"__name__": "__main__", "__builtins__": builtins})
    threading = sys.modules.get("threading")
    if threading is not None:
        # What interpreter shutdown does: wait for the program's non-daemon threads, which may
        # still be printing. The wall deadline bounds the wait.
        threading._shutdown()
    return 0


def _child_run_call(job: dict, case: dict) -> int:
    # Decode the arguments and take references to the encoders *before* untrusted code runs.
    args = decode_value(case.get("args", {TAG_TUPLE: []}))
    kwargs = decode_value(case.get("kwargs", {}))
    dump, encode = dump_json, encode_value
    namespace = {"__name__": "solution", "__builtins__": builtins}
    for part, filename in ((job.get("prelude", ""), "prelude.py"), (job["source"], "program.py"),
                           (job.get("setup_code", ""), "setup.py")):
        if part:
            exec(compile(part, filename, "exec"), namespace)
    function = namespace.get(job["fn_name"])
    if not callable(function):
        os.write(2, f"function {job['fn_name']!r} is not defined by the program\n".encode())
        return EXIT_NO_FUNCTION
    value = function(*args, **kwargs)
    try:
        text = dump(encode(value))
    except (TypeError, ValueError, RecursionError) as error:
        os.write(2, f"return value cannot be compared: {error}\n".encode())
        return EXIT_BAD_RETURN
    _write_all(3, text.encode("utf-8"))
    return 0


def _child_main(job: dict, case: dict, fds: dict) -> None:
    try:
        _child_setup(job, fds)
    except BaseException:
        os._exit(EXIT_INTERNAL)
    try:
        code = _child_run_stdio(job) if job["kind"] == "stdio" else _child_run_call(job, case)
    except BaseException as error:  # the program's exception, exit() or MemoryError
        code = _exit_code_of(error)
        if not isinstance(error, SystemExit):
            _report_exception(error)
    _child_exit(code)


class _CaseIO:
    """The harness side of one case: feed stdin, collect capped stdout/stderr/record (poll)."""

    READERS = ("stdout_r", "stderr_r", "record_r")

    def __init__(self, fds: dict, stdin_bytes: bytes, max_output_bytes: int):
        self.fds = fds
        self.names = {}
        self.pending_stdin = memoryview(stdin_bytes)
        self.max_output_bytes = max_output_bytes
        self.buffers = {"stdout_r": bytearray(), "record_r": bytearray()}
        self.stderr = bytearray()
        self.stderr_total = 0
        self.poller = select.poll()
        for name in self.READERS:
            self.watch(fds[name], name, select.POLLIN)
        if self.pending_stdin:
            os.set_blocking(fds["stdin_w"], False)
            self.watch(fds["stdin_w"], "stdin_w", select.POLLOUT)
        else:
            self._close("stdin_w")

    def watch(self, fd: int, name: str, events: int) -> None:
        self.names[fd] = name
        self.poller.register(fd, events)

    def unwatch(self, fd: int) -> None:
        if self.names.pop(fd, None) is not None:
            self.poller.unregister(fd)

    def _close(self, name: str) -> None:
        fd = self.fds.pop(name, None)
        if fd is not None:
            self.unwatch(fd)
            os.close(fd)

    def readers_open(self) -> bool:
        return any(name in self.fds for name in self.READERS)

    def pump(self, timeout_s: float) -> bool:
        """Move data for up to ``timeout_s``; False once the output cap is exceeded."""
        for fd, _ in self.poller.poll(max(0, int(timeout_s * 1000) + 1)):
            name = self.names.get(fd)
            if name is None or name == "exit":  # the child ended; the caller reaps it
                continue
            if name == "stdin_w":
                self._feed_stdin()
                continue
            data = os.read(fd, READ_CHUNK_BYTES)
            if not data:
                self._close(name)
            elif not self._keep(name, data):
                return False
        return True

    def _feed_stdin(self) -> None:
        try:
            written = os.write(self.fds["stdin_w"], self.pending_stdin[:READ_CHUNK_BYTES])
            self.pending_stdin = self.pending_stdin[written:]
        except BlockingIOError:
            return
        except OSError:  # the program closed stdin or exited: the rest of the input is moot
            self.pending_stdin = memoryview(b"")
        if not self.pending_stdin:
            self._close("stdin_w")

    def _keep(self, name: str, data: bytes) -> bool:
        if name == "stderr_r":
            self.stderr_total += len(data)
            self.stderr = (self.stderr + data)[-STDERR_KEEP_BYTES:]
            return self.stderr_total <= self.max_output_bytes
        buffer = self.buffers[name]
        buffer += data
        return len(buffer) <= self.max_output_bytes

    def text(self, name: str) -> str:
        return self.buffers[name].decode("utf-8", errors="replace")

    def close(self) -> None:
        for name in list(self.fds):
            self._close(name)


def _open_case_pipes() -> dict:
    fds = {}
    for stream in ("stdin", "stdout", "stderr", "record"):
        read_end, write_end = os.pipe()
        fds[f"{stream}_r"], fds[f"{stream}_w"] = read_end, write_end
    return fds


def _kill_leftovers(job: dict, pid: int) -> None:
    """No process of a finished case may outlive it (daemons, fork bombs)."""
    if job["pid_namespace"] and os.getpid() < 10:
        # In our own pid namespace kill(-1) reaches every process but pid 1 (bwrap's init) and
        # this harness, including children that left the process group with setsid().
        try:
            os.kill(-1, _signal.SIGKILL)
        except ProcessLookupError:
            pass
        return
    try:
        os.killpg(pid, _signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _wait_for_child(pid: int, io: _CaseIO, deadline: float) -> tuple:
    """Pump the child's pipes until it exits; returns (forced status or None, wait4 result)."""
    try:
        exit_fd = os.pidfd_open(pid)
        io.watch(exit_fd, "exit", select.POLLIN)
    except (AttributeError, OSError):  # kernel < 5.3: fall back to polling
        exit_fd = None
    forced = None
    try:
        while True:
            done = os.wait4(pid, os.WNOHANG)
            if done[0] == pid:
                return forced, done
            remaining_s = deadline - time.monotonic()
            if remaining_s <= 0:
                forced = "timeout"
            elif not io.pump(min(remaining_s, 0.05) if exit_fd is None else remaining_s):
                forced = "output_limit"
            if forced:
                os.kill(pid, _signal.SIGKILL)
                return forced, os.wait4(pid, 0)
    finally:
        if exit_fd is not None:
            io.unwatch(exit_fd)
            os.close(exit_fd)


def _drain(io: _CaseIO) -> bool:
    """Read what is left in the pipes after the child is gone; False if the cap is exceeded."""
    until = time.monotonic() + DRAIN_AFTER_EXIT_S
    while io.readers_open() and time.monotonic() < until:
        if not io.pump(until - time.monotonic()):
            return False
    return True


def _classify(forced, wait_status: int, cpu_time_s: float, job: dict) -> tuple:
    """(case status, short detail) from how the child ended."""
    if forced == "timeout":
        return "timeout", "wall time limit"
    if forced == "output_limit":
        return "output_limit", f"output exceeded {job['limits']['max_output_bytes']} bytes"
    if os.WIFSIGNALED(wait_status):
        signum = os.WTERMSIG(wait_status)
        cpu_limit_s = float(job["limits"]["cpu_time_s"])
        if signum == _signal.SIGXCPU or (signum == _signal.SIGKILL and cpu_time_s >= cpu_limit_s):
            return "timeout", "cpu time limit"
        return "crash", f"killed by signal {_SIGNAL_NAMES.get(signum, signum)}"
    code = os.WEXITSTATUS(wait_status)
    if code == 0:
        return "ok", ""
    if code == EXIT_MEMORY:
        return "memory", "memory limit (MemoryError)"
    return "crash", f"exit code {code}"


def _run_case(job: dict, case: dict, deadline: float) -> dict:
    fds = _open_case_pipes()
    pid = os.fork()
    if pid == 0:
        _child_main(job, case, fds)
    for name in ("stdin_r", "stdout_w", "stderr_w", "record_w"):
        os.close(fds.pop(name))
    stdin_bytes = case.get("input", "").encode("utf-8") if job["kind"] == "stdio" else b""
    io = _CaseIO(fds, stdin_bytes, int(job["limits"]["max_output_bytes"]))
    try:
        forced, (_, wait_status, usage) = _wait_for_child(pid, io, deadline)
        _kill_leftovers(job, pid)
        if forced is None and not _drain(io):
            forced = "output_limit"
        cpu_time_s = usage.ru_utime + usage.ru_stime
        status, detail = _classify(forced, wait_status, cpu_time_s, job)
        record = {"status": status, "detail": detail, "cpu_time_s": round(cpu_time_s, 4),
                  "stderr_tail": io.stderr.decode("utf-8", errors="replace")}
        if job["kind"] == "stdio":
            record["stdout"] = io.text("stdout_r")
        elif status == "ok":
            record["value"] = io.text("record_r")
        return record
    finally:
        io.close()


def run_job(job: dict, result_fd: int) -> None:
    """Run every case of ``job``; write one JSON line per case, then a done line, to ``result_fd``."""
    deadline = float(job["deadline_monotonic"])

    def send(payload: dict) -> None:
        payload["nonce"] = job["nonce"]
        _write_all(result_fd, (dump_json(payload) + "\n").encode("utf-8"))

    for index, case in enumerate(job["inputs"]):
        if time.monotonic() >= deadline:
            record = {"status": "timeout", "detail": "wall time limit (not started)"}
        else:
            record = _run_case(job, case, deadline)
        record["case"] = index
        send(record)
    send({"done": True})


def _quit(code=None):
    """``exit()``/``quit()`` for programs: ``python -S`` skips ``site``, which defines them."""
    raise SystemExit(code)


def _install_site_builtins() -> None:
    builtins.exit = builtins.quit = _quit


def main(job: dict | None = None) -> int:
    """Entry point; the host passes the job (see ``BOOTSTRAP`` in ``verifiers.sandbox``)."""
    if job is None:
        job = marshal.loads(_read_all(0))
    result_fd = os.dup(1)
    _redirect_std_fds_to_devnull()
    shared_uid = os.getuid() != 0 and not job["pid_namespace"]
    if not job["pid_namespace"]:
        job["prctl"] = _load_prctl()
    _drop_privileges(job)
    _apply_limits(job["limits"], shared_uid)
    _install_site_builtins()
    run_job(job, result_fd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
