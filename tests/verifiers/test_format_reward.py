"""Tables of completions for the three format rewards, with the reason for each expected value."""

import time

import pytest

from verifiers.format_reward import format_lenient, format_strict, format_tags, full_response, strip_trailing_eos

PLAIN = {"meta": {}}
AFTER_THINK = {"meta": {"prompt_ends_with_think": True}}

# (id, completion, example, strict, lenient, tags): the id says why.
CASES = [
    ("canonical", "<think>2+2=4</think><answer>4</answer>", PLAIN, 1.0, 1.0, 1.0),
    ("newlines_between_blocks", "<think>\n2+2=4\n</think>\n\n<answer>\n4\n</answer>\n", PLAIN, 1.0, 1.0, 1.0),
    ("leading_whitespace", "  \n<think>r</think><answer>4</answer>", PLAIN, 1.0, 1.0, 1.0),
    ("trailing_eos_markers", "<think>r</think><answer>4</answer><|im_end|>\n<|endoftext|>", PLAIN, 1.0, 1.0, 1.0),
    ("trailing_sentencepiece_eos", "<think>r</think><answer>4</answer></s>", PLAIN, 1.0, 1.0, 1.0),
    ("prompt_ends_with_think", "2+2=4</think>\n<answer>4</answer>", AFTER_THINK, 1.0, 1.0, 1.0),
    ("no_flag_missing_open_tag", "2+2=4</think>\n<answer>4</answer>", PLAIN, 0.0, 0.0, 0.75),
    ("flag_but_think_repeated", "<think>2+2=4</think><answer>4</answer>", AFTER_THINK, 0.0, 0.0, 0.75),
    ("empty_reasoning", "<think></think><answer>4</answer>", PLAIN, 0.0, 1.0, 1.0),
    ("whitespace_reasoning", "<think> \n\t </think><answer>4</answer>", PLAIN, 0.0, 1.0, 1.0),
    ("empty_reasoning_after_prompt_think", "</think><answer>4</answer>", AFTER_THINK, 0.0, 1.0, 1.0),
    ("empty_answer", "<think>r</think><answer> </answer>", PLAIN, 0.0, 1.0, 1.0),
    ("duplicate_answer_blocks", "<think>r</think><answer>4</answer><answer>5</answer>", PLAIN, 0.0, 0.0, 0.5),
    ("duplicate_think_blocks", "<think>a</think><think>b</think><answer>4</answer>", PLAIN, 0.0, 0.0, 0.5),
    ("trailing_text", "<think>r</think><answer>4</answer> Hope this helps!", PLAIN, 0.0, 1.0, 1.0),
    ("text_before_think", "Sure! <think>r</think><answer>4</answer>", PLAIN, 0.0, 1.0, 1.0),
    ("text_between_blocks", "<think>r</think> so: <answer>4</answer>", PLAIN, 0.0, 1.0, 1.0),
    ("answer_before_think", "<answer>4</answer><think>r</think>", PLAIN, 0.0, 0.0, 0.0),
    # </think> after both answer tags puts it out of order with them: only <think> earns credit.
    ("answer_inside_think", "<think>r<answer>4</answer></think>", PLAIN, 0.0, 0.0, 0.25),
    ("unclosed_answer", "<think>r</think><answer>4", PLAIN, 0.0, 0.0, 0.75),
    ("unclosed_think", "<think>still going", PLAIN, 0.0, 0.0, 0.25),
    ("swapped_think_tags", "</think>r<think><answer>4</answer>", PLAIN, 0.0, 0.0, 0.5),
    ("no_tags", "The answer is 4.", PLAIN, 0.0, 0.0, 0.0),
    ("empty_completion", "", PLAIN, 0.0, 0.0, 0.0),
    ("empty_completion_after_prompt_think", "", AFTER_THINK, 0.0, 0.0, 0.25),
    ("uppercase_tags_do_not_count", "<THINK>r</THINK><ANSWER>4</ANSWER>", PLAIN, 0.0, 0.0, 0.0),
    ("tag_with_attribute_is_not_the_tag", "<think id=1>r</think><answer>4</answer>", PLAIN, 0.0, 0.0, 0.75),
    ("eos_in_the_middle_then_text", "<think>r</think><answer>4</answer><|im_end|>more", PLAIN, 0.0, 1.0, 1.0),
]


@pytest.mark.parametrize(
    ("completion", "example", "strict", "lenient", "tags"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_format_table(completion, example, strict, lenient, tags):
    assert format_strict(completion, example) == strict
    assert format_lenient(completion, example) == lenient
    assert format_tags(completion, example) == tags


@pytest.mark.parametrize(
    "example",
    [None, {}, {"meta": None}, {"meta": "not a dict"}, {"meta": {"prompt_ends_with_think": False}}],
    ids=["none", "no_meta", "meta_none", "meta_not_dict", "flag_false"],
)
def test_missing_or_odd_meta_means_no_virtual_think(example):
    assert full_response("x", example) == "x"
    assert format_strict("<think>r</think><answer>4</answer>", example) == 1.0


def test_strip_trailing_eos_removes_repeated_markers_and_whitespace_only_at_the_end():
    assert strip_trailing_eos("a<|im_end|> b \n<|im_end|>\n</s>") == "a<|im_end|> b"


def test_format_rewards_are_linear_time_on_long_hostile_text():
    # Thousands of unmatched tags defeat backtracking regexes; counting stays linear.
    hostile = "<think>" * 50_000 + "</think><answer>" * 50_000 + "x" * 1_000_000
    start_s = time.perf_counter()
    for reward in (format_strict, format_lenient, format_tags):
        assert reward(hostile, PLAIN) == 0.0
    assert time.perf_counter() - start_s < 2.0
