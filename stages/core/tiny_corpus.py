"""The synthetic corpus the tiny base is pretrained on, so that it is a *weak* base.

R1-Zero starts from a base that already knows the task's pieces but uses them unreliably, and
its "aha" (longer responses that re-check and retry) is latent in the base: RL amplifies
self-checking that pretraining put there, when checking pays (understand-r1-zero, SimpleRL-Zoo).
We make such a base on purpose: each Countdown problem is written out in one of several styles,

- ``careful``: propose a step-by-step attempt, check it against the target ("no"/"yes") and try
  again until one hits (at most ``max_attempts``); long, and right when its arithmetic is (the
  previous default's style: its words are in no published marker list);
- ``checking`` (the default corpus's reflecting minority, pipeline/config/default.yaml): open
  with "let me check", then try candidate chains in a fixed order (for ordered problems every
  clean chain, ``+`` before ``-``; otherwise distinct random chains), write each result beside
  the target and judge it (" vs 0 yes" / " vs 0 no, retry"), stopping at the first hit (at most
  ``max_attempts`` tries). "check" and "retry" are reflection markers of the
  published lists (stages/core/reflection.py), so GRPO's reflection rate counts these traces.
  Long, and right whenever the model's per-step arithmetic is;
- ``guess``: one attempt, answered without checking; short, and right only when the proposal
  happens to hit (the reference chain with probability ``hint_prob``, else a random clean chain);
- ``malformed``: the layout is broken (no closing </think>, no answer tags, a bare number);
- ``drill``: no prompt, just lines of arithmetic facts of the kind the traces use, so that the
  small model's arithmetic is reliable enough for its checks to mean something.

The base therefore samples each style at its corpus rate: pass@1 is middling, checking
completions are more often right than guesses, and GRPO has something to find (checking pays).
That shows as the R1-Zero signature: accuracy, response length and reflection rate rise together.

Example:
    >>> import random
    >>> from stages.core.generators import random_countdown_problem
    >>> problem = random_countdown_problem(random.Random(0), ops="+-", ordered=True)
    >>> text = countdown_completion(random.Random(1), problem, style="checking", hint_prob=0.0, max_attempts=4,
    ...                             ordered=True, ops="+-")
    >>> text.startswith(CHECK_OPENER) and text.endswith("</answer>") and " yes</think>" in text
    True
"""
from __future__ import annotations

import random

from stages.core.generators import COUNTDOWN_OPS, Chain, CountdownProblem, all_clean_chains, random_chain

STYLES = ("careful", "checking", "guess", "malformed", "drill")
# The checking style's words: an opener and a retry on a mismatch, both with markers from the
# published reflection lists ("check": understand-r1-zero; "retry": Open-Reasoner-Zero). The
# opener puts the choice to check at the first token, so GRPO's credit for checking lands on
# one decision, and every checking trace counts in the reflection rate, hit or miss.
CHECK_OPENER = "let me check\n"
VERDICT_HIT = " yes"
VERDICT_MISS = " no, retry"
# Each checked line writes the target beside its result ("...=15 vs 15 yes"): the verdict is then
# a comparison of two adjacent numbers. Without it the tiny base had to match its result against
# the prompt's target from afar, and its verdicts were near chance even with 95%-right arithmetic.
COMPARE_WORD = " vs "
# Ordered problems list all their clean chains as candidates: at most (2 * len(ops)) ** 2 for three numbers.
MAX_ENUMERATED_NUMBERS = 4


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
        return careful_completion(rng, problem, hint_prob=hint_prob, max_attempts=max_attempts, ordered=ordered, ops=ops)
    if style == "checking":
        return checking_completion(rng, problem, max_attempts=max_attempts, ordered=ordered, ops=ops)
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


