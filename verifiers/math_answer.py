"""Math answer verification: extract the final answer, compare it with the gold, bounded.

Pipeline (Math-Verify's shape, our own code): ``judge`` is the one verdict path that the
rewards, the evaluation and ``r1zero verify`` share. Under a named ``MathPolicy``
(``verifiers.math_policy``) it rejects degenerate completions by cap, then ``extract_answer``
finds the answer in a completion; ``check_equivalence`` first tries a cheap in-process path
that cannot hang (string and plain-number normalisation, choice letters), and otherwise sends
the pair to a pool of
worker processes (``verifiers.bounded``) that parse with a grammar and compare with sympy under
a hard time and memory limit. Every failure (timeout, memory, parse error) is "not equal" with a
reason; nothing here raises to the caller.

Example:
    >>> extract_answer("<think>maybe 3</think><answer>\\\\boxed{4}</answer>")
    '4'
    >>> is_equivalent("0.5", "\\\\frac{1}{2}")
    True
    >>> math_reward("<answer>2</answer>", {"answer": "3"})
    0.0
"""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

from verifiers.bounded import BoundedPool, close_shared_pools, shared_pool
from verifiers.math_parse import (
    DEFAULT_OPTIONS,
    MAX_ANSWER_CHARS,
    CompareOptions,
    clean_answer,
    fast_verdict,
    parse_plain_number,
)
from verifiers.math_policy import POLICIES, MathPolicy, degenerate_reason, get_policy, reward_name

WORKER_TARGET = "verifiers.math_parse:compare_request"
WORKER_INIT = "verifiers.math_parse:warm_up"
# Memory per worker: python + sympy + the ANTLR parser take about 150 MB of address space; the
# rest is headroom for one comparison. A comparison needing more is refused, not swapped.
WORKER_MEMORY_MB = 1024
# Workers for single calls (is_equivalent / math_reward); batches size their own pool.
DEFAULT_NUM_WORKERS = 2
# A batch without num_workers uses one worker per CPU, up to this many (each holds ~100 MB).
MAX_DEFAULT_BATCH_WORKERS = 8
# The fallbacks of the lenient and text policies (verifiers.math_policy), for callers of
# extract_answer; the rewards take theirs from their policy.
DEFAULT_FALLBACKS = POLICIES["lenient"].fallbacks
TEXT_FALLBACKS = POLICIES["text"].fallbacks


@dataclass(frozen=True)
class Verdict:
    """Result of one comparison: ``equal`` and a short human-readable ``reason``."""

    equal: bool
    reason: str


# ---------------------------------------------------------------------------------------------
# Extraction
# ---------------------------------------------------------------------------------------------

_BOX_START = re.compile(r"\\(?:boxed|fbox)\b\s*")
# What may sit between two boxes of one multi-part answer: "\boxed{1} and \boxed{2}".
_BOX_SEPARATOR = re.compile(
    r"(?:[\s,;$.]|\\quad|\\qquad|\\[\[\]()]|\\text\{[^{}]*\}|\b(?:and|or)\b)*")
# Not inside a tag: "<answer>9" has no "answer is" phrase.
_ANSWER_IS = re.compile(r"(?i)(?<![</])\b(?:final answer|the answer|answer)\b(?!>)\s*(?:is\b|:|：)?\s*:?")
# Math delimiters: $$..$$, $..$ (one line; an escaped \$ is currency), \(..\) (one line), \[..\]
_MATH_DELIMITER = re.compile(r"(?<!\\)\$\$|(?<!\\)\$|\\\(|\\\)|\\\[|\\\]")
_MATH_CLOSER = {"$$": "$$", "$": "$", "\\(": "\\)", "\\[": "\\]"}
_LAST_NUMBER = re.compile(r"\\[dt]?frac\{-?\d+\}\{\d+\}|"
                          r"(?<![A-Za-z0-9_.])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:[.,]\d+)?(?:\s*/\s*\d+)?")
_PROSE_WORD = re.compile(r"[A-Za-z]{4,}")
_ALLOWED_WORDS = {"percent", "percentage", "units", "unit", "meters", "miles", "inches", "feet",
                  "degrees", "infty", "infinity", "yuan", "dollars", "cents", "hours", "minutes",
                  "even", "true", "false"}


