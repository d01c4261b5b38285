"""The README keeps its promises: two set-up commands, CI runs the test one, the preset table is current."""
from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()


def setup_commands() -> list[str]:
    section = README.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", section, re.S)]


def test_exactly_two_setup_commands_main_job_and_tests():
    commands = setup_commands()
    assert len(commands) == 2, commands
    assert "pip install" in commands[0] and "snakemake" in commands[0]
    assert "pip install" in commands[1] and "pytest" in commands[1]


def test_ci_runs_the_readme_test_command():
    assert setup_commands()[1] in (REPO / ".ci" / "run").read_text()


def test_readme_preset_table_matches_the_presets():
    from pipeline.algorithm_config import presets_markdown_table

    assert presets_markdown_table() in README, "regenerate the table: python -c 'from pipeline.algorithm_config import presets_markdown_table as t; print(t())'"
