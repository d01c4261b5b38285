"""Countdown reward (the TinyZero task): combine the given numbers into the target.

Rules: every number in ``example["meta"]["numbers"]`` is used exactly once, combined with the
binary operators ``+ - * /`` and parentheses, and the expression equals
``example["meta"]["target"]`` exactly.

How an answer is checked (``countdown_check``):

1. The answer text is the content of the last ``<answer>...</answer>`` block after the
   reasoning (``countdown_reward`` extracts it; an answer block inside ``<think>`` does not
   count). An optional trailing ``= target`` is accepted; a different claimed result is not.
2. Only digits, spaces, ``+ - * / ( )`` may appear; length, literal size and parenthesis
   depth are capped before parsing, so hostile text is rejected in microseconds.
3. The text is parsed with ``ast.parse(mode="eval")`` (never evaluated by Python) and the tree
   may contain only binary ``+ - * /`` and non-negative integer literals.
4. The multiset of literals must equal the multiset of given numbers.
5. The tree is evaluated with ``fractions.Fraction``: exact, so ``6/(1-3/4)`` is exactly 24
   and ``1/3*3`` is exactly 1. Intermediate magnitudes are capped.

Unary minus is rejected: the numbers are given as positive values and the task's operators are
the four binary ones. Allowing ``-`` as a prefix adds a free fifth operation (``-(a-b)`` turns
into ``b-a``, ``-a*-b`` into ``a*b``) and makes ``-3`` look like a number that is not in the
list; TinyZero's reference solutions never need it.

The reward is binary, 1.0 or 0.0: the format reward already pays for layout, so a partial
"well-formed but wrong" score (TinyZero's 0.1) would double count it.
"""

from __future__ import annotations

import ast
import itertools
from collections import Counter
from fractions import Fraction

from verifiers.format_reward import ANSWER_CLOSE, ANSWER_OPEN, THINK_CLOSE, THINK_OPEN, prompt_ends_with_think

# Caps that keep every check fast on hostile input. A TinyZero answer with 6 two-digit numbers
# is under 40 characters; 512 leaves room for spaces and redundant parentheses.
MAX_ANSWER_CHARS = 512
MAX_PAREN_DEPTH = 32
MAX_LITERAL_DIGITS = 12
# |numerator| and denominator of every intermediate value stay below this; with 6 numbers of
# 12 digits at most, legitimate products stay far below it, and huge-number tricks stop here.
MAX_INTERMEDIATE = 10**80
# solve_countdown is exhaustive; 6 numbers is the largest it handles in about a second at worst
# (no solution, all values distinct); the work grows factorially beyond.
MAX_SOLVER_NUMBERS = 6

_ALLOWED_CHARS = frozenset("0123456789+-*/() \t\n")
_BINARY_OPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}
# Unicode operators that models and tokenizers produce for the same four operations.
_OPERATOR_ALIASES = {"×": "*", "·": "*", "÷": "/", "−": "-", "–": "-"}


class _Rejected(Exception):
    """An answer that breaks a rule; the message is the reason."""


def _paren_depth(text: str) -> int:
    depth = max_depth = 0
    for char in text:
        if char == "(":
            depth += 1
            max_depth = max(max_depth, depth)
        elif char == ")":
            depth -= 1
    return max_depth


def _strip_claimed_result(text: str, target: int) -> str:
    if "=" not in text:
        return text
    left, _, right = text.partition("=")
    right = right.strip()
    if right != str(target):
        raise _Rejected(f"claimed result {right[:20]!r} is not the target {target}")
    return left


def _precheck(text: str) -> None:
    if len(text) > MAX_ANSWER_CHARS:
        raise _Rejected(f"answer longer than {MAX_ANSWER_CHARS} characters")
    if not text.strip():
        raise _Rejected("empty answer")
    if "." in text:
        raise _Rejected("non-integer literal")
    bad = sorted(set(text) - _ALLOWED_CHARS)
    if bad:
        raise _Rejected(f"characters not allowed: {''.join(bad[:10])!r}")
    if "**" in text:
        raise _Rejected("power is not allowed")
    if _paren_depth(text) > MAX_PAREN_DEPTH:
        raise _Rejected(f"parentheses nested deeper than {MAX_PAREN_DEPTH}")


