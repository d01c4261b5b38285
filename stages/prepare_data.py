"""Stage: turn a dataset source into train/test splits of example rows, with the prompt applied.

Sources: procedural generators (Countdown, multi-step arithmetic), a Hugging Face dataset id or
local dataset directory (read with ``datasets``, which honours HF_DATASETS_OFFLINE and its
cache), and local JSONL/Parquet files (example rows, or MBPP/HumanEval rows). Prompts are
deduplicated by normalised text, a test split that overlaps train is refused, and ``stats.json``
records counts, duplicates dropped and overlaps.

    python -m stages.prepare_data --config results/.config/data/countdown.json \\
        --output train=results/data/countdown/train.jsonl --output test=results/data/countdown/test.jsonl \\
        --output stats=results/data/countdown/stats.json
"""
from __future__ import annotations

import logging
import re
import time
from pathlib import Path

from pipeline.artifacts import provenance, repo_path, read_jsonl, write_json_atomic, write_jsonl_atomic
from pipeline.stage_cli import run_stage
from stages.core.prompting import read_template
from stages.core import generators

log = logging.getLogger("r1zero.prepare_data")
ROW_FIELDS = ("id", "source", "task", "prompt", "question", "answer", "tests", "meta")


class DataError(ValueError):
    """Input data that cannot become example rows; the message names the file, row and field."""


class SkipRow(Exception):
    """A source row that cannot be used (e.g. a code problem with no checkable test); counted in stats."""


# ---------------------------------------------------------------- sources
def generator_splits(source: dict, splits: dict[str, int], seed: int) -> dict[str, list[dict]]:
    """One stream of distinct problems, cut into splits (test first), so splits never overlap."""
    make = {"countdown": generators.countdown_rows, "arithmetic": generators.arithmetic_rows}[source["name"]]
    try:
        rows = make(sum(splits.values()), seed, **source["options"])
    except (TypeError, ValueError) as error:
        raise DataError(f"source.options: {error}") from None
    out, start = {}, 0
    for split in sorted(splits, key=lambda s: s != "test"):
        out[split] = rows[start:start + splits[split]]
        start += splits[split]
        for number, row in enumerate(out[split]):
            row["id"] = f"{source['name']}-{split}-{number}"
    return out


def hub_splits(source: dict, splits: dict[str, int]) -> dict[str, list[dict]]:
    """Rows from a hub dataset id or a local dataset directory, through ``datasets``."""
    import datasets

    out = {}
    for split, hub_split in source["splits"].items():
        local = Path(source["path"])
        kwargs = {"data_dir": source["name"]} if local.is_dir() and source["name"] and (local / source["name"]).is_dir() \
            else {"name": source["name"]}
        table = datasets.load_dataset(source["path"], split=hub_split, **kwargs)
        rows = [_map_fields(dict(r), source, f"{source['path']}[{hub_split}]", i) for i, r in enumerate(table)]
        out[split] = _cap(rows, splits.get(split, 0))
    return out


def preset_splits(source: dict, splits: dict[str, int]) -> dict[str, list[dict]]:
    """A training-set preset's rows: ``splits.train`` rows first (0: all but the test rows), then
    ``splits.test`` rows carved from the same hub split (TinyZero's train/test cut)."""
    from pipeline.presets import dataset_preset

    preset = dataset_preset(source["name"])
    where = source.get("local_path") or f"{preset.hf_id}[{preset.split}]"
    raw = _preset_raw_rows(preset, source)
    convert = {"rows": _map_fields, "countdown": _countdown_row}[preset.row_format]
    as_source = {"path": preset.hf_id, "task": preset.task, "fields": dict(preset.fields),
                 "answer_format": preset.answer_format}
    num_test = splits.get("test", 0)
    num_train = splits.get("train", 0) or max(0, len(raw) - num_test)
    if num_train + num_test > len(raw):
        raise DataError(f"{where}: {len(raw)} rows, fewer than splits.train + splits.test = {num_train + num_test}")
    rows = [convert(dict(r), as_source, where, i) for i, r in enumerate(raw[:num_train + num_test])]
    return {"train": rows[:num_train], "test": rows[num_train:]}


def _preset_raw_rows(preset, source: dict) -> list[dict]:
    """The preset's raw rows from ``local_path`` (a file or dataset directory) or the HF cache/hub."""
    local = source.get("local_path")
    if local:
        path = repo_path(local)
        if not path.exists():
            raise DataError(f"source.local_path: {path} does not exist (dataset preset {preset.name!r})")
        if path.is_file():
            return read_jsonl(path) if path.suffix in (".jsonl", ".json") else _read_parquet(path)
    import datasets

    target = str(repo_path(local)) if local else preset.hf_id
    kwargs = {} if local else {"name": preset.config_name, "revision": source.get("revision") or preset.revision}
    return list(datasets.load_dataset(target, split=preset.split, **kwargs))