def strip_think(text: str) -> str:
    """Remove reasoning: closed ``<think>`` blocks, everything before a lone ``</think>`` (the
    prompt opened it), and everything after an unclosed ``<think>`` (reasoning never ended).

    One left-to-right pass with ``str.find``: a regex like ``<think>.*?</think>`` rescans the
    rest of the text from every unclosed tag, which is quadratic on hostile completions.

    Example:
        >>> strip_think("<think>x=3</think>so 4")
        ' so 4'
    """
    position, visible = 0, []
    first_close, first_open = text.find("</think>"), text.find("<think>")
    if first_close != -1 and (first_open == -1 or first_close < first_open):
        position = first_close + len("</think>")
    while position < len(text):
        start = text.find("<think>", position)
        if start == -1:
            visible.append(text[position:])
            break
        visible.append(text[position:start])
        end = text.find("</think>", start)
        if end == -1:
            break
        position = end + len("</think>")
    return " ".join(visible)


def _closing_braces(text: str) -> dict[int, int]:
    """Index of each ``{`` -> index of its ``}``, in one pass (nested boxes stay linear)."""
    closing, stack = {}, []
    for index, char in enumerate(text):
        if char == "{":
            stack.append(index)
        elif char == "}" and stack:
            closing[stack.pop()] = index
    return closing


def _box_argument(text: str, start: int, closing: dict[int, int]) -> tuple[str, int] | None:
    r"""The argument of a box starting at ``start`` (after ``\boxed``): ``{...}`` or one token."""
    if start < len(text) and text[start] == "{":
        end = closing.get(start)
        return (text[start + 1:end], end + 1) if end is not None else None
    token = re.match(r"[^\s$}]+", text[start:start + 200])
    return (token.group(0), start + token.end()) if token else None


def find_boxed(text: str) -> str | None:
    r"""The last boxed answer; adjacent boxes joined by separators form one list answer.

    Example:
        >>> find_boxed(r"so \boxed{1} and \boxed{2}.")
        '1, 2'
        >>> find_boxed(r"\boxed 5")
        '5'
    """
    closing = _closing_braces(text)
    groups: list[list[str]] = []
    previous_end = None
    for match in _BOX_START.finditer(text):
        if previous_end is not None and match.start() < previous_end:
            continue  # a box inside the previous box's argument belongs to it
        argument = _box_argument(text, match.end(), closing)
        if argument is None:
            continue
        content, end = argument
        between = text[previous_end:match.start()] if previous_end is not None else None
        if between is not None and len(between) < 200 and _BOX_SEPARATOR.fullmatch(between):
            groups[-1].append(content)
        else:
            groups.append([content])
        previous_end = end
    return ", ".join(groups[-1]) if groups else None


def math_spans(text: str) -> list[tuple[int, str]]:
    r"""(start, content) of each math span, left to right, in one pass over the delimiters.

    Example:
        >>> math_spans(r"so $x=1$ and \[ y \]")
        [(3, 'x=1'), (13, ' y ')]
    """
    spans: list[tuple[int, str]] = []
    opener, opener_start, content_start, next_newline = None, 0, 0, -1
    for match in _MATH_DELIMITER.finditer(text):
        token = match.group()
        if opener is not None:
            if opener in ("$", "\\(") and -1 < next_newline < match.start():
                opener = None  # inline math never spans lines: drop the stray opener
            elif token == _MATH_CLOSER[opener] or (opener == "$" and token == "$$"):
                spans.append((opener_start, text[content_start:match.start()]))
                opener = None
                continue
            else:
                continue
        if token in _MATH_CLOSER:
            opener, opener_start, content_start = token, match.start(), match.end()
            next_newline = text.find("\n", content_start)
    return spans


def _answer_is(text: str) -> str | None:
    """X in a closing "the (final) answer is X" / "Answer: X"."""
    matches = list(_ANSWER_IS.finditer(text))
    if not matches:
        return None
    rest = text[matches[-1].end():].lstrip()
    spans = math_spans(rest[:5000]) if rest[:1] in ("$", "\\") else []
    if spans and spans[0][0] == 0:  # "Answer \[ 9 \]": a display block may span lines
        return spans[0][1].strip()
    rest = re.split(r"\.(?:\s|$)|\n|\bI hope\b", rest, maxsplit=1)[0].strip()
    rest = re.split(r"\bis\b", rest)[-1]  # "Answer: the volume of $V$ is 120" -> "120"
    span = _last_math(rest)
    return span if span else (rest.strip() or None)


