"""The ``hf`` rollout backend: batched ``transformers`` generate with a KV cache.

It samples from the very model object the trainer updates, so its weights are never stale;
``sync_weights`` only checks that it is given that object.

Example:
    >>> backend = HFBackend(model, tokenizer)                         # doctest: +SKIP
    >>> groups = backend.generate([tokenizer.encode("User: use 1 2 3 to make 6.\\nAssistant: <think>")],
    ...                           SamplingSettings(num_samples=8, max_new_tokens=64))  # doctest: +SKIP
"""
from __future__ import annotations

import torch

from stages.core.modeling import token_logprobs
from stages.core.rollout import Completion, SamplingSettings


class HFBackend:
    name = "hf"

    def __init__(self, model, tokenizer, *, device: torch.device | None = None, batch_size: int | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.device = device or next(model.parameters()).device
        self.batch_size = batch_size  # completions per generate call; None = all at once
        self.num_syncs = 0

    def sync_weights(self, model) -> None:
        if model is not self.model:
            raise ValueError("HFBackend samples from the trainer's own model object; pass that object")
        self.num_syncs += 1

    def close(self) -> None:
        self.model = None

    def generate(self, prompt_token_ids: list[list[int]], settings: SamplingSettings) -> list[list[Completion]]:
        """Sample ``settings.num_samples`` completions for every prompt."""
        flat = [ids for ids in prompt_token_ids for _ in range(settings.num_samples)]
        chunk = self.batch_size or len(flat)
        completions: list[Completion] = []
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            if settings.seed is not None:
                torch.manual_seed(settings.seed)
            for start in range(0, len(flat), chunk):
                completions += self._generate_chunk(flat[start:start + chunk], settings)
        group = settings.num_samples
        return [completions[i:i + group] for i in range(0, len(completions), group)]

    @torch.no_grad()
    def _generate_chunk(self, prompts: list[list[int]], settings: SamplingSettings) -> list[Completion]:
        pad_id = self.tokenizer.pad_token_id
        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)  # (N, P) left-padded
        attention = torch.zeros_like(input_ids)
        for row, ids in enumerate(prompts):
            input_ids[row, width - len(ids):] = torch.tensor(ids)
            attention[row, width - len(ids):] = 1
        was_training = self.model.training
        self.model.eval()
        sampling = {"do_sample": True, "temperature": settings.temperature, "top_p": settings.top_p} \
            if settings.temperature > 0 else {"do_sample": False}
        out = self.model.generate(
            input_ids=input_ids.to(self.device), attention_mask=attention.to(self.device),
            max_new_tokens=settings.max_new_tokens, pad_token_id=pad_id, eos_token_id=self.tokenizer.eos_token_id,
            stop_strings=list(settings.stop_strings) or None, tokenizer=self.tokenizer if settings.stop_strings else None,
            return_dict_in_generate=True, output_logits=True, top_k=0, **sampling,
        )
        self.model.train(was_training)
        new_tokens = out.sequences[:, width:]  # (N, T)
        logits = torch.stack(out.logits, dim=1)  # (N, T, V) raw logits, before temperature/top-p
        logprobs = token_logprobs(logits, new_tokens, max(settings.temperature, 1e-6) if settings.temperature > 0 else 1.0)
        return [self._trim(new_tokens[row].tolist(), logprobs[row].tolist(), settings) for row in range(len(prompts))]

    def _trim(self, token_ids: list[int], logprobs: list[float], settings: SamplingSettings) -> Completion:
        """Cut at the first EOS (kept: the policy must learn to stop) or the end of a stop string."""
        end, reason = len(token_ids), "length"
        eos = self.tokenizer.eos_token_id
        if eos in token_ids:
            end, reason = token_ids.index(eos) + 1, "stop"
        stop_end = _stop_string_end(self.tokenizer, token_ids[:end], settings.stop_strings)
        if stop_end is not None:
            end, reason = stop_end, "stop"
        ids = token_ids[:end]
        return Completion(text=self.tokenizer.decode(ids, skip_special_tokens=True), token_ids=ids,
                          logprobs=logprobs[:end], finish_reason=reason)


def _stop_string_end(tokenizer, token_ids: list[int], stop_strings: tuple[str, ...]) -> int | None:
    """Number of tokens up to and including the first completed stop string, or None."""
    if not stop_strings:
        return None
    text = ""
    for index, token_id in enumerate(token_ids):
        text += tokenizer.decode([token_id])
        if any(s in text for s in stop_strings):
            return index + 1
    return None
