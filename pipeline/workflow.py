"""What the Snakefile needs at parse time: the validated config, snapshots, and target paths.

Kept out of the Snakefile so it is testable and the rules stay declarative.

Example:
    >>> w = Workflow.from_snakemake_config({})
    >>> w.paths.grpo_model("r1zero")
    'results/r1zero/grpo/model'
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from pipeline.config import DEFAULT_CONFIG, Config, deep_merge, read_yaml, validate_config, write_snapshots


@dataclass(frozen=True)
class Paths:
    """Every artefact path, in one place (rules and the CLI use these, never literals)."""

    results: str

    def config_snapshot(self, key: str) -> str:
        return f"{self.results}/.config/{key}.json"

    def data(self, dataset: str, split: str) -> str:
        return f"{self.results}/data/{dataset}/{split}.jsonl"

    def data_stats(self, dataset: str) -> str:
        return f"{self.results}/data/{dataset}/stats.json"

    def data_meta(self, dataset: str) -> str:
        return f"{self.results}/data/{dataset}/meta.json"

    def base_model(self, base: str) -> str:
        return f"{self.results}/models/{base}/model"

    def base_eval(self, base: str, bench: str, name: str) -> str:
        return f"{self.results}/models/{base}/eval/{bench}/{name}"

    def sft_model(self, run: str) -> str:
        return f"{self.results}/{run}/sft/model"

    def grpo_model(self, run: str) -> str:
        return f"{self.results}/{run}/grpo/model"

    def grpo_metrics(self, run: str) -> str:
        return f"{self.results}/{run}/grpo/metrics.jsonl"

    def grpo_scratch(self, run: str) -> str:
        # Beside the declared outputs, never inside: Snakemake deletes outputs before a rerun.
        return f"{self.results}/{run}/grpo"

    def run_eval(self, run: str, policy: str, bench: str, name: str) -> str:
        return f"{self.results}/{run}/eval/{policy}/{bench}/{name}"

    def report(self, run: str) -> str:
        return f"{self.results}/{run}/report"

    def compare(self, name: str) -> str:
        return f"{self.results}/compare/{name}"

    def log(self, rule: str, key: str) -> str:
        return f"{self.results}/logs/{rule}/{key}.log"

    def benchmark(self, rule: str, key: str) -> str:
        return f"{self.results}/benchmarks/{rule}/{key}.tsv"


@dataclass(frozen=True)
class Workflow:
    cfg: Config
    paths: Paths

    @classmethod
    def from_snakemake_config(cls, snakemake_config: dict, *, write: bool = False) -> "Workflow":
        """Validate ``--configfile``/``--config`` (or the default) and optionally write snapshots.

        A config without ``runs`` is taken as overrides on top of the default config, so
        ``snakemake --config ...`` tweaks the embedded default.
        """
        raw = dict(snakemake_config)
        source = "--configfile"
        if "runs" not in raw:
            raw, source = deep_merge(read_yaml(DEFAULT_CONFIG), raw), str(DEFAULT_CONFIG)
        cfg = validate_config(raw, source)
        if write:
            write_snapshots(cfg, cfg.results_dir)
        return cls(cfg, Paths(cfg.results_dir.rstrip("/") or "."))

    # ------------------------------------------------------------ lookups for rules
    def policies(self, run: str) -> list[str]:
        """Policies evaluated inside a run (the base is evaluated once per base model)."""
        return (["sft"] if self.cfg.runs[run].sft else []) + ["grpo"]

    def policy_model(self, run: str, policy: str) -> str:
        return self.paths.sft_model(run) if policy == "sft" else self.paths.grpo_model(run)

    def grpo_start_model(self, run: str) -> str:
        spec = self.cfg.runs[run]
        return self.paths.sft_model(run) if spec.sft else self.paths.base_model(spec.base)

    def scores_of_run(self, run: str) -> list[str]:
        base = self.cfg.runs[run].base
        out = [self.paths.base_eval(base, bench, "scores.json") for bench in self.cfg.evaluation.benches]
        for policy in self.policies(run):
            out += [self.paths.run_eval(run, policy, bench, "scores.json") for bench in self.cfg.evaluation.benches]
        return out

    def compare_runs(self) -> list[str]:
        return self.cfg.compare.runs or sorted(self.cfg.runs)

    def all_targets(self) -> list[str]:
        targets = [self.paths.report(run) for run in self.cfg.runs]
        if len(self.cfg.runs) > 1:
            targets.append(self.paths.compare(self.cfg.compare.name))
        return targets


def wildcard_pattern(names) -> str:
    """A regex that matches exactly these names (for wildcard_constraints)."""
    return "|".join(re.escape(n) for n in sorted(names)) or "(?!)"