def _last_math(text: str) -> str | None:
    """The last non-empty math span that is not prose (a stray $ pair can enclose words)."""
    for _, span in reversed(math_spans(text)):
        if span.strip() and not _has_prose(span):
            return span.strip()
    return None


def _last_number(text: str) -> str | None:
    numbers = _LAST_NUMBER.findall(text)
    return numbers[-1] if numbers else None


def _has_prose(text: str) -> bool:
    """Words outside LaTeX commands: a long word, two short words in a row, or any non-Latin
    letters (a sentence in another language)."""
    bare = re.sub(r"\\[A-Za-z]+\s*(\{[^{}]*\})?|_\{[^{}]*\}", " ", text)
    # All-capital words are names of points or segments (ABCD, MBCN), not prose.
    words = {word.lower() for word in _PROSE_WORD.findall(bare) if not word.isupper()} - _ALLOWED_WORDS
    short_words = [word for word in re.findall(r"[A-Za-z']{2,}(?=\s+[A-Za-z']{2,})", bare)
                   if word.lower() not in ("and", "or")]
    other_script = re.search(r"[^\W\d_A-Za-z\u00b2\u00b3\u00b0\u03c0]", bare)
    return bool(words or short_words or other_script)


def _whole(text: str) -> str | None:
    """The whole text when it reads as a bare answer (no prose), else None."""
    stripped = text.strip()
    return stripped if stripped and len(stripped) <= 300 and not _has_prose(stripped) else None


_FALLBACKS = {"answer_is": _answer_is, "last_math": _last_math, "last_number": _last_number,
              "whole": _whole}


def extract_answer(text: str, fallbacks: tuple[str, ...] = DEFAULT_FALLBACKS) -> str | None:
    r"""The final answer in a completion, or None.

    Order: the content of the last ``<answer>...</answer>`` (its boxed content when it has a
    box); else the last ``\boxed{..}``/``\fbox{..}``/``\boxed 5`` group; else each fallback in
    turn: ``answer_is`` ("the answer is X"), ``last_math`` (last $..$, \(..\), \[..\] span),
    ``last_number``, ``whole`` (the text itself when it has no prose). Reasoning inside
    ``<think>`` never counts.

    Example:
        >>> extract_answer("<think>\\boxed{1}</think> The answer is 7.")
        '7'
        >>> extract_answer("<think>the answer is 1</think>") is None
        True
    """
    return extract_answer_with_source(text, fallbacks)[0]


def extract_answer_with_source(text: str, fallbacks: tuple[str, ...] = DEFAULT_FALLBACKS
                               ) -> tuple[str | None, str]:
    r"""``extract_answer`` and the rule that found it: ``answer_tag``, ``boxed``, a fallback's
    name, or ``none``.

    Example:
        >>> extract_answer_with_source("so \\boxed{3}", ())
        ('3', 'boxed')
    """
    if not isinstance(text, str):
        return None, "none"
    # Chat-template tokens end the answer ("... is 19. <|im_start|>user").
    visible = re.split(r"<\|(?:im_start|im_end|endoftext|eot_id)\|>", strip_think(text))[0]
    answer_end = visible.rfind("</answer>")
    answer_start = visible.rfind("<answer>", 0, answer_end) if answer_end != -1 else -1
    if answer_start != -1:  # rfind, not a regex: linear even with thousands of unclosed tags
        inner = visible[answer_start + len("<answer>"):answer_end]
        return (find_boxed(inner) or inner).strip(), "answer_tag"
    boxed = find_boxed(visible)
    if boxed is not None:
        return boxed.strip(), "boxed"
    for name in fallbacks:
        if name not in _FALLBACKS:
            raise ValueError(f"unknown fallback {name!r}; known: {sorted(_FALLBACKS)}")
        found = _FALLBACKS[name](visible)
        if found and found.strip():
            return found.strip(), name
    return None, "none"


