"""The ``hf`` rollout backend: a lean batched sampling loop over a transformers model and KV cache.

It samples from the very model object the trainer updates, so its weights are never stale;
``sync_weights`` only checks that it is given that object.

Why not ``model.generate``: to return each token's log-prob, generate has to keep every step's
full logits (``output_logits=True``), an (N, T, V) stack read only at the chosen tokens, and its
stop-string check works on text. This loop keeps only the chosen token's log-prob per step, asks
the model for one position of logits per step (``logits_to_keep=1`` also at the prefill), stops
rows on token ids, and drops finished rows from the batch and the KV cache. Each distinct prompt
is prefilled once and its cache rows copied to its G samples.

Log-probs follow the rollout contract: log_softmax(logits / temperature) of the raw logits at
the sampled token, in float32, with no top-p truncation (top-p only shapes the sampling);
greedy decoding (temperature 0) returns log_softmax(logits).

Stop strings are checked without re-decoding the completion: a table marks the tokens that can
complete a stop string (their text holds its last character, or they are a partial UTF-8
sequence), and only when a row samples one of those is a short tail of that row decoded.

Example:
    >>> backend = HFBackend(model, tokenizer)                         # doctest: +SKIP
    >>> groups = backend.generate([tokenizer.encode("User: use 1 2 3 to make 6.\\nAssistant: <think>")],
    ...                           SamplingSettings(num_samples=8, max_new_tokens=64))  # doctest: +SKIP
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from stages.core.modeling import left_pad_position_ids, torch_dtype
from stages.core.rollout import Completion, SamplingSettings

# Drop finished rows from the batch (and the KV cache) once this fraction of it has finished:
# each drop copies the cache, so doing it for every single finished row would cost more than it saves.
COMPACT_WHEN_FINISHED_FRACTION = 0.25
REPLACEMENT_CHAR = "\ufffd"  # what a token holding part of a multi-byte UTF-8 character decodes to alone


class HFBackend:
    name = "hf"

    def __init__(self, model, tokenizer, *, device: torch.device | None = None, batch_size: int | None = None,
                 compute_dtype: str = "float32", lean_decode: bool = True):
        self.model = model
        self.tokenizer = tokenizer
        self.device = device or next(model.parameters()).device
        self.batch_size = batch_size  # completions per sampling loop; None = all at once
        # The trainer's float32 master weights run its forward under autocast(compute_dtype); sampling
        # does the same so rollout and trainer log-probs come from the same arithmetic.
        self.compute_dtype = compute_dtype
        torch_dtype(compute_dtype)  # a clear error for an unknown name
        self.num_syncs = 0
        self.lean_decode = lean_decode
        self._stop_tables: dict[tuple[str, ...], StopStringDetector] = {}

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
        was_training = self.model.training
        self.model.eval()
        try:
            with self._autocast(), torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                if settings.seed is not None:
                    torch.manual_seed(settings.seed)
                for start in range(0, len(flat), chunk):
                    completions += self._generate_chunk(flat[start:start + chunk], settings)
        finally:
            self.model.train(was_training)
        group = settings.num_samples
        return [completions[i:i + group] for i in range(0, len(completions), group)]

    def _autocast(self):
        if self.compute_dtype == "float32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch_dtype(self.compute_dtype))

    def stop_detector(self, stop_strings: tuple[str, ...]) -> StopStringDetector:
        if stop_strings not in self._stop_tables:
            self._stop_tables[stop_strings] = StopStringDetector(self.tokenizer, stop_strings, self.device)
        return self._stop_tables[stop_strings]

    @torch.no_grad()
    def _generate_chunk(self, prompts: list[list[int]], settings: SamplingSettings) -> list[Completion]:
        from transformers import DynamicCache

        num_rows, max_new = len(prompts), settings.max_new_tokens
        distinct, inverse = distinct_prompts(prompts)  # U prompts; row -> its prompt
        input_ids, attention = left_pad(distinct, self.tokenizer.pad_token_id, self.device)  # (U, P), (U, P)
        eos_id = self.tokenizer.eos_token_id
        stops = self.stop_detector(tuple(settings.stop_strings))
        tokens = torch.full((num_rows, max_new), self.tokenizer.pad_token_id, dtype=torch.long, device=self.device)  # (N, T)
        logprobs = torch.zeros((num_rows, max_new), dtype=torch.float32, device=self.device)  # (N, T)
        lengths = [max_new] * num_rows  # tokens kept per row; shortened when a row stops
        reasons = ["length"] * num_rows
        rows = list(range(num_rows))  # original row of each batch row still in the loop
        row_index = torch.arange(num_rows, device=self.device)  # the same, as an index tensor
        finished: set[int] = set()  # rows that stopped but are still in the batch (until the next compaction)
        cache = DynamicCache(config=self.model.config)
        # Prefill each distinct prompt once (a group's G samples share it), then copy its cache rows.
        logits = self._forward(input_ids, attention, left_pad_position_ids(attention), cache)  # (U, V)
        if len(distinct) < num_rows:
            expand = torch.tensor(inverse, device=self.device)  # (N,)
            cache.batch_select_indices(expand)
            logits, attention = logits[expand], attention[expand]  # (N, V), (N, P)
        positions = attention.sum(-1, keepdim=True)  # (N, 1): next position id per row
        decoder = self._decoder(cache, attention, capacity=attention.shape[1] + max_new)
        for step in range(max_new):
            # Noise for every original row, then this batch's rows: a row's draws never depend on which others remain.
            noise = torch.empty((num_rows, logits.shape[-1]), device=self.device).exponential_()[row_index] \
                if settings.temperature > 0 else None  # (n, V)
            next_ids, next_logp = sample_next_tokens(logits, settings.temperature, settings.top_p, noise)  # (n,), (n,)
            tokens[row_index, step] = next_ids
            logprobs[row_index, step] = next_logp
            is_eos = next_ids == eos_id if eos_id is not None else torch.zeros_like(next_ids, dtype=torch.bool)  # (n,)
            eos_list, check_list = torch.stack([is_eos, stops.may_complete(next_ids)]).tolist()  # one host sync per step
            active = []
            for batch_row, row in enumerate(rows):
                if row in finished:
                    continue
                if eos_list[batch_row] or (check_list[batch_row] and stops.completes(tokens[row, :step + 1].tolist())):
                    lengths[row], reasons[row] = step + 1, "stop"
                    finished.add(row)
                else:
                    active.append(batch_row)
            if not active or step + 1 == max_new:
                break
            if len(active) <= (1 - COMPACT_WHEN_FINISHED_FRACTION) * len(rows):
                keep = torch.tensor(active, device=self.device)
                decoder.select(keep)
                rows = [rows[i] for i in active]
                row_index, next_ids, positions = row_index[keep], next_ids[keep], positions[keep]
            logits = decoder.step(next_ids, positions)  # (n, V)
            positions = positions + 1
        tokens_list, logprobs_list = tokens.tolist(), logprobs.tolist()
        return [self._completion(tokens_list[r][:lengths[r]], logprobs_list[r][:lengths[r]], reasons[r])
                for r in range(num_rows)]

    def _decoder(self, cache, attention: torch.Tensor, capacity: int):
        """The one-token decode step: the lean Qwen2 step where it applies (``lean_decode``), else
        the model's own forward over the transformers cache."""
        if self.lean_decode and LeanQwen2Decoder.supports(self.model):
            return LeanQwen2Decoder(self.model, cache, attention, capacity)
        return ModelDecoder(self, cache, attention)

    def _forward(self, input_ids, attention, position_ids, cache) -> torch.Tensor:
        """Logits for the last position only: (n, V)."""
        out = self.model(input_ids=input_ids, attention_mask=attention, position_ids=position_ids,
                         past_key_values=cache, use_cache=True, logits_to_keep=1)
        return out.logits[:, -1]

    def _completion(self, token_ids: list[int], logprobs: list[float], reason: str) -> Completion:
        return Completion(text=self.tokenizer.decode(token_ids, skip_special_tokens=True), token_ids=token_ids,
                          logprobs=logprobs, finish_reason=reason)


