"""Per-run report stage: files, table rows (parsed back from the Markdown), HTML, bad inputs."""
from __future__ import annotations

import base64
import doctest
import json
import re
import struct
from pathlib import Path

import pytest

from pipeline.stage_cli import run_stage
from stages import report
from stages.core import plots
from stages.report import (Block, first_last_best, fmt_duration, metric_series, render_markdown, score_table,
                           summarise_training)

RUNS = Path(__file__).resolve().parents[1] / "fixtures" / "report" / "runs"
SCORES_RUN_A = [RUNS / "models/tiny/eval/countdown/scores.json", RUNS / "models/tiny/eval/math/scores.json",
                RUNS / "run_a/eval/sft/countdown/scores.json", RUNS / "run_a/eval/grpo/countdown/scores.json",
                RUNS / "run_a/eval/grpo/math/scores.json"]
PLOTS = ["eval_accuracy.png", "length_vs_step.png", "reward_vs_step.png"]


def parse_tables(markdown: str) -> list[list[dict[str, str]]]:
    """Every Markdown table as a list of {header: cell} rows (escaped pipes kept as text)."""
    tables, lines = [], markdown.splitlines()
    for index, line in enumerate(lines):
        if line.startswith("|") and index + 1 < len(lines) and set(lines[index + 1].replace(" ", "")) <= set("|-") \
                and (index == 0 or not lines[index - 1].startswith("|")):
            header = split_row(line)
            rows = []
            for row_line in lines[index + 2:]:
                if not row_line.startswith("|"):
                    break
                rows.append(dict(zip(header, split_row(row_line), strict=True)))
            tables.append(rows)
    return tables


def split_row(line: str) -> list[str]:
    cells = re.split(r"(?<!\\)\|", line.strip())[1:-1]
    return [cell.strip().replace("\\|", "|") for cell in cells]


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path.name} is not a PNG"
    return struct.unpack(">II", data[16:24])


def full_inputs() -> dict:
    return {"metrics": str(RUNS / "run_a/grpo/metrics.jsonl"), "sft_metrics": str(RUNS / "run_a/sft/metrics.jsonl"),
            "scores": [str(p) for p in SCORES_RUN_A]}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "run_a_report"
    report.main({"run": "run_a", "title": "Run A", "formats": ["md", "html"]}, full_inputs(), {"report": str(out)})
    return out


def test_writes_every_file(built):
    names = sorted(p.name for p in built.iterdir())
    assert names == sorted(["report.md", "report.html", "meta.json", "sft_loss_vs_step.png", "eval_curves.png",
                            "scores.csv", "curves.csv", *PLOTS])
    for name in PLOTS + ["sft_loss_vs_step.png"]:
        assert png_size(built / name) == (800, 450 if name != "reward_vs_step.png" else 600)
    assert png_size(built / "eval_curves.png") == (800, 800)


def test_score_table_rows(built):
    markdown = (built / "report.md").read_text()
    assert markdown.startswith("# Run A\n")
    scores_table = parse_tables(markdown)[0]
    assert [row["policy"] for row in scores_table] == ["base", "sft", "grpo"], "training order, not file order"
    base, sft, grpo = scores_table
    assert base["countdown pass@1"] == "0.125" and base["countdown pass@4"] == "0.375" and base["countdown maj@4"] == "0.250"
    assert base["math pass@1"] == "0.062" and base["math maj@4"] == "0.000"
    assert grpo["countdown mean length"] == "90.0"
    assert grpo["countdown mean length correct"] == "80.0" and grpo["countdown mean length incorrect"] == "100.0"
    assert grpo["countdown format rate"] == "0.750" and grpo["countdown truncation rate"] == "0.125"
    assert sft["math pass@1"] == "n/a", "sft was not evaluated on math"
    assert len(base) == 1 + 2 * 9, "policy + 9 metrics for each of 2 benches"
    assert base["countdown avg@n [95% CI]"] == "n/a", "fixture scores from before avg@n carry no interval"


