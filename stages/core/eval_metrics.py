"""Evaluation metrics over sampled completions: avg@n with intervals, pass@k, maj@k, paired tests.

The evaluation stage samples ``n`` completions per prompt, scores each with the verifier, and
hands the rows to ``summarise_samples``, whose dict becomes ``scores.json``. Pure Python and
numpy (no torch), so reports and tests import it cheaply.

One estimator: every accuracy is avg@n (the mean over the n samples of a prompt, then over
prompts), reported with a percentile-bootstrap 95% interval over prompts (``bootstrap_interval``).
Two policies on the same prompts differ significantly only when the paired bootstrap interval
of their difference excludes zero (``paired_bootstrap``). Several seeds of one run are pooled
per prompt first (``pool_per_prompt``), so the interval is still over prompts.

Example:
    >>> round(pass_at_k(num_samples=8, num_correct=2, k=4), 4)
    0.7857
    >>> maj_at_k(["12", "7", " 12 "], [True, False, True], k=3)
    1.0
"""
from __future__ import annotations

import re
from collections import defaultdict
from typing import Any, Callable, Sequence

import numpy as np

# Fields every sample row must carry (``completion`` and ``rewards`` are optional here: the
# summary does not read the text, and a run may log no named reward parts).
REQUIRED_SAMPLE_FIELDS = ("prompt_id", "sample_index", "answer", "reward", "correct", "format_ok", "truncated", "num_tokens")

_WHITESPACE = re.compile(r"\s+")


def pass_at_k(num_samples: int, num_correct: int, k: int) -> float:
    """Unbiased estimate of pass@k from ``num_correct`` correct out of ``num_samples`` samples.

    Chen et al. 2021 ("Evaluating Large Language Models Trained on Code"), eq. 1:
    ``1 - C(n-c, k) / C(n, k)``, the chance that at least one of k samples drawn without
    replacement from the n is correct. Written as the product ``prod_{i=n-c+1}^{n} (1 - k/i)``
    because the binomials overflow floats for n in the hundreds.

    Example:
        >>> round(pass_at_k(8, 2, 4), 6) == round(1 - 15 / 70, 6)
        True
        >>> pass_at_k(4, 0, 2), pass_at_k(4, 3, 2), round(pass_at_k(5, 2, 1), 6)
        (0.0, 1.0, 0.4)
    """
    for name, value in (("num_samples", num_samples), ("num_correct", num_correct), ("k", k)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"pass_at_k: {name} must be an int, got {value!r}")
    if num_samples < 1:
        raise ValueError(f"pass_at_k: num_samples must be >= 1, got {num_samples}")
    if not 0 <= num_correct <= num_samples:
        raise ValueError(f"pass_at_k: num_correct must be in [0, num_samples={num_samples}], got {num_correct}")
    if not 1 <= k <= num_samples:
        raise ValueError(f"pass_at_k: k must be in [1, num_samples={num_samples}], got k={k}; sample more completions per prompt")
    if num_samples - num_correct < k:
        return 1.0  # every k-subset holds a correct sample
    factors = 1.0 - k / np.arange(num_samples - num_correct + 1, num_samples + 1, dtype=np.float64)
    return float(1.0 - np.prod(factors))


def normalise_answer(answer: str | None) -> str | None:
    """The form in which answers are compared for voting: no whitespace, no wrapping ``$``, no
    trailing full stop. Empty answers become None (no answer).

    Deliberately light: the verifier decides correctness; this only decides which answers are
    "the same" for a vote, so ``x = 3`` and ``x=3.`` pool their votes but ``3`` and ``3.0`` don't.

    Example:
        >>> normalise_answer(" $x = 3$. "), normalise_answer("  "), normalise_answer(None)
        ('x=3', None, None)
    """
    if answer is None:
        return None
    text = _WHITESPACE.sub("", str(answer))
    text = text.rstrip(".").strip("$").rstrip(".")
    return text or None


