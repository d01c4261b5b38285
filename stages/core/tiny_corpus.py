"""The synthetic corpus the tiny base is pretrained on, so that it is a *weak* base.

R1-Zero starts from a base that already knows the task's pieces but uses them unreliably. We
make that on purpose: each Countdown problem is written out in one of several styles,

- ``careful``: propose a step-by-step attempt, check it against the target ("no"/"yes") and try
  again until one hits (at most ``max_attempts``); long, and usually right;
- ``guess``: one attempt, answered without checking; short, and usually wrong;
- ``malformed``: the layout is broken (no closing </think>, no answer tags, a bare number);
- ``drill``: no prompt, just lines of arithmetic facts of the kind the traces use, so that the
  small model can check its attempts (pretraining text that teaches the pieces, not the task).

Attempts come from a proposal that is the reference chain with probability ``hint_prob`` and a
random clean chain otherwise. The base therefore samples each style at its corpus rate: pass@1
is low and pass@k is high, and GRPO has something to find (checking and retrying pays), which
shows up as the R1-Zero signature: accuracy and response length rise together.

Example:
    >>> import random
    >>> from stages.core.generators import random_countdown_problem
    >>> problem = random_countdown_problem(random.Random(0))
    >>> text = countdown_completion(random.Random(1), problem, style="careful", hint_prob=1.0, max_attempts=3)
    >>> text.endswith("</answer>") and " yes" in text
    True
"""
from __future__ import annotations

import random

from stages.core.generators import COUNTDOWN_OPS, Chain, CountdownProblem, random_chain

STYLES = ("careful", "guess", "malformed", "drill")


def propose(rng: random.Random, problem: CountdownProblem, hint_prob: float, ordered: bool = False,
            ops: str = COUNTDOWN_OPS) -> Chain:
    if rng.random() < hint_prob:
        return problem.chain
    return random_chain(rng, list(problem.numbers), ops, ordered=ordered) or problem.chain


def hits_target(chain: Chain, target: int) -> bool:
    return chain.values()[-1] == target


def countdown_completion(rng: random.Random, problem: CountdownProblem, *, style: str, hint_prob: float, max_attempts: int,
                         ordered: bool = False, ops: str = COUNTDOWN_OPS) -> str:
    """One completion (the text after the prompt's ``<think>``) in the given style."""
    if style == "careful":
        lines, attempt = [], propose(rng, problem, hint_prob, ordered, ops)
        for _ in range(max_attempts):
            hit = hits_target(attempt, problem.target)
            lines.append(f"{attempt.trace()} {'yes' if hit else 'no'}")
            if hit:
                break
            attempt = propose(rng, problem, hint_prob, ordered, ops)
        return "\n".join(lines) + f"</think><answer>{attempt.expression()}</answer>"  # out of attempts: answer the last try
    attempt = propose(rng, problem, hint_prob, ordered, ops)
    if style == "guess":
        return f"{attempt.trace()}</think><answer>{attempt.expression()}</answer>"
    if style == "malformed":
        variant = rng.randrange(3)
        if variant == 0:
            return f"{attempt.trace()}<answer>{attempt.expression()}</answer>"
        if variant == 1:
            return f"{attempt.trace()}</think>{attempt.expression()}"
        return f"{attempt.trace()}</think><answer>{problem.target}</answer>"
    raise ValueError(f"style: unknown {style!r}; allowed: {', '.join(STYLES)}")


def arithmetic_drill(rng: random.Random, problem: CountdownProblem, num_facts: int = 8, ordered: bool = False,
                     ops: str = COUNTDOWN_OPS) -> str:
    """Lines of step-by-step chain arithmetic over the problem's numbers, e.g. ``7+5=12,12-9=3``."""
    lines = []
    for _ in range(num_facts):
        chain = random_chain(rng, list(problem.numbers), ops, ordered=ordered) or problem.chain
        lines.append(chain.trace())
    return "\n".join(lines)


def sample_style(rng: random.Random, style_weights: dict[str, float]) -> str:
    names = list(style_weights)
    return rng.choices(names, weights=[style_weights[n] for n in names])[0]
