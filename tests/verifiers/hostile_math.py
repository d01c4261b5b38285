"""The hostile math completions of ``data/fixtures/math_hostile/`` (format: its README.md)."""

from __future__ import annotations

import json
from pathlib import Path

HOSTILE_FIXTURE = Path(__file__).resolve().parents[2] / "data" / "fixtures" / "math_hostile" / "hostile_completions.jsonl"


def completion_of(record: dict) -> str:
    """The completion a record describes: ``text``, or ``unit`` * ``times`` + ``suffix``."""
    if "text" in record:
        return record["text"]
    return record["unit"] * int(record["times"]) + record.get("suffix", "")


def load_hostile_cases(path: Path = HOSTILE_FIXTURE) -> list[dict]:
    """Every record with its completion expanded (``completion``)."""
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [{**record, "completion": completion_of(record)} for record in records]