def test_training_summary(built):
    markdown = (built / "report.md").read_text()
    training = {row["metric"]: row for row in parse_tables(markdown)[3]}
    # Fixture: reward 0.1*step except step 7 = 1.2; accuracy 0.05*step, absent at step 4.
    assert training["reward/total"] == {"metric": "reward/total", "first": "0.100", "last": "1.000", "best": "1.200", "best step": "7"}
    assert training["accuracy"]["first"] == "0.050" and training["accuracy"]["best step"] == "10"
    assert "Steps: 10 records, step 1 to 10. Total step time: 25.0 s." in markdown
    assert "Loss 1.7500 first, 0.7500 last, 0.7500 lowest (step 5)." in markdown
    for name in PLOTS:
        assert f"]({name})" in markdown


def test_html_is_self_contained(built):
    page = (built / "report.html").read_text()
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) == 5 and all(src.startswith("data:image/png;base64,") for src in sources)
    embedded = base64.b64decode(sources[0].split(",", 1)[1])
    assert embedded == (built / "eval_accuracy.png").read_bytes()
    assert "<td>0.375</td>" in page and "<code>run_a</code>" in page
    assert not re.search(r"<link|<script|href=|url\(", page), "nothing is fetched from elsewhere"


def test_meta_records_provenance(built):
    meta = json.loads((built / "meta.json").read_text())
    assert meta["stage"] == "report"
    assert meta["config"]["run"] == "run_a"
    assert set(meta["inputs"]) == {"metrics", "sft_metrics", "scores"}
    assert len(meta["inputs"]["scores"]) == len(SCORES_RUN_A)
    assert "report.md" in meta["files"] and "report.html" in meta["files"]


def test_cli_markdown_only_without_scores_or_sft(tmp_path):
    # The workflow's snapshot has no run name: the run comes from results/{run}/report.
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"formats": ["md"]}))
    out = tmp_path / "run_b" / "report"
    run_stage(report.main, ["--config", str(config), "--input", f"metrics={RUNS / 'run_b/grpo/metrics.jsonl'}",
                            "--output", f"report={out}"])
    assert sorted(p.name for p in out.iterdir()) == sorted(["report.md", "meta.json", "eval_curves.png", "curves.csv", *PLOTS])
    markdown = (out / "report.md").read_text()
    assert "# R1-Zero run report: run_b" in markdown
    assert "No evaluation scores were given." in markdown
    assert "Cold-start SFT" not in markdown


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


@pytest.mark.parametrize("metrics_lines, match, reason", [
    (['{"step": 1, "accuracy": 0.1}', "", '{"step": 3, "accuracy": 0.2'], r"metrics.jsonl:3: not valid JSON", "a cut line"),
    (['{"step": 1}', '[1, 2]'], r"metrics.jsonl:2: expected a JSON object", "not an object"),
    (['{"accuracy": 0.1}'], r"metrics.jsonl:1: record has no numeric 'step'", "no step"),
    (['{"step": "one"}'], r"metrics.jsonl:1: record has no numeric 'step'", "step is text"),
    ([], r"metrics.jsonl: no metrics records", "empty file"),
])
def test_bad_metrics_stop_and_write_nothing(tmp_path, metrics_lines, match, reason):
    metrics = write_lines(tmp_path / "metrics.jsonl", metrics_lines)
    out = tmp_path / "results" / "report"
    with pytest.raises(ValueError, match=match):
        report.main({"run": "r"}, {"metrics": str(metrics)}, {"report": str(out)})
    assert not out.exists() and not out.parent.exists(), reason


@pytest.mark.parametrize("scores, match, reason", [
    ({"bench": "countdown", "pass@1": 0.5}, r"bad\.json: missing field 'policy'", "no policy"),
    ({"policy": "grpo", "pass@1": 0.5}, r"bad\.json: missing field 'bench'", "no bench"),
    ({"policy": "grpo", "bench": "countdown", "pass@1": "high"}, r"bad\.json: field 'pass@1' must be a number", "text score"),
    ({"policy": "grpo", "bench": "countdown", "pass@1": 0.5, "pass@k": {"four": 0.7}}, r"bad\.json: field 'pass@k'", "k not a number"),
    ([0.5], r"bad\.json: expected a JSON object", "a list"),
])
def test_bad_scores_stop_and_write_nothing(tmp_path, scores, match, reason):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(scores))
    out = tmp_path / "report"
    inputs = {"metrics": str(RUNS / "run_a/grpo/metrics.jsonl"), "scores": [str(SCORES_RUN_A[0]), str(bad)]}
    with pytest.raises(ValueError, match=match):
        report.main({"run": "r"}, inputs, {"report": str(out)})
    assert not out.exists(), reason