def _parse(text: str) -> ast.expr:
    try:
        # Newlines between tokens are fine for a reader but end an expression for Python.
        return ast.parse(" ".join(text.split()), mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError) as error:
        raise _Rejected(f"not an expression: {type(error).__name__}") from None


def _literals(node: ast.expr) -> list[int]:
    """Integer literals of an allowed tree, left to right; rejects any other node."""
    if isinstance(node, ast.BinOp):
        if type(node.op) not in _BINARY_OPS:
            raise _Rejected(f"operator {type(node.op).__name__} is not allowed")
        return _literals(node.left) + _literals(node.right)
    if isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Rejected("non-integer literal")
        if len(str(value)) > MAX_LITERAL_DIGITS:
            raise _Rejected(f"literal longer than {MAX_LITERAL_DIGITS} digits")
        return [value]
    if isinstance(node, ast.UnaryOp):
        raise _Rejected("unary operators are not allowed")
    raise _Rejected(f"{type(node).__name__} is not allowed")


def _check_numbers(used: list[int], numbers: list[int]) -> None:
    extra = Counter(used) - Counter(numbers)
    missing = Counter(numbers) - Counter(used)
    if extra:
        raise _Rejected(f"numbers used but not available (or reused): {sorted(extra.elements())}")
    if missing:
        raise _Rejected(f"numbers not used: {sorted(missing.elements())}")


def _evaluate(node: ast.expr) -> Fraction:
    if isinstance(node, ast.Constant):
        return Fraction(node.value)
    left, right = _evaluate(node.left), _evaluate(node.right)
    op = type(node.op)
    if op is ast.Div and right == 0:
        raise _Rejected("division by zero")
    value = {
        ast.Add: lambda: left + right,
        ast.Sub: lambda: left - right,
        ast.Mult: lambda: left * right,
        ast.Div: lambda: left / right,
    }[op]()
    if abs(value.numerator) > MAX_INTERMEDIATE or value.denominator > MAX_INTERMEDIATE:
        raise _Rejected("intermediate value too large")
    return value


def countdown_check(answer_text: str, numbers: list[int], target: int) -> tuple[bool, str]:
    """Check one Countdown answer expression; return (correct, reason).

    >>> countdown_check("6/(1-3/4)", [1, 3, 4, 6], 24)
    (True, 'correct')
    >>> countdown_check("(6 + 4) * 3 - 1 = 29", [1, 3, 4, 6], 29)
    (True, 'correct')
    >>> countdown_check("6*4", [1, 3, 4, 6], 24)
    (False, 'numbers not used: [1, 3]')
    """
    if not isinstance(answer_text, str):
        return False, "answer is not a string"
    # The "= target" suffix gets a little room beyond the expression cap; nothing is truncated,
    # since a cut could turn "= 24 and more" into an accepted "= 24".
    if len(answer_text) > MAX_ANSWER_CHARS + 32:
        return False, f"answer longer than {MAX_ANSWER_CHARS} characters"
    try:
        text = answer_text
        for alias, op in _OPERATOR_ALIASES.items():
            text = text.replace(alias, op)
        text = _strip_claimed_result(text, target)
        _precheck(text)
        tree = _parse(text)
        _check_numbers(_literals(tree), list(numbers))
        value = _evaluate(tree)
    except _Rejected as rejected:
        return False, str(rejected)
    if value != target:
        return False, f"evaluates to {value}, not {target}"
    return True, "correct"


def extract_answer(completion: str, example: dict | None = None) -> str | None:
    """The content of the last ``<answer>`` block after the reasoning, or None.

    Only text after the last ``</think>`` is searched. If a think block was opened (in the
    completion, or by the prompt, see ``prompt_ends_with_think``) and never closed, everything
    is reasoning and there is no answer.

    >>> extract_answer("<think>try <answer>1</answer></think><answer>2+3</answer>")
    '2+3'
    >>> extract_answer("<think>still thinking <answer>1</answer>") is None
    True
    """
    close_at = completion.rfind(THINK_CLOSE)
    if close_at >= 0:
        region = completion[close_at + len(THINK_CLOSE) :]
    elif THINK_OPEN in completion or prompt_ends_with_think(example):
        return None
    else:
        region = completion
    end = region.rfind(ANSWER_CLOSE)
    start = region.rfind(ANSWER_OPEN, 0, max(end, 0))
    if end < 0 or start < 0:
        return None
    return region[start + len(ANSWER_OPEN) : end]


