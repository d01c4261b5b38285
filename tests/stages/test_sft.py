"""SFT: exact gradient accumulation over micro-batches, the chunked masked loss, dtype of the saved model."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from transformers import Qwen2ForCausalLM

from pipeline.config import SFTConfig
from stages import sft
from stages.core.lm_training import masked_lm_loss, num_loss_tokens, pad_batch
from stages.core.modeling import load_causal_lm, tiny_qwen2_config
from stages.core.precision import MixedPrecision

CPU = torch.device("cpu")


def tiny_model(seed: int = 0) -> Qwen2ForCausalLM:
    torch.manual_seed(seed)
    return Qwen2ForCausalLM(tiny_qwen2_config(vocab_size=53, hidden_size=32, num_layers=2, num_heads=4))


def toy_sequences(num: int = 7) -> tuple[list[list[int]], list[list[int]]]:
    """Sequences of different lengths with prompt (mask 0) and completion (mask 1) parts of different sizes."""
    generator = torch.Generator().manual_seed(3)
    sequences, masks = [], []
    for index in range(num):
        prompt_len, completion_len = 2 + index % 3, 1 + (index * 5) % 7
        sequences.append(torch.randint(1, 53, (prompt_len + completion_len,), generator=generator).tolist())
        masks.append([0] * prompt_len + [1] * completion_len)
    return sequences, masks


def straightforward_loss(model, sequences, masks) -> torch.Tensor:
    """The pre-issue-8 loss: full (B, L, V) logits, float32 cross-entropy, mean over loss tokens."""
    batch = pad_batch(sequences, masks, pad_id=0)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    losses = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), batch["input_ids"][:, 1:].reshape(-1), reduction="none")
    mask = batch["loss_mask"][:, 1:].reshape(-1)
    return (losses * mask).sum() / mask.sum()


def test_masked_loss_equals_the_full_logits_cross_entropy():
    model = tiny_model()
    sequences, masks = toy_sequences()
    batch = pad_batch(sequences, masks, pad_id=0)
    for chunk_tokens in (1, 5, 4096):
        torch.testing.assert_close(masked_lm_loss(model, batch, chunk_tokens=chunk_tokens),
                                   straightforward_loss(model, sequences, masks), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("micro_batch_size", [1, 2, 5])
def test_micro_batches_accumulate_the_unbatched_gradient(micro_batch_size):
    sequences, masks = toy_sequences()
    model = tiny_model()
    straightforward_loss(model, sequences, masks).backward()
    expected = {name: p.grad.clone() for name, p in model.named_parameters()}
    expected_loss = straightforward_loss(model, sequences, masks).item()

    model.zero_grad(set_to_none=True)
    loss = sft.accumulate_gradients(model, sequences, masks, pad_id=0, micro_batch_size=micro_batch_size,
                                    precision=MixedPrecision("float32", CPU), device=CPU)
    assert loss == pytest.approx(expected_loss, abs=1e-5)
    for name, parameter in model.named_parameters():
        torch.testing.assert_close(parameter.grad, expected[name], atol=1e-5, rtol=1e-4, msg=name)


def test_gradient_checkpointing_gives_the_same_sft_gradient():
    sequences, masks = toy_sequences()
    grads = []
    for checkpointing in (False, True):
        model = tiny_model().train()
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        sft.accumulate_gradients(model, sequences, masks, pad_id=0, micro_batch_size=3,
                                 precision=MixedPrecision("float32", CPU), device=CPU)
        grads.append({name: p.grad.clone() for name, p in model.named_parameters()})
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, atol=1e-6, rtol=1e-5, msg=name)


def test_num_loss_tokens_counts_targets_only():
    assert num_loss_tokens([[1, 1, 1], [0, 0, 1, 1]]) == 4  # a first token is never a target


def test_micro_batch_larger_than_batch_is_refused():
    with pytest.raises(ValueError, match="micro_batch_size"):
        SFTConfig(batch_size=4, micro_batch_size=8)
    assert SFTConfig(batch_size=4, micro_batch_size=2, gradient_checkpointing=True).micro_batch_size == 2


def test_sft_stage_trains_in_bfloat16_and_saves_the_model_in_it(tiny_model_dir, tmp_path):
    rows = [{"id": f"r{i}", "prompt": f"Say {i}:", "completion": f" {i} {i} {i}."} for i in range(12)]
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = {**SFTConfig(source="files", path=str(data), num_examples=12, epochs=3, batch_size=6,
                          micro_batch_size=4, gradient_checkpointing=True, lr=3e-3, warmup_steps=0).model_dump(),
              "dtype": "bfloat16", "device": "cpu"}
    sft.main(config, {"model": str(tiny_model_dir), "data": str(data)}, {"model": str(tmp_path / "out")})
    saved = tmp_path / "out"
    assert json.loads((saved / "config.json").read_text())["dtype"] == "bfloat16"
    assert next(load_causal_lm(saved, device=CPU, dtype="auto").parameters()).dtype == torch.bfloat16
    history = [json.loads(line) for line in (saved / "sft_metrics.jsonl").read_text().splitlines()]
    assert len(history) == 6 and all(h["loss"] == h["loss"] for h in history)
    assert history[-1]["loss"] < history[0]["loss"]


def countdown_train_rows(count: int) -> list[dict]:
    from stages.core.generators import countdown_rows
    return countdown_rows(count, seed=0, num_numbers=3, min_number=1, max_number=9, min_target=0, max_target=100,
                          ops="+-", ordered=True, question_style="compact")


def test_checking_traces_reflect_and_end_in_a_verified_answer():
    from stages.core.reflection import has_reflection
    from verifiers.countdown import countdown_reward

    rows = countdown_train_rows(60)
    config = SFTConfig(dataset="countdown", num_examples=40, trace_style="checking").model_dump()
    pairs = sft.tiny_trace_pairs(rows, config)
    assert len(pairs) == 40
    assert all(completion.startswith("let me check\n") and has_reflection(completion) for _, completion in pairs)
    assert all(countdown_reward(completion, row) == 1.0 for row, completion in pairs)
    # Some traces search: a miss, then "no, retry", then the hit.
    assert any("no, retry" in completion for _, completion in pairs)


def test_traces_whose_search_gives_up_are_left_out(monkeypatch):
    from verifiers.countdown import countdown_reward

    rows = countdown_train_rows(80)
    # One unhinted attempt: many careful searches end on a wrong chain, and none of those may train.
    monkeypatch.setattr(sft, "TRACE_MAX_ATTEMPTS", 1)
    config = SFTConfig(dataset="countdown", num_examples=80, trace_style="careful", hint_prob=0.0).model_dump()
    pairs = sft.tiny_trace_pairs(rows, config)
    assert 0 < len(pairs) < 70
    assert all(countdown_reward(completion, row) == 1.0 for row, completion in pairs)


def test_unknown_trace_style_is_refused_naming_the_field():
    with pytest.raises(ValueError, match="trace_style"):
        SFTConfig(dataset="countdown", trace_style="verbose")
