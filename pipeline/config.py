"""The experiment config: one validated model per stage, and per-stage snapshots for caching.

``load_config`` validates the whole YAML before anything runs: a wrong key or type stops with a
message naming the key and saying what is allowed, and nothing is written. ``stage_snapshots``
cuts the resolved config into the parts each stage depends on; the Snakefile writes each part
to ``results/.config/<key>.json`` only when it changes, and lists it as an input of its rule, so
a change reruns exactly the stages it affects.

Example:
    >>> cfg = load_config(DEFAULT_CONFIG)
    >>> sorted(cfg.runs)
    ['coldstart', 'r1zero']
"""
from __future__ import annotations

import copy
import json
import os
import re
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, model_validator

from pipeline.algorithm_config import AlgorithmConfig, GuardConfig

PACKAGE_DIR = Path(__file__).resolve().parent
DEFAULT_CONFIG = PACKAGE_DIR / "config" / "default.yaml"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"  # names become path components


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------- data
GENERATOR_TASKS = {"countdown": "countdown", "arithmetic": "math"}  # the task of each generator's rows


class GeneratorSource(Strict):
    kind: Literal["generator"]
    name: Literal["countdown", "arithmetic"]
    options: dict[str, Any] = Field(default_factory=dict)  # passed to the generator (see stages/core/generators.py)


class HubSource(Strict):
    """A Hugging Face dataset id (or a local dataset directory), read with ``datasets``."""

    kind: Literal["hf"]
    path: str
    name: str | None = None  # dataset config name, e.g. "main" for openai/gsm8k
    splits: dict[str, str] = Field(default_factory=lambda: {"train": "train", "test": "test"})
    task: Literal["math", "countdown", "code"] = "math"
    fields: dict[str, str] = Field(default_factory=dict)  # our field -> dataset column, e.g. {question: problem}
    answer_format: Literal["plain", "gsm8k", "boxed"] = "plain"  # how to pull the gold answer out


class FilesSource(Strict):
    """Local JSONL or Parquet files, one per split, in the example-row format (or MBPP/HumanEval rows)."""

    kind: Literal["files"]
    splits: dict[str, str]  # split -> path
    task: Literal["math", "countdown", "code"] = "math"
    row_format: Literal["rows", "mbpp", "humaneval"] = "rows"
    fields: dict[str, str] = Field(default_factory=dict)


class PromptConfig(Strict):
    template: str = "data/prompts/r1zero.txt"  # file with a {question} placeholder
    format: Literal["plain", "chat"] = "plain"  # chat: a user message for the tokenizer's chat template
    system: str | None = None  # chat only


class PresetSource(Strict):
    """A published training set by name (``pipeline/presets.py``: countdown_3to4, simplerl_math_l3to5,
    orz_57k, deepscaler_40k), loaded through ``datasets`` from the HF cache or ``local_path``.

    The test split is carved from the preset's rows, as TinyZero did: ``splits.train`` rows first
    (0: all but the test rows), then the next ``splits.test`` rows.
    """

    kind: Literal["preset"]
    name: str
    revision: str | None = None  # the preset's pinned revision when None
    local_path: str | None = None  # a .jsonl/.parquet file or dataset directory in the dataset's own schema
    allow_download: bool = False  # let prepare_data download it (otherwise it must be cached or local)

    @model_validator(mode="after")
    def _known(self):
        from pipeline.presets import TRAIN_PRESETS

        if self.name not in TRAIN_PRESETS:
            raise ValueError(f"name: unknown dataset preset {self.name!r}; known: {', '.join(sorted(TRAIN_PRESETS))}")
        return self


class DatasetConfig(Strict):
    source: GeneratorSource | HubSource | FilesSource | PresetSource = Field(discriminator="kind")
    splits: dict[str, int] = Field(default_factory=lambda: {"train": 1000, "test": 100})  # generators: rows per split; others: a cap (0 = all)
    prompt: PromptConfig = Field(default_factory=PromptConfig)
    seed: int = 0


# ---------------------------------------------------------------- models
class TinyArchitecture(Strict):
    hidden_size: int = Field(128, ge=16)
    num_layers: int = Field(4, ge=1)
    num_heads: int = Field(4, ge=1)
    num_kv_heads: int | None = None
    intermediate_size: int | None = None
    max_position_embeddings: int = Field(512, ge=64)


