"""PNG plots for the per-run report and the cross-run comparison.

Figures are built with ``matplotlib.figure.Figure`` and saved through the Agg canvas, never
through ``pyplot``: pyplot keeps a global registry of open figures (a leak when a stage forgets
to close one) and picks an interactive backend when a display is set. With ``Figure`` there is
no global state and no backend to switch, so a stage can plot from any process or thread.

A series is ``(steps, values)``. An empty series draws a "no data" note instead of failing, so
a report always has the same files whatever its run logged.

Example:
    >>> moving_average([1.0, 2.0, 3.0, 4.0], window=2)
    [1.0, 1.5, 2.5, 3.5]
    >>> smoothing_window(200)
    10
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np

Series = tuple[Sequence[float], Sequence[float]]  # (steps, values)

FIGURE_SIZE_IN = (8.0, 4.5)
DPI = 100
RAW_ALPHA = 0.3  # raw curves stay visible but quiet behind their moving average


@dataclass(frozen=True)
class EvalBar:
    """One bar of the evaluation chart: ``pass_at_1`` of ``policy`` on ``bench``, with ``pass@k`` as a marker."""

    policy: str
    bench: str
    pass_at_1: float
    pass_at_k: float | None = None
    k: int | None = None


def smoothing_window(num_points: int) -> int:
    """A light moving-average window: about 5 % of the points, between 1 and 50.

    Example:
        >>> smoothing_window(10), smoothing_window(5000)
        (1, 50)
    """
    return int(min(50, max(1, num_points // 20)))


def moving_average(values: Sequence[float], window: int) -> list[float]:
    """Trailing mean over the last ``window`` values (fewer at the start, so no point is lost).

    Example:
        >>> moving_average([0.0, 2.0, 4.0], window=3)
        [0.0, 1.0, 2.0]
    """
    if window < 1:
        raise ValueError(f"moving_average: window must be >= 1, got {window}")
    array = np.asarray(values, dtype=np.float64)
    cumulative = np.concatenate([[0.0], np.cumsum(array)])
    ends = np.arange(1, len(array) + 1)
    starts = np.maximum(0, ends - window)
    return ((cumulative[ends] - cumulative[starts]) / (ends - starts)).tolist()


def _new_figure(num_rows: int = 1, height_in: float | None = None):
    from matplotlib.figure import Figure  # lazy: matplotlib costs ~0.5 s to import

    width_in, default_height_in = FIGURE_SIZE_IN
    figure = Figure(figsize=(width_in, height_in or default_height_in), dpi=DPI, layout="constrained")
    axes = figure.subplots(num_rows, 1, sharex=num_rows > 1, squeeze=False)[:, 0]
    return figure, list(axes)


def _save(figure, path: str | os.PathLike) -> None:
    # Figure.savefig uses the Agg canvas for .png without touching pyplot's backend.
    figure.savefig(os.fspath(path), format="png")


def _no_data(axis, label: str) -> None:
    axis.text(0.5, 0.5, f"no data: {label}", ha="center", va="center", transform=axis.transAxes, color="grey")


def _draw_smoothed(axis, series: Series, label: str, color: str) -> bool:
    """Raw values faint, moving average solid. False (and a note) when the series is empty."""
    steps, values = series
    if len(steps) == 0:
        _no_data(axis, label)
        return False
    window = smoothing_window(len(values))
    if window > 1:
        axis.plot(steps, values, color=color, alpha=RAW_ALPHA, linewidth=1)
        axis.plot(steps, moving_average(values, window), color=color, linewidth=2, label=f"{label} (mean of {window})")
    else:
        axis.plot(steps, values, color=color, linewidth=2, marker="." if len(values) < 30 else None, label=label)
    return True


def plot_reward_accuracy(path: str | os.PathLike, reward: Series, accuracy: Series, title: str = "") -> None:
    """Total reward (top) and accuracy (bottom) against the training step, one PNG.

    Example:
        >>> import tempfile, os
        >>> out = os.path.join(tempfile.mkdtemp(), "r.png")
        >>> plot_reward_accuracy(out, ([1, 2, 3], [0.1, 0.4, 0.5]), ([], []))
        >>> open(out, "rb").read(4)
        b'\\x89PNG'
    """
    figure, (reward_axis, accuracy_axis) = _new_figure(num_rows=2, height_in=6.0)
    if _draw_smoothed(reward_axis, reward, "reward/total", "C0"):
        reward_axis.legend(loc="best")
    reward_axis.set_ylabel("total reward")
    if _draw_smoothed(accuracy_axis, accuracy, "accuracy", "C2"):
        accuracy_axis.legend(loc="best")
        accuracy_axis.set_ylim(-0.02, 1.02)
    accuracy_axis.set_ylabel("accuracy")
    accuracy_axis.set_xlabel("step")
    if title:
        figure.suptitle(title)
    _save(figure, path)


def plot_length_clipped(path: str | os.PathLike, mean_length: Series, clipped_ratio: Series, title: str = "") -> None:
    """Mean completion length (left axis, tokens) and the clipped ratio (right axis) against the step.

    The clipped ratio is the share of completions cut at max_new_tokens: a length curve that
    flattens while it rises means the limit, not the policy, sets the length.
    """
    figure, (length_axis,) = _new_figure()
    has_length = _draw_smoothed(length_axis, mean_length, "completions/mean_length", "C0")
    length_axis.set_ylabel("mean completion length (tokens)", color="C0")
    length_axis.set_xlabel("step")
    ratio_axis = length_axis.twinx()
    has_ratio = len(clipped_ratio[0]) > 0
    if has_ratio:  # no second "no data" note over the length curve
        _draw_smoothed(ratio_axis, clipped_ratio, "completions/clipped_ratio", "C3")
        ratio_axis.set_ylim(-0.02, 1.02)
    ratio_axis.set_ylabel("clipped ratio", color="C3")
    if has_length or has_ratio:
        handles = length_axis.get_legend_handles_labels()[0] + ratio_axis.get_legend_handles_labels()[0]
        length_axis.legend(handles=handles, loc="best")
    if title:
        length_axis.set_title(title)
    _save(figure, path)


def plot_eval_accuracy(path: str | os.PathLike, bars: Sequence[EvalBar], title: str = "") -> None:
    """Grouped bars: one group per benchmark, one bar per policy (pass@1), pass@k as a black marker."""
    figure, (axis,) = _new_figure()
    if not bars:
        _no_data(axis, "evaluation scores")
        _save(figure, path)
        return
    benches = list(dict.fromkeys(bar.bench for bar in bars))
    policies = list(dict.fromkeys(bar.policy for bar in bars))
    width = 0.8 / len(policies)
    marked_k: set[int | None] = set()
    labelled: set[str] = set()
    for policy_index, policy in enumerate(policies):
        for bench_index, bench in enumerate(benches):
            bar = next((b for b in bars if b.policy == policy and b.bench == bench), None)
            if bar is None:
                continue
            x = bench_index - 0.4 + width * (policy_index + 0.5)
            # Label a policy's first bar only, so the legend lists each policy once.
            axis.bar(x, bar.pass_at_1, width=width * 0.9, color=f"C{policy_index % 10}",
                     label=policy if policy not in labelled else None)
            labelled.add(policy)
            if bar.pass_at_k is not None:
                axis.plot([x], [bar.pass_at_k], marker="_", markersize=18, markeredgewidth=2.5, color="black",
                          label=f"pass@{bar.k}" if bar.k not in marked_k else None)
                marked_k.add(bar.k)
    axis.set_xticks(range(len(benches)), benches)
    axis.set_ylim(0, 1.05)
    axis.set_ylabel("pass@1 (bars)")
    axis.legend(loc="best")
    if title:
        axis.set_title(title)
    _save(figure, path)


def plot_overlaid(path: str | os.PathLike, curves: dict[str, Series], ylabel: str, title: str = "") -> None:
    """One smoothed line per run (raw values faint behind it), for the cross-run comparison."""
    figure, (axis,) = _new_figure()
    drawn = 0
    for index, (run, series) in enumerate(curves.items()):
        if len(series[0]):
            drawn += _draw_smoothed(axis, series, run, f"C{index % 10}")
    if drawn:
        axis.legend(loc="best")
    else:
        _no_data(axis, ylabel)
    axis.set_xlabel("step")
    axis.set_ylabel(ylabel)
    if title:
        axis.set_title(title)
    _save(figure, path)


@dataclass(frozen=True)
class EvalPoint:
    """One checkpoint's evaluation on one bench: avg@n with its interval, mean length, reflection rate."""

    step: float
    accuracy: float
    low: float | None = None
    high: float | None = None
    mean_length: float | None = None
    reflection_rate: float | None = None


