"""The policy table of docs/verifiers.md, row by row: one accepted and one rejected example each.

Every row of the table names an id; ``ROWS`` below holds, per id, a completion the policy pays
for and one it does not, with the policy each is judged under (the default, ``strict``, unless
the row is about another policy or option). A test checks that the table and ``ROWS`` list the
same ids, so a decision cannot be documented without a test, or tested without a row.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from verifiers.math_answer import judge
from verifiers.math_parse import CompareOptions
from verifiers.math_policy import (
    CAP_REASONS,
    POLICIES,
    MathPolicy,
    degenerate_reason,
    get_policy,
    nesting_depth,
    policy_of_reward,
    policy_provenance,
    rejection_parts,
    reward_name,
)
from verifiers.registry import REWARDS

DOC = Path(__file__).resolve().parents[2] / "docs" / "verifiers.md"
STRICT = POLICIES["strict"]
B = "\\"


def variant(**changes) -> MathPolicy:
    return dataclasses.replace(STRICT, name="test", **changes)


# id -> ((policy, completion, gold) accepted, (policy, completion, gold) rejected)
ROWS = {
    "extraction": ((STRICT, "<think>2+2</think><answer>4</answer>", "4"),
                   (STRICT, "so the answer is 4", "4")),
    "last-box": ((STRICT, f"first {B}boxed{{3}}, then {B}boxed{{4}}", "4"),
                 (STRICT, f"first {B}boxed{{3}}, then {B}boxed{{4}}", "3")),
    "think": ((STRICT, f"<think>{B}boxed{{3}}</think><answer>4</answer>", "4"),
              (STRICT, f"<think>{B}boxed{{4}}</think> no idea", "4")),
    "fallbacks": ((POLICIES["lenient"], "so the answer is 4.", "4"),
                  (STRICT, "so the answer is 4.", "4")),
    "last-number": ((POLICIES["lenient"], "I think 12 apples, so 4", "4"),
                    (POLICIES["lenient"], "I think 0 and so 1", "(0, 1)")),
    "gold": ((STRICT, "<answer>0.5</answer>", f"so the answer is ${B}frac{{1}}{{2}}$."),
             (STRICT, "<answer>1</answer>", "(0, 1)")),
    "cap-length": ((STRICT, " " * 150_000 + "<answer>4</answer>", "4"),
                   (STRICT, " " * 200_001 + "<answer>4</answer>", "4")),
    "cap-depth": ((STRICT, "<answer>((((4))))</answer>", "4"),
                  (STRICT, "(" * 65 + "<answer>4</answer>", "4")),
    "cap-boxes": ((STRICT, f"first {B}boxed{{1}}, then {B}boxed{{4}}", "4"),
                  (STRICT, f"{B}boxed{{1}} then " * 33 + f"{B}boxed{{4}}", "4")),
    "cap-answer-tags": ((STRICT, "<answer>3</answer> wait <answer>4</answer>", "4"),
                        (STRICT, "<answer>" * 9 + "4</answer>", "4")),
    "tolerance": ((STRICT, "<answer>0.50001</answer>", "0.5"),
                  (STRICT, "<answer>0.5001</answer>", "0.5")),
    "tolerance-pi": ((STRICT, "<answer>3.14159</answer>", f"{B}pi"),
                     (POLICIES["exact"], "<answer>3.14159</answer>", f"{B}pi")),
    "exact-values": ((STRICT, f"<answer>{B}frac{{{B}sqrt{{2}}}}{{2}}</answer>", f"{B}frac{{1}}{{{B}sqrt{{2}}}}"),
                     (STRICT, "<answer>1112112</answer>", "1112122")),
    "percent": ((STRICT, "<answer>50%</answer>", "50"),
                (STRICT, "<answer>25%</answer>", "0.25")),
    "percent-either": ((variant(percent="either"), "<answer>25%</answer>", "0.25"),
                       (variant(percent="either"), "<answer>25%</answer>", "0.5")),
    "equation-chains": ((STRICT, "<answer>x = 2+2 = 4</answer>", "4"),
                        (STRICT, "<answer>x = 4 = 5</answer>", "4")),
    "equation-chains-refuse": ((variant(equation_chains="refuse"), "<answer>x = 4</answer>", "4"),
                               (variant(equation_chains="refuse"), "<answer>x = 2+2 = 4</answer>", "4")),
    "unicode-digits": ((STRICT, "<answer>４２</answer>", "42"),
                       (variant(unicode_digits=False), "<answer>４２</answer>", "42")),
    "inequalities": ((STRICT, "<answer>1 < x</answer>", "x > 1"),
                     (STRICT, f"<answer>x {B}geq 1</answer>", "x > 1")),
    "rational-expressions": ((STRICT, f"<answer>{B}frac{{x^2-1}}{{x-1}}</answer>", "x+1"),
                             (STRICT, f"<answer>{B}frac{{x^2-1}}{{x+1}}</answer>", "x+1")),
    "symbolic-off": ((variant(symbolic=False), "<answer>1/2</answer>", "0.5"),
                     (variant(symbolic=False), "<answer>x*x</answer>", "x^2")),
    "undefined": ((STRICT, f"<answer>{B}frac{{0}}{{1}}</answer>", "0"),
                  (STRICT, f"<answer>{B}frac{{0}}{{0}}</answer>", f"{B}frac{{0}}{{0}}")),
    "cost": ((STRICT, "<answer>(x+1)^{64}</answer>", "(1+x)^{64}"),
             (STRICT, "<answer>(x+1)^{65}</answer>", "(1+x)^{65}")),
}


@pytest.mark.parametrize("row", sorted(ROWS))
def test_policy_row_accepts_its_accepted_example(row):
    policy, completion, gold = ROWS[row][0]
    judgement = judge(completion, gold, policy)
    assert judgement.equal, (row, judgement)


@pytest.mark.parametrize("row", sorted(ROWS))
def test_policy_row_rejects_its_rejected_example(row):
    policy, completion, gold = ROWS[row][1]
    judgement = judge(completion, gold, policy)
    assert not judgement.equal, (row, judgement)


def test_every_documented_row_is_tested_and_every_tested_row_is_documented():
    decisions = DOC.read_text(encoding="utf-8").split("## The decisions", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `([a-z-]+)` \|", decisions, flags=re.M))
    assert documented == set(ROWS), (sorted(documented - set(ROWS)), sorted(set(ROWS) - documented))


def test_documented_defaults_are_the_code_defaults():
    text = DOC.read_text(encoding="utf-8")
    for field in ("max_scan_chars", "max_nesting_depth", "max_boxes", "max_answer_tags", "rel_tol", "abs_tol",
                  "percent", "equation_chains", "unicode_digits", "symbolic"):
        value = getattr(STRICT, field)
        assert f"`{field}={value}`" in text, f"docs/verifiers.md must state the default `{field}={value}`"


# ---------------------------------------------------------------------------------------------
# The policy objects, caps and provenance
# ---------------------------------------------------------------------------------------------


def test_every_policy_is_a_registered_reward():
    for name in POLICIES:
        assert reward_name(name) in REWARDS
        assert policy_of_reward(reward_name(name)) == name
    assert reward_name("strict") == "math"


def test_strict_is_the_default_with_no_fallback_and_lenient_adds_the_last_number():
    assert STRICT.fallbacks == ()
    assert POLICIES["lenient"].fallbacks == ("answer_is", "last_number")
    assert POLICIES["exact"].rel_tol == 0.0 and POLICIES["exact"].abs_tol == 0.0


@pytest.mark.parametrize("changes,message", [
    ({"fallbacks": ("everything",)}, "unknown fallbacks"),
    ({"max_nesting_depth": 0}, "max_nesting_depth must be a positive integer"),
    ({"rel_tol": -1e-3}, "rel_tol must be a finite number >= 0"),
    ({"rel_tol": 1.0}, "rel_tol must be below 1"),
    ({"percent": "sometimes"}, "percent must be one of"),
    ({"equation_chains": "first"}, "equation_chains must be one of"),
])
def test_a_bad_policy_names_the_field(changes, message):
    with pytest.raises(ValueError, match=message):
        variant(**changes)


def test_unknown_policy_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="known policies: strict, lenient, exact, text"):
        get_policy("generous")


@pytest.mark.parametrize("completion,reason", [
    ("x" * 200_001, "length"),
    ("(" * 65, "depth"),
    (f"{B}boxed{{1}}" * 33, "boxes"),
    ("<answer>" * 9, "answer_tags"),
    (")" * 1000 + "(" * 64, None),  # closers without openers do not nest
    ("<answer>4</answer>", None),
], ids=["length", "depth", "boxes", "answer-tags", "closers", "ordinary"])
def test_caps_name_their_reason(completion, reason):
    assert degenerate_reason(completion, STRICT) == reason


def test_a_capped_completion_gets_zero_with_the_reason_even_when_its_last_number_is_the_gold():
    judgement = judge("(" * 100 + " 4", "4", POLICIES["lenient"])
    assert not judgement.equal and judgement.rejected == "depth" and judgement.extracted_by == "cap"


def test_nesting_depth_counts_only_brackets():
    assert nesting_depth("a(b[c{d}])e") == 3 and nesting_depth("no brackets") == 0


def test_rejection_parts_name_every_cap_for_math_rewards_only():
    parts = rejection_parts(f"{B}boxed{{" * 40, ["math_lenient"])
    assert parts == {f"math_rejected_{cap}": float(cap == "boxes") for cap in CAP_REASONS}
    assert rejection_parts("anything", ["countdown", "format_strict"]) == {}


def test_policy_provenance_records_the_policies_behind_the_rewards():
    record = policy_provenance(["math", "math_lenient", "format_strict"])
    assert record["rewards"] == {"math": "strict", "math_lenient": "lenient"}
    assert record["policies"]["lenient"]["fallbacks"] == ["answer_is", "last_number"]
    assert set(policy_provenance()["policies"]) == set(POLICIES)


def test_compare_options_travel_to_the_worker_unchanged():
    options = variant(rel_tol=0.0, percent="either", equation_chains="refuse").compare_options()
    assert CompareOptions.from_payload(options.to_payload()) == options


def test_explain_names_the_rule_that_decided():
    assert judge("<answer>0.5</answer>", "1/2").rule == "answer_tag -> numbers equal"
    assert judge("(" * 100, "1").rule == "cap -> rejected by the depth cap"
    assert judge("no answer here", "1").rule == "none -> no answer found in prediction"
