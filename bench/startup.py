"""Start-up time: ``import callflow`` and ``callflow --help``, each in a fresh interpreter.

Each command runs ``--runs`` times (after one warm-up run that fills the page cache and
the bytecode caches); the median wall-clock time is reported, next to an empty
interpreter's (``python -c pass``: what every command pays before callflow's first line).
``-X importtime`` of one more run lists the slowest imports, to see what to make lazy.

Run:  python bench/startup.py [--runs 20]
Writes bench/results/startup.md (and .json). Targets: both at most 150 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
RESULTS = HERE / "bench" / "results"
ROOT = HERE
"""The checkout measured (--root: e.g. an older commit's, for a before/after)."""
TARGET_MS = 150.0

COMMANDS: dict[str, list[str]] = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "import callflow": [sys.executable, "-c", "import callflow"],
    "callflow --help": [sys.executable, "-m", "callflow", "--help"],
}


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def time_runs(command: list[str], runs: int) -> list[float]:
    """Wall-clock milliseconds of ``runs`` runs of ``command`` (after one warm-up)."""
    env = _env()
    subprocess.run(command, check=True, capture_output=True, env=env, cwd=ROOT)
    times: list[float] = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, env=env, cwd=ROOT)
        times.append((time.perf_counter() - start) * 1000)
    return times


def slowest_imports(code: str, count: int = 8) -> list[tuple[str, float]]:
    """The ``count`` top-level imports that take longest (cumulative ms) for ``code``."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", code], check=True,
                          capture_output=True, text=True, env=_env(), cwd=ROOT)
    rows: list[tuple[str, float]] = []
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumulative, name = line.split("|")
        if cumulative.strip().isdigit() and not name.startswith("   "):
            rows.append((name.strip(), int(cumulative) / 1000))
    return sorted(rows, key=lambda row: -row[1])[:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--root", type=Path, default=HERE,
                        help="measure the callflow in this checkout (default: this one)")
    parser.add_argument("--compare", type=Path, metavar="ROOT",
                        help="also measure the callflow in ROOT (e.g. an older commit's "
                             "tree, from git archive) under the same load, as 'before'")
    parser.add_argument("--no-write", dest="write", action="store_false",
                        help="print only; leave bench/results alone")
    args = parser.parse_args()
    global ROOT
    before: dict[str, float] = {}
    if args.compare:
        ROOT = args.compare.resolve()
        for name, command in list(COMMANDS.items())[1:]:
            before[name] = statistics.median(time_runs(command, args.runs))
            print(f"{name:18} median {before[name]:6.1f} ms in {ROOT} (before)", flush=True)
    ROOT = args.root.resolve()
    figures: dict[str, dict[str, float]] = {}
    for name, command in COMMANDS.items():
        times = time_runs(command, args.runs)
        figures[name] = {"median_ms": statistics.median(times), "min_ms": min(times),
                         "max_ms": max(times)}
        print(f"{name:18} median {figures[name]['median_ms']:6.1f} ms "
              f"(min {min(times):.1f}, max {max(times):.1f}, {args.runs} runs)", flush=True)
    base = figures["python -c pass"]["median_ms"]
    for name in list(COMMANDS)[1:]:
        figures[name]["over_python_ms"] = figures[name]["median_ms"] - base
        print(f"{name:18} {figures[name]['over_python_ms']:6.1f} ms over an empty interpreter")
    if not args.write:
        return
    imports = slowest_imports("import callflow")
    help_imports = slowest_imports("import sys; sys.argv[1:] = ['--help']\n"
                                   "from callflow.cli import main\nmain()")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "startup.json").write_text(json.dumps(
        {"runs": args.runs, "python": sys.version.split()[0], "figures": figures,
         "before_median_ms": before,
         "slowest_imports": {"import callflow": imports, "callflow --help": help_imports}},
        indent=2) + "\n")
    lines = [
        "# Start-up time",
        "",
        f"`python bench/startup.py --runs {args.runs}` (Python {sys.version.split()[0]}, "
        f"{os.cpu_count()} cores, shared with other work: read the medians, not single runs).",
        f"Target: `import callflow` and `callflow --help` at most {TARGET_MS:.0f} ms.",
        "",
        "| command | median ms | over `python -c pass` | min ms | max ms | target | before |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, figure in figures.items():
        target = ("" if name.startswith("python")
                  else "met" if figure["median_ms"] <= TARGET_MS else "**missed**")
        over = figure.get("over_python_ms")
        lines.append(f"| `{name}` | {figure['median_ms']:.1f} | "
                     f"{'' if over is None else f'{over:.1f}'} | {figure['min_ms']:.1f} | "
                     f"{figure['max_ms']:.1f} | {target} | "
                     f"{f'{before[name]:.1f}' if name in before else ''} |")
    if before:
        lines += ["", f"*before*: the median of the same runs of the tree in `{args.compare}`, "
                      "measured just before, in the same session."]
    for title, rows in (("import callflow", imports), ("callflow --help", help_imports)):
        lines += ["", f"Slowest top-level imports of `{title}` (`-X importtime`, cumulative):",
                  ""]
        lines += [f"- `{name}`: {ms:.1f} ms" for name, ms in rows]
    (RESULTS / "startup.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {RESULTS / 'startup.md'}")


if __name__ == "__main__":
    main()