def _countdown_row(raw: dict, source: dict, where: str, index: int) -> dict:
    """A Countdown-Tasks row (``nums``, ``target``) as an example row; any + - * / equation is accepted."""
    numbers, target = raw.get("nums"), raw.get("target")
    if not isinstance(numbers, list) or not numbers or not all(isinstance(n, int) for n in numbers) \
            or not isinstance(target, int):
        raise DataError(f"{where} row {index + 1}: needs 'nums' (a list of integers) and 'target' (an integer), "
                        f"got nums={numbers!r}, target={target!r}")
    ops = generators.COUNTDOWN_OPS
    return {"id": f"{Path(source['path']).name}-{index}", "source": source["path"], "task": "countdown",
            "question": generators.countdown_question(numbers, target, "full", ops), "answer": None, "tests": None,
            "meta": {"numbers": numbers, "target": target, "ordered": False, "ops": ops}}


def files_splits(source: dict, splits: dict[str, int], skipped: dict[str, list[str]]) -> dict[str, list[dict]]:
    out = {}
    convert = {"rows": _map_fields, "mbpp": _mbpp_row, "humaneval": _humaneval_row}[source["row_format"]]
    for split, path in source["splits"].items():
        path = repo_path(path)
        if not path.exists():
            raise DataError(f"source.splits.{split}: file not found: {path}")
        raw = read_jsonl(path) if path.suffix in (".jsonl", ".json") else _read_parquet(path)
        rows = []
        for index, row in enumerate(raw):
            try:
                rows.append(convert(row, source, str(path), index))
            except SkipRow as reason:
                skipped.setdefault(split, []).append(str(reason))
        out[split] = _cap(rows, splits.get(split, 0))
    return out


