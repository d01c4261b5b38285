"""The project's GRPO stage side by side with TRL's ``GRPOTrainer`` on identical work.

Both trainers get the same base model, training rows, group size, prompt batch, sampling length
and temperature, optimiser (AdamW, constant lr, no weight decay, grad-norm clip), KL (beta on the
k3 estimator, in the loss), token-mean loss, group-std advantages, one update per batch, and the
same number of CPU threads. Each run is a fresh subprocess, one after the other, interleaved by
seed (ours seed 0, TRL seed 0, ours seed 1, TRL seed 1) so a machine that gets busier slows both.
The load average before and after each run is recorded.

What the table shows, per trainer and seed:
- per-phase seconds per step: sample (generation), score (verifier rewards), reference (the
  frozen reference's log-probs; TRL: everything of its generate-and-score phase that is neither
  generation nor scoring), update (forward, backward, optimiser), sync (the rollout backend's
  weight sync);
- completion tokens generated per second of training wall;
- wall to reach TRL's final training reward (the mean of its last 10 steps, same seed), taken
  from the 10-step running mean of each run's training reward;
- final held-out pass@1 from the project's evaluate and score stages (the config's bench:
  100 prompts x 8 samples on the default).

TRL differences that do not change the work: TRL has no stop strings for the transformers
generate path; the tiny base ends a completion with EOS right after ``</answer>``, so the
project's ``</answer>`` stop changes (almost) nothing.

Both trainers see the same prompts in the same order: TRL gets the training rows laid out in the
project's epoch-shuffled order for that seed (``stages.grpo.PromptStream``) with its own shuffle
off, so a seed pairs two runs on identical prompt batches and differs only in the samples drawn.

TRL is installed only through the ``bench`` extra: ``pip install -e ".[bench]"``.

Usage:
    python benchmarks/bench_vs_trl.py                         # 160 steps x 2 seeds x 2 trainers
    python benchmarks/bench_vs_trl.py --steps 3 --seeds 0 --eval-prompts 4   # a smoke run
    python benchmarks/bench_vs_trl.py --trainers r1zero       # the project's stage alone
    python benchmarks/bench_vs_trl.py --device cuda --model-config data/model_configs/Qwen2.5-0.5B.json \\
        --steps 3 --trainers r1zero --max-new-tokens 256      # GPU throughput, random weights

With ``--model-config`` the base is a random-weight model of that architecture (with the
project's tiny tokenizer), so the rewards mean nothing; the table then adds rollout and update
tokens/s, the update's model-FLOPs utilisation (6 x parameters x tokens over the GPU's peak
dense bf16 FLOP/s, ``--peak-tflops``) and the peak GPU memory.

Writes ``--json-out`` (default results/benchmarks/bench_vs_trl.json) and prints a Markdown table.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

TRAINERS = ("r1zero", "trl")
PHASES = ("sample", "score", "reference", "update", "sync")
REWARD_WINDOW_STEPS = 10  # "training reward at the end": the mean of the last 10 steps
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "H800": 989.0, "A100": 312.0, "L40S": 362.0}


# ---------------------------------------------------------------- the shared work
def load_work(args: argparse.Namespace) -> dict:
    """The GRPO and evaluation settings of ``args.run`` in ``args.config``, with the benchmark's overrides."""
    from pipeline.config import load_config, stage_snapshots

    cfg = load_config(args.config)
    if args.run not in cfg.runs:
        raise SystemExit(f"--run {args.run!r}: not a run of {args.config}; runs: {', '.join(cfg.runs)}")
    snapshots = stage_snapshots(cfg)
    grpo = snapshots[f"runs/{args.run}/grpo"]
    bench = args.bench or next(iter(cfg.evaluation.benches))
    if f"eval/{bench}/generate" not in snapshots:
        raise SystemExit(f"--bench {bench!r}: not a bench of {args.config}; benches: {', '.join(cfg.evaluation.benches)}")
    generate, score = snapshots[f"eval/{bench}/generate"], snapshots[f"eval/{bench}/score"]
    results = Path(cfg.results_dir)
    dataset = grpo["dataset"]
    bench_dataset = cfg.evaluation.benches[bench].dataset or dataset
    grpo.update({"steps": args.steps or grpo["steps"], "device": args.device, "eval_every": 0,
                 "_runtime": {"threads": args.threads}})
    if args.max_new_tokens:
        grpo["max_new_tokens"] = args.max_new_tokens
    if args.dtype:
        grpo["dtype"] = args.dtype
    generate.update({"device": args.device, "max_prompts": args.eval_prompts, "_runtime": {"threads": args.threads}})
    return {"grpo": grpo, "generate": generate, "score": score, "bench": bench,
            "base": str(args.base or results / "models" / grpo["base"] / "model"),
            "train": str(args.train or results / "data" / dataset / "train.jsonl"),
            "test": str(args.test or results / "data" / bench_dataset / f"{cfg.evaluation.benches[bench].split}.jsonl")}