def plot_eval_curves(path: str | os.PathLike, curves: dict[str, Sequence[EvalPoint]], title: str = "",
                     training_reflection: dict[str, Series] | None = None) -> None:
    """Accuracy (avg@n, shaded interval), mean length and reflection rate against the training step,
    stacked as R1-Zero's figures show them: one line per curve label (a bench, or run/bench).

    ``training_reflection`` adds the reflection rate of the training rollouts (label -> series) as
    dashed lines in the bottom panel.

    Example:
        >>> import tempfile, os
        >>> out = os.path.join(tempfile.mkdtemp(), "c.png")
        >>> plot_eval_curves(out, {"countdown": [EvalPoint(0, 0.2, 0.1, 0.3, 40.0, 0.0), EvalPoint(20, 0.5, 0.4, 0.6, 55.0, 0.1)]})
        >>> open(out, "rb").read(4)
        b'\\x89PNG'
    """
    figure, (accuracy_axis, length_axis, reflection_axis) = _new_figure(num_rows=3, height_in=8.0)
    drawn = False
    for index, (label, points) in enumerate(curves.items()):
        points = sorted(points, key=lambda point: point.step)
        if not points:
            continue
        drawn = True
        color = f"C{index % 10}"
        steps = [point.step for point in points]
        accuracy_axis.plot(steps, [point.accuracy for point in points], color=color, marker="o", label=label)
        bounded = [point for point in points if point.low is not None and point.high is not None]
        if bounded:
            accuracy_axis.fill_between([p.step for p in bounded], [p.low for p in bounded], [p.high for p in bounded],
                                       color=color, alpha=RAW_ALPHA, linewidth=0)
        _plot_optional(length_axis, points, "mean_length", color, label)
        _plot_optional(reflection_axis, points, "reflection_rate", color, label)
    for index, (label, series) in enumerate((training_reflection or {}).items()):
        if len(series[0]):
            drawn = True
            window = smoothing_window(len(series[1]))
            reflection_axis.plot(series[0], moving_average(series[1], window), color=f"C{(index + len(curves)) % 10}",
                                 linestyle="--", label=f"{label} (training rollouts)")
    if not drawn:
        _no_data(accuracy_axis, "evaluation of checkpoints")
    accuracy_axis.set_ylabel("accuracy (avg@n)")
    accuracy_axis.set_ylim(-0.02, 1.02)
    length_axis.set_ylabel("mean length (tokens)")
    reflection_axis.set_ylabel("reflection rate")
    reflection_axis.set_ylim(-0.02, 1.02)
    reflection_axis.set_xlabel("GRPO step")
    for axis in (accuracy_axis, reflection_axis):
        if axis.get_legend_handles_labels()[0]:
            axis.legend(loc="best", fontsize="small")
    if title:
        figure.suptitle(title)
    _save(figure, path)


