"""pass@k, maj@k and summarise_samples: hand-computed values, tie rules, errors."""
from __future__ import annotations

import doctest
import math
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stages.core import eval_metrics
from stages.core.eval_metrics import (bootstrap_interval, maj_at_k, normalise_answer, paired_bootstrap, pass_at_k,
                                      per_prompt_accuracy, pool_per_prompt, summarise_samples)


def exact_pass_at_k(n: int, c: int, k: int) -> float:
    """The textbook formula with exact integers, to check the product form against."""
    return float(1 - Fraction(math.comb(n - c, k), math.comb(n, k)))


# (n, c, k, expected, reason)
PASS_AT_K_CASES = [
    (8, 2, 4, 1 - 15 / 70, "the brief's example: 1 - C(6,4)/C(8,4)"),
    (4, 1, 2, 0.5, "1 - C(3,2)/C(4,2) = 1 - 3/6"),
    (10, 3, 1, 0.3, "k=1 is the fraction correct"),
    (5, 0, 3, 0.0, "no correct sample: pass@k is 0 for every k"),
    (5, 5, 1, 1.0, "all correct"),
    (6, 4, 3, 1.0, "n-c=2 < k=3: every 3-subset holds a correct sample"),
    (10, 2, 10, 1.0, "k=n: passes when any sample is correct"),
    (100, 1, 10, 0.1, "one correct in 100, 10 draws: 10/100"),
    (20, 5, 4, 1 - 1365 / 4845, "1 - C(15,4)/C(20,4)"),
]


@pytest.mark.parametrize("n, c, k, expected, reason", PASS_AT_K_CASES, ids=[case[-1] for case in PASS_AT_K_CASES])
def test_pass_at_k_hand_computed(n, c, k, expected, reason):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12), reason


def test_pass_at_k_stable_for_large_n():
    # C(1000, 50) is about 1e85: the naive ratio of binomials in floats would overflow.
    assert pass_at_k(1000, 10, 50) == pytest.approx(exact_pass_at_k(1000, 10, 50), rel=1e-12)
    assert pass_at_k(5000, 1, 1) == pytest.approx(1 / 5000)


@pytest.mark.parametrize("n, c, k, error, reason", [
    (4, 1, 5, ValueError, "k > n: cannot draw 5 of 4 samples"),
    (4, 5, 1, ValueError, "more correct than samples"),
    (4, -1, 1, ValueError, "negative correct count"),
    (0, 0, 1, ValueError, "no samples"),
    (4, 1, 0, ValueError, "k must be at least 1"),
    (4.0, 1, 1, TypeError, "float sample count is a caller bug"),
    (4, True, 1, TypeError, "a bool is not a count"),
])
def test_pass_at_k_rejects_bad_arguments(n, c, k, error, reason):
    with pytest.raises(error):
        pass_at_k(n, c, k)


def test_pass_at_k_error_names_k_and_n():
    with pytest.raises(ValueError, match=r"num_samples=4\], got k=5"):
        pass_at_k(4, 1, 5)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 40).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n), st.integers(1, n))))
def test_pass_at_k_matches_exact_formula_and_is_monotone_in_k(args):
    n, c, k = args
    assert pass_at_k(n, c, k) == pytest.approx(exact_pass_at_k(n, c, k), abs=1e-9)
    if k < n:
        assert pass_at_k(n, c, k + 1) >= pass_at_k(n, c, k) - 1e-12
    assert pass_at_k(n, c, 1) == pytest.approx(c / n)


