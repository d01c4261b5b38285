"""GPU check of distributed GRPO: ZeRO-3 across 2 ranks with vLLM where a machine has 2+ GPUs,
1 rank where it has one; prints what it checked.

    python benchmarks/gpu_check.py                 # on the GPU machine (needs deepspeed; vllm optional)
    python benchmarks/gpu_check.py --dry-run       # print the plan and the launch line, run nothing

It builds a random-weight model of a real architecture (Qwen2.5-0.5B's shapes from
data/model_configs/, the tiny tokenizer's vocabulary), a toy prompt set, and a GRPO stage config
with a ``distributed`` block, then launches ``stages.grpo`` under torchrun through this file's
``--worker`` mode (which registers a toy reward: the share of digits in a completion, so random
weights get a gradient). It checks that:

- the launch exits 0 and logged every step (metrics reduced across ranks, rank 0 writes);
- the published model is a consolidated HF directory that ``from_pretrained`` loads, and its
  weights moved away from the start;
- the rollout engine sampled from the synced weights: ``rollout/logprob_abs_diff`` (engine vs
  trainer log-probs of the same tokens) stays small every step, so the layer-by-layer ZeRO-3
  sync reached every layer;
- the ZeRO-3 checkpoint of the last step holds one optimizer partition per rank.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

STEPS = 4
# Engine and trainer log-probs of the same tokens: bfloat16 arithmetic on both sides differs by a
# few 1e-2 nats per token on a random model; stale weights (a missed sync) differ by far more.
MAX_LOGPROB_ABS_DIFF = 0.2


def plan(num_gpus: int, vllm_installed: bool) -> dict:
    """What to run on a machine with ``num_gpus`` GPUs.

    >>> plan(8, True)
    {'ranks': 2, 'zero_stage': 3, 'backend': 'vllm'}
    >>> plan(1, False)
    {'ranks': 1, 'zero_stage': 3, 'backend': 'hf'}
    """
    if num_gpus < 1:
        raise SystemExit("gpu_check: no CUDA device; this check needs at least one GPU")
    return {"ranks": 2 if num_gpus >= 2 else 1, "zero_stage": 3, "backend": "vllm" if vllm_installed else "hf"}


def stage_config(ranks: int, zero_stage: int, backend: str) -> dict:
    """The GRPO stage snapshot the check runs (validated by the project's own schema)."""
    from pipeline.config import GRPOConfig

    grpo = GRPOConfig(dataset="toy", steps=STEPS, prompts_per_step=4 * ranks, group_size=8, max_new_tokens=32, lr=1e-5,
                      stop_strings=[], checkpoint_every=STEPS, micro_batch_size=8,
                      algorithm={"advantage_estimator": "grpo", "kl_estimator": "k3", "kl_coef": 0.01},
                      rollout={"backend": backend, "gpu_memory_utilization": 0.3}, guards={"enabled": False},
                      logging={"tensorboard": False})
    return {"run": "gpu_check", "device": "cuda", "dtype": "bfloat16", "rewards": {"toy": {"digit_fraction": 1.0}},
            **grpo.model_dump(mode="json"), "distributed": {"world_size": ranks, "zero_stage": zero_stage}}


def launch_command(ranks: int, config_path: Path, model_dir: Path, train_path: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}", __file__,
            "--worker", "--config", str(config_path), "--input", f"model={model_dir}", "--input", f"train={train_path}",
            "--output", f"model={out / 'model'}", "--output", f"metrics={out / 'metrics.jsonl'}",
            "--output", f"scratch={out}"]


