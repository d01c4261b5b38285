"""Procedural task generators: Countdown (TinyZero's task) and multi-step arithmetic.

Both return plain example rows (see DESIGN.md's row contract) without a prompt template; the
``prepare_data`` stage applies the template. Generation is seeded and deterministic.

Example:
    >>> import random
    >>> problem = random_countdown_problem(random.Random(0), num_numbers=3, min_number=1, max_number=9)
    >>> sorted(problem.numbers) == sorted(problem.chain.numbers_used)
    True
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from fractions import Fraction

from verifiers.countdown import apply_operator

COUNTDOWN_OPS = "+-*/"


@dataclass(frozen=True)
class ChainStep:
    """One step of a left-deep chain: ``running op number`` or, when flipped, ``number op running``."""

    op: str
    number: int
    flipped: bool


@dataclass(frozen=True)
class Chain:
    """A left-deep expression over the numbers: start, then one step per remaining number.

    Left-deep chains are what the tiny model's reasoning traces enumerate ("7+5=12,12-9=3"); the
    generator builds every target from one, so every problem has a chain solution.
    """

    start: int
    steps: tuple[ChainStep, ...]

    @property
    def numbers_used(self) -> list[int]:
        return [self.start] + [step.number for step in self.steps]

    def values(self) -> list[Fraction]:
        """The running value after each step (exact)."""
        value, out = Fraction(self.start), []
        for step in self.steps:
            left, right = (Fraction(step.number), value) if step.flipped else (value, Fraction(step.number))
            value = apply_op(step.op, left, right)
            out.append(value)
        return out

    def expression(self) -> str:
        """The chain as one parenthesised expression, e.g. ``(7+5)-9`` or ``9-(7+5)``."""
        text = str(self.start)
        for index, step in enumerate(self.steps):
            operand = text if index == 0 else f"({text})"
            text = f"{step.number}{step.op}{operand}" if step.flipped else f"{operand}{step.op}{step.number}"
        return text

    def trace(self) -> str:
        """Step-by-step arithmetic, e.g. ``7+5=12,12-9=3``."""
        parts, value = [], Fraction(self.start)
        for step, new_value in zip(self.steps, self.values()):
            left, right = (step.number, value) if step.flipped else (value, step.number)
            parts.append(f"{_fmt(left)}{step.op}{_fmt(right)}={_fmt(new_value)}")
            value = new_value
        return ",".join(parts)


def _fmt(value: Fraction | int) -> str:
    value = Fraction(value)
    return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"


def apply_op(op: str, left: Fraction, right: Fraction) -> Fraction:
    """The Countdown reward's own arithmetic, raising on a division by zero."""
    if op not in COUNTDOWN_OPS:
        raise ValueError(f"unknown operator {op!r}; allowed: {COUNTDOWN_OPS}")
    value = apply_operator(op, left, right)
    if value is None:
        raise ZeroDivisionError("division by zero in a chain")
    return value


def chain_is_clean(chain: Chain) -> bool:
    """True when every running value is a non-negative integer (Countdown's usual rule)."""
    try:
        values = chain.values()
    except ZeroDivisionError:
        return False
    return all(v.denominator == 1 and v >= 0 for v in values)


def random_chain(rng: random.Random, numbers: list[int], ops: str = COUNTDOWN_OPS, max_tries: int = 50,
                 ordered: bool = False) -> Chain | None:
    """A random clean chain using every number once, or None after ``max_tries``.

    ``ordered``: combine the numbers in the given order, running value always on the left.
    """
    for _ in range(max_tries):
        order = numbers[:]
        if not ordered:
            rng.shuffle(order)
        steps = tuple(ChainStep(rng.choice(ops), n, not ordered and rng.random() < 0.5) for n in order[1:])
        chain = Chain(order[0], steps)
        if chain_is_clean(chain):
            return chain
    return None


@dataclass(frozen=True)
class CountdownProblem:
    numbers: tuple[int, ...]
    target: int
    chain: Chain  # one reference solution


def random_countdown_problem(
    rng: random.Random,
    *,
    num_numbers: int = 3,
    min_number: int = 1,
    max_number: int = 9,
    ops: str = COUNTDOWN_OPS,
    min_target: int = 0,
    max_target: int = 100,
    ordered: bool = False,
) -> CountdownProblem:
    """Draw numbers, then a target reached by a random clean chain over all of them.

    ``ordered`` (an easier variant for tiny models): the numbers are listed in the order of a
    left-to-right solution ``((a op b) op c)``, so a solver need not search over orders.
    """
    while True:
        numbers = [rng.randint(min_number, max_number) for _ in range(num_numbers)]
        chain = random_chain(rng, numbers, ops, ordered=ordered)
        if chain is None:
            continue
        target = chain.values()[-1]
        if min_target <= target <= max_target:
            return CountdownProblem(tuple(numbers), int(target), chain)


