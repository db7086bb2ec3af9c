"""The rules engine of this tree against an earlier commit's, on bench/rules.py's stream.

    .venv/bin/python -P bench/rules_against.py REV [--rounds 15] [--sizes 20100,5000]

REV's tree is taken out of git (`git archive`) into .state/bench/rules_against/<commit> and
imported beside this one in the same process: each tree's modules are put in place for its
turn, and the two engines run the same batches, one after the other, round after round. On
this machine the speed of the same code moves by half within minutes (a virtual machine's
cores), so two engines timed in separate processes, even side by side on the two cores, tell
more about the minute than about the code; alternating within one process they see the same
minutes. The first round is a warm-up and is not counted (REV's kernels are compiled into
its folder the first time).

Both engines must raise the same level changes (time, rule, subject, levels) batch size by
batch size; the stream is quiet, as the benchmark's is, so they raise none or few. Prints the
medians (CPU µs a reading, the rules thread's own) and the median of the rounds' ratios.
(-P keeps bench/ off the import path.)
"""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]  # as -P does
sys.path.insert(0, str(_HERE.parent))  # the repository: the sibling scripts import as `bench.<name>`

import argparse  # noqa: E402
import contextlib  # noqa: E402
import importlib  # noqa: E402
import io  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tarfile  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from types import ModuleType  # noqa: E402
from typing import Any  # noqa: E402

from rich.console import Console  # noqa: E402
from rich.progress import Progress  # noqa: E402
from rich.table import Table  # noqa: E402

from bench.rules import readings, run  # noqa: E402

ROOT = _HERE.parent
PACKAGES = ("rules", "detectors", "ews", "ingest")
# prometheus-client takes each metric name once a process: both trees count into this one's
SHARED = {"ews.metrics"}
console = Console(width=110)


def _tree_module(name: str) -> bool:
    return name.split(".")[0] in PACKAGES and name not in SHARED


def _take_modules() -> dict[str, ModuleType]:
    """Take the trees' modules out of `sys.modules` (and return them)."""
    return {k: sys.modules.pop(k) for k in [k for k in sys.modules if _tree_module(k)]}


class Tree:
    """One tree's engine, its modules kept apart from the other tree's."""

    def __init__(self, root: Path):
        self.root = root
        self.modules: dict[str, ModuleType] = {}  # none yet: the first turn imports them afresh
        with self.active():
            self.engine = importlib.import_module("rules.engine").RuleEngine
            self.load_rules = importlib.import_module("rules.loader").load_rules
        home = root.resolve()
        strays = [k for k, m in self.modules.items()
                  if getattr(m, "__file__", None) and not Path(m.__file__ or "").resolve().is_relative_to(home)]
        if strays:
            raise SystemExit(f"rules_against: {', '.join(sorted(strays))} came from outside {root}")

    @contextlib.contextmanager
    def _on_path(self) -> Iterator[None]:
        sys.path.insert(0, str(self.root))  # first: a module imported late comes from this tree too
        try:
            yield
        finally:
            sys.path.remove(str(self.root))

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        held = _take_modules()
        sys.modules.update(self.modules)
        try:
            with self._on_path():
                yield
        finally:
            self.modules = _take_modules()
            sys.modules.update(held)


def checkout(rev: str) -> tuple[str, Path]:
    """(commit, folder) of REV's tree, extracted once."""
    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--verify", f"{rev}^{{commit}}"],
                                check=True, capture_output=True, text=True).stdout.strip()
    except subprocess.CalledProcessError as e:
        raise SystemExit(f"rules_against: {rev!r} is not a commit of this repository ({e.stderr.strip()})") from e
    folder = ROOT / ".state" / "bench" / "rules_against" / commit
    if not (folder / "rules" / "engine.py").exists():
        folder.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit, *PACKAGES],
                                 check=True, capture_output=True).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(folder, filter="data")
    return commit, folder


def change_keys(changes: list[Any]) -> list[tuple[object, ...]]:
    return [(c.event_ts_ms, c.rule_id, c.subject, int(c.before), int(c.after)) for c in changes]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("rev", help="the commit to measure against (anything git rev-parse takes)")
    ap.add_argument("--messages", type=int, default=200_000, help="readings in the stream")
    ap.add_argument("--rounds", type=int, default=15, help="counted rounds, after one of warm-up")
    ap.add_argument("--sizes", default="20100,5000", help="batch sizes, comma separated")
    a = ap.parse_args()
    try:
        sizes = [int(s) for s in a.sizes.split(",")]
    except ValueError:
        ap.error(f"--sizes: {a.sizes!r} is not a comma-separated list of whole numbers")
    if not sizes or min(sizes) < 1 or a.rounds < 1:
        ap.error("--sizes needs batch sizes of at least 1, --rounds at least 1")
    commit, folder = checkout(a.rev)
    stream, sensors = readings(a.messages)
    this, then = Tree(ROOT), Tree(folder)
    start = int(stream.ts_ms[0])
    figures: dict[tuple[int, str], list[float]] = {(s, v): [] for s in sizes for v in ("this", "then")}

    def turn(tree: Tree, size: int) -> tuple[float, list[tuple[object, ...]]]:
        with tree.active():
            engine = tree.engine(tree.load_rules(None, ["guangdong"]), sensors, start_ms=start)
            us, changes = run(engine, stream, size)
            return us, change_keys(changes)

    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"rounds against {commit[:7]}", total=(a.rounds + 1) * len(sizes))
        for r in range(a.rounds + 1):
            for size in sizes:
                order: list[tuple[str, Tree]] = [("this", this), ("then", then)]
                results: dict[str, tuple[float, list[tuple[object, ...]]]] = {}
                for name, tree in order if r % 2 else order[::-1]:  # neither always goes first
                    results[name] = turn(tree, size)
                if results["this"][1] != results["then"][1]:
                    console.print(f"[red]batches of {size:,}: the two engines raised different level changes "
                                  f"({len(results['this'][1])} against {len(results['then'][1])})")
                    return 1
                if r:
                    for name in ("this", "then"):
                        figures[size, name].append(results[name][0])
                progress.advance(task)
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    t = Table(title=f"rules engine, this tree against {commit[:10]}, {len(stream):,} readings (100 a message), "
                    f"CPU µs a reading, median of {a.rounds} rounds (load average {load})")
    for col in ("batch", "this tree", commit[:10], "this / then (median of the rounds' ratios)"):
        t.add_column(col, justify="right")
    for size in sizes:
        ratio = statistics.median(x / y for x, y in zip(figures[size, "this"], figures[size, "then"], strict=True))
        t.add_row(f"{size:,}", f"{statistics.median(figures[size, 'this']):.3f}",
                  f"{statistics.median(figures[size, 'then']):.3f}", f"{ratio:.2f}")
    console.print(t)
    return 0


if __name__ == "__main__":
    sys.exit(main())