def maj_at_k(answers: Sequence[str | None], correct: Sequence[bool], k: int,
             equivalent: Callable[[str, str], bool] | None = None) -> float:
    """Majority vote (self-consistency) over the first ``k`` samples of one prompt.

    Samples are taken in sampling order (the first k, not an expectation over k-subsets): with
    temperature sampling they are exchangeable, and this is what a user who draws k samples gets.
    Answers are compared after ``normalise_answer``. A missing answer (None) casts no vote; if all
    k are missing the result is 0. Ties go to the answer that appeared first. The result is the
    correctness of the first sample that gave the winning answer (samples with the same
    normalised answer normally share one verdict). ``equivalent(a, b)`` (e.g. the math checker's
    ``is_equivalent``) merges answers into equivalence classes, so ``1/2`` and ``0.5`` vote together;
    each answer joins the first class whose first answer it is equivalent to.

    Example:
        >>> maj_at_k(["1", "2", "2", "1"], [True, False, False, True], k=4)  # tie: "1" came first
        1.0
        >>> maj_at_k([None, None, "5"], [False, False, False], k=2)  # no answers among the first 2
        0.0
        >>> maj_at_k([None, "5", None], [False, True, False], k=3)  # None never wins a vote
        1.0
        >>> same_value = lambda a, b: float(a) == float(b)
        >>> maj_at_k(["0.5", "2", ".50", "2"], [True, False, True, False], k=4, equivalent=same_value)  # tie: 0.5 first
        1.0
    """
    if len(answers) != len(correct):
        raise ValueError(f"maj_at_k: {len(answers)} answers but {len(correct)} correctness flags")
    if not 1 <= k <= len(answers):
        raise ValueError(f"maj_at_k: k must be in [1, {len(answers)}] (the number of samples), got {k}")
    votes: dict[str, int] = {}
    first_verdict: dict[str, bool] = {}
    for answer, is_correct in zip(answers[:k], correct[:k]):
        key = normalise_answer(answer)
        if key is None:
            continue
        if key not in votes and equivalent is not None:
            key = next((seen for seen in votes if _safe_equivalent(equivalent, key, seen)), key)
        votes[key] = votes.get(key, 0) + 1
        first_verdict.setdefault(key, bool(is_correct))
    if not votes:
        return 0.0
    # dicts keep insertion order and max() returns the first maximum: ties go to first seen.
    winner = max(votes, key=votes.__getitem__)
    return 1.0 if first_verdict[winner] else 0.0


def _safe_equivalent(equivalent: Callable[[str, str], bool], a: str, b: str) -> bool:
    try:
        return bool(equivalent(a, b))
    except Exception:  # a checker that fails on odd input only splits the vote, never the stage
        return False


