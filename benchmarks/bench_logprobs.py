"""Peak memory of completion log-probs: full (B, T, V) logits vs the chunked computation.

"straightforward" is what the trainer did before issue 8: ``completion_logits`` (full logits for
the completion positions), a float32 log-softmax gathered at the targets, and the entropy from
the same logits. "chunked" is ``completion_logprobs(..., with_entropy=True)``: the head runs on
``chunk_tokens`` hidden states at a time and each chunk is checkpointed for the backward.

The measurements run on CPU in one child interpreter started with glibc's mmap threshold fixed
at 64 KiB, so every tensor larger than that is its own mapping and goes back to the system when
freed: one measurement cannot hide in memory an earlier one left behind. Peak memory is the
resident-set high-water mark (VmHWM) during the computation minus the resident set just before
it; the high-water mark is reset through /proc/self/clear_refs (Linux >= 4.0).

Usage:
    python benchmarks/bench_logprobs.py                      # vocabulary 151,936 (Qwen2.5)
    python benchmarks/bench_logprobs.py --batch-size 2 --completion-tokens 64

Example output row:
    | backward | 1 | 4 x 128 | 1434 | 97 | 14.8x |
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import re
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

QWEN25_VOCAB_SIZE = 151_936
PROMPT_TOKENS = 16


def resident_kib(field: str) -> int:
    """VmRSS or VmHWM of this process, in KiB."""
    status = Path("/proc/self/status").read_text()
    return int(re.search(rf"{field}:\s+(\d+)", status).group(1))


def reset_peak() -> None:
    """Make VmHWM restart from the current resident set (Linux >= 4.0)."""
    Path("/proc/self/clear_refs").write_text("5")


def measure(method: str, mode: str, args: argparse.Namespace) -> dict:
    """Peak extra resident memory (MiB) of one log-prob computation (and its backward)."""
    import torch
    from transformers import Qwen2ForCausalLM

    from stages.core.modeling import completion_logits, completion_logprobs, tiny_qwen2_config, token_logprobs

    gc.collect()  # the previous measurement's tensors are gone before this one's baseline
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = tiny_qwen2_config(vocab_size=args.vocab_size, hidden_size=args.hidden_size, num_layers=1, num_heads=2)
    model = Qwen2ForCausalLM(config).train()
    width = args.completion_tokens
    ids = torch.randint(0, args.vocab_size, (args.batch_size, PROMPT_TOKENS + width))  # (B, L)
    attention = torch.ones_like(ids)
    if mode == "backward":  # the head's weight gradient is parameter-sized either way: allocate it first
        for parameter in model.parameters():
            parameter.grad = torch.zeros_like(parameter)
    reset_peak()
    before_kib = resident_kib("VmRSS")
    with torch.set_grad_enabled(mode == "backward"):
        if method == "straightforward":
            logits = completion_logits(model, ids, attention, width)  # (B, T, V)
            logp = token_logprobs(logits, ids[:, -width:])
            scaled = logits.float()
            entropy = -(torch.softmax(scaled, -1) * torch.log_softmax(scaled, -1)).sum(-1)
        else:
            logp, entropy = completion_logprobs(model, ids, attention, width, with_entropy=True,
                                                chunk_tokens=args.chunk_tokens)
        if mode == "backward":
            (logp.sum() + 0.01 * entropy.sum()).backward()
    peak_mib = (resident_kib("VmHWM") - before_kib) / 1024
    return {"method": method, "mode": mode, "peak_mib": peak_mib}


MEASUREMENTS = [(method, mode) for mode in ("no_grad", "backward") for method in ("straightforward", "chunked")]


def run_in_child(argv: list[str]) -> list[dict]:
    """All measurements in one child interpreter whose malloc returns freed tensors at once."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
    command = [sys.executable, __file__, *argv, "--child"]
    result = subprocess.run(command, check=True, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def markdown_table(rows: list[dict], args: argparse.Namespace) -> str:
    """Rows paired by mode, with the straightforward/chunked ratio.

    Example:
        >>> rows = [{"method": "straightforward", "mode": "no_grad", "peak_mib": 300.0},
        ...         {"method": "chunked", "mode": "no_grad", "peak_mib": 30.0}]
        >>> ns = argparse.Namespace(batch_size=4, completion_tokens=128, chunk_tokens=128)
        >>> print(markdown_table(rows, ns).splitlines()[2])
        | no_grad | 128 | 4 x 128 | 300 | 30 | 10.0x |
    """
    lines = ["| pass | chunk_tokens | B x T | straightforward peak (MiB) | chunked peak (MiB) | ratio |",
             "| --- | ---: | --- | ---: | ---: | ---: |"]
    for mode in dict.fromkeys(r["mode"] for r in rows):
        peaks = {r["method"]: r["peak_mib"] for r in rows if r["mode"] == mode}
        ratio = peaks["straightforward"] / max(peaks["chunked"], 1e-9)
        lines.append(f"| {mode} | {args.chunk_tokens} | {args.batch_size} x {args.completion_tokens} | "
                     f"{peaks['straightforward']:.0f} | {peaks['chunked']:.0f} | {ratio:.1f}x |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab-size", type=int, default=QWEN25_VOCAB_SIZE)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--completion-tokens", type=int, default=128)
    parser.add_argument("--chunk-tokens", type=int, default=64)
    parser.add_argument("--hidden-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # set by the driver
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.child:
        print(json.dumps([measure(method, mode, args) for method, mode in MEASUREMENTS]))
        return
    rows = run_in_child(argv)
    print(f"vocabulary {args.vocab_size}, hidden {args.hidden_size}, 1 layer, float32, CPU, "
          f"{PROMPT_TOKENS}-token prompts; peak = resident high-water mark minus the resident set before the pass")
    print(markdown_table(rows, args))


if __name__ == "__main__":
    main()
