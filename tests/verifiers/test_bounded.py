"""The bounded worker pool: results, soft and hard timeouts, memory limit, threads, processes."""

import multiprocessing
import os
import threading
import time

import pytest

from verifiers.bounded import BoundedPool, CallResult, probe, shared_pool

PROBE = "verifiers.bounded:probe"


@pytest.fixture(scope="module")
def pool():
    pool = BoundedPool(PROBE, num_workers=2, memory_mb=512)
    pool.warm_up()
    yield pool
    pool.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A killed child stays a zombie until reaped; /proc tells zombies apart.
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_echo_round_trip(pool):
    assert pool.call({"kind": "echo", "value": [1, "a", None]}, timeout_s=5) == \
        CallResult(ok=True, value=[1, "a", None], reason="")


def test_error_in_target_is_reported_not_raised(pool):
    result = pool.call({"kind": "no-such-kind"}, timeout_s=5)
    assert not result.ok and "ValueError" in result.reason


def test_pure_python_loop_hits_the_soft_timeout_and_the_worker_survives(pool):
    pid_before = pool.call({"kind": "pid"}, timeout_s=5).value
    started = time.monotonic()
    result = pool.call({"kind": "spin"}, timeout_s=0.5)
    elapsed_s = time.monotonic() - started
    assert not result.ok and result.reason.startswith("timeout")
    assert elapsed_s < 0.5 + 0.3
    # Soft timeouts answer from inside the worker, so it is reused (no restart cost).
    assert pool.call({"kind": "pid"}, timeout_s=5).value in {pid_before, *pool.worker_pids()}


def test_uninterruptible_work_is_killed_at_the_hard_deadline():
    # A one-worker pool so the replaced worker is the one we watch.
    pool = BoundedPool(PROBE, num_workers=1, memory_mb=512)
    try:
        first_pid = pool.call({"kind": "pid"}, timeout_s=30).value
        started = time.monotonic()
        result = pool.call({"kind": "masked_spin"}, timeout_s=0.5)
        elapsed_s = time.monotonic() - started
        assert not result.ok and "worker killed" in result.reason
        assert elapsed_s < 0.5 + 0.5
        assert not _alive(first_pid)
        second_pid = pool.call({"kind": "pid"}, timeout_s=30).value
        assert second_pid != first_pid  # a fresh worker replaced the killed one
    finally:
        pool.close()


def test_memory_limit_refuses_a_large_allocation(pool):
    result = pool.call({"kind": "alloc_mb", "mb": 4096}, timeout_s=10)
    assert not result.ok and "memory" in result.reason
    assert pool.call({"kind": "alloc_mb", "mb": 16}, timeout_s=10).value == 16 * 1024 * 1024


def test_timeout_holds_when_called_from_a_non_main_thread(pool):
    results = []
    thread = threading.Thread(target=lambda: results.append(
        pool.call({"kind": "sleep", "seconds": 30}, timeout_s=0.4)))
    started = time.monotonic()
    thread.start()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert time.monotonic() - started < 0.4 + 0.5
    assert results and not results[0].ok and results[0].reason.startswith("timeout")


def test_many_threads_share_the_pool(pool):
    values = list(range(12))
    results = [None] * len(values)

    def run(index):
        results[index] = pool.call({"kind": "echo", "value": values[index]}, timeout_s=10).value

    threads = [threading.Thread(target=run, args=(index,)) for index in range(len(values))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert results == values
    assert len(pool.worker_pids()) <= pool.num_workers


def _call_from_child(_):
    # Runs inside a daemonic multiprocessing worker, forked with the parent's shared pool.
    return shared_pool(PROBE, num_workers=1, memory_mb=512).call(
        {"kind": "sleep", "seconds": 30}, timeout_s=0.4).reason


def test_works_inside_a_daemonic_worker_process():
    parent_pool = shared_pool(PROBE, num_workers=1, memory_mb=512)
    parent_pool.warm_up()  # the child inherits this pool object; it must not use its pipes
    with multiprocessing.get_context("fork").Pool(1) as process_pool:
        reason = process_pool.map(_call_from_child, [0])[0]
    assert reason.startswith("timeout")
    assert parent_pool.call({"kind": "echo", "value": 7}, timeout_s=10).value == 7


def test_close_kills_the_workers():
    pool = BoundedPool(PROBE, num_workers=2, memory_mb=512)
    pool.warm_up()
    pids = pool.worker_pids()
    assert len(pids) == 2
    pool.close()
    assert not any(_alive(pid) for pid in pids)
    assert not pool.call({"kind": "echo", "value": 1}, timeout_s=5).ok  # closed: refused


@pytest.mark.parametrize("target", ["os:system", "verifiers.bounded", "builtins:eval"],
                         ids=["not-a-verifiers-module", "no-function", "builtin"])
def test_only_verifiers_functions_can_be_targets(target):
    pool = BoundedPool(target, num_workers=1, memory_mb=512)
    try:
        result = pool.call({"kind": "echo", "value": 1}, timeout_s=5)
        assert not result.ok and "no worker" in result.reason
    finally:
        pool.close()


def test_probe_runs_in_process_too():
    assert probe({"kind": "echo", "value": 2}) == 2
