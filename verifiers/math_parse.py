"""Normalising, safely parsing and comparing math answers (the part that runs in workers).

Untrusted text never reaches ``eval``/``exec``/``sympify``/``parse_expr``. Two parse routes:

* plain text (no backslash or braces): Python's ``ast.parse(mode="eval")``, then a whitelist
  walk that builds sympy objects itself (numbers, single-letter symbols, a few named constants
  and functions, + - * / ** and unary signs, tuples);
* LaTeX: ``latex2sympy2_extended.latex2sympy``, an ANTLR grammar that builds sympy objects.

Before either, ``refusal_reason`` rejects inputs that could blow up (power towers, huge
literals, deep nesting, very long text). Comparison (``compare_texts``) is meant to run inside a
``verifiers.bounded`` worker, which bounds its time and memory; ``fast_compare`` is the cheap
in-process path for plain numbers, letters and identical strings, and cannot hang.

Example:
    >>> clean_answer(r"$\\dfrac12$ \\text{ meters}")
    '\\\\frac{1}{2}'
    >>> fast_compare("1,000", "1000.0")
    (True, 'numbers equal')

How two answers are compared is set by ``CompareOptions`` (the comparison half of a
``verifiers.math_policy.MathPolicy``): tolerance, percent signs, equation chains, other-script
digits, symbolic comparison. Undefined values (0/0, oo - oo) never compare equal.
"""

from __future__ import annotations

import ast
import cmath
import dataclasses
import functools
import math
import re
import unicodedata
from fractions import Fraction
from typing import NamedTuple

# Limits that keep parsing and evaluation cheap; an answer beyond them is refused, not parsed.
MAX_ANSWER_CHARS = 2000
MAX_DIGIT_RUN = 200
MAX_NESTING_DEPTH = 40
MAX_EXPONENT_DIGITS = 4
MAX_PLAIN_EXPONENT = 10_000
# Cost bounds checked on the parsed answer before anything is evaluated or simplified, so that
# the same input takes the same path in every worker (a cold sympy cache made a relation between
# two powers of (x+1) cost 0.05 s in one worker and the whole time limit in another):
# a number with more digits than this is never built (9^9999 has 9,543 digits: fine) ...
MAX_POWER_DIGITS = 20_000
# ... and a power of an expression with symbols stays below this exponent ((x+1)^64 is allowed).
MAX_SYMBOLIC_EXPONENT = 64
# ``simplify`` (the last resort when sample points cannot decide) only runs on small expressions.
MAX_SIMPLIFY_OPS = 60
MAX_SIMPLIFY_EXPONENT = 8
# Exact answers are compared after 30-digit evaluation, so only rounding noise is forgiven.
EXACT_REL_TOL = 1e-12


class Tolerance(NamedTuple):
    """How far apart two approximate numbers may be: ``|a - b| <= max(rel * max(|a|,|b|), abs)``."""

    rel: float = 1e-4
    abs: float = 0.0


EXACT = Tolerance(0.0, 0.0)
PERCENT_MODES = ("drop_sign", "either")
EQUATION_CHAIN_MODES = ("last", "refuse")


