"""Mixed-precision training: float32 master weights, a low-precision forward, a loss scaler for fp16.

Trained models (policy, critic, SFT) keep float32 weights and float32 optimizer state; the
forward runs under ``torch.autocast`` in bfloat16 or float16, so matmuls are fast while every
update is applied to float32 weights (a bf16 weight cannot absorb an update smaller than 1/256
of itself). float16 has a narrow exponent range: small gradients underflow to zero, so its loss
is multiplied by a dynamic scale before ``backward`` and the gradients are divided by it before
clipping (``torch.amp.GradScaler``); a step whose gradients hold inf/nan is skipped and the
scale halved. Frozen models (reference, evaluation, vLLM) skip all this and load in the dtype.
See docs/precision.md.

Example:
    >>> model = torch.nn.Linear(4, 1)
    >>> optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> precision = MixedPrecision("bfloat16", "cpu")
    >>> with precision.autocast():
    ...     loss = model(torch.ones(2, 4)).float().pow(2).mean()
    >>> precision.backward(loss)
    >>> grad_norm = precision.step(optimizer, model.parameters(), max_grad_norm=1.0)
    >>> precision.num_skipped_steps
    0
"""
from __future__ import annotations

import contextlib
import math
from typing import Iterable

import torch

from stages.core.modeling import torch_dtype


class MixedPrecision:
    """One trained model's precision policy: autocast context, scaled backward, guarded step."""

    def __init__(self, dtype: str, device: torch.device | str) -> None:
        self.dtype = dtype
        self.compute_dtype = torch_dtype(dtype)  # raises a clear error for an unknown name
        self.device_type = torch.device(device).type
        self.scaler = torch.amp.GradScaler(self.device_type) if dtype == "float16" else None
        self.num_skipped_steps = 0  # fp16 steps skipped because the gradients held inf/nan

    def autocast(self):
        """Context manager for the forward pass (and the loss): a no-op for float32."""
        if self.dtype == "float32":
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.compute_dtype)

    def backward(self, loss: torch.Tensor) -> None:
        """``loss.backward()``, with the loss multiplied by the current scale for float16."""
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def step(self, optimizer: torch.optim.Optimizer, parameters: Iterable[torch.nn.Parameter],
             max_grad_norm: float) -> float:
        """Unscale, clip to ``max_grad_norm``, step, update the scale; return the unscaled grad norm.

        For float16 a non-finite norm means the scaler skips ``optimizer.step()`` (counted in
        ``num_skipped_steps``); the returned norm is then inf or nan so the caller can log it.
        ``parameters`` must be those ``optimizer`` updates.
        """
        parameters = [p for p in parameters if p.grad is not None]
        if self.scaler is None:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(parameters, max_grad_norm))
            optimizer.step()
            return grad_norm
        self.scaler.unscale_(optimizer)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(parameters, max_grad_norm))
        self.scaler.step(optimizer)  # skips optimizer.step() when unscale_ found inf/nan
        self.scaler.update()
        if not math.isfinite(grad_norm):
            self.num_skipped_steps += 1
        return grad_norm

    @property
    def loss_scale(self) -> float:
        """The current fp16 loss scale (1.0 when no scaler is used)."""
        return float(self.scaler.get_scale()) if self.scaler is not None else 1.0

    def state_dict(self) -> dict:
        return {"dtype": self.dtype, "num_skipped_steps": self.num_skipped_steps,
                "scaler": self.scaler.state_dict() if self.scaler is not None else None}

    def load_state_dict(self, state: dict) -> None:
        """Restore a checkpoint's scale and counter; the checkpoint must use the same dtype."""
        if state.get("dtype") != self.dtype:
            raise ValueError(f"precision checkpoint was written with dtype {state.get('dtype')!r}, this run uses "
                             f"{self.dtype!r}; resume with the checkpoint's models.*.dtype or start a fresh run")
        self.num_skipped_steps = int(state["num_skipped_steps"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