def _task_of(example: dict) -> tuple[list[int], int]:
    meta = example.get("meta") if isinstance(example, dict) else None
    if not isinstance(meta, dict) or "numbers" not in meta or "target" not in meta:
        raise ValueError("countdown example needs meta.numbers and meta.target")
    numbers, target = meta["numbers"], meta["target"]
    if not all(isinstance(n, int) and not isinstance(n, bool) for n in [*numbers, target]):
        raise ValueError(f"countdown numbers and target must be integers, got {numbers!r} -> {target!r}")
    return list(numbers), target


def countdown_reward(completion: str, example: dict) -> float:
    """1.0 when the last answer block reaches the target with each number once, else 0.0.

    Raises ValueError only for a malformed *example* (no ``meta.numbers``/``meta.target``);
    any completion text gives 0.0 or 1.0.

    >>> ex = {"meta": {"numbers": [3, 5, 7], "target": 22}}
    >>> countdown_reward("<think>3*5=15, +7</think><answer>3*5+7</answer>", ex)
    1.0
    >>> countdown_reward("<think>3*5=15</think><answer>3*5</answer>", ex)
    0.0
    """
    numbers, target = _task_of(example)
    answer = extract_answer(completion, example)
    if answer is None:
        return 0.0
    correct, _reason = countdown_check(answer, numbers, target)
    return 1.0 if correct else 0.0


# --- solver -------------------------------------------------------------------------------------
#
# Subsets of the numbers are bit masks. Every value that a subset of up to _ENUMERATE_SIZE numbers
# can reach is enumerated once (a dict value -> expression); larger subsets are solved goal-first:
# split off a small side A, and for each value a of A and each operator, compute the value b
# that the other side B must reach (t = a+b -> b = t-a, and so on), then look b up or recurse.
# Six numbers then cost about 1e5 Fraction operations instead of the 1e7 of a plain tree search.

# 3 was measured fastest on average for 4 to 6 numbers (2: 6 numbers 3x slower; 4: 4 numbers 8x
# slower, since the full set of 4 is then enumerated rather than searched goal-first).
_ENUMERATE_SIZE = 3
# Precedence for printing with minimal parentheses: literals bind tightest.
_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2, "atom": 3}

Expr = tuple[str, int]  # (text, precedence of its top operator)


def apply_operator(op: str, left: Fraction, right: Fraction) -> Fraction | None:
    """``left op right`` in exact arithmetic; None for a division by zero.

    >>> apply_operator("/", Fraction(3), Fraction(4))
    Fraction(3, 4)
    """
    if op == "+":
        return left + right
    if op == "-":
        return left - right
    if op == "*":
        return left * right
    return None if right == 0 else left / right


def _format(op: str, left: Expr, right: Expr) -> Expr:
    (left_text, left_prec), (right_text, right_prec) = left, right
    prec = _PRECEDENCE[op]
    if left_prec < prec:
        left_text = f"({left_text})"
    # a-(b-c) and a/(b*c) need parentheses even at equal precedence.
    if right_prec < prec or (right_prec == prec and op in "-/"):
        right_text = f"({right_text})"
    return f"{left_text}{op}{right_text}", prec


def _splits(mask: int):
    """Each unordered split of mask into two non-empty halves once, smaller half first."""
    lowest = mask & -mask
    sub = (mask - 1) & mask
    while sub:
        if sub & lowest:
            rest = mask ^ sub
            yield (sub, rest) if sub.bit_count() <= rest.bit_count() else (rest, sub)
        sub = (sub - 1) & mask


