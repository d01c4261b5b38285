"""Which project files a stage runs: the rule's code inputs and the checkpoint's code identity."""
from __future__ import annotations

import shutil

import pytest

from pipeline.code_deps import REPO_ROOT, code_hash, module_files


def test_grpo_depends_on_what_it_imports_directly_lazily_and_by_name():
    files = module_files("stages.grpo")
    assert "stages/grpo.py" in files
    assert "stages/core/algorithms.py" in files, "imported at the top of the module"
    assert "stages/core/critic.py" in files, "imported inside a function"
    assert "stages/core/rollout_hf.py" in files, "named in the backend registry as 'module:factory'"
    assert "verifiers/math_answer.py" in files, "a lazily loaded reward"
    assert "stages/report.py" not in files, "a stage GRPO never imports"
    assert all(f.split("/")[0] in ("pipeline", "stages", "verifiers") for f in files), "only project code"


def test_unknown_module_is_refused():
    with pytest.raises(ValueError, match="not a module of this project"):
        module_files("numpy")


@pytest.fixture()
def project_copy(tmp_path):
    for package in ("pipeline", "stages", "verifiers"):
        shutil.copytree(REPO_ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def test_an_edit_to_an_imported_module_changes_the_code_hash(project_copy):
    before = code_hash("stages.grpo", project_copy)
    with open(project_copy / "stages/core/algorithms.py", "a") as handle:
        handle.write("\n# an edit\n")
    assert code_hash("stages.grpo", project_copy) != before


def test_an_edit_elsewhere_leaves_the_code_hash_alone(project_copy):
    before = code_hash("stages.grpo", project_copy)
    with open(project_copy / "stages/report.py", "a") as handle:
        handle.write("\n# an edit\n")
    assert code_hash("stages.grpo", project_copy) == before
