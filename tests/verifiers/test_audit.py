"""`r1zero audit-rollouts` and `r1zero verify --policy/--explain`, through the CLI entry point.

The rollouts are laid out as GRPO writes them (``results/{run}/grpo/rollouts/step_NNNNNN.jsonl``
with ``{"id", "completion", "reward", "finish_reason"}``), the gold answers as prepare_data
writes them, found through the run's config snapshot as the workflow leaves it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.cli import main as cli_main
from verifiers.audit import (
    AuditError,
    audit_records,
    compression_ratio,
    find_data_path,
    find_rollouts_dir,
    is_repetitive,
    repeated_unit,
)

B = "\\"
ROWS = [{"id": "q1", "task": "math", "answer": "4"}, {"id": "q2", "task": "math", "answer": "(0, 1)"},
        {"id": "c1", "task": "countdown", "answer": None}]
ROLLOUTS = {
    0: [{"id": "q1", "completion": "<think>2+2</think><answer>4</answer>", "reward": 1.1},
        {"id": "q1", "completion": "I have no idea. 4", "reward": 1.0},
        {"id": "c1", "completion": "<answer>1+2</answer>", "reward": 1.0}],
    10: [{"id": "q1", "completion": "1+" * 150_000 + "4", "reward": 1.0},
         {"id": "q1", "completion": f"{B}boxed{{" * 50 + "4", "reward": 1.0},
         {"id": "q2", "completion": "the answer is 1 " * 100, "reward": 0.0},
         {"id": "q9", "completion": "<answer>4</answer>", "reward": 1.0}],
}


def _write_jsonl(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")


@pytest.fixture
def results(tmp_path):
    results = tmp_path / "results"
    _write_jsonl(results / "data" / "mathy" / "train.jsonl", ROWS)
    (results / ".config" / "runs" / "r1").mkdir(parents=True)
    (results / ".config" / "runs" / "r1" / "grpo.json").write_text(json.dumps({"dataset": "mathy"}))
    for step, records in ROLLOUTS.items():
        _write_jsonl(results / "r1" / "grpo" / "rollouts" / f"step_{step:06d}.jsonl",
                     [{**record, "finish_reason": "stop"} for record in records])
    return results


def test_audit_counts_lenient_only_rewards_caps_and_degenerate_patterns(results, capsys):
    assert cli_main(["audit-rollouts", "r1", "--results", str(results)]) == 0
    text = capsys.readouterr().out
    assert "rollouts: 7 (5 math; 1 other tasks skipped; 1 ids not in the data)" in text
    assert "rewarded under lenient but not strict: 1 (last_number: 1)" in text
    assert "rejected by a cap before extraction: length: 1, depth: 0, boxes: 1, answer_tags: 0" in text
    report = json.loads((results / "r1" / "grpo" / "rollouts_audit.json").read_text())
    assert report["num_equal_strict"] == 1 and report["num_equal_lenient"] == 2
    assert report["lenient_only"][0]["step"] == 0 and report["lenient_only"][0]["answer"] == "4"
    assert report["unknown_ids"] == ["q9"]
    patterns = {pattern["pattern"]: pattern["count"] for pattern in report["degenerate_patterns"]}
    assert patterns["the answer is 1"] == 1 and report["num_degenerate"] == 3


def test_a_long_sum_ending_in_the_gold_is_capped_not_paid_by_the_lenient_policy():
    # 150,000 "1+" units and the gold: 300,001 characters, over the 200,000-character cap.
    report = audit_records([{"id": "q1", "step": 3, "completion": "1+" * 150_000 + "4"}], {"q1": ROWS[0]})
    assert report["rejected_by_cap"]["length"] == 1 and report["num_lenient_only"] == 0


def test_audit_reads_an_explicit_data_file_and_writes_where_asked(results, tmp_path, capsys):
    out = tmp_path / "audit.json"
    rollouts = results / "r1" / "grpo" / "rollouts"
    assert cli_main(["audit-rollouts", str(rollouts), "--data", str(results / "data" / "mathy" / "train.jsonl"),
                     "--out", str(out), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out.read_text()) and printed["num_lenient_only"] == 1


def test_audit_without_rollouts_or_data_says_what_to_pass(tmp_path, capsys):
    assert cli_main(["audit-rollouts", "nothing-here", "--results", str(tmp_path)]) == 2
    assert "no rollouts for 'nothing-here'" in capsys.readouterr().err
    rollouts = tmp_path / "r2" / "grpo" / "rollouts"
    _write_jsonl(rollouts / "step_000000.jsonl", [{"id": "q1", "completion": "x"}])
    with pytest.raises(AuditError, match="pass --data"):
        find_data_path(find_rollouts_dir(str(rollouts)))


def test_repetition_measures():
    assert compression_ratio("1+" * 5000) < 0.05 < compression_ratio("The area is 12, since 3 times 4 is 12.")
    assert is_repetitive("ab" * 300) and not is_repetitive("short")
    assert repeated_unit("intro\n" + "wait, let me check\n" * 5) == "wait, let me check"


# ---------------------------------------------------------------------------------------------
# r1zero verify --policy / --explain
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def verify_rows(tmp_path):
    path = tmp_path / "rows.jsonl"
    _write_jsonl(path, [{"gold": "4", "pred": "<answer>4</answer>", "equal": True},
                        {"gold": "4", "pred": "I have no idea. 4", "equal": True},
                        {"gold": "4", "pred": "(" * 100 + "4", "equal": False}])
    return str(path)


def test_verify_defaults_to_the_strict_policy_of_the_math_reward(verify_rows, capsys):
    assert cli_main(["verify", verify_rows, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["policy"] == "strict" and report["reward"] == "math"
    assert report["num_equal"] == 1 and report["num_rejected_by_cap"] == 1 and report["num_no_answer"] == 1


def test_verify_policy_lenient_pays_the_last_number(verify_rows, capsys):
    assert cli_main(["verify", verify_rows, "--json", "--policy", "lenient"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["reward"] == "math_lenient" and report["num_equal"] == 2 and report["agreement"] == 1.0


def test_verify_explain_prints_the_deciding_rule_of_each_row(verify_rows, capsys):
    assert cli_main(["verify", verify_rows, "--explain"]) == 0
    text = capsys.readouterr().out
    assert "line 1: equal by answer_tag -> numbers equal" in text
    assert "line 2: not equal by none -> no answer found in prediction" in text
    assert "line 3: not equal by cap -> rejected by the depth cap" in text
    assert "policy: strict (the 'math' reward)" in text


def test_verify_unknown_policy_lists_the_known_ones(verify_rows, capsys):
    with pytest.raises(SystemExit):
        cli_main(["verify", verify_rows, "--policy", "generous"])
    assert "invalid choice: 'generous'" in capsys.readouterr().err
