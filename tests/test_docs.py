"""The README stays true: its quick start is what CI runs, and every piece is documented."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from protection_rules.cli import cli
from protection_rules.protections import REGISTRY

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def quick_start_commands() -> list[str]:
    section = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if line and not line.startswith("#")]


def test_quick_start_is_two_commands_and_ci_runs_both_verbatim():
    commands = quick_start_commands()
    assert len(commands) == 2
    ci = (ROOT / ".ci" / "run").read_text()
    for command in commands:
        assert command in ci
    assert "protect evaluate examples/" in commands[0] and "pytest" in commands[1]


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_protection_has_a_readme_section(name):
    assert f"### {name}\n" in README


def walk(group: click.Group, prefix: tuple[str, ...] = ()):
    for name, command in group.commands.items():
        path = prefix + (name,)
        if isinstance(command, click.Group):
            yield from walk(command, path)
        else:
            yield path


@pytest.mark.parametrize("path", list(walk(cli)), ids=" ".join)
def test_every_command_has_help_with_an_example(path):
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0
    assert "Example:" in result.output
    assert f"protect {' '.join(path)}" in result.output.split("Example:", 1)[1]
