"""Per-step metrics: one JSONL record per step (``step`` first), TensorBoard, optional W&B.

On resume the JSONL is cut back to the steps before the resume point, so a crashed and resumed
run logs every step exactly once.

Example:
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "m.jsonl"
    >>> logger = MetricsLogger(path)
    >>> logger.log({"reward/total": 0.5, "step": 0}); logger.close()
    >>> path.read_text().startswith('{"step": 0')
    True
"""
from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

log = logging.getLogger("r1zero.metrics")


def _clean(value):
    """JSON has no NaN/inf: write them as null so every line stays valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class MetricsLogger:
    def __init__(self, path: str | os.PathLike, *, resume_from_step: int = 0, tensorboard_dir=None,
                 wandb_project: str | None = None, run_name: str = "run", config: dict | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._truncate_to(resume_from_step)
        self._file = open(self.path, "a")
        self._tb = self._open_tensorboard(tensorboard_dir)
        self._wandb = self._open_wandb(wandb_project, run_name, config)

    def _truncate_to(self, step: int) -> None:
        """Keep only records of steps before ``step`` (a resumed run rewrites the rest)."""
        if not self.path.exists():
            return
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                break  # a line cut by a crash ends the valid prefix
            if record.get("step", math.inf) < step:
                kept.append(line)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        tmp.replace(self.path)

    @staticmethod
    def _open_tensorboard(directory):
        if directory is None:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            log.warning("tensorboard is not installed; logging to JSONL only")
            return None
        return SummaryWriter(log_dir=str(directory))

    @staticmethod
    def _open_wandb(project, run_name, config):
        if not project:
            return None
        try:
            import wandb
        except ImportError:
            raise RuntimeError("logging.wandb is true but wandb is not installed: pip install -e '.[wandb]'") from None
        return wandb.init(project=project, name=run_name, config=config, resume="allow")

    def log(self, metrics: dict) -> None:
        record = {"step": metrics["step"], **{k: _clean(v) for k, v in metrics.items() if k != "step"}}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)) and self._tb is not None:
                self._tb.add_scalar(key, value, record["step"])
        if self._wandb is not None:
            self._wandb.log(record, step=record["step"])

    def log_rollouts(self, directory: str | os.PathLike, step: int, rollouts: list[dict]) -> None:
        """Keep a sample of completions for reading later (``rollouts/step_000010.jsonl``)."""
        from pipeline.artifacts import write_jsonl_atomic

        write_jsonl_atomic(Path(directory) / f"step_{step:06d}.jsonl", rollouts)

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()