def _plot_optional(axis, points: Sequence[EvalPoint], name: str, color: str, label: str) -> None:
    kept = [point for point in points if getattr(point, name) is not None]
    if kept:
        axis.plot([p.step for p in kept], [getattr(p, name) for p in kept], color=color, marker="o", label=label)


@dataclass(frozen=True)
class SeedBand:
    """A training curve over seeds (``eval_metrics.seed_curve``): the mean per step and its interval
    (``low``/``high`` None where one seed gives no interval)."""

    steps: Sequence[float]
    mean: Sequence[float]
    low: Sequence[float | None]
    high: Sequence[float | None]
    num_seeds: int


def plot_seed_bands(path: str | os.PathLike, panels: dict[str, SeedBand], title: str = "", level: float = 0.95) -> None:
    """One panel per metric (label -> band): the mean over seeds, with its interval shaded.

    Mean and bounds get the same light moving average as the single-run curves, so the band
    follows the line drawn.

    Example:
        >>> import tempfile, os
        >>> out = os.path.join(tempfile.mkdtemp(), "s.png")
        >>> bands = {"reward": SeedBand([0, 1], [0.1, 0.3], [0.0, 0.1], [0.2, 0.5], 2), "accuracy": SeedBand([], [], [], [], 2)}
        >>> plot_seed_bands(out, bands)
        >>> open(out, "rb").read(4)
        b'\\x89PNG'
    """
    figure, axes = _new_figure(num_rows=max(1, len(panels)), height_in=2.4 * max(1, len(panels)))
    for index, (axis, (label, band)) in enumerate(zip(axes, panels.items())):
        color = f"C{index % 10}"
        if len(band.steps) == 0:
            _no_data(axis, label)
            axis.set_ylabel(label)
            continue
        window = smoothing_window(len(band.mean))
        smoothed = f" (mean of {window} steps)" if window > 1 else ""
        axis.plot(band.steps, moving_average(band.mean, window), color=color, linewidth=2,
                  label=f"mean of {band.num_seeds} seeds{smoothed}")
        bounded = [i for i, (low, high) in enumerate(zip(band.low, band.high)) if low is not None and high is not None]
        if bounded:
            axis.fill_between([band.steps[i] for i in bounded], moving_average([band.low[i] for i in bounded], window),
                              moving_average([band.high[i] for i in bounded], window), color=color, alpha=RAW_ALPHA,
                              linewidth=0, label=f"{level:.0%} interval across seeds")
        axis.set_ylabel(label)
        axis.legend(loc="best", fontsize="small")
    axes[-1].set_xlabel("GRPO step")
    if title:
        figure.suptitle(title)
    _save(figure, path)


