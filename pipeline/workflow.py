"""What the Snakefile needs at parse time: the validated config, snapshots, and target paths.

Kept out of the Snakefile so it is testable and the rules stay declarative.

Example:
    >>> w = Workflow.from_snakemake_config({})
    >>> w.paths.grpo_model("r1zero")
    'results/r1zero/grpo/model'
"""
from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path

from pipeline.code_deps import module_files
from pipeline.config import (DEFAULT_CONFIG, Config, layered_config, snapshot_text, stage_snapshots, validate_config,
                             write_snapshot)


# kind -> (mem_mb, runtime in minutes) at the embedded default's scale (measured peaks are
# under 1 GB); "light" jobs hold no model.
STAGE_RESOURCES = {"light": (1000, 30), "base_model": (4000, 120), "sft": (4000, 120), "grpo": (8000, 24 * 60),
                   "evaluate": (4000, 120)}
HUB_MODEL_MEM_MB = 64000  # a hub model's host-side peak (loading, saving); the memory plan covers the GPU


# Snakemake options that inspect the workflow and run no job (they may carry "=value").
INSPECTING_OPTIONS = ("--dry-run", "--dryrun", "--lint", "--list", "--list-rules", "--summary", "--detailed-summary",
                      "--dag", "--d3dag", "--rulegraph", "--filegraph", "--list-changes", "--lc", "--report")