def careful_completion(rng: random.Random, problem: CountdownProblem, *, hint_prob: float, max_attempts: int,
                       ordered: bool = False, ops: str = COUNTDOWN_OPS) -> str:
    """The careful style: proposals checked with "yes"/"no" until one hits; out of attempts, the last try.

    Example:
        >>> from stages.core.generators import random_countdown_problem
        >>> problem = random_countdown_problem(random.Random(1), ops="+-", ordered=True)
        >>> careful_completion(random.Random(0), problem, hint_prob=1.0, max_attempts=3, ordered=True, ops="+-")
        '3+2=5,5-5=0 yes</think><answer>(3+2)-5</answer>'
    """
    lines, attempt = [], propose(rng, problem, hint_prob, ordered, ops)
    for _ in range(max_attempts):
        hit = hits_target(attempt, problem.target)
        lines.append(f"{attempt.trace()} {'yes' if hit else 'no'}")
        if hit:
            break
        attempt = propose(rng, problem, hint_prob, ordered, ops)
    return "\n".join(lines) + f"</think><answer>{attempt.expression()}</answer>"


def check_candidates(rng: random.Random, problem: CountdownProblem, *, max_attempts: int, ordered: bool = False,
                     ops: str = COUNTDOWN_OPS) -> list[Chain]:
    """The chains a checking trace tries, in order, up to its first hit and at most ``max_attempts``.

    Ordered problems (small): every clean chain in a fixed order (``+`` before ``-``), a search the
    model can learn as a procedure. Otherwise distinct random clean chains, the reference chain
    joining at a random place so that the search always can succeed within ``max_attempts``.

    Example:
        >>> from stages.core.generators import random_countdown_problem
        >>> problem = random_countdown_problem(random.Random(1), ops="+-", ordered=True)
        >>> problem.numbers, problem.target
        ((3, 2, 5), 0)
        >>> [c.trace() for c in check_candidates(random.Random(0), problem, max_attempts=4, ordered=True, ops="+-")]
        ['3+2=5,5+5=10', '3+2=5,5-5=0']
    """
    if ordered and len(problem.numbers) <= MAX_ENUMERATED_NUMBERS:
        pool = all_clean_chains(problem.numbers, ops, ordered=True)
    else:
        pool = _distinct_random_chains(rng, problem, max_attempts, ops)
    tried = []
    for chain in pool[:max_attempts]:
        tried.append(chain)
        if hits_target(chain, problem.target):
            break
    return tried


def _distinct_random_chains(rng: random.Random, problem: CountdownProblem, count: int, ops: str) -> list[Chain]:
    chains, seen = [], set()
    for _ in range(count * 10):
        chain = random_chain(rng, list(problem.numbers), ops)
        if chain is not None and chain.trace() not in seen:
            seen.add(chain.trace())
            chains.append(chain)
        if len(chains) == count - 1:
            break
    if not any(hits_target(chain, problem.target) for chain in chains):
        chains.insert(rng.randrange(len(chains) + 1), problem.chain)
    return chains


def checking_completion(rng: random.Random, problem: CountdownProblem, *, max_attempts: int, ordered: bool = False,
                        ops: str = COUNTDOWN_OPS) -> str:
    """The checking style: "let me check", then one line per candidate (its result beside the target,
    and the verdict), then the answer.

    Example:
        >>> from stages.core.generators import random_countdown_problem
        >>> problem = random_countdown_problem(random.Random(1), ops="+-", ordered=True)
        >>> print(checking_completion(random.Random(0), problem, max_attempts=4, ordered=True, ops="+-"))
        let me check
        3+2=5,5+5=10 vs 0 no, retry
        3+2=5,5-5=0 vs 0 yes</think><answer>(3+2)-5</answer>
    """
    tried = check_candidates(rng, problem, max_attempts=max_attempts, ordered=ordered, ops=ops)
    lines = [f"{chain.trace()}{COMPARE_WORD}{problem.target}{VERDICT_HIT if hits_target(chain, problem.target) else VERDICT_MISS}"
             for chain in tried]
    # Out of attempts without a hit: answer the last try (wrong, as a real search that gives up would be).
    return CHECK_OPENER + "\n".join(lines) + f"</think><answer>{tried[-1].expression()}</answer>"


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