def check_inputs(work: dict) -> None:
    for name in ("base", "train", "test"):
        if not Path(work[name]).exists():
            raise SystemExit(f"{name}: {work[name]} does not exist; build it with the workflow "
                             f"(`snakemake -c2 {work[name]}` or `r1zero run`) or pass --{name}")


def build_random_base(model_config: str, directory: Path) -> str:
    """A random-weight model of ``model_config``'s architecture with the project's tiny tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from stages.core.tokenizer import build_tiny_tokenizer

    config = AutoConfig.from_pretrained(model_config)
    tokenizer = build_tiny_tokenizer()
    config.eos_token_id = config.pad_token_id = config.bos_token_id = tokenizer.eos_token_id
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config, dtype=torch.float32).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)


# ---------------------------------------------------------------- timing helpers
class PhaseClock:
    """Seconds per phase within the current step; ``wrap`` times a callable into a phase."""

    def __init__(self, device: str) -> None:
        self.seconds: dict[str, float] = {}
        self.cuda = device.startswith("cuda")

    def now(self) -> float:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
        return time.perf_counter()

    def wrap(self, phase: str, function):
        def timed(*args, **kwargs):
            started = self.now()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[phase] = self.seconds.get(phase, 0.0) + self.now() - started
        return timed

    def take(self) -> dict[str, float]:
        seconds, self.seconds = self.seconds, {}
        return seconds


def peak_memory_gib(device: str) -> float | None:
    if not device.startswith("cuda"):
        return None
    import torch

    return torch.cuda.max_memory_allocated() / 1024 ** 3


# ---------------------------------------------------------------- the project's trainer
def train_r1zero(work: dict, seed: int, out_dir: Path) -> dict:
    """Train with stages/grpo.py's GRPOTrainer for ``steps`` steps; per-step records."""
    import random

    import torch

    import stages.grpo as grpo_stage
    from stages.core.modeling import pick_device, set_cpu_threads

    config = {**work["grpo"], "seed": seed}
    set_cpu_threads(config["_runtime"]["threads"])
    torch.manual_seed(seed)
    random.seed(seed)
    clock = PhaseClock(config["device"])
    grpo_stage.score_completions = clock.wrap("score", grpo_stage.score_completions)
    started = clock.now()
    trainer = grpo_stage.GRPOTrainer(config, {"model": work["base"], "train": work["train"]}, pick_device(config["device"]))
    trainer.backend.generate = clock.wrap("sample", trainer.backend.generate)
    trainer.reference_logprobs = clock.wrap("reference", trainer.reference_logprobs)
    update_tokens: list[int] = []
    original_update = trainer.update

    def counted_update(batch, tensors):
        update_tokens.append(int(batch.attention_mask.sum()))  # prompt + completion tokens of the step
        return original_update(batch, tensors)

    trainer.update = clock.wrap("update", counted_update)
    trainer.backend.sync_weights = clock.wrap("sync", trainer.backend.sync_weights)
    setup_s = clock.now() - started
    steps = []
    for step in range(config["steps"]):
        metrics = trainer.step(step)
        phases = clock.take()
        steps.append({"step": step, "reward": metrics["reward/total"], "wall_s": clock.now() - started,
                      "completion_tokens": metrics["completions/mean_length"] * len(trainer.last_rollouts),
                      "update_tokens": update_tokens[-1] if update_tokens else None, **{f"{p}_s": phases.get(p, 0.0) for p in PHASES}})
    wall_s = clock.now() - started
    trainer.policy.save_pretrained(out_dir)
    trainer.tokenizer.save_pretrained(out_dir)
    trainer.backend.close()
    return {"setup_s": setup_s, "wall_s": wall_s, "steps": steps,
            "num_parameters": sum(p.numel() for p in trainer.policy.parameters())}