class _Solver:
    def __init__(self, numbers: list[int], ops: str):
        self.numbers = numbers
        self.ops = ops
        self.values: dict[int, dict[Fraction, Expr]] = {}
        self.dead_ends: set[tuple[int, Fraction]] = set()

    def all_values(self, mask: int) -> dict[Fraction, Expr]:
        """Every value reachable with exactly the numbers in mask (small masks only)."""
        if mask in self.values:
            return self.values[mask]
        if mask.bit_count() == 1:
            number = self.numbers[mask.bit_length() - 1]
            self.values[mask] = {Fraction(number): (str(number), _PRECEDENCE["atom"])}
            return self.values[mask]
        reached: dict[Fraction, Expr] = {}
        for small, large in _splits(mask):
            pairs = itertools.product(self.all_values(small).items(), self.all_values(large).items())
            for first, second in pairs:
                for op in self.ops:
                    # + and * commute; - and / need both operand orders.
                    orders = ((first, second), (second, first)) if op in "-/" else ((first, second),)
                    for (left, left_expr), (right, right_expr) in orders:
                        value = apply_operator(op, left, right)
                        if value is not None and value not in reached:
                            reached[value] = _format(op, left_expr, right_expr)
        self.values[mask] = reached
        return reached

    def _needed(self, a: Fraction, target: Fraction):
        """(op, a_is_left, b) for each way `a op b` or `b op a` can equal target; b None = any."""
        for op in self.ops:
            if op == "+":
                yield op, True, target - a
            elif op == "-":
                yield op, True, a - target
                yield op, False, target + a
            elif op == "*":
                if a != 0:
                    yield op, True, target / a
                elif target == 0:
                    yield op, True, None
            else:
                if a != 0 and target != 0:
                    yield op, True, a / target
                elif a == 0 and target == 0:
                    yield op, True, None  # 0 / b for any non-zero b
                if a != 0:
                    yield op, False, target * a

    def _find_side(self, mask: int, needed: Fraction | None, op: str) -> Expr | None:
        if needed is None:  # any value works; division needs a non-zero divisor
            return next((e for v, e in self.all_values(mask).items() if op != "/" or v != 0), None)
        if op == "/" and needed == 0:
            return None
        return self.reach(mask, needed)

    def reach(self, mask: int, target: Fraction) -> Expr | None:
        """An expression over exactly the numbers in mask equal to target, or None."""
        if mask.bit_count() <= _ENUMERATE_SIZE:
            return self.all_values(mask).get(target)
        if (mask, target) in self.dead_ends:
            return None
        for small, large in _splits(mask):
            for a, a_expr in self.all_values(small).items():
                for op, a_is_left, needed in self._needed(a, target):
                    b_expr = self._find_side(large, needed, op if a_is_left else "")
                    if b_expr is not None:
                        return _format(op, a_expr, b_expr) if a_is_left else _format(op, b_expr, a_expr)
        self.dead_ends.add((mask, target))
        return None


def solve_countdown(numbers: list[int], target: int, ops: str = "+-*/") -> str | None:
    """One expression that uses every number once and equals target, or None if none exists.

    Exhaustive over all binary expression trees, in exact Fraction arithmetic (intermediate
    fractions are allowed, as in the checker). Up to 6 non-negative numbers; measured on a busy
    2-core CPU: 4 numbers about 3 ms, 5 about 20 ms, 6 about 0.1 s (1.3 s when no solution
    exists and all values differ). The result always passes ``countdown_check``.

    >>> solve_countdown([1, 3, 4, 6], 24)
    '6/(1-3/4)'
    >>> solve_countdown([2, 2], 5) is None
    True
    """
    if not 1 <= len(numbers) <= MAX_SOLVER_NUMBERS:
        raise ValueError(f"solve_countdown handles 1 to {MAX_SOLVER_NUMBERS} numbers, got {len(numbers)}")
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in numbers):
        raise ValueError(f"numbers must be non-negative integers, got {numbers!r}")
    if not ops or set(ops) - set("+-*/"):
        raise ValueError(f"ops must be a non-empty subset of '+-*/', got {ops!r}")
    solver = _Solver(list(numbers), "".join(dict.fromkeys(ops)))
    found = solver.reach((1 << len(numbers)) - 1, Fraction(target))
    return None if found is None else found[0]