class ModelDecoder:
    """Decode steps through the model's own forward and the transformers KV cache (any architecture)."""

    def __init__(self, backend: HFBackend, cache, attention: torch.Tensor) -> None:
        self.backend, self.cache, self.attention = backend, cache, attention  # attention (n, P + steps so far)

    def select(self, keep: torch.Tensor) -> None:
        """Keep only the batch rows ``keep`` (n,) in the cache."""
        self.cache.batch_select_indices(keep)
        self.attention = self.attention[keep]

    def step(self, token_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Feed one token per row, (n,) ids at (n, 1) positions; return the next logits (n, V)."""
        self.attention = torch.cat([self.attention, torch.ones_like(self.attention[:, :1])], dim=1)  # (n, L + 1)
        return self.backend._forward(token_ids[:, None], self.attention, positions, self.cache)


class LeanQwen2Decoder:
    """One-token decode steps of a Qwen2 model without the transformers module stack.

    The decode step of a small model is mostly overhead: per step, transformers builds a 4D mask,
    runs its output-capturing wrappers and concatenates every layer's KV cache into a new tensor
    (a copy of the whole cache per token). This step calls the model's own modules (norms,
    projections, rotary embedding, MLP, head: the same arithmetic, under the same autocast) over
    a KV cache allocated once for the whole completion, with an additive padding mask kept beside
    it and plain matmul attention (grouped-query heads share their key/value head by reshaping).
    Logits agree with the model's forward to float rounding (tests/stages/test_rollout_hf.py).

    The prefill runs through the model's forward; its cache is copied into the buffers here.
    """

    def __init__(self, model, cache, attention: torch.Tensor, capacity: int) -> None:
        self.model = model
        self.layers = model.model.layers
        config = model.config
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        self.num_heads, self.num_kv_heads = config.num_attention_heads, config.num_key_value_heads
        rows, prompt_width = attention.shape
        first = cache.layers[0].keys  # (n, kv, P, d)
        self.keys = [first.new_empty((rows, self.num_kv_heads, capacity, self.head_dim)) for _ in self.layers]
        self.values = [first.new_empty((rows, self.num_kv_heads, capacity, self.head_dim)) for _ in self.layers]
        for index, layer in enumerate(cache.layers):
            self.keys[index][:, :, :prompt_width] = layer.keys
            self.values[index][:, :, :prompt_width] = layer.values
        # (n, capacity): 0 where a key may be attended, -inf on prompt padding; filled columns only are read.
        self.mask = torch.zeros((rows, capacity), dtype=torch.float32, device=attention.device)
        self.mask[:, :prompt_width].masked_fill_(attention == 0, float("-inf"))
        self.length = prompt_width  # columns filled

    @staticmethod
    def supports(model) -> bool:
        """Plain Qwen2 decoders: full attention in every layer, SiLU MLP, no dropout, no extra hooks."""
        config = model.config
        return (type(model).__name__ == "Qwen2ForCausalLM" and config.model_type == "qwen2"
                and not getattr(config, "use_sliding_window", False) and config.hidden_act == "silu"
                and not config.attention_dropout)

    def select(self, keep: torch.Tensor) -> None:
        self.keys = [self._rows(k, keep) for k in self.keys]
        self.values = [self._rows(v, keep) for v in self.values]
        self.mask = self.mask[keep]

    def _rows(self, buffer: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """A new buffer holding rows ``keep``: only the filled columns are copied."""
        kept = buffer.new_empty((keep.numel(), *buffer.shape[1:]))
        kept[:, :, :self.length] = buffer[keep, :, :self.length]
        return kept

    def step(self, token_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        from transformers.models.qwen2.modeling_qwen2 import apply_rotary_pos_emb

        rows, column = token_ids.shape[0], self.length
        self.length += 1
        hidden = self.model.model.embed_tokens(token_ids[:, None])  # (n, 1, H)
        cos, sin = self.model.model.rotary_emb(hidden, positions)  # (n, 1, d) each
        mask = self.mask[:, None, None, :self.length]  # (n, 1, 1, L): broadcast over heads and the query
        for layer, keys, values in zip(self.layers, self.keys, self.values):
            attention = layer.self_attn
            normed = layer.input_layernorm(hidden)  # (n, 1, H)
            query = attention.q_proj(normed).view(rows, 1, self.num_heads, self.head_dim).transpose(1, 2)  # (n, h, 1, d)
            key = attention.k_proj(normed).view(rows, 1, self.num_kv_heads, self.head_dim).transpose(1, 2)  # (n, kv, 1, d)
            value = attention.v_proj(normed).view(rows, 1, self.num_kv_heads, self.head_dim).transpose(1, 2)
            query, key = apply_rotary_pos_emb(query, key, cos, sin)
            keys[:, :, column:column + 1] = key
            values[:, :, column:column + 1] = value
            # Grouped-query attention: the h / kv query heads of a group read one key/value head.
            grouped = query.reshape(rows, self.num_kv_heads, self.num_heads // self.num_kv_heads, self.head_dim)  # (n, kv, g, d)
            scores = torch.matmul(grouped, keys[:, :, :self.length].transpose(-1, -2)) * attention.scaling  # (n, kv, g, L)
            weights = torch.softmax(scores.float() + mask, dim=-1).to(values.dtype)  # (n, kv, g, L)
            mixed = torch.matmul(weights, values[:, :, :self.length]).reshape(rows, 1, -1)  # (n, 1, h * d)
            hidden = hidden + attention.o_proj(mixed)
            hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
        hidden = self.model.model.norm(hidden)  # (n, 1, H)
        return self.model.lm_head(hidden)[:, -1]  # (n, V)


def distinct_prompts(prompts: list[list[int]]) -> tuple[list[list[int]], list[int]]:
    """The distinct prompts in first-seen order, and each row's index into them.

    >>> distinct_prompts([[5, 6], [5, 6], [7]])
    ([[5, 6], [7]], [0, 0, 1])
    """
    index: dict[tuple[int, ...], int] = {}
    inverse = [index.setdefault(tuple(p), len(index)) for p in prompts]
    return [list(p) for p in index], inverse


def left_pad(prompts: list[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ids (N, P) and attention mask (N, P).

    >>> ids, attention = left_pad([[5, 6], [7]], pad_id=0, device=torch.device("cpu"))
    >>> ids.tolist(), attention.tolist()
    ([[5, 6], [0, 7]], [[1, 1], [0, 1]])
    """
    width = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)  # (N, P)
    attention = torch.zeros_like(input_ids)
    for row, ids in enumerate(prompts):
        input_ids[row, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
        attention[row, width - len(ids):] = 1
    return input_ids.to(device), attention.to(device)


def sample_next_tokens(logits: torch.Tensor, temperature: float, top_p: float,
                       noise: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample one token per row from logits (n, V); return ids (n,) and their float32 log-probs (n,).

    The log-prob is log_softmax(logits / temperature) at the sampled id, before top-p (the
    trainer's definition). temperature 0 means greedy, scored with log_softmax(logits).
    Sampling is an exponential race: argmax(p / E) with E ~ Exp(1) picks id i with probability
    p_i, like ``torch.multinomial``, but each row's draw depends only on its own ``noise`` row
    (n, V), so dropping finished rows from the batch changes no other row's sample.

    >>> ids, logp = sample_next_tokens(torch.tensor([[0.0, 5.0, 1.0]]), temperature=0.0, top_p=1.0)
    >>> ids.tolist(), round(logp.item(), 4)
    ([1], -0.0247)
    """
    scaled = logits.float() / temperature if temperature > 0 else logits.float()  # (n, V)
    logp_all = F.log_softmax(scaled, dim=-1)  # (n, V)
    if temperature > 0:
        probs = logp_all.exp()
        if top_p < 1.0:
            probs = top_p_filter(probs, top_p)
        if noise is None:
            noise = torch.empty_like(probs).exponential_()
        ids = (probs / noise).argmax(-1)  # (n,)
    else:
        ids = scaled.argmax(-1)  # (n,)
    return ids, logp_all.gather(-1, ids.unsqueeze(-1)).squeeze(-1)


def top_p_filter(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Zero every token outside the nucleus: the smallest set of most likely tokens whose mass
    reaches ``top_p`` (always at least one). Unnormalised: the exponential race does not need it.

    >>> top_p_filter(torch.tensor([[0.5, 0.3, 0.2]]), 0.7).tolist()
    [[0.5, 0.30000001192092896, 0.0]]
    """
    sorted_probs, order = probs.sort(dim=-1, descending=True)  # (n, V)
    mass_before = sorted_probs.cumsum(-1) - sorted_probs  # (n, V): mass of the more likely tokens
    sorted_probs = sorted_probs.masked_fill(mass_before >= top_p, 0.0)
    return torch.zeros_like(probs).scatter(-1, order, sorted_probs)


class StopStringDetector:
    """Finds the token at which a completion first contains one of ``stop_strings``, on token ids.

    ``may_complete(ids)`` is a table lookup: only tokens whose own text holds the last character
    of a stop string (or a partial UTF-8 character) can complete one. ``completes(token_ids)``
    then decodes just the row's tail, long enough to hold any stop string (a token is at least
    one byte), and checks whether a stop string ends in its last token.

    Example:
        >>> from stages.core.tokenizer import build_tiny_tokenizer
        >>> tok = build_tiny_tokenizer()
        >>> detector = StopStringDetector(tok, ("</answer>",), torch.device("cpu"))
        >>> detector.may_complete(torch.tensor(tok.encode("x></answer>"))).tolist()  # 'x', '>', '</answer>'
        [False, True, True]
        >>> detector.completes(tok.encode("<answer>7</answ")), detector.completes(tok.encode("<answer>7</answer>"))
        (False, True)
    """

    def __init__(self, tokenizer, stop_strings: tuple[str, ...], device: torch.device) -> None:
        if any(not s for s in stop_strings):
            raise ValueError("stop_strings: an empty stop string would stop every completion at once")
        self.tokenizer = tokenizer
        self.stop_strings = stop_strings
        last_chars = {s[-1] for s in stop_strings} | ({REPLACEMENT_CHAR} if stop_strings else set())
        texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))]) if stop_strings else []
        self.can_complete = torch.tensor([any(c in text for c in last_chars) for text in texts] or [False],
                                         dtype=torch.bool, device=device)  # (V,)
        self.tail_tokens = 4 * max((len(s.encode("utf-8")) for s in stop_strings), default=0) + 4

    def may_complete(self, token_ids: torch.Tensor) -> torch.Tensor:
        """(n,) ids -> (n,) bool: could this token be the one that completes a stop string?"""
        if not self.stop_strings:
            return torch.zeros_like(token_ids, dtype=torch.bool)
        in_vocab = token_ids < self.can_complete.numel()  # ids past the tokenizer (padded embeddings) cannot
        return self.can_complete[token_ids.clamp(max=self.can_complete.numel() - 1)] & in_vocab

    def completes(self, token_ids: list[int]) -> bool:
        """True when the text of ``token_ids`` holds a stop string that ends in its last token."""
        tail = token_ids[-self.tail_tokens:]
        text = self.tokenizer.decode(tail)
        before = self.tokenizer.decode(tail[:-1])
        return any(s in text and s not in before for s in self.stop_strings)