def bootstrap_interval(values: Sequence[float], *, num_resamples: int = 1000, level: float = 0.95,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap interval of the mean of ``values`` (one value per prompt).

    Resamples prompts with replacement ``num_resamples`` times; the interval is the
    ((1-level)/2, (1+level)/2) quantiles of the resampled means. Deterministic for a seed.

    Example:
        >>> bootstrap_interval([1.0] * 10)
        (1.0, 1.0)
        >>> low, high = bootstrap_interval([0.0, 1.0] * 50)
        >>> 0.38 < low < 0.5 < high < 0.62
        True
    """
    array = _checked_values(values, "bootstrap_interval")
    if not 0 < level < 1:
        raise ValueError(f"bootstrap_interval: level must be in (0, 1), got {level}")
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(array), size=(num_resamples, len(array)))  # (R, P)
    means = array[picks].mean(axis=1)  # (R,)
    tail = (1 - level) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


def _checked_values(values: Sequence[float], where: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or len(array) == 0:
        raise ValueError(f"{where}: needs a non-empty list of per-prompt values, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{where}: values must be finite numbers")
    return array


def paired_bootstrap(a_by_prompt: dict[str, float], b_by_prompt: dict[str, float], *, num_resamples: int = 1000,
                     level: float = 0.95, seed: int = 0) -> dict:
    """Is policy A's accuracy different from B's on the same prompts? A paired bootstrap.

    Only prompts both policies were scored on count. Each resample draws prompts with
    replacement and takes the mean of (A - B) over them, keeping every prompt's pair together,
    which removes the variance that prompt difficulty adds to both. ``significant`` is True when
    the interval of the difference excludes 0; ``p_value`` is the two-sided bootstrap p-value
    (twice the smaller share of resampled differences on either side of 0).

    Example:
        >>> a = {f"p{i}": 1.0 for i in range(40)}
        >>> b = {f"p{i}": float(i % 2) for i in range(40)}
        >>> result = paired_bootstrap(a, b)
        >>> result["difference"], result["significant"], result["num_prompts"]
        (0.5, True, 40)
        >>> paired_bootstrap(b, dict(b))["significant"]
        False
    """
    shared = sorted(set(a_by_prompt) & set(b_by_prompt))
    if not shared:
        raise ValueError(f"paired_bootstrap: the two policies share no prompt ({len(a_by_prompt)} and "
                         f"{len(b_by_prompt)} prompts); compare scores of the same bench")
    differences = _checked_values([a_by_prompt[p] - b_by_prompt[p] for p in shared], "paired_bootstrap")
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(differences), size=(num_resamples, len(differences)))  # (R, P)
    means = differences[picks].mean(axis=1)  # (R,)
    tail = (1 - level) / 2
    low, high = float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))
    p_value = min(1.0, 2 * min(float(np.mean(means <= 0)), float(np.mean(means >= 0))))
    return {"difference": float(differences.mean()), "interval": [low, high], "p_value": p_value,
            "significant": bool(low > 0 or high < 0), "num_prompts": len(shared), "level": level}


def pool_per_prompt(per_prompt_list: Sequence[dict[str, float]]) -> dict[str, float]:
    """Per-prompt means over several runs (seeds) of one policy, on the prompts every run has.

    Example:
        >>> pool_per_prompt([{"a": 1.0, "b": 0.0}, {"a": 0.5, "b": 1.0, "c": 1.0}])
        {'a': 0.75, 'b': 0.5}
    """
    if not per_prompt_list:
        raise ValueError("pool_per_prompt: no runs given")
    shared = set(per_prompt_list[0]).intersection(*per_prompt_list[1:])
    return {prompt: float(np.mean([run[prompt] for run in per_prompt_list])) for prompt in sorted(shared)}


def per_prompt_accuracy(samples: Sequence[dict]) -> dict[str, float]:
    """avg@n per prompt: the share of a prompt's samples that are correct, keyed by ``str(prompt_id)``.

    Example:
        >>> per_prompt_accuracy([{"prompt_id": 1, "correct": True}, {"prompt_id": 1, "correct": False}])
        {'1': 0.5}
    """
    verdicts: dict[str, list[bool]] = defaultdict(list)
    for row in samples:
        verdicts[str(row["prompt_id"])].append(bool(row["correct"]))
    return {prompt: float(np.mean(flags)) for prompt, flags in verdicts.items()}


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def _group_by_prompt(samples: Sequence[dict]) -> dict[Any, list[dict]]:
    """Rows per prompt (in first-seen prompt order), each group sorted by ``sample_index``."""
    groups: dict[Any, list[dict]] = defaultdict(list)
    seen: set[tuple[Any, Any]] = set()
    for row_number, row in enumerate(samples):
        missing = [name for name in REQUIRED_SAMPLE_FIELDS if name not in row]
        if missing:
            raise ValueError(f"summarise_samples: sample {row_number} (prompt_id={row.get('prompt_id')!r}) "
                             f"is missing field(s) {missing}")
        key = (row["prompt_id"], row["sample_index"])
        if key in seen:
            raise ValueError(f"summarise_samples: sample {row_number}: duplicate prompt_id={key[0]!r} sample_index={key[1]!r}")
        seen.add(key)
        groups[row["prompt_id"]].append(row)
    for rows in groups.values():
        rows.sort(key=lambda row: row["sample_index"])
    return dict(groups)


def _validated_ks(ks: Sequence[int]) -> list[int]:
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"summarise_samples: every k must be a positive int, got {k!r}")
    return sorted(set(int(k) for k in ks))


def summarise_samples(samples: Sequence[dict], ks: Sequence[int], *, equivalent: Callable[[str, str], bool] | None = None,
                      num_resamples: int = 1000, seed: int = 0) -> dict:
    """The scores of one policy on one benchmark, from its scored sample rows.

    Each row: ``prompt_id``, ``sample_index``, ``completion``, ``answer`` (extracted, may be
    None), ``reward`` (total), ``rewards`` ({name: value}), ``correct``, ``format_ok``,
    ``truncated``, ``num_tokens``. ``pass@1`` is the mean correctness over all samples;
    ``pass@k``/``maj@k`` are means over prompts, keyed by ``str(k)``. A k larger than the
    smallest number of samples any prompt has is left out and explained in ``skipped_k``.
    Mean lengths are None when there is no sample of that kind. ``avg@n`` is pass@1 with its
    bootstrap interval over prompts (``num_resamples``, ``seed``) in ``avg@n_interval``;
    ``per_prompt`` holds each prompt's avg@n for paired comparisons. ``equivalent`` merges
    answers for maj@k (see ``maj_at_k``).

    Example:
        >>> rows = [dict(prompt_id=p, sample_index=i, answer=a, reward=float(c), rewards={"acc": float(c)},
        ...              correct=c, format_ok=True, truncated=False, num_tokens=10 * (i + 1))
        ...         for p, answers in (("p0", [("4", True), ("5", False)]), ("p1", [("9", False), ("9", False)]))
        ...         for i, (a, c) in enumerate(answers)]
        >>> scores = summarise_samples(rows, ks=[1, 2, 4])
        >>> scores["pass@1"], scores["pass@k"], scores["maj@k"], scores["skipped_k"]
        (0.25, {'1': 0.25, '2': 0.5}, {'1': 0.5, '2': 0.5}, {'4': 'needs 4 samples per prompt, have 2'})
        >>> scores["mean_length_correct"], scores["mean_length_incorrect"]
        (10.0, 16.666666666666668)
    """
    if not samples:
        raise ValueError("summarise_samples: no samples")
    groups = _group_by_prompt(samples)
    min_per_prompt = min(len(rows) for rows in groups.values())
    all_ks = _validated_ks(ks)
    usable_ks = [k for k in all_ks if k <= min_per_prompt]
    skipped = {str(k): f"needs {k} samples per prompt, have {min_per_prompt}" for k in all_ks if k > min_per_prompt}

    answers_by_prompt = [[row["answer"] for row in rows] for rows in groups.values()]  # in sampling order
    correct_by_prompt = [[bool(row["correct"]) for row in rows] for rows in groups.values()]
    pass_k: dict[str, float] = {}
    maj_k: dict[str, float] = {}
    for k in usable_ks:
        pass_k[str(k)] = float(np.mean([pass_at_k(len(verdicts), sum(verdicts), k) for verdicts in correct_by_prompt]))
        maj_k[str(k)] = float(np.mean([maj_at_k(answers, verdicts, k, equivalent)
                                       for answers, verdicts in zip(answers_by_prompt, correct_by_prompt)]))

    lengths_correct = [row["num_tokens"] for row in samples if row["correct"]]
    lengths_incorrect = [row["num_tokens"] for row in samples if not row["correct"]]
    reward_parts: dict[str, list[float]] = defaultdict(list)
    for row in samples:
        for name, value in (row.get("rewards") or {}).items():
            reward_parts[name].append(float(value))

    per_prompt = per_prompt_accuracy(samples)
    avg_at_n = float(np.mean(list(per_prompt.values())))
    return {
        "num_prompts": len(groups),
        "num_samples": len(samples),
        "num_samples_per_prompt": min_per_prompt,
        "pass@1": float(np.mean([bool(row["correct"]) for row in samples])),
        "avg@n": avg_at_n,
        "avg@n_interval": list(bootstrap_interval(list(per_prompt.values()), num_resamples=num_resamples, seed=seed)),
        "per_prompt": per_prompt,
        "pass@k": pass_k,
        "maj@k": maj_k,
        "skipped_k": skipped,
        "format_rate": float(np.mean([bool(row["format_ok"]) for row in samples])),
        "truncation_rate": float(np.mean([bool(row["truncated"]) for row in samples])),
        "mean_length": float(np.mean([row["num_tokens"] for row in samples])),
        "mean_length_correct": _mean(lengths_correct),
        "mean_length_incorrect": _mean(lengths_incorrect),
        "mean_reward": float(np.mean([float(row["reward"]) for row in samples])),
        "rewards": {name: float(np.mean(values)) for name, values in reward_parts.items()},
    }


def pool_scores(score_list: Sequence[dict], *, num_resamples: int = 1000, level: float = 0.95, seed: int = 0) -> dict:
    """One policy's scores over several runs (seeds) of the same bench, as one scores dict: avg@n
    and its bootstrap interval over prompts from the per-prompt means across seeds
    (``pool_per_prompt``), the other numbers (pass@1, pass@k and maj@k for the ks every run has,
    lengths, rates) averaged over the runs.

    Example:
        >>> seeds = [{"per_prompt": {"a": 1.0, "b": 0.0}, "mean_length": 10.0}, {"per_prompt": {"a": 0.5, "b": 0.5}, "mean_length": 20.0}]
        >>> pooled = pool_scores(seeds)
        >>> pooled["avg@n"], pooled["mean_length"], pooled["num_seeds"], pooled["per_prompt"]
        (0.5, 15.0, 2, {'a': 0.75, 'b': 0.25})
    """
    if not score_list:
        raise ValueError("pool_scores: no scores given")
    missing = [index for index, scores in enumerate(score_list) if not scores.get("per_prompt")]
    if missing:
        raise ValueError(f"pool_scores: scores {missing} have no per_prompt results (rescore them)")
    per_prompt = pool_per_prompt([scores["per_prompt"] for scores in score_list])
    values = list(per_prompt.values())
    pooled = {key: float(np.mean([s[key] for s in score_list]))
              for key in ("pass@1", "mean_length", "format_rate", "truncation_rate")
              if all(isinstance(s.get(key), (int, float)) for s in score_list)}
    for table in ("pass@k", "maj@k"):  # the ks every seed has
        ks = set.intersection(*[{k for k, v in (s.get(table) or {}).items() if isinstance(v, (int, float))}
                                for s in score_list])
        pooled[table] = {k: float(np.mean([s[table][k] for s in score_list])) for k in sorted(ks, key=int)}
    rates = [((s.get("reflection") or {}).get("all") or {}).get("reflection_rate") for s in score_list]
    if all(isinstance(rate, (int, float)) for rate in rates):
        pooled["reflection"] = {"all": {"reflection_rate": float(np.mean(rates))}}
    return {**pooled, "avg@n": float(np.mean(values)), "per_prompt": per_prompt, "num_seeds": len(score_list),
            "avg@n_interval": list(bootstrap_interval(values, num_resamples=num_resamples, level=level, seed=seed))}


# ----------------------------------------------------------------------------- across seeds

def student_t_quantile(probability: float, dof: int) -> float:
    """The ``probability`` quantile (> 0.5) of Student's t with ``dof`` (integer) degrees of freedom.

    Two or three seeds give 1-2 degrees of freedom, where the normal quantile (1.96) would
    understate the interval by a factor of 2-6. Solved by bisection on the closed-form CDF for
    integer dof (Abramowitz & Stegun 26.7.3-4), so no scipy is needed.

    Example:
        >>> round(student_t_quantile(0.975, 1), 3), round(student_t_quantile(0.975, 2), 3), round(student_t_quantile(0.975, 4), 3)
        (12.706, 4.303, 2.776)
    """
    if not 0.5 < probability < 1:
        raise ValueError(f"student_t_quantile: probability must be in (0.5, 1), got {probability}")
    if isinstance(dof, bool) or not isinstance(dof, int) or dof < 1:
        raise ValueError(f"student_t_quantile: dof must be a positive int, got {dof!r}")
    central = 2 * probability - 1  # P(|T| < t)
    low, high = 0.0, 1.0
    while _t_central_mass(high, dof) < central:
        high *= 2
    for _ in range(200):
        middle = (low + high) / 2
        low, high = (middle, high) if _t_central_mass(middle, dof) < central else (low, middle)
    return (low + high) / 2


def _t_central_mass(t: float, dof: int) -> float:
    """P(|T| < t) for Student's t with integer ``dof`` (A&S 26.7.3 odd dof, 26.7.4 even dof)."""
    theta = np.arctan(t / np.sqrt(dof))
    cos2 = np.cos(theta) ** 2
    if dof % 2 == 1:
        term, total = 1.0, 1.0 if dof > 1 else 0.0
        for j in range(1, (dof - 3) // 2 + 1):  # 1 + (2/3)c^2 + (2*4)/(3*5)c^4 + ... up to c^(dof-3)
            term *= (2 * j) / (2 * j + 1) * cos2
            total += term
        return float(2 / np.pi * (theta + np.sin(theta) * np.cos(theta) * total))
    term, total = 1.0, 1.0
    for j in range(1, (dof - 2) // 2 + 1):  # 1 + (1/2)c^2 + (1*3)/(2*4)c^4 + ... up to c^(dof-2)
        term *= (2 * j - 1) / (2 * j) * cos2
        total += term
    return float(np.sin(theta) * total)


def seed_interval(values: Sequence[float], *, level: float = 0.95) -> dict:
    """Mean of one number over seeds with a Student-t interval of that mean.

    ``mean +- t_{(1+level)/2, n-1} * sd / sqrt(n)`` (sample sd, n - 1 in the denominator). The
    seeds are the unit of replication here (a training run each), unlike the prompt bootstrap of
    a single score. With one seed there is no interval (``low``/``high`` None).

    Example:
        >>> result = seed_interval([0.2, 0.4])  # sd 0.1414, se 0.1, t(0.975, 1) = 12.706
        >>> round(result["mean"], 3), round(result["low"], 4), round(result["high"], 4), result["num_seeds"]
        (0.3, -0.9706, 1.5706, 2)
        >>> seed_interval([0.5])
        {'mean': 0.5, 'low': None, 'high': None, 'num_seeds': 1}
    """
    array = _checked_values(values, "seed_interval")
    mean = float(array.mean())
    if len(array) == 1:
        return {"mean": mean, "low": None, "high": None, "num_seeds": 1}
    half_width = student_t_quantile((1 + level) / 2, len(array) - 1) * float(array.std(ddof=1)) / float(np.sqrt(len(array)))
    return {"mean": mean, "low": mean - half_width, "high": mean + half_width, "num_seeds": len(array)}


def seed_curve(series_by_seed: Sequence[tuple[Sequence[float], Sequence[float]]], *, level: float = 0.95) -> dict:
    """A training curve over seeds: at each step every seed logged, the mean and its t interval.

    ``series_by_seed`` holds one (steps, values) pair per seed. Steps some seed lacks are left
    out, so each point averages the same seeds. Returns lists ``steps``, ``mean``, ``low``,
    ``high`` (``low``/``high`` None with one seed) and ``num_seeds``.

    Example:
        >>> curve = seed_curve([([0, 1, 2], [0.0, 0.2, 0.4]), ([0, 1], [0.2, 0.4])])
        >>> curve["steps"], [round(v, 3) for v in curve["mean"]], curve["num_seeds"]
        ([0, 1], [0.1, 0.3], 2)
    """
    if not series_by_seed:
        raise ValueError("seed_curve: no seeds given")
    by_seed = [dict(zip(steps, values)) for steps, values in series_by_seed]
    shared = sorted(set(by_seed[0]).intersection(*by_seed[1:]))
    points = [seed_interval([values[step] for values in by_seed], level=level) for step in shared]
    return {"steps": shared, "mean": [p["mean"] for p in points], "low": [p["low"] for p in points],
            "high": [p["high"] for p in points], "num_seeds": len(by_seed)}
