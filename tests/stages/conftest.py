"""Shared fixtures: a tiny random Qwen2 policy saved in HF format, and toy training rows."""
from __future__ import annotations

import json

import pytest
import torch


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from transformers import AutoModelForCausalLM

    from stages.core.modeling import tiny_qwen2_config
    from stages.core.tokenizer import build_tiny_tokenizer

    directory = tmp_path_factory.mktemp("tiny_model")
    torch.manual_seed(0)
    tokenizer = build_tiny_tokenizer()
    # head_dim 32: vLLM's CPU attention supports head sizes 32, 64, 80, ... only.
    config = tiny_qwen2_config(vocab_size=len(tokenizer), hidden_size=64, num_layers=2, num_heads=2,
                               max_position_embeddings=128, eos_token_id=tokenizer.eos_token_id)
    AutoModelForCausalLM.from_config(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture()
def toy_rows_file(tmp_path):
    rows = [{"id": f"toy-{i}", "source": "test", "task": "toy", "question": f"q{i}", "prompt": f"Say digits {i}:",
             "answer": None, "meta": {}} for i in range(16)]
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
