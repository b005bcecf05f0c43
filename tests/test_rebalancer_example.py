"""examples/rebalancer_simulation.py keeps running: a short simulation, its lines adding up."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DAY = re.compile(
    r"day +(\d+)  (\d{4}-\d{2}-\d{2})  (\w+) +targets +(\d+)  approved +(\d+)  holds +(\d+)  overridden +(\d+)  denied +(\d+)(?: \((.*)\))?$"
)


@pytest.fixture(scope="module")
def simulation():
    spec = importlib.util.spec_from_file_location("rebalancer_simulation", ROOT / "examples" / "rebalancer_simulation.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while it loads
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


def run(simulation, capsys, *args: str) -> list[str]:
    assert simulation.main(["--days", "15", "--assets", "20", *args]) == 0
    return capsys.readouterr().out.splitlines()


def test_a_short_simulation_prints_a_line_per_day_that_adds_up(simulation, capsys):
    lines = run(simulation, capsys, "--no-chart")
    assert lines[0] == "15 trading days from 2026-01-05T15:30:00Z, 20 assets, seed 7"
    days = [DAY.match(line) for line in lines[2:17]]
    assert all(days), lines[2:17]
    assert [int(d[1]) for d in days] == list(range(1, 16))
    assert [d[2] for d in days][:6] == ["2026-01-05", "2026-01-06", "2026-01-07", "2026-01-08", "2026-01-09", "2026-01-12"]
    # two regime changes, at a third and at two thirds of the days
    assert [d[3] for d in days] == ["bull"] * 5 + ["bear"] * 5 + ["crisis"] * 5
    for d in days:
        targets, approved, holds, overridden, denied = (int(d[i]) for i in range(4, 9))
        assert approved + holds + denied == targets and overridden <= approved
        blockers = [int(n) for n in re.findall(r" (\d+)", f" {d[9]}")] if d[9] else []
        assert (denied == 0) == (blockers == []) and sum(blockers) >= denied
    totals = re.match(r"15 days: (\d+) approved, (\d+) holds, (\d+) overridden, (\d+) denied", lines[17])
    assert [int(t) for t in totals.groups()] == [sum(int(d[i]) for d in days) for i in (5, 6, 7, 8)]
    assert re.match(r"turnover \(sum of \|allocation change\|\): [\d.]+ with protections, [\d.]+ without", lines[18])
    assert lines[19].startswith("simulated in ")


def test_the_same_seed_gives_the_same_days(simulation, capsys):
    first = run(simulation, capsys, "--no-chart")
    second = run(simulation, capsys, "--no-chart")
    assert first[:-1] == second[:-1]  # all but the time taken
    assert run(simulation, capsys, "--no-chart", "--seed", "8")[2:17] != first[2:17]


def test_with_matplotlib_it_writes_a_png_chart(simulation, capsys, tmp_path):
    pytest.importorskip("matplotlib")
    chart = tmp_path / "chart.png"
    lines = run(simulation, capsys, "--chart", str(chart))
    assert lines[-1] == f"chart: {chart}"
    assert chart.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
