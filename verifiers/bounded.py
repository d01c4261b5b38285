"""Time- and memory-bounded execution of verifier work in long-lived worker processes.

Why not ``signal.alarm``: it only fires on the main thread, and it cannot interrupt a C-level
big-integer computation (``9**9**9**9`` in sympy spins inside CPython's long multiplication).
Why not ``multiprocessing``: forking a process that already runs threads (a trainer, pytest)
can deadlock the child, and a daemonic multiprocessing worker may not start children at all.

So each worker is a plain ``subprocess`` running ``python -c 'from verifiers.bounded import
worker_main; worker_main()'``. It caps its own address space with ``RLIMIT_AS`` and reads one
JSON request per line on stdin, answering one JSON line on a private copy of stdout. The parent
waits for the answer with ``select`` and a deadline; a worker that misses it is killed with
SIGKILL and replaced on next use. Inside the worker a soft ``setitimer`` alarm (it is the worker's
main thread) gives a clean "timeout" answer for pure-Python loops, so most timeouts do not cost
a restart. JSON rather than pickle, so a compromised worker cannot make the parent run code.

Example:
    >>> pool = BoundedPool("verifiers.bounded:probe", num_workers=1)
    >>> pool.call({"kind": "echo", "value": 3}, timeout_s=5.0).value
    3
    >>> pool.close()
"""

from __future__ import annotations

import atexit
import importlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The repository root, so a worker imports the same ``verifiers`` package as its parent even
# when the parent was started from another directory.
_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)
# A worker answer larger than this is treated as an attack or a bug, not parsed.
MAX_RESPONSE_BYTES = 1_000_000
# Startup (python + sympy import) on a busy 2-core machine takes about 1-2 s; allow more.
WORKER_START_TIMEOUT_S = 60.0
_READY = "ready"


@dataclass
class CallResult:
    """Outcome of one bounded call: ``ok`` with the target's JSON ``value``, or a reason."""

    ok: bool
    value: Any = None
    reason: str = ""


class _SoftTimeout(BaseException):
    """Raised inside a worker by its own interval timer. A BaseException, so the generic
    ``except Exception`` handlers in parsers (and ours) cannot swallow it."""


def _raise_soft_timeout(signum, frame):  # pragma: no cover - runs in the worker
    raise _SoftTimeout()


def _resolve_target(target: str):
    """Import ``"package.module:function"``; only ``verifiers.*`` modules may be named."""
    module_name, _, function_name = target.partition(":")
    if not module_name.startswith("verifiers.") or not function_name:
        raise ValueError(f"worker target must be 'verifiers.<module>:<function>', got {target!r}")
    return getattr(importlib.import_module(module_name), function_name)


def _limit_memory(memory_mb: int) -> None:
    import resource

    limit_bytes = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))


def _answer_one(target_fn, request: dict) -> dict:
    """Run one request under the soft timer and turn every failure into a JSON answer."""
    soft_timeout_s = float(request.get("soft_timeout_s", 0) or 0)
    if soft_timeout_s > 0:
        signal.setitimer(signal.ITIMER_REAL, soft_timeout_s)
    try:
        return {"ok": True, "value": target_fn(request["payload"])}
    except _SoftTimeout:
        return {"ok": False, "reason": "timeout (soft limit inside worker)"}
    except MemoryError:
        return {"ok": False, "reason": "memory limit exceeded"}
    except RecursionError:
        return {"ok": False, "reason": "recursion too deep"}
    except Exception as exc:  # noqa: BLE001 - the worker must answer, whatever the target did
        return {"ok": False, "reason": f"error: {type(exc).__name__}: {str(exc)[:200]}"}
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def worker_main(argv: list[str] | None = None) -> None:  # pragma: no cover - runs in the worker
    """Entry point of a worker process: ``TARGET MEMORY_MB [INIT_TARGET]`` on the command line.

    ``INIT_TARGET`` (optional) runs once before the worker reports ready, so one-off costs
    (building a parser's tables, warming caches) are paid at start, not inside a timed call.
    """
    args = argv if argv is not None else sys.argv[1:]
    target, memory_mb = args[:2]
    init_target = args[2] if len(args) > 2 else ""
    # Keep a private copy of stdout for answers, and point fd 1 at stderr so a stray print()
    # in a library cannot corrupt the protocol.
    answer_stream = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    _limit_memory(int(memory_mb))
    signal.signal(signal.SIGALRM, _raise_soft_timeout)
    target_fn = _resolve_target(target)
    if init_target:
        _resolve_target(init_target)()
    answer_stream.write(_READY + "\n")
    for line in sys.stdin:
        try:
            request = json.loads(line)
        except ValueError:
            answer = {"ok": False, "reason": "bad request line"}
        else:
            answer = _answer_one(target_fn, request)
        try:
            answer_stream.write(json.dumps(answer) + "\n")
        except (TypeError, ValueError):
            answer_stream.write(json.dumps({"ok": False, "reason": "unserialisable answer"}) + "\n")