def extract_gold(text: str) -> str | None:
    r"""The gold answer in a gold text, the same way under every policy: the answer tag or the
    last box, else the text fallbacks (a gold may be a whole solution), else the text as given
    (a dataset gold like "Monday" is an answer, not prose to search).

    Example:
        >>> extract_gold(r"so the answer is $\frac{1}{2}$."), extract_gold("Monday")
        ('\\frac{1}{2}', 'Monday')
    """
    if not isinstance(text, str):
        return None
    found, _ = extract_answer_with_source(text, TEXT_FALLBACKS)
    return found if found else (text.strip() or None)


def is_plain_number(answer: str) -> bool:
    r"""True when an answer is a plain number (5, -2.5, 1,000, 3/4, \frac{1}{2}).

    Example:
        >>> is_plain_number("1,000"), is_plain_number("(0, 1)")
        (True, False)
    """
    try:
        return parse_plain_number(clean_answer(answer)) is not None
    except Exception:  # noqa: BLE001 - an odd gold is simply "not a plain number"
        return False


def extract_prediction(completion: str, policy: MathPolicy, gold_answer: str | None) -> tuple[str | None, str]:
    """The answer a policy takes from a completion, and the rule that found it. The
    ``last_number`` fallback is skipped when the policy wants a plain-number gold and this
    gold is not one.

    Example:
        >>> extract_prediction("so it is 4", get_policy("lenient"), "4")
        ('4', 'last_number')
        >>> extract_prediction("so it is 4", get_policy("lenient"), "(0, 4)")
        (None, 'none')
    """
    fallbacks = policy.fallbacks
    if "last_number" in fallbacks and policy.last_number_needs_numeric_gold and \
            not (gold_answer is not None and is_plain_number(gold_answer)):
        fallbacks = tuple(name for name in fallbacks if name != "last_number")
    return extract_answer_with_source(completion, fallbacks)


# ---------------------------------------------------------------------------------------------
# Comparison
# ---------------------------------------------------------------------------------------------


def _pool(num_workers: int = DEFAULT_NUM_WORKERS) -> BoundedPool:
    return shared_pool(WORKER_TARGET, num_workers=num_workers, memory_mb=WORKER_MEMORY_MB,
                       init_target=WORKER_INIT)


def warm_up_workers(num_workers: int = DEFAULT_NUM_WORKERS) -> None:
    """Start the comparison workers now (about 1-2 s each, in parallel), so the first rewards
    of a run are not slowed by worker start-up.

    Example:
        >>> warm_up_workers(1)
    """
    _pool(num_workers).warm_up()


def reset_workers() -> None:
    """Stop all comparison workers (their parse caches go with them); the next call starts
    fresh ones. Benchmarks use it to measure cold caches."""
    close_shared_pools()


def _options(options: CompareOptions | None, rel_tol: float | None) -> CompareOptions:
    """The comparison options of a call: given ones, or the defaults with ``rel_tol``."""
    if options is not None:
        return options
    return DEFAULT_OPTIONS if rel_tol is None else CompareOptions(rel_tol=rel_tol)


def _precheck(pred, gold, options: CompareOptions) -> Verdict | None:
    """Verdicts decided without a worker: missing or oversized input, or the fast path."""
    if pred is None or gold is None:
        return Verdict(False, "missing answer")
    pred, gold = str(pred), str(gold)
    if len(pred) > MAX_ANSWER_CHARS or len(gold) > MAX_ANSWER_CHARS:
        return Verdict(False, f"answer longer than {MAX_ANSWER_CHARS} characters")
    try:
        fast = fast_verdict(pred, gold, options)
    except Exception as exc:  # noqa: BLE001 - never raise to a reward function
        return Verdict(False, f"normalisation error: {type(exc).__name__}")
    return Verdict(*fast) if fast is not None else None


def _safe_precheck(pred, gold, options: CompareOptions) -> Verdict | None:
    try:
        return _precheck(pred, gold, options)
    except Exception as exc:  # noqa: BLE001 - one odd item must not fail the batch
        return Verdict(False, f"error: {type(exc).__name__}")


