"""`protect diff OLD NEW` without a corpus: the static difference, `git:REV:PATH` sources, and
`protect validate --require-bump-from REV`.

Each case edits the text of `policies/default.yaml` (every `old` snippet occurs exactly once);
the expected lines are written from the edit by hand.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner

from protection_rules.cli import cli
from protection_rules.errors import UsageError
from protection_rules.policy_diff import diff_policies
from protection_rules.policy_source import PolicySource, read_policy_source
from protection_rules.resources import schema

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = (ROOT / "policies" / "default.yaml").read_text(encoding="utf-8")


def edited(*edits: tuple[str, str]) -> str:
    text = DEFAULT
    for old, new in edits:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    return text


def run(*args: str, cwd: Path | None = None):
    if cwd is None:
        return CliRunner().invoke(cli, list(args), catch_exceptions=False)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(cwd)
        return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def changes(new_text: str) -> list[str]:
    old = PolicySource("old.yaml", DEFAULT).load()
    new = PolicySource("new.yaml", new_text).load()
    return [str(change) for change in diff_policies(old, new).changes]


@pytest.mark.parametrize(
    ("edits", "expected"),
    [
        ([("score_threshold: 0.6", "score_threshold: 0.7")], ["protections.grace_period.score_threshold: 0.6 -> 0.7"]),
        ([("min_days: 3", "min_days: 5")], ["protections.holding_period.min_days: 3 -> 5"]),
        (
            [("min_days: 3", "min_days: 5"), ("max_cycles: 1", "max_cycles: 2")],
            ["protections.holding_period.min_days: 3 -> 5", "protections.whipsaw_protection.max_cycles: 1 -> 2"],
        ),
        ([("version: 1.0.0", "version: 1.1.0")], ['metadata.version: "1.0.0" -> "1.1.0"']),
        (
            [("  whipsaw_protection:\n    enabled: true", "  whipsaw_protection:\n    enabled: false")],
            ["protections.whipsaw_protection.enabled: true -> false"],
        ),
        (
            [("  - grace_period\n  - holding_period\n", "  - holding_period\n  - grace_period\n")],
            [
                'hierarchy: ["core_asset_immunity", "regime_override", "grace_period", "holding_period", "whipsaw_protection"]'
                ' -> ["core_asset_immunity", "regime_override", "holding_period", "grace_period", "whipsaw_protection"]'
            ],
        ),
        (
            [("high: [grace_period, holding_period]", "high: [grace_period]")],
            ['protections.regime_override.bypass.high: ["grace_period", "holding_period"] -> ["grace_period"]'],
        ),
        (
            [("blocks: [close]\n    days: 5", "blocks: [close, decrease]\n    days: 5")],
            ['protections.grace_period.blocks: ["close"] -> ["close", "decrease"]'],
        ),
        (
            # whipsaw_protection leaves the hierarchy and the policy
            [
                ("  - whipsaw_protection\n", ""),
                (
                    "\n  whipsaw_protection:\n    enabled: true\n    blocks: [open]\n    max_cycles: 1\n    period_days: 14\n",
                    "\n",
                ),
                ("critical: [grace_period, holding_period, whipsaw_protection]", "critical: [grace_period, holding_period]"),
            ],
            [
                'hierarchy: ["core_asset_immunity", "regime_override", "grace_period", "holding_period", "whipsaw_protection"]'
                ' -> ["core_asset_immunity", "regime_override", "grace_period", "holding_period"]',
                'protections.regime_override.bypass.critical: ["grace_period", "holding_period", "whipsaw_protection"]'
                ' -> ["grace_period", "holding_period"]',
                "protections.whipsaw_protection: protection removed",
            ],
        ),
        # comments and layout are not content
        ([("# Priority is position", "# Priority: position"), ("blocks: [open]", "blocks:\n      - open")], []),
    ],
)
def test_static_diff_names_every_change(edits, expected):
    assert changes(edited(*edits)) == expected


@pytest.mark.parametrize(
    ("edits", "kinds"),
    [
        ([("  whipsaw_protection:\n    enabled: true", "  whipsaw_protection:\n    enabled: false")], ["disabled"]),
        ([("high: [grace_period, holding_period]", "high: []")], ["bypass"]),
        ([("min_days: 3", "min_days: 4")], ["parameter"]),
        ([("owner: risk-team", "owner: ops")], ["metadata"]),
    ],
)
def test_changes_carry_their_kind(edits, kinds):
    old = PolicySource("old.yaml", DEFAULT).load()
    new = PolicySource("new.yaml", edited(*edits)).load()
    assert [change.kind for change in diff_policies(old, new).changes] == kinds


def test_enabling_and_adding_are_told_apart():
    without = edited(
        ("  - whipsaw_protection\n", ""),
        ("\n  whipsaw_protection:\n    enabled: true\n    blocks: [open]\n    max_cycles: 1\n    period_days: 14\n", "\n"),
        ("critical: [grace_period, holding_period, whipsaw_protection]", "critical: [grace_period, holding_period]"),
    )
    disabled = edited(("  whipsaw_protection:\n    enabled: true", "  whipsaw_protection:\n    enabled: false"))
    added = diff_policies(PolicySource("a", without).load(), PolicySource("b", disabled).load())
    assert [(c.kind, c.path) for c in added.changes if c.protection == "whipsaw_protection"] == [
        ("added", "protections.whipsaw_protection")
    ]
    enabled = diff_policies(PolicySource("a", disabled).load(), PolicySource("b", DEFAULT).load())
    assert [(c.kind, c.path) for c in enabled.changes] == [("enabled", "protections.whipsaw_protection.enabled")]


@pytest.mark.parametrize(
    ("edits", "not_bumped"),
    [
        ([("min_days: 3", "min_days: 5")], True),
        ([("min_days: 3", "min_days: 5"), ("version: 1.0.0", "version: 1.0.1")], False),
        ([("# Priority is position", "# Priority: position")], False),  # a comment is not content
    ],
)
def test_a_content_change_without_a_version_bump_is_reported(tmp_path, edits, not_bumped):
    (tmp_path / "new.yaml").write_text(edited(*edits))
    result = run("diff", str(ROOT / "policies" / "default.yaml"), str(tmp_path / "new.yaml"), "--format", "json")
    assert result.exit_code == 0
    report = json.loads(result.output)
    assert report["version_not_bumped"] is not_bumped
    assert (
        "metadata.version` is still" in run("diff", str(ROOT / "policies" / "default.yaml"), str(tmp_path / "new.yaml")).output
    ) is not_bumped


def test_static_report_validates_against_the_diff_report_schema(tmp_path):
    (tmp_path / "new.yaml").write_text(edited(("min_days: 3", "min_days: 5"), ("version: 1.0.0", "version: 1.1.0")))
    result = run("diff", str(ROOT / "policies" / "default.yaml"), str(tmp_path / "new.yaml"), "--format", "json")
    report = json.loads(result.output)
    jsonschema.validate(report, schema("diff-report"))
    assert report["impact"] is None and report["failed"] is False
    assert [c["text"] for c in report["changes"]] == [
        'metadata.version: "1.0.0" -> "1.1.0"',
        "protections.holding_period.min_days: 3 -> 5",
    ]
    assert report["changes"][1] == {
        "kind": "parameter",
        "path": "protections.holding_period.min_days",
        "protection": "holding_period",
        "text": "protections.holding_period.min_days: 3 -> 5",
        "old": 3,
        "new": 5,
    }


def test_text_report_lists_the_changes(tmp_path):
    (tmp_path / "new.yaml").write_text(edited(("score_threshold: 0.6", "score_threshold: 0.7")))
    result = run("diff", str(ROOT / "policies" / "default.yaml"), str(tmp_path / "new.yaml"))
    assert result.exit_code == 0
    assert "  protections.grace_period.score_threshold: 0.6 -> 0.7\n" in result.output


def test_an_invalid_policy_is_exit_3_naming_it(tmp_path):
    (tmp_path / "new.yaml").write_text(edited(("min_days: 3", "min_days: -1")))
    result = run("diff", str(ROOT / "policies" / "default.yaml"), str(tmp_path / "new.yaml"))
    assert result.exit_code == 3
    assert f"{tmp_path / 'new.yaml'}:" in result.output and "$.protections.holding_period.min_days" in result.output


def test_a_missing_policy_file_is_exit_2(tmp_path):
    result = run("diff", str(ROOT / "policies" / "default.yaml"), str(tmp_path / "nope.yaml"))
    assert result.exit_code == 2
    assert "nope.yaml: no such file" in result.output


# ------------------------------------------------------------------------------------------ git


def git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false", *args],
        cwd=repo,
        check=True,
        capture_output=True,
    )


@pytest.fixture
def repo(tmp_path):
    """A repository whose first commit has the default policy, the second min_days 5 (same version)."""
    root = tmp_path / "repo"
    (root / "policies").mkdir(parents=True)
    git(root, "init", "-q")
    (root / "policies" / "p.yaml").write_text(DEFAULT)
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "first")
    (root / "policies" / "p.yaml").write_text(edited(("min_days: 3", "min_days: 5")))
    git(root, "commit", "-q", "-am", "second")
    return root


def test_git_sources_are_read_without_a_checkout(repo):
    result = run("diff", "git:HEAD~1:policies/p.yaml", "git:HEAD:policies/p.yaml", cwd=repo)
    assert result.exit_code == 0
    assert result.output.startswith("policy diff: git:HEAD~1:policies/p.yaml (default 1.0.0, sha256 ")
    assert "  protections.holding_period.min_days: 3 -> 5\n" in result.output
    # nothing was checked out: the working tree still holds the second commit
    assert "min_days: 5" in (repo / "policies" / "p.yaml").read_text()


def test_a_git_source_is_validated_like_a_file_and_named_as_given(repo):
    (repo / "policies" / "p.yaml").write_text(edited(("min_days: 3", "min_days: -1")))
    git(repo, "commit", "-q", "-am", "broken")
    result = run("diff", "git:HEAD~1:policies/p.yaml", "git:HEAD:policies/p.yaml", cwd=repo)
    assert result.exit_code == 3
    assert "git:HEAD:policies/p.yaml:" in result.output and "min_days" in result.output


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("git:no-such-rev:policies/p.yaml", "`no-such-rev` is not a commit"),
        ("git:HEAD:policies/nope.yaml", "`policies/nope.yaml` does not exist at `HEAD`"),
        ("git:HEAD:policies", "`policies` is a tree at `HEAD`, not a file"),
        ("git:HEAD", "expected `git:REV:PATH`"),
        ("git:--output=x:p.yaml", "is not a git revision"),
    ],
)
def test_a_bad_git_source_is_a_usage_error(repo, ref, message):
    result = run("diff", ref, "git:HEAD:policies/p.yaml", cwd=repo)
    assert result.exit_code == 2
    assert message in result.output


def test_git_outside_a_repository_is_a_usage_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    with pytest.raises(UsageError, match="not inside a git repository"):
        read_policy_source("git:HEAD:p.yaml")


def test_require_bump_from_fails_a_change_without_a_version_bump(repo):
    result = run("validate", "--require-bump-from", "HEAD~1", "policies/p.yaml", cwd=repo)
    assert result.exit_code == 1
    line = edited(("min_days: 3", "min_days: 5")).splitlines().index("  version: 1.0.0") + 1
    assert f"policies/p.yaml:{line}:12: $.metadata.version: the content changed since `HEAD~1`" in result.output
    # without the option, the same file is valid
    assert run("validate", "policies/p.yaml", cwd=repo).exit_code == 0


def test_require_bump_from_passes_a_bumped_version_and_a_new_file(repo):
    (repo / "policies" / "p.yaml").write_text(edited(("min_days: 3", "min_days: 5"), ("version: 1.0.0", "version: 1.1.0")))
    (repo / "policies" / "new.yaml").write_text(DEFAULT)  # absent at HEAD~1: new, fine
    result = run("validate", "--require-bump-from", "HEAD~1", "policies", cwd=repo)
    assert result.exit_code == 0, result.output


def test_require_bump_from_in_json_carries_the_code(repo):
    result = run("validate", "--require-bump-from", "HEAD~1", "--format", "json", str(repo / "policies" / "p.yaml"))
    assert result.exit_code == 1
    (entry,) = json.loads(result.output)["files"]
    assert [error["code"] for error in entry["errors"]] == ["version-not-bumped"]


def test_require_bump_from_a_bad_revision_is_a_usage_error(repo):
    result = run("validate", "--require-bump-from", "nope", "policies/p.yaml", cwd=repo)
    assert result.exit_code == 2
    assert "`nope` is not a commit in this git repository" in result.output