class _Worker:
    """One worker subprocess and the parent's end of its pipes."""

    def __init__(self, target: str, memory_mb: int, init_target: str = ""):
        code = f"import sys; sys.path.insert(0, {_PACKAGE_ROOT!r}); " \
               "from verifiers.bounded import worker_main; worker_main()"
        self.process = subprocess.Popen(
            [sys.executable, "-c", code, target, str(memory_mb), init_target],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            cwd=_PACKAGE_ROOT, start_new_session=True,
        )
        self._buffer = b""
        line = self._read_line(time.monotonic() + WORKER_START_TIMEOUT_S)
        if line != _READY:
            self.kill()
            raise RuntimeError(f"verifier worker failed to start (got {line!r})")

    def _read_line(self, deadline: float) -> str | None:
        """The next answer line, or None when the deadline passes or the worker dies."""
        fd = self.process.stdout.fileno()
        while b"\n" not in self._buffer:
            remaining_s = deadline - time.monotonic()
            if remaining_s <= 0 or len(self._buffer) > MAX_RESPONSE_BYTES:
                return None
            readable, _, _ = select.select([fd], [], [], remaining_s)
            if not readable:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                return None
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode("utf-8", errors="replace")

    def call(self, payload: Any, timeout_s: float) -> CallResult:
        # The soft alarm fires a little before the hard deadline so the worker usually survives.
        request = {"payload": payload, "soft_timeout_s": max(0.05, timeout_s * 0.8)}
        try:
            self.process.stdin.write((json.dumps(request) + "\n").encode())
            self.process.stdin.flush()
        except (BrokenPipeError, OSError):
            self.kill()
            return CallResult(False, reason="worker died before the request")
        line = self._read_line(time.monotonic() + timeout_s)
        if line is None:
            died = self.process.poll() is not None
            self.kill()
            return CallResult(False, reason="worker crashed (memory?)" if died else
                              f"timeout after {timeout_s:.2f} s (worker killed)")
        try:
            answer = json.loads(line)
        except ValueError:
            self.kill()
            return CallResult(False, reason="worker sent an unreadable answer")
        return CallResult(bool(answer.get("ok")), answer.get("value"), answer.get("reason", ""))

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                self.process.kill()
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            try:
                stream.close()
            except OSError:
                pass


