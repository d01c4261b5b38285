"""The ``r1zero`` command line.

    r1zero run [SNAKEMAKE ARGS...]        the workflow (snakemake --cores N ...), default config unless --configfile
    r1zero check-config FILE.yaml [--show]  validate a config (layered onto the default) and print its
                                          stages, or with --show the merged config that will run
    r1zero status [--configfile FILE]     how far each job has got (GRPO step, reward, accuracy)
    r1zero compare RUN [RUN...]           put finished runs side by side (table + overlaid curves)
    r1zero verify FILE.jsonl [--json] [--policy NAME] [--explain]
                                          audit the math verifier on {gold, pred[, equal]} rows
    r1zero audit-rollouts RUN_OR_DIR      rescan a run's archived rollouts for reward hacking
    r1zero sandbox PROGRAM.py --tests T   run one program in the sandbox, print per-test verdicts
    r1zero algorithms                     list estimators, aggregations, KL estimators, presets
    r1zero plan FILE.yaml [--gpus N --gpu-mem GiB]   per-stage, per-device memory plan and verdict

Commands that need ML code reach ``stages`` by module name at run time (as the rules do
through the shell), so ``pipeline`` itself imports nothing from ``stages``.
"""
from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
from pathlib import Path

import yaml

from pipeline.config import DEFAULT_CONFIG, ConfigError, load_config, read_yaml, stage_snapshots

REPO_ROOT = Path(__file__).resolve().parent.parent


def cmd_run(args: argparse.Namespace, extra: list[str]) -> int:
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO_ROOT / "Snakefile")]
    if not any(a.startswith("--cores") or a == "-c" or a.startswith("-c") for a in extra):
        command += ["--cores", str(os.cpu_count() or 1)]
    return subprocess.call(command + extra, cwd=REPO_ROOT)


def cmd_check_config(args: argparse.Namespace, extra: list[str]) -> int:
    try:
        cfg = load_config(args.config)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2
    if args.show:  # the merged config that will run (layered onto the default unless whole)
        print(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), end="")
        return 0
    layered = "a whole config" if not cfg.inherit_default else f"layered onto {DEFAULT_CONFIG.name}"
    print(f"{args.config}: valid ({layered}); runs: {', '.join(cfg.runs)}")
    for key in stage_snapshots(cfg):
        print(f"  {key}")
    return 0


def cmd_status(args: argparse.Namespace, extra: list[str]) -> int:
    from pipeline.status import status_lines
    from pipeline.workflow import Workflow

    try:
        workflow = Workflow.from_snakemake_config(read_yaml(args.configfile) if args.configfile else {})
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2
    print("\n".join(status_lines(workflow)))
    return 0


def cmd_compare(args: argparse.Namespace, extra: list[str]) -> int:
    compare = importlib.import_module("stages.compare")
    out = args.out or f"{args.results}/compare/{'_vs_'.join(args.runs)}"
    try:
        path = compare.compare_runs(args.results, args.runs, out)
    except (FileNotFoundError, ValueError) as error:
        print(f"r1zero compare: {error}", file=sys.stderr)
        return 2
    print(f"comparison written to {path}")
    return 0


def cmd_verify(args: argparse.Namespace, extra: list[str]) -> int:
    from verifiers.verify_cli import main as verify_main

    options = ["--policy", args.policy] + (["--json"] if args.json else []) + (["--explain"] if args.explain else [])
    return verify_main([args.file] + options + extra)


def cmd_audit_rollouts(args: argparse.Namespace, extra: list[str]) -> int:
    from verifiers.audit import audit_main

    return audit_main([args.run_or_dir] + extra)


def cmd_sandbox(args: argparse.Namespace, extra: list[str]) -> int:
    from verifiers.sandbox import sandbox_main

    return sandbox_main([args.program, "--tests", args.tests] + extra)


def cmd_algorithms(args: argparse.Namespace, extra: list[str]) -> int:
    print(importlib.import_module("stages.core.algorithms").describe_algorithms())
    return 0


