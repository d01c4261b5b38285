"""Which project source files a stage runs, found statically, and a hash of them.

Two things depend on "the code of a stage": Snakemake must rerun a stage when any module it
imports from the project changes (not only its own file), and a checkpoint may be resumed only
by the same code that wrote it (a resume after a code edit would silently mix two programs).
Both use ``module_files``: the stage module plus every project module it imports, transitively,
including imports inside functions (the lazy ones). Only the project's own packages count;
third-party code is covered by the library versions in provenance.

Example:
    >>> files = module_files("stages.grpo")
    >>> "stages/core/algorithms.py" in files and "pipeline/artifacts.py" in files
    True
"""
from __future__ import annotations

import ast
import functools
import hashlib
import re
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PROJECT_PACKAGES = ("pipeline", "stages", "verifiers")
LAZY_MODULE = re.compile(r"^(?:pipeline|stages|verifiers)(?:\.\w+)+(?::\w+)?$")


def _module_path(module: str, root: Path) -> Path | None:
    """``stages.core.algorithms`` -> its file (a module or a package's ``__init__.py``), or None."""
    if module.split(".")[0] not in PROJECT_PACKAGES:
        return None
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported_names(path: Path, module: str) -> set[str]:
    """Every absolute module name an ``import`` in ``path`` may refer to (anywhere in the file)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and LAZY_MODULE.match(node.value):
            # Lazily imported by name ("stages.core.rollout_hf:HFBackend" in a registry).
            names.add(node.value.partition(":")[0])
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: climb from this module's package
                parts = package.split(".")
                prefix = ".".join(parts[:len(parts) - node.level + 1])
                source = f"{prefix}.{node.module}" if node.module else prefix
            else:
                source = node.module or ""
            names.add(source)
            # ``from stages.core import algorithms`` imports a module, not a name.
            names.update(f"{source}.{alias.name}" for alias in node.names)
    return names


@functools.lru_cache(maxsize=None)
def _module_files_cached(module: str, root: str) -> tuple[str, ...]:
    root_path = Path(root)
    seen: dict[str, Path] = {}
    pending = [module]
    while pending:
        name = pending.pop()
        path = _module_path(name, root_path)
        if path is None or name in seen:
            continue
        seen[name] = path
        # A module's parent packages run their __init__ first.
        parents = [".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)]
        pending += parents + sorted(_imported_names(path, name))
    return tuple(sorted({str(p.relative_to(root_path)) for p in seen.values()}))


def module_files(module: str, root: str | Path = REPO_ROOT) -> list[str]:
    """Project files (relative to ``root``) that ``module`` imports, itself included, sorted."""
    files = _module_files_cached(module, str(Path(root).resolve()))
    if not files:
        raise ValueError(f"{module!r} is not a module of this project ({', '.join(PROJECT_PACKAGES)}) under {root}")
    return list(files)


def code_hash(module: str, root: str | Path = REPO_ROOT) -> str:
    """A hash of the source of ``module`` and of every project module it imports.

    Read fresh each call (not cached), so an edit made while a workflow runs is seen.
    """
    digest = hashlib.sha256()
    for relative in module_files(module, root):
        digest.update(relative.encode() + b"\0" + (Path(root) / relative).read_bytes() + b"\0")
    return digest.hexdigest()[:16]
