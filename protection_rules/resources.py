"""Where the shipped schemas and policies live, in a source checkout and in an installed wheel."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

_PACKAGE = Path(__file__).resolve().parent


def _folder(name: str) -> Path:
    # A wheel carries the repo's top-level folder inside the package (pyproject's package-dir);
    # a source checkout has it beside the package. One source of truth either way.
    installed = _PACKAGE / name
    return installed if installed.is_dir() else _PACKAGE.parent / name


def schemas_dir() -> Path:
    return _folder("schemas")


def policies_dir() -> Path:
    return _folder("policies")


def default_policy_path() -> Path:
    return policies_dir() / "default.yaml"


@cache
def schema(name: str) -> dict[str, Any]:
    """A shipped schema by short name: `policy`, `request` or `decision` (v1)."""
    return json.loads((schemas_dir() / f"{name}.v1.schema.json").read_text(encoding="utf-8"))
