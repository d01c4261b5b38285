"""Cross-run comparison: path inference, tables parsed back from Markdown, deltas, errors."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from stages import compare
from stages.compare import compare_runs, delta_table, final_policy, identity_from_path, load_compare_scores

RUNS = Path(__file__).resolve().parents[1] / "fixtures" / "report" / "runs"
CURVE_FILES = ["accuracy_vs_step.png", "length_vs_step.png", "reward_vs_step.png", "eval_curves.png"]


def parse_tables(markdown: str) -> list[list[dict[str, str]]]:
    """Every Markdown table as a list of {header: cell} rows."""
    tables, lines = [], markdown.splitlines()
    for index, line in enumerate(lines):
        if line.startswith("|") and index + 1 < len(lines) and set(lines[index + 1].replace(" ", "")) <= set("|-") \
                and (index == 0 or not lines[index - 1].startswith("|")):
            header = [cell.strip() for cell in line.strip().split("|")[1:-1]]
            rows = []
            for row_line in lines[index + 2:]:
                if not row_line.startswith("|"):
                    break
                rows.append(dict(zip(header, [c.strip() for c in row_line.strip().split("|")[1:-1]], strict=True)))
            tables.append(rows)
    return tables


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    return compare_runs(str(RUNS), ["run_a", "run_b"], str(tmp_path_factory.mktemp("cmp") / "a_vs_b"))


@pytest.mark.parametrize("path, expected, reason", [
    ("results/r1/eval/grpo/countdown/scores.json", {"run": "r1", "policy": "grpo", "bench": "countdown"}, "run layout"),
    ("/abs/results/r1/eval/sft/math/scores.json", {"run": "r1", "policy": "sft", "bench": "math"}, "absolute path"),
    ("results/models/tiny/eval/math/scores.json", {"run": "base", "policy": "base", "bench": "math", "model": "tiny"},
     "shared base layout"),
    ("results/r1/eval/grpo/scores.json", {}, "a level missing"),
    ("scores.json", {}, "no directories"),
    ("results/r1/evaluation/grpo/countdown/scores.json", {}, "not an eval directory"),
])
def test_identity_from_path(path, expected, reason):
    assert identity_from_path(path) == expected, reason


@pytest.mark.parametrize("policies, expected, reason", [
    (["base", "sft", "grpo"], "grpo", "grpo is the final policy"),
    (["sft", "base"], "sft", "no grpo: the cold start"),
    (["base", "ckpt_a", "ckpt_b"], "ckpt_b", "other names: the last by name"),
    (["base"], None, "only the base"),
])
def test_final_policy(policies, expected, reason):
    assert final_policy(policies) == expected, reason


def test_compare_runs_writes_every_file(built):
    assert sorted(p.name for p in built.iterdir()) == sorted(["compare.md", "compare.html", "meta.json", "scores.csv",
                                                              "significance.csv", *CURVE_FILES])
    for name in CURVE_FILES:
        assert (built / name).read_bytes()[:4] == b"\x89PNG"


def test_compare_table_rows(built):
    table = parse_tables((built / "compare.md").read_text())[0]
    assert [row["run/policy"] for row in table] == ["base", "run_a/sft", "run_a/grpo", "run_b/grpo"]
    rows = {row["run/policy"]: row for row in table}
    assert rows["base"] == {"run/policy": "base", "seeds": "1", "countdown pass@1": "0.125", "countdown pass@4": "0.375",
                            "countdown maj@4": "0.250", "countdown mean length": "40.0", "math pass@1": "0.062",
                            "math pass@4": "0.250", "math maj@4": "0.000", "math mean length": "45.0",
                            "countdown avg@n [95% CI]": "n/a", "math avg@n [95% CI]": "n/a"}
    assert rows["run_a/sft"]["countdown pass@1"] == "0.250", "sft file has no 'run' field: taken from its path"
    assert rows["run_b/grpo"]["countdown mean length"] == "120.0"
    assert rows["run_b/grpo"]["math pass@1"] == "n/a"


def test_delta_of_final_policy_vs_base(built):
    deltas = {row["run"]: row for row in parse_tables((built / "compare.md").read_text())[1]}
    run_a, run_b = deltas["run_a"], deltas["run_b"]
    # run_a grpo countdown: 0.5 - 0.125, 0.75 - 0.375, 0.5 - 0.25, 90 - 40.
    assert (run_a["final policy"], run_a["countdown vs"]) == ("grpo", "base")
    assert [run_a[f"countdown {name}"] for name in ("Δpass@1", "Δpass@4", "Δmaj@4", "Δmean length")] == \
        ["+0.375", "+0.375", "+0.250", "+50.0"]
    assert run_a["math Δpass@1"] == "+0.125" and run_a["math Δmean length"] == "+25.0"
    assert run_b["countdown Δpass@1"] == "+0.250" and run_b["countdown Δmean length"] == "+80.0"
    assert run_b["math vs"] == "n/a" and run_b["math Δpass@1"] == "n/a", "run_b has no math evaluation"


def test_training_table(built):
    training = {row["run"]: row for row in parse_tables((built / "compare.md").read_text())[3]}
    assert training["run_a"] == {"run": "run_a", "steps": "10", "last reward": "1.000", "best reward": "1.200",
                                 "last accuracy": "0.500", "best accuracy": "0.500", "total step time": "25.0 s"}
    assert training["run_b"]["steps"] == "6" and training["run_b"]["last accuracy"] == "0.180"


def test_html_and_meta(built):
    page = (built / "compare.html").read_text()
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) == 4 and all(src.startswith("data:image/png;base64,") for src in sources)
    assert "<td>run_b/grpo</td>" in page
    meta = json.loads((built / "meta.json").read_text())
    assert meta["stage"] == "compare" and meta["config"]["runs"] == ["run_a", "run_b"]
    assert meta["config"]["results_dir"] == str(RUNS)
    assert len(meta["inputs"]["scores"]) == 6 and len(meta["inputs"]["metrics"]) == 2


def test_stage_main_matches_compare_runs(built, tmp_path):
    scores = sorted(str(p) for p in RUNS.glob("**/scores.json"))
    inputs = {"metrics": [str(RUNS / "run_a/grpo/metrics.jsonl"), str(RUNS / "run_b/grpo/metrics.jsonl")], "scores": scores}
    out = tmp_path / "cmp"
    compare.main({"runs": ["run_a", "run_b"], "title": "A vs B", "_runtime": {"threads": 1}}, inputs, {"report": str(out)})
    markdown = (out / "compare.md").read_text()
    assert markdown.startswith("# A vs B\n")
    assert parse_tables(markdown) == parse_tables((built / "compare.md").read_text())


def test_workflow_snapshot_with_name_is_accepted():
    # pipeline/config.py writes {"name": ..., "runs": [...]} as the compare snapshot.
    cfg = compare.parse_config({"name": "all", "runs": ["a", "b"]}, compare.CompareConfig, "compare")
    assert (cfg.name, cfg.runs, cfg.title) == ("all", ["a", "b"], None)
    assert compare._default_title(cfg.runs, cfg.name) == "R1-Zero comparison 'all': a, b"


def make_scores(root: Path, relative: str, pass_at_1: float, **fields) -> str:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    mean_length = 100 * pass_at_1 if isinstance(pass_at_1, float) else None
    path.write_text(json.dumps({"pass@1": pass_at_1, "mean_length": mean_length, **fields}))
    return str(path)


def test_own_base_is_preferred_over_shared_base(tmp_path):
    paths = [make_scores(tmp_path, "models/tiny/eval/cd/scores.json", 0.1),
             make_scores(tmp_path, "r1/eval/base/cd/scores.json", 0.2),
             make_scores(tmp_path, "r1/eval/grpo/cd/scores.json", 0.5),
             make_scores(tmp_path, "r2/eval/sft/cd/scores.json", 0.3)]
    header, rows = delta_table(load_compare_scores(paths, ["r1", "r2"]), ["r1", "r2"])
    table = {row[0]: dict(zip(header, row)) for row in rows}
    assert (table["r1"]["cd vs"], table["r1"]["cd Δpass@1"]) == ("r1/base", "+0.300"), "the run's own base"
    assert (table["r2"]["final policy"], table["r2"]["cd vs"], table["r2"]["cd Δpass@1"]) == ("sft", "base", "+0.200")
    assert table["r2"]["cd Δpass@k"] == "n/a", "no pass@k in these files"


def test_several_base_models_are_labelled_and_not_guessed(tmp_path):
    paths = [make_scores(tmp_path, "models/tiny/eval/cd/scores.json", 0.1),
             make_scores(tmp_path, "models/qwen/eval/cd/scores.json", 0.4),
             make_scores(tmp_path, "r1/eval/grpo/cd/scores.json", 0.5)]
    scores = load_compare_scores(paths, ["r1"])
    assert sorted(s["policy"] for s in scores if s["run"] == "base") == ["base:qwen", "base:tiny"]
    header, rows = compare.compare_table(scores, ["r1"])
    assert [row[0] for row in rows] == ["base:qwen", "base:tiny", "r1/grpo"]
    delta_header, (delta_row,) = delta_table(scores, ["r1"])
    delta = dict(zip(delta_header, delta_row))
    assert delta["cd vs"] == "n/a" and delta["cd Δpass@1"] == "n/a", "which base r1 started from is unknown"


def test_fields_in_the_file_override_the_path(tmp_path):
    path = make_scores(tmp_path, "r1/eval/grpo/cd/scores.json", 0.5, run="r2", policy="grpo_v2", bench="countdown")
    (scores,) = load_compare_scores([path], ["r1", "r2"])
    assert (scores["run"], scores["policy"], scores["bench"]) == ("r2", "grpo_v2", "countdown")


@pytest.mark.parametrize("runs, make, match, reason", [
    (["r1"], lambda root: [make_scores(root, "r9/eval/grpo/cd/scores.json", 0.5)],
     r"belongs to run 'r9', which is not among the runs compared \['r1'\]", "a run not asked for"),
    (["r1"], lambda root: [make_scores(root, "loose/scores.json", 0.5, policy="grpo", bench="cd")],
     r"loose/scores\.json: no 'run' field, and the path matches neither", "no run field, unknown layout"),
    (["r1"], lambda root: [make_scores(root, "r1/eval/grpo/cd/scores.json", 0.5),
                           make_scores(root, "copy/scores.json", 0.6, run="r1", policy="grpo", bench="cd")],
     r"two scores files for run='r1', policy='grpo', bench='cd'", "duplicate"),
    (["r1"], lambda root: [make_scores(root, "r1/eval/grpo/cd/scores.json", None)],
     r"field 'pass@1' must be a number", "no score"),
])
def test_bad_scores_stop_and_write_nothing(tmp_path, runs, make, match, reason):
    out = tmp_path / "out" / "cmp"
    with pytest.raises(ValueError, match=match):
        compare.main({"runs": runs}, {"scores": make(tmp_path / "in")}, {"report": str(out)})
    assert not out.parent.exists(), reason


@pytest.mark.parametrize("config, inputs, match, reason", [
    ({"runs": ["a", "b"]}, {"metrics": [str(RUNS / "run_a/grpo/metrics.jsonl")]}, r"1 'metrics' inputs for 2 runs", "count"),
    ({"runs": []}, {}, r"compare config: runs: List should have at least 1 item", "no runs"),
    ({"runs": ["a", "a"]}, {}, r"runs listed twice: \['a'\]", "duplicate run"),
    ({"runs": ["base"]}, {}, r"may not be called 'base'", "reserved name"),
    ({"runs": ["a"], "title": "t", "extra": 1}, {}, r"compare config: extra", "unknown key"),
])
def test_config_and_input_errors(tmp_path, config, inputs, match, reason):
    with pytest.raises(ValueError, match=match):
        compare.main(config, inputs, {"report": str(tmp_path / "cmp")})
    assert not (tmp_path / "cmp").exists(), reason


def test_bad_metrics_line_names_file_and_line(tmp_path):
    results = tmp_path / "results"
    shutil.copytree(RUNS / "run_b", results / "run_b")
    metrics = results / "run_b/grpo/metrics.jsonl"
    metrics.write_text(metrics.read_text() + '{"step": 7, \n')
    with pytest.raises(ValueError, match=r"run_b/grpo/metrics\.jsonl:7: not valid JSON"):
        compare_runs(str(results), ["run_b"], str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_run_with_nothing_found_names_run_and_paths(tmp_path):
    results = tmp_path / "results"
    shutil.copytree(RUNS / "run_b", results / "run_b")
    with pytest.raises(FileNotFoundError, match=r"run 'missing': nothing found; looked for .*missing/grpo/metrics\.jsonl "
                                                r"and .*missing/eval/\*/\*/scores\.json"):
        compare_runs(str(results), ["run_b", "missing"], str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_run_with_scores_but_no_metrics_is_compared(tmp_path):
    results = tmp_path / "results"
    make_scores(results, "r1/eval/grpo/cd/scores.json", 0.5)
    data = compare.read_compare_inputs(["r1"], {"r1": compare.find_run_files(results, "r1")[0]},
                                       compare.find_run_files(results, "r1")[1])
    assert data.metrics_by_run == {"r1": None}
    header, rows = compare.training_table(data.metrics_by_run)
    assert rows == [["r1"] + ["n/a"] * (len(header) - 1)]


# ----------------------------------------------------------------------------- significance, curves

def _with_prompts(policy: str, run: str, bench: str, per_prompt: dict, step: int | None = None) -> dict:
    accuracy = sum(per_prompt.values()) / len(per_prompt)
    return {"run": run, "policy": policy, "bench": bench, "step": step, "pass@1": accuracy, "avg@n": accuracy,
            "avg@n_interval": [max(0.0, accuracy - 0.1), min(1.0, accuracy + 0.1)], "per_prompt": per_prompt,
            "mean_length": 40.0}


@pytest.fixture()
def significance_dir(tmp_path):
    prompts = [f"p{i}" for i in range(60)]
    base = {p: 0.2 for p in prompts}
    strong = {p: 0.2 + 0.5 * (i % 2) for i, p in enumerate(prompts)}  # +0.25 on average, on half the prompts
    noisy = {p: 0.2 + (0.1 if i % 2 else -0.1) for i, p in enumerate(prompts)}  # +0.0 on average
    files = {"models/tiny/eval/cd/scores.json": _with_prompts("base", "base", "cd", base),
             "strong/eval/grpo/cd/scores.json": _with_prompts("grpo", "strong", "cd", strong),
             "noisy/eval/grpo/cd/scores.json": _with_prompts("grpo", "noisy", "cd", noisy),
             "strong/eval/step_000002/cd/scores.json": _with_prompts("step_000002", "strong", "cd", base, step=2)}
    for relative, payload in files.items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(json.dumps(payload))
    for run in ("strong", "noisy"):
        (tmp_path / run / "grpo").mkdir(parents=True, exist_ok=True)
        (tmp_path / run / "grpo" / "metrics.jsonl").write_text("".join(json.dumps({"step": s}) + "\n" for s in range(4)))
    return compare_runs(str(tmp_path), ["strong", "noisy"], str(tmp_path / "compare" / "out"))


def test_significance_table_marks_only_real_differences(significance_dir):
    tables = parse_tables((significance_dir / "compare.md").read_text())
    table = next(t for t in tables if t and "verdict" in t[0])
    verdicts = {(row["A"], row["B"]): (row["A - B [95% CI]"].split(" ")[0], row["verdict"]) for row in table}
    assert verdicts == {("strong/grpo", "base"): ("+0.250", "significant"),
                        ("noisy/grpo", "base"): ("+0.000", "not significant"),
                        ("strong/grpo", "noisy/grpo"): ("+0.250", "significant")}
    assert all(row["prompts"] == "60" for row in table)
    assert (significance_dir / "significance.csv").read_text().startswith("bench,A,B,A avg@n,B avg@n,A - B [95% CI],p,")


def test_snapshot_scores_are_curves_not_rows(significance_dir):
    table = parse_tables((significance_dir / "compare.md").read_text())[0]
    assert [row["run/policy"] for row in table] == ["base", "strong/grpo", "noisy/grpo"]
    assert table[1]["cd avg@n [95% CI]"] == "0.450 [0.350, 0.550]"
    meta = json.loads((significance_dir / "meta.json").read_text())
    assert [Path(p).parts[-3] for p in meta["inputs"]["step_scores"]] == ["step_000002"]
    assert (significance_dir / "eval_curves.png").read_bytes()[:4] == b"\x89PNG"


def test_scores_without_per_prompt_results_are_not_judged():
    result = compare.significance([{"avg@n": 0.5}], [{"avg@n": 0.4, "per_prompt": {"a": 0.4}}])
    assert result is None


# ----------------------------------------------------------------------------- seeds

def scores_file(root: Path, run: str, policy: str, per_prompt: dict[str, float]) -> str:
    """results/{run}/eval/{policy}/cd/scores.json with avg@n per prompt (run from the path)."""
    mean = sum(per_prompt.values()) / len(per_prompt)
    path = root / run / "eval" / policy / "cd" / "scores.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"policy": policy, "bench": "cd", "pass@1": mean, "avg@n": mean, "per_prompt": per_prompt,
                                "avg@n_interval": [0.0, 1.0], "mean_length": 10.0}))
    return str(path)


def metrics_file(root: Path, run: str, accuracy: list[float]) -> str:
    path = root / run / "grpo" / "metrics.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"step": step, "accuracy": value, "reward/total": value}) + "\n"
                            for step, value in enumerate(accuracy)))
    return str(path)


@pytest.fixture(scope="module")
def seeded(tmp_path_factory) -> Path:
    """Seeded run "good" (seeds: every prompt right / half right) against the unseeded "plain" (20 prompts)."""
    root = tmp_path_factory.mktemp("seeded")
    prompts = [f"p{i}" for i in range(20)]
    scores = [scores_file(root, "good-seed0", "grpo", {p: 1.0 for p in prompts}),
              scores_file(root, "good-seed1", "grpo", {p: float(i % 2) for i, p in enumerate(prompts)}),
              scores_file(root, "plain", "grpo", {p: 0.25 for p in prompts})]
    metrics = [metrics_file(root, "good-seed0", [0.2, 0.4]), metrics_file(root, "good-seed1", [0.4, 0.6, 0.8]),
               metrics_file(root, "plain", [0.1, 0.1])]
    out = root / "compare" / "seeds"
    compare.main({"runs": ["good", "plain"], "members": {"good": ["good-seed0", "good-seed1"]}},
                 {"metrics": metrics, "scores": scores}, {"report": str(out)})
    return out


def test_seeded_run_is_one_row_pooled_over_its_seeds(seeded):
    table = parse_tables((seeded / "compare.md").read_text())[0]
    rows = {row["run/policy"]: row for row in table}
    assert list(rows) == ["good/grpo", "plain/grpo"]
    assert rows["good/grpo"]["seeds"] == "2" and rows["plain/grpo"]["seeds"] == "1"
    assert rows["good/grpo"]["cd pass@1"] == "0.750", "seed 0 at 1.0, seed 1 at 0.5"


def test_significance_pools_every_seed_per_prompt(seeded):
    significance = [row for row in parse_tables((seeded / "compare.md").read_text()) if row and "verdict" in row[0]][0]
    row = significance[0]
    # Pooled per prompt: 1.0 on even prompts, 0.5 on odd ones; minus plain's 0.25 -> 0.75 / 0.25, mean 0.5.
    assert (row["A"], row["B"], row["A avg@n"]) == ("good/grpo", "plain/grpo", "0.750")
    assert row["A - B [95% CI]"].startswith("+0.500 [") and row["verdict"] == "significant"
    assert row["prompts"] == "20"


def test_seeded_training_curves_are_the_mean_over_seeds(seeded):
    table = [table for table in parse_tables((seeded / "compare.md").read_text()) if table and "steps" in table[0]][0]
    training = {row["run"]: row for row in table}
    # Steps both seeds logged: 0 and 1; mean accuracy 0.3 and 0.5.
    assert training["good"]["steps"] == "2" and training["good"]["last accuracy"] == "0.500"


def test_pool_seeds_keeps_other_runs_and_the_seed_scores():
    seeds = [{"run": "g-seed0", "policy": "grpo", "bench": "b", "pass@1": 1.0, "per_prompt": {"p": 1.0}},
             {"run": "g-seed1", "policy": "grpo", "bench": "b", "pass@1": 0.0, "per_prompt": {"p": 0.0}}]
    other = {"run": "base", "policy": "base", "bench": "b", "pass@1": 0.2}
    pooled = compare.pool_seeds([*seeds, other], {"g": ["g-seed0", "g-seed1"]})
    assert pooled[0] is other
    assert pooled[1]["run"] == "g" and pooled[1]["avg@n"] == 0.5 and pooled[1]["seed_scores"] == seeds


@pytest.mark.parametrize("config, inputs, message", [
    ({"runs": ["good"], "members": {"good": ["good-seed0", "good-seed1"]}}, {"metrics": ["m"]},
     "1 'metrics' inputs for 2 runs ['good-seed0', 'good-seed1']"),
    ({"runs": ["a"], "members": {"b": ["b-seed0"]}}, {}, "members given for ['b'], which are not among runs ['a']"),
])
def test_seed_members_errors_are_named(tmp_path, config, inputs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        compare.main(config, inputs, {"report": str(tmp_path / "out")})


def test_compare_runs_finds_a_seeded_runs_seeds_by_name(seeded, tmp_path):
    root = seeded.parent.parent
    out = compare_runs(str(root), ["good", "plain"], str(tmp_path / "by_name"))
    assert (out / "compare.md").read_text().split("## Evaluation")[1].split("## Final")[0] == \
        (seeded / "compare.md").read_text().split("## Evaluation")[1].split("## Final")[0], \
        "the same table as the workflow's compare, which names the seeds in its config"
    assert json.loads((out / "meta.json").read_text())["config"]["members"] == {"good": ["good-seed0", "good-seed1"]}