def is_dry_run(argv: list[str]) -> bool:
    """Whether a Snakemake command line runs no job: a dry run (``-n``, ``-np``, ``--dry-run``)
    or an inspection (``--lint``, ``--list-rules``/``-l``, ``--summary``/``-S``, ``--dag``, ``--report``...).

    Snakemake only knows this after parsing the Snakefile (``workflow.dryrun`` is still False
    there), so the Snakefile reads its own command line and writes nothing on such a call.

    >>> is_dry_run(["snakemake", "-np", "--cores", "2"]), is_dry_run(["snakemake", "--lint"]), is_dry_run(["snakemake", "--cores", "2"])
    (True, True, False)
    """
    for arg in argv[1:]:
        if arg.split("=", 1)[0] in INSPECTING_OPTIONS:
            return True
        # Short flags, possibly combined: -n is the dry run, -l lists rules, -S and -D summarise.
        if re.fullmatch(r"-[a-zA-Z]+", arg) and set(arg[1:]) & set("nlSD"):
            return True
    return False


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

    def grpo_snapshots(self, run: str) -> str:
        """Published weights every ``eval_every`` steps: ``step_000040/`` etc., each an HF directory."""
        return f"{self.results}/{run}/grpo/snapshots"

    def grpo_scratch(self, run: str) -> str:
        # Beside the declared outputs, never inside: Snakemake deletes outputs before a rerun.
        return f"{self.results}/{run}/grpo"

    def run_eval(self, run: str, policy: str, bench: str, name: str) -> str:
        return f"{self.results}/{run}/eval/{policy}/{bench}/{name}"

    def bench_data(self, bench: str, name: str = "test.jsonl") -> str:
        """A preset bench's prepared rows (``test.jsonl``), ``stats.json`` and ``meta.json``."""
        return f"{self.results}/benches/{bench}/{name}"

    def step_eval(self, run: str, step: int | str, bench: str, name: str) -> str:
        """Evaluation of the GRPO snapshot of ``step``: the policy ``step_NNNNNN`` of the run."""
        return self.run_eval(run, step_policy(step), bench, name)

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
    def from_snakemake_config(cls, snakemake_config: dict) -> "Workflow":
        """Validate what Snakemake merged from ``--configfile``/``--config``, layered on the default.

        Nothing is written here: the Snakefile is parsed by dry runs too. Snapshots are the
        outputs of the ``config_snapshot`` rule, written (only on change) when a real run needs them.
        """
        source = "--configfile/--config" if snakemake_config else str(DEFAULT_CONFIG)
        cfg = validate_config(layered_config(dict(snakemake_config)), source)
        return cls(cfg, Paths(cfg.results_dir.rstrip("/") or "."))

    @functools.cached_property
    def snapshots(self) -> dict[str, str]:
        """Stage key -> the JSON text of its snapshot (what the stage reads, nothing else)."""
        return {key: snapshot_text(snap) for key, snap in stage_snapshots(self.cfg).items()}

    def stale_snapshots(self) -> dict[str, str]:
        """Snapshot key -> why it must be (re)written before the DAG is built, so that what reads it reruns.

        - "config changed": the file holds other text than the config gives now. Snakemake's
          "params" rerun trigger sees such a change only where its .snakemake/metadata has a
          record of the file; a results directory copied elsewhere, or a deleted .snakemake, has
          none, and the changed config would rerun nothing: stages silently keep old settings.
        - "new, and the report at its run's path was made without it": a run that has just become
          seeded has no group-report snapshot yet, while the unseeded run's report sits at the
          group report's path. Snakemake keeps an existing output whose input is only missing, so
          the old report would pass for the seeded one.

        The Snakefile writes these files (``sync_snapshots``); their newer mtime reruns every
        job that reads them. Other missing snapshots are the config_snapshot rule's job.
        """
        stale = {}
        for key, text in self.snapshots.items():
            path = Path(self.paths.config_snapshot(key))
            if path.is_file() and path.read_text() != text:
                stale[key] = "config changed"
        for group in self.cfg.seed_groups():
            key = f"report/{group}"
            if not Path(self.paths.config_snapshot(key)).exists() and Path(self.paths.report(group)).exists():
                stale[key] = "new, and the report at its run's path was made without it"
        return stale

    def sync_snapshots(self) -> dict[str, str]:
        """Write the ``stale_snapshots`` with the config's text; returns them (key -> why)."""
        stale = self.stale_snapshots()
        for key in stale:
            write_snapshot(self.paths.config_snapshot(key), self.snapshots[key])
        return stale

    @staticmethod
    def stage_code(module: str) -> list[str]:
        """The stage module and every project module it imports: a rule's code inputs."""
        return module_files(module)

    # ------------------------------------------------------------ resources
    @functools.cached_property
    def uses_gpu(self) -> bool:
        """Model-holding jobs claim a ``gpu`` resource when the stages will run on CUDA."""
        return self.cfg.device.startswith("cuda") or (self.cfg.device == "auto" and cuda_present())

    def resources(self, kind: str) -> dict[str, int]:
        """``resources:`` of a model-holding rule: memory (MB), runtime (minutes) and GPUs.

        With ``gpu`` declared, ``--resources gpu=1`` (the default profile) stops Snakemake from
        putting evaluation and GRPO on one GPU at once, however many ``--cores`` it has. The
        figures are defaults for the embedded scale; a profile's ``set-resources`` overrides them.
        """
        mem_mb, runtime_min = STAGE_RESOURCES[kind]
        if kind != "light" and any(model.kind == "hf" for model in self.cfg.models.values()):
            mem_mb = max(mem_mb, HUB_MODEL_MEM_MB)
        return {"mem_mb": mem_mb, "runtime": runtime_min, "gpu": 1 if self.uses_gpu and kind != "light" else 0}

    # ------------------------------------------------------------ distributed training (issue 9)
    def distributed(self, run: str):
        """The run's ``distributed`` block (None: one process)."""
        return self.cfg.runs[run].distributed

    def train_resources(self, kind: str) -> dict:
        """``resources:`` of the sft/grpo rules, per run (callables of the wildcards).

        Without a distributed block: ``resources(kind)``. With one: ``gpu`` = every rank's GPU
        (gpus_per_node x nodes; 0 on a CPU machine), ``nodes``, ``mem_mb`` per node
        (``mem_mb_per_node`` or the stage default x ranks per node) and, for CPU ranks, ``tasks``
        = one launcher per node (for a GPU job the Slurm plugin turns ``tasks`` into
        --ntasks-per-gpu, so it is left out there: Slurm then starts one task per node).
        """
        return {name: functools.partial(self._train_resource, kind, name)
                for name in ("mem_mb", "runtime", "gpu", "nodes", "tasks")}

    def _train_resource(self, kind: str, name: str, wildcards) -> int:
        return self.run_resources(kind, wildcards.run)[name]

    def run_resources(self, kind: str, run: str) -> dict[str, int]:
        """The numbers behind ``train_resources`` for one run (see there)."""
        plain = self.resources(kind)
        block = self.distributed(run)
        if block is None:  # tasks 0: no --ntasks-per-gpu for a GPU job (the plugin's default otherwise)
            return {**plain, "nodes": 1, "tasks": 0 if plain["gpu"] else 1}
        mem_mb = block.mem_mb_per_node or plain["mem_mb"] * block.gpus_per_node
        gpus = block.world_size if self.uses_gpu else 0
        return {"mem_mb": mem_mb, "runtime": plain["runtime"], "gpu": gpus, "nodes": block.nodes,
                "tasks": block.nodes if block.nodes > 1 or not gpus else 0}

    def multinode_runs(self) -> list[str]:
        """Runs whose training spans several nodes: their sft/grpo jobs are the ``*_multinode`` rules."""
        return [run for run, spec in self.cfg.runs.items() if spec.distributed is not None and spec.distributed.nodes > 1]

    def single_node_runs(self) -> list[str]:
        return [run for run in self.cfg.runs if run not in self.multinode_runs()]

    def multinode_resources(self, kind: str) -> dict:
        """``train_resources`` plus what the Slurm plugins need for a job that starts its own ranks
        with ``srun``: ``mpi`` (the job step runs the rule's command as is, not under ``srun -n1``;
        sbatch gets ``--ntasks`` = nodes, one torchrun per node) and ``tasks_per_gpu: 0`` (else a GPU
        job's ``tasks`` would become ``--ntasks-per-gpu``)."""
        return {**self.train_resources(kind), "mpi": "srun", "tasks_per_gpu": 0}

    def train_threads(self, run: str) -> int:
        """Cores of a training job: one per rank on a node (CPU ranks train with one thread each)."""
        block = self.distributed(run)
        return block.gpus_per_node if block is not None else 1

    def launcher(self, run: str, module: str) -> str:
        """The command that starts a training stage of ``run`` (what precedes its arguments).

        >>> w = Workflow.from_snakemake_config({})
        >>> w.launcher("r1zero", "stages.grpo")
        'python -m stages.grpo'
        """
        block = self.distributed(run)
        if block is None or block.world_size == 1:
            command = f"python -m {module}"
        elif block.nodes == 1:
            command = f"torchrun --standalone --nproc_per_node {block.gpus_per_node} -m {module}"
        else:
            # One torchrun per node (srun's tasks), meeting at a c10d rendezvous on the first node.
            command = (f"srun --kill-on-bad-exit=1 torchrun --nnodes {block.nodes} --nproc_per_node {block.gpus_per_node} "
                       f"--rdzv-backend c10d --rdzv-id $SLURM_JOB_ID "
                       f'--rdzv-endpoint "$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)":29500 -m {module}')
        gpus = self.run_resources("grpo", run)["gpu"] if block is not None else (1 if self.uses_gpu else 0)
        if gpus and (block is None or block.nodes == 1):
            # Disjoint devices for jobs that share a machine (stages/core/gpu_lease.py).
            command = f"python -m stages.core.gpu_lease --gpus {gpus} --dir {self.paths.results}/.gpu_leases -- {command}"
        return command

    # ------------------------------------------------------------ lookups for rules
    def policies(self, run: str) -> list[str]:
        """Policies evaluated inside a run (the base is evaluated once per base model)."""
        return (["sft"] if self.cfg.runs[run].sft else []) + ["grpo"]

    def policy_model(self, run: str, policy: str) -> str:
        return self.paths.sft_model(run) if policy == "sft" else self.paths.grpo_model(run)

    def pretrain_test_split(self, base: str) -> list[str]:
        """The test prompts a tiny base's corpus must leave out (none for hub models)."""
        pretrain = self.cfg.models[base].pretrain
        return [self.paths.data(pretrain.dataset, "test")] if pretrain else []

    def sft_data(self, run: str) -> str:
        sft = self.cfg.runs[run].sft
        return self.paths.data(sft.dataset, "train") if sft.source == "tiny_traces" else sft.path

    def grpo_start_model(self, run: str) -> str:
        spec = self.cfg.runs[run]
        return self.paths.sft_model(run) if spec.sft else self.paths.base_model(spec.base)

    def scores_of_run(self, run: str) -> list[str]:
        base = self.cfg.runs[run].base
        out = [self.paths.base_eval(base, bench, "scores.json") for bench in self.cfg.evaluation.benches]
        for policy in self.policies(run):
            out += [self.paths.run_eval(run, policy, bench, "scores.json") for bench in self.cfg.evaluation.benches]
        return out

    # ------------------------------------------------------------ evaluation
    def bench_data_path(self, bench: str) -> str:
        """The rows a bench evaluates: its dataset's prepared split, or a preset bench's prepared rows."""
        spec = self.cfg.evaluation.benches[bench]
        return self.paths.data(spec.dataset, spec.split) if spec.dataset is not None else self.paths.bench_data(bench)

    def preset_benches(self) -> list[str]:
        return [name for name, spec in self.cfg.evaluation.benches.items() if spec.preset is not None]

    def curve_benches(self) -> list[str]:
        """Benches evaluated at every published GRPO snapshot (``curve: true``)."""
        return [name for name, spec in self.cfg.evaluation.benches.items() if spec.curve]

    def eval_steps(self, run: str) -> list[int]:
        """Training steps whose published snapshot is evaluated: every ``eval_every`` steps, known at
        parse time. The last step is left out: its weights are the final GRPO model, evaluated as
        the ``grpo`` policy, and curves take that point from there."""
        grpo = self.cfg.runs[run].grpo
        if not grpo.eval_every:
            return []
        return [step for step in range(grpo.eval_every, grpo.steps, grpo.eval_every)]

    def step_scores_of_run(self, run: str) -> list[str]:
        """scores.json of every (kept step, curve bench) cell of a run."""
        return [self.paths.step_eval(run, step, bench, "scores.json")
                for step in self.eval_steps(run) for bench in self.curve_benches()]

    def missing_inputs(self) -> list[str]:
        """One message per hub model or dataset preset that no job could read: not a local path, not
        in the HF cache, and not allowed to download. Checked at parse time, before any job runs,
        so a run never dies inside a job log on huggingface_hub's offline error."""
        from pipeline.artifacts import repo_path
        from pipeline.presets import cached_copies, dataset_preset, hf_cache_dirs, missing_data_message

        problems = []
        for name, model in self.cfg.models.items():
            if model.kind != "hf" or model.allow_download or repo_path(model.path).is_dir():
                continue
            if not (hf_cache_dirs()[0] / f"models--{model.path.replace('/', '--')}").is_dir():
                problems.append(
                    f"models.{name}.path: {model.path!r} is neither a local directory nor in the Hugging Face cache "
                    f"({hf_cache_dirs()[0]}).\n  download it:   huggingface-cli download {model.path}\n"
                    f"  or point at a local copy: models.{name}.path: <an HF model directory>\n"
                    f"  or let the base_model job download it: models.{name}.allow_download: true")
        for name, dataset in self.cfg.datasets.items():
            source = getattr(dataset, "source", None)
            if getattr(source, "kind", None) != "preset" or source.allow_download:
                continue
            preset = dataset_preset(source.name)
            where = f"datasets.{name}.source"
            if source.local_path is not None:
                if not repo_path(source.local_path).exists():
                    problems.append(f"{where}.local_path: {source.local_path} does not exist (preset {preset.name!r})")
            elif not cached_copies(preset.hf_id):
                problems.append(missing_data_message(where, preset, source.revision or preset.revision))
        return problems

    def missing_bench_data(self) -> list[str]:
        """One message per preset bench whose rows are neither local nor in the HF cache (and may not
        be downloaded by the job), naming the preset and the ways to provide it."""
        from pipeline.artifacts import repo_path
        from pipeline.presets import bench_preset, cached_copies, missing_data_message

        problems = []
        for name in self.preset_benches():
            spec = self.cfg.evaluation.benches[name]
            where = f"evaluation.benches.{name}"
            preset = bench_preset(spec.preset)
            if spec.local_path is not None:
                if not repo_path(spec.local_path).exists():
                    problems.append(f"{where}.local_path: {spec.local_path} does not exist (preset {preset.name!r})")
            elif not spec.allow_download and not cached_copies(preset.hf_id):
                problems.append(missing_data_message(where, preset, spec.revision or preset.revision))
        return problems

    # ------------------------------------------------------------ seeds
    def seed_runs(self, group: str) -> list[str]:
        """The seed runs of a seeded run (``runs.<group>.seeds``), in the order of its list."""
        return self.cfg.seed_groups()[group]

    def scores_of_group(self, group: str) -> list[str]:
        """scores.json of the shared base once and of every seed run's policies."""
        return list(dict.fromkeys(path for run in self.seed_runs(group) for path in self.scores_of_run(run)))

    def step_scores_of_group(self, group: str) -> list[str]:
        """scores.json of every (kept step, curve bench) cell of every seed run."""
        return [path for run in self.seed_runs(group) for path in self.step_scores_of_run(run)]

    def compare_runs(self) -> list[str]:
        """What compare puts side by side: runs, and seeded runs by their name (over all seeds)."""
        return self.cfg.compare.runs or sorted(self.cfg.report_units())

    def compare_members(self) -> list[str]:
        """The concrete runs behind ``compare_runs``, in that order (a seeded run: each of its seeds)."""
        return [member for run in self.compare_runs() for member in self.cfg.report_units()[run]]

    def all_targets(self) -> list[str]:
        """A report per run, a seeded run's at results/{run}/report over its seeds (each seed's own
        report can be asked for by path), and the comparison when there are several."""
        targets = [self.paths.report(unit) for unit in self.cfg.report_units()]
        if len(self.cfg.report_units()) > 1:
            targets.append(self.paths.compare(self.cfg.compare.name))
        return targets


def step_policy(step: int | str) -> str:
    """The policy name of a GRPO snapshot's evaluation.

    >>> step_policy(40), step_policy("000040")
    ('step_000040', 'step_000040')
    """
    return f"step_{int(step):06d}"


def cuda_present() -> bool:
    """Whether this machine has an NVIDIA GPU, without importing torch at parse time."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return Path("/proc/driver/nvidia/version").exists() or Path("/dev/nvidia0").exists()


def wildcard_pattern(names) -> str:
    """A regex that matches exactly these names (for wildcard_constraints)."""
    return "|".join(re.escape(n) for n in sorted(names)) or "(?!)"
