"""Reward-hacking audit of a run's archived rollouts: ``r1zero audit-rollouts RUN_OR_DIR``.

GRPO keeps a sample of each logged step's completions in ``results/{run}/grpo/rollouts/
step_NNNNNN.jsonl`` (``{"id", "completion", "reward", "finish_reason"}``). This rescans every
math completion there under two policies (``strict`` and ``lenient`` unless told otherwise) and
reports:

* completions that the lenient policy pays for and the strict one does not (what a run trained
  on the lenient reward may have learnt to exploit), with the rule that paid;
* completions a cap rejects before extraction (length, nesting depth, boxes, answer tags);
* repeated degenerate patterns: highly compressible completions, grouped by their most
  repeated line or phrase.

The gold answers come from the run's training data: ``--data FILE``, else the data file named
in ``results/{run}/grpo/model/meta.json``, else the dataset of the run's GRPO config snapshot
(``results/.config/runs/{run}/grpo.json``). The report is printed and written as JSON beside the
rollouts (``results/{run}/grpo/rollouts_audit.json``, or ``--out FILE``).

Example:
    >>> report = audit_records([{"id": "q1", "step": 0, "completion": "so it is 4", "reward": 1.0}],
    ...                        {"q1": {"id": "q1", "task": "math", "answer": "4"}})
    >>> report["num_lenient_only"], report["lenient_only"][0]["lenient_rule"]
    (1, 'last_number -> numbers equal')
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import zlib
from collections import Counter
from pathlib import Path

from verifiers.math_answer import batch_judge
from verifiers.math_policy import CAP_REASONS, POLICIES, degenerate_reason, get_policy

# A completion this long or longer whose zlib-compressed size is below this fraction of its
# size is "repetitive": ordinary reasoning compresses to ~0.3-0.5, a loop of one phrase to <0.1.
MIN_REPETITIVE_CHARS = 400
MAX_REPETITIVE_RATIO = 0.15
_STEP_FILE = re.compile(r"step_(\d+)\.jsonl$")


class AuditError(ValueError):
    """Rollouts or their data cannot be found or read; the message says what to pass."""


# ---------------------------------------------------------------------------------------------
# Finding the rollouts and their gold answers
# ---------------------------------------------------------------------------------------------


def find_rollouts_dir(run_or_dir: str, results_dir: str = "results") -> Path:
    """The rollouts directory of a run name or a path (the rollouts dir, or the run's grpo dir).

    Example:
        >>> find_rollouts_dir("no-such-run", "/nonexistent")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        verifiers.audit.AuditError: no rollouts for 'no-such-run': ...
    """
    candidates = [Path(run_or_dir), Path(run_or_dir) / "rollouts", Path(run_or_dir) / "grpo" / "rollouts",
                  Path(results_dir) / run_or_dir / "grpo" / "rollouts"]
    for candidate in candidates:
        if candidate.is_dir() and any(candidate.glob("step_*.jsonl")):
            return candidate
    looked = ", ".join(str(candidate) for candidate in candidates)
    raise AuditError(f"no rollouts for {run_or_dir!r}: no step_*.jsonl in any of {looked}")


def _data_from_meta(grpo_dir: Path) -> Path | None:
    meta_path = grpo_dir / "model" / "meta.json"
    if not meta_path.is_file():
        return None
    try:
        inputs = json.loads(meta_path.read_text(encoding="utf-8")).get("inputs", {})
    except (OSError, ValueError):
        return None
    for name in inputs.get("train", {}) if isinstance(inputs, dict) else []:
        for base in (Path("."), grpo_dir.parents[1].parent if len(grpo_dir.parents) > 1 else Path(".")):
            if (base / name).is_file():
                return base / name
    return None


def _data_from_snapshot(grpo_dir: Path) -> Path | None:
    run, results = grpo_dir.parent.name, grpo_dir.parent.parent
    snapshot = results / ".config" / "runs" / run / "grpo.json"
    try:
        dataset = json.loads(snapshot.read_text(encoding="utf-8")).get("dataset")
    except (OSError, ValueError):
        return None
    path = results / "data" / str(dataset) / "train.jsonl"
    return path if dataset and path.is_file() else None


def find_data_path(rollouts_dir: Path, data: str | None = None) -> Path:
    """The JSONL of example rows holding the rollouts' gold answers (see the module doc)."""
    if data is not None:
        if not Path(data).is_file():
            raise AuditError(f"--data {data}: file not found")
        return Path(data)
    grpo_dir = rollouts_dir.resolve().parent
    found = _data_from_meta(grpo_dir) or _data_from_snapshot(grpo_dir)
    if found is None:
        raise AuditError(f"cannot find the training data of {rollouts_dir} (no model/meta.json or config "
                         "snapshot naming it); pass --data results/data/<dataset>/train.jsonl")
    return found


def _read_jsonl(path: Path) -> list[dict]:
    records = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as exc:
                raise AuditError(f"{path} line {number}: not JSON ({exc})") from None
            if not isinstance(record, dict):
                raise AuditError(f"{path} line {number}: a line must be a JSON object")
            records.append(record)
    return records


def load_rollouts(rollouts_dir: Path) -> list[dict]:
    """Every archived rollout, each with its ``step`` (from the file name), in step order."""
    records = []
    for path in sorted(rollouts_dir.glob("step_*.jsonl")):
        step = int(_STEP_FILE.search(path.name).group(1))
        for record in _read_jsonl(path):
            if not isinstance(record.get("completion"), str) or "id" not in record:
                raise AuditError(f"{path}: every rollout needs 'id' and a string 'completion'")
            records.append({**record, "step": step})
    return records


# ---------------------------------------------------------------------------------------------
# Degenerate patterns
# ---------------------------------------------------------------------------------------------


def compression_ratio(text: str) -> float:
    """zlib-compressed size / size; near 0 for a text that repeats itself.

    Example:
        >>> compression_ratio("1+" * 5000) < 0.05
        True
    """
    raw = text.encode("utf-8", errors="replace")
    return len(zlib.compress(raw, 6)) / max(1, len(raw))


def repeated_unit(text: str) -> str:
    """The most repeated line of a text (or, for one long line, its most repeated 4-word
    phrase): the pattern a degenerate completion loops on.

    Example:
        >>> repeated_unit("ok\\n" + "the answer is 4\\n" * 20)
        'the answer is 4'
    """
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    line, count = Counter(lines).most_common(1)[0] if lines else ("", 0)
    if count >= 3:
        return line[:80]
    words = text.split()
    phrases = Counter(" ".join(words[index:index + 4]) for index in range(max(0, len(words) - 3)))
    if phrases and phrases.most_common(1)[0][1] >= 3:
        return phrases.most_common(1)[0][0][:80]
    return text[:40]  # one unbroken run of symbols ("((((", "1+1+1+"): its head shows the unit


def is_repetitive(text: str) -> bool:
    """Long and compresses to under ``MAX_REPETITIVE_RATIO`` of its size."""
    return len(text) >= MIN_REPETITIVE_CHARS and compression_ratio(text) < MAX_REPETITIVE_RATIO


# ---------------------------------------------------------------------------------------------
# The audit
# ---------------------------------------------------------------------------------------------


def _excerpt(text: str, length: int = 160) -> str:
    return text if len(text) <= length else text[:length // 2] + " ... " + text[-length // 2:]


def audit_records(records: list[dict], rows_by_id: dict[str, dict], *, strict: str = "strict",
                  lenient: str = "lenient", max_examples: int = 5, num_workers: int | None = None) -> dict:
    """Judge every math rollout under ``strict`` and ``lenient``; count lenient-only rewards,
    cap rejections and repetitive completions, with up to ``max_examples`` examples of each."""
    strict_policy, lenient_policy = get_policy(strict), get_policy(lenient)
    math_records = [record for record in records
                    if rows_by_id.get(str(record["id"]), {}).get("task") == "math"]
    unknown_ids = sorted({str(record["id"]) for record in records if str(record["id"]) not in rows_by_id})
    pairs = [(record["completion"], str(rows_by_id[str(record["id"])].get("answer") or "")) for record in math_records]
    strict_verdicts = batch_judge(pairs, strict_policy, num_workers=num_workers)
    lenient_verdicts = batch_judge(pairs, lenient_policy, num_workers=num_workers)
    lenient_only, caps, patterns = [], Counter(), {}
    for record, strict_verdict, lenient_verdict in zip(math_records, strict_verdicts, lenient_verdicts):
        where = {"id": str(record["id"]), "step": record["step"], "reward_logged": record.get("reward")}
        if lenient_verdict.equal and not strict_verdict.equal:
            lenient_only.append({**where, "lenient_rule": lenient_verdict.rule, "strict_rule": strict_verdict.rule,
                                 "answer": lenient_verdict.pred_answer, "completion": _excerpt(record["completion"])})
        cap = degenerate_reason(record["completion"], strict_policy)
        if cap:
            caps[cap] += 1
        if cap or is_repetitive(record["completion"]):
            pattern = patterns.setdefault(repeated_unit(record["completion"]), {"count": 0, "examples": []})
            pattern["count"] += 1
            if len(pattern["examples"]) < max_examples:
                pattern["examples"].append({**where, "cap": cap, "length": len(record["completion"]),
                                            "completion": _excerpt(record["completion"])})
    ranked = sorted(patterns.items(), key=lambda item: -item[1]["count"])
    return {
        "policies": {"strict": strict, "lenient": lenient},
        "num_rollouts": len(records), "num_math": len(math_records),
        "num_skipped_other_tasks": len(records) - len(math_records) - sum(
            str(record["id"]) not in rows_by_id for record in records),
        "unknown_ids": unknown_ids[:20], "num_unknown_ids": len(unknown_ids),
        "num_equal_strict": sum(verdict.equal for verdict in strict_verdicts),
        "num_equal_lenient": sum(verdict.equal for verdict in lenient_verdicts),
        "num_lenient_only": len(lenient_only), "lenient_only": lenient_only[:max_examples],
        "lenient_only_by_rule": dict(Counter(item["lenient_rule"].split(" -> ")[0] for item in lenient_only)),
        "rejected_by_cap": {reason: caps[reason] for reason in CAP_REASONS},
        "num_degenerate": sum(pattern["count"] for _, pattern in ranked),
        "degenerate_patterns": [{"pattern": unit, **pattern} for unit, pattern in ranked[:max_examples]],
    }


def print_report(report: dict, out) -> None:
    """The audit as text: counts first, then examples."""
    names = report["policies"]
    print(f"rollouts: {report['num_rollouts']} ({report['num_math']} math; "
          f"{report['num_skipped_other_tasks']} other tasks skipped; {report['num_unknown_ids']} ids not in the data)",
          file=out)
    print(f"rewarded under {names['strict']}: {report['num_equal_strict']}, under {names['lenient']}: "
          f"{report['num_equal_lenient']}", file=out)
    by_rule = ", ".join(f"{rule}: {count}" for rule, count in report["lenient_only_by_rule"].items()) or "none"
    print(f"rewarded under {names['lenient']} but not {names['strict']}: {report['num_lenient_only']} ({by_rule})",
          file=out)
    for item in report["lenient_only"]:
        print(f"  step {item['step']} id {item['id']}: {item['lenient_rule']}; strict: {item['strict_rule']}\n"
              f"    {item['completion']!r}", file=out)
    caps = ", ".join(f"{reason}: {count}" for reason, count in report["rejected_by_cap"].items())
    print(f"rejected by a cap before extraction: {caps}", file=out)
    print(f"degenerate (capped or repetitive) completions: {report['num_degenerate']}", file=out)
    for pattern in report["degenerate_patterns"]:
        print(f"  x{pattern['count']} repeating {pattern['pattern']!r}", file=out)
        for example in pattern["examples"][:2]:
            print(f"    step {example['step']} id {example['id']} ({example['length']} chars"
                  f"{', cap ' + example['cap'] if example['cap'] else ''}): {example['completion']!r}", file=out)


def _write_json(path: Path, report: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(handle, "w", encoding="utf-8") as stream:
        json.dump(report, stream, indent=1, ensure_ascii=False)
    os.chmod(temporary, 0o644)
    os.replace(temporary, path)  # atomic: an interrupted audit never leaves half a report


def audit_main(argv: list[str] | None = None) -> int:
    """``r1zero audit-rollouts RUN_OR_DIR [--data FILE] [--results DIR] [--strict NAME]
    [--lenient NAME] [--examples N] [--out FILE] [--json]``; exit 2 when nothing can be read."""
    parser = argparse.ArgumentParser(prog="r1zero audit-rollouts", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_or_dir", metavar="RUN_OR_DIR")
    parser.add_argument("--data", default=None, help="JSONL rows with the gold answers (default: the run's train data)")
    parser.add_argument("--results", default="results", help="results directory (default: results)")
    parser.add_argument("--strict", default="strict", choices=list(POLICIES), help="policy that must also pay")
    parser.add_argument("--lenient", default="lenient", choices=list(POLICIES), help="policy to compare with")
    parser.add_argument("--examples", type=int, default=5, help="examples kept per finding (default 5)")
    parser.add_argument("--out", default=None, help="JSON report (default: rollouts_audit.json beside rollouts/)")
    parser.add_argument("--json", action="store_true", help="print the JSON report instead of text")
    args = parser.parse_args(argv)
    try:
        rollouts_dir = find_rollouts_dir(args.run_or_dir, args.results)
        data_path = find_data_path(rollouts_dir, args.data)
        rows_by_id = {str(row.get("id")): row for row in _read_jsonl(data_path)}
        report = audit_records(load_rollouts(rollouts_dir), rows_by_id, strict=args.strict, lenient=args.lenient,
                               max_examples=args.examples)
    except (AuditError, OSError) as error:
        print(f"r1zero audit-rollouts: {error}", file=sys.stderr)
        return 2
    report = {"rollouts_dir": str(rollouts_dir), "data": str(data_path), **report}
    out_path = Path(args.out) if args.out else rollouts_dir.parent / "rollouts_audit.json"
    _write_json(out_path, report)
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
    else:
        print_report(report, sys.stdout)
        print(f"report written to {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(audit_main())
