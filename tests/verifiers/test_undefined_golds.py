"""Undefined gold answers (0/0, 1/0, oo - oo, NaN) are found, and prepare_data refuses them by row id."""

from __future__ import annotations

import json

import pytest

from stages.prepare_data import DataError, main as prepare_main
from verifiers.math_answer import undefined_golds

CASES = [
    ("plain-number", "4", False),
    ("latex-zero-over-zero", r"\frac{0}{0}", True),
    ("plain-zero-over-zero", "0/0", True),
    ("one-over-zero", "1/0", True),
    ("infinity-minus-infinity", r"\infty - \infty", True),
    ("nan-text", "NaN", True),
    ("boxed-zero-over-zero", r"so \boxed{0/0}", True),
    ("zero-over-one-is-defined", r"\frac{0}{1}", False),
    ("infinity-is-defined", r"\infty", False),
    ("a-word-is-a-gold", "Monday", False),
    ("interval", "(0, 1]", False),
]


@pytest.mark.parametrize("gold,undefined", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_undefined_golds_are_named(gold, undefined):
    reason = undefined_golds([gold])[0]
    assert (reason is not None) == undefined, reason
    if undefined:
        assert "undefined value" in reason


def _prepare(tmp_path, rows):
    source = tmp_path / "source.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    config = {"name": "ds", "seed": 0, "splits": {"train": 0},
              "source": {"kind": "files", "splits": {"train": str(source)}, "task": "math", "row_format": "rows",
                         "fields": {}},
              "prompt": {"template": "data/prompts/r1zero.txt", "format": "plain", "system": None}}
    outputs = {"train": str(tmp_path / "train.jsonl"), "stats": str(tmp_path / "stats.json")}
    prepare_main(config, {}, outputs)
    return outputs


def test_prepare_data_refuses_an_undefined_gold_and_names_the_row(tmp_path):
    rows = [{"id": "fine-1", "question": "1+1?", "answer": "2"},
            {"id": "broken-7", "question": "0 over 0?", "answer": r"\frac{0}{0}"},
            {"id": "fine-2", "question": "Day after Sunday?", "answer": "Monday"}]
    with pytest.raises(DataError, match=r"1 math rows have an undefined gold answer: train row id 'broken-7'"):
        _prepare(tmp_path, rows)
    assert not (tmp_path / "train.jsonl").exists(), "nothing written"


def test_prepare_data_keeps_defined_golds(tmp_path):
    outputs = _prepare(tmp_path, [{"id": "a", "question": "half?", "answer": r"\frac{1}{2}"},
                                  {"id": "b", "question": "day?", "answer": "Monday"}])
    assert [json.loads(line)["id"] for line in open(outputs["train"])] == ["a", "b"]
