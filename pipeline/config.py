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
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipeline.algorithm_config import AlgorithmConfig, GuardConfig

PACKAGE_DIR = Path(__file__).resolve().parent
DEFAULT_CONFIG = PACKAGE_DIR / "config" / "default.yaml"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"  # names become path components


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------- data
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


class DatasetConfig(Strict):
    source: GeneratorSource | HubSource | FilesSource = Field(discriminator="kind")
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

    @model_validator(mode="after")
    def _check_kind(self):
        unknown = set(self.pretrain.styles) - {"careful", "guess", "malformed", "drill"} if self.pretrain else set()
        if unknown:
            raise ValueError(f"pretrain.styles: unknown style(s) {sorted(unknown)}; allowed: careful, guess, malformed, drill")
        if self.kind == "hf" and not self.path:
            raise ValueError("kind 'hf' needs path: a hub id such as Qwen/Qwen2.5-3B or a local HF directory")
        if self.kind == "tiny" and self.pretrain is None:
            raise ValueError("kind 'tiny' needs a pretrain: block (dataset: <a countdown dataset>)")
        return self


# ---------------------------------------------------------------- training
class SFTConfig(Strict):
    """Cold-start SFT: loss on completion tokens only."""

    source: Literal["tiny_traces", "files"] = "tiny_traces"
    dataset: str | None = None  # tiny_traces: a countdown dataset whose train prompts get careful traces
    path: str | None = None  # files: JSONL with prompt/completion fields
    num_examples: int = Field(400, ge=1)
    hint_prob: float = Field(0.8, ge=0, le=1)
    epochs: int = Field(2, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0)
    warmup_steps: int = Field(10, ge=0)
    seed: int = 0


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
    seed: int = 0
    algorithm: AlgorithmConfig = Field(default_factory=AlgorithmConfig)
    guards: GuardConfig = Field(default_factory=GuardConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)

    @model_validator(mode="after")
    def _check_lengths(self):
        buffer = self.algorithm.overlong_buffer_tokens
        if self.algorithm.truncation == "overlong_penalty" and buffer > self.max_new_tokens:
            raise ValueError(f"algorithm.overlong_buffer_tokens ({buffer}) must not exceed max_new_tokens "
                             f"({self.max_new_tokens}); DAPO used 4096 of 20480")
        return self


class RunConfig(Strict):
    base: str  # a models: entry
    sft: SFTConfig | None = None
    grpo: GRPOConfig


# ---------------------------------------------------------------- evaluation, reports
class BenchConfig(Strict):
    dataset: str
    split: str = "test"
    max_prompts: int = Field(0, ge=0)  # 0 = all
    num_samples: int = Field(8, ge=1)
    temperature: float = Field(1.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int = Field(160, ge=1)
    stop_strings: list[str] = Field(default_factory=lambda: ["</answer>"])
    ks: list[int] = Field(default_factory=lambda: [1, 4, 8])
    seed: int = 1234


class EvaluationConfig(Strict):
    benches: dict[str, BenchConfig]
    backend: Literal["auto", "hf", "vllm"] = "auto"
    batch_size: int | None = Field(None, ge=1)


class ReportConfig(Strict):
    formats: list[Literal["md", "html"]] = Field(default_factory=lambda: ["md", "html"])


class CompareConfig(Strict):
    name: str = Field("all", pattern=NAME_PATTERN)
    runs: list[str] | None = None  # None: every run


class Config(Strict):
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
            if run.sft and run.sft.source == "tiny_traces" and run.sft.dataset not in self.datasets:
                problems.append(f"{where}.sft.dataset: unknown dataset {run.sft.dataset!r}; known: {_known(self.datasets)}")
            if run.sft and run.sft.source == "files" and not run.sft.path:
                problems.append(f"{where}.sft.path: needed when source is 'files'")
        for bench_name, bench in self.evaluation.benches.items():
            if bench.dataset not in self.datasets:
                problems.append(f"evaluation.benches.{bench_name}.dataset: unknown dataset {bench.dataset!r}; known: {_known(self.datasets)}")
        for run_name in self.compare.runs or []:
            if run_name not in self.runs:
                problems.append(f"compare.runs: unknown run {run_name!r}; known: {_known(self.runs)}")
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
        field = ".".join(str(p) for p in loc if not (isinstance(p, str) and p in ("generator", "hf", "files"))) or "(top level)"
        if item["type"] == "extra_forbidden":
            model = _model_for(loc)
            allowed = ", ".join(model.model_fields) if model else "see pipeline/config.py"
            lines.append(f"  {field}: unknown key; allowed here: {allowed}")
        elif item["type"] == "missing":
            lines.append(f"  {field}: required key is missing")
        else:
            message = item["msg"].removeprefix("Value error, ")
            lines.append(f"  {field}: {message} (got {item.get('input')!r})")
    return "\n".join(lines)


def deep_merge(base: dict, override: dict) -> dict:
    """``override`` on top of ``base``; nested mappings merge, everything else replaces."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
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


def load_config(path: str | os.PathLike, overrides: dict | None = None) -> Config:
    raw = read_yaml(path)
    if overrides:
        raw = deep_merge(raw, overrides)
    return validate_config(raw, str(path))


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
        if run["sft"]:
            snaps[f"runs/{run_name}/sft"] = {"run": run_name, "base": run["base"], "device": cfg.device, **run["sft"]}
        snaps[f"runs/{run_name}/grpo"] = {
            "run": run_name, "base": run["base"], "device": cfg.device, "rewards": dump["rewards"], **run["grpo"],
        }
    for bench_name, bench in dump["evaluation"]["benches"].items():
        snaps[f"eval/{bench_name}"] = {
            "bench": bench_name, "device": cfg.device, "rewards": dump["rewards"],
            "backend": dump["evaluation"]["backend"], "batch_size": dump["evaluation"]["batch_size"], **bench,
        }
    snaps["report"] = dump["report"]
    snaps["compare"] = {**dump["compare"], "runs": cfg.compare.runs or sorted(cfg.runs)}
    return snaps


def write_snapshots(cfg: Config, results_dir: str | os.PathLike) -> dict[str, Path]:
    """Write each stage snapshot to ``results/.config/<key>.json``, touching only changed files."""
    from pipeline.artifacts import write_text_atomic

    paths = {}
    for key, snap in stage_snapshots(cfg).items():
        path = Path(results_dir) / ".config" / f"{key}.json"
        text = json.dumps(snap, indent=2, sort_keys=True) + "\n"
        if not path.exists() or path.read_text() != text:
            write_text_atomic(path, text)
        paths[key] = path
    return paths
