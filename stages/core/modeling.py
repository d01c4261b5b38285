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


def load_causal_lm(path_or_id: str | os.PathLike, *, device: torch.device, dtype: str = "float32"):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(resolve_model_path(path_or_id), dtype=getattr(torch, dtype))
    return model.to(device)


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
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # left padding: positions start at 0
    logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids).logits  # (B, L, V)
    return logits[:, -num_completion_tokens - 1:-1, :]