def test_scores_not_json_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{\n  "policy": "grpo",\n  "bench": \n}\n')
    with pytest.raises(ValueError, match=r"bad\.json:4: not valid JSON"):
        report.main({"run": "r"}, {"metrics": str(RUNS / "run_a/grpo/metrics.jsonl"), "scores": str(bad)},
                    {"report": str(tmp_path / "report")})


def test_bad_input_leaves_an_existing_report_untouched(tmp_path):
    out = tmp_path / "report"
    out.mkdir()
    (out / "report.md").write_text("previous report\n")
    bad = write_lines(tmp_path / "metrics.jsonl", ["not json"])
    with pytest.raises(ValueError):
        report.main({"run": "r"}, {"metrics": str(bad)}, {"report": str(out)})
    assert [p.name for p in out.iterdir()] == ["report.md"]
    assert (out / "report.md").read_text() == "previous report\n"


def test_duplicate_policy_and_bench_names_both_files(tmp_path):
    copy = tmp_path / "again.json"
    copy.write_text(SCORES_RUN_A[3].read_text())
    inputs = {"metrics": str(RUNS / "run_a/grpo/metrics.jsonl"), "scores": [str(SCORES_RUN_A[3]), str(copy)]}
    with pytest.raises(ValueError, match=r"two scores files for policy='grpo', bench='countdown': .*scores\.json and .*again\.json"):
        report.main({"run": "r"}, inputs, {"report": str(tmp_path / "report")})


@pytest.mark.parametrize("config, inputs, match, reason", [
    ({"run": "r", "formats": ["pdf"]}, None, r"report config: formats\.0", "unknown format"),
    ({"run": 5}, None, r"report config: run: Input should be a valid string", "run not a name"),
    ({"run": "r", "colour": "red"}, None, r"report config: colour: Extra inputs", "typo in a key"),
    ({"run": "r"}, {}, r"input 'metrics' .* is required", "no metrics"),
    ({"run": "r"}, {"metrics": ["a.jsonl", "b.jsonl"]}, r"'metrics' takes one file", "two metrics files"),
])
def test_config_and_input_errors(tmp_path, config, inputs, match, reason):
    inputs = {"metrics": str(RUNS / "run_a/grpo/metrics.jsonl")} if inputs is None else inputs
    with pytest.raises(ValueError, match=match):
        report.main(config, inputs, {"report": str(tmp_path / "report")})
    assert not (tmp_path / "report").exists(), reason


def test_runtime_keys_in_config_are_ignored(tmp_path):
    # run_stage adds "_runtime" (threads) to every config; validation must not reject it.
    assert report.parse_config({"run": "r", "_runtime": {"threads": 2}}, report.ReportConfig, "report").run == "r"


@pytest.mark.parametrize("records, expected, reason", [
    ([{"step": 1, "kl": 0.1}, {"step": 2}], ([1], [0.1]), "missing key skipped"),
    ([{"step": 1, "kl": None}, {"step": 2, "kl": 0.2}], ([2], [0.2]), "None skipped"),
    ([{"step": 1, "kl": float("nan")}, {"step": 2, "kl": 3}], ([2], [3.0]), "NaN skipped, int becomes float"),
    ([{"step": 1, "kl": True}], ([], []), "a bool is not a metric value"),
    ([{"step": 1, "kl": 0.1}, {"step": 2, "kl": 0.2}, {"step": 2, "kl": 0.5}], ([1, 2], [0.1, 0.5]),
     "a step logged twice (resumed run): the later record wins"),
    ([{"step": 3, "kl": 0.3}, {"step": 1, "kl": 0.1}], ([1, 3], [0.1, 0.3]), "sorted by step"),
])
def test_metric_series(records, expected, reason):
    assert metric_series(records, "kl") == expected, reason