class TinyPretrain(Strict):
    """The synthetic corpus and schedule that make the tiny base a weak base (stages/core/tiny_corpus.py)."""

    dataset: str  # a datasets: entry (a countdown generator); its test prompts are kept out of the corpus
    num_sequences: int = Field(60000, ge=100)
    styles: dict[str, float] = Field(default_factory=lambda: {"careful": 0.3, "guess": 0.5, "malformed": 0.1, "drill": 0.1})
    hint_prob: float = Field(0.35, ge=0, le=1)
    max_attempts: int = Field(6, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(3e-3, gt=0)
    warmup_steps: int = Field(50, ge=0)
    max_steps: int = Field(600, ge=1)
    seed: int = 0


class ModelConfig(Strict):
    kind: Literal["tiny", "hf"]
    path: str | None = None  # hf: a hub id or a local HF directory
    architecture: TinyArchitecture = Field(default_factory=TinyArchitecture)
    pretrain: TinyPretrain | None = None
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    # hf: a hub id must already be in the local HF cache (checked before any job runs), unless
    # the base_model job may download it.
    allow_download: bool = False

    @model_validator(mode="after")
    def _check_kind(self):
        unknown = set(self.pretrain.styles) - {"careful", "checking", "guess", "malformed", "drill"} if self.pretrain else set()
        if unknown:
            raise ValueError(f"pretrain.styles: unknown style(s) {sorted(unknown)}; allowed: careful, checking, guess, malformed, drill")
        if self.kind == "hf" and not self.path:
            raise ValueError("kind 'hf' needs path: a hub id such as Qwen/Qwen2.5-3B or a local HF directory")
        if self.kind == "tiny" and self.pretrain is None:
            raise ValueError("kind 'tiny' needs a pretrain: block (dataset: <a countdown dataset>)")
        return self


# ---------------------------------------------------------------- training
class SFTConfig(Strict):
    """Cold-start SFT: loss on completion tokens only."""

    source: Literal["tiny_traces", "files"] = "tiny_traces"
    dataset: str | None = None  # tiny_traces: a countdown dataset whose train prompts get traces
    path: str | None = None  # files: JSONL with prompt/completion fields
    num_examples: int = Field(400, ge=1)
    # tiny_traces: the trace style (stages/core/tiny_corpus.py). "checking" is the tiny base's
    # reflecting style ("let me check", each candidate against the target, "no, retry");
    # "careful" proposes attempts with a hint and checks them with a bare yes/no.
    trace_style: Literal["careful", "checking"] = "careful"
    hint_prob: float = Field(0.8, ge=0, le=1)  # careful: share of proposals that are the solution
    epochs: int = Field(2, ge=1)
    batch_size: int = Field(32, ge=1)  # sequences per optimiser step
    # Sequences per forward/backward; gradients accumulate over batch_size / micro_batch_size passes
    # with the loss scaled so the step equals the unbatched one. None: the whole batch at once.
    micro_batch_size: int | None = Field(None, ge=1)
    gradient_checkpointing: bool = False  # recompute decoder layers in backward: less memory, ~30% more compute
    lr: float = Field(1e-3, gt=0)
    warmup_steps: int = Field(10, ge=0)
    seed: int = 0

    @model_validator(mode="after")
    def _check_micro_batch(self):
        if self.micro_batch_size is not None and self.micro_batch_size > self.batch_size:
            raise ValueError(f"micro_batch_size: {self.micro_batch_size} is larger than batch_size {self.batch_size}; "
                             "use at most batch_size (or leave it unset)")
        return self


class RolloutConfig(Strict):
    backend: Literal["auto", "hf", "vllm"] = "auto"
    batch_size: int | None = Field(None, ge=1)  # hf: completions per generate call (None: all)
    gpu_memory_utilization: float = Field(0.3, gt=0, le=1)  # vllm
    enable_sleep_mode: bool = False  # vllm on GPU: free the engine's memory while training


class LoggingConfig(Strict):
    tensorboard: bool = True
    wandb: bool = False
    wandb_project: str = "r1zero"
    rollouts_every: int = Field(10, ge=1)  # keep sampled completions every N steps


class GRPOConfig(Strict):
    dataset: str
    steps: int = Field(60, ge=1)
    prompts_per_step: int = Field(8, ge=1)
    group_size: int = Field(8, ge=1)
    max_new_tokens: int = Field(160, ge=1)
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    stop_strings: list[str] = Field(default_factory=lambda: ["</answer>"])
    lr: float = Field(1e-4, gt=0)
    warmup_steps: int = Field(0, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    checkpoint_every: int = Field(10, ge=1)
    keep_checkpoints: int = Field(2, ge=1)
    # Publish the policy's weights every N steps (results/{run}/grpo/snapshots/step_NNNNNN/) for
    # evaluation curves over training; 0 publishes none. Resume checkpoints are separate scratch.
    eval_every: int = Field(0, ge=0)
    seed: int = 0
    algorithm: AlgorithmConfig = Field(default_factory=AlgorithmConfig)
    guards: GuardConfig = Field(default_factory=GuardConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    # Memory. Every forward pass (old log-probs, reference, critic, update) runs in micro-batches:
    # micro_batch_size sequences each, or -- dynamic batching -- as many length-sorted sequences
    # as fit max_tokens_per_micro_batch padded tokens (rows x longest prompt + completion). None
    # for both: one micro-batch per minibatch. Losses are scaled so that the accumulated gradient
    # equals the unbatched one.
    micro_batch_size: int | None = Field(None, ge=1)
    max_tokens_per_micro_batch: int | None = Field(None, ge=1)
    gradient_checkpointing: bool = False  # recompute decoder layers in backward (policy and critic)
    logprob_chunk_tokens: int = Field(4096, ge=1)  # positions per chunk of the LM head + log-softmax

    @model_validator(mode="after")
    def _check_lengths(self):
        buffer = self.algorithm.overlong_buffer_tokens
        if self.algorithm.truncation == "overlong_penalty" and buffer > self.max_new_tokens:
            raise ValueError(f"algorithm.overlong_buffer_tokens ({buffer}) must not exceed max_new_tokens "
                             f"({self.max_new_tokens}); DAPO used 4096 of 20480")
        return self

    @model_validator(mode="after")
    def _check_micro_batches(self):
        if self.micro_batch_size is not None and self.max_tokens_per_micro_batch is not None:
            raise ValueError("micro_batch_size and max_tokens_per_micro_batch: set one of them, not both "
                             "(a sequence count, or a token budget for dynamic batching)")
        return self

    @model_validator(mode="after")
    def _check_truncated_sampling(self):
        # The trainer's log-probs (old, new, reference) are over the full vocabulary. Sampling
        # from a top-p-truncated distribution makes the rollout policy a different one, so every
        # ratio (PPO, GSPO, CISPO, the mismatch correction) would be biased -- a known bug class.
        if self.top_p < 1.0:
            raise ValueError(f"top_p: {self.top_p} is not supported for training; the trainer's log-probs are "
                             "over the full vocabulary, so truncated sampling would bias every importance ratio. "
                             "Set top_p: 1.0 (evaluation may still use top_p < 1)")
        return self


class DistributedConfig(Strict):
    """How many ranks train a run's SFT and GRPO, and how DeepSpeed ZeRO shards them (docs/scaling.md).

    One block per run (``runs.<run>.distributed``), used by both its SFT and its GRPO: the world
    size is ``gpus_per_node x nodes``; the rules launch that many ranks (``torchrun``, or ``srun`` +
    ``torchrun`` over several nodes) and reserve the same GPUs, nodes and tasks from Snakemake or
    Slurm. The memory plan (``r1zero plan``) reads the same block. Without it a stage is one
    process on one device, as before.
    """

    gpus_per_node: int = Field(1, ge=1)  # ranks per node (one GPU each; CPU processes on a machine without GPUs)
    nodes: int = Field(1, ge=1)
    zero_stage: Literal[0, 1, 2, 3] = 2  # 0: replicated (DDP-like); 1: optimizer; 2: + gradients; 3: + parameters
    offload_optimizer: bool = False  # optimizer states (and the float32 master) in CPU memory
    offload_param: bool = False  # ZeRO-3 only: parameters in CPU memory between uses
    mem_mb_per_node: int | None = Field(None, ge=1000)  # host memory to reserve per node; None: the stage default

    @model_validator(mode="after")
    def _check_offload(self):
        if self.offload_param and self.zero_stage != 3:
            raise ValueError(f"offload_param: needs zero_stage: 3 (DeepSpeed offloads parameters only under ZeRO-3); "
                             f"zero_stage is {self.zero_stage}")
        if self.offload_optimizer and self.zero_stage == 0:
            raise ValueError("offload_optimizer: needs zero_stage 1, 2 or 3 (ZeRO-0 keeps the optimizer on every rank)")
        return self

    @property
    def world_size(self) -> int:
        return self.gpus_per_node * self.nodes


class RunConfig(Strict):
    base: str  # a models: entry
    sft: SFTConfig | None = None
    grpo: GRPOConfig
    distributed: DistributedConfig | None = None  # None: one process (see DistributedConfig)
    # Several seeds of the same run: each becomes a run of its own, {name}-seed{k}, with grpo.seed
    # (and sft.seed) set to k, and results/{name}/report aggregates them. None: one run, grpo.seed.
    seeds: list[StrictInt] | None = Field(None, min_length=1)
    seed_of: str | None = None  # set by the seeds: expansion: the seeded run this run is one seed of

    @model_validator(mode="after")
    def _check_distributed(self):
        if self.distributed is None:
            return self
        world = self.distributed.world_size
        if self.grpo.prompts_per_step % world:
            raise ValueError(f"grpo.prompts_per_step: {self.grpo.prompts_per_step} must be a multiple of the world size "
                             f"{world} (distributed.gpus_per_node x nodes): each rank generates the same number of groups")
        if self.grpo.algorithm.uses_critic and self.grpo.algorithm.critic != "separate":
            raise ValueError(f"distributed: algorithm.critic {self.grpo.algorithm.critic!r} is not supported under "
                             "DeepSpeed (the head rides on the policy engine); use critic: separate (its own engine)")
        if self.grpo.algorithm.ref_refresh_steps and self.distributed.zero_stage == 3:
            raise ValueError("distributed.zero_stage: 3 cannot refresh a sharded reference (algorithm.ref_refresh_steps); "
                             "use zero_stage: 2")
        return self

    @model_validator(mode="after")
    def _check_seeds(self):
        if self.seeds is not None and len(set(self.seeds)) != len(self.seeds):
            repeated = sorted({seed for seed in self.seeds if self.seeds.count(seed) > 1})
            raise ValueError(f"seeds: {repeated} listed twice; list each seed once, e.g. [0, 1, 2]")
        if self.seeds is not None and self.seed_of is not None:
            raise ValueError("seeds and seed_of: a run is either seeded (seeds:) or one seed of another (seed_of:)")
        return self


def seed_run_name(run: str, seed: int) -> str:
    """The name of one seed of a seeded run (its results live under results/{name}/).

    >>> seed_run_name("r1zero", 2)
    'r1zero-seed2'
    """
    return f"{run}-seed{seed}"


def expand_seeds(runs: dict[str, RunConfig]) -> dict[str, RunConfig]:
    """Each run with ``seeds:`` replaced by one run per seed, in the order listed; others unchanged.

    A seed run keeps every other setting of its run; ``seed_of`` names the run it came from.
    """
    expanded: dict[str, RunConfig] = {}
    for name, run in runs.items():
        if run.seeds is None:
            expanded[name] = run
            continue
        for seed in run.seeds:
            expanded[seed_run_name(name, seed)] = run.model_copy(update={
                "seeds": None, "seed_of": name, "grpo": run.grpo.model_copy(update={"seed": seed}),
                "sft": run.sft.model_copy(update={"seed": seed}) if run.sft else None})
    return expanded


# ---------------------------------------------------------------- evaluation, reports
# Sampling settings of a bench read from its dataset entry when the config gives none (a
# preset bench takes them from its protocol instead).
BENCH_SAMPLING_DEFAULTS = {"num_samples": 8, "temperature": 1.0, "top_p": 1.0, "max_new_tokens": 160}


class BenchConfig(Strict):
    """One benchmark: either a ``datasets:`` entry's split, or a named preset (pipeline/presets.py).

    A preset bench takes its data (hub id, split, field mapping, task) and its sampling protocol
    (``protocol``, default the preset's) from the preset; any sampling key given here overrides
    the protocol's value. Its rows are read from the Hugging Face cache, or ``local_path`` (a
    JSONL/Parquet file or dataset directory in the dataset's own schema).
    """

    dataset: str | None = None  # a datasets: entry (not with preset)
    preset: str | None = None  # a bench preset name: gsm8k, math500, aime2024, ... (see pipeline/presets.py)
    protocol: str | None = None  # preset only: simplerl_zoo, oat_zero, open_r1, codex (None: the preset's default)
    local_path: str | None = None  # preset only: a local copy in the dataset's schema instead of the HF cache
    revision: str | None = None  # preset only: a hub revision to pin (None: the preset's)
    allow_download: bool = False  # preset only: let the job download a dataset missing from the cache
    prompt: PromptConfig = Field(default_factory=PromptConfig)  # preset only (a dataset entry has its own)
    split: str | None = None  # dataset: its split (default test); preset: the hub split (default the preset's)
    max_prompts: int = Field(0, ge=0)  # 0 = all
    num_samples: int = Field(8, ge=1)
    temperature: float = Field(1.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int = Field(160, ge=1)
    stop_strings: list[str] = Field(default_factory=lambda: ["</answer>"])
    ks: list[int] = Field(default_factory=lambda: [1, 4, 8])
    seed: int = 1234
    curve: bool = True  # evaluate this bench at every published GRPO snapshot (eval_every), not only at the end

    @model_validator(mode="before")
    @classmethod
    def _fill_from_preset(cls, raw: Any) -> Any:
        if not isinstance(raw, dict):
            return raw
        if raw.get("preset") is None:
            return {"split": "test", **raw}
        from pipeline.presets import bench_preset

        try:
            preset = bench_preset(raw["preset"])
            protocol = preset.protocol(raw.get("protocol"))
        except KeyError as error:
            raise ValueError(error.args[0]) from None
        filled = {**protocol.as_bench_fields(), "split": preset.split, **raw}
        if "ks" not in raw:  # every k the protocol's n allows, so a one-sample protocol reports pass@1 only
            filled["ks"] = [k for k in (1, 4, 8, 16, 32) if k <= filled["num_samples"]]
        return filled

    @model_validator(mode="after")
    def _check_source(self):
        if (self.dataset is None) == (self.preset is None):
            raise ValueError("a bench names exactly one of dataset: (a datasets: entry) or preset: (see pipeline/presets.py)")
        preset_only = [name for name in ("protocol", "local_path", "revision") if getattr(self, name) is not None]
        if self.dataset is not None and (preset_only or self.allow_download):
            raise ValueError(f"{', '.join(preset_only) or 'allow_download'}: only for a preset bench; a dataset bench "
                             "reads the prepared split of its datasets: entry")
        return self


class EvaluationConfig(Strict):
    benches: dict[str, BenchConfig]
    backend: Literal["auto", "hf", "vllm"] = "auto"
    batch_size: int | None = Field(None, ge=1)
    # Uncertainty: percentile bootstrap over prompts (intervals) and paired over shared prompts (compare).
    bootstrap_resamples: int = Field(1000, ge=100)
    confidence_level: float = Field(0.95, gt=0, lt=1)
    # maj@k groups answers that the math checker finds equal (1/2 and 0.5); "string" groups equal text only.
    maj_equivalence: Literal["math", "string"] = "math"
    reflection_markers: str = "union"  # a list in stages/core/reflection.py: simplerl_zoo, open_reasoner_zero, understand_r1_zero, union
    # Rewards that score evaluation samples (task -> {reward: weight}); None: the training rewards.
    # A control run trained on other rewards (random_coin) is still judged by the verifier.
    rewards: dict[str, dict[str, float]] | None = None


class ReportConfig(Strict):
    formats: list[Literal["md", "html"]] = Field(default_factory=lambda: ["md", "html"])


class CompareConfig(Strict):
    name: str = Field("all", pattern=NAME_PATTERN)
    runs: list[str] | None = None  # None: every run


class Config(Strict):
    # A file given with --configfile is layered onto pipeline/config/default.yaml key by key; a
    # file that is a whole experiment on its own (a paper recipe) says inherit_default: false.
    inherit_default: bool = True
    results_dir: str = "results"
    device: str = "auto"
    datasets: dict[str, DatasetConfig]
    models: dict[str, ModelConfig]
    rewards: dict[str, dict[str, float]]  # task -> {reward name: weight}
    runs: dict[str, RunConfig]
    evaluation: EvaluationConfig
    report: ReportConfig = Field(default_factory=ReportConfig)
    compare: CompareConfig = Field(default_factory=CompareConfig)

    @model_validator(mode="after")
    def _expand_seeds(self):
        """Seeded runs become one run per seed (see ``expand_seeds``), so every stage, rule and
        path works on plain runs; ``seed_groups`` keeps which runs are seeds of which."""
        problems = []
        for name, run in self.runs.items():
            if run.seeds is None:
                continue
            for seed in run.seeds:
                if seed_run_name(name, seed) in self.runs:
                    problems.append(f"runs.{name}.seeds: seed {seed} would be the run {seed_run_name(name, seed)!r}, "
                                    "which the config already has; rename one of them")
        if problems:
            raise ValueError("; ".join(problems))
        self.runs = expand_seeds(self.runs)
        for name, run in self.runs.items():
            if run.seed_of is not None and run.seed_of in self.runs:
                raise ValueError(f"runs.{name}.seed_of: {run.seed_of!r} is also the name of a run; the seeded run's "
                                 f"report (results/{run.seed_of}/report) and that run's would be one path; rename one")
        return self

    def seed_groups(self) -> dict[str, list[str]]:
        """Seeded run -> its seed runs, in the order of its ``seeds:`` list.

        >>> cfg = load_config(DEFAULT_CONFIG, {"runs": {"r1zero": {"seeds": [0, 1]}}})
        >>> cfg.seed_groups(), sorted(cfg.runs)
        ({'r1zero': ['r1zero-seed0', 'r1zero-seed1']}, ['coldstart', 'r1zero-seed0', 'r1zero-seed1'])
        """
        groups: dict[str, list[str]] = {}
        for name, run in self.runs.items():
            if run.seed_of is not None:
                groups.setdefault(run.seed_of, []).append(name)
        return groups

    def report_units(self) -> dict[str, list[str]]:
        """What reports and compare treat as one run: each seeded run with its seed runs, and each
        unseeded run alone, in config order."""
        units: dict[str, list[str]] = {}
        for name, run in self.runs.items():
            units.setdefault(run.seed_of or name, []).append(name)
        return units

    @model_validator(mode="after")
    def _check_references(self):
        problems = []
        for name in [*self.datasets, *self.models, *self.runs]:
            if not _valid_name(name):
                problems.append(f"{name!r}: names become paths; use letters, digits, '_', '-', '.'")
        for model_name, model in self.models.items():
            if model.pretrain and model.pretrain.dataset not in self.datasets:
                problems.append(f"models.{model_name}.pretrain.dataset: unknown dataset {model.pretrain.dataset!r}; known: {_known(self.datasets)}")
        for run_name, run in self.runs.items():
            where = f"runs.{run_name}"
            if run.base not in self.models:
                problems.append(f"{where}.base: unknown model {run.base!r}; known: {_known(self.models)}")
            if run.grpo.dataset not in self.datasets:
                problems.append(f"{where}.grpo.dataset: unknown dataset {run.grpo.dataset!r}; known: {_known(self.datasets)}")
            else:
                unrewarded = sorted((dataset_tasks(self.datasets[run.grpo.dataset]) or set()) - set(self.rewards))
                if unrewarded:
                    problems.append(f"{where}.grpo.dataset: {run.grpo.dataset!r} has {', '.join(unrewarded)} rows but "
                                    f"rewards: has no entry for {', '.join(unrewarded)}; add rewards.{unrewarded[0]}: "
                                    "{<reward name>: <weight>}")
            if run.sft and run.sft.source == "tiny_traces" and run.sft.dataset not in self.datasets:
                problems.append(f"{where}.sft.dataset: unknown dataset {run.sft.dataset!r}; known: {_known(self.datasets)}")
            if run.sft and run.sft.source == "files" and not run.sft.path:
                problems.append(f"{where}.sft.path: needed when source is 'files'")
        for bench_name, bench in self.evaluation.benches.items():
            if bench.dataset is not None and bench.dataset not in self.datasets:
                problems.append(f"evaluation.benches.{bench_name}.dataset: unknown dataset {bench.dataset!r}; known: {_known(self.datasets)}")
            elif not set(bench_rewards(self, bench_name)) and bench_task(self, bench_name):
                problems.append(f"evaluation.benches.{bench_name}: its rows are {bench_task(self, bench_name)} rows but "
                                f"rewards: has no {bench_task(self, bench_name)!r} entry to score them")
        for run_name in self.compare.runs or []:
            if run_name not in self.report_units():
                problems.append(f"compare.runs: unknown run {run_name!r}; known: {_known(self.report_units())} "
                                "(a seeded run is compared by its name, over all its seeds)")
        if problems:
            raise ValueError("; ".join(problems))
        return self


def _valid_name(name: str) -> bool:
    return bool(re.match(NAME_PATTERN, name))


def _known(mapping: dict) -> str:
    return ", ".join(sorted(mapping)) or "(none)"


class ConfigError(ValueError):
    """A config that does not validate; the message names each bad key."""


def _model_for(loc: tuple) -> type[BaseModel] | None:
    """Walk the model tree along an error location to the model that rejected an extra key.

    Location parts that are not field names are dict keys (a dataset's name) or the tag of a
    discriminated union (``generator``), which picks the member of that kind.
    """
    model: Any = Config
    for part in loc[:-1]:
        if _is_model(model) and part in model.model_fields:
            model = _unwrap(model.model_fields[part].annotation)
        elif not _is_model(model):
            tagged = [m for m in _models_in(model) if part in typing.get_args(m.model_fields["kind"].annotation)]
            model = tagged[0] if tagged else None
    return model if _is_model(model) else None


def _is_model(value: Any) -> bool:
    return isinstance(value, type) and issubclass(value, BaseModel)


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    found = []
    for arg in typing.get_args(annotation):
        found += [arg] if _is_model(arg) else _models_in(arg)
    return found


def _unwrap(annotation: Any) -> Any:
    """Reduce Optional[X] and dict[str, X] to X; a union of several models stays a union."""
    if typing.get_origin(annotation) is dict:
        return _unwrap(typing.get_args(annotation)[1])
    models = _models_in(annotation)
    if len(models) == 1:
        return models[0]
    return annotation


def format_validation_error(error: ValidationError, source: str) -> str:
    lines = [f"{source}: the config does not validate:"]
    for item in error.errors():
        loc = tuple(item["loc"])
        field = ".".join(str(p) for p in loc if not (isinstance(p, str) and p in ("generator", "hf", "files", "preset"))) or "(top level)"
        if item["type"] == "extra_forbidden":
            model = _model_for(loc)
            allowed = ", ".join(model.model_fields) if model else "see pipeline/config.py"
            lines.append(f"  {field}: unknown key; allowed here: {allowed}")
        elif item["type"] == "missing":
            lines.append(f"  {field}: required key is missing")
        else:
            message = item["msg"].removeprefix("Value error, ")
            # A mapping is a whole block (a run, the config): its text would bury the message.
            got = "" if isinstance(item.get("input"), dict) else f" (got {item.get('input')!r})"
            lines.append(f"  {field}: {message}{got}")
    return "\n".join(lines)


def deep_merge(base: dict, override: dict) -> dict:
    """``override`` on top of ``base``; nested mappings merge, everything else replaces.

    A ``None`` (YAML ``null`` or ``~``) in ``override`` removes the key, which is how a layered
    file leaves out something the default defines (``runs: {coldstart: null}``).

    >>> deep_merge({"runs": {"a": {"lr": 1}, "b": {}}}, {"runs": {"a": {"lr": 2}, "b": None}})
    {'runs': {'a': {'lr': 2}}}
    """
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def read_yaml(path: str | os.PathLike) -> dict:
    try:
        with open(path) as handle:
            data = yaml.safe_load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys (datasets, models, runs, ...)")
    return data


def validate_config(raw: dict, source: str = "config") -> Config:
    try:
        return Config.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error, source)) from None
    except ValueError as error:
        raise ConfigError(f"{source}: {error}") from None


def layered_config(user: dict) -> dict:
    """The config that runs: ``user`` layered onto the default, unless it says it is whole.

    Snakemake merges its own ``--configfile`` files and ``--config`` pairs into one mapping in
    order; this puts that mapping on top of ``pipeline/config/default.yaml`` the same way, so a
    file that adds one run, or changes one setting of a default run, needs only that part.
    """
    if user.get("inherit_default", True) is False:
        return copy.deepcopy(user)
    return deep_merge(read_yaml(DEFAULT_CONFIG), user)


def load_config(path: str | os.PathLike, overrides: dict | None = None) -> Config:
    """Validate a config file as the workflow would run it (layered onto the default)."""
    raw = read_yaml(path)
    if overrides:
        raw = deep_merge(raw, overrides)
    return validate_config(layered_config(raw), str(path))


# ---------------------------------------------------------------- stage snapshots
def stage_snapshots(cfg: Config) -> dict[str, dict]:
    """The part of the config each stage depends on, keyed by a path-like stage key.

    Evaluation snapshots hold only evaluation settings, so changing one reruns evaluation and
    reports, never training; a GRPO snapshot holds the GRPO block and the rewards of its task.
    """
    dump = cfg.model_dump(mode="json")
    snaps: dict[str, dict] = {}
    for name, dataset in dump["datasets"].items():
        snaps[f"data/{name}"] = {"name": name, **dataset}
    for name, model in dump["models"].items():
        snaps[f"models/{name}"] = {"name": name, "device": cfg.device, **model}
        if model["pretrain"]:
            # The corpus draws problems with the dataset's generator settings.
            corpus_dataset = dump["datasets"][model["pretrain"]["dataset"]]
            snaps[f"models/{name}"]["corpus_source"] = corpus_dataset["source"]
            snaps[f"models/{name}"]["corpus_prompt"] = corpus_dataset["prompt"]
    for run_name, run in dump["runs"].items():
        dtype = dump["models"][run["base"]]["dtype"]
        # The distributed block goes into both training snapshots only when set: runs without
        # one keep their snapshots (and cached results) unchanged.
        distributed = {"distributed": run["distributed"]} if run.get("distributed") else {}
        if run["sft"]:
            snaps[f"runs/{run_name}/sft"] = {"run": run_name, "base": run["base"], "device": cfg.device, "dtype": dtype,
                                             **run["sft"], **distributed}
        snaps[f"runs/{run_name}/grpo"] = {
            "run": run_name, "base": run["base"], "device": cfg.device, "dtype": dtype,
            "rewards": rewards_for(cfg, run["grpo"]["dataset"]), **run["grpo"], **distributed,
        }
    for bench_name in cfg.evaluation.benches:
        snaps.update(bench_snapshots(cfg, bench_name))
    snaps["report"] = dump["report"]
    for group, members in cfg.seed_groups().items():
        # One snapshot per seeded run: a change of its seed list reruns its report only.
        snaps[f"report/{group}"] = {**dump["report"], "run": group,
                                    "seeds": {member: cfg.runs[member].grpo.seed for member in members},
                                    "bootstrap_resamples": cfg.evaluation.bootstrap_resamples,
                                    "confidence_level": cfg.evaluation.confidence_level}
    runs = cfg.compare.runs or sorted(cfg.report_units())
    snaps["compare"] = {**dump["compare"], "runs": runs}
    members = {run: cfg.report_units()[run] for run in runs if cfg.report_units()[run] != [run]}
    if members:  # the seed runs of each seeded run compared (absent without seeds: the snapshot stays as it was)
        snaps["compare"]["members"] = members
    return snaps


GENERATE_KEYS = ("max_prompts", "num_samples", "temperature", "top_p", "max_new_tokens", "stop_strings", "seed")


def bench_task(cfg: Config, bench_name: str) -> str | None:
    """The task of a bench's rows (None when a rows file names its own per row)."""
    bench = cfg.evaluation.benches[bench_name]
    if bench.preset is not None:
        from pipeline.presets import bench_preset

        return bench_preset(bench.preset).task
    tasks = dataset_tasks(cfg.datasets[bench.dataset])
    return None if tasks is None else sorted(tasks)[0]


def bench_rewards(cfg: Config, bench_name: str) -> dict[str, dict[str, float]]:
    """The ``rewards`` entries that score a bench: its task's only (every task for a rows file), from
    ``evaluation.rewards`` when set, else the training ``rewards``."""
    rewards = cfg.model_dump(mode="json")["evaluation"]["rewards"] or cfg.model_dump(mode="json")["rewards"]
    task = bench_task(cfg, bench_name)
    if task is None:
        return rewards
    return {task: rewards[task]} if task in rewards else {}


def bench_snapshots(cfg: Config, bench_name: str) -> dict[str, dict]:
    """A bench's snapshots: ``eval/{bench}/generate`` (sampling only: a change regenerates),
    ``eval/{bench}/score`` (rewards, ks, estimator: a change rescores the cached samples), and for a
    preset bench ``eval/{bench}/data`` (where its rows come from: a change prepares them again)."""
    bench = cfg.evaluation.benches[bench_name]
    dump = bench.model_dump(mode="json")
    evaluation = cfg.evaluation
    snaps = {
        f"eval/{bench_name}/generate": {
            "bench": bench_name, "device": cfg.device, "backend": evaluation.backend, "batch_size": evaluation.batch_size,
            **{key: dump[key] for key in GENERATE_KEYS},
        },
        f"eval/{bench_name}/score": {
            "bench": bench_name, "rewards": bench_rewards(cfg, bench_name), "ks": dump["ks"],
            "bootstrap_resamples": evaluation.bootstrap_resamples, "confidence_level": evaluation.confidence_level,
            "maj_equivalence": evaluation.maj_equivalence, "reflection_markers": evaluation.reflection_markers,
        },
    }
    if bench.preset is not None:
        snaps[f"eval/{bench_name}/data"] = {
            "bench": bench_name, "preset": bench.preset, "split": bench.split, "revision": bench.revision,
            "local_path": bench.local_path, "allow_download": bench.allow_download, "prompt": dump["prompt"],
        }
    return snaps


def dataset_tasks(dataset: DatasetConfig) -> set[str] | None:
    """The tasks a dataset's rows can have, or None when its rows name their own (a rows file).

    >>> dataset_tasks(DatasetConfig(source={"kind": "generator", "name": "arithmetic"}))
    {'math'}
    """
    source = dataset.source
    if isinstance(source, GeneratorSource):
        return {GENERATOR_TASKS[source.name]}
    if isinstance(source, PresetSource):
        from pipeline.presets import dataset_preset

        return {dataset_preset(source.name).task}
    if isinstance(source, FilesSource) and source.row_format == "rows":
        return None  # each row may carry its own "task" (stages/prepare_data.py keeps it)
    if isinstance(source, FilesSource):
        return {"code"}  # MBPP / HumanEval rows
    return {source.task}


def rewards_for(cfg: Config, dataset_name: str) -> dict[str, dict[str, float]]:
    """The ``rewards`` entries a stage reading ``dataset_name`` can use, and no others.

    A snapshot holding every task's rewards would rerun Countdown training when a code reward
    changes; a stage's snapshot holds the rewards of its own data's task(s) only.
    """
    tasks = dataset_tasks(cfg.datasets[dataset_name])
    rewards = cfg.model_dump(mode="json")["rewards"]
    return rewards if tasks is None else {task: rewards[task] for task in sorted(tasks) if task in rewards}


def snapshot_text(snapshot: dict) -> str:
    """The canonical JSON of a snapshot: the same settings always give the same bytes."""
    return json.dumps(snapshot, indent=2, sort_keys=True) + "\n"


def write_snapshot(path: str | os.PathLike, text: str) -> bool:
    """Write one snapshot atomically, leaving the file (and its mtime) alone when unchanged.

    Returns whether the file was written.
    """
    from pipeline.artifacts import write_text_atomic

    path = Path(path)
    if path.exists() and path.read_text() == text:
        return False
    write_text_atomic(path, text)
    return True


def write_snapshots(cfg: Config, results_dir: str | os.PathLike) -> dict[str, Path]:
    """Write each stage snapshot to ``results/.config/<key>.json``, touching only changed files."""
    paths = {}
    for key, snap in stage_snapshots(cfg).items():
        path = Path(results_dir) / ".config" / f"{key}.json"
        write_snapshot(path, snapshot_text(snap))
        paths[key] = path
    return paths