# ---------------------------------------------------------------- TRL's trainer
def trl_reward_function(weights_by_task: dict):
    """A TRL reward function that scores with the project's verifiers (the same totals GRPO uses)."""
    from stages.core.scoring import score_completions

    def countdown_reward(prompts, completions, row, **_):
        rows = [json.loads(r) for r in row]
        return score_completions(list(completions), rows, weights_by_task).totals

    return countdown_reward


def trl_config(work: dict, seed: int, out_dir: Path):
    from trl import GRPOConfig

    grpo, algorithm = work["grpo"], work["grpo"]["algorithm"]
    if (algorithm["kl_estimator"], algorithm["kl_mode"], algorithm["loss_aggregation"]) != ("k3", "loss", "token_mean"):
        raise SystemExit("bench_vs_trl compares like with like: the run needs kl_estimator k3, kl_mode loss and "
                         "loss_aggregation token_mean (TRL's beta and loss_type dapo)")
    return GRPOConfig(
        output_dir=str(out_dir / "trl_output"), seed=seed, max_steps=grpo["steps"], report_to="none",
        use_cpu=not grpo["device"].startswith("cuda"), bf16=grpo["dtype"] == "bfloat16", fp16=False,
        per_device_train_batch_size=grpo["prompts_per_step"] * grpo["group_size"], gradient_accumulation_steps=1,
        num_generations=grpo["group_size"], max_completion_length=grpo["max_new_tokens"],
        temperature=grpo["temperature"], top_p=grpo["top_p"], top_k=0,
        learning_rate=grpo["lr"], lr_scheduler_type="constant", warmup_steps=grpo["warmup_steps"],
        weight_decay=grpo["weight_decay"], optim="adamw_torch", max_grad_norm=grpo["max_grad_norm"],
        beta=algorithm["kl_coef"], loss_type="dapo", scale_rewards="group", epsilon=algorithm["clip_eps_low"],
        epsilon_high=algorithm["clip_eps_high"], num_iterations=algorithm["num_epochs"],
        gradient_checkpointing=grpo["gradient_checkpointing"], logging_steps=1, save_strategy="no",
        disable_tqdm=True, dataloader_num_workers=0, log_completions=False,
        shuffle_dataset=False)  # the rows come in the project's order (same_prompt_order)


def same_prompt_order(rows: list[dict], grpo: dict, seed: int) -> list[int]:
    """The row indices the project's GRPO stage trains on with this seed, step after step (its
    ``PromptStream``): TRL reads them in this order with its shuffle off."""
    from stages.grpo import PromptStream

    return PromptStream(len(rows), seed).take(grpo["steps"] * grpo["prompts_per_step"])