def test_first_last_best_and_training_summary():
    assert first_last_best(([1, 2, 3], [2.0, 0.5, 1.0]), best="min") == {"first": 2.0, "last": 1.0, "best": 0.5, "best_step": 2}
    assert first_last_best(([], [])) is None
    assert first_last_best(([1, 2], [0.5, 0.5])) == {"first": 0.5, "last": 0.5, "best": 0.5, "best_step": 1}, "ties: first step"
    summary = summarise_training([{"step": 5, "time/step_s": 1.5, "accuracy": 0.2}, {"step": 6, "time/step_s": 2.0}])
    assert summary["total_time_s"] == 3.5 and summary["first_step"] == 5 and summary["last_step"] == 6
    assert summary["metrics"]["reward/total"] is None
    assert summary["metrics"]["accuracy"]["last"] == 0.2
    assert summarise_training([{"step": 1}])["total_time_s"] is None


def test_score_table_uses_largest_k_per_bench():
    scores = [{"policy": "grpo", "bench": "b", "pass@1": 0.5, "pass@k": {"1": 0.5, "8": 0.9}, "maj@k": {"8": 0.6}},
              {"policy": "zeta", "bench": "b", "pass@1": 0.1, "pass@k": {"4": 0.3}},
              {"policy": "base", "bench": "b", "pass@1": 0.2}]
    header, rows = score_table(scores)
    assert header[:4] == ["policy", "b pass@1", "b pass@8", "b maj@8"]
    assert [row[:4] for row in rows] == [["base", "0.200", "n/a", "n/a"], ["grpo", "0.500", "0.900", "0.600"],
                                         ["zeta", "0.100", "n/a", "n/a"]], "unknown policies after grpo; missing k is n/a"


@pytest.mark.parametrize("seconds, expected", [(25, "25.0 s"), (125.0, "125.0 s (2.1 min)"), (None, "n/a")])
def test_fmt_duration(seconds, expected):
    assert fmt_duration(seconds) == expected


def test_markdown_escapes_pipes_in_cells():
    markdown = render_markdown([Block("table", header=["name", "value"], rows=[["a|b", "1"]])])
    assert parse_tables(markdown) == [[{"name": "a|b", "value": "1"}]]


def test_module_docstring_examples():
    result = doctest.testmod(report)
    assert result.attempted >= 5 and result.failed == 0


@pytest.mark.parametrize("values, window, expected, reason", [
    ([1.0, 2.0, 3.0, 4.0], 2, [1.0, 1.5, 2.5, 3.5], "pairs; the first point is its own mean"),
    ([4.0, 0.0, 2.0], 1, [4.0, 0.0, 2.0], "window 1 is the identity"),
    ([3.0, 6.0], 10, [3.0, 4.5], "window longer than the series: running mean"),
    ([], 3, [], "empty"),
])
def test_moving_average(values, window, expected, reason):
    assert plots.moving_average(values, window) == pytest.approx(expected), reason


@pytest.mark.parametrize("num_points, expected", [(0, 1), (39, 1), (40, 2), (200, 10), (1000, 50), (10**6, 50)])
def test_smoothing_window_is_light(num_points, expected):
    assert plots.smoothing_window(num_points) == expected


def test_plots_docstring_examples():
    result = doctest.testmod(plots)
    assert result.attempted >= 5 and result.failed == 0


def test_plots_never_touch_pyplot(tmp_path):
    # A fresh interpreter: other tests in this process may have imported pyplot themselves.
    import subprocess
    import sys

    script = ("import sys; from stages.core import plots; "
              f"plots.plot_overlaid({str(tmp_path / 'x.png')!r}, {{'a': ([1, 2], [0.1, 0.2]), 'b': ([], [])}}, ylabel='y'); "
              "print('matplotlib.pyplot' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                            cwd=Path(__file__).resolve().parents[2])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
    assert png_size(tmp_path / "x.png") == (800, 450)


# ----------------------------------------------------------------------------- curves, reflection, examples

def _scores(policy: str, bench: str, accuracy: float, step: int | None = None, reflection_rate: float = 0.0,
            length: float = 50.0) -> dict:
    return {"policy": policy, "bench": bench, "step": step, "pass@1": accuracy, "avg@n": accuracy,
            "avg@n_interval": [accuracy - 0.1, accuracy + 0.1], "mean_length": length,
            "per_prompt": {"p0": accuracy, "p1": accuracy},
            "reflection": {"markers": "union",
                           "all": {"num": 8, "reflection_rate": reflection_rate, "think_chars": 40.0, "answer_chars": 3.0},
                           "correct": {"num": 4, "reflection_rate": reflection_rate, "think_chars": 30.0, "answer_chars": 2.0},
                           "incorrect": {"num": 4, "reflection_rate": 0.0, "think_chars": 50.0, "answer_chars": 4.0},
                           "truncated": {"num": 0, "reflection_rate": None, "think_chars": None, "answer_chars": None}}}


def _write_json(path: Path, payload: dict) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload))
    return str(path)


