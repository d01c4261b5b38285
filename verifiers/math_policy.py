"""What the math reward accepts: one named policy object for training, evaluation and audit.

A ``MathPolicy`` fixes every decision between a completion and a verdict: where the answer may
be taken from (extraction fallbacks), the caps that reject degenerate output before anything is
extracted, and how the extracted answer is compared with the gold (tolerance, percent signs,
equation chains, other-script digits, symbolic comparison). The registry's ``math`` reward, the
evaluation stage (through the same registry) and ``r1zero verify`` all call
``verifiers.math_answer.judge`` with one of the policies below, so they cannot disagree.
docs/verifiers.md has the table of decisions and their defaults.

Each policy is registered as a reward: ``math`` is ``strict``, every other policy is
``math_<name>`` (``math_lenient``...), so a config picks a policy per task by reward name.

Example:
    >>> POLICIES["strict"].fallbacks
    ()
    >>> reward_name("lenient")
    'math_lenient'
    >>> degenerate_reason("\\\\frac{" * 100 + "1", POLICIES["strict"])
    'depth'
"""

from __future__ import annotations

import dataclasses
import re

from verifiers.math_parse import (
    EQUATION_CHAIN_MODES,
    MAX_POWER_DIGITS,
    MAX_SYMBOLIC_EXPONENT,
    PERCENT_MODES,
    CompareOptions,
)

# Extraction fallbacks, tried in order after the answer tag and the last \boxed{} (see
# verifiers.math_answer.extract_answer): "answer_is" (the answer is X / Answer: X), "last_math"
# (the last $..$ span), "last_number", "whole" (the text itself when it reads as a bare answer).
FALLBACK_NAMES = ("answer_is", "last_math", "last_number", "whole")
# The reason names a cap reports, as logged: reward/math_rejected_<reason>.
CAP_REASONS = ("length", "depth", "boxes", "answer_tags")
_BRACKETS = re.compile(r"[^()\[\]{}]+")


@dataclasses.dataclass(frozen=True)
class MathPolicy:
    """Every decision of the math reward, with its default (docs/verifiers.md has the table).

    Extraction: the last ``<answer>`` tag, else the last ``\\boxed{}``, else ``fallbacks`` in
    order. ``last_number`` is used only when the gold is a plain number
    (``last_number_needs_numeric_gold``): "the last number in the text" means nothing for an
    interval or a set.

    Caps (checked on the raw completion, before any extraction; tripping one gives reward 0 and
    a counted reason): ``max_scan_chars`` characters, ``max_nesting_depth`` of ( [ {,
    ``max_boxes`` \\boxed/\\fbox commands, ``max_answer_tags`` <answer> tags.

    Comparison: see ``verifiers.math_parse.CompareOptions`` for each field.

    Example:
        >>> dataclasses.replace(POLICIES["strict"], rel_tol=0.0).compare_options().rel_tol
        0.0
    """

    name: str
    description: str
    fallbacks: tuple[str, ...] = ()
    last_number_needs_numeric_gold: bool = True
    max_scan_chars: int = 200_000
    max_nesting_depth: int = 64
    max_boxes: int = 32
    max_answer_tags: int = 8
    # The comparison's defaults are CompareOptions' own (one place to change them).
    rel_tol: float = CompareOptions.rel_tol
    abs_tol: float = CompareOptions.abs_tol
    percent: str = CompareOptions.percent
    equation_chains: str = CompareOptions.equation_chains
    unicode_digits: bool = CompareOptions.unicode_digits
    symbolic: bool = CompareOptions.symbolic

    def __post_init__(self):
        unknown = [name for name in self.fallbacks if name not in FALLBACK_NAMES]
        if unknown:
            raise ValueError(f"policy {self.name!r}: unknown fallbacks {unknown}; known: {list(FALLBACK_NAMES)}")
        for cap in ("max_scan_chars", "max_nesting_depth", "max_boxes", "max_answer_tags"):
            value = getattr(self, cap)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"policy {self.name!r}: {cap} must be a positive integer, got {value!r}")
        self.compare_options()  # validates tolerance, percent and equation_chains

    def compare_options(self) -> CompareOptions:
        """The comparison half of the policy, as the worker processes receive it."""
        return CompareOptions(rel_tol=self.rel_tol, abs_tol=self.abs_tol, percent=self.percent,
                              equation_chains=self.equation_chains, unicode_digits=self.unicode_digits,
                              symbolic=self.symbolic)

    def as_record(self) -> dict:
        """Every field, JSON-ready (for meta.json / scores.json)."""
        record = dataclasses.asdict(self)
        record["fallbacks"] = list(self.fallbacks)
        return record


_STRICT = MathPolicy(
    name="strict",
    description="R1-Zero format: the answer tag, else the last \\boxed{}; no other fallback",
)

