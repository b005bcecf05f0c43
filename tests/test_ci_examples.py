"""What a risk team's repository takes from this one: the pre-commit hooks and the CI workflow
in examples/ci/ run the commands the README's "The life of a policy change" describes."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
HOOKS = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
WORKFLOW = yaml.safe_load((ROOT / "examples" / "ci" / "policy-change.yml").read_text())
CONFIG = yaml.safe_load((ROOT / "examples" / "ci" / "pre-commit-config.yaml").read_text())


def hook(hook_id: str) -> dict:
    (found,) = [h for h in HOOKS if h["id"] == hook_id]
    return found


def test_the_hooks_are_validate_fmt_and_test():
    assert [h["id"] for h in HOOKS] == ["protect-validate", "protect-fmt", "protect-test"]
    for each in HOOKS:
        assert {"id", "name", "entry", "language"} <= set(each)
        assert each["language"] == "python"  # pre-commit installs this package for the hook
    assert shlex.split(hook("protect-validate")["entry"]) == ["protect", "validate", "--strict"]
    assert shlex.split(hook("protect-fmt")["entry"]) == ["protect", "fmt", "--check", "--diff"]
    assert shlex.split(hook("protect-test")["entry"]) + hook("protect-test")["args"] == ["protect", "test", "cases/"]


def test_the_hooks_run_on_policies_and_cases_only():
    validate, test = re.compile(hook("protect-validate")["files"]), re.compile(hook("protect-test")["files"])
    assert hook("protect-fmt")["files"] == hook("protect-validate")["files"]
    assert validate.search("policies/default.yaml") and validate.search("policies/strict.yml")
    assert not validate.search("cases/holding.yaml") and not validate.search("README.md")
    assert test.search("policies/default.yaml") and test.search("cases/holding.yaml")
    assert not test.search("docs/notes.md")
    assert hook("protect-test")["pass_filenames"] is False  # every case, once, whatever changed


def test_the_example_pre_commit_config_uses_the_hooks():
    (repo,) = CONFIG["repos"]
    assert [h["id"] for h in repo["hooks"]] == [h["id"] for h in HOOKS]


def test_the_workflow_validates_tests_diffs_and_posts_the_report_on_pull_requests():
    triggers = WORKFLOW.get("on", WORKFLOW.get(True))  # YAML 1.1 reads a bare `on` as true
    assert "pull_request" in triggers
    (job,) = WORKFLOW["jobs"].values()
    steps = job["steps"]
    runs = [step.get("run", "") for step in steps]
    script = "\n".join(runs).replace("\\\n", " ")
    assert "protect validate --strict policies/" in runs
    assert "protect fmt --check --diff policies/" in runs
    assert "protect test --coverage --min-coverage 80 cases/" in runs
    diff = re.search(r"protect diff (git:.+?) (\S+) +--replay (\S+) --fail-on any", script)
    assert diff is not None
    assert diff.groups() == (
        "git:origin/${{ github.base_ref }}:policies/default.yaml",
        "policies/default.yaml",
        "audit-export.jsonl",
    )
    assert "gh pr comment" in script and "diff-report.txt" in script
    checkout = next(step for step in steps if step.get("uses", "").startswith("actions/checkout"))
    assert checkout["with"]["fetch-depth"] == 0  # git:REV:PATH needs the base branch
    assert WORKFLOW["permissions"]["pull-requests"] == "write"
