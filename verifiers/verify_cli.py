"""Check the math verifier against labelled pairs: ``python -m verifiers.verify_cli FILE [--json]
[--policy NAME] [--explain]``.

Each line of FILE is a JSON object ``{"gold": str, "pred": str, "equal": bool (optional)}``.
Every row is judged by ``verifiers.math_answer.judge`` under a named policy
(``verifiers.math_policy.POLICIES``): the same caps, extraction and comparison as the reward of
that policy (``--policy strict``, the default, is the ``math`` reward; ``--policy lenient`` is
``math_lenient``...). ``pred`` is a completion; ``gold`` may be a bare answer or a whole
solution. ``--policy text`` extracts from free text on both sides; ``--no-extract`` compares
the two as given. ``--explain`` prints, for every row, the rule that decided it.
The report gives the agreement with ``equal`` where present and every disagreement with the
verifier's reason. A bad line is reported with its line number and field and skipped; the other
lines are still checked.

Exit status: 0 when every line was read, 1 when some lines were invalid, 2 when the file cannot
be read.

Example:
    >>> import io, json, tempfile
    >>> with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
    ...     _ = f.write(json.dumps({"gold": "1/2", "pred": "0.5", "equal": True}) + "\\n")
    >>> out = io.StringIO(); run_verify(f.name, out=out, policy="text")
    0
    >>> "agreement: 1/1 (100.0%)" in out.getvalue()
    True
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass

from verifiers.math_answer import Judgement, batch_judge
from verifiers.math_policy import DEFAULT_POLICY, POLICIES, get_policy, reward_name


@dataclass
class _Row:
    line: int
    gold: str
    pred: str
    expected: bool | None


def _read_rows(path: str) -> tuple[list[_Row], list[dict]]:
    """Valid rows, and one error record (line, field, message) per invalid line."""
    rows, errors = [], []
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as exc:
                errors.append({"line": line_number, "field": None, "message": f"not JSON: {exc}"})
                continue
            error = _row_error(record)
            if error:
                errors.append({"line": line_number, **error})
                continue
            rows.append(_Row(line_number, record["gold"], record["pred"], record.get("equal")))
    return rows, errors


def _row_error(record) -> dict | None:
    if not isinstance(record, dict):
        return {"field": None, "message": "a line must be a JSON object"}
    for field in ("gold", "pred"):
        if field not in record:
            return {"field": field, "message": f"missing field {field!r}"}
        if not isinstance(record[field], str):
            return {"field": field, "message": f"field {field!r} must be a string"}
    if "equal" in record and not isinstance(record["equal"], bool):
        return {"field": "equal", "message": "field 'equal' must be true or false"}
    return None


def _check(rows: list[_Row], policy: str, extract: bool, timeout_s: float) -> list[Judgement]:
    return batch_judge([(row.pred, row.gold) for row in rows], policy, timeout_s=timeout_s, extract=extract)


def _explained(row: _Row, judgement: Judgement) -> dict:
    return {"line": row.line, "equal": judgement.equal, "extracted_by": judgement.extracted_by,
            "reason": judgement.reason, "rule": judgement.rule, "pred_answer": judgement.pred_answer,
            "gold_answer": judgement.gold_answer, "rejected": judgement.rejected}


def _report(path: str, rows: list[_Row], judgements: list[Judgement], errors: list[dict], policy: str,
            explain: bool) -> dict:
    labelled = [(row, judgement) for row, judgement in zip(rows, judgements) if row.expected is not None]
    disagreements = [
        {"line": row.line, "gold": row.gold, "pred": row.pred, "expected": row.expected,
         "got": judgement.equal, "reason": judgement.reason, "rule": judgement.rule}
        for row, judgement in labelled if judgement.equal != row.expected]
    num_agree = len(labelled) - len(disagreements)
    report = {
        "path": path, "policy": policy, "reward": reward_name(policy), "num_rows": len(rows),
        "num_labelled": len(labelled), "num_agree": num_agree,
        "agreement": num_agree / len(labelled) if labelled else None,
        "num_equal": sum(judgement.equal for judgement in judgements),
        "num_no_answer": sum(judgement.extracted_by == "none" for judgement in judgements),
        "num_rejected_by_cap": sum(judgement.rejected is not None for judgement in judgements),
        "disagreements": disagreements, "errors": errors,
    }
    if explain:
        report["rows"] = [_explained(row, judgement) for row, judgement in zip(rows, judgements)]
    return report


def _print_text(report: dict, out) -> None:
    for error in report["errors"]:
        print(f"error: line {error['line']}: {error['message']}", file=out)
    for item in report.get("rows", []):
        print(f"line {item['line']}: {'equal' if item['equal'] else 'not equal'} by {item['rule']}", file=out)
    for item in report["disagreements"]:
        print(f"line {item['line']}: expected {item['expected']}, got {item['got']} ({item['reason']})\n"
              f"  gold: {item['gold'][:200]!r}\n  pred: {item['pred'][:200]!r}", file=out)
    print(f"policy: {report['policy']} (the {report['reward']!r} reward)", file=out)
    print(f"rows: {report['num_rows']}, judged equal: {report['num_equal']}, "
          f"invalid lines: {len(report['errors'])}", file=out)
    if report["num_rejected_by_cap"]:
        print(f"rejected by a cap before extraction: {report['num_rejected_by_cap']}", file=out)
    if report["num_no_answer"]:
        print(f"no answer found in {report['num_no_answer']} predictions (strict policies take only the answer "
              f"tag or a box; --policy text extracts from free text)", file=out)
    if report["agreement"] is not None:
        print(f"agreement: {report['num_agree']}/{report['num_labelled']} "
              f"({100 * report['agreement']:.1f}%)", file=out)


def run_verify(path: str, as_json: bool = False, out=None, *, extract: bool = True,
               timeout_s: float = 2.0, policy: str = DEFAULT_POLICY, explain: bool = False) -> int:
    """Check every row of a JSONL file under a named math policy and print the report (text, or
    one JSON object) to ``out`` (None: the current ``sys.stdout``, looked up at call time so
    redirection works). ``explain`` adds, per row, the rule that decided it.

    Returns the exit status: 0 all lines valid, 1 some lines invalid, 2 file unreadable or
    unknown policy.
    """
    out = sys.stdout if out is None else out
    try:
        get_policy(policy)
    except ValueError as exc:
        print(json.dumps({"path": path, "error": str(exc)}) if as_json else f"error: {exc}", file=out)
        return 2
    try:
        rows, errors = _read_rows(path)
    except (OSError, UnicodeDecodeError) as exc:
        message = f"cannot read {path}: {exc}"
        print(json.dumps({"path": path, "error": message}) if as_json else f"error: {message}", file=out)
        return 2
    judgements = _check(rows, policy, extract, timeout_s) if rows else []
    report = _report(path, rows, judgements, errors, policy, explain)
    if as_json:
        print(json.dumps(report, ensure_ascii=False), file=out)
    else:
        _print_text(report, out)
    return 1 if errors else 0


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (the lead hooks it as ``r1zero verify``)."""
    parser = argparse.ArgumentParser(
        prog="verify", description="Check the math verifier on JSONL rows {gold, pred[, equal]}.")
    parser.add_argument("path", help="JSONL file, one {gold, pred, equal?} object per line")
    parser.add_argument("--json", action="store_true", help="print one machine-readable JSON object")
    parser.add_argument("--no-extract", action="store_true",
                        help="compare gold and pred as answers; do not extract from solution text")
    parser.add_argument("--timeout-s", type=float, default=2.0, help="time limit per comparison")
    add_policy_arguments(parser)
    args = parser.parse_args(argv)
    return run_verify(args.path, as_json=args.json, extract=not args.no_extract, timeout_s=args.timeout_s,
                      policy=args.policy, explain=args.explain)


def add_policy_arguments(parser: argparse.ArgumentParser) -> None:
    """``--policy NAME`` and ``--explain`` (shared with ``r1zero verify``)."""
    parser.add_argument("--policy", default=DEFAULT_POLICY, choices=list(POLICIES),
                        help=f"math policy to judge under (default {DEFAULT_POLICY}: the 'math' reward); "
                             "see docs/verifiers.md")
    parser.add_argument("--explain", action="store_true", help="print the rule that decided each row")


if __name__ == "__main__":
    sys.exit(main())
