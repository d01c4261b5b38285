"""prepare_data: every source kind, templates, dedup, overlap refusal, errors that name the row."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from stages.prepare_data import DataError, main

REPO = Path(__file__).resolve().parents[2]


def run(tmp_path, source, splits, prompt=None, name="ds"):
    config = {"name": name, "source": source, "splits": splits, "seed": 0,
              "prompt": prompt or {"template": "data/prompts/r1zero.txt", "format": "plain", "system": None}}
    outputs = {split: str(tmp_path / f"{split}.jsonl") for split in splits}
    outputs["stats"] = str(tmp_path / "stats.json")
    main(config, {}, outputs)
    rows = {split: [json.loads(line) for line in open(outputs[split])] for split in splits}
    return rows, json.loads(open(outputs["stats"]).read())


def test_countdown_generator_splits_are_disjoint_and_templated(tmp_path):
    rows, stats = run(tmp_path, {"kind": "generator", "name": "countdown", "options": {"question_style": "compact"}},
                      {"train": 50, "test": 10})
    assert stats["counts"] == {"train": 50, "test": 10} and stats["overlaps"] == {"test": 0}
    train_keys = {(tuple(sorted(r["meta"]["numbers"])), r["meta"]["target"]) for r in rows["train"]}
    assert not train_keys & {(tuple(sorted(r["meta"]["numbers"])), r["meta"]["target"]) for r in rows["test"]}
    row = rows["test"][0]
    assert row["prompt"].startswith("A conversation between User and Assistant") and row["prompt"].endswith("<think>")
    assert row["question"] in row["prompt"] and row["meta"]["prompt_ends_with_think"] is True
    assert {"id", "source", "task", "prompt", "question", "answer", "meta"} <= set(row)


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_local_files_dedup_by_normalised_prompt_and_refuse_overlap(tmp_path):
    train = _write_jsonl(tmp_path / "src_train.jsonl", [
        {"question": "What is 1+1?", "answer": "2"}, {"question": "what  is 1+1?", "answer": "2"},
        {"question": "What is 2+2?", "answer": "4"}])
    test = _write_jsonl(tmp_path / "src_test.jsonl", [{"question": "What is 3+3?", "answer": "6"}])
    rows, stats = run(tmp_path, {"kind": "files", "splits": {"train": train, "test": test}, "task": "math",
                                 "row_format": "rows", "fields": {}}, {"train": 0, "test": 0})
    assert stats["duplicates_dropped"] == {"train": 1, "test": 0} and len(rows["train"]) == 2
    overlapping = _write_jsonl(tmp_path / "bad_test.jsonl", [{"question": "WHAT IS 2+2?", "answer": "4"}])
    with pytest.raises(DataError, match="test split overlaps train: test: 1 prompts"):
        run(tmp_path / "x", {"kind": "files", "splits": {"train": train, "test": overlapping}, "task": "math",
                             "row_format": "rows", "fields": {}}, {"train": 0, "test": 0})


def test_bad_row_names_file_row_and_field(tmp_path):
    train = _write_jsonl(tmp_path / "t.jsonl", [{"question": "ok?", "answer": "1"}, {"answer": "2"}])
    with pytest.raises(DataError, match=r"t.jsonl row 2: field 'question' is missing"):
        run(tmp_path, {"kind": "files", "splits": {"train": train}, "task": "math", "row_format": "rows", "fields": {}},
            {"train": 0})
    assert not (tmp_path / "train.jsonl").exists(), "nothing half-written"


def test_hub_dataset_format_from_a_local_directory(tmp_path):
    """openai/gsm8k's layout (main/train-*.parquet, answers ending in '#### n'), read through datasets."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    for split, items in {"train": [("Tom has 3 apples and buys 4. How many?", "3+4=7\n#### 7"),
                                   ("A pen costs 2. Cost of 1,000 pens?", "2*1000=2000\n#### 2,000")],
                         "test": [("Sam reads 5 pages a day for 3 days. Pages?", "5*3=15\n#### 15")]}.items():
        directory = tmp_path / "gsm8k" / "main"
        directory.mkdir(parents=True, exist_ok=True)
        table = pa.table({"question": [q for q, _ in items], "answer": [a for _, a in items]})
        pq.write_table(table, directory / f"{split}-00000-of-00001.parquet")
    rows, stats = run(tmp_path / "out", {"kind": "hf", "path": str(tmp_path / "gsm8k"), "name": "main",
                                         "splits": {"train": "train", "test": "test"}, "task": "math",
                                         "fields": {}, "answer_format": "gsm8k"}, {"train": 0, "test": 0})
    assert [r["answer"] for r in rows["train"]] == ["7", "2000"] and rows["test"][0]["answer"] == "15"
    assert rows["train"][0]["task"] == "math"


@pytest.mark.parametrize("row_format,fixture", [("mbpp", "mbpp_sample.jsonl"), ("humaneval", "humaneval_sample.jsonl")])
def test_code_problem_formats_become_rows_with_tests(row_format, fixture, tmp_path):
    path = str(REPO / "data" / "fixtures" / "code" / fixture)
    rows, stats = run(tmp_path, {"kind": "files", "splits": {"train": path}, "task": "code", "row_format": row_format,
                                 "fields": {}}, {"train": 0})
    assert rows["train"] and all(r["task"] == "code" and r["tests"]["cases"] for r in rows["train"])
    source_rows = sum(1 for _ in open(path))
    assert len(rows["train"]) + len(stats["rows_skipped"].get("train", [])) == source_rows, "every row kept or counted"


def test_chat_format_keeps_messages_for_the_tokenizer_template(tmp_path):
    rows, _ = run(tmp_path, {"kind": "generator", "name": "arithmetic", "options": {}}, {"train": 3, "test": 2},
                  prompt={"template": "data/prompts/r1zero_compact.txt", "format": "chat", "system": "Be brief."})
    messages = rows["train"][0]["prompt"]
    assert [m["role"] for m in messages] == ["system", "user"] and rows["train"][0]["question"] in messages[1]["content"]
