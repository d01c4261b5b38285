"""Loading and building causal LMs, and the log-prob computations every stage shares.

Example:
    >>> config = tiny_qwen2_config(vocab_size=261, hidden_size=64, num_layers=2, num_heads=4)
    >>> config.model_type
    'qwen2'
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.nn.functional as F
import torch.utils.checkpoint

POINTER_FILE = "source.json"  # a base-model artefact that points at a hub snapshot or local dir


def pick_device(requested: str = "auto") -> torch.device:
    """``auto`` means CUDA when there is one, else CPU."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device: {requested!r} asked for, but CUDA is not available; use 'auto' or 'cpu'")
    return torch.device(requested)


def set_cpu_threads(num_threads: int | None) -> None:
    """Match torch's intra-op threads to what the scheduler gave this job (Snakemake threads)."""
    if num_threads:
        torch.set_num_threads(num_threads)


def tiny_qwen2_config(*, vocab_size: int, hidden_size: int, num_layers: int, num_heads: int,
                      num_kv_heads: int | None = None, intermediate_size: int | None = None,
                      max_position_embeddings: int = 1024, eos_token_id: int | None = None):
    """A Qwen2 configuration small enough to train on two CPU cores in minutes."""
    from transformers import Qwen2Config

    return Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or 3 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads or num_heads,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=True,
        eos_token_id=eos_token_id,
        bos_token_id=eos_token_id,
        pad_token_id=eos_token_id,
        rope_theta=10000.0,
    )


def resolve_model_path(path_or_id: str | os.PathLike) -> str:
    """A local HF directory for a model reference.

    Accepts an HF directory, a base-model artefact holding ``source.json`` (written for hub
    models, which are not copied into results/), or a hub id (resolved through the HF cache;
    ``HF_HUB_OFFLINE=1`` is honoured by huggingface_hub).
    """
    path = Path(path_or_id)
    pointer = path / POINTER_FILE
    if pointer.is_file():
        return json.loads(pointer.read_text())["local_dir"]
    if path.is_dir():
        return str(path)
    from huggingface_hub import snapshot_download

    return snapshot_download(str(path_or_id))


def load_tokenizer(path_or_id: str | os.PathLike):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(path_or_id))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


DTYPES = ("float32", "bfloat16", "float16")


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype for a config name (``float32`` | ``bfloat16`` | ``float16``).

    >>> torch_dtype("bfloat16")
    torch.bfloat16
    """
    if name not in DTYPES:
        raise ValueError(f"dtype: {name!r} is not allowed; use one of {', '.join(DTYPES)}")
    return getattr(torch, name)


def saved_dtype(path_or_id: str | os.PathLike) -> str:
    """The dtype a saved HF model records in its config.json (``float32`` if it records none).

    transformers 5 writes ``dtype``; older versions wrote ``torch_dtype``.
    """
    config = json.loads((Path(resolve_model_path(path_or_id)) / "config.json").read_text())
    name = config.get("dtype") or config.get("torch_dtype") or "float32"
    return name if name in DTYPES else "float32"


def load_causal_lm(path_or_id: str | os.PathLike, *, device: torch.device, dtype: str = "float32",
                   gradient_checkpointing: bool = False):
    """A causal LM with its weights in ``dtype`` on ``device``.

    ``dtype="auto"`` means the dtype the model's config.json records (evaluating a saved model as
    it was saved). Models that are trained keep float32 weights and get bfloat16/float16 through
    ``stages.core.precision.MixedPrecision``; frozen models (reference, evaluation) load directly in
    the low dtype. ``gradient_checkpointing`` recomputes each decoder layer in the backward pass
    instead of keeping its activations (it only acts in ``model.train()`` mode).

    Example:
        >>> model = load_causal_lm("results/models/tiny/model", device=torch.device("cpu"),
        ...                        dtype="auto")  # doctest: +SKIP
    """
    from transformers import AutoModelForCausalLM

    local_dir = resolve_model_path(path_or_id)
    name = saved_dtype(local_dir) if dtype == "auto" else dtype
    model = AutoModelForCausalLM.from_pretrained(local_dir, dtype=torch_dtype(name)).to(device)
    if gradient_checkpointing:
        enable_gradient_checkpointing(model)
    return model


def enable_gradient_checkpointing(model) -> None:
    """Recompute decoder layers in backward (non-reentrant: works with frozen inputs and autocast)."""
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False  # a KV cache is useless when training and conflicts with recomputation


def token_logprobs(logits: torch.Tensor, target_ids: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log softmax(logits / temperature) gathered at ``target_ids``.

    logits (B, T, V), target_ids (B, T) -> (B, T). Same definition as the rollout backends use,
    so rollout and trainer log-probs are comparable token by token.
    """
    logits = logits.float() / temperature
    return torch.gather(F.log_softmax(logits, dim=-1), 2, target_ids.unsqueeze(-1)).squeeze(-1)