def cmd_plan(args: argparse.Namespace, extra: list[str]) -> int:
    """Print the memory plan of every stage; exit 1 when one does not fit, 2 on a bad config."""
    memory_plan = importlib.import_module("stages.core.memory_plan")
    try:
        cfg = load_config(args.config)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2
    on_gpu = args.gpus is not None or args.gpu_mem is not None
    if on_gpu:
        gpus = args.gpus or 1
        device = memory_plan.DeviceSpec.gpu(args.gpu_mem or 80.0, gpus)
    else:
        device = memory_plan.DeviceSpec.detect(cfg.device if cfg.device != "auto" else _auto_device())
    distributed = None  # the config's distributed block, else data parallel over the GPUs
    if on_gpu and (args.zero_stage is not None or args.offload_optimizer or args.offload_param):
        distributed = memory_plan.Distributed(device.count, args.zero_stage or 0, args.offload_optimizer, args.offload_param)
    try:
        plans = memory_plan.plan_config(cfg, device, distributed=distributed, prompt_tokens=args.prompt_tokens,
                                        backend="vllm" if device.kind == "cuda" else None)
    except (FileNotFoundError, ValueError) as error:
        print(f"r1zero plan: {error}", file=sys.stderr)
        return 2
    print(f"memory plan for {args.config} on {device.describe()}" + (f" ({distributed.describe()})" if distributed else ""))
    for plan in plans:
        if args.summary:
            verdict = "fits" if plan.fits else "DOES NOT FIT"
            fix = f"; would fit with: {plan.suggestions[0]}" if not plan.fits and plan.suggestions else ""
            print(f"  {plan.stage:<40} peak {plan.peak_bytes / 2 ** 30:7.1f} GiB ({plan.peak_phase}) {verdict}{fix}")
        else:
            print()
            print(plan.table())
    failing = [plan.stage for plan in plans if not plan.fits]
    print()
    print("verdict: every stage fits" if not failing else f"verdict: DOES NOT FIT: {', '.join(failing)}")
    return 1 if failing else 0


def _auto_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="r1zero", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the workflow; other arguments go to snakemake")
    run.set_defaults(func=cmd_run)
    check = sub.add_parser("check-config", help="validate a config file")
    check.add_argument("config")
    check.add_argument("--show", action="store_true", help="print the merged config that will run")
    check.set_defaults(func=cmd_check_config)
    status = sub.add_parser("status", help="how far each job of the workflow has got")
    status.add_argument("--configfile", default=None, help="the config the workflow runs (default: the default)")
    status.set_defaults(func=cmd_status)
    compare = sub.add_parser("compare", help="compare finished runs")
    compare.add_argument("runs", nargs="+", metavar="RUN")
    compare.add_argument("--results", default="results", help="results directory (default: results)")
    compare.add_argument("--out", default=None, help="output directory (default: results/compare/RUN1_vs_RUN2)")
    compare.set_defaults(func=cmd_compare)
    verify = sub.add_parser("verify", help="audit the math verifier on a JSONL file")
    verify.add_argument("file")
    verify.add_argument("--json", action="store_true")
    verify.add_argument("--policy", default="strict",
                        help="math policy: strict (the 'math' reward), lenient, exact, text; see docs/verifiers.md")
    verify.add_argument("--explain", action="store_true", help="print the rule that decided each row")
    verify.set_defaults(func=cmd_verify)
    audit = sub.add_parser("audit-rollouts", help="rescan archived rollouts: lenient-only rewards, degenerate patterns")
    audit.add_argument("run_or_dir", metavar="RUN_OR_DIR", help="a run name (results/RUN/grpo/rollouts) or a directory")
    audit.set_defaults(func=cmd_audit_rollouts)
    sandbox = sub.add_parser("sandbox", help="run a program against tests in the sandbox")
    sandbox.add_argument("program")
    sandbox.add_argument("--tests", required=True)
    sandbox.set_defaults(func=cmd_sandbox)
    algorithms = sub.add_parser("algorithms", help="list RL objective variants and presets")
    algorithms.set_defaults(func=cmd_algorithms)
    plan = sub.add_parser("plan", help="estimate per-device peak memory of every stage, before anything loads")
    plan.add_argument("config")
    plan.add_argument("--gpus", type=int, default=None, help="plan for N GPUs (default: this machine's device)")
    plan.add_argument("--gpu-mem", type=float, default=None, metavar="GiB", help="memory per GPU (default 80)")
    plan.add_argument("--zero-stage", type=int, choices=(0, 1, 2, 3), default=None,
                      help="DeepSpeed ZeRO stage across the GPUs (replaces the config's distributed block)")
    plan.add_argument("--offload-optimizer", action="store_true", help="ZeRO optimizer offload to CPU")
    plan.add_argument("--offload-param", action="store_true", help="ZeRO-3 parameter offload to CPU")
    plan.add_argument("--prompt-tokens", type=int, default=None,
                      help="prompt length to plan for (default: the config's, else 512)")
    plan.add_argument("--summary", action="store_true", help="one line per stage instead of the tables")
    plan.set_defaults(func=cmd_plan)
    return parser


def main(argv: list[str] | None = None) -> int:
    args, extra = build_parser().parse_known_args(argv)
    if extra and args.command not in ("run", "verify", "sandbox", "audit-rollouts"):
        print(f"r1zero {args.command}: unexpected arguments: {' '.join(extra)}", file=sys.stderr)
        return 2
    return args.func(args, extra)


if __name__ == "__main__":
    raise SystemExit(main())
