"""The docs stay true: the README's quick start is what CI runs, every piece is documented, the
docs point only at files in this repository, and docs/semantics.md and docs/durable-rules.md keep
in step with the default policy and the tests they name."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest
import yaml
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


# ------------------------------------------------------------------ docs/ and what they point at

DOCS = sorted((ROOT / "docs").glob("*.md"))
SEMANTICS = (ROOT / "docs" / "semantics.md").read_text()
DURABLE = (ROOT / "docs" / "durable-rules.md").read_text()
# Places a newcomer reads: none may send them to a file a clone of the repository does not have.
POINTERS = ("../shared", "shared/", "SPEC.md", "notes/durable-rules")


def repository_texts() -> list[Path]:
    files = [ROOT / "README.md", *DOCS, *sorted((ROOT / "schemas").glob("*.json"))]
    for folder in ("protection_rules", "benchmarks", "tests"):
        files += [p for p in sorted((ROOT / folder).rglob("*")) if p.suffix in (".py", ".md", ".yaml", ".json")]
    # this file names the pointers it forbids
    return [p for p in files if p != Path(__file__).resolve() and "__pycache__" not in p.parts]


def test_nothing_points_at_files_outside_the_repository():
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in repository_texts()
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if any(pointer in line for pointer in POINTERS)
    ]
    assert len(repository_texts()) > 50  # the walk found the package, the tests and the docs
    assert found == []


def markdown_links(text: str) -> list[str]:
    return re.findall(r"\[[^\]\n]*\]\(([^)\s]+)\)", text)


def github_anchor(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    return {github_anchor(h) for h in re.findall(r"^#+ (.+)$", markdown, re.M)}


def case_names(path: Path) -> set[str]:
    return {case["name"] for case in yaml.safe_load(path.read_text())["cases"]}


def link_problem(document: Path, link: str) -> str | None:
    """Why a relative link does not lead to a file (and anchor or case) in the repository."""
    target, _, fragment = link.partition("#")
    path = (document.parent / target).resolve() if target else document
    if not path.is_relative_to(ROOT) or not path.exists():
        return "no such file in the repository"
    if fragment and path.suffix == ".md" and fragment not in anchors(path.read_text()):
        return f"no heading `{fragment}`"
    if fragment and path.suffix == ".yaml" and fragment not in case_names(path):
        return f"no case `{fragment}`"
    return None


RELATIVE_LINKS = [
    (document, link)
    for document in (ROOT / "README.md", *DOCS)
    for link in markdown_links(document.read_text())
    if not re.match(r"[a-z]+:", link)
]


def test_the_docs_link_to_many_places():
    # guards the link table below against a regex that silently finds nothing
    assert len(RELATIVE_LINKS) > 40
    from_readme = {link for document, link in RELATIVE_LINKS if document.name == "README.md"}
    assert {"docs/semantics.md", "docs/durable-rules.md"} <= from_readme


@pytest.mark.parametrize(("document", "link"), RELATIVE_LINKS, ids=lambda v: v.name if isinstance(v, Path) else v)
def test_every_relative_link_resolves_in_the_repository(document, link):
    assert link_problem(document, link) is None, f"{document.relative_to(ROOT)}: `{link}`: {link_problem(document, link)}"


@pytest.mark.parametrize(
    ("link", "problem"),
    [
        ("../shared/SPEC.md", "no such file in the repository"),
        ("semantics.md#2-time", None),
        ("semantics.md#9-nothing", "no heading `9-nothing`"),
        ("../tests/cases/holding_period.yaml#days_held_is_floored", None),
        ("../tests/cases/holding_period.yaml#no_such_case", "no case `no_such_case`"),
        ("../README.md", None),
    ],
)
def test_link_checker_tells_good_links_from_bad(link, problem):
    assert link_problem(ROOT / "docs" / "durable-rules.md", link) == problem


def section(markdown: str, heading: str) -> str:
    """The text under `heading` up to the next heading of the same or a higher level."""
    level = heading.split(" ", 1)[0]
    body = markdown.split(f"\n{heading}\n", 1)[1]
    end = re.search(rf"^#{{1,{len(level)}}} ", body, re.M)
    return body[: end.start()] if end else body


def defaults_as_written(block: dict, prefix: str = "") -> set[tuple[str, str]]:
    """A policy block as `name: value` pairs in YAML flow style; nested mappings get dotted names."""

    def flow(value) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, list):
            return "[" + ", ".join(flow(v) for v in value) + "]"
        return str(value)

    pairs = set()
    for key, value in block.items():
        if isinstance(value, dict):
            pairs |= defaults_as_written(value, f"{prefix}{key}.")
        else:
            pairs.add((f"{prefix}{key}", flow(value)))
    return pairs


DEFAULT_POLICY = yaml.safe_load((ROOT / "policies" / "default.yaml").read_text())


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_semantics_has_a_section_for_every_protection(name):
    assert f"\n### {name}\n" in SEMANTICS
    assert name in DEFAULT_POLICY["protections"]


@pytest.mark.parametrize("name", sorted(DEFAULT_POLICY["protections"]))
def test_semantics_states_every_default_parameter_and_no_other(name):
    """Each protection's table lists `name: value` exactly as policies/default.yaml sets it."""
    rows = set(re.findall(r"^\| `([a-z_.]+): ([^`]*)` \|", section(SEMANTICS, f"### {name}"), re.M))
    assert rows == defaults_as_written(DEFAULT_POLICY["protections"][name])


def test_defaults_are_written_as_the_tables_write_them():
    block = {
        "enabled": True,
        "blocks": ["close"],
        "days": 5,
        "score_threshold": 0.6,
        "bypass": {"normal": [], "high": ["a", "b"]},
    }
    assert defaults_as_written(block) == {
        ("enabled", "true"),
        ("blocks", "[close]"),
        ("days", "5"),
        ("score_threshold", "0.6"),
        ("bypass.normal", "[]"),
        ("bypass.high", "[a, b]"),
    }


TEST_NAME = re.compile(r"tests/(test_\w+\.py)::(test_\w+)")
NAMED_TESTS = sorted({m for document in DOCS for m in TEST_NAME.findall(document.read_text())})


@pytest.mark.parametrize(("file", "name"), [pytest.param(f, n, id=f"{f}::{n}") for f, n in NAMED_TESTS])
def test_every_test_the_docs_name_exists(file, name):
    assert re.search(rf"^def {name}\(", (ROOT / "tests" / file).read_text(), re.M)


def test_every_durable_rules_trap_names_the_tests_that_pin_it():
    traps = re.findall(r"^### (.+)$", section(DURABLE, "## 2. The traps"), re.M)
    assert len(traps) >= 10
    for trap in traps:
        assert TEST_NAME.findall(section(DURABLE, f"### {trap}")), f"`{trap}` names no test"
    network_tests = {name for file, name in TEST_NAME.findall(DURABLE) if file == "test_network.py"}
    assert len(network_tests) >= 15


def test_semantics_sections_named_elsewhere_exist():
    numbers = set(re.findall(r"^## (\d+)\. ", SEMANTICS, re.M))
    cited = {
        (str(path.relative_to(ROOT)), number)
        for path in repository_texts()
        for mention in re.findall(r"semantics(?:\.md)? sections? ([\d, and-]+)", path.read_text())
        for number in re.findall(r"\d+", mention)
    }
    assert len(cited) > 20
    assert {(path, number) for path, number in cited if number not in numbers} == set()