def _ask_worker(pool: BoundedPool, pred, gold, options: CompareOptions, timeout_s: float) -> Verdict:
    payload = {"pred": str(pred), "gold": str(gold), "options": options.to_payload()}
    result = pool.call(payload, timeout_s=timeout_s)
    if not result.ok or not isinstance(result.value, dict):
        return Verdict(False, result.reason or "worker gave no answer")
    return Verdict(bool(result.value.get("equal")), str(result.value.get("reason", "")))


def check_equivalence(pred: str, gold: str, *, rel_tol: float | None = None, timeout_s: float = 2.0,
                      options: CompareOptions | None = None) -> Verdict:
    r"""Whether ``pred`` means the same answer as ``gold``, with the reason.

    ``options`` (default: the strict policy's) set the tolerance, percent and equation-chain
    rules; ``rel_tol`` alone is a shortcut for the defaults with another tolerance. Numbers
    match within the tolerance when one is a decimal; expressions, equations, relations,
    tuples (ordered), sets and bare lists (unordered), intervals, matrices and choice letters
    are compared structurally; an undefined value (0/0) is never equal. Bounded by
    ``timeout_s`` of worker time and the worker memory limit.

    Example:
        >>> check_equivalence(r"\{2, 1\}", "1, 2")
        Verdict(equal=True, reason='equal (symbolic)')
        >>> check_equivalence("9^9^9^9", "1").equal
        False
    """
    try:
        options = _options(options, rel_tol)
        verdict = _precheck(pred, gold, options)
        if verdict is not None:
            return verdict
        return _ask_worker(_pool(), pred, gold, options, timeout_s)
    except Exception as exc:  # noqa: BLE001 - e.g. an object whose __str__ raises; never propagate
        return Verdict(False, f"error: {type(exc).__name__}")


def is_equivalent(pred: str, gold: str, *, rel_tol: float | None = None, timeout_s: float = 2.0,
                  options: CompareOptions | None = None) -> bool:
    """``check_equivalence(...).equal``.

    Example:
        >>> is_equivalent("x^2+2x+1", "(x+1)^2")
        True
    """
    return check_equivalence(pred, gold, rel_tol=rel_tol, timeout_s=timeout_s, options=options).equal


def batch_is_equivalent(pairs: list[tuple[str, str]], *, num_workers: int | None = None,
                        timeout_s: float = 2.0, rel_tol: float | None = None,
                        options: CompareOptions | None = None) -> list[Verdict]:
    """Verdicts for many ``(pred, gold)`` pairs, in order, over a pool of worker processes.

    Each pair gets its own ``timeout_s``; a pair that hangs or exhausts memory costs only its
    worker (killed and replaced), never the batch. ``num_workers`` defaults to the CPU count,
    at most ``MAX_DEFAULT_BATCH_WORKERS``; pairs the in-process fast path settles never reach
    a worker.

    Example:
        >>> [v.equal for v in batch_is_equivalent([("1/2", "0.5"), ("3", "4")])]
        [True, False]
    """
    options = _options(options, rel_tol)
    verdicts: list[Verdict | None] = [_safe_precheck(pred, gold, options) for pred, gold in pairs]
    pending = [index for index, verdict in enumerate(verdicts) if verdict is None]
    if pending:
        num_workers = max(1, num_workers or min(os.cpu_count() or 1, MAX_DEFAULT_BATCH_WORKERS))
        pool = _pool(num_workers)
        with ThreadPoolExecutor(max_workers=num_workers) as executor:
            answers = executor.map(
                lambda index: _ask_worker(pool, *pairs[index], options, timeout_s), pending)
            for index, verdict in zip(pending, answers):
                verdicts[index] = verdict
    return verdicts  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------
# The one verdict path: policy -> caps -> extraction -> comparison
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Judgement:
    """A policy's verdict on one completion, and how it was reached.

    ``extracted_by`` is the extraction rule (``answer_tag``, ``boxed``, a fallback name,
    ``none``, or ``cap`` when a cap rejected the completion before extraction); ``reason`` is
    the comparison's; ``rejected`` names the cap (one of ``math_policy.CAP_REASONS``) or is None.
    """

    equal: bool
    reason: str
    extracted_by: str
    pred_answer: str | None = None
    gold_answer: str | None = None
    rejected: str | None = None

    @property
    def rule(self) -> str:
        """One line saying which rule decided: ``boxed -> numbers equal``, ``cap -> depth``."""
        return f"{self.extracted_by} -> {self.reason}"


