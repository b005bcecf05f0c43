"""Two policy versions side by side in one process (durable-rules notes, section 2).

Both policies are the shipped default text with one parameter changed, written to tmp_path:
each engine owns its own rule network, named after its content, and decides by its own numbers.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from spec_helpers import DEFAULT_POLICY, comparable

from protection_rules import Engine

NOW = "2026-03-20T12:00:00Z"


def _variant(tmp_path: Path, name: str, old: str, new: str) -> Path:
    text = DEFAULT_POLICY.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"`{old}` must occur once in the default policy"
    target = tmp_path / f"{name}.yaml"
    target.write_text(text.replace(old, new), encoding="utf-8")
    return target


@pytest.fixture()
def pair(tmp_path: Path) -> Iterator[tuple[Engine, Engine]]:
    with (
        Engine.from_policy(_variant(tmp_path, "strict", "min_days: 3", "min_days: 3")) as strict,
        Engine.from_policy(_variant(tmp_path, "loose", "min_days: 3", "min_days: 1")) as loose,
    ):
        yield strict, loose


# entry 2 days ago: blocked under min_days 3 (until 03-21T12:00Z), allowed under min_days 1
HELD_TWO_DAYS = {"asset": "AAPL", "action": "close", "current_date": NOW, "position_entry_date": "2026-03-18T12:00:00Z"}
# entry 12 hours ago: blocked under both, until different instants
HELD_HALF_DAY = {"asset": "AAPL", "action": "close", "current_date": NOW, "position_entry_date": "2026-03-20T00:00:00Z"}


def test_different_parameters_give_different_decisions(pair: tuple[Engine, Engine]) -> None:
    strict, loose = pair
    for _ in range(3):  # interleaved, repeatedly: neither network leaks into the other
        a, b = strict.evaluate(HELD_TWO_DAYS), loose.evaluate(HELD_TWO_DAYS)
        assert (a.approved, a.blocking_systems) == (False, ("holding_period",)), a.to_dict()
        assert (b.approved, b.blocking_systems) == (True, ()), b.to_dict()
        assert a.to_dict()["unblocks_at"] == "2026-03-21T12:00:00Z"


def test_both_block_until_their_own_instant(pair: tuple[Engine, Engine]) -> None:
    strict, loose = pair
    assert strict.evaluate(HELD_HALF_DAY).to_dict()["unblocks_at"] == "2026-03-23T00:00:00Z"
    assert loose.evaluate(HELD_HALF_DAY).to_dict()["unblocks_at"] == "2026-03-21T00:00:00Z"


def test_ruleset_names_and_policy_hashes_differ(pair: tuple[Engine, Engine]) -> None:
    strict, loose = pair
    assert strict.compiled.ruleset_name != loose.compiled.ruleset_name
    assert strict._network.name == strict.compiled.ruleset_name
    assert loose._network.name == loose.compiled.ruleset_name
    a, b = strict.evaluate(HELD_TWO_DAYS), loose.evaluate(HELD_TWO_DAYS)
    assert a.policy.sha256 != b.policy.sha256
    assert a.policy.sha256 == strict.compiled.sha256 and b.policy.sha256 == loose.compiled.sha256
    assert len(a.policy.sha256) == 64 and len(b.policy.sha256) == 64


def test_same_content_same_names_and_same_decisions(pair: tuple[Engine, Engine], tmp_path: Path) -> None:
    strict, _ = pair
    # the default text with only a comment added: the policy hash ignores layout and comments
    copy = tmp_path / "commented.yaml"
    copy.write_text("# a comment\n" + DEFAULT_POLICY.read_text(encoding="utf-8"), encoding="utf-8")
    twin = Engine.from_policy(copy, audit=None)
    assert twin.compiled.ruleset_name == strict.compiled.ruleset_name
    assert twin.compiled.sha256 == strict.compiled.sha256
    assert comparable(twin.evaluate(HELD_TWO_DAYS)) == comparable(strict.evaluate(HELD_TWO_DAYS))


def test_a_whipsaw_variant_side_by_side(tmp_path: Path) -> None:
    once = Engine.from_policy(_variant(tmp_path, "once", "max_cycles: 1", "max_cycles: 1"), audit=None)
    twice = Engine.from_policy(_variant(tmp_path, "twice", "max_cycles: 1", "max_cycles: 2"), audit=None)
    request = {
        "asset": "AMD",
        "action": "open",
        "current_date": NOW,
        "state": {"events": [{"type": "open", "at": "2026-03-10T00:00:00Z"}, {"type": "close", "at": "2026-03-12T00:00:00Z"}]},
    }
    assert once.evaluate(request).blocking_systems == ("whipsaw_protection",)
    assert twice.evaluate(request).approved
    assert once.compiled.ruleset_name != twice.compiled.ruleset_name