# (answers, correct, k, expected, reason)
MAJ_CASES = [
    (["1", "2", "2", "1"], [True, False, False, True], 4, 1.0, "2-2 tie: '1' appeared first and is correct"),
    (["2", "1", "1", "2"], [False, True, True, False], 4, 0.0, "2-2 tie: '2' appeared first and is wrong"),
    (["2", "1", "1", "2"], [False, True, True, False], 3, 1.0, "first 3: '1' has two votes"),
    (["5", "6", "6", "6"], [True, False, False, False], 2, 1.0, "only the first k count: the later '6' majority is ignored"),
    ([None, None, "5"], [False, False, True], 2, 0.0, "no answer among the first 2 -> 0"),
    ([None, None, None], [False, False, False], 3, 0.0, "all None -> 0"),
    ([None, None, "5", "6"], [False, False, True, False], 4, 1.0, "None casts no vote: 1-1 tie, '5' first"),
    (["x = 3", "x=3.", "4", "4"], [True, True, False, False], 4, 1.0, "normalisation pools 'x = 3' and 'x=3.': tie, first wins"),
    (["3", "3.0", "3.0"], [True, True, True], 3, 1.0, "'3.0' wins 2-1 (not merged with '3'); it is correct"),
    (["7", "8", "8"], [False, True, True], 3, 1.0, "clear majority for a correct answer"),
    (["7", "7", "8"], [False, False, True], 3, 0.0, "clear majority for a wrong answer"),
    (["", "  ", "9"], [False, False, False], 3, 0.0, "blank answers count as None; '9' wins and is wrong"),
]


@pytest.mark.parametrize("answers, correct, k, expected, reason", MAJ_CASES, ids=[case[-1] for case in MAJ_CASES])
def test_maj_at_k_cases(answers, correct, k, expected, reason):
    assert maj_at_k(answers, correct, k) == expected, reason


def test_maj_at_k_verdict_comes_from_first_sample_of_winner():
    # Two samples share a normalised answer but carry different verdicts: the first one decides.
    assert maj_at_k(["a", "a", "b"], [True, False, False], k=3) == 1.0
    assert maj_at_k(["a", "a", "b"], [False, True, False], k=3) == 0.0


@pytest.mark.parametrize("answers, correct, k, reason", [
    (["1", "2"], [True], 1, "lengths differ"),
    (["1", "2"], [True, False], 3, "k larger than the samples"),
    (["1", "2"], [True, False], 0, "k = 0"),
])
def test_maj_at_k_rejects_bad_arguments(answers, correct, k, reason):
    with pytest.raises(ValueError):
        maj_at_k(answers, correct, k)


@pytest.mark.parametrize("raw, expected, reason", [
    (" 42 ", "42", "surrounding whitespace"),
    ("$x = 3$.", "x=3", "dollars, inner spaces and the full stop"),
    ("1, 2", "1,2", "inner whitespace only"),
    ("3.5", "3.5", "a decimal point inside is kept"),
    ("", None, "empty"),
    ("$$", None, "only dollars"),
    (None, None, "no answer"),
])
def test_normalise_answer(raw, expected, reason):
    assert normalise_answer(raw) == expected, reason


def sample(prompt_id, index, answer, correct, tokens, format_ok=True, truncated=False, reward=None, rewards=None):
    reward = (1.0 if correct else 0.0) + (0.1 if format_ok else 0.0) if reward is None else reward
    rewards = {"acc": 1.0 if correct else 0.0, "format": 0.1 if format_ok else 0.0} if rewards is None else rewards
    return {"prompt_id": prompt_id, "sample_index": index, "completion": f"<answer>{answer}</answer>", "answer": answer,
            "reward": reward, "rewards": rewards, "correct": correct, "format_ok": format_ok,
            "truncated": truncated, "num_tokens": tokens}


def hand_made_samples() -> list[dict]:
    """Three prompts, four samples each (see the expected values in the test for the arithmetic)."""
    prompt_a = [sample("a", 0, "3", True, 10), sample("a", 1, "3", True, 20), sample("a", 2, "4", False, 30),
                sample("a", 3, None, False, 40, format_ok=False, truncated=True)]
    prompt_b = [sample("b", 0, "7", False, 50), sample("b", 1, "8", True, 60), sample("b", 2, "8", True, 70),
                sample("b", 3, "7", False, 80)]
    prompt_c = [sample("c", i, None, False, 100, format_ok=False, truncated=True) for i in range(4)]
    # b's rows arrive out of sampling order: the summary must sort by sample_index before voting.
    return prompt_a + prompt_b[::-1] + prompt_c