def completion_logits(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, num_completion_tokens: int) -> torch.Tensor:
    """Logits that predict the last ``num_completion_tokens`` positions of ``input_ids``.

    input_ids (B, L) = left-padded prompt + right-padded completion; returns (B, T, V) with
    T = num_completion_tokens, aligned so that logits[:, t] predicts completion token t.
    """
    logits = model(input_ids=input_ids, attention_mask=attention_mask,
                   position_ids=left_pad_position_ids(attention_mask)).logits  # (B, L, V)
    return logits[:, -num_completion_tokens - 1:-1, :]


def left_pad_position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids that start at 0 at each row's first real token (rows are left-padded).

    >>> left_pad_position_ids(torch.tensor([[0, 1, 1], [1, 1, 1]])).tolist()
    [[0, 0, 1], [0, 1, 2]]
    """
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def completion_hidden_states(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                             num_completion_tokens: int, *, share_prompts: bool = False) -> torch.Tensor:
    """The trunk's final hidden states at the positions that predict the completion: (B, T, H).

    Runs ``model.base_model`` (the decoder without the LM head) so no (B, L, V) logits are ever
    made; ``hidden[:, t]`` predicts completion token t, like ``completion_logits``.

    ``share_prompts``: rows with the same prompt (a GRPO group: G completions of one prompt) run
    that prompt through the trunk once; see ``shared_prompt_hidden_states``. Same numbers up to
    float rounding, and gradients flow through the shared prompt pass to every row that reads it.
    """
    if input_ids.shape[1] <= num_completion_tokens:
        raise ValueError(f"input_ids has {input_ids.shape[1]} positions; need more than the "
                         f"{num_completion_tokens} completion tokens (at least one prompt token)")
    if share_prompts and prompt_sharing_pays(model, input_ids, attention_mask, num_completion_tokens):
        return shared_prompt_hidden_states(model, input_ids, attention_mask, num_completion_tokens)
    hidden = model.base_model(input_ids=input_ids, attention_mask=attention_mask,
                              position_ids=left_pad_position_ids(attention_mask), use_cache=False).last_hidden_state  # (B, L, H)
    return hidden[:, -num_completion_tokens - 1:-1]  # (B, T, H)


def distinct_prompts(input_ids: torch.Tensor, attention_mask: torch.Tensor, num_completion_tokens: int):
    """The distinct left-padded prompts of a batch: (unique ids (U, P), unique mask (U, P), row -> prompt (B,)).

    >>> ids = torch.tensor([[0, 5, 9], [0, 5, 8], [6, 7, 9]]); mask = torch.ones_like(ids); mask[:2, 0] = 0
    >>> unique_ids, unique_mask, inverse = distinct_prompts(ids, mask, 1)
    >>> unique_ids.tolist(), inverse.tolist()
    ([[0, 5], [6, 7]], [0, 0, 1])
    """
    width = input_ids.shape[1] - num_completion_tokens
    # The mask joins the key: a real token equal to the pad id must not merge two different prompts.
    keys = torch.cat([input_ids[:, :width], attention_mask[:, :width].to(input_ids.dtype)], dim=1)  # (B, 2P)
    unique, inverse = torch.unique(keys, dim=0, return_inverse=True)  # (U, 2P), (B,)
    return unique[:, :width], unique[:, width:].to(attention_mask.dtype), inverse


def prompt_sharing_pays(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, num_completion_tokens: int) -> bool:
    """Whether ``shared_prompt_hidden_states`` can run and saves work: some rows share a prompt,
    and no gradient checkpointing is active (transformers drops the KV cache under it)."""
    if getattr(model, "is_gradient_checkpointing", False) and model.training and torch.is_grad_enabled():
        return False
    num_prompts = distinct_prompts(input_ids, attention_mask, num_completion_tokens)[0].shape[0]
    return num_prompts < input_ids.shape[0]


# What one more forward call costs, in tokens of compute, when the completion pass is split into
# length buckets: on CPU a small model's call overhead is worth a few dozen tokens; on a GPU the
# launch overhead of a call is worth about a thousand tokens of a 0.5B model.
BUCKET_CALL_TOKENS = {"cpu": 64, "cuda": 1024}


def shared_prompt_hidden_states(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                                num_completion_tokens: int) -> torch.Tensor:
    """``completion_hidden_states`` with each distinct prompt run once: (B, T, H).

    GRPO samples G completions per prompt, and on short completions the prompt is most of every
    row (the default: ~45 prompt tokens, ~25 completion tokens). The prompt pass runs over the
    U distinct prompts and keeps their keys and values; the completion pass then attends to each
    row's prompt keys and values (gathered, so autograd sums every row's gradient back into the
    one prompt pass), with positions continuing from the row's prompt length, as in the full pass.
    The completion pass runs in length buckets (``microbatch.length_buckets``), each padded only
    to its own longest completion, so one long completion does not pad the whole batch.

    Example:
        >>> from transformers import Qwen2ForCausalLM
        >>> model = Qwen2ForCausalLM(tiny_qwen2_config(vocab_size=40, hidden_size=16, num_layers=1, num_heads=2))
        >>> ids = torch.tensor([[0, 5, 6, 7], [0, 5, 8, 9]]); mask = torch.tensor([[0, 1, 1, 1], [0, 1, 1, 1]])
        >>> shared = shared_prompt_hidden_states(model, ids, mask, 2)
        >>> torch.allclose(shared, completion_hidden_states(model, ids, mask, 2), atol=1e-6)
        True
    """
    from transformers import DynamicCache

    from stages.core.microbatch import length_buckets

    width = input_ids.shape[1] - num_completion_tokens
    prompt_ids, prompt_mask, inverse = distinct_prompts(input_ids, attention_mask, num_completion_tokens)  # (U, P), (U, P), (B,)
    prompt_cache = DynamicCache(config=model.config)
    prompt_hidden = model.base_model(input_ids=prompt_ids, attention_mask=prompt_mask, past_key_values=prompt_cache,
                                     position_ids=left_pad_position_ids(prompt_mask), use_cache=True).last_hidden_state  # (U, P, H)
    prompt_states = [(layer.keys, layer.values) for layer in prompt_cache.layers]  # per layer (U, h, P, d) each
    prompt_lengths = attention_mask[:, :width].sum(-1)  # (B,)
    completion_lengths = attention_mask[:, width:].sum(-1).tolist()  # (B,) real completion tokens per row
    pieces, rows_in_order = [], []
    for bucket in length_buckets(completion_lengths, BUCKET_CALL_TOKENS.get(input_ids.device.type, 64)):
        rows = torch.tensor(bucket, device=input_ids.device)  # (b,)
        length = max(1, max(completion_lengths[i] for i in bucket))  # t: this bucket's padded width
        cache = DynamicCache([(keys[inverse[rows]], values[inverse[rows]]) for keys, values in prompt_states],
                             config=model.config)  # (b, h, P, d) per layer
        positions = prompt_lengths[rows, None] + torch.arange(length, device=input_ids.device)  # (b, t)
        hidden = model.base_model(input_ids=input_ids[rows, width:width + length],
                                  attention_mask=attention_mask[rows, :width + length], past_key_values=cache,
                                  position_ids=positions, use_cache=True).last_hidden_state  # (b, t, H)
        # Token t is predicted from position t - 1: the prompt's last position for t = 0.
        predicting = torch.cat([prompt_hidden[inverse[rows], -1:], hidden[:, :-1]], dim=1)  # (b, t, H)
        pieces.append(torch.nn.functional.pad(predicting, (0, 0, 0, num_completion_tokens - length)))  # (b, T, H)
        rows_in_order += bucket
    restore = torch.empty(len(rows_in_order), dtype=torch.long, device=input_ids.device)
    restore[torch.tensor(rows_in_order, device=input_ids.device)] = torch.arange(len(rows_in_order), device=input_ids.device)
    return torch.cat(pieces)[restore]  # (B, T, H); zeros past each row's completion


def _chunk_logprobs(head, hidden: torch.Tensor, targets: torch.Tensor, temperature: float,
                    with_entropy: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Selected-token log-prob and entropy for one chunk: hidden (n, H), targets (n,) -> (n,), (n,).

    Uses logsumexp instead of a full log_softmax so only the float32 logits and one (n, V)
    temporary are alive at once.
    """
    logits = head(hidden).float() / temperature  # (n, V) float32 whatever the weight dtype
    log_norm = torch.logsumexp(logits, dim=-1)  # (n,)
    logp = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - log_norm  # (n,)
    if not with_entropy:
        return logp, torch.zeros_like(logp)
    probs = torch.softmax(logits, dim=-1)  # (n, V)
    entropy = log_norm - (probs * logits).sum(-1)  # (n,): H = log Z - E_p[logit]
    return logp, entropy