POLICIES: dict[str, MathPolicy] = {
    "strict": _STRICT,
    "lenient": dataclasses.replace(
        _STRICT, name="lenient",
        description="strict, then 'the answer is X', then the last number (only for a plain-number gold)",
        fallbacks=("answer_is", "last_number")),
    "exact": dataclasses.replace(
        _STRICT, name="exact",
        description="strict extraction; decimals must equal the gold exactly (no tolerance)",
        rel_tol=0.0, abs_tol=0.0),
    "text": dataclasses.replace(
        _STRICT, name="text",
        description="for comparing two free texts (solutions, audits): the whole text, 'the answer is X', "
                    "the last math span, the last number",
        fallbacks=("whole", "answer_is", "last_math", "last_number")),
}
DEFAULT_POLICY = "strict"


def get_policy(name: str) -> MathPolicy:
    """The named policy; an unknown name raises ValueError listing the known ones.

    Example:
        >>> get_policy("lenient").fallbacks
        ('answer_is', 'last_number')
    """
    if name not in POLICIES:
        raise ValueError(f"unknown math policy {name!r}; known policies: {', '.join(POLICIES)}")
    return POLICIES[name]


def reward_name(policy_name: str) -> str:
    """The registry name of a policy's reward: ``math`` for strict, ``math_<name>`` otherwise."""
    return "math" if policy_name == DEFAULT_POLICY else f"math_{policy_name}"


def policy_of_reward(name: str) -> str | None:
    """The policy behind a registered math reward name, or None for any other reward.

    Example:
        >>> policy_of_reward("math_lenient"), policy_of_reward("countdown")
        ('lenient', None)
    """
    for policy_name in POLICIES:
        if reward_name(policy_name) == name:
            return policy_name
    return None


def nesting_depth(text: str) -> int:
    """Deepest nesting of ( [ { in a text; a closer without an opener is ignored.

    Example:
        >>> nesting_depth("f(g[x]) + {1}")
        2
    """
    depth = deepest = 0
    for char in _BRACKETS.sub("", text):  # only the brackets: the loop runs over far fewer chars
        if char in "([{":
            depth += 1
            deepest = max(deepest, depth)
        elif depth:
            depth -= 1
    return deepest


def degenerate_reason(completion: str, policy: MathPolicy) -> str | None:
    """The cap a completion trips (one of ``CAP_REASONS``), or None. Linear in the length,
    checked before any extraction, so no fallback can pay for a degenerate completion.

    Example:
        >>> degenerate_reason("<answer>4</answer>", POLICIES["strict"]) is None
        True
        >>> degenerate_reason("1+" * 200_000 + "1", POLICIES["lenient"])
        'length'
    """
    if len(completion) > policy.max_scan_chars:
        return "length"
    if completion.count("\\boxed") + completion.count("\\fbox") > policy.max_boxes:
        return "boxes"
    if completion.count("<answer>") > policy.max_answer_tags:
        return "answer_tags"
    if nesting_depth(completion) > policy.max_nesting_depth:
        return "depth"
    return None


def rejection_parts(completion: str, reward_names) -> dict[str, float]:
    """``{"math_rejected_<reason>": 0.0 | 1.0}`` for every cap reason when ``reward_names``
    include a math reward (checked under the first one's policy), else ``{}``. The scorer adds
    these to each completion's reward parts, so the training log gets
    ``reward/math_rejected_<reason>``: the fraction of the step's completions a cap rejected.

    Example:
        >>> rejection_parts("(" * 100, ["math", "format_strict"])["math_rejected_depth"]
        1.0
        >>> rejection_parts("(" * 100, ["countdown"])
        {}
    """
    policy_name = next((policy_of_reward(name) for name in reward_names if policy_of_reward(name)), None)
    if policy_name is None:
        return {}
    reason = degenerate_reason(completion, POLICIES[policy_name]) if isinstance(completion, str) else None
    return {f"math_rejected_{cap}": float(cap == reason) for cap in CAP_REASONS}


def policy_provenance(names: list[str] | tuple[str, ...] | None = None) -> dict:
    """The policies behind the given reward names (every math policy when None), with their
    settings and the fixed cost bounds, for an artefact's provenance.

    Example:
        >>> record = policy_provenance(["math", "format_strict"])
        >>> list(record["policies"]), record["rewards"]
        (['strict'], {'math': 'strict'})
    """
    if names is None:
        rewards = {reward_name(policy_name): policy_name for policy_name in POLICIES}
    else:
        rewards = {name: policy_of_reward(name) for name in names if policy_of_reward(name)}
    return {
        "rewards": rewards,
        "policies": {policy_name: POLICIES[policy_name].as_record() for policy_name in dict.fromkeys(rewards.values())},
        "cost_bounds": {"max_power_digits": MAX_POWER_DIGITS, "max_symbolic_exponent": MAX_SYMBOLIC_EXPONENT},
        "options": {"percent": list(PERCENT_MODES), "equation_chains": list(EQUATION_CHAIN_MODES)},
    }
