"""Throughput and agreement of our math verifier against math-verify on the peer cases.

Runs, in this one process and one after the other, the same 394 labelled (gold, pred) pairs
(``data/fixtures/peer_cases/math_equivalence.jsonl``) through:

* math-verify 0.9.0 (the baseline): ``verify(parse(gold), parse(pred))`` with its defaults;
* ours, one call at a time: ``check_answer_texts(pred, gold)``;
* ours, batched: ``batch_check_answer_texts(pairs, num_workers=N)``.

Each is repeated ``--repetitions`` times. Our workers are restarted (not timed) before every
repetition, so their parse caches start empty each time and only help within one pass, where
golds repeat. Prints a Markdown table: cases/s, ratio to math-verify, agreement with the labels.

Usage: python benchmarks/bench_math_verifier.py [--repetitions 3] [--num-workers 2]
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

from verifiers.math_answer import (  # noqa: E402 - after the path set-up above
    batch_check_answer_texts,
    check_answer_texts,
    reset_workers,
    warm_up_workers,
)

FIXTURE = ROOT / "data" / "fixtures" / "peer_cases" / "math_equivalence.jsonl"


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--num-workers", type=int, default=2)
    args = parser.parse_args(argv)
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