class BoundedPool:
    """A thread-safe pool of at most ``num_workers`` bounded worker processes.

    ``call`` borrows an idle worker (starting one if fewer than ``num_workers`` exist, else
    waiting), sends the payload to ``target`` and waits at most ``timeout_s``. A worker that
    times out, crashes or runs out of memory is discarded; the pool starts a fresh one on the
    next call, so one pathological input cannot stall or kill the others. Never raises for a
    bad payload; failures come back as ``CallResult(ok=False, reason=...)``.

    Example:
        >>> pool = BoundedPool("verifiers.bounded:probe", num_workers=1, memory_mb=512)
        >>> pool.call({"kind": "sleep", "seconds": 30}, timeout_s=0.5).reason.startswith("timeout")
        True
        >>> pool.close()
    """

    def __init__(self, target: str, *, num_workers: int = 2, memory_mb: int = 1024,
                 init_target: str = ""):
        self.target = target
        self.init_target = init_target
        self.num_workers = max(1, int(num_workers))
        self.memory_mb = int(memory_mb)
        self._idle: list[_Worker] = []
        self._num_live = 0
        self._condition = threading.Condition()
        self._closed = False
        self._owner_pid = os.getpid()

    def _adopt_after_fork(self) -> None:
        """In a forked child (a multiprocessing worker, say) the inherited workers and lock
        belong to the parent: using their pipes would interleave with the parent's calls. Start
        afresh; the parent's workers stay the parent's."""
        if self._owner_pid != os.getpid():
            self._idle, self._num_live = [], 0
            self._condition = threading.Condition()
            self._owner_pid = os.getpid()

    def _acquire(self) -> _Worker:
        self._adopt_after_fork()
        with self._condition:
            while True:
                if self._closed:
                    raise RuntimeError("pool is closed")
                if self._idle:
                    return self._idle.pop()
                if self._num_live < self.num_workers:
                    self._num_live += 1
                    break
                self._condition.wait()
        try:
            return _Worker(self.target, self.memory_mb, self.init_target)
        except BaseException:
            self._forget()
            raise

    def _forget(self) -> None:
        with self._condition:
            self._num_live -= 1
            self._condition.notify()

    def _release(self, worker: _Worker) -> None:
        if not worker.alive():
            self._forget()
            return
        with self._condition:
            if self._closed:
                worker.kill()
                self._num_live -= 1
            else:
                self._idle.append(worker)
            self._condition.notify()

    def call(self, payload: Any, *, timeout_s: float) -> CallResult:
        """Run ``target(payload)`` in a worker; at most ``timeout_s`` once a worker is ready."""
        try:
            worker = self._acquire()
        except Exception as exc:  # noqa: BLE001 - report, never raise to a reward function
            return CallResult(False, reason=f"no worker: {exc}")
        try:
            return worker.call(payload, timeout_s)
        finally:
            self._release(worker)

    def warm_up(self) -> None:
        """Start all workers now, so the first real calls do not pay the import time."""
        workers = [self._acquire() for _ in range(self.num_workers)]
        for worker in workers:
            self._release(worker)

    def worker_pids(self) -> list[int]:
        """Process ids of the idle workers (for tests and diagnostics)."""
        self._adopt_after_fork()
        with self._condition:
            return [worker.process.pid for worker in self._idle]

    def close(self) -> None:
        """Kill every idle worker; busy workers are killed when their call returns."""
        self._adopt_after_fork()
        with self._condition:
            self._closed = True
            idle, self._idle = self._idle, []
            self._num_live -= len(idle)
            self._condition.notify_all()
        for worker in idle:
            worker.kill()


_SHARED_POOLS: dict[tuple[str, int, int, str], BoundedPool] = {}
_SHARED_LOCK = threading.Lock()


def shared_pool(target: str, *, num_workers: int = 2, memory_mb: int = 1024,
                init_target: str = "") -> BoundedPool:
    """One process-wide pool per (target, size, memory, init), created lazily, closed at exit.

    Example:
        >>> shared_pool("verifiers.bounded:probe") is shared_pool("verifiers.bounded:probe")
        True
    """
    key = (target, num_workers, memory_mb, init_target)
    with _SHARED_LOCK:
        pool = _SHARED_POOLS.get(key)
        if pool is None or pool._closed:
            pool = BoundedPool(target, num_workers=num_workers, memory_mb=memory_mb,
                               init_target=init_target)
            _SHARED_POOLS[key] = pool
        return pool


@atexit.register
def close_shared_pools() -> None:
    """Close every shared pool (their workers exit); the next ``shared_pool`` call starts anew."""
    with _SHARED_LOCK:
        pools = list(_SHARED_POOLS.values())
        _SHARED_POOLS.clear()
    for pool in pools:
        pool.close()


def probe(payload: dict) -> Any:
    """A diagnostic target for tests: echo a value, sleep, spin, or allocate memory.

    Example:
        >>> probe({"kind": "echo", "value": [1, 2]})
        [1, 2]
    """
    kind = payload.get("kind")
    if kind == "echo":
        return payload.get("value")
    if kind == "sleep":
        time.sleep(float(payload["seconds"]))
        return "slept"
    if kind == "spin":  # a pure-Python loop: the soft timer can interrupt it
        while True:
            pass
    if kind == "masked_spin":
        # Stands in for C-level work that never checks for signals (the soft timer cannot stop
        # it), so only the parent's hard kill ends it.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        while True:
            pass
    if kind == "alloc_mb":
        block = bytearray(int(payload["mb"]) * 1024 * 1024)
        return len(block)
    if kind == "pid":
        return os.getpid()
    raise ValueError(f"unknown probe kind {kind!r}")
