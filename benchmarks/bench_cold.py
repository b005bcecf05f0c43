"""Cold start: the wall time of `protect evaluate` of one request in a fresh process.

Run:  .venv/bin/python benchmarks/bench_cold.py [--runs 20] [--icount] [--imports 25]

Times, each in a fresh interpreter (hyperfine when installed, else a loop of subprocesses):
`python -c pass` (the interpreter alone), a plain-Python floor (import json and datetime, read
the request, decide its holding period) and `protect evaluate --no-audit` of
examples/requests/holding_close.json; then the command's imports by `python -X importtime`, the
largest first (the least of five runs for each module). With --icount, also the instructions of each
(valgrind callgrind), which repeat on this shared machine where wall clock does not.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
EXAMPLE = ROOT / "examples" / "requests" / "holding_close.json"
# the plain-Python floor: read the request, decide its holding period, print the verdict
FLOOR = (
    f"import json, datetime as d; r = json.load(open({str(EXAMPLE)!r})); t = lambda s: d.datetime.fromisoformat(s.replace('Z', '+00:00')); "
    "held = t(r['current_date']) - t(r['position_entry_date']); "
    "print('deny' if r['action'] in ('close', 'decrease') and held < d.timedelta(days=3) else 'approve')"
)
# bytecode caches on, as for anyone who installed the package (a warm-up run writes them)
ENV = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
COMMANDS = {
    "python -c pass": [PYTHON, "-c", "pass"],
    "plain-Python floor": [PYTHON, "-c", FLOOR],
    # `python -m`, from the repository: the package of this checkout, whatever is installed
    "protect evaluate --no-audit": [PYTHON, "-m", "protection_rules", "evaluate", "--no-audit", str(EXAMPLE)],
}


def wall(command: list[str], runs: int) -> tuple[float, float]:
    """Median and minimum wall time in seconds."""
    if shutil.which("hyperfine"):
        export = Path("/tmp") / f"bench_cold_{abs(hash(tuple(command)))}.json"
        subprocess.run(
            ["hyperfine", "-N", "-i", "-w", "3", "-r", str(runs), "--export-json", str(export), " ".join(map(_quote, command))],
            capture_output=True,
            check=True,
            env=ENV,
            cwd=ROOT,
        )
        import json

        times = json.loads(export.read_text())["results"][0]["times"]
        export.unlink()
    else:
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            subprocess.run(command, capture_output=True, check=False, env=ENV, cwd=ROOT)
            times.append(time.perf_counter() - started)
    return statistics.median(times), min(times)


def _quote(part: str) -> str:
    return "'" + part.replace("'", "'\\''") + "'" if re.search(r"[^\w./=-]", part) else part


def icount(command: list[str]) -> int | None:
    if not shutil.which("valgrind"):
        return None
    done = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *command],
        capture_output=True,
        text=True,
        check=False,
        env=ENV,
        cwd=ROOT,
    )
    found = re.search(r"Collected : (\d+)", done.stderr)
    return int(found.group(1)) if found else None


def import_times(command: list[str], runs: int = 5) -> dict[str, tuple[int, int, int]]:
    """`-X importtime` of the command, the least of `runs` runs for each module: name -> (self us,
    cumulative us, depth), in the order the modules finished importing."""
    least: dict[str, tuple[int, int, int]] = {}
    for _ in range(runs):
        done = subprocess.run(
            [PYTHON, "-X", "importtime", *command[1:]], capture_output=True, text=True, check=False, env=ENV, cwd=ROOT
        )
        for line in done.stderr.splitlines():
            parts = line.removeprefix("import time:").split("|")
            if len(parts) != 3 or not parts[1].strip().isdigit():
                continue
            name = parts[2].strip()
            depth = (len(parts[2]) - len(parts[2].lstrip()) - 1) // 2
            own, total = int(parts[0]), int(parts[1])
            seen = least.get(name, (own, total, depth))
            least[name] = (min(own, seen[0]), min(total, seen[1]), depth)
    return least


def print_imports(command: list[str], top: int) -> None:
    times = import_times(command)
    total = sum(cumulative for _, cumulative, depth in times.values() if depth == 0)
    print(f"imports of `protect evaluate` (-X importtime, least of 5 runs each): {total / 1000:.1f} ms; the largest, cumulative:")
    largest = sorted(times.items(), key=lambda item: -item[1][1])[:top]
    for name, (own, cumulative, depth) in largest:
        print(f"  {cumulative / 1000:6.1f} ms  (self {own / 1000:5.1f})  {'  ' * depth}{name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--icount", action="store_true", help="also count instructions under valgrind (slow)")
    parser.add_argument("--imports", type=int, default=25, metavar="N", help="list the N largest imports (0: none)")
    args = parser.parse_args()
    print(f"command: .venv/bin/python benchmarks/bench_cold.py --runs {args.runs}{' --icount' if args.icount else ''}")
    print(f"timer: {'hyperfine' if shutil.which('hyperfine') else 'subprocess loop'}; target: protect evaluate < 0.150 s")
    for command in COMMANDS.values():  # writes the bytecode caches the timed runs read
        subprocess.run(command, capture_output=True, check=False, env=ENV, cwd=ROOT)
    floor = None
    for name, command in COMMANDS.items():
        median, least = wall(command, args.runs)
        floor = floor or median
        line = f"{name:<30} median {median * 1000:7.1f} ms  min {least * 1000:7.1f} ms  {median / floor:5.2f}x python -c pass"
        if args.icount:
            count = icount(command)
            line += f"  {count / 1e6:8.1f} M instructions" if count else "  (no valgrind)"
        print(line)
    if args.imports:
        print_imports(COMMANDS["protect evaluate --no-audit"], args.imports)


if __name__ == "__main__":
    main()