def _before_comparison(completion, gold, policy: MathPolicy, extract: bool) -> Judgement | tuple[str, str, str]:
    """A Judgement decided before any comparison (cap, missing answer), else the (pred answer,
    gold answer, extraction rule) to compare."""
    if not isinstance(completion, str) or not isinstance(gold, str):
        return Judgement(False, "completion and gold must be strings", "none")
    cap = degenerate_reason(completion, policy)
    if cap is not None:
        return Judgement(False, f"rejected by the {cap} cap", "cap", rejected=cap)
    gold_answer = extract_gold(gold) if extract else gold.strip()
    if not gold_answer:
        return Judgement(False, "no answer found in gold", "none")
    if not extract:
        return completion.strip(), gold_answer, "as_given"
    pred_answer, source = extract_prediction(completion, policy, gold_answer)
    if pred_answer is None:
        return Judgement(False, "no answer found in prediction", source, gold_answer=gold_answer)
    return pred_answer, gold_answer, source


def judge(completion: str, gold: str, policy: MathPolicy | str = "strict", *, timeout_s: float = 2.0,
          extract: bool = True) -> Judgement:
    r"""The verdict of ``policy`` on a completion against a gold: caps, then extraction, then
    comparison. The math rewards, the evaluation and ``r1zero verify`` all come here.

    ``extract=False`` compares the two texts as given (caps still apply).

    Example:
        >>> judge("<think>..</think><answer>\\frac{1}{2}</answer>", "0.5").rule
        'answer_tag -> numbers equal'
        >>> judge("so it is 4", "4", "strict").equal, judge("so it is 4", "4", "lenient").equal
        (False, True)
    """
    try:
        policy = get_policy(policy) if isinstance(policy, str) else policy
        before = _before_comparison(completion, gold, policy, extract)
        if isinstance(before, Judgement):
            return before
        pred_answer, gold_answer, source = before
        verdict = check_equivalence(pred_answer, gold_answer, timeout_s=timeout_s, options=policy.compare_options())
        return Judgement(verdict.equal, verdict.reason, source, pred_answer, gold_answer)
    except ValueError:
        raise  # an unknown policy name is the caller's error
    except Exception as exc:  # noqa: BLE001 - a verdict never raises to a reward function
        return Judgement(False, f"error: {type(exc).__name__}", "none")


def batch_judge(pairs: list[tuple[str, str]], policy: MathPolicy | str = "strict", *,
                num_workers: int | None = None, timeout_s: float = 2.0, extract: bool = True) -> list[Judgement]:
    """``judge`` for many ``(completion, gold)`` pairs, the comparisons spread over the worker
    pool (same verdicts as one ``judge`` call per pair).

    Example:
        >>> [j.equal for j in batch_judge([("<answer>2</answer>", "2"), ("2", "2")])]
        [True, False]
    """
    policy = get_policy(policy) if isinstance(policy, str) else policy
    judgements: list[Judgement | None] = []
    to_compare: list[tuple[str, str]] = []
    pending: list[tuple[int, str]] = []
    for completion, gold in pairs:
        try:
            before = _before_comparison(completion, gold, policy, extract)
        except Exception as exc:  # noqa: BLE001 - one odd item must not fail the batch
            before = Judgement(False, f"error: {type(exc).__name__}", "none")
        if isinstance(before, Judgement):
            judgements.append(before)
            continue
        pending.append((len(judgements), before[2]))
        judgements.append(None)
        to_compare.append(before[:2])
    verdicts = batch_is_equivalent(to_compare, num_workers=num_workers, timeout_s=timeout_s,
                                   options=policy.compare_options())
    for (position, source), (pred_answer, gold_answer), verdict in zip(pending, to_compare, verdicts):
        judgements[position] = Judgement(verdict.equal, verdict.reason, source, pred_answer, gold_answer)
    return judgements  # type: ignore[return-value]


