"""Write one stage's config snapshot: the command of the ``config_snapshot`` rule.

A shell job, not a ``run:`` block: Snakemake 9 runs each ``run:`` job in a new Snakemake process
that parses the whole workflow again (about 15 s per snapshot here, eight of them before the
first stage of the default), while this starts in under a second.

    python -m pipeline.snapshot_cli results/.config/report.json '{"formats": ["md"]}'
"""
from __future__ import annotations

import sys

from pipeline.config import write_snapshot


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        raise SystemExit("usage: python -m pipeline.snapshot_cli PATH TEXT")
    path, text = args
    changed = write_snapshot(path, text)
    print(f"{path}: {'written' if changed else 'unchanged'}")


if __name__ == "__main__":
    main()
