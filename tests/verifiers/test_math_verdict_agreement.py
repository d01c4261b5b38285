"""One verdict: the registry's math rewards (the path training and evaluation take) and
``r1zero verify --policy`` agree on every peer case and every hostile completion.

The registry is called one completion at a time through ``safe_reward`` (as the scorer does);
verify reads a JSONL file and judges it in a batch. Both must give the same 0/1 for each row,
under the ``strict`` policy (reward ``math``) and the ``lenient`` one (``math_lenient``); on the
hostile set they must also give the verdict the fixture states.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from hostile_math import load_hostile_cases
from verifiers.math_policy import reward_name
from verifiers.registry import safe_reward
from verifiers.verify_cli import run_verify

REPO_ROOT = Path(__file__).resolve().parents[2]
PEER_FILES = [path for path in (REPO_ROOT / "data" / "fixtures" / "peer_cases" / "math_equivalence.jsonl",
                                Path("/work/shared/peer-cases/math_equivalence.jsonl")) if path.is_file()]
POLICIES_CHECKED = ("strict", "lenient")


def _verify_verdicts(rows: list[dict], policy: str, tmp_path: Path) -> list[bool]:
    path = tmp_path / f"rows-{policy}.jsonl"
    path.write_text("".join(json.dumps({"gold": row["gold"], "pred": row["pred"]}) + "\n" for row in rows),
                    encoding="utf-8")
    out = io.StringIO()
    assert run_verify(str(path), as_json=True, out=out, policy=policy, explain=True) == 0
    report = json.loads(out.getvalue())
    assert report["num_rows"] == len(rows) and report["policy"] == policy
    return [item["equal"] for item in report["rows"]]


def _registry_verdicts(rows: list[dict], policy: str) -> list[bool]:
    name = reward_name(policy)
    return [safe_reward(name, row["pred"], {"task": "math", "answer": row["gold"]}) == 1.0 for row in rows]


@pytest.mark.parametrize("policy", POLICIES_CHECKED)
@pytest.mark.parametrize("path", PEER_FILES, ids=[path.parent.name + "/" + path.name for path in PEER_FILES])
def test_registry_and_verify_agree_on_every_peer_case(path, policy, tmp_path):
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(rows) == 394
    registry, verify = _registry_verdicts(rows, policy), _verify_verdicts(rows, policy, tmp_path)
    differing = [index for index, (a, b) in enumerate(zip(registry, verify)) if a != b]
    assert not differing, f"registry and verify differ on rows {differing[:20]}"
    assert any(registry) and not all(registry)  # a real mix of verdicts, not a constant


@pytest.fixture(scope="module")
def hostile():
    return load_hostile_cases()


def test_the_hostile_set_covers_every_cap_and_both_policies(hostile):
    names = {case["name"] for case in hostile}
    assert {"nested-brackets", "nested-fractions", "megabyte-sum", "unclosed-boxes", "answer-tag-flood"} <= names
    assert any(case["lenient"] and not case["strict"] for case in hostile)
    assert max(len(case["completion"]) for case in hostile) >= 1_000_000


@pytest.mark.parametrize("policy", POLICIES_CHECKED)
def test_registry_and_verify_agree_on_every_hostile_completion(hostile, policy, tmp_path):
    rows = [{"gold": case["gold"], "pred": case["completion"]} for case in hostile]
    registry, verify = _registry_verdicts(rows, policy), _verify_verdicts(rows, policy, tmp_path)
    expected = [case[policy] for case in hostile]
    for case, got_registry, got_verify, want in zip(hostile, registry, verify, expected):
        assert got_registry == got_verify == want, (case["name"], case["why"], got_registry, got_verify)


def test_every_hostile_check_takes_the_same_path_in_fresh_workers(hostile):
    # Cost is bounded by size before evaluation, so a check never depends on which worker (and
    # which warm cache) it lands in: fresh workers give the same verdict and reason, and no
    # hostile check is decided by a timeout.
    from verifiers.math_answer import judge, reset_workers

    passes = []
    for _ in range(2):
        reset_workers()
        passes.append([(j.equal, j.reason) for j in (judge(case["completion"], case["gold"]) for case in hostile)])
    assert passes[0] == passes[1]
    assert not [case["name"] for case, (_, reason) in zip(hostile, passes[0]) if "timeout" in reason]
