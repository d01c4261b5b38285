"""A stage process for the multi-rank tests: ``torchrun ... tests/stages/distributed_worker.py STAGE --config ...``.

It registers the toy reward of tests/stages/test_learning.py (the share of digit characters, so
a random tiny model gets a reward signal) in the worker's own registry, then runs the stage's
``main`` through the same command line and exit handling as ``python -m stages.<stage>``.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def kill_at_step(step_to_kill: int) -> None:
    """Every rank dies (os._exit, no clean-up, like a kill) when it reaches ``step_to_kill``."""
    import stages.grpo as grpo

    original_step = grpo.GRPOTrainer.step

    def step(self, step_number):
        if step_number == step_to_kill:
            os._exit(9)
        return original_step(self, step_number)

    grpo.GRPOTrainer.step = step


def main() -> None:
    from stages.core.distributed import run_stage_process
    from tests.stages.test_learning import digit_fraction
    from verifiers import registry

    registry.REWARDS["digit_fraction"] = digit_fraction
    registry.REWARD_RANGES["digit_fraction"] = (0.0, 1.0)
    stage = sys.argv.pop(1)
    if stage == "grpo":
        from stages.grpo import main as stage_main

        crash_at = os.environ.get("R1ZERO_TEST_KILL_AT_STEP")
        if crash_at is not None:
            kill_at_step(int(crash_at))
    elif stage == "sft":
        from stages.sft import main as stage_main
    else:
        raise SystemExit(f"distributed_worker: unknown stage {stage!r}; use grpo or sft")
    run_stage_process(stage_main, description=f"{stage} (test worker)")


if __name__ == "__main__":
    main()
