"""The tiny base model's tokenizer: byte-level symbols, no merges, the R1 tags as whole tokens.

Why this shape: with transformers 5.x, ``AutoTokenizer.from_pretrained`` on a directory whose
config.json says ``qwen2`` always builds a ``Qwen2Tokenizer`` (byte-level BPE) from vocab.json
and merges.txt, whatever tokenizer_config.json names; a custom character-level pre-tokenizer is
silently dropped ("Use 7 5 9" came back as "Use759"). A vocabulary of the 256 byte-level symbols
with no merges is character-level under that tokenizer by construction, so the path users, vLLM
and the evaluation take gives the same ids as the object we built. The four tags are added
tokens so a completion's layout costs four tokens, not thirty.

Example:
    >>> tok = build_tiny_tokenizer()
    >>> tok.decode(tok.encode("Use 7 5 9 to make 7.\\n"))
    'Use 7 5 9 to make 7.\\n'
"""
from __future__ import annotations

from functools import lru_cache

EOS_TOKEN = "<|endoftext|>"
TAG_TOKENS = ("<think>", "</think>", "<answer>", "</answer>")

# A minimal chat template for the "chat" prompt variant on the tiny model (instruct models
# ship their own).
TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)


@lru_cache(maxsize=1)
def byte_level_alphabet() -> tuple[str, ...]:
    """The 256 printable stand-ins GPT-2-style byte-level BPE uses for the bytes 0..255."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    stand_ins = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            stand_ins.append(256 + extra)
            extra += 1
    by_byte = dict(zip(printable, stand_ins))
    return tuple(chr(by_byte[b]) for b in range(256))


def build_tiny_tokenizer():
    """A ``Qwen2Tokenizer`` whose vocabulary is the byte alphabet plus EOS and the R1 tags."""
    from transformers import AddedToken, Qwen2Tokenizer

    vocab = {symbol: index for index, symbol in enumerate(byte_level_alphabet())}
    vocab[EOS_TOKEN] = len(vocab)
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=[], eos_token=EOS_TOKEN, pad_token=EOS_TOKEN, unk_token=EOS_TOKEN)
    # normalized=False: the tags match the raw text; special=False: decode keeps them.
    tokenizer.add_tokens([AddedToken(tag, normalized=False, special=False) for tag in TAG_TOKENS])
    tokenizer.chat_template = TINY_CHAT_TEMPLATE
    return tokenizer
