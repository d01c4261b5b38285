"""The shared command line of every stage module.

``python -m stages.grpo --config CFG.json --input model=DIR --input train=FILE --output model=DIR``
calls ``stages.grpo.main(config, inputs, outputs)``. Repeating ``--input name=...`` gives a
list. Rules call stages only through this command line, so every stage also runs by hand.

Example:
    >>> parse_pairs(["a=1", "b=2", "b=3"], "--input")
    {'a': '1', 'b': ['2', '3']}
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Callable

StageMain = Callable[[dict, dict, dict], None]


def parse_pairs(pairs: list[str], flag: str) -> dict[str, str | list[str]]:
    out: dict[str, str | list[str]] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise SystemExit(f"{flag} {pair!r}: expected NAME=PATH")
        if name in out:
            previous = out[name]
            out[name] = (previous if isinstance(previous, list) else [previous]) + [value]
        else:
            out[name] = value
    return out


def run_stage(main: StageMain, argv: list[str] | None = None, *, description: str = "") -> None:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", required=True, help="JSON config snapshot for this stage")
    parser.add_argument("--input", action="append", default=[], help="NAME=PATH (repeatable)")
    parser.add_argument("--output", action="append", default=[], help="NAME=PATH (repeatable)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (Snakemake threads)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    with open(args.config) as handle:
        config = json.load(handle)
    if args.threads:
        # Read by stages before torch spins up its pool; oversubscribed threads on a busy
        # two-core machine made a step five times slower in our measurements.
        os.environ["R1ZERO_THREADS"] = str(args.threads)
        config.setdefault("_runtime", {})["threads"] = args.threads
    main(config, parse_pairs(args.input, "--input"), parse_pairs(args.output, "--output"))