@pytest.fixture()
def curve_report(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("".join(json.dumps({"step": s, "reward/total": 0.1 * s, "completions/reflection_rate": 0.01 * s})
                               + "\n" for s in range(6)))
    scores = [_write_json(tmp_path / f"final_{p}.json", _scores(p, "countdown", a, reflection_rate=r))
              for p, a, r in (("base", 0.2, 0.0), ("grpo", 0.6, 0.3))]
    steps = [_write_json(tmp_path / f"step_{s}.json", _scores(f"step_{s:06d}", "countdown", a, step=s, reflection_rate=r))
             for s, a, r in ((2, 0.3, 0.1), (4, 0.5, 0.2))]
    rollouts = tmp_path / "rollouts"
    rollouts.mkdir()
    for step, text in ((0, "guess 5</think><answer>5</answer>"), (4, "Wait, recheck: 3+4=7</think><answer>7</answer>")):
        (rollouts / f"step_{step:06d}.jsonl").write_text(json.dumps({"id": "q", "completion": text, "reward": 1.0}) + "\n")
    out = tmp_path / "r1" / "report"
    report.main({"formats": ["md", "html"]}, {"metrics": str(metrics), "scores": scores, "step_scores": steps,
                                              "rollouts": str(rollouts)}, {"report": str(out)})
    return out


def test_curves_run_from_the_start_policy_through_snapshots_to_the_final_policy(curve_report):
    markdown = (curve_report / "report.md").read_text()
    curve_rows = next(t for t in parse_tables(markdown) if t and "step" in t[0] and "reflection rate" in t[0])
    assert [(row["step"], row["avg@n [95% CI]"], row["reflection rate"]) for row in curve_rows] == [
        ("0", "0.200 [0.100, 0.300]", "0.000"), ("2", "0.300 [0.200, 0.400]", "0.100"),
        ("4", "0.500 [0.400, 0.600]", "0.200"), ("6", "0.600 [0.500, 0.700]", "0.300")], \
        "base at step 0, snapshots at their steps, final grpo after the last logged step (5) + 1"
    assert (curve_report / "curves.csv").read_text().splitlines()[0] == "bench,step,avg@n [95% CI],mean length,reflection rate"
    assert png_size(curve_report / "eval_curves.png") == (800, 800)


def test_reflection_by_outcome_per_checkpoint_in_step_order(curve_report):
    markdown = (curve_report / "report.md").read_text()
    table = next(t for t in parse_tables(markdown) if t and "outcome" in t[0])
    assert [row["policy"] for row in table if row["outcome"] == "all"] == ["base", "step_000002", "step_000004", "grpo"]
    correct = {row["policy"]: row for row in table if row["outcome"] == "correct"}
    assert correct["grpo"]["reflection rate"] == "0.300" and correct["grpo"]["think chars"] == "30.0"


def test_example_completions_from_the_first_and_last_archived_step(curve_report):
    markdown = (curve_report / "report.md").read_text()
    assert "Step 0:" in markdown and "Step 4:" in markdown
    assert "reflection markers: recheck, wait\nWait, recheck: 3+4=7" in markdown
    assert "reflection markers: none\nguess 5" in markdown
    assert "<pre>reward 1.0, reflection markers: recheck, wait" in (curve_report / "report.html").read_text()


def test_step_scores_need_a_step(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text('{"step": 0}\n')
    bad = _write_json(tmp_path / "bad.json", {"policy": "step_000002", "bench": "b", "pass@1": 0.5})
    with pytest.raises(ValueError, match=r"bad\.json: missing field 'step'"):
        report.main({}, {"metrics": str(metrics), "step_scores": [bad]}, {"report": str(tmp_path / "r" / "report")})
    assert not (tmp_path / "r" / "report").exists()


# ----------------------------------------------------------------------------- several seeds

SEEDS = {"r-seed0": 0, "r-seed1": 1}


def write_jsonl(path: Path, records: list[dict]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return str(path)


def seed_scores(run: str, policy: str, per_prompt: dict[str, float], step: int | None = None, length: float = 10.0) -> dict:
    mean = sum(per_prompt.values()) / len(per_prompt)
    return {"run": run, "policy": policy, "bench": "cd", "step": step, "pass@1": mean, "avg@n": mean,
            "avg@n_interval": [0.0, 1.0], "per_prompt": per_prompt, "pass@k": {"1": mean}, "maj@k": {"1": mean},
            "mean_length": length, "reflection": {"all": {"num": 4, "reflection_rate": 0.5, "think_chars": 1.0,
                                                          "answer_chars": 1.0}}}


@pytest.fixture(scope="module")
def seed_report(tmp_path_factory) -> Path:
    """Two seeds, hand-chosen so every aggregate is easy to compute by hand:

    training (reward/total, accuracy, mean length, reflection rate) at steps 0, 1 (seed 0 also at 2):
        seed 0: 0.0, 0.2 (0.4);  seed 1: 0.2, 0.4  -> mean 0.1, 0.3 on the shared steps 0, 1
    final grpo per prompt: seed 0 {a: 1.0, b: 0.5}, seed 1 {a: 0.5, b: 0.0} -> pooled {a: 0.75, b: 0.25}
    snapshot step 1:       seed 0 {a: 0.5, b: 0.5}, seed 1 {a: 0.5, b: 0.0} -> pooled {a: 0.5, b: 0.25}
    """
    root = tmp_path_factory.mktemp("seeds")
    curves = {"r-seed0": [0.0, 0.2, 0.4], "r-seed1": [0.2, 0.4]}
    metrics = [write_jsonl(root / run / "metrics.jsonl",
                           [{"step": step, "reward/total": value, "accuracy": value, "completions/mean_length": 100 * value,
                             "completions/reflection_rate": value} for step, value in enumerate(values)])
               for run, values in curves.items()]
    scores = {"base": seed_scores("base", "base", {"a": 0.0, "b": 0.0}),
              "g0": seed_scores("r-seed0", "grpo", {"a": 1.0, "b": 0.5}, length=10.0),
              "g1": seed_scores("r-seed1", "grpo", {"a": 0.5, "b": 0.0}, length=30.0),
              "s0": seed_scores("r-seed0", "step_000001", {"a": 0.5, "b": 0.5}, step=1),
              "s1": seed_scores("r-seed1", "step_000001", {"a": 0.5, "b": 0.0}, step=1)}
    paths = {name: write_jsonl(root / "scores" / f"{name}.json", [value]) for name, value in scores.items()}
    inputs = {"metrics": metrics, "scores": [paths["base"], paths["g0"], paths["g1"]],
              "step_scores": [paths["s0"], paths["s1"]]}
    out = root / "r" / "report"
    report.main({"seeds": SEEDS, "formats": ["md", "html"], "bootstrap_resamples": 1000}, inputs, {"report": str(out)})
    return out


def tables_by_first_header(markdown: str) -> dict[str, list[dict[str, str]]]:
    return {", ".join(list(table[0])[:3]): table for table in parse_tables(markdown) if table}


def test_seed_report_files(seed_report):
    names = sorted(p.name for p in seed_report.iterdir())
    assert names == sorted(["report.md", "report.html", "meta.json", "training_seeds.png", "eval_curves.png",
                            "scores.csv", "scores_per_seed.csv", "curves.csv", "training_seeds.csv"])
    assert png_size(seed_report / "training_seeds.png") == (800, 4 * 240), "one panel per training metric"
    markdown = (seed_report / "report.md").read_text()
    assert markdown.startswith("# R1-Zero run report: r (2 seeds)\n"), "the run is the directory above the output"
    assert "`r-seed0` (seed 0), `r-seed1` (seed 1)" in markdown


def test_seed_report_pools_final_scores_over_seeds(seed_report):
    tables = tables_by_first_header((seed_report / "report.md").read_text())
    pooled = {row["policy"]: row for row in tables["policy, bench, avg@n pooled [95% CI]"]}
    # Pooled per prompt {a: 0.75, b: 0.25}: mean 0.5; a bootstrap over two prompts only ever gives
    # 0.25, 0.5 or 0.75, each end with chance 1/4, so the 95% interval is [0.25, 0.75].
    assert pooled["grpo"]["avg@n pooled [95% CI]"] == "0.500 [0.250, 0.750]"
    assert pooled["grpo"]["mean length"] == "20.0" and pooled["grpo"]["seeds"] == "2"
    assert pooled["base"]["seeds"] == "1", "the base model is shared: evaluated once"


def test_seed_report_per_seed_table_and_t_interval_across_seeds(seed_report):
    rows = tables_by_first_header((seed_report / "report.md").read_text())["policy, bench, seed"]
    grpo = [row for row in rows if row["policy"] == "grpo"]
    assert [(row["seed"], row["avg@n [95% CI]"]) for row in grpo[:2]] == [("0", "0.750 [0.000, 1.000]"),
                                                                          ("1", "0.250 [0.000, 1.000]")]
    # Seeds 0.75 and 0.25: mean 0.5, sd 0.3536, se 0.25, t(0.975, 1) = 12.706 -> 0.5 +- 3.1766.
    assert grpo[2]["seed"] == "mean over seeds" and grpo[2]["avg@n [95% CI]"] == "0.500 [-2.677, 3.677]"


def test_seed_report_training_curves_mean_and_interval(seed_report):
    tables = tables_by_first_header((seed_report / "report.md").read_text())
    rows = {row["metric"]: row for row in tables["metric, step, mean over seeds [95% CI]"]}
    # Last step both seeds logged: 1, values 0.2 and 0.4: mean 0.3, se 0.1, 0.3 +- 12.706 * 0.1.
    assert rows["total reward"] == {"metric": "total reward", "step": "1", "mean over seeds [95% CI]": "0.300 [-0.971, 1.571]",
                                    "seed 0": "0.200", "seed 1": "0.400"}
    assert rows["mean length (tokens)"]["seed 1"] == "40.0"
    csv_rows = (seed_report / "training_seeds.csv").read_text().splitlines()
    assert csv_rows[0] == "metric,step,mean,low,high,seeds"
    assert csv_rows[1:3] == ["total reward,0,0.1,-1.17062,1.37062,2", "total reward,1,0.3,-0.97062,1.57062,2"]


def test_seed_report_checkpoint_curve_is_pooled(seed_report):
    rows = tables_by_first_header((seed_report / "report.md").read_text())["bench, step, avg@n [95% CI]"]
    # Step 0: the base; step 1: the snapshots pooled {a: 0.5, b: 0.25}; step 3: the final policy
    # (metrics log steps 0-2, so the final weights come after step 2).
    points = [(row["step"], row["avg@n [95% CI]"].split(" ")[0]) for row in rows]
    assert points == [("0", "0.000"), ("1", "0.375"), ("3", "0.500")]


@pytest.mark.parametrize("inputs, message", [
    ({"metrics": ["m0"]}, "1 'metrics' inputs for 2 seed runs"),
    ({"metrics": ["m0", "m1"], "scores": ["other"]}, "belongs to run 'other-run', which is none of the seed runs"),
    ({"metrics": ["m0", "m1"], "sft_metrics": ["m0"]}, "1 'sft_metrics' inputs for 2 seed runs"),
])
def test_seed_report_bad_inputs_are_named(tmp_path, inputs, message):
    files = {"m0": write_jsonl(tmp_path / "m0.jsonl", [{"step": 0}]), "m1": write_jsonl(tmp_path / "m1.jsonl", [{"step": 0}]),
             "other": write_jsonl(tmp_path / "other.json", [seed_scores("other-run", "grpo", {"a": 1.0})])}
    resolved = {key: [files[name] for name in names] for key, names in inputs.items()}
    with pytest.raises(ValueError, match=re.escape(message)):
        report.main({"seeds": SEEDS}, resolved, {"report": str(tmp_path / "r" / "report")})
    assert not (tmp_path / "r" / "report").exists()


def test_seed_report_html_has_the_seed_tables_and_plots(seed_report):
    page = (seed_report / "report.html").read_text()
    assert "<td>0.500 [-2.677, 3.677]</td>" in page and "<td>0.300 [-0.971, 1.571]</td>" in page
    assert page.count('src="data:image/png;base64,') == 2, "training_seeds.png and eval_curves.png embedded"
