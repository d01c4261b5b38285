"""Stage: a preset benchmark's rows, from the Hugging Face cache or a local copy.

Reads the rows of a bench preset (pipeline/presets.py) through ``datasets`` (offline unless the
bench sets ``allow_download``, so only the cache is read) or from ``local_path`` (a JSONL/Parquet
file or dataset directory in the dataset's own schema), maps its columns to example rows with
the preset's field mapping (the converters of ``stages.prepare_data``), applies the prompt
template and writes ``test.jsonl``, ``stats.json`` and ``meta.json``.

    python -m stages.bench_data --config results/.config/eval/math500/data.json \\
        --output data=results/benches/math500/test.jsonl --output stats=results/benches/math500/stats.json \\
        --output meta=results/benches/math500/meta.json
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from pipeline.artifacts import provenance, read_jsonl, repo_path, write_json_atomic, write_jsonl_atomic
from pipeline.stage_cli import run_stage

log = logging.getLogger("r1zero.bench_data")


def read_local_rows(path: Path, split: str) -> list[dict]:
    """Rows of a local copy: a JSONL/JSON or Parquet file, a ``save_to_disk`` directory, or a
    directory ``datasets.load_dataset`` reads (data files in the hub's layout)."""
    if path.is_file():
        if path.suffix in (".jsonl", ".json"):
            return read_jsonl(path)
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path).to_pylist()
        raise ValueError(f"local_path {path}: expected a .jsonl, .json or .parquet file or a dataset directory")
    import datasets

    if (path / "state.json").exists() or (path / "dataset_dict.json").exists():
        loaded = datasets.load_from_disk(str(path))
        table = loaded[split] if isinstance(loaded, datasets.DatasetDict) else loaded
    else:
        table = datasets.load_dataset(str(path), split=split)
    return [dict(row) for row in table]


def read_hub_rows(preset, split: str, revision: str, allow_download: bool) -> list[dict]:
    """Rows through ``datasets``, which honours the HF cache; offline unless the job may download."""
    if not allow_download:
        # Read only what is cached: a missing file fails here instead of reaching for the network.
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import datasets

    table = datasets.load_dataset(preset.hf_id, name=preset.config_name, split=split, revision=revision)
    return [dict(row) for row in table]


def livecodebench_row(raw: dict, where: str, index: int) -> dict:
    """A LiveCodeBench problem with its public stdin/stdout tests (functional tests are skipped)."""
    from stages.prepare_data import SkipRow

    try:
        public = json.loads(raw.get("public_test_cases") or "[]")
    except json.JSONDecodeError as error:
        raise ValueError(f"{where} row {index + 1}: public_test_cases is not JSON ({error.msg})") from None
    cases = [{"input": case["input"], "output": case["output"]} for case in public if case.get("testtype") == "stdin"]
    if not cases:
        raise SkipRow(f"{where} row {index + 1}: no stdin/stdout public test (functional problems are left out)")
    question = raw.get("question_content")
    if not isinstance(question, str) or not question.strip():
        raise ValueError(f"{where} row {index + 1}: field 'question_content' is missing or empty")
    return {"id": f"lcb-{raw.get('question_id', index)}", "source": where, "task": "code",
            "question": question.strip() + "\nRead the input from standard input and write the answer to standard output.",
            "answer": None, "tests": {"kind": "stdio", "cases": cases},
            "meta": {key: raw.get(key) for key in ("platform", "contest_date", "difficulty", "question_title")}}


def convert_rows(raw_rows: list[dict], preset, where: str) -> tuple[list[dict], list[str]]:
    """Example rows of a preset's raw rows, and the reasons for every row skipped."""
    from stages import prepare_data

    source = {"path": preset.hf_id, "task": preset.task, "fields": dict(preset.fields),
              "answer_format": preset.answer_format}
    convert = {"rows": lambda raw, i: prepare_data._map_fields(raw, source, where, i),
               "mbpp": lambda raw, i: prepare_data._mbpp_row(raw, source, where, i),
               "humaneval": lambda raw, i: prepare_data._humaneval_row(raw, source, where, i),
               "livecodebench": lambda raw, i: livecodebench_row(raw, where, i)}
    if preset.row_format not in convert:
        raise ValueError(f"preset {preset.name!r}: rows of format {preset.row_format!r} are a training set, not a bench")
    rows, skipped = [], []
    for index, raw in enumerate(raw_rows):
        try:
            row = convert[preset.row_format](raw, index)
        except prepare_data.SkipRow as reason:
            skipped.append(str(reason))
            continue
        row["id"] = f"{preset.name}-{index}" if row["id"] == f"{Path(where).stem}-{index}" else row["id"]
        rows.append(row)
    return rows, skipped


def main(config: dict, inputs: dict, outputs: dict) -> None:
    started = time.time()
    from pipeline.presets import bench_preset
    from stages import prepare_data

    preset = bench_preset(config["preset"])
    split = config["split"] or preset.split
    revision = config["revision"] or preset.revision
    if config["local_path"]:
        local = repo_path(config["local_path"])
        if not local.exists():
            raise FileNotFoundError(f"bench {config['bench']}: local_path {local} does not exist")
        raw_rows, where = read_local_rows(local, split), str(local)
    else:
        raw_rows, where = read_hub_rows(preset, split, revision, config["allow_download"]), f"{preset.hf_id}[{split}]"
    rows, skipped = convert_rows(raw_rows, preset, where)
    rows, duplicates = prepare_data.deduplicate(rows)
    if not rows:
        raise ValueError(f"bench {config['bench']}: no usable rows in {where} ({len(skipped)} skipped)")
    prepare_data.apply_template(rows, config["prompt"])
    stats = {"bench": config["bench"], "preset": preset.name, "source": where, "revision": revision,
             "num_rows": len(rows), "duplicates_dropped": duplicates, "rows_skipped": skipped}
    meta = provenance(stage="bench_data", config=config, inputs={"local_path": str(repo_path(config["local_path"]))}
                      if config["local_path"] else {}, started_at=started, extra={"preset_citation": preset.citation})
    write_jsonl_atomic(outputs["data"], rows)
    write_json_atomic(outputs["stats"], {**stats, "meta": meta})
    if "meta" in outputs:
        write_json_atomic(outputs["meta"], meta)
    log.info("bench %s (preset %s): %d rows from %s", config["bench"], preset.name, len(rows), where)



if __name__ == "__main__":
    run_stage(main, description=__doc__)