def build_inputs(directory: Path) -> tuple[Path, Path]:
    """A random-weight Qwen2.5-0.5B-shaped model (tiny vocabulary) and 32 toy prompts."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from stages.core.tokenizer import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer()
    config = AutoConfig.from_pretrained(REPO / "data" / "model_configs" / "Qwen2.5-0.5B.json")
    config.vocab_size, config.eos_token_id, config.bos_token_id = len(tokenizer), tokenizer.eos_token_id, None
    torch.manual_seed(0)
    model_dir = directory / "model"
    AutoModelForCausalLM.from_config(config).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    rows = [{"id": f"toy-{i}", "source": "gpu_check", "task": "toy", "question": f"q{i}", "prompt": f"Say digits {i}:",
             "answer": None, "meta": {}} for i in range(32)]
    train = directory / "train.jsonl"
    train.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return model_dir, train


def digit_fraction(completion: str, example) -> float:
    return sum(ch.isdigit() for ch in completion) / max(1, len(completion))


def worker() -> None:
    """One rank: the toy reward registered, then ``stages.grpo`` as its command line runs it."""
    from stages.core.distributed import run_stage_process
    from stages.grpo import main as grpo_main
    from verifiers import registry

    registry.REWARDS["digit_fraction"] = digit_fraction
    registry.REWARD_RANGES["digit_fraction"] = (0.0, 1.0)
    sys.argv.remove("--worker")
    run_stage_process(grpo_main, description="gpu_check worker")


def check(out: Path, model_dir: Path, ranks: int) -> list[str]:
    """What the run left behind; returns the failed checks (empty: all passed)."""
    from transformers import AutoModelForCausalLM

    failures = []
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    if [r["step"] for r in records] != list(range(STEPS)):
        failures.append(f"metrics cover steps {[r['step'] for r in records]}, expected 0..{STEPS - 1}")
    worst = max(r["rollout/logprob_abs_diff"] for r in records)
    print(f"  rollout/logprob_abs_diff, worst step: {worst:.4f} (limit {MAX_LOGPROB_ABS_DIFF})")
    if worst > MAX_LOGPROB_ABS_DIFF:
        failures.append(f"rollout engine and trainer disagree ({worst:.3f} nats/token): weights not synced")
    start = AutoModelForCausalLM.from_pretrained(model_dir).state_dict()
    trained = AutoModelForCausalLM.from_pretrained(out / "model").state_dict()
    moved = max((trained[name].float() - tensor.float()).abs().max().item() for name, tensor in start.items())
    print(f"  published model loads with from_pretrained; largest weight change {moved:.2e}")
    if moved == 0.0:
        failures.append("the published weights equal the start model's")
    meta = json.loads((out / "model" / "meta.json").read_text())
    if meta.get("layout") != {"deepspeed": True, "world_size": ranks, "zero_stage": 3}:
        failures.append(f"meta.json layout is {meta.get('layout')}")
    print(f"  final metrics: reward {records[-1]['reward/total']:.3f}, kl {records[-1].get('kl', 0):.2e}, "
          f"step {records[-1]['time/step_s']:.1f} s")
    return failures


def main() -> int:
    if "--worker" in sys.argv:
        worker()
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="print the plan and the launch line only")
    parser.add_argument("--keep", default=None, help="work directory to keep (default: a temporary one)")
    args = parser.parse_args()
    import torch

    num_gpus = torch.cuda.device_count()
    if args.dry_run and num_gpus == 0:
        num_gpus = 2  # show what a 2-GPU machine would run
    chosen = plan(num_gpus, importlib.util.find_spec("vllm") is not None)
    if importlib.util.find_spec("deepspeed") is None:
        raise SystemExit("gpu_check: deepspeed is not installed (pip install -e '.[deepspeed]')")
    print(f"gpu_check: {num_gpus} GPU(s): GRPO on {chosen['ranks']} rank(s), ZeRO-{chosen['zero_stage']}, "
          f"rollout backend {chosen['backend']}")
    config = stage_config(chosen["ranks"], chosen["zero_stage"], chosen["backend"])
    if args.dry_run:
        work = Path(args.keep or "WORKDIR")
        print("  " + " ".join(launch_command(chosen["ranks"], work / "grpo.json", work / "model", work / "train.jsonl",
                                             work / "run")))
        return 0
    work = Path(args.keep or tempfile.mkdtemp(prefix="gpu_check_"))
    work.mkdir(parents=True, exist_ok=True)
    config_path, out = work / "grpo.json", work / "run"
    command = launch_command(chosen["ranks"], config_path, work / "model", work / "train.jsonl", out)
    model_dir, train = build_inputs(work)
    config_path.write_text(json.dumps(config))
    started = time.time()
    process = subprocess.run(command, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True)
    print(f"  launch exit code {process.returncode} after {time.time() - started:.0f} s")
    if process.returncode != 0:
        print(process.stderr[-6000:])
        return 1
    failures = check(out, model_dir, chosen["ranks"])
    for failure in failures:
        print(f"  FAILED: {failure}")
    print("gpu_check: " + ("all checks passed" if not failures else f"{len(failures)} check(s) failed"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