def check_answer_texts(pred_text: str, gold_text: str, *, rel_tol: float | None = None,
                       timeout_s: float = 2.0) -> Verdict:
    r"""Compare two free texts (solutions, or bare answers) under the ``text`` policy, which
    extracts with the lenient ``TEXT_FALLBACKS``.

    Example:
        >>> check_answer_texts("Thus the answer is $\\frac{1}{2}$.", "$0.5$").equal
        True
    """
    policy = POLICIES["text"] if rel_tol is None else replace(POLICIES["text"], rel_tol=rel_tol)
    judgement = judge(pred_text, gold_text, policy, timeout_s=timeout_s)
    return Verdict(judgement.equal, judgement.reason)


def batch_check_answer_texts(pairs: list[tuple[str, str]], *, num_workers: int | None = None,
                             timeout_s: float = 2.0, rel_tol: float | None = None) -> list[Verdict]:
    """``check_answer_texts`` for many ``(pred_text, gold_text)`` pairs over the worker pool.

    Example:
        >>> [v.equal for v in batch_check_answer_texts([("so $x=2$", "2"), ("no answer", "2")])]
        [True, False]
    """
    policy = POLICIES["text"] if rel_tol is None else replace(POLICIES["text"], rel_tol=rel_tol)
    return [Verdict(j.equal, j.reason) for j in batch_judge(pairs, policy, num_workers=num_workers,
                                                              timeout_s=timeout_s)]


def undefined_golds(golds: list[str], *, num_workers: int | None = None, timeout_s: float = 5.0) -> list[str | None]:
    r"""For each gold text, why its answer is undefined (0/0, 1/0, oo - oo, NaN), else None.

    A dataset with such a gold would pay for any answer that evaluates to the same undefined
    value: ``prepare_data`` refuses it. Plain numbers are settled in-process; the rest are
    parsed in the bounded workers. A gold that cannot be parsed in time is not called undefined.

    Example:
        >>> undefined_golds(["4", r"\frac{0}{0}", "Monday"])
        [None, 'undefined value (0/0, 1/0, oo - oo, ...)', None]
    """
    answers = [extract_gold(gold) if isinstance(gold, str) else None for gold in golds]
    reasons: list[str | None] = [None] * len(golds)
    pending = [index for index, answer in enumerate(answers) if answer and not is_plain_number(answer)]
    if not pending:
        return reasons
    num_workers = max(1, num_workers or min(os.cpu_count() or 1, MAX_DEFAULT_BATCH_WORKERS))
    pool = _pool(num_workers)

    def ask(index: int) -> str | None:
        result = pool.call({"kind": "undefined_gold", "gold": answers[index]}, timeout_s=timeout_s)
        return result.value.get("reason") if result.ok and isinstance(result.value, dict) else None

    with ThreadPoolExecutor(max_workers=num_workers) as executor:
        for index, reason in zip(pending, executor.map(ask, pending)):
            reasons[index] = reason
    return reasons


def policy_reward(policy_name: str):
    """The reward function ``(completion, example) -> 0.0 | 1.0`` of a named policy: ``judge``
    against ``example["answer"]``. Never raises: a missing answer, a cap, a parse failure or
    a timeout all give 0.0.

    Example:
        >>> policy_reward("lenient")("it is 4", {"answer": "4"})
        1.0
    """
    policy = get_policy(policy_name)

    def reward(completion: str, example: dict) -> float:
        try:
            gold = example.get("answer") if isinstance(example, dict) else None
            if gold is None or isinstance(gold, bool):
                return 0.0
            return 1.0 if judge(completion, str(gold), policy).equal else 0.0
        except Exception:  # noqa: BLE001 - a reward must never take down training
            return 0.0

    reward.__name__ = reward.__qualname__ = reward_name(policy_name).replace("-", "_") + "_reward"
    return reward


# One reward per policy, registered under reward_name(policy): math (strict), math_lenient, ...
MATH_REWARDS = {reward_name(policy_name): policy_reward(policy_name) for policy_name in POLICIES}


def math_reward(completion: str, example: dict) -> float:
    """The ``math`` reward (the ``strict`` policy): 1.0 when the completion's answer tag, or else
    its last box, equals ``example["answer"]``, else 0.0.

    Example:
        >>> math_reward("<think>2+2</think><answer>4</answer>", {"answer": "4"})
        1.0
        >>> math_reward("2+2 is 4", {"answer": "4"})  # no tag, no box: strict takes no last number
        0.0
    """
    return MATH_REWARDS["math"](completion, example)