def train_trl(work: dict, seed: int, out_dir: Path) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOTrainer

    from pipeline.artifacts import read_jsonl

    grpo = work["grpo"]
    torch.set_num_threads(grpo["_runtime"]["threads"])
    clock = PhaseClock(grpo["device"])
    started = clock.now()
    rows = read_jsonl(work["train"])
    dataset = Dataset.from_list([{"prompt": rows[i]["prompt"], "row": json.dumps(rows[i])} for i in same_prompt_order(rows, grpo, seed)])
    model = AutoModelForCausalLM.from_pretrained(work["base"], dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(work["base"])
    trainer = GRPOTrainer(model=model, reward_funcs=trl_reward_function(grpo["rewards"]),
                          args=trl_config(work, seed, out_dir), train_dataset=dataset, processing_class=tokenizer)
    trainer._generate_single_turn = clock.wrap("sample", trainer._generate_single_turn)
    trainer._calculate_rewards = clock.wrap("score", trainer._calculate_rewards)
    trainer._generate_and_score_completions = clock.wrap("generate_and_score", trainer._generate_and_score_completions)
    steps: list[dict] = []
    group_rows = grpo["prompts_per_step"] * grpo["group_size"]

    class Record(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            self.step_started = clock.now()

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "reward" in logs and len(steps) < state.global_step:
                phases = clock.take()
                whole = clock.now() - self.step_started
                rest = phases.pop("generate_and_score", 0.0)
                phases["reference"] = rest - phases.get("sample", 0.0) - phases.get("score", 0.0)
                phases["update"] = whole - rest
                steps.append({"step": state.global_step - 1, "reward": float(logs["reward"]), "wall_s": clock.now() - started,
                              "completion_tokens": float(logs.get("completions/mean_length", 0.0)) * group_rows,
                              **{f"{p}_s": phases.get(p, 0.0) for p in PHASES}})

    trainer.add_callback(Record())
    setup_s = clock.now() - started
    trainer.train()
    wall_s = clock.now() - started
    trainer.model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return {"setup_s": setup_s, "wall_s": wall_s, "steps": steps,
            "num_parameters": sum(p.numel() for p in trainer.model.parameters())}


# ---------------------------------------------------------------- evaluation
def evaluate_policy(work: dict, model_dir: Path) -> dict:
    """Held-out pass@1 (and the score stage's other numbers) of ``model_dir``, via stages.evaluate + stages.score."""
    from stages import evaluate, score

    samples = model_dir.parent / "eval" / "samples.jsonl"
    scores = model_dir.parent / "eval" / "scores.json"
    samples.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    evaluate.main(work["generate"], {"model": str(model_dir), "data": work["test"]}, {"samples": str(samples)})
    score.main(work["score"], {"samples": str(samples), "data": work["test"]}, {"scores": str(scores)})
    result = json.loads(scores.read_text())
    return {"pass@1": result["pass@1"], "interval": result.get("avg@n_interval"), "num_samples": result["num_samples"],
            "per_prompt": result["per_prompt"], "eval_s": time.perf_counter() - started}


# ---------------------------------------------------------------- one run (in a subprocess)
def run_one(args: argparse.Namespace) -> None:
    """The child process: train one trainer with one seed, evaluate it, write a JSON record."""
    work = json.loads(Path(args.work_file).read_text())
    out_dir = Path(args.run_dir) / "model"
    trainer = {"r1zero": train_r1zero, "trl": train_trl}[args.trainer]
    record = {"trainer": args.trainer, "seed": args.seed, "load_before": os.getloadavg()}
    record.update(trainer(work, args.seed, out_dir))
    record["peak_memory_gib"] = peak_memory_gib(work["grpo"]["device"])
    record["load_after_training"] = os.getloadavg()
    if not args.skip_eval:
        record["eval"] = evaluate_policy(work, out_dir)
    Path(args.run_dir, "record.json").write_text(json.dumps(record, indent=1))


def launch(trainer: str, seed: int, work_file: Path, run_dir: Path, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--child", trainer, "--seed", str(seed), "--work-file", str(work_file),
               "--run-dir", str(run_dir)] + (["--skip-eval"] if args.skip_eval else [])
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
           "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(REPO_ROOT)}
    print(f"-- {trainer} seed {seed} (load {os.getloadavg()[0]:.2f})", file=sys.stderr, flush=True)
    log_path = run_dir / "log.txt"
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log_file:
        done = subprocess.run(command, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    if done.returncode:
        tail = log_path.read_text()[-3000:]
        raise SystemExit(f"{trainer} seed {seed} failed (exit {done.returncode}); log {log_path}:\n{tail}")
    return json.loads((run_dir / "record.json").read_text())


# ---------------------------------------------------------------- summary
def running_mean(values: list[float], window: int) -> list[float]:
    """Mean of the last ``window`` values at each position (fewer at the start).

    >>> running_mean([1.0, 3.0, 5.0], 2)
    [1.0, 2.0, 4.0]
    """
    return [sum(values[max(0, i - window + 1):i + 1]) / len(values[max(0, i - window + 1):i + 1])
            for i in range(len(values))]


def wall_to_reach(steps: list[dict], target: float, window: int = REWARD_WINDOW_STEPS) -> float | None:
    """Training wall (s) at the first step whose ``window``-step mean reward reaches ``target``
    (only once ``window`` steps exist, or at the last step of a shorter run); None if never.

    >>> wall_to_reach([{"reward": 0.1, "wall_s": 1.0}, {"reward": 0.5, "wall_s": 2.0}], 0.3, window=2)
    2.0
    """
    means = running_mean([float(s["reward"]) for s in steps], window)
    first_full = min(window, len(steps)) - 1
    for index in range(first_full, len(steps)):
        if means[index] >= target - 1e-12:
            return steps[index]["wall_s"]
    return None


def summarise(record: dict, target: float | None, warmup_steps: int = 1) -> dict:
    """One table row: per-phase mean seconds per step (after ``warmup_steps``), tokens/s, reward, pass@1."""
    steps = record["steps"]
    timed = steps[warmup_steps:] or steps
    phases = {p: sum(s[f"{p}_s"] for s in timed) / len(timed) for p in PHASES}
    step_s = (timed[-1]["wall_s"] - (steps[warmup_steps - 1]["wall_s"] if len(steps) > warmup_steps else record["setup_s"])) \
        / len(timed)
    tokens = sum(float(s["completion_tokens"]) for s in steps)
    rewards = [float(s["reward"]) for s in steps]
    return {"trainer": record["trainer"], "seed": record["seed"], "wall_s": record["wall_s"], "step_s": step_s,
            **{f"{p}_s": v for p, v in phases.items()},
            "tokens_per_s": tokens / max(1e-9, steps[-1]["wall_s"] - record["setup_s"]),
            "final_reward": sum(rewards[-REWARD_WINDOW_STEPS:]) / len(rewards[-REWARD_WINDOW_STEPS:]),
            "wall_to_target_s": wall_to_reach(steps, target) if target is not None else None,
            "pass@1": record.get("eval", {}).get("pass@1"), "load": [record["load_before"][0], record["load_after_training"][0]],
            "peak_memory_gib": record.get("peak_memory_gib")}


def throughput(record: dict, peak_tflops: float | None) -> dict:
    """Rollout and update tokens/s, and the update's MFU: 6 x parameters x (prompt + completion
    tokens of every row), the work of the unshared computation, over the update's seconds."""
    timed = record["steps"][1:] or record["steps"]
    completion = sum(s["completion_tokens"] for s in timed)
    update_s = sum(s["update_s"] for s in timed)
    if any(s.get("update_tokens") is None for s in timed):  # TRL's update tokens are not recorded
        return {"rollout_tokens_per_s": completion / max(1e-9, sum(s["sample_s"] for s in timed)),
                "update_tokens_per_s": None, "mfu": None}
    update_tokens = sum(s["update_tokens"] for s in timed)
    flops_per_s = 6 * record["num_parameters"] * update_tokens / max(1e-9, update_s)
    return {"rollout_tokens_per_s": completion / max(1e-9, sum(s["sample_s"] for s in timed)),
            "update_tokens_per_s": update_tokens / max(1e-9, update_s),
            "mfu": flops_per_s / (peak_tflops * 1e12) if peak_tflops else None}


def table(rows: list[dict]) -> str:
    lines = ["| trainer | seed | wall s | s/step | sample | score | reference | update | sync | tokens/s "
             "| reward (last 10) | wall to TRL's final reward | vs TRL wall | pass@1 | load |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    trl_wall = {r["seed"]: r["wall_s"] for r in rows if r["trainer"] == "trl"}

    def number(value, digits=3):
        return "—" if value is None else f"{value:.{digits}f}"

    for r in rows:
        reached = r["wall_to_target_s"]
        ratio = reached / trl_wall[r["seed"]] if reached is not None and r["seed"] in trl_wall else None
        lines.append(f"| {r['trainer']} | {r['seed']} | {r['wall_s']:.0f} | {r['step_s']:.2f} | {r['sample_s']:.2f} | "
                     f"{r['score_s']:.3f} | {r['reference_s']:.2f} | {r['update_s']:.2f} | {r['sync_s']:.3f} | "
                     f"{r['tokens_per_s']:.0f} | {r['final_reward']:.3f} | {number(reached, 0)} | {number(ratio, 2)} | "
                     f"{number(r['pass@1'])} | {r['load'][0]:.1f} → {r['load'][1]:.1f} |")
    return "\n".join(lines)


def pass_at_1_differences(records: list[dict]) -> str:
    """Per seed, the project's held-out pass@1 minus TRL's on the same prompts, with a paired
    bootstrap (stages/core/eval_metrics.py): whether "equal or better" is a difference or noise."""
    from stages.core.eval_metrics import paired_bootstrap

    per_prompt = {(r["trainer"], r["seed"]): r.get("eval", {}).get("per_prompt") for r in records}
    lines = ["| seed | pass@1 r1zero - TRL [95% CI] | p | verdict |", "|---:|---|---:|---|"]
    for seed in sorted({seed for _, seed in per_prompt}):
        ours, theirs = per_prompt.get(("r1zero", seed)), per_prompt.get(("trl", seed))
        if not ours or not theirs:
            continue
        test = paired_bootstrap(ours, theirs)
        low, high = test["interval"]
        verdict = "significant" if test["significant"] else "not significant"
        lines.append(f"| {seed} | {test['difference']:+.3f} [{low:+.3f}, {high:+.3f}] | {test['p_value']:.2f} | {verdict} |")
    return "\n".join(lines) if len(lines) > 2 else ""


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{cpu}, {os.cpu_count()} cores, torch threads per run as given"


# ---------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(REPO_ROOT / "pipeline" / "config" / "default.yaml"))
    parser.add_argument("--run", default="r1zero", help="the config's run whose GRPO settings both trainers use")
    parser.add_argument("--bench", default=None, help="evaluation bench (default: the config's first)")
    parser.add_argument("--base", default=None, help="base model dir (default: the workflow's results/models/<base>/model)")
    parser.add_argument("--model-config", default=None, help="config.json of an architecture: a random-weight base of it")
    parser.add_argument("--train", default=None, help="training rows (default: results/data/<dataset>/train.jsonl)")
    parser.add_argument("--test", default=None, help="bench rows (default: results/data/<dataset>/<split>.jsonl)")
    parser.add_argument("--steps", type=int, default=None, help="GRPO steps (default: the run's)")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="completion length (default: the run's)")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--trainers", default="r1zero,trl", help=f"comma-separated, of {', '.join(TRAINERS)}")
    parser.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                        help="compute dtype of both trainers (default: the run's)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--eval-prompts", type=int, default=0, help="bench prompts to evaluate (0: all)")
    parser.add_argument("--skip-eval", action="store_true")
    parser.add_argument("--peak-tflops", type=float, default=None, help="GPU peak dense bf16 TFLOP/s for MFU")
    parser.add_argument("--work-dir", default=None, help="where models and logs go (default: a temporary dir)")
    parser.add_argument("--from-records", default=None,
                        help="summarise the runs already in this --work-dir (no training): after a crash or to re-print")
    parser.add_argument("--json-out", default=str(REPO_ROOT / "results" / "benchmarks" / "bench_vs_trl.json"))
    parser.add_argument("--child", choices=TRAINERS, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--work-file", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--run-dir", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    unknown = set(args.trainers.split(",")) - set(TRAINERS)
    if unknown:
        parser.error(f"--trainers: unknown {', '.join(sorted(unknown))}; use {', '.join(TRAINERS)}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        args.trainer = args.child
        run_one(args)
        return
    os.chdir(REPO_ROOT)  # the config's results_dir and prompt templates are relative to the repository
    work = load_work(args)
    work_dir = Path(args.work_dir or tempfile.mkdtemp(prefix="bench_vs_trl_"))
    work_dir.mkdir(parents=True, exist_ok=True)
    if args.model_config:
        work["base"] = build_random_base(args.model_config, work_dir / "random_base")
    check_inputs(work)
    work_file = work_dir / "work.json"
    work_file.write_text(json.dumps(work, indent=1))
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.from_records:
        records = [json.loads((Path(args.from_records) / f"{trainer}-seed{seed}" / "record.json").read_text())
                   for seed in seeds for trainer in args.trainers.split(",")]
    else:
        records = [launch(trainer, seed, work_file, work_dir / f"{trainer}-seed{seed}", args)
                   for seed in seeds for trainer in args.trainers.split(",")]  # interleaved: ours, TRL, ours, TRL
    targets = {r["seed"]: summarise(r, None)["final_reward"] for r in records if r["trainer"] == "trl"}
    rows = [summarise(r, targets.get(r["seed"])) for r in records]
    peak = args.peak_tflops or next((v for k, v in PEAK_BF16_TFLOPS.items() if args.device.startswith("cuda")
                                     and k in _gpu_name()), None)
    if args.device.startswith("cuda"):
        for row, record in zip(rows, records):
            row.update(throughput(record, peak))
    report = {"machine": machine(), "device": args.device, "threads": args.threads, "base": work["base"],
              "steps": work["grpo"]["steps"], "prompts_per_step": work["grpo"]["prompts_per_step"],
              "group_size": work["grpo"]["group_size"], "max_new_tokens": work["grpo"]["max_new_tokens"],
              "rows": rows, "records": records, "versions": _versions()}
    Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json_out).write_text(json.dumps(report, indent=1))
    print(f"{report['machine']}; {args.threads} thread(s) per run; {work['grpo']['steps']} steps x "
          f"{work['grpo']['prompts_per_step']} prompts x {work['grpo']['group_size']} completions, "
          f"{work['grpo']['max_new_tokens']} new tokens; {_versions()}\n")
    print(table(rows))
    differences = pass_at_1_differences(records)
    if differences:
        print(f"\nHeld-out pass@1, paired by prompt (100 x 8 samples each):\n\n{differences}")
    if args.device.startswith("cuda"):
        print("\n| trainer | seed | rollout tokens/s | update tokens/s | MFU | peak GiB |\n|---|---:|---:|---:|---:|---:|")
        for r in rows:
            mfu = "—" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%"
            update = "—" if r["update_tokens_per_s"] is None else f"{r['update_tokens_per_s']:.0f}"
            print(f"| {r['trainer']} | {r['seed']} | {r['rollout_tokens_per_s']:.0f} | {update} | {mfu} | "
                  f"{r['peak_memory_gib']:.2f} |")
    print(f"\nJSON: {args.json_out}; models and logs: {work_dir}")


def _gpu_name() -> str:
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else ""


def _versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    parts = []
    for name in ("torch", "transformers", "trl"):
        with contextlib.suppress(PackageNotFoundError):
            parts.append(f"{name} {version(name)}")
    return ", ".join(parts)


if __name__ == "__main__":
    main()