def test_summarise_samples_hand_computed():
    scores = summarise_samples(hand_made_samples(), ks=[4, 1, 2, 3, 8])
    assert scores["num_prompts"] == 3
    assert scores["num_samples"] == 12
    assert scores["num_samples_per_prompt"] == 4
    assert scores["pass@1"] == pytest.approx(4 / 12)
    # k=2: a and b each 1 - C(2,2)/C(4,2) = 5/6, c 0.   k=3 and 4: a, b 1, c 0.
    assert scores["pass@k"] == pytest.approx({"1": 1 / 3, "2": 5 / 9, "3": 2 / 3, "4": 2 / 3})
    assert list(scores["pass@k"]) == ["1", "2", "3", "4"]
    # maj: a always votes '3' (right); b votes '7' (k=1), tie 7/8 -> '7' (k=2, 4), '8' (k=3); c never answers.
    assert scores["maj@k"] == pytest.approx({"1": 1 / 3, "2": 1 / 3, "3": 2 / 3, "4": 1 / 3})
    assert scores["skipped_k"] == {"8": "needs 8 samples per prompt, have 4"}
    assert scores["format_rate"] == pytest.approx(7 / 12)
    assert scores["truncation_rate"] == pytest.approx(5 / 12)
    assert scores["mean_length"] == pytest.approx(760 / 12)
    assert scores["mean_length_correct"] == pytest.approx((10 + 20 + 60 + 70) / 4)
    assert scores["mean_length_incorrect"] == pytest.approx((30 + 40 + 50 + 80 + 400) / 8)
    assert scores["mean_reward"] == pytest.approx((2.3 + 2.4 + 0.0) / 12)
    assert scores["rewards"] == pytest.approx({"acc": 4 / 12, "format": 0.7 / 12})


def test_summarise_samples_is_json_plain():
    import json

    scores = summarise_samples(hand_made_samples(), ks=[2])
    assert json.loads(json.dumps(scores)) == scores  # no numpy floats or tuples survive


def test_summarise_samples_none_lengths_and_missing_reward_parts():
    rows = [sample("p", 0, "1", False, 5, rewards={}), sample("p", 1, "2", False, 7, rewards={"acc": 0.0})]
    scores = summarise_samples(rows, ks=[1, 2])
    assert scores["mean_length_correct"] is None, "no correct sample"
    assert scores["mean_length_incorrect"] == 6.0
    assert scores["rewards"] == {"acc": 0.0}, "a part is averaged over the samples that report it"


def test_summarise_samples_uneven_prompts_skip_k_by_smallest_group():
    rows = [sample("p", i, "1", True, 5) for i in range(4)] + [sample("q", i, "2", i == 0, 5) for i in range(2)]
    scores = summarise_samples(rows, ks=[2, 4])
    assert scores["num_samples_per_prompt"] == 2
    assert scores["pass@k"] == pytest.approx({"2": (1.0 + 1.0) / 2})
    assert "4" in scores["skipped_k"]
    assert scores["pass@1"] == pytest.approx(5 / 6), "pass@1 averages over all samples"


@pytest.mark.parametrize("mutate, match, reason", [
    (lambda rows: rows[3].pop("correct"), r"sample 3 .*missing field.*correct", "missing verdict"),
    (lambda rows: rows[0].pop("num_tokens"), r"sample 0 .*num_tokens", "missing length"),
    (lambda rows: rows[1].update(sample_index=0), r"duplicate prompt_id='a' sample_index=0", "same sample twice"),
])
def test_summarise_samples_rejects_bad_rows(mutate, match, reason):
    rows = hand_made_samples()
    mutate(rows)
    with pytest.raises(ValueError, match=match):
        summarise_samples(rows, ks=[1])


@pytest.mark.parametrize("samples, ks, reason", [
    ([], [1], "no samples"),
    (None, [0], "k = 0"),
    (None, [1.5], "float k"),
])
def test_summarise_samples_rejects_bad_arguments(samples, ks, reason):
    with pytest.raises(ValueError):
        summarise_samples(hand_made_samples() if samples is None else samples, ks=ks)


def test_module_docstring_examples():
    result = doctest.testmod(eval_metrics)
    assert result.attempted >= 8 and result.failed == 0


# ----------------------------------------------------------------------------- intervals and paired tests


def test_bootstrap_interval_is_deterministic_and_covers_the_mean():
    values = [1.0, 0.0, 0.5, 0.25, 1.0, 0.75] * 5
    first = bootstrap_interval(values, seed=3)
    assert first == bootstrap_interval(values, seed=3), "the same seed gives the same interval"
    mean = sum(values) / len(values)
    assert first[0] < mean < first[1]


