"""Turning an example row's prompt into model input text.

A plain prompt is used as is; a chat prompt (a list of messages) goes through the tokenizer's
own chat template with the generation prompt added.

Example:
    >>> render_prompt(None, "User: use 1 2 3 to make 6.\\nAssistant: <think>")
    'User: use 1 2 3 to make 6.\\nAssistant: <think>'
"""
from __future__ import annotations


def render_prompt(tokenizer, prompt: str | list[dict]) -> str:
    if isinstance(prompt, str):
        return prompt
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("prompt.format is 'chat' but the tokenizer has no chat_template; use format: plain")
    return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)


def encode_prompts(tokenizer, rows: list[dict]) -> list[list[int]]:
    """Prompt token ids per row (no special tokens added: templates carry their own)."""
    return [tokenizer.encode(render_prompt(tokenizer, row["prompt"]), add_special_tokens=False) for row in rows]


def read_template(path) -> str:
    """A prompt template file; one trailing newline (an editor's end of file) is not part of it."""
    from pipeline.artifacts import repo_path

    text = repo_path(path).read_text()
    return text[:-1] if text.endswith("\n") else text