@dataclasses.dataclass(frozen=True)
class CompareOptions:
    """How two extracted answers are compared; see docs/verifiers.md for each rule.

    ``rel_tol``/``abs_tol`` apply when either side is written as a decimal (0.333 vs 1/3);
    two exact values (1112112 vs 1112122, sqrt(2)/2) must be equal up to evaluation noise.
    ``percent``: "drop_sign" (50% is 50, so 25% is not 0.25) or "either" (25% is 25 or 0.25).
    ``equation_chains``: "last" (``x = 2+3 = 5`` is judged by 5) or "refuse" (not equal).
    ``unicode_digits``: map full-width and other-script digits to ASCII; off: refuse them.
    ``symbolic``: compare expressions, relations, sets... with sympy in a worker; off: only
    numbers, choice letters and identical strings are ever equal.

    Example:
        >>> CompareOptions().tolerance
        Tolerance(rel=0.0001, abs=0.0)
    """

    rel_tol: float = 1e-4
    abs_tol: float = 0.0
    percent: str = "drop_sign"
    equation_chains: str = "last"
    unicode_digits: bool = True
    symbolic: bool = True

    def __post_init__(self):
        for name in ("rel_tol", "abs_tol"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.rel_tol >= 1:
            raise ValueError(f"rel_tol must be below 1 (1 would make every number equal), got {self.rel_tol!r}")
        if self.percent not in PERCENT_MODES:
            raise ValueError(f"percent must be one of {PERCENT_MODES}, got {self.percent!r}")
        if self.equation_chains not in EQUATION_CHAIN_MODES:
            raise ValueError(f"equation_chains must be one of {EQUATION_CHAIN_MODES}, got {self.equation_chains!r}")

    @property
    def tolerance(self) -> Tolerance:
        return Tolerance(float(self.rel_tol), float(self.abs_tol))

    def to_payload(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_payload(cls, payload: dict | None) -> "CompareOptions":
        return cls(**(payload or {}))


DEFAULT_OPTIONS = CompareOptions()

# ---------------------------------------------------------------------------------------------
# Normalisation
# ---------------------------------------------------------------------------------------------

_SPACING = [r"\!", r"\,", r"\;", r"\:", r"\qquad", r"\quad", r"\displaystyle", r"\limits", "~"]
_TEXT_COMMANDS = r"text|textbf|textit|textrm|textnormal|mathrm|mathbf|mathit|mbox|operatorname|rm|bf"
_TEXT_GROUP = re.compile(r"\\(?:" + _TEXT_COMMANDS + r")\s*\{")
_UNIT_WORDS = (
    "percentage|percent|pct|degrees|degree|units|unit|meters|meter|cm|mm|km|m|inches|inch|feet|"
    "foot|ft|miles|mile|yards|yard|hours|hour|minutes|minute|seconds|second|days|day|years|year|"
    "dollars|dollar|cents|cent|yuan|kg|g|grams|gram|liters|liter|sq|square|cubic"
)
_TRAILING_UNITS = re.compile(r"(?<=[\d}.])\s*(?:(?:" + _UNIT_WORDS + r")\b\.?\s*)+(?:\^\{?\d\}?)?$")
_MC_LETTER = re.compile(r"^\(?([A-Za-z])\)?$")


def _matching_brace(text: str, open_index: int) -> int:
    """Index of the ``}`` that closes the ``{`` at ``open_index``, or -1."""
    depth = 0
    for index in range(open_index, len(text)):
        if text[index] == "{":
            depth += 1
        elif text[index] == "}":
            depth -= 1
            if depth == 0:
                return index
    return -1


def _unwrap_text_commands(text: str) -> str:
    r"""``\text{..}`` and friends: drop them after a number (units), unwrap them elsewhere."""
    match = _TEXT_GROUP.search(text)
    while match:
        close = _matching_brace(text, match.end() - 1)
        if close < 0:
            return text
        inner = text[match.end():close]
        before = text[:match.start()].rstrip()
        after = text[close + 1:]
        unit_tail = re.sub(r"^\s*\^\s*\{?\d\}?", "", after)
        # Only a trailing word after a number is a unit: "12\text{ and }13" keeps its "and".
        is_unit = bool(before) and (before[-1].isdigit() or before[-1] == "}") and \
            re.fullmatch(r"[\sA-Za-z.²³]*", inner) is not None and inner.strip() not in ("", "i", "e") \
            and not unit_tail.strip(" .")
        if is_unit:
            text = text[:match.start()]
        else:
            text = text[:match.start()] + inner + after
        match = _TEXT_GROUP.search(text)
    return text


def _split_outside_groups(text: str, separators: str) -> list[str]:
    """Split on any character of ``separators`` that is not inside (), [], {}."""
    parts, depth, current = [], 0, []
    for char in text:
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        if char in separators and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def _normalise_thousands_and_decimal_comma(text: str) -> str:
    """``1,000,000`` -> ``1000000``; a lone ``1,22`` or ``0,111`` (decimal comma) -> ``1.22``."""
    stripped = text.strip()
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", stripped) and not stripped.lstrip("-").startswith("0,"):
        return stripped.replace(",", "")
    decimal_comma = re.fullmatch(r"(-?\d+),(\d+)", stripped)
    if decimal_comma and (decimal_comma.group(1).lstrip("-") == "0" or len(decimal_comma.group(2)) == 2):
        return f"{decimal_comma.group(1)}.{decimal_comma.group(2)}"
    if re.fullmatch(r"-?\d{1,3}( \d{3})+(\.\d+)?", stripped):
        return stripped.replace(" ", "")
    return text


def _normalise_fracs_and_roots(text: str) -> str:
    r"""``\dfrac``/``\tfrac``/``\cfrac`` -> ``\frac``; ``\frac12``, ``\frac1{7}``, ``\sqrt3`` get braces."""
    text = re.sub(r"\\[dtc]?frac\s*(?=[{\w])", r"\\frac", text)
    text = re.sub(r"\\frac\s*(\w)\s*(\w)", r"\\frac{\1}{\2}", text)
    text = re.sub(r"\\frac\s*(\w)\s*\{", r"\\frac{\1}{", text)
    text = re.sub(r"\\frac\s*(\{[^{}]*\})\s*(\w)", r"\\frac\1{\2}", text)
    text = re.sub(r"\\sqrt\s*(\w)", r"\\sqrt{\1}", text)
    return text


def _strip_relation_prefix(text: str) -> str:
    r"""``x \in [1,2]`` -> ``[1,2]``; ``x \approx 3`` handled by ``_cut_approx``."""
    return re.sub(r"^\s*[A-Za-z](?:_\{?\w+\}?)?\s*\\in\s*", "", text)


def _cut_approx(text: str) -> str:
    r"""Keep the exact value from ``a \approx b``; keep ``b`` when ``a`` is just a variable."""
    parts = re.split(r"\\approx|≈", text)
    if len(parts) == 1:
        return text
    left = parts[0].strip()
    if re.fullmatch(r"[A-Za-z](_\{?\w+\}?)?", left):
        return parts[-1]
    return left


def clean_answer(text: str) -> str:
    r"""Strip presentation (delimiters, spacing, units, percent, degrees, \text) from an answer.

    The result is still LaTeX-ish; it is what both parse routes and the string fast path see.

    Example:
        >>> clean_answer(r"\left( \frac{1}{3} \right)")
        '( \\frac{1}{3} )'
        >>> clean_answer("14{,}916")
        '14916'
        >>> clean_answer(r"90^\circ")
        '90'
    """
    # A doubly escaped "\\le" is "\le" (not a row break: those sit between matrix entries).
    text = re.sub(r"(?<!\\)\\\\(?=(?:le|ge|leq|geq|lt|gt|neq|frac|dfrac|sqrt|boxed|text|pi|infty|cdot)\b)",
                  r"\\", text.strip())
    text = re.sub(r"\\boxed\s*\{(.*)\}", r"\1", text, flags=re.S) if text.startswith("\\boxed") else text
    text = text.replace("\\$", "").replace("$", "").replace("€", "").replace("£", "")
    text = re.sub(r"\\(left|right|big|Big|bigg|Bigg)\b\.?", "", text)
    text = re.sub(r",\\!\s*(?=\d{3})", ",", text).replace("\\!", "")  # 11,\! 111 is one number
    text = re.sub(r"\\[\[\]()]", "", text)
    for spacing in _SPACING:
        text = text.replace(spacing, " ")
    text = re.sub(r"(?<!\\)\\ ", " ", text)  # "\ " is a space, "\\ " a row break
    text = re.sub(r"\^\s*\{?\s*\\circ\s*\}?|°|\\degree", "", text)
    text = re.sub(r"\\%|%", "", text)
    text = text.replace("{,}", "")
    text = _unwrap_text_commands(text)
    text = _TRAILING_UNITS.sub("", text.strip())
    text = re.sub(r"\\(le|leqslant)\b", r"\\leq", text)
    text = re.sub(r"\\(ge|geqslant)\b", r"\\geq", text)
    text = text.replace("\\ne ", "\\neq ").replace("!=", "\\neq ")
    text = _normalise_fracs_and_roots(text)
    text = _cut_approx(text)
    text = _strip_relation_prefix(text)
    text = re.sub(r"\s+", " ", text).strip()
    text = re.sub(r"[\s.,;\\]+$", "", text)
    if text.startswith("{") and text.endswith("}") and _matching_brace(text, 0) == len(text) - 1:
        text = text[1:-1]  # bare braces only group in LaTeX; \{ \} make a set
    return _normalise_thousands_and_decimal_comma(text)


def refusal_reason(text: str) -> str | None:
    """Why an answer is refused before any parsing (None when it is fine to parse).

    Example:
        >>> refusal_reason("9^9^9^9")
        'power tower'
        >>> refusal_reason("x^2 + 1") is None
        True
    """
    if len(text) > MAX_ANSWER_CHARS:
        return f"answer longer than {MAX_ANSWER_CHARS} characters"
    if re.search(r"\d{%d,}" % (MAX_DIGIT_RUN + 1), text):
        return f"number with more than {MAX_DIGIT_RUN} digits"
    depth = max_depth = 0
    for char in text:
        depth += char in "([{"
        depth -= char in ")]}"
        max_depth = max(max_depth, depth)
    if max_depth > MAX_NESTING_DEPTH:
        return f"nesting deeper than {MAX_NESTING_DEPTH}"
    power = r"(?:\^|\*\*)\s*[{(]?\s*"
    if re.search(r"[\w})]\s*" + power + r"[-+]?[\w.]+\s*[})]?\s*" + power, text):
        return "power tower"
    if re.search(power + r"[-+]?\d{%d,}" % (MAX_EXPONENT_DIGITS + 1), text):
        return f"exponent with more than {MAX_EXPONENT_DIGITS} digits"
    return None


# ---------------------------------------------------------------------------------------------
# Fast path: plain numbers, letters, identical strings (in-process, cannot hang)
# ---------------------------------------------------------------------------------------------

_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d{1,3})?")
_FRACTION = re.compile(r"([-+]?\d+)\s*/\s*(\d+)")
_LATEX_FRACTION = re.compile(r"([-+]?)\\frac\{\s*(\d+)\s*\}\{\s*(\d+)\s*\}")
_MIXED = re.compile(r"([-+]?\d+)\s*(?:\\frac\{\s*(\d+)\s*\}\{\s*(\d+)\s*\}|\s(\d+)\s*/\s*(\d+))")


def parse_plain_number(text: str) -> Fraction | None:
    """A number written plainly (integer, decimal, 1e-3, a/b, \\frac{a}{b}, mixed 2 1/2), exactly.

    Example:
        >>> parse_plain_number(r"2\\frac{1}{2}")
        Fraction(5, 2)
        >>> parse_plain_number("x") is None
        True
    """
    text = text.strip()
    if len(text) > MAX_DIGIT_RUN:
        return None
    try:
        if _NUMBER.fullmatch(text):
            return Fraction(text)
        if match := _FRACTION.fullmatch(text):
            return Fraction(int(match.group(1)), int(match.group(2)))
        if match := _LATEX_FRACTION.fullmatch(text):
            value = Fraction(int(match.group(2)), int(match.group(3)))
            return -value if match.group(1) == "-" else value
        if match := _MIXED.fullmatch(text):
            whole = int(match.group(1))
            numerator, denominator = (match.group(2), match.group(3)) if match.group(2) else \
                (match.group(4), match.group(5))
            part = Fraction(int(numerator), int(denominator))
            return whole - part if text.lstrip().startswith("-") else whole + part
    except (ValueError, ZeroDivisionError):
        return None
    return None


def numbers_close(a, b, tol: Tolerance) -> bool:
    """``|a - b| <= max(tol.rel * max(|a|, |b|), tol.abs)``; NaN and infinities are never close.

    Example:
        >>> numbers_close(Fraction(1, 3), Fraction(3333, 10000), Tolerance(1e-4))
        True
        >>> numbers_close(float("nan"), float("nan"), Tolerance(1e-4))
        False
    """
    if isinstance(a, complex) or isinstance(b, complex) or isinstance(a, float) or isinstance(b, float):
        # An overflowed or undefined evaluation (inf, nan) proves nothing: |inf - 1| <= tol * inf
        # is "true", and nan == nan must never pass as an answer.
        if not (cmath.isfinite(a) and cmath.isfinite(b)):
            return False
    if a == b:
        return True
    scale = max(abs(a), abs(b))
    return abs(a - b) <= max(tol.rel * scale, tol.abs)


# Text that may evaluate to an undefined value: identical strings of this kind are not equal
# until they are parsed and found defined (0/0 written twice is still undefined).
_MAYBE_UNDEFINED = re.compile(r"/|\\frac|\\div|\\infty|\binf|\boo\b|nan|undefined|\^|\blog|\bln|\\log|\\ln|"
                              r"tan|cot|sec|csc", re.I)


def fast_compare(pred: str, gold: str, options: CompareOptions = DEFAULT_OPTIONS) -> tuple[bool, str] | None:
    """A definitive verdict from string/number normalisation alone, or None to go symbolic.

    Example:
        >>> fast_compare("(B)", r"\\text{B}")
        (True, 'same choice letter')
        >>> fast_compare("0/0", "0/0") is None  # identical, but maybe undefined: parse it
        True
    """
    pred_clean, gold_clean = clean_answer(pred), clean_answer(gold)
    pred_number, gold_number = parse_plain_number(pred_clean), parse_plain_number(gold_clean)
    if pred_number is not None and gold_number is not None:
        # The tolerance is for decimals; two exact answers (1112112 vs 1112122) must match exactly.
        is_approximate = bool(re.search(r"[.eE]", pred_clean + gold_clean))
        if numbers_close(pred_number, gold_number, options.tolerance if is_approximate else EXACT):
            return True, "numbers equal"
        return False, f"numbers differ ({pred_clean} vs {gold_clean})"
    if pred_clean == gold_clean and pred_clean and not _MAYBE_UNDEFINED.search(pred_clean):
        return True, "identical after normalisation"
    if _TIME_OF_DAY.fullmatch(gold_clean) and _TIME_OF_DAY.fullmatch(pred_clean):
        return False, "different times of day"  # identical strings returned above
    gold_letter, pred_letter = _MC_LETTER.fullmatch(gold_clean), _MC_LETTER.fullmatch(pred_clean)
    if gold_letter and pred_letter:
        same = gold_letter.group(1).lower() == pred_letter.group(1).lower()
        return (True, "same choice letter") if same else (False, "different choice letters")
    if gold_number is not None and re.fullmatch(r"[\sA-Za-z]*", pred_clean):
        return False, "a number was expected"
    if not pred_clean:
        return False, "empty answer"
    return None


# ---------------------------------------------------------------------------------------------
# Safe plain-text parser (ast whitelist -> sympy)
# ---------------------------------------------------------------------------------------------

# No "_": Python reads 1_000 as a number and x_1 is a LaTeX subscript, not plain text.
_PLAIN_ALLOWED = re.compile(r"[0-9A-Za-z+\-*/^().,\s]*")


@functools.lru_cache(maxsize=1)
def _plain_names() -> tuple[dict, dict]:
    import sympy

    constants = {"pi": sympy.pi, "oo": sympy.oo, "inf": sympy.oo, "infty": sympy.oo,
                 "infinity": sympy.oo, "e": sympy.E, "i": sympy.I}
    functions = {"sqrt": sympy.sqrt, "sin": sympy.sin, "cos": sympy.cos, "tan": sympy.tan,
                 "sec": sympy.sec, "csc": sympy.csc, "cot": sympy.cot, "log": sympy.log,
                 "ln": sympy.log, "exp": sympy.exp, "abs": sympy.Abs, "asin": sympy.asin,
                 "acos": sympy.acos, "atan": sympy.atan}
    return constants, functions


def _insert_implicit_multiplication(text: str) -> str:
    """``2x`` -> ``2*x``, ``x(`` stays a call only for known functions, ``)(`` -> ``)*(``."""
    _, functions = _plain_names()
    text = re.sub(r"(\d)\s*([A-Za-z(])", r"\1*\2", text)
    text = re.sub(r"(?<![A-Za-z])([A-Za-z])(\d)", r"\1*\2", text)  # "x2" is x*2, never a name
    text = re.sub(r"\)\s*([\w(])", r")*\1", text)

    def split_word(match: re.Match) -> str:
        word = match.group(0)
        if word in functions or word in _plain_names()[0]:
            return word
        return "*".join(word)  # "xy" means x*y in an answer

    text = re.sub(r"[A-Za-z]+", split_word, text)
    return re.sub(r"\b([A-Za-z])\s*\(", lambda m: m.group(0) if m.group(1) in functions
                  else f"{m.group(1)}*(", text)


def _plain_node_to_sympy(node: ast.AST, depth: int = 0):
    import sympy

    if depth > MAX_NESTING_DEPTH:
        raise ValueError("expression nested too deeply")
    constants, functions = _plain_names()
    recurse = functools.partial(_plain_node_to_sympy, depth=depth + 1)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        if isinstance(node.value, float):  # a Float marks the answer as approximate (tol applies)
            return sympy.Float(repr(node.value), 30)
        return sympy.Integer(node.value)
    if isinstance(node, ast.Name):
        if node.id in constants:
            return constants[node.id]
        if len(node.id) == 1:
            return sympy.Symbol(node.id)
        raise ValueError(f"name {node.id!r} not allowed")
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
        operand = recurse(node.operand)
        return -operand if isinstance(node.op, ast.USub) else operand
    if isinstance(node, ast.BinOp):
        left, right = recurse(node.left), recurse(node.right)
        if isinstance(node.op, ast.Add):
            return left + right
        if isinstance(node.op, ast.Sub):
            return left - right
        if isinstance(node.op, ast.Mult):
            return left * right
        if isinstance(node.op, ast.Div):
            return left / right
        if isinstance(node.op, ast.Pow):
            if right.is_number and abs(complex(right)) > MAX_PLAIN_EXPONENT:
                raise ValueError("exponent too large")
            check_power_cost(left, right)  # before sympy.Pow builds (and evaluates) it
            return sympy.Pow(left, right)
        raise ValueError(f"operator {type(node.op).__name__} not allowed")
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in functions \
            and not node.keywords and 1 <= len(node.args) <= 2:
        return functions[node.func.id](*[recurse(arg) for arg in node.args])
    if isinstance(node, ast.Tuple):  # only bare lists reach here ("1, 2"): unordered, like LaTeX
        return sympy.FiniteSet(*[recurse(element) for element in node.elts])
    raise ValueError(f"syntax {type(node).__name__} not allowed")


def parse_plain(text: str):
    """Parse plain-text math (``x^2 + 2*x + 1``, ``sqrt(2)/2``) through an ast whitelist.

    Anything outside the whitelist (attributes, lambdas, subscripts, strings, unknown names)
    raises ValueError; nothing is ever evaluated as Python.

    Example:
        >>> parse_plain("2x^2 + 1")
        2*x**2 + 1
    """
    if not _PLAIN_ALLOWED.fullmatch(text) or "__" in text:
        raise ValueError("characters outside the plain-text grammar")
    source = _insert_implicit_multiplication(text.replace("^", "**")).strip()
    tree = ast.parse(source, mode="eval")
    return _plain_node_to_sympy(tree.body)


# ---------------------------------------------------------------------------------------------
# LaTeX route and the structure of an answer
# ---------------------------------------------------------------------------------------------


def _split_equation_chain(text: str) -> str:
    """``x = 5+5+1 = 11`` -> ``x = 11``; ``1 = y = 0`` -> ``y = 0`` (keep the final value)."""
    parts = [part for part in re.split(r"(?<![<>!\\])=(?!=)", text)]
    if len(parts) == 2 and not re.search(r"[A-Za-z]", re.sub(r"\\[A-Za-z]+", "", parts[0] + parts[1])):
        return parts[1].strip()  # "\frac{1}{2} = \frac{10}{9}": a computation; keep its result
    if len(parts) < 3:
        return text
    first = parts[0].strip()
    if re.fullmatch(r"[A-Za-z](_\{?\w+\}?)?(\([a-z]\))?", first):
        return f"{first} = {parts[-1].strip()}"
    return f"{parts[-2].strip()} = {parts[-1].strip()}"


def _imaginary_unit(expr):
    import sympy

    symbol_i = sympy.Symbol("i")
    if hasattr(expr, "free_symbols") and symbol_i in expr.free_symbols:
        return expr.subs(symbol_i, sympy.I)
    return expr


def _parse_latex(text: str):
    from latex2sympy2_extended import latex2sympy

    return latex2sympy(text)


class BareList(tuple):
    """A list written without brackets (``1, 2, 3``): unordered against a set or another bare
    list, ordered against an explicit tuple ``(1, 2, 3)``."""


_TIME_OF_DAY = re.compile(r"\d{1,2}:\d{2}")
_NAME_TUPLE_LHS = re.compile(r"^\(\s*[A-Za-z](?:\s*,\s*[A-Za-z])+\s*\)\s*=\s*(.+)$")
_ASSIGNMENT = re.compile(r"^\s*[A-Za-z](?:_\{?\w+\}?)?\s*=\s*(.+?)\s*$")


def _assignments_to_tuples(text: str) -> str:
    """``p=5,q=2;p=7,q=2`` -> ``(5,2),(7,2)``: solutions given as ';'-separated assignments."""
    solutions = _split_outside_groups(text, ";")
    if len(solutions) < 2:
        return text
    rewritten = []
    for solution in solutions:
        values = [_ASSIGNMENT.match(part) for part in _split_outside_groups(solution, ",")]
        if not all(values):
            return text
        rewritten.append("(" + ",".join(value.group(1) for value in values) + ")" if len(values) > 1
                         else values[0].group(1))
    return ",".join(rewritten)


def _is_wrapped(text: str) -> bool:
    """True when one bracket pair encloses the whole text: ``(1, 2)``, ``\\{1, 2\\}``, ``[0, 1)``."""
    text = text.strip().replace("\\{", "{").replace("\\}", "}")
    if not text or text[0] not in "([{" or text[-1] not in ")]}":
        return False
    depth = 0
    for index, char in enumerate(text):
        depth += (char in "([{") - (char in ")]}")
        if depth == 0 and index < len(text) - 1:
            return False
    return True


_LATEX_WORDS = {
    r"\pi": " pi ", r"\infty": " oo ", r"\cdot": "*", r"\times": "*", r"\div": "/",
    r"\sin": " sin", r"\cos": " cos", r"\tan": " tan", r"\sec": " sec", r"\csc": " csc",
    r"\cot": " cot", r"\ln": " ln", r"\log": " log", r"\exp": " exp", r"\arcsin": " asin",
    r"\arccos": " acos", r"\arctan": " atan",
}


def _replace_command_groups(text: str, command: str, build) -> str | None:
    """Rewrite every ``\\command{A}{B}`` (braced arguments) with ``build(A, B)``."""
    num_groups = build.__code__.co_argcount
    while (start := text.find(command + "{")) >= 0:
        groups, position = [], start + len(command)
        for _ in range(num_groups):
            if position >= len(text) or text[position] != "{":
                return None
            close = _matching_brace(text, position)
            if close < 0:
                return None
            groups.append(text[position + 1:close])
            position = close + 1
        text = text[:start] + build(*groups) + text[position:]
    return text


def latex_to_plain(text: str) -> str | None:
    r"""Translate simple LaTeX (\frac, \sqrt, ^{..}, \cdot, \pi, trig) to plain text, or None.

    Parsing plain text through the ast whitelist is ~100x faster than the ANTLR grammar, so
    common answers skip it; anything this does not know goes to the grammar instead.

    Example:
        >>> latex_to_plain(r"\frac{\sqrt{3}}{2}")
        '(( sqrt(3))/(2))'
    """
    text = re.sub(r"\\sqrt\s*\[([^\[\]]+)\]\s*\{", r"\\rootof{\1}{", text)
    text = _replace_command_groups(text, r"\rootof", lambda n, a: f"(({a})**(1/({n})))")
    text = text and _replace_command_groups(text, r"\frac", lambda a, b: f"(({a})/({b}))")
    text = text and _replace_command_groups(text, r"\sqrt", lambda a: f" sqrt({a})")
    if text is None:
        return None
    # \tan^2(y) means tan(y)^2
    text = re.sub(r"\\(sin|cos|tan|sec|csc|cot)\s*\^\s*\{?(\d)\}?\s*\(([^()]*)\)", r" \1(\3)^\2", text)
    for word, plain in _LATEX_WORDS.items():
        text = re.sub(re.escape(word) + r"(?![A-Za-z])", plain, text)
    if "\\" in text or "_" in text or "|" in text:
        return None
    return text.replace("{", "(").replace("}", ")")


# One matrix, optionally wrapped in [ ] or ( ); a sum or product of matrices is left to the grammar.
_MATRIX = re.compile(r"^[\[(]?\s*\\begin\{([pbvB]?matrix|array)\}(\{[^{}]*\})?((?:(?!\\begin).)*)"
                     r"\\end\{\1\}\s*[\])]?$", re.S)
_RATIO = re.compile(r"\s*(\d+(?:\.\d+)?)\s*:\s*(\d+(?:\.\d+)?)\s*")


def _parse_matrix(text: str):
    r"""``\begin{pmatrix}a & b\\ c & d\end{pmatrix}`` (also bmatrix, array) -> Matrix, else None."""
    import sympy

    match = _MATRIX.match(text.strip())
    if not match:
        return None
    body = match.group(3).strip()
    rows = [row for row in re.split(r"\\\\", body) if row.strip()]
    cells = [[_parse_expression(cell.strip()) for cell in row.split("&")] for row in rows]
    if not cells or len({len(row) for row in cells}) != 1:
        return None
    return sympy.Matrix(cells)


def _parse_expression(text: str):
    """A single expression: plain/simple LaTeX through the ast whitelist, else the grammar."""
    import sympy

    if "\\begin" in text and (matrix := _parse_matrix(text)) is not None:
        return matrix
    if ratio := _RATIO.fullmatch(text):  # "7:32" is the ratio 7/32 (times of day never get here)
        return parse_plain(f"({ratio.group(1)})/({ratio.group(2)})")
    plain = latex_to_plain(text) if "\\" in text or "{" in text else text
    if plain is not None and not re.search(r"[<>=\[\]]", plain):
        try:
            return parse_plain(plain)
        except CostRefused:
            raise  # too big by size: the grammar would build the same power
        except (ValueError, SyntaxError, TypeError, RecursionError, ZeroDivisionError):
            pass
    value = _parse_latex(text)
    if isinstance(value, sympy.MatrixExpr) and not isinstance(value, sympy.MatrixBase):
        value = value.doit()
    return value


_LABEL = re.compile(r"[A-Za-z](?:_\{?\w+\}?)?(?:\s*:\s*[A-Za-z](?:_\{?\w+\}?)?)?|\|[A-Za-z]+\||"
                    r"[A-Za-z]\([a-z]\)")
_RELATION = re.compile(r"\\leq|\\geq|\\neq|\\lt|\\gt|<=|>=|(?<![<>!\\])=|<|>")
_RELATION_CLASSES = {r"\leq": "<=", "<=": "<=", r"\geq": ">=", ">=": ">=", r"\lt": "<",
                     "<": "<", r"\gt": ">", ">": ">", r"\neq": "!=", "=": "=="}


def _parse_relation(text: str):
    r"""``a < x <= b``, ``x = 4``, ``5 \geq x`` -> sympy relations (an And for chains), or None."""
    import sympy

    if "\\begin" in text or "\\in" in text:
        return None
    pieces = _RELATION.split(text)
    operators = [_RELATION_CLASSES[op] for op in _RELATION.findall(text)]
    if not operators or len(pieces) > 3 or any(not piece.strip() for piece in pieces):
        return None
    if operators == ["=="] and _LABEL.fullmatch(pieces[0].strip()):
        # "x_{1} = 2", "|AB| = 1", "S_{ABC}:S = 7:32": the left side only names the value.
        label = sympy.Symbol(re.sub(r"\s+", "", pieces[0]))
        return sympy.Eq(label, _parse_expression(pieces[1].strip()), evaluate=False)
    sides = [_parse_expression(piece.strip()) for piece in pieces]
    relations = [sympy.Rel(sides[k], sides[k + 1], operators[k], evaluate=False)
                 for k in range(len(operators))]
    return relations[0] if len(relations) == 1 else sympy.And(*relations, evaluate=False)


def _parse_interval_or_set(text: str, in_union: bool = False):
    r"""``\{..\}`` -> FiniteSet, ``[a, b)``/``(a, b]``/``[a, b]`` -> Interval, unions; else None.

    A bare ``(a, b)`` is a tuple, except as a part of a union, where it is an open interval."""
    import sympy

    union_parts = re.split(r"\\cup", text)
    if len(union_parts) > 1:
        parts = [_parse_interval_or_set(part.strip(), in_union=True) for part in union_parts]
        if all(part is not None for part in parts):
            return sympy.Union(*parts, evaluate=False)
        return None
    text = text.strip()
    if text.startswith("\\{") and text.endswith("\\}") and _is_wrapped(text):
        return sympy.FiniteSet(*[_parse_element(part) for part in _split_outside_groups(text[2:-2], ",")
                                 if part.strip()])
    if text[:1] in "([" and text[-1:] in ")]" and (in_union or text[:1] + text[-1:] != "()") \
            and _is_wrapped(text):
        ends = _split_outside_groups(text[1:-1], ",")
        if len(ends) == 2 and "\\begin" not in text:
            low, high = _parse_expression(ends[0].strip()), _parse_expression(ends[1].strip())
            return sympy.Interval(low, high, text[0] == "(", text[-1] == ")")
    return None


def _parse_element(text: str):
    """One answer element (no top-level list) -> sympy, by the plain route or the LaTeX route."""
    import sympy

    text = text.strip()
    if match := _NAME_TUPLE_LHS.match(text):  # "(p, q) = (3, 2)" names its value
        text = match.group(1).strip()
    if text.startswith("(") and text.endswith(")") and _is_wrapped(text) and len(_split_outside_groups(text[1:-1], ",")) > 1:
        # "(a, b)": an ordered tuple here; comparison still accepts it as an open interval.
        return sympy.Tuple(*[_parse_element(part) for part in _split_outside_groups(text[1:-1], ",")])
    text = _split_equation_chain(text)
    if not text:
        raise ValueError("empty element")
    value = _parse_interval_or_set(text)
    if value is None:
        value = _parse_relation(text)
    if value is None:
        value = _parse_expression(text)
    if is_undefined(value):
        raise ValueError("undefined value (0/0, 1/0, oo - oo, ...)")
    return _imaginary_unit(value)


def is_undefined(value) -> bool:
    """True for a value that is NaN or complex infinity (0/0, 1/0, oo - oo), also when the
    grammar left it unevaluated. Infinity itself (oo, -oo) is a defined answer.

    Example:
        >>> import sympy
        >>> is_undefined(sympy.Mul(0, sympy.Pow(0, -1, evaluate=False), evaluate=False))
        True
        >>> is_undefined(sympy.oo)
        False
    """
    import sympy

    if not isinstance(value, sympy.Basic):
        return False
    if value.has(sympy.zoo, sympy.nan):
        return True
    if not isinstance(value, sympy.Expr) or not value.is_number or value.has(sympy.oo, -sympy.oo):
        return False
    try:  # cost already bounded by check_cost: every power in it has a bounded size
        evaluated = value.evalf(15)
    except (TypeError, ValueError, ZeroDivisionError, ArithmeticError):
        return True
    return bool(evaluated.has(sympy.zoo, sympy.nan))


class CostRefused(ValueError):
    """An answer refused for its size before evaluation; final (no other parse route is tried)."""


def check_power_cost(base, exponent) -> None:
    """Raise ValueError for a power too costly to build or compare: a number of more than
    ``MAX_POWER_DIGITS`` digits, or a symbolic base raised beyond ``MAX_SYMBOLIC_EXPONENT``.

    Decided from the sizes alone, never by trying, so every worker takes the same path.

    Example:
        >>> import sympy
        >>> check_power_cost(sympy.Integer(9), sympy.Integer(9999))  # 9,543 digits: allowed
        >>> check_power_cost(sympy.Symbol("x") + 1, sympy.Integer(999))
        Traceback (most recent call last):
        ...
        verifiers.math_parse.CostRefused: symbolic power with exponent beyond 64
    """
    import sympy

    if not (isinstance(exponent, sympy.Expr) and exponent.is_number):
        return  # x^y: nothing is evaluated
    try:
        size = abs(complex(exponent.evalf(15)))
    except (TypeError, ValueError, OverflowError):
        raise CostRefused("exponent cannot be sized") from None
    if not math.isfinite(size):
        return  # 2^oo is infinity, no digits are built
    if isinstance(base, sympy.Expr) and base.free_symbols:
        if size > MAX_SYMBOLIC_EXPONENT:
            raise CostRefused(f"symbolic power with exponent beyond {MAX_SYMBOLIC_EXPONENT}")
        return
    if isinstance(base, sympy.Expr) and base.is_number and size > 1:
        try:
            magnitude = abs(complex(base.evalf(15)))
        except (TypeError, ValueError, OverflowError):
            raise CostRefused("power base cannot be sized") from None
        if magnitude > 0 and math.isfinite(magnitude) and size * abs(math.log10(magnitude)) > MAX_POWER_DIGITS:
            raise CostRefused(f"power with more than {MAX_POWER_DIGITS} digits")


def check_cost(value) -> None:
    """``check_power_cost`` for every power in a parsed answer (the grammar builds them itself).

    Example:
        >>> import sympy
        >>> check_cost(sympy.Tuple(sympy.Symbol("x") ** 3, 2))
    """
    import sympy

    items = value if isinstance(value, (tuple, list)) else (value,)
    for item in items:
        if isinstance(item, (tuple, list)):
            check_cost(item)
        elif isinstance(item, sympy.Basic) or hasattr(item, "atoms"):
            for power in item.atoms(sympy.Pow):
                check_power_cost(power.base, power.exp)


@functools.lru_cache(maxsize=4096)
def parse_answer(text: str):
    """Clean and parse one answer into a sympy object, or a ``BareList`` of them (cached: golds
    repeat across a group of completions).

    Raises ValueError when the answer is refused or unparsable.

    Example:
        >>> parse_answer(r"\\frac{1}{2}")
        1/2
        >>> parse_answer("x = -5, y = 3")
        (Eq(x, -5), Eq(y, 3))
    """
    try:
        value = _parse_cleaned(clean_answer(text))
        check_cost(value)
    except CostRefused as exc:
        raise ValueError(f"refused: {exc}") from None
    return value


def _parse_cleaned(cleaned: str):
    reason = refusal_reason(cleaned)
    if reason:
        raise ValueError(f"refused: {reason}")
    cleaned = re.sub(r"\s+(?:and|or)\s+|(?<=[\d)])(?:and|or)(?=[-\d(A-Za-z])", "; ", cleaned)
    cleaned = _assignments_to_tuples(cleaned).replace(";", ",")  # (0;-2;6) is a tuple too
    parts = _split_outside_groups(cleaned, ",")
    try:
        if len(parts) > 1 and not _is_wrapped(cleaned):
            return BareList(_parse_element(part) for part in parts if part.strip())
        return _parse_element(cleaned)
    except ValueError:
        raise
    except Exception as exc:  # noqa: BLE001 - the grammar raises bare Exception on bad input
        message = str(exc).splitlines()[0][:80] if str(exc) else type(exc).__name__
        raise ValueError(f"unparsable: {message}") from None


# ---------------------------------------------------------------------------------------------
# Structural comparison of parsed answers (runs inside a bounded worker)
# ---------------------------------------------------------------------------------------------


def _is_simple_lhs(expr) -> bool:
    """True for the left side of an assignment-like equation: ``x``, ``f(x)``, ``|AB|``, ``a:b``."""
    import sympy

    return bool(expr.free_symbols) and not expr.atoms(sympy.Number) - {sympy.Integer(-1)} \
        if isinstance(expr, sympy.Expr) else False


def _as_value(expr):
    """Unwrap answers that name their value: ``x = 4`` -> 4, ``x in [0,1]`` -> [0,1], {a} -> a."""
    import sympy

    if isinstance(expr, sympy.Eq) and _is_simple_lhs(expr.lhs):
        return _as_value(expr.rhs)
    if isinstance(expr, (sympy.FiniteSet, BareList)) and len(expr) == 1:
        return _as_value(next(iter(expr)))
    return expr


def _relation_interval(expr):
    """``a < x <= b`` (an And of two relations on one expression) as an Interval, else None."""
    import sympy

    if not isinstance(expr, sympy.And) or len(expr.args) != 2:
        return None
    bounds = {}
    for relation in expr.args:
        if not isinstance(relation, (sympy.StrictLessThan, sympy.LessThan, sympy.StrictGreaterThan,
                                     sympy.GreaterThan)):
            return None
        small, large = (relation.lhs, relation.rhs) if relation.rel_op in ("<", "<=") else \
            (relation.rhs, relation.lhs)
        strict = relation.rel_op in ("<", ">")
        if small.is_number and not large.is_number:
            bounds["low"], bounds["left_open"], bounds["var_low"] = small, strict, large
        elif large.is_number and not small.is_number:
            bounds["high"], bounds["right_open"], bounds["var_high"] = large, strict, small
    if {"low", "high"} <= bounds.keys() and bounds["var_low"] == bounds["var_high"]:
        return sympy.Interval(bounds["low"], bounds["high"], bounds["left_open"], bounds["right_open"])
    return None


def _numeric_value(expr):
    import sympy

    if isinstance(expr, sympy.Expr) and expr.is_number:
        value = complex(expr.evalf(30))
        return value
    return None


def _exprs_equal(a, b, tol: Tolerance) -> bool:
    import sympy

    if a == b:
        return True
    if a.is_infinite or b.is_infinite:
        return _bounded_simplify(a - b) == 0 if not (a.is_infinite and b.is_infinite) else a == b
    value_a, value_b = _numeric_value(a), _numeric_value(b)
    if value_a is not None and value_b is not None:
        # tol is for decimals; exact values (1112112, sqrt(2)/2) only absorb evalf's rounding.
        is_approximate = a.has(sympy.Float) or b.has(sympy.Float)
        return numbers_close(value_a, value_b, tol if is_approximate else Tolerance(EXACT_REL_TOL, 0.0))
    if (value_a is None) != (value_b is None):
        return False
    if a.free_symbols != b.free_symbols:
        a, b = _align_symbols(a, b)
        if a.free_symbols != b.free_symbols:
            return False
    is_zero = _zero_at_sample_points(a - b)
    if is_zero is not None:
        return is_zero
    return _bounded_simplify(a - b) == 0


def _bounded_simplify(expr):
    """``sympy.simplify`` for small expressions only; a large one is left as it is (so it is
    judged "not equal"), decided by its size, not by how long simplify happens to take."""
    import sympy

    powers = [power.exp for power in expr.atoms(sympy.Pow) if power.exp.is_number]
    too_big = sympy.count_ops(expr) > MAX_SIMPLIFY_OPS or \
        any(abs(complex(exponent)) > MAX_SIMPLIFY_EXPONENT for exponent in powers)
    return expr if too_big else sympy.simplify(expr)


def _align_symbols(a, b):
    """Compare case-insensitively: the LaTeX grammar lowercases symbols, plain text does not."""
    import sympy

    lower = {symbol: sympy.Symbol(symbol.name.lower()) for symbol in a.free_symbols | b.free_symbols}
    return a.xreplace(lower), b.xreplace(lower)


# Signed, non-integer sample points: |x| vs x and sqrt(x^2) vs x differ at a negative point.
_SAMPLE_POINTS = ((0.6180339887, -1.4142135623, 2.7182818284), (-0.5772156649, 1.7320508075, 0.3010299956),
                  (1.2020569031, 0.9159655941, -2.2360679774))


def _zero_at_sample_points(difference) -> bool | None:
    """Whether an expression vanishes at three sample points (an identity test that avoids the
    slow ``simplify``): False at the first clearly nonzero value, None when it cannot be
    evaluated (undefined at a point, or not a scalar)."""
    symbols = sorted(difference.free_symbols, key=lambda symbol: symbol.name)
    for point in _SAMPLE_POINTS:
        values = {symbol: point[index % 3] + index for index, symbol in enumerate(symbols)}
        try:
            value = complex(difference.xreplace(values).evalf(30))
        except (TypeError, ValueError, ZeroDivisionError):
            return None
        if value != value:  # nan
            return None
        if abs(value) > 1e-9:
            return False
    return True


def _relation_key(relation):
    """(expression that is > 0 or >= 0 or != 0, operator) for a relation, normalised to '>'."""
    op = relation.rel_op
    if op in ("<", "<="):
        return relation.rhs - relation.lhs, {"<": ">", "<=": ">="}[op]
    return relation.lhs - relation.rhs, op


def _relations_equal(a, b, tol: Tolerance) -> bool:
    import sympy

    (expr_a, op_a), (expr_b, op_b) = _relation_key(a), _relation_key(b)
    if op_a != op_b:
        return False
    if op_a in ("==", "!="):  # any nonzero multiple describes the same solutions
        if _exprs_equal(expr_a, expr_b, tol) or _exprs_equal(expr_a, -expr_b, tol):
            return True
    elif _exprs_equal(expr_a, expr_b, tol):
        return True
    if expr_b == 0:
        return False
    ratio = _constant_ratio_at_sample_points(expr_a, expr_b)
    if ratio is None:  # cannot be evaluated at the points: simplify, if small enough
        ratio = _bounded_simplify(expr_a / expr_b)
        if not ratio.is_number or ratio == 0:
            return False
        return op_a in ("==", "!=") or bool(ratio.is_positive)
    if ratio is False or ratio == 0:
        return False
    return op_a in ("==", "!=") or (abs(ratio.imag) < 1e-9 and ratio.real > 0)


def _constant_ratio_at_sample_points(expr_a, expr_b):
    """``expr_a / expr_b`` when it is the same number at every sample point (2x - 2 and x - 1:
    2), False when it is not constant, None when it cannot be evaluated. Evaluating at points
    costs the same in every worker; ``simplify`` of a ratio of powers did not."""
    symbols = sorted(expr_a.free_symbols | expr_b.free_symbols, key=lambda symbol: symbol.name)
    ratios = []
    for point in _SAMPLE_POINTS:
        values = {symbol: point[index % 3] + index for index, symbol in enumerate(symbols)}
        try:
            numerator = complex(expr_a.xreplace(values).evalf(30))
            denominator = complex(expr_b.xreplace(values).evalf(30))
        except (TypeError, ValueError, ZeroDivisionError, OverflowError):
            return None
        if not (cmath.isfinite(numerator) and cmath.isfinite(denominator)) or abs(denominator) < 1e-12:
            return None
        ratios.append(numerator / denominator)
    first = ratios[0]
    if all(abs(ratio - first) <= 1e-9 * max(1.0, abs(first)) for ratio in ratios[1:]):
        return first
    return False


def _sequence_equal(items_a, items_b, tol: Tolerance) -> bool:
    return len(items_a) == len(items_b) and all(
        answers_equal(x, y, tol) for x, y in zip(items_a, items_b))


def _unique(items, tol: Tolerance) -> list:
    unique: list = []
    for item in items:
        if not any(answers_equal(item, seen, tol) for seen in unique):
            unique.append(item)
    return unique


def _set_equal(items_a, items_b, tol: Tolerance) -> bool:
    """Unordered: each element of one matched to a distinct equal element of the other
    (repeats count once, as in a set)."""
    if len(items_a) != len(items_b):
        items_a, items_b = _unique(items_a, tol), _unique(items_b, tol)
    if len(items_a) != len(items_b):
        return False
    remaining = list(items_b)
    for item in items_a:
        for index, candidate in enumerate(remaining):
            if answers_equal(item, candidate, tol):
                del remaining[index]
                break
        else:
            return False
    return True


def _interval_equal(a, b, tol: Tolerance) -> bool:
    return a.left_open == b.left_open and a.right_open == b.right_open and \
        _exprs_equal(a.start, b.start, tol) and _exprs_equal(a.end, b.end, tol)


def _collection_items(expr):
    """Elements of a list-like answer and whether their order matters, or None."""
    import sympy

    if isinstance(expr, BareList):
        return list(expr), "bare"
    if isinstance(expr, sympy.FiniteSet):
        return list(expr.args), "set"
    if isinstance(expr, (sympy.Tuple, tuple, list)):
        return list(expr), "tuple"
    return None


def answers_equal(a, b, tol: Tolerance) -> bool:
    """Structural equality of two parsed answers (see module docs for the rules).

    Example:
        >>> import sympy
        >>> answers_equal(sympy.FiniteSet(1, 2), sympy.FiniteSet(2, 1), 1e-4)
        True
    """
    import sympy

    if isinstance(a, sympy.Eq) and isinstance(b, sympy.Eq) and \
            all(isinstance(side, sympy.Expr) for side in (*a.args, *b.args)) and \
            _relations_equal(a, b, tol):
        return True
    a, b = _as_value(a), _as_value(b)
    a = _relation_interval(a) or a
    b = _relation_interval(b) or b
    if isinstance(a, sympy.MatrixBase) or isinstance(b, sympy.MatrixBase):
        return _matrices_equal(a, b, tol)
    if isinstance(a, sympy.Interval) and isinstance(b, sympy.Interval):
        return _interval_equal(a, b, tol)
    if isinstance(a, sympy.Interval) != isinstance(b, sympy.Interval):
        return _interval_vs_pair(a, b, tol)
    if isinstance(a, sympy.Union) and isinstance(b, sympy.Union):
        return _set_equal(list(a.args), list(b.args), tol)
    items_a, items_b = _collection_items(a), _collection_items(b)
    if items_a is not None and items_b is not None:
        # A tuple against a tuple or a bare list keeps its order; anything with a set does not.
        kinds = {items_a[1], items_b[1]}
        ordered = "tuple" in kinds and "set" not in kinds
        return (_sequence_equal if ordered else _set_equal)(items_a[0], items_b[0], tol)
    if items_a is not None or items_b is not None:
        return False
    if isinstance(a, sympy.core.relational.Relational) and isinstance(b, sympy.core.relational.Relational):
        return _relations_equal(a, b, tol)
    if isinstance(a, sympy.Expr) and isinstance(b, sympy.Expr):
        return _exprs_equal(a, b, tol)
    return a == b


def _interval_vs_pair(a, b, tol: Tolerance) -> bool:
    """``(1, 2)`` is both an open interval and an ordered pair: accept either reading."""
    import sympy

    interval, other = (a, b) if isinstance(a, sympy.Interval) else (b, a)
    if interval.left_open and interval.right_open and isinstance(other, sympy.Tuple) and len(other) == 2:
        return _exprs_equal(interval.start, other[0], tol) and _exprs_equal(interval.end, other[1], tol)
    return False


def _matrices_equal(a, b, tol: Tolerance) -> bool:
    import sympy

    def as_matrix(value):
        if isinstance(value, sympy.MatrixBase):
            return value
        if isinstance(value, sympy.Tuple) and len(value) == 1 and isinstance(value[0], sympy.MatrixBase):
            return value[0]
        return None

    a, b = as_matrix(a), as_matrix(b)
    if a is None or b is None or a.shape != b.shape:
        return False
    return all(_exprs_equal(x, y, tol) for x, y in zip(a, b))


def normalise_digits(text: str) -> str:
    """Full-width and other-script decimal digits (Unicode category Nd) -> ASCII digits.

    Only digits: superscripts (x²) and fraction characters keep their meaning.

    Example:
        >>> normalise_digits("１２ and ٣")
        '12 and 3'
    """
    if text.isascii():
        return text
    return "".join(str(unicodedata.decimal(char)) if not char.isascii() and unicodedata.decimal(char, None)
                   is not None else char for char in text)


def has_non_ascii_digit(text: str) -> bool:
    """True when the text has a decimal digit outside ASCII (１, ٣, ३).

    Example:
        >>> has_non_ascii_digit("x²"), has_non_ascii_digit("１")
        (False, True)
    """
    return not text.isascii() and any(not char.isascii() and unicodedata.decimal(char, None) is not None
                                      for char in text)


def is_equation_chain(text: str) -> bool:
    r"""True when an answer is judged by the last value of an equation chain: ``x = 2+3 = 5``,
    ``1+1 = 2`` (a computation and its result); ``x = 4`` names its value and is no chain.

    Example:
        >>> is_equation_chain("x = 5+5+1 = 11"), is_equation_chain("x = 11")
        (True, False)
    """
    cleaned = clean_answer(text)
    return any(_split_equation_chain(part.strip()) != part.strip()
               for part in _split_outside_groups(cleaned, ",") if part.strip())


_PERCENT = re.compile(r"\\?%|\bpercent(?:age)?\b")


def _as_fraction_of_100(text: str) -> str:
    """``25%`` -> ``1/4``; ``x%`` -> ``\\frac{x}{100}`` (the value a percent sign stands for)."""
    bare = clean_answer(_PERCENT.sub("", text))
    number = parse_plain_number(bare)
    if number is not None:
        value = number / 100
        return f"{value.numerator}/{value.denominator}" if value.denominator != 1 else str(value.numerator)
    return f"\\frac{{{bare}}}{{100}}"


def prepare_pair(pred: str, gold: str, options: CompareOptions = DEFAULT_OPTIONS
                 ) -> tuple[list[tuple[str, str]], tuple[bool, str] | None]:
    """The (pred, gold) readings to compare under ``options``, or a verdict the options decide
    alone (digits outside ASCII when they are off, an equation chain when chains are refused).

    Example:
        >>> prepare_pair("25%", "0.25", CompareOptions(percent="either"))
        ([('25%', '0.25'), ('1/4', '0.25')], None)
    """
    if options.unicode_digits:
        pred, gold = normalise_digits(pred), normalise_digits(gold)
    elif has_non_ascii_digit(pred):
        return [], (False, "digits outside ASCII (policy: unicode_digits off)")
    if options.equation_chains == "refuse" and is_equation_chain(pred):
        return [], (False, "equation chain (policy: equation_chains refuse)")
    pairs = [(pred, gold)]
    if options.percent == "either":
        if _PERCENT.search(pred) and not _PERCENT.search(gold):
            pairs.append((_as_fraction_of_100(pred), gold))
        elif _PERCENT.search(gold) and not _PERCENT.search(pred):
            pairs.append((pred, _as_fraction_of_100(gold)))
    return pairs, None


def fast_verdict(pred: str, gold: str, options: CompareOptions = DEFAULT_OPTIONS) -> tuple[bool, str] | None:
    """The verdict without sympy (in-process, cannot hang), or None when it needs a worker.

    Example:
        >>> fast_verdict("x^2", "x*x", CompareOptions(symbolic=False))
        (False, 'needs symbolic comparison (policy: symbolic off)')
    """
    pairs, decided = prepare_pair(pred, gold, options)
    if decided is not None:
        return decided
    verdicts = [fast_compare(p, g, options) for p, g in pairs]
    for verdict in verdicts:
        if verdict is not None and verdict[0]:
            return verdict
    if all(verdict is not None for verdict in verdicts):
        return verdicts[0]
    if not options.symbolic:
        return False, "needs symbolic comparison (policy: symbolic off)"
    return None


def _symbolic_compare(pred: str, gold: str, options: CompareOptions) -> tuple[bool, str]:
    try:
        gold_value = parse_answer(gold)
    except ValueError as exc:
        gold_value = None
        gold_error = str(exc)
    try:
        pred_value = parse_answer(pred)
    except ValueError as exc:
        if str(exc).startswith("unparsable") and gold_value is None and clean_answer(pred) == clean_answer(gold):
            return True, "identical after normalisation"  # two unparsable texts, written the same
        return False, f"prediction {exc}"
    if gold_value is None:
        return False, f"gold {gold_error}"
    try:
        equal = answers_equal(pred_value, gold_value, options.tolerance)
    except (TypeError, ValueError, AttributeError, NotImplementedError, OverflowError) as exc:
        return False, f"not comparable ({type(exc).__name__})"
    return (True, "equal (symbolic)") if equal else (False, "not equal")


def compare_texts(pred: str, gold: str, options: CompareOptions = DEFAULT_OPTIONS) -> tuple[bool, str]:
    """Full comparison of two answer strings: fast path, then parse and compare structurally.

    Run it inside a bounded worker (``verifiers.math_answer`` does): parsing LaTeX and
    ``simplify`` have no time bound of their own.

    Example:
        >>> compare_texts(r"\\{2, 1\\}", "1, 2")
        (True, 'equal (symbolic)')
        >>> compare_texts(r"\\frac{0}{0}", r"\\frac{0}{0}")
        (False, 'prediction undefined value (0/0, 1/0, oo - oo, ...)')
    """
    fast = fast_verdict(pred, gold, options)
    if fast is not None:
        return fast
    pairs, _ = prepare_pair(pred, gold, options)
    verdicts = []
    for pred_reading, gold_reading in pairs:
        fast = fast_compare(pred_reading, gold_reading, options)
        verdict = fast if fast is not None else _symbolic_compare(pred_reading, gold_reading, options)
        if verdict[0]:
            return verdict
        verdicts.append(verdict)
    return verdicts[0]


_NAN_TEXT = re.compile(r"[-+]?\s*(?:nan|\\mathrm\{nan\}|\\text\{nan\})", re.I)


def undefined_gold_reason(gold: str) -> str | None:
    """Why a gold answer is undefined (0/0, 1/0, oo - oo, NaN), or None when it is defined or
    merely unparsable (words are valid golds). Parses: run it in a worker.

    Example:
        >>> undefined_gold_reason(r"\\frac{0}{0}")
        'undefined value (0/0, 1/0, oo - oo, ...)'
        >>> undefined_gold_reason("Monday") is None
        True
    """
    cleaned = clean_answer(gold)
    if _NAN_TEXT.fullmatch(cleaned):
        return "undefined value (NaN)"
    if parse_plain_number(cleaned) is not None:
        return None
    try:
        parse_answer(gold)
    except ValueError as exc:
        return str(exc) if "undefined value" in str(exc) else None
    return None


def compare_request(payload: dict) -> dict:
    """Worker entry point: ``{"pred", "gold", "options"}`` -> ``{"equal", "reason"}``; with
    ``"kind": "undefined_gold"``, ``{"gold"}`` -> ``{"reason": str | None}``.

    Example:
        >>> compare_request({"pred": "0.5", "gold": r"\\frac{1}{2}", "options": {"rel_tol": 1e-4}})
        {'equal': True, 'reason': 'numbers equal'}
    """
    if payload.get("kind") == "undefined_gold":
        return {"reason": undefined_gold_reason(str(payload["gold"]))}
    options = CompareOptions.from_payload(payload.get("options"))
    equal, reason = compare_texts(str(payload["pred"]), str(payload["gold"]), options)
    return {"equal": bool(equal), "reason": reason}


def warm_up() -> None:
    """Worker init: build the LaTeX grammar's tables and sympy's caches once, then forget the
    parsed answers, so the first timed comparison is not charged ~0.5 s of one-off setup."""
    for pred, gold in ((r"\begin{pmatrix}1 & x\\ 2 & y\end{pmatrix}", r"\begin{pmatrix}1 & x\\ 2 & y\end{pmatrix}"),
                       (r"\sin^2 x + \cos^2 x", "1"), (r"x_{1} = 2, y \geq 3", r"x_1 = 2"),
                       (r"\frac{1}{2}\sqrt{2}\pi", "(x+1)^2"), (r"[0, 1) \cup (2, \infty)", r"\{1, 2\}")):
        try:
            compare_texts(pred, gold)
        except Exception:  # noqa: BLE001 - warming up must never stop a worker from starting
            pass
    parse_answer.cache_clear()