def test_bootstrap_interval_shrinks_with_more_prompts():
    small = bootstrap_interval([0.0, 1.0] * 10)
    large = bootstrap_interval([0.0, 1.0] * 500)
    assert (large[1] - large[0]) < (small[1] - small[0]) / 4, "width falls like 1/sqrt(prompts)"


def test_bootstrap_interval_matches_the_normal_approximation():
    # 200 prompts of 0/1 with mean 0.5: the standard error is sqrt(0.25/200) = 0.0354, so the 95%
    # interval is about +-0.069.
    low, high = bootstrap_interval([0.0, 1.0] * 100, num_resamples=4000)
    assert 0.12 < high - low < 0.16


@pytest.mark.parametrize("values, match", [([], "non-empty"), ([0.5, float("nan")], "finite"), ([[1.0]], "shape")])
def test_bootstrap_interval_rejects_bad_values(values, match):
    with pytest.raises(ValueError, match=match):
        bootstrap_interval(values)


def test_paired_bootstrap_sees_a_small_consistent_gain_that_unpaired_intervals_miss():
    # Prompt difficulty varies widely; B gains 0.1 on every prompt. The two unpaired intervals overlap,
    # the paired difference is clearly above zero.
    difficulty = [i / 40 for i in range(40)]
    a = {f"p{i}": min(1.0, d + 0.1) for i, d in enumerate(difficulty)}
    b = {f"p{i}": d for i, d in enumerate(difficulty)}
    a_low, _ = bootstrap_interval(list(a.values()))
    _, b_high = bootstrap_interval(list(b.values()))
    assert a_low < b_high, "unpaired intervals overlap"
    result = paired_bootstrap(a, b)
    assert result["significant"] and result["interval"][0] > 0 and result["p_value"] < 0.05