def countdown_question(numbers: tuple[int, ...] | list[int], target: int, style: str = "full",
                       ops: str = COUNTDOWN_OPS) -> str:
    """The question text (TinyZero's wording); ``compact`` keeps prompts short for character-level tiny models."""
    if style == "compact":
        return f"use {' '.join(map(str, numbers))} to make {target}"
    if style == "full":
        return (
            f"Using the numbers {list(numbers)}, create an equation that equals {target}. You can use basic "
            f"arithmetic operations ({', '.join(ops)}) and each number can only be used once."
        )
    raise ValueError(f"question_style: unknown style {style!r}; allowed: compact, full")


def countdown_rows(count: int, seed: int, *, question_style: str = "full", **problem_kwargs) -> list[dict]:
    """``count`` Countdown example rows (unique by numbers and target)."""
    rng = random.Random(seed)
    ops = problem_kwargs.get("ops", COUNTDOWN_OPS)
    rows, seen = [], set()
    attempts = 0
    while len(rows) < count:
        attempts += 1
        if attempts > count * 50:
            raise ValueError(f"countdown: could only make {len(rows)} distinct problems of {count}; widen the number or target range")
        problem = random_countdown_problem(rng, **problem_kwargs)
        # Ordered problems differ by the order of their numbers (it is part of the task).
        numbers_key = tuple(problem.numbers) if problem_kwargs.get("ordered") else tuple(sorted(problem.numbers))
        key = (numbers_key, problem.target)
        if key in seen:
            continue
        seen.add(key)
        rows.append({
            "id": f"countdown-{seed}-{len(rows)}",
            "source": "generator:countdown",
            "task": "countdown",
            "question": countdown_question(problem.numbers, problem.target, question_style, ops),
            "answer": problem.chain.expression(),
            "meta": {"numbers": list(problem.numbers), "target": problem.target,
                     "ordered": bool(problem_kwargs.get("ordered", False)), "ops": ops},
        })
    return rows


def random_arithmetic_expression(rng: random.Random, num_operations: int, max_number: int) -> tuple[str, Fraction]:
    """A random expression with ``num_operations`` binary operations (+ - *) and its exact value."""
    start = rng.randint(1, max_number)
    text, value = str(start), Fraction(start)
    for index in range(num_operations):
        op, number = rng.choice("+-*"), rng.randint(1, max_number)
        operand = text if index == 0 else f"({text})"
        if rng.random() < 0.5:
            text, value = f"{operand}{op}{number}", apply_op(op, value, Fraction(number))
        else:
            text, value = f"{number}{op}{operand}", apply_op(op, Fraction(number), value)
    return text, value


def arithmetic_rows(count: int, seed: int, *, num_operations: int = 3, max_number: int = 20) -> list[dict]:
    """Multi-step arithmetic rows (task ``math``, gold answer an integer string)."""
    rng = random.Random(seed)
    rows, seen = [], set()
    while len(rows) < count:
        text, value = random_arithmetic_expression(rng, num_operations, max_number)
        if text in seen:
            continue
        seen.add(text)
        rows.append({
            "id": f"arith-{seed}-{len(rows)}",
            "source": "generator:arithmetic",
            "task": "math",
            "question": f"Compute {text}.",
            "answer": _fmt(value),
            "meta": {"expression": text},
        })
    return rows


def all_clean_chains(numbers: list[int] | tuple[int, ...], ops: str = COUNTDOWN_OPS, ordered: bool = False) -> list[Chain]:
    """Every clean left-deep chain over the numbers (small inputs only: n! * (2*len(ops))^(n-1))."""
    from itertools import permutations, product

    if len(numbers) > 5:
        raise ValueError(f"numbers: at most 5 for exhaustive chains, got {len(numbers)}")
    chains = []
    orders = [tuple(numbers)] if ordered else set(permutations(numbers))
    flips = (False,) if ordered else (False, True)
    for order in orders:
        for choice in product(ops, flips, repeat=len(order) - 1):
            steps = tuple(ChainStep(choice[2 * i], order[i + 1], choice[2 * i + 1]) for i in range(len(order) - 1))
            chain = Chain(order[0], steps)
            if chain_is_clean(chain):
                chains.append(chain)
    return sorted(chains, key=lambda c: c.trace())


def find_chain(numbers: list[int] | tuple[int, ...], target: int, rng: random.Random | None = None,
               ordered: bool = False, ops: str = COUNTDOWN_OPS) -> Chain | None:
    """One clean chain that reaches ``target`` (a random one when ``rng`` is given), or None."""
    hits = [c for c in all_clean_chains(numbers, ops, ordered=ordered) if c.values()[-1] == target]
    if not hits:
        return None
    return rng.choice(hits) if rng else hits[0]