# The three R1-Zero curves (training rollouts, one line per run or seed): (metrics key, axis label).
AHA_PANELS = (("accuracy", "accuracy (training rollouts)"), ("completions/mean_length", "mean length (tokens)"),
              ("completions/reflection_rate", "reflection rate"))


def plot_aha_curves(path: str | os.PathLike, runs: dict[str, dict[str, Series]], title: str = "",
                    held_out: dict[str, dict[str, Series]] | None = None) -> None:
    """The "aha" figure: accuracy, mean response length and reflection rate against the GRPO step,
    one colour per run (e.g. per seed), raw values faint and their moving average solid.

    ``runs``: label -> {metrics key of ``AHA_PANELS``: series}. ``held_out`` (optional): label ->
    {key: series} of held-out evaluations (base at step 0, snapshots, final), drawn as dashed lines
    with markers on the same panels.

    Example:
        >>> import tempfile, os
        >>> out = os.path.join(tempfile.mkdtemp(), "aha.png")
        >>> plot_aha_curves(out, {"seed 0": {"accuracy": ([0, 1, 2], [0.2, 0.4, 0.6])}})
        >>> open(out, "rb").read(4)
        b'\\x89PNG'
    """
    figure, axes = _new_figure(num_rows=len(AHA_PANELS), height_in=8.0)
    for axis, (key, label) in zip(axes, AHA_PANELS):
        drawn = False
        for index, (run, series_by_key) in enumerate(runs.items()):
            series = series_by_key.get(key, ([], []))
            if len(series[0]):
                drawn |= _draw_smoothed(axis, series, run, f"C{index % 10}")
            held = (held_out or {}).get(run, {}).get(key)
            if held is not None and len(held[0]):
                axis.plot(held[0], held[1], color=f"C{index % 10}", linestyle="--", marker="o", linewidth=1.5,
                          label=f"{run}: held-out eval")
                drawn = True
        if drawn:
            axis.legend(loc="best", fontsize="small")
        else:
            _no_data(axis, key)
        if key != "completions/mean_length":
            axis.set_ylim(-0.02, 1.02)
        axis.set_ylabel(label)
    axes[-1].set_xlabel("GRPO step")
    if title:
        figure.suptitle(title)
    _save(figure, path)
