"""Named datasets: the standard benchmarks and the training sets of the published R1-Zero recipes.

Pure data and lookups (no torch, no ``datasets`` import): a config names a bench by preset and
overrides any field, and the workflow checks at parse time that each preset's data is on this
machine (the Hugging Face cache or a local file/directory) before any job starts.

A preset says where the rows live (hub id, config name, revision, split), how its columns map
to the example row (``question`` -> our question, ``answer`` -> the gold answer, ``tests`` for
code), which task's rewards score it, and the sampling protocols that published evaluations
used, each with its source. Protocol values come from the cited papers' evaluation sections
and released scripts; the ``source`` string says where.

Revisions: every preset names the hub's ``main`` branch. Pin a commit for a published number
with ``revision: <sha>`` in the bench's config; the loaded files' hashes go into the bench
data's ``meta.json`` either way.

Example:
    >>> bench_preset("math500").hf_id
    'HuggingFaceH4/MATH-500'
    >>> protocol = bench_preset("aime2024").protocol("oat_zero")
    >>> protocol.temperature, protocol.max_new_tokens
    (0.0, 3000)
    >>> dataset_preset("countdown_3to4").hf_id
    'Jiayi-Pan/Countdown-Tasks-3to4'
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

RowFormat = Literal["rows", "mbpp", "humaneval", "livecodebench", "countdown"]

# ----------------------------------------------------------------------------- protocols

SIMPLERL_ZOO = ("SimpleRL-Zoo (Zeng et al. 2025, arXiv:2503.18892), hkust-nlp/simpleRL-reason eval scripts: "
                "greedy decoding, one sample, 16k-token budget")
OAT_ZERO = ("Oat-Zero / Dr. GRPO (Liu et al. 2025, 'Understanding R1-Zero-Like Training', arXiv:2503.20783), "
            "sail-sg/understand-r1-zero evaluate_model.py: greedy decoding, max 3000 new tokens")
OPEN_R1 = ("open-r1 (Hugging Face 2025), README 'Evaluating models' with lighteval: temperature 0.6, top-p 0.95, "
           "32768 new tokens, pass@1 averaged over n samples")
HUMANEVAL_PAPER = ("Chen et al. 2021, 'Evaluating Large Language Models Trained on Code' (arXiv:2107.03374), "
                   "section 2.3: pass@1 from n=200 samples at temperature 0.2, top-p 0.95")


@dataclass(frozen=True)
class Protocol:
    """How a published evaluation sampled: n samples per prompt, temperature, top-p, token budget."""

    num_samples: int
    temperature: float
    top_p: float
    max_new_tokens: int
    source: str  # the paper/script this comes from

    def as_bench_fields(self) -> dict:
        return {"num_samples": self.num_samples, "temperature": self.temperature, "top_p": self.top_p,
                "max_new_tokens": self.max_new_tokens}


def _math_protocols(open_r1_samples: int) -> dict[str, Protocol]:
    return {
        "simplerl_zoo": Protocol(1, 0.0, 1.0, 16000, SIMPLERL_ZOO),
        "oat_zero": Protocol(1, 0.0, 1.0, 3000, OAT_ZERO),
        "open_r1": Protocol(open_r1_samples, 0.6, 0.95, 32768, OPEN_R1 + f"; n={open_r1_samples} for this bench"),
    }


# ----------------------------------------------------------------------------- presets

@dataclass(frozen=True)
class DatasetPreset:
    """One named dataset on the Hugging Face hub and how its rows become example rows."""

    name: str
    hf_id: str
    split: str  # the hub split that holds the rows
    task: Literal["math", "code", "countdown"]
    reward: str  # the primary reward (first in the task's weights) this data is meant for
    description: str
    citation: str  # where the dataset comes from
    fields: dict[str, str] = field(default_factory=dict)  # our field -> dataset column
    answer_format: Literal["plain", "gsm8k", "boxed"] = "plain"
    row_format: RowFormat = "rows"
    config_name: str | None = None  # the dataset's config ("main" for gsm8k)
    revision: str = "main"
    protocols: dict[str, Protocol] = field(default_factory=dict)  # empty for training sets
    default_protocol: str | None = None

    def protocol(self, name: str | None = None) -> Protocol:
        """A named protocol (the preset's default when ``name`` is None); an error lists the known ones."""
        key = name or self.default_protocol
        if key not in self.protocols:
            known = ", ".join(sorted(self.protocols)) or "(none: a training set)"
            raise KeyError(f"preset {self.name!r}: unknown protocol {key!r}; known: {known}")
        return self.protocols[key]

    def download_command(self) -> str:
        """The shell line that puts this dataset into the local Hugging Face cache."""
        return (f"huggingface-cli download --repo-type dataset {self.hf_id} --revision {self.revision}"
                f"   # or: python -c \"import datasets; datasets.load_dataset('{self.hf_id}'"
                + (f", '{self.config_name}'" if self.config_name else "") + f", split='{self.split}')\"")


BENCH_PRESETS: dict[str, DatasetPreset] = {preset.name: preset for preset in [
    DatasetPreset(
        "gsm8k", "openai/gsm8k", "test", "math", "math", "Grade-school maths word problems, 1319 test problems",
        "Cobbe et al. 2021, arXiv:2110.14168", fields={"question": "question", "answer": "answer"},
        answer_format="gsm8k", config_name="main", protocols=_math_protocols(1), default_protocol="simplerl_zoo"),
    DatasetPreset(
        "math500", "HuggingFaceH4/MATH-500", "test", "math", "math", "500 MATH test problems (the PRM800K split)",
        "Hendrycks et al. 2021 (MATH), Lightman et al. 2023 (the 500-problem split)",
        fields={"question": "problem", "answer": "answer"}, protocols=_math_protocols(4), default_protocol="oat_zero"),
    DatasetPreset(
        "aime2024", "HuggingFaceH4/aime_2024", "train", "math", "math", "AIME 2024 I and II, 30 problems",
        "MAA American Invitational Mathematics Examination 2024", fields={"question": "problem", "answer": "answer"},
        protocols=_math_protocols(32), default_protocol="oat_zero"),
    DatasetPreset(
        "aime2025", "yentinglin/aime_2025", "train", "math", "math", "AIME 2025 I and II, 30 problems",
        "MAA American Invitational Mathematics Examination 2025", fields={"question": "problem", "answer": "answer"},
        protocols=_math_protocols(32), default_protocol="oat_zero"),
    DatasetPreset(
        "amc2023", "math-ai/amc23", "test", "math", "math", "AMC 2023, 40 problems with integer answers",
        "MAA American Mathematics Competitions 2023", fields={"question": "question", "answer": "answer"},
        protocols=_math_protocols(32), default_protocol="oat_zero"),
    DatasetPreset(
        "minerva_math", "math-ai/minervamath", "test", "math", "math", "272 undergraduate STEM problems",
        "Lewkowycz et al. 2022 (Minerva), arXiv:2206.14858", fields={"question": "question", "answer": "answer"},
        protocols=_math_protocols(4), default_protocol="oat_zero"),
    DatasetPreset(
        "olympiadbench", "math-ai/olympiadbench", "test", "math", "math",
        "675 English open-ended competition maths problems", "He et al. 2024, arXiv:2402.14008",
        fields={"question": "question", "answer": "answer"}, protocols=_math_protocols(4), default_protocol="oat_zero"),
    DatasetPreset(
        "humaneval", "openai/openai_humaneval", "test", "code", "code_tests", "164 Python functions with unit tests",
        "Chen et al. 2021, arXiv:2107.03374", row_format="humaneval",
        protocols={"codex": Protocol(200, 0.2, 0.95, 512, HUMANEVAL_PAPER),
                   "open_r1": Protocol(1, 0.6, 0.95, 32768, OPEN_R1)}, default_protocol="codex"),
    DatasetPreset(
        "mbpp", "google-research-datasets/mbpp", "test", "code", "code_tests",
        "500 test problems of Mostly Basic Python Problems", "Austin et al. 2021, arXiv:2108.07732",
        row_format="mbpp", config_name="full",
        protocols={"codex": Protocol(200, 0.2, 0.95, 512, HUMANEVAL_PAPER + " (the same protocol, applied to MBPP)"),
                   "open_r1": Protocol(1, 0.6, 0.95, 32768, OPEN_R1)}, default_protocol="codex"),
    DatasetPreset(
        "livecodebench", "livecodebench/code_generation_lite", "test", "code", "code_tests",
        "LiveCodeBench release_v5 slice: stdin/stdout problems with public tests (functional LeetCode problems "
        "and the compressed private tests are left out)", "Jain et al. 2024, arXiv:2403.07974",
        row_format="livecodebench", config_name="release_v5",
        protocols={"open_r1": Protocol(16, 0.6, 0.95, 32768, OPEN_R1 + "; lcb:codegeneration, n=16")},
        default_protocol="open_r1"),
]}

TRAIN_PRESETS: dict[str, DatasetPreset] = {preset.name: preset for preset in [
    DatasetPreset(
        "countdown_3to4", "Jiayi-Pan/Countdown-Tasks-3to4", "train", "countdown", "countdown",
        "TinyZero's Countdown: 3 or 4 numbers and a target", "Pan et al. 2025, TinyZero (github.com/Jiayi-Pan/TinyZero)",
        row_format="countdown"),  # columns nums, target: the question is built from them
    DatasetPreset(
        "simplerl_math_l3to5", "hkust-nlp/SimpleRL-Zoo-Data", "train", "math", "math",
        "MATH training problems of levels 3-5 (about 8k), SimpleRL-Zoo's training set",
        "Zeng et al. 2025, arXiv:2503.18892", fields={"question": "question", "answer": "gt_answer"},
        config_name="simplelr_qwen_level3to5"),
    DatasetPreset(
        "orz_57k", "Open-Reasoner-Zero/orz_math_57k_collection", "train", "math", "math",
        "Open-Reasoner-Zero's 57k maths problems (AIME up to 2023, MATH, NuminaMath, Tulu3 maths)",
        "Hu et al. 2025, arXiv:2503.24290", fields={"question": "question", "answer": "answer"}),
    DatasetPreset(
        "deepscaler_40k", "agentica-org/DeepScaleR-Preview-Dataset", "train", "math", "math",
        "DeepScaleR's 40k problems (AIME 1984-2023, AMC, Omni-MATH, STILL)",
        "Luo et al. 2025, DeepScaleR (pretty-radio.github.io/DeepScaleR)",
        fields={"question": "problem", "answer": "answer"}),
]}


def _lookup(table: dict[str, DatasetPreset], name: str, kind: str) -> DatasetPreset:
    if name not in table:
        raise KeyError(f"unknown {kind} preset {name!r}; known: {', '.join(sorted(table))}")
    return table[name]


def bench_preset(name: str) -> DatasetPreset:
    """The benchmark preset called ``name``; a KeyError lists the known ones.

    Example:
        >>> bench_preset("gsm8k").answer_format
        'gsm8k'
    """
    return _lookup(BENCH_PRESETS, name, "bench")


def dataset_preset(name: str) -> DatasetPreset:
    """The training-set preset called ``name``; a KeyError lists the known ones.

    Example:
        >>> dataset_preset("deepscaler_40k").fields
        {'question': 'problem', 'answer': 'answer'}
    """
    return _lookup(TRAIN_PRESETS, name, "dataset")


def hub_source(preset: DatasetPreset, revision: str | None = None) -> dict:
    """The preset as a ``datasets: {name: {source: ...}}`` hub source (``kind: hf``), so a paper
    config can name its training data by preset and ``prepare_data`` loads it unchanged.

    Example:
        >>> hub_source(dataset_preset("orz_57k"))["path"]
        'Open-Reasoner-Zero/orz_math_57k_collection'
    """
    if preset.row_format != "rows":
        raise ValueError(f"preset {preset.name!r}: rows of format {preset.row_format!r} need their converter "
                         "(stages/evaluate.py prepares bench presets of every format); a hub source maps columns only")
    return {"kind": "hf", "path": preset.hf_id, "name": preset.config_name, "splits": {"train": preset.split},
            "task": preset.task, "fields": dict(preset.fields), "answer_format": preset.answer_format}


# ----------------------------------------------------------------------------- availability

def hf_cache_dirs() -> list[Path]:
    """Where ``datasets``/``huggingface_hub`` keep downloaded datasets, honouring HF_HOME,
    HF_HUB_CACHE and HF_DATASETS_CACHE as those libraries do."""
    home = Path(os.environ.get("HF_HOME", Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "huggingface"))
    hub = Path(os.environ.get("HF_HUB_CACHE", os.environ.get("HUGGINGFACE_HUB_CACHE", home / "hub")))
    datasets_cache = Path(os.environ.get("HF_DATASETS_CACHE", home / "datasets"))
    return [hub, datasets_cache]


def cached_copies(hf_id: str) -> list[Path]:
    """Cache directories holding ``hf_id``: the hub's ``datasets--org--name`` snapshot folder or the
    ``datasets`` library's ``org___name`` folder (either lets ``load_dataset`` run offline)."""
    hub, datasets_cache = hf_cache_dirs()
    candidates = [hub / f"datasets--{hf_id.replace('/', '--')}", datasets_cache / hf_id.replace("/", "___")]
    return [path for path in candidates if path.is_dir()]


def missing_data_message(where: str, preset: DatasetPreset, revision: str) -> str:
    """What a user reads when a preset's data is not on this machine: what, and the two ways to provide it."""
    hub, datasets_cache = hf_cache_dirs()
    return (f"{where}: preset {preset.name!r} ({preset.hf_id}, revision {revision}) is not on this machine: "
            f"no copy in the Hugging Face cache ({hub}, {datasets_cache}) and no local_path.\n"
            f"  download it:   {preset.download_command()}\n"
            f"  or point at a copy in the dataset's own schema: {where}.local_path: <a .jsonl/.parquet file or a dataset "
            f"directory>\n  or let the job download it: {where}.allow_download: true")


def presets_markdown_table() -> str:
    """The bench presets as a Markdown table (the README shows this; a test keeps it current).

    Example:
        >>> presets_markdown_table().splitlines()[0]
        '| preset | dataset (split) | task | protocols: n, temperature, top-p, max tokens (default first) |'
    """
    lines = ["| preset | dataset (split) | task | protocols: n, temperature, top-p, max tokens (default first) |",
             "|---|---|---|---|"]
    for preset in BENCH_PRESETS.values():
        order = [preset.default_protocol, *sorted(set(preset.protocols) - {preset.default_protocol})]
        protocols = "; ".join(f"`{name}` {p.num_samples}, {p.temperature:g}, {p.top_p:g}, {p.max_new_tokens}"
                              for name in order for p in [preset.protocols[name]])
        config = f" `{preset.config_name}`" if preset.config_name else ""
        lines.append(f"| `{preset.name}` | `{preset.hf_id}`{config} ({preset.split}) | {preset.task} | {protocols} |")
    return "\n".join(lines)