def test_paired_bootstrap_noise_is_not_significant():
    a = {f"p{i}": float(i % 2) for i in range(40)}
    b = {f"p{i}": float((i // 2) % 2) for i in range(40)}  # the same mean, different prompts right
    result = paired_bootstrap(a, b)
    assert result["difference"] == 0.0 and not result["significant"] and result["p_value"] > 0.5


def test_paired_bootstrap_uses_shared_prompts_only_and_refuses_none():
    result = paired_bootstrap({"a": 1.0, "b": 1.0, "only_a": 0.0}, {"a": 0.0, "b": 0.0, "only_b": 1.0})
    assert result["num_prompts"] == 2 and result["difference"] == 1.0
    with pytest.raises(ValueError, match="share no prompt"):
        paired_bootstrap({"a": 1.0}, {"b": 1.0})


def test_seeds_pool_per_prompt_before_resampling():
    seeds = [{"p0": 1.0, "p1": 0.0}, {"p0": 0.5, "p1": 0.5}, {"p0": 0.0, "p1": 1.0, "p2": 1.0}]
    assert pool_per_prompt(seeds) == {"p0": 0.5, "p1": 0.5}, "prompts every seed has"
    with pytest.raises(ValueError, match="no runs"):
        pool_per_prompt([])


def test_summary_carries_avg_at_n_interval_and_per_prompt():
    rows = [dict(prompt_id=p, sample_index=i, answer="1", reward=float(c), correct=c, format_ok=True, truncated=False,
                 num_tokens=5) for p, verdicts in (("x", [True, True]), ("y", [True, False]), (7, [False, False]))
            for i, c in enumerate(verdicts)]
    scores = summarise_samples(rows, ks=[1])
    assert scores["per_prompt"] == {"x": 1.0, "y": 0.5, "7": 0.0} == per_prompt_accuracy(rows)
    assert scores["avg@n"] == 0.5
    low, high = scores["avg@n_interval"]
    assert 0.0 <= low <= 0.5 <= high <= 1.0


def test_maj_at_k_equivalence_checker_that_raises_only_splits_the_vote():
    def broken(a, b):
        raise RuntimeError("checker down")

    assert maj_at_k(["2", "3", "3"], [False, True, True], k=3, equivalent=broken) == 1.0


def test_pool_scores_over_seeds():
    from stages.core.eval_metrics import pool_scores

    seeds = [{"per_prompt": {f"p{i}": float(i % 2) for i in range(20)}, "mean_length": 30.0,
              "reflection": {"all": {"reflection_rate": 0.2}}},
             {"per_prompt": {f"p{i}": 1.0 for i in range(20)}, "mean_length": 50.0,
              "reflection": {"all": {"reflection_rate": 0.4}}}]
    pooled = pool_scores(seeds)
    assert pooled["avg@n"] == 0.75 and pooled["mean_length"] == 40.0 and pooled["num_seeds"] == 2
    assert pooled["reflection"]["all"]["reflection_rate"] == pytest.approx(0.3)
    low, high = pooled["avg@n_interval"]
    assert low < 0.75 < high
    with pytest.raises(ValueError, match=r"scores \[0\] have no per_prompt"):
        pool_scores([{"avg@n": 0.5}])


# ----------------------------------------------------------------------------- across seeds

@pytest.mark.parametrize("probability, dof, expected, reason", [
    (0.975, 1, 12.7062, "Cauchy: tan(0.475 pi)"),
    (0.975, 2, 4.3027, "closed form (2p - 1) / sqrt(2p(1 - p))"),
    (0.975, 3, 3.1824, "table value"),
    (0.975, 9, 2.2622, "table value"),
    (0.95, 4, 2.1318, "table value, a 90% interval"),
    (0.975, 200, 1.9719, "near the normal 1.96"),
])
def test_student_t_quantile_matches_tables(probability, dof, expected, reason):
    assert eval_metrics.student_t_quantile(probability, dof) == pytest.approx(expected, abs=1e-4), reason


@pytest.mark.parametrize("probability, dof", [(0.5, 2), (1.0, 2), (0.975, 0), (0.975, 1.5), (0.975, True)])
def test_student_t_quantile_rejects_bad_arguments(probability, dof):
    with pytest.raises(ValueError, match="student_t_quantile"):
        eval_metrics.student_t_quantile(probability, dof)


def test_seed_interval_hand_computed():
    # Three seeds 0.1, 0.2, 0.6: mean 0.3, sd sqrt(0.07), se sqrt(0.07 / 3) = 0.152753; t(0.975, 2) = 4.302653.
    result = eval_metrics.seed_interval([0.1, 0.2, 0.6])
    assert result["mean"] == pytest.approx(0.3) and result["num_seeds"] == 3
    assert result["low"] == pytest.approx(0.3 - 4.302653 * 0.152753, abs=1e-5)
    assert result["high"] == pytest.approx(0.3 + 4.302653 * 0.152753, abs=1e-5)
    same = eval_metrics.seed_interval([0.4, 0.4])
    assert (same["low"], same["high"]) == (pytest.approx(0.4), pytest.approx(0.4)), "no spread, no width"
    with pytest.raises(ValueError, match="seed_interval"):
        eval_metrics.seed_interval([])


def test_seed_curve_uses_steps_every_seed_logged():
    curve = eval_metrics.seed_curve([([0, 1, 2], [0.0, 0.2, 0.4]), ([1, 2, 3], [0.4, 0.6, 0.8])])
    assert curve["steps"] == [1, 2] and curve["mean"] == pytest.approx([0.3, 0.5])
    assert curve["low"][0] == pytest.approx(0.3 - 12.7062 * 0.1, abs=1e-4)
    single = eval_metrics.seed_curve([([0, 1], [0.1, 0.2])])
    assert single["low"] == [None, None] and single["num_seeds"] == 1


def test_pool_scores_averages_pass_and_maj_tables_over_the_ks_every_seed_has():
    seeds = [{"per_prompt": {"a": 1.0, "b": 0.0}, "pass@1": 0.5, "pass@k": {"1": 0.5, "4": 0.75}, "maj@k": {"1": 0.5}},
             {"per_prompt": {"a": 0.0, "b": 0.0}, "pass@1": 0.0, "pass@k": {"1": 0.0}, "maj@k": {"1": 0.0}}]
    pooled = eval_metrics.pool_scores(seeds)
    assert pooled["pass@1"] == 0.25 and pooled["pass@k"] == {"1": 0.25} and pooled["maj@k"] == {"1": 0.25}
    assert pooled["avg@n"] == 0.25 and pooled["per_prompt"] == {"a": 0.5, "b": 0.0}
