"""Reward functions: pure, deterministic, bounded in time, never raising; no torch.

Importing the package is cheap. The registry names are loaded on first access:

>>> import verifiers
>>> sorted(verifiers.REWARDS)[:2]
['countdown', 'format_lenient']
"""

from __future__ import annotations

import importlib

# Names served from verifiers.registry on first use (PEP 562), so `import verifiers.countdown`
# does not load the registry and, through it, the lazy proxies for heavier verifiers.
_FROM_REGISTRY = (
    "REWARDS",
    "REWARD_RANGES",
    "REWARD_DESCRIPTIONS",
    "resolve_weights",
    "score",
    "score_batch",
    "safe_reward",
    "reward_error_counts",
)

__all__ = list(_FROM_REGISTRY)


def __getattr__(name: str):
    if name in _FROM_REGISTRY:
        return getattr(importlib.import_module("verifiers.registry"), name)
    raise AttributeError(f"module 'verifiers' has no attribute {name!r}")
