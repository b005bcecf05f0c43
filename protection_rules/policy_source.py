"""Where a policy's text comes from: a file, or `git:REV:PATH` read with `git show` (no checkout).

The text is kept beside its display name so that worker processes can rebuild the same policy
(durable-rules handles live in one process), and so that every message names
`git:HEAD~1:policies/default.yaml` the way the user wrote it.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import PolicyInvalid, UsageError
from .loading import DocumentInvalid, decode, read_text, too_large
from .policy import Policy, parse_policy
from .reading import CHUNK_BYTES, MAX_DOCUMENT_BYTES, read_limited

GIT_PREFIX = "git:"


@dataclass(frozen=True, slots=True)
class PolicySource:
    """A policy's YAML text and the name it is shown by (a path, or `git:REV:PATH`)."""

    name: str
    text: str

    def load(self) -> Policy:
        """Validate it like a policy file; raises `PolicyInvalid` naming `name`."""
        return parse_policy(self.text, self.name)


def read_policy_source(ref: str) -> PolicySource:
    """A policy file, or `git:REV:PATH` (PATH as `git show` reads it: from the repository's root,
    or `./...` from the current folder). A missing file, a bad revision or a path absent at the
    revision is a `UsageError`."""
    if not ref.startswith(GIT_PREFIX):
        try:
            return PolicySource(ref, read_text(ref, ref))
        except DocumentInvalid as exc:
            raise PolicyInvalid(exc.issues) from None
    rev, sep, path = ref[len(GIT_PREFIX) :].partition(":")
    if not sep or not rev or not path:
        raise UsageError(f"`{ref}`: expected `git:REV:PATH`, such as `git:HEAD~1:policies/default.yaml`")
    text = git_file(rev, path, display=ref)
    if text is None:
        raise UsageError(f"{ref}: `{path}` does not exist at `{rev}`")
    return PolicySource(ref, text)


def policy_at_revision(rev: str, file: str | Path) -> PolicySource | None:
    """The same file as it was at `rev` in its git repository, or None when it did not exist then."""
    file = Path(file)
    display = f"{GIT_PREFIX}{rev}:{file}"
    text = git_file(rev, f"./{file.name}", display=display, cwd=file.parent)
    return None if text is None else PolicySource(display, text)


def git_file(rev: str, path: str, *, display: str, cwd: str | Path | None = None) -> str | None:
    """The text of `path` at commit `rev`, read with `git show` and bounded like any document;
    None when the commit has no such file. A bad revision, a folder, no repository: `UsageError`."""
    if rev.startswith("-"):
        raise UsageError(f"{display}: `{rev}` is not a git revision")
    verified = _git(["rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], cwd, display)
    if verified.returncode != 0:
        raise UsageError(f"{display}: `{rev}` is not a commit in this git repository")
    kind = _git(["cat-file", "-t", f"{rev}:{path}"], cwd, display)
    if kind.returncode != 0:
        return None
    if kind.stdout.strip() != b"blob":
        raise UsageError(f"{display}: `{path}` is a {kind.stdout.strip().decode()} at `{rev}`, not a file")
    return _show(f"{rev}:{path}", cwd, display)


def _git(args: list[str], cwd: str | Path | None, display: str) -> subprocess.CompletedProcess[bytes]:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, check=False, timeout=60)
    except FileNotFoundError:
        raise UsageError(f"{display}: `git` is not installed (needed to read `git:REV:PATH`)") from None
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UsageError(f"{display}: cannot run git: {exc}") from None
    if b"not a git repository" in done.stderr:
        raise UsageError(f"{display}: not inside a git repository")
    return done


def _show(spec: str, cwd: str | Path | None, display: str) -> str:
    # read like any document: never more than the limit plus one chunk, whatever the blob's size
    with subprocess.Popen(["git", "show", spec], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as process:
        assert process.stdout is not None
        raw, complete = read_limited(_chunks(process.stdout.read1), MAX_DOCUMENT_BYTES)
        if not complete:
            process.kill()
        process.stdout.close()
        code = process.wait()
    if not complete:
        raise PolicyInvalid([too_large(display)])
    if code != 0:
        raise UsageError(f"{display}: `git show {spec}` failed (exit {code})")
    try:
        return decode(raw, display)
    except DocumentInvalid as exc:
        raise PolicyInvalid(exc.issues) from None


def _chunks(read: Callable[[int], bytes]) -> Iterator[bytes]:
    while chunk := read(CHUNK_BYTES):
        yield chunk