def _read_parquet(path: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


def _cap(rows: list[dict], limit: int) -> list[dict]:
    return rows[:limit] if limit else rows


GSM8K_ANSWER = re.compile(r"####\s*(.+?)\s*$", re.S)


def _map_fields(raw: dict, source: dict, where: str, index: int) -> dict:
    fields = {"question": "question", "answer": "answer", **source.get("fields", {})}
    question = raw.get(fields["question"], raw.get("prompt"))
    if not isinstance(question, str) or not question.strip():
        raise DataError(f"{where} row {index + 1}: field {fields['question']!r} is missing or empty (a question text is required)")
    answer = raw.get(fields["answer"])
    if answer is not None:
        answer = _gold_answer(str(answer), source.get("answer_format", "plain"), where, index)
    return {
        "id": str(raw.get("id", f"{Path(where).stem}-{index}")),
        "source": raw.get("source", source.get("path", where)),
        "task": raw.get("task", source["task"]),
        "question": question.strip(),
        "answer": answer,
        "tests": raw.get("tests"),
        "meta": raw.get("meta") or {},
    }


def _gold_answer(text: str, answer_format: str, where: str, index: int) -> str:
    if answer_format == "gsm8k":
        match = GSM8K_ANSWER.search(text)
        if not match:
            raise DataError(f"{where} row {index + 1}: answer has no '#### <number>' line (answer_format: gsm8k)")
        return match.group(1).replace(",", "")
    if answer_format == "boxed":
        from verifiers.math_answer import find_boxed

        boxed = find_boxed(text)
        if boxed is None:
            raise DataError(f"{where} row {index + 1}: answer has no \\boxed{{...}} (answer_format: boxed)")
        return boxed
    return text.strip()


def _code_tests(convert, raw: dict, where: str, index: int) -> dict:
    """Checkable tests of a code row; asserts of another shape are dropped, a row with none is skipped."""
    try:
        tests = convert(raw, strict=False)
    except ValueError as error:
        raise DataError(f"{where} row {index + 1}: {error}") from None
    if not tests.get("cases"):
        raise SkipRow(f"{where} row {index + 1}: no test of a checkable shape ({len(tests.get('unsupported', []))} unsupported)")
    return tests


def _mbpp_row(raw: dict, source: dict, where: str, index: int) -> dict:
    from verifiers.code_reward import tests_from_mbpp

    tests = _code_tests(tests_from_mbpp, raw, where, index)
    first_test = raw["test_list"][0] if raw.get("test_list") else ""
    return {"id": f"mbpp-{raw.get('task_id', index)}", "source": where, "task": "code",
            "question": f"{raw['text'].strip()} Your code should pass this test: {first_test}",
            "answer": raw.get("code"), "tests": tests, "meta": {"task_id": raw.get("task_id")}}


def _humaneval_row(raw: dict, source: dict, where: str, index: int) -> dict:
    from verifiers.code_reward import tests_from_humaneval

    tests = _code_tests(tests_from_humaneval, raw, where, index)
    return {"id": str(raw.get("task_id", index)).replace("/", "-"), "source": where, "task": "code",
            "question": f"Complete this Python function:\n{raw['prompt']}",
            "answer": raw.get("canonical_solution"), "tests": tests, "meta": {"entry_point": raw.get("entry_point")}}


# ---------------------------------------------------------------- prompts, dedup, overlap
def normalise_prompt(text: str) -> str:
    """Lower case, whitespace collapsed: the key for duplicates and train/test overlap."""
    return re.sub(r"\s+", " ", text).strip().lower()


def apply_template(rows: list[dict], prompt_cfg: dict) -> None:
    template = read_template(prompt_cfg["template"])
    if "{question}" not in template:
        raise DataError(f"prompt.template {prompt_cfg['template']}: has no {{question}} placeholder")
    ends_with_think = template.rstrip().endswith("<think>")
    for row in rows:
        text = template.replace("{question}", row["question"])
        if prompt_cfg["format"] == "chat":
            messages = ([{"role": "system", "content": prompt_cfg["system"]}] if prompt_cfg.get("system") else [])
            row["prompt"] = messages + [{"role": "user", "content": text}]
        else:
            row["prompt"] = text
        row["meta"] = {**row.get("meta", {}), "prompt_ends_with_think": ends_with_think and prompt_cfg["format"] == "plain"}


def deduplicate(rows: list[dict]) -> tuple[list[dict], int]:
    seen, kept = set(), []
    for row in rows:
        key = normalise_prompt(row["question"])
        if key not in seen:
            seen.add(key)
            kept.append(row)
    return kept, len(rows) - len(kept)


def check_overlap(splits: dict[str, list[dict]]) -> dict[str, int]:
    """Count prompts of every non-train split that also occur in train; refuse any."""
    train = {normalise_prompt(r["question"]) for r in splits.get("train", [])}
    overlaps = {name: sum(normalise_prompt(r["question"]) in train for r in rows)
                for name, rows in splits.items() if name != "train"}
    bad = {name: count for name, count in overlaps.items() if count}
    if bad:
        raise DataError("test split overlaps train: " + ", ".join(f"{n}: {c} prompts" for n, c in bad.items())
                        + "; remove them from the source or use disjoint splits")
    return overlaps


def check_math_golds(splits: dict[str, list[dict]]) -> None:
    """Refuse math rows whose gold is undefined (0/0, 1/0, NaN): such a gold would pay for any
    answer that evaluates to the same undefined value. The message names the rows."""
    from verifiers.math_answer import undefined_golds

    rows = [(split, row) for split, split_rows in splits.items() for row in split_rows
            if row.get("task") == "math" and isinstance(row.get("answer"), str)]
    reasons = undefined_golds([row["answer"] for _, row in rows])
    bad = [f"{split} row id {row['id']!r} (answer {row['answer'][:60]!r}: {reason})"
           for (split, row), reason in zip(rows, reasons) if reason]
    if bad:
        shown = "; ".join(bad[:10]) + (f"; and {len(bad) - 10} more" if len(bad) > 10 else "")
        raise DataError(f"{len(bad)} math rows have an undefined gold answer: {shown}. "
                        "Fix or drop these rows in the source; an undefined gold can never be matched fairly")


def main(config: dict, inputs: dict, outputs: dict) -> None:
    started = time.time()
    source = config["source"]
    skipped: dict[str, list[str]] = {}
    if source["kind"] == "generator":
        splits = generator_splits(source, config["splits"], config["seed"])
    elif source["kind"] == "hf":
        splits = hub_splits(source, config["splits"])
    elif source["kind"] == "preset":
        splits = preset_splits(source, config["splits"])
    else:
        splits = files_splits(source, config["splits"], skipped)
    check_math_golds(splits)
    stats = {"dataset": config["name"], "counts": {}, "duplicates_dropped": {}, "rows_skipped": skipped}
    for name, rows in splits.items():
        splits[name], stats["duplicates_dropped"][name] = deduplicate(rows)
        apply_template(splits[name], config["prompt"])
        stats["counts"][name] = len(splits[name])
    stats["overlaps"] = check_overlap(splits)
    for name, rows in splits.items():
        if name not in outputs or name in ("stats", "meta"):
            raise DataError(f"split {name!r} has no output path (or collides with stats/meta); outputs given: {', '.join(outputs)}")
        write_jsonl_atomic(outputs[name], rows)
    meta = provenance(stage="prepare_data", config=config, inputs=inputs, started_at=started)
    write_json_atomic(outputs["stats"], {**stats, "meta": meta})
    if "meta" in outputs:
        write_json_atomic(outputs["meta"], meta)
    log.info("dataset %s: %s", config["name"], stats["counts"])


if __name__ == "__main__":
    run_stage(main, description=__doc__)
