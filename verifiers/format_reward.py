"""Format rewards for the R1-Zero layout ``<think>...</think><answer>...</answer>``.

DeepSeek-R1-Zero trains only on rule-based rewards: accuracy plus a *format* reward that asks the
model to put its reasoning between ``<think>`` tags and its final answer between ``<answer>`` tags.
Three variants live here, all ``(completion, example) -> float`` in ``[0, 1]``:

- ``format_strict``: the whole completion is exactly one think block, optional whitespace, one
  answer block, and nothing after ``</answer>`` except whitespace or end-of-sequence markers.
- ``format_lenient``: one think block and one answer block, in that order, anywhere in the text
  (text before, between and after is allowed).
- ``format_tags``: partial credit, 0.25 for each of the four tags that is used exactly once and
  sits in the right order relative to the other correctly-counted tags.

Prompt ending in ``<think>``
    Many R1-Zero templates end the prompt with ``<think>`` so the model starts reasoning at once;
    its completion then begins with the reasoning itself. Both layouts are supported: when
    ``example["meta"]["prompt_ends_with_think"]`` is true, a virtual ``<think>`` is prepended
    before checking. A model that repeats ``<think>`` in that case has two opening tags and
    loses strict, lenient and that tag's partial credit, because the text it shows the user
    would really contain a stray tag.

Decisions on the cases a popular regex (``^<think>.*?</think><answer>.*?</answer>$`` with
``re.search`` and DOTALL) gets wrong:

============================  =======  ========  =================================
case                          strict   lenient   tags
============================  =======  ========  =================================
empty / whitespace reasoning  0        1         1 (tags are used correctly)
empty / whitespace answer     0        1         1
duplicate answer blocks       0        0         0.5 (answer tags counted twice)
trailing text after answer    0        1         1
text before ``<think>``       0        1         1
============================  =======  ========  =================================

All checks count and locate tags with ``str.count``/``str.find``: linear time, no regex
backtracking, so hostile megabyte-long completions cost milliseconds.
"""

from __future__ import annotations

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
ANSWER_OPEN = "<answer>"
ANSWER_CLOSE = "</answer>"
# Canonical order of the four tags; format_tags gives 0.25 per tag.
TAGS_IN_ORDER = (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)

# End-of-sequence markers that a decoder may leave in the text when special tokens are not
# skipped (Qwen, GPT-2, Llama 2/3, SentencePiece models). They count as "nothing" after
# </answer> under the strict check.
EOS_MARKERS = ("<|endoftext|>", "<|im_end|>", "<|end_of_text|>", "<|eot_id|>", "</s>")


def prompt_ends_with_think(example: dict | None) -> bool:
    """Whether the prompt already ended with ``<think>`` (read from ``example["meta"]``).

    >>> prompt_ends_with_think({"meta": {"prompt_ends_with_think": True}})
    True
    >>> prompt_ends_with_think({})
    False
    """
    if not isinstance(example, dict):
        return False
    meta = example.get("meta") or {}
    return bool(meta.get("prompt_ends_with_think", False)) if isinstance(meta, dict) else False


def full_response(completion: str, example: dict | None) -> str:
    """The completion as the user would read it after the prompt's own ``<think>``, if any.

    >>> full_response("x</think>", {"meta": {"prompt_ends_with_think": True}})
    '<think>x</think>'
    """
    return THINK_OPEN + completion if prompt_ends_with_think(example) else completion


def strip_trailing_eos(text: str) -> str:
    """Remove trailing whitespace and end-of-sequence markers, repeatedly.

    >>> strip_trailing_eos("done</answer>\\n<|im_end|><|endoftext|>  ")
    'done</answer>'
    """
    while True:
        stripped = text.rstrip()
        for marker in EOS_MARKERS:
            if stripped.endswith(marker):
                stripped = stripped[: -len(marker)]
                break
        if stripped == text:
            return text
        text = stripped


def _each_tag_once(text: str) -> bool:
    return all(text.count(tag) == 1 for tag in TAGS_IN_ORDER)


def _tag_positions(text: str) -> list[int]:
    return [text.find(tag) for tag in TAGS_IN_ORDER]


def format_strict(completion: str, example: dict | None = None) -> float:
    """1.0 when the completion is exactly ``<think>R</think> <answer>A</answer>``, else 0.0.

    R and A must contain non-whitespace text; only whitespace may surround the blocks or sit
    between them, and only whitespace or EOS markers may follow ``</answer>``.

    >>> format_strict("<think>2+2 is 4</think>\\n<answer>4</answer>", {})
    1.0
    >>> format_strict("<think> </think><answer>4</answer>", {})
    0.0
    >>> format_strict("2+2 is 4</think><answer>4</answer>", {"meta": {"prompt_ends_with_think": True}})
    1.0
    """
    text = strip_trailing_eos(full_response(completion, example)).lstrip()
    if not _each_tag_once(text):
        return 0.0
    think_open, think_close, answer_open, answer_close = _tag_positions(text)
    if think_open != 0 or answer_close != len(text) - len(ANSWER_CLOSE):
        return 0.0
    if not think_close < answer_open:
        return 0.0
    reasoning = text[len(THINK_OPEN) : think_close]
    between = text[think_close + len(THINK_CLOSE) : answer_open]
    answer = text[answer_open + len(ANSWER_OPEN) : answer_close]
    if between.strip() or not reasoning.strip() or not answer.strip():
        return 0.0
    return 1.0


def format_lenient(completion: str, example: dict | None = None) -> float:
    """1.0 when each of the four tags appears exactly once, in think-then-answer order.

    Text may surround the blocks and the blocks may be empty; duplicates of any tag give 0.

    >>> format_lenient("Sure. <think></think> so <answer>4</answer> Done!", {})
    1.0
    >>> format_lenient("<think>a</think><answer>4</answer><answer>5</answer>", {})
    0.0
    """
    text = full_response(completion, example)
    if not _each_tag_once(text):
        return 0.0
    positions = _tag_positions(text)
    return 1.0 if positions == sorted(positions) else 0.0


def format_tags(completion: str, example: dict | None = None) -> float:
    """Partial credit: 0.25 per tag used exactly once and in order.

    A tag earns its 0.25 when it occurs exactly once and its position agrees with the canonical
    order (think-open, think-close, answer-open, answer-close) against every other tag that
    also occurs exactly once. A swapped pair therefore loses both tags, not just one.

    >>> format_tags("<think>a</think><answer>4", {})
    0.75
    >>> format_tags("</think><think><answer>4</answer>", {})
    0.5
    """
    text = full_response(completion, example)
    counted = [text.count(tag) == 1 for tag in TAGS_IN_ORDER]
    positions = _tag_positions(text)
    credit = 0.0
    for i, position in enumerate(positions):
        if not counted[i]:
            continue
        in_order = all(
            (position < positions[j]) == (i < j)
            for j in range(len(TAGS_IN_ORDER))
            if j != i and counted[j]
        )
        credit += 0.25 if in_order else 0.0
    return credit
