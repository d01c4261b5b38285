"""The rules' conda env (used with --software-deployment-method conda) pins what pyproject pins."""
from __future__ import annotations

import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def test_conda_env_pip_list_equals_pyproject_dependencies():
    env = yaml.safe_load((REPO / "pipeline" / "envs" / "r1zero.yaml").read_text())
    pip = next(item["pip"] for item in env["dependencies"] if isinstance(item, dict))
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert pip == dependencies, "regenerate pipeline/envs/r1zero.yaml from pyproject.toml's dependencies"
    assert "python=3.11" in env["dependencies"]