def chunked_head_logprobs(head, hidden: torch.Tensor, targets: torch.Tensor, *, temperature: float = 1.0,
                          with_entropy: bool = False, chunk_tokens: int = 4096) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Apply the LM ``head`` to ``hidden`` (B, T, H) chunk by chunk; return float32 log-probs of
    ``targets`` (B, T) under softmax(logits / temperature) and, if asked, the entropy (B, T).

    At most ``chunk_tokens`` rows of (V,) logits exist at a time. With grad enabled each chunk is
    checkpointed: its logits are dropped after the forward and recomputed in the backward, so the
    backward's extra memory is bounded by the chunk too.

    Example:
        >>> head = torch.nn.Linear(8, 50, bias=False)
        >>> logp, ent = chunked_head_logprobs(head, torch.randn(2, 3, 8), torch.zeros(2, 3, dtype=torch.long),
        ...                                   with_entropy=True, chunk_tokens=4)
        >>> tuple(logp.shape), logp.dtype, tuple(ent.shape)
        ((2, 3), torch.float32, (2, 3))
    """
    if chunk_tokens < 1:
        raise ValueError(f"chunk_tokens: {chunk_tokens} must be >= 1")
    batch_size, num_tokens, hidden_size = hidden.shape
    flat_hidden = hidden.reshape(-1, hidden_size)  # (B*T, H)
    flat_targets = targets.reshape(-1)  # (B*T,)
    checkpointed = torch.is_grad_enabled() and (hidden.requires_grad or any(p.requires_grad for p in head.parameters()))
    logps, entropies = [], []
    for start in range(0, flat_hidden.shape[0], chunk_tokens):
        args = (head, flat_hidden[start:start + chunk_tokens], flat_targets[start:start + chunk_tokens], temperature, with_entropy)
        if checkpointed:
            logp, entropy = torch.utils.checkpoint.checkpoint(_chunk_logprobs, *args, use_reentrant=False)
        else:
            logp, entropy = _chunk_logprobs(*args)
        logps.append(logp)
        entropies.append(entropy)
    logp = torch.cat(logps).view(batch_size, num_tokens)  # (B, T)
    entropy = torch.cat(entropies).view(batch_size, num_tokens) if with_entropy else None  # (B, T)
    return logp, entropy


def completion_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, num_completion_tokens: int, *,
                        temperature: float = 1.0, with_entropy: bool = False, chunk_tokens: int = 4096,
                        share_prompts: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Float32 log-probs (B, T) of the last ``num_completion_tokens`` tokens of ``input_ids`` and,
    if asked, the entropy (B, T) of each predicting distribution, without (B, T, V) logits.

    input_ids (B, L) = left-padded prompt + right-padded completion (as for ``completion_logits``).
    Equals ``token_logprobs(completion_logits(...), targets, temperature)``; the peak extra memory
    is ``chunk_tokens`` x V floats instead of B x T x V (see benchmarks/bench_logprobs.py).
    ``share_prompts`` runs each distinct prompt once (``shared_prompt_hidden_states``).

    Example:
        >>> from transformers import Qwen2ForCausalLM
        >>> model = Qwen2ForCausalLM(tiny_qwen2_config(vocab_size=40, hidden_size=16, num_layers=1, num_heads=2))
        >>> ids = torch.tensor([[0, 5, 6, 7, 8]]); attention = torch.tensor([[0, 1, 1, 1, 1]])
        >>> logp, entropy = completion_logprobs(model, ids, attention, 2, with_entropy=True, chunk_tokens=1)
        >>> tuple(logp.shape), logp.dtype, tuple(entropy.shape)
        ((1, 2), torch.float32, (1, 2))
    """
    hidden = completion_hidden_states(model, input_ids, attention_mask, num_completion_tokens,
                                      share_prompts=share_prompts)  # (B, T, H)
    targets = input_ids[:, -num_completion_tokens:]  # (B, T)
    return chunked_head_logprobs(model.get_output_embeddings(), hidden, targets, temperature=temperature,
                                 with_entropy=with_entropy, chunk_tokens=chunk_tokens)
