"""Sandbox throughput: trivial programs per second, sequential (the baseline) vs ``run_many``.

Each program is a one-line function checked by one call test (or a stdin/stdout echo with
``--kind stdio``), so the numbers measure the sandbox itself: bwrap's namespaces and mounts, the
interpreter start inside, the harness, the per-case fork and the host's parsing. Every result is
checked (all must pass), so a fast but broken sandbox cannot look good.

Prints a Markdown table: programs/s, the ratio to sequential, and per-program latency (mean,
p50, p95 wall time of one ``run_program`` as seen by its caller).

Usage: python benchmarks/bench_sandbox.py [--num-programs 100] [--workers 2 4 8] [--kind call]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from verifiers.sandbox import SandboxResult, run_many, run_program, sandbox_support  # noqa: E402 - path set-up above

PROGRAMS = {
    "call": ("def add(a, b):\n    return a + b\n",
             {"kind": "call", "fn_name": "add", "cases": [{"args": [2, 3], "expected": 5}]}),
    "stdio": ("print(input())\n", {"kind": "stdio", "cases": [{"input": "hello\n", "output": "hello"}]}),
}


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def check(results: list[SandboxResult]) -> None:
    failed = [r for r in results if not r.all_passed]
    if failed:
        raise SystemExit(f"{len(failed)} trivial programs failed; first: {failed[0]}")


def bench_sequential(source: str, tests: dict, num_programs: int) -> dict:
    latencies_s, results = [], []
    start = time.perf_counter()
    for _ in range(num_programs):
        one = time.perf_counter()
        results.append(run_program(source, tests))
        latencies_s.append(time.perf_counter() - one)
    elapsed_s = time.perf_counter() - start
    check(results)
    return {"mode": "sequential", "workers": 1, "elapsed_s": elapsed_s, "latencies_s": latencies_s}


def bench_parallel(source: str, tests: dict, num_programs: int, workers: int) -> dict:
    start = time.perf_counter()
    results = run_many([(source, tests)] * num_programs, num_workers=workers)
    elapsed_s = time.perf_counter() - start
    check(results)
    # run_many reports each program's own wall time; the caller waits for the whole batch.
    return {"mode": "run_many", "workers": workers, "elapsed_s": elapsed_s,
            "latencies_s": [r.wall_time_s for r in results]}


def table(rows: list[dict], num_programs: int) -> str:
    baseline = num_programs / rows[0]["elapsed_s"]
    lines = ["| mode | workers | programs/s | vs sequential | latency mean ms | p50 ms | p95 ms |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        rate = num_programs / row["elapsed_s"]
        lat = row["latencies_s"]
        lines.append(f"| {row['mode']} | {row['workers']} | {rate:.1f} | {rate / baseline:.2f}x | "
                     f"{1000 * statistics.mean(lat):.1f} | {1000 * percentile(lat, 0.5):.1f} | "
                     f"{1000 * percentile(lat, 0.95):.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-programs", type=int, default=100)
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--kind", choices=sorted(PROGRAMS), default="call")
    args = parser.parse_args(argv)
    available, reason = sandbox_support()
    if not available:
        raise SystemExit(f"no sandbox: {reason}")
    source, tests = PROGRAMS[args.kind]
    run_program(source, tests)  # warm-up: the probe and the harness compile are one-off costs
    rows = [bench_sequential(source, tests, args.num_programs)]
    rows += [bench_parallel(source, tests, args.num_programs, workers) for workers in args.workers]
    load = os.getloadavg()
    print(f"sandbox throughput, {args.num_programs} trivial '{args.kind}' programs per row; "
          f"{os.cpu_count()} CPUs, load average {load[0]:.1f} at the end; Python {platform.python_version()}; "
          f"running as {'root' if os.geteuid() == 0 else 'non-root'}\n")
    print(table(rows, args.num_programs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
