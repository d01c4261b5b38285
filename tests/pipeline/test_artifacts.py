"""Atomic artefact writes and provenance records."""
from __future__ import annotations

import os

import pytest

from pipeline.artifacts import atomic_directory, provenance, read_jsonl, write_json_atomic, write_text_atomic


def test_failed_directory_build_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_directory(tmp_path / "model") as tmp:
            (tmp / "weights.bin").write_text("half")
            raise RuntimeError("killed mid-write")
    assert list(tmp_path.iterdir()) == [], "neither the artefact nor its temporary directory is left"


def test_rebuilt_directory_replaces_the_old_one_only_when_complete(tmp_path):
    with atomic_directory(tmp_path / "model") as tmp:
        (tmp / "v").write_text("1")
    with pytest.raises(KeyboardInterrupt):
        with atomic_directory(tmp_path / "model") as tmp:
            (tmp / "v").write_text("2")
            raise KeyboardInterrupt
    assert (tmp_path / "model" / "v").read_text() == "1"
    with atomic_directory(tmp_path / "model") as tmp:
        (tmp / "v").write_text("3")
    assert (tmp_path / "model" / "v").read_text() == "3" and len(list(tmp_path.iterdir())) == 1


def test_files_are_written_whole_and_readable_by_others(tmp_path):
    write_text_atomic(tmp_path / "a.txt", "x")
    write_json_atomic(tmp_path / "b.json", {"k": 1})
    assert oct(os.stat(tmp_path / "a.txt").st_mode & 0o777) == "0o644"
    with atomic_directory(tmp_path / "d"):
        pass
    assert oct(os.stat(tmp_path / "d").st_mode & 0o777) == "0o755"


def test_bad_jsonl_line_is_named(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n{"a": \n')
    with pytest.raises(ValueError, match=r"rows.jsonl:2: not valid JSON"):
        read_jsonl(path)


def test_provenance_records_config_hash_inputs_and_versions(tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text("{}\n")
    meta = provenance(stage="sft", config={"lr": 1e-3}, inputs={"data": str(data)}, started_at=0.0)
    same = provenance(stage="sft", config={"lr": 1e-3}, inputs={"data": str(data)}, started_at=0.0)
    other = provenance(stage="sft", config={"lr": 2e-3}, inputs={"data": str(data)}, started_at=0.0)
    assert meta["config_hash"] == same["config_hash"] != other["config_hash"]
    assert meta["inputs"]["data"][str(data)] and {"torch", "python"} <= set(meta["libraries"])
    assert meta["code_version"] and meta["device"]
