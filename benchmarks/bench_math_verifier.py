"""Throughput and agreement of our math verifier against math-verify on the peer cases.

Runs, in this one process and one after the other, the same 394 labelled (gold, pred) pairs
(``data/fixtures/peer_cases/math_equivalence.jsonl``) through:

* math-verify 0.9.0 (the baseline): ``verify(parse(gold), parse(pred))`` with its defaults;
* ours, one call at a time: ``check_answer_texts(pred, gold)``;
* ours, batched: ``batch_check_answer_texts(pairs, num_workers=N)``.

Each is repeated ``--repetitions`` times. Our workers are restarted (not timed) before every
repetition, so their parse caches start empty each time and only help within one pass, where
golds repeat. Prints a Markdown table: cases/s, ratio to math-verify, agreement with the labels.

Then the worst case: every peer case and every hostile completion of
``data/fixtures/math_hostile/`` is judged alone (``judge``, one check at a time, worker round
trip included) under the ``strict`` and ``lenient`` policies, in two passes with fresh workers
(cold caches) each. Prints the worst and median time per check, the slowest checks, and whether
both passes gave every check the same verdict and reason (the same path in every worker).

Usage: python benchmarks/bench_math_verifier.py [--repetitions 3] [--num-workers 2] [--worst-case-only]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(ROOT / "tests" / "verifiers"))

from hostile_math import load_hostile_cases  # noqa: E402
from verifiers.math_answer import (  # noqa: E402 - after the path set-up above
    batch_check_answer_texts,
    check_answer_texts,
    judge,
    reset_workers,
    warm_up_workers,
)

FIXTURE = ROOT / "data" / "fixtures" / "peer_cases" / "math_equivalence.jsonl"
WORST_CASE_POLICIES = ("strict", "lenient")


def load_cases() -> list[dict]:
    return [json.loads(line) for line in FIXTURE.read_text(encoding="utf-8").splitlines() if line.strip()]


def run_math_verify(cases: list[dict]) -> list[bool]:
    from math_verify import parse, verify

    results = []
    for case in cases:
        try:
            results.append(bool(verify(parse(case["gold"]), parse(case["pred"]))))
        except Exception:  # noqa: BLE001 - count a crash as "not equal", as ours does
            results.append(False)
    return results


def run_ours_sequential(cases: list[dict]) -> list[bool]:
    return [check_answer_texts(case["pred"], case["gold"]).equal for case in cases]


def make_ours_batch(num_workers: int):
    def run(cases: list[dict]) -> list[bool]:
        pairs = [(case["pred"], case["gold"]) for case in cases]
        return [verdict.equal for verdict in batch_check_answer_texts(pairs, num_workers=num_workers)]
    return run


def measure(run, cases: list[dict], repetitions: int, prepare=None) -> tuple[float, float]:
    """(cases per second over all repetitions, agreement with the labels of the last pass)."""
    elapsed_s, results = 0.0, []
    for _ in range(repetitions):
        if prepare:
            prepare()
        started = time.perf_counter()
        results = run(cases)
        elapsed_s += time.perf_counter() - started
    agreement = sum(result == case["equal"] for result, case in zip(results, cases)) / len(cases)
    return len(cases) * repetitions / elapsed_s, agreement


def worst_case_checks() -> list[tuple[str, str, str]]:
    """(label, completion, gold) of every peer case and hostile completion."""
    checks = [(f"peer row {index}", case["pred"], case["gold"]) for index, case in enumerate(load_cases())]
    checks += [(f"hostile {case['name']}", case["completion"], case["gold"]) for case in load_hostile_cases()]
    return checks


def time_each(checks: list[tuple[str, str, str]], policy: str) -> list[tuple[float, str, tuple]]:
    """(seconds, label, (equal, reason)) of each check judged alone, with fresh workers."""
    reset_workers()
    warm_up_workers(2)
    timed = []
    for label, completion, gold in checks:
        started = time.perf_counter()
        judgement = judge(completion, gold, policy)
        timed.append((time.perf_counter() - started, label, (judgement.equal, judgement.reason)))
    return timed


def report_worst_case() -> None:
    checks = worst_case_checks()
    num_hostile = sum(label.startswith("hostile") for label, _, _ in checks)
    print(f"\nworst case per check: {len(checks) - num_hostile} peer cases + {num_hostile} hostile completions, "
          "each judged alone, two passes with fresh workers")
    print("| policy | worst check | median check | slowest | same verdict and reason in both passes |")
    print("|---|---:|---:|---|---|")
    for policy in WORST_CASE_POLICIES:
        first, second = time_each(checks, policy), time_each(checks, policy)
        seconds = sorted(max(a[0], b[0]) for a, b in zip(first, second))
        slowest = sorted(((max(a[0], b[0]), a[1]) for a, b in zip(first, second)), reverse=True)[:3]
        changed = [a[1] for a, b in zip(first, second) if a[2] != b[2]]
        print(f"| {policy} | {seconds[-1] * 1000:.0f} ms | {seconds[len(seconds) // 2] * 1000:.1f} ms | "
              + ", ".join(f"{label} ({time_s * 1000:.0f} ms)" for time_s, label in slowest)
              + f" | {'yes' if not changed else 'NO: ' + ', '.join(changed[:5])} |")
    reset_workers()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--worst-case-only", action="store_true", help="skip the throughput comparison")
    args = parser.parse_args(argv)
    if args.worst_case_only:
        report_worst_case()
        return 0
    cases = load_cases()

    def fresh_workers(num_workers: int):
        return lambda: (reset_workers(), warm_up_workers(num_workers))

    run_math_verify(cases[:5])  # import and first-call set-up, not timed (ours warm up too)
    rows = [
        ("math-verify 0.9.0 (baseline)", *measure(run_math_verify, cases, args.repetitions)),
        ("ours, one call at a time", *measure(run_ours_sequential, cases, args.repetitions, fresh_workers(2))),
        (f"ours, batch ({args.num_workers} workers)",
         *measure(make_ours_batch(args.num_workers), cases, args.repetitions, fresh_workers(args.num_workers))),
    ]
    reset_workers()
    baseline_rate = rows[0][1]
    print(f"{len(cases)} peer cases x {args.repetitions} repetitions; {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, {platform.machine()}")
    print("| verifier | cases/s | vs math-verify | agreement with labels |")
    print("|---|---:|---:|---:|")
    for name, rate, agreement in rows:
        print(f"| {name} | {rate:.0f} | {rate / baseline_rate:.2f}x | {100 * agreement:.1f}% |")
    report_worst_case()
    return 0


if __name__ == "__main__":
    sys.exit(main())
