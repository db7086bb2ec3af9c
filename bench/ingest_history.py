"""Every recorded invocation of bench/ingest.py with gateway batches, at a glance.

    .venv/bin/python -P bench/ingest_history.py [--doc docs/performance.md] [--out docs/img/ingest_history.png]

Reads the two tables docs/performance.md keeps under "Gateway batches: every invocation" and
"Where gateway batches fall below 80 %" (the tables are the record; this reads them, it holds
no figures of its own), prints the counts and ranges the prose quotes (among them, by
placement, how often ingest alone, the same pipeline with its rules off run in the same
invocation, reached 80 % where the pipeline did not, and the other way round), and plots:

- the pipeline's share of InfluxDB's raw rate, invocation by invocation (median and the range
  of its runs), with every process on both cores and with InfluxDB on a core of its own, and
  beside each median the same pipeline's with its rules off (hollow);
- on shared cores, the pipeline's own CPU a reading against the most it may spend for 80 %
  (the raw baseline's CPU over 0.8, less what InfluxDB spent on the pipeline's points);
- the ratio the CPU columns predict against the one measured.

Invocations taken since gateway batches are read by the compiled scanner (the gateway
section's sentence "Invocations from N on read gateway batches with the compiled scanner")
are summed up again on their own, and marked in the plot (green bars in the middle); so are
those since the detectors' kernels ("Invocations from N on also run the detectors' compiled
kernels", purple bars), since all five of them ("Invocations from N on run all five
kernels", teal bars), since line protocol is copied by `memcpy` into memory mapped once
("Invocations from N on copy line protocol into memory mapped once", orange bars), since the
database is made ready before the broker is connected ("Invocations from N on make the
database ready before the connect", brown bars), since the rules' trends and rolling sums
are compiled ("Invocations from N on compile the rules' trends and rolling sums", pink bars),
since the scanner's compact path checks its own indices, a gateway's first batches are
scanned and the MQTT client reads on at a chunk's end ("Invocations from N on scan on the
guarded path and read on at chunk ends", olive bars), since the rules take quiet
stretches with fewer array passes ("Invocations from N on evaluate quiet stretches with fewer
array passes", blue bars) and since the rules take several batches a step under load
("Invocations from N on take several batches a rules step under load", grey bars).

It also checks the tables against themselves (a median that is not the median of its runs,
a CPU ratio that is not the quotient of its columns, a CPU sum that does not add up, a
`--split` invocation in the CPU table of shared cores) and exits 1 naming the row if not.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GATEWAY_HEADING = "### Gateway batches: every invocation"
CPU_HEADING = "### Where gateway batches fall below 80 %"
TARGET = 80
# the record's eras, oldest first: the Invocation field, the gateway section's sentence that
# starts it ("Invocations from N on <phrase>"), its name in the summary and the plot, its bars
ERAS = (("scanner", "read gateway batches with the compiled scanner", "the compiled scanner", "#2ca02c"),
        ("kernels", "also run the detectors' compiled kernels", "the detectors' kernels", "#9467bd"),
        ("five", "run all five kernels", "all five kernels", "#17becf"),
        ("mapped", "copy line protocol into memory mapped once", "memory mapped once", "#ff7f0e"),
        ("ready", "make the database ready before the connect", "the database ready first", "#8c564b"),
        ("trends", "compile the rules' trends and rolling sums", "trends and sums compiled", "#e377c2"),
        ("guarded", "scan on the guarded path and read on at chunk ends", "the guarded scan", "#bcbd22"),
        ("leaner", "evaluate quiet stretches with fewer array passes", "fewer array passes", "#1f77b4"),
        ("steps", "take several batches a rules step under load", "steps of several batches", "#7f7f7f"))


@dataclass(frozen=True)
class Invocation:
    number: int
    split: bool  # InfluxDB on a core of its own (`--split`)
    ratio: int  # median, % of InfluxDB's raw rate
    runs: tuple[int, ...]
    readings_s: int  # the pipeline's median
    cpu_us: float  # the pipeline's CPU a reading
    raw_points_s: int
    alone: int | None = None  # median, % of the raw rate, for ingest alone (the pipeline with its rules off)
    scanner: bool = False  # gateway batches read by the compiled scanner (ingest/gatewayscan.py)
    kernels: bool = False  # quiet stretches with the detectors' numba kernels (detectors/reference.py)
    five: bool = False  # with all five of them
    mapped: bool = False  # line protocol by memcpy, batches' memory mapped once (ews/heap.py)
    ready: bool = False  # the database created and its retention read before the connect
    trends: bool = False  # trends, rolling sums at past times and the latest readings compiled
    guarded: bool = False  # the scanner's compact path unchecked, first sights scanned, MQTT read on, exact end
    leaner: bool = False  # quiet stretches with fewer array passes, rings with room for a backlog step
    steps: bool = False  # under load the rules wait up to 0.1 s for a step of several batches


@dataclass(frozen=True)
class CpuRow:
    number: int
    own: float  # the pipeline's CPU a reading, µs
    influx_raw: float  # InfluxDB's CPU a raw point
    influx_pipeline: float  # InfluxDB's CPU a point of the pipeline's writes
    raw_all: float
    pipeline_all: float
    predicted: int  # %
    measured: int  # %

    @property
    def budget(self) -> float:
        """The most the pipeline may spend of its own for 80 % (below zero: nothing would do)."""
        return self.raw_all / (TARGET / 100) - self.influx_pipeline


def _section(text: str, heading: str) -> str:
    start = text.index(heading)
    end = text.find("\n#", start + len(heading))
    return text[start:] if end < 0 else text[start:end]


def _rows(section: str, columns: int) -> list[list[str]]:
    out = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) == columns and cells[0].isdigit():
            out.append(cells)
    return out


def _numbers(spec: str) -> set[int]:
    """'8, 9, 24, 25, 28-35, 37 and 39' -> {8, 9, 24, 25, 28, ..., 35, 37, 39}"""
    out: set[int] = set()
    for part in re.split(r",\s*|\s+and\s+", spec.strip()):
        lo, _, hi = part.partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return out


def _int(s: str) -> int:
    return int(s.replace(",", ""))


def parse_invocations(text: str) -> list[Invocation]:
    section = _section(text, GATEWAY_HEADING)
    prose = " ".join(section.split())
    m = re.search(r"Invocations ([\d,\-\s]+(?:and[\d\-\s]+)?) ran with `--split`", prose)
    if m is None:
        raise ValueError(f"{GATEWAY_HEADING}: no sentence naming the invocations run with `--split`")
    split = _numbers(m[1])
    starts = {}
    for era, phrase, _, _ in ERAS:
        m = re.search(rf"Invocations from (\d+) on {re.escape(phrase)}", prose)
        if m:
            starts[era] = int(m[1])
    out = []
    for cells in _rows(section, 8):
        n = int(cells[0])
        ratio = re.fullmatch(r"(\d+) % \(([\d, ]+)\)", cells[3])
        rate = re.fullmatch(r"([\d,]+), ([\d.]+)", cells[4])
        raw = re.match(r"([\d,]+)", cells[5])
        alone = re.match(r"(\d+) %", cells[6])
        if ratio is None or rate is None or raw is None:
            raise ValueError(f"{GATEWAY_HEADING}: row {n} is not '<median> % (<runs>)' | "
                             f"'<readings/s>, <µs>' | '<points/s> ...'")
        out.append(Invocation(n, n in split, int(ratio[1]), tuple(int(r) for r in ratio[2].split(",")),
                              _int(rate[1]), float(rate[2]), _int(raw[1]), int(alone[1]) if alone else None,
                              **{era: n >= first for era, first in starts.items()}))
    missing = split - {i.number for i in out}
    if missing:
        raise ValueError(f"{GATEWAY_HEADING}: `--split` names invocations with no row: {sorted(missing)}")
    return out


def parse_cpu(text: str) -> list[CpuRow]:
    out = []
    for cells in _rows(_section(text, CPU_HEADING), 8):
        own, raw, pipeline, raw_all, pipeline_all, predicted, measured = (float(c.rstrip(" %")) for c in cells[1:])
        out.append(CpuRow(int(cells[0]), own, raw, pipeline, raw_all, pipeline_all, int(predicted), int(measured)))
    return out


def inconsistencies(invocations: list[Invocation], cpu: list[CpuRow]) -> list[str]:
    """Rows whose figures disagree with each other."""
    out = []
    for i in invocations:
        if len(i.runs) % 2 and statistics.median(i.runs) != i.ratio:  # an even count has no middle run
            out.append(f"invocation {i.number}: median {i.ratio} % is not the median of its runs {i.runs}")
    for c in cpu:
        if round(100 * c.raw_all / c.pipeline_all) != c.predicted:
            out.append(f"CPU row {c.number}: {c.raw_all} / {c.pipeline_all} is not {c.predicted} %")
        if abs(c.own + c.influx_pipeline - c.pipeline_all) > 0.011:
            out.append(f"CPU row {c.number}: {c.own} + {c.influx_pipeline} is not {c.pipeline_all}")
    split = {i.number for i in invocations if i.split}
    out += [f"CPU row {c.number} is a `--split` invocation; the table covers shared cores" for c in cpu
            if c.number in split]
    return out


def summary(invocations: list[Invocation], cpu: list[CpuRow]) -> list[str]:
    lines = [f"{len(invocations)} invocations", *_summary(invocations, cpu, "")]
    for era, _, name, _ in ERAS:
        these = {i.number for i in invocations if getattr(i, era)}
        if these:
            lines += _summary([i for i in invocations if i.number in these], [c for c in cpu if c.number in these],
                              f"with {name} (from {min(these)}), ")
    return lines


def _summary(invocations: list[Invocation], cpu: list[CpuRow], era: str) -> list[str]:
    lines = []
    for name, group in (("shared cores", [i for i in invocations if not i.split]),
                        ("InfluxDB on its own core", [i for i in invocations if i.split])):
        if not group:
            continue
        r = [i.ratio for i in group]
        rate = [i.readings_s for i in group]
        lines.append(f"{era}{name}: {len(group)} invocations, medians {min(r)}-{max(r)} % (middle "
                     f"{statistics.median(r):g} %), {sum(x >= TARGET for x in r)} at or above {TARGET} %; "
                     f"the pipeline {min(rate):,}-{max(rate):,} readings/s (middle {statistics.median(rate):,.0f})")
        pairs = [(i.ratio, i.alone) for i in group if i.alone is not None]
        if pairs:
            lines.append(_alone(pairs, f"{era}{name}"))
    if cpu:
        own = [c.own for c in cpu]
        budget = [c.budget for c in cpu]
        dearer = sum(c.influx_pipeline > c.influx_raw for c in cpu)
        cheaper = sum(c.influx_pipeline < c.influx_raw for c in cpu)
        worst = max(cpu, key=lambda c: abs(c.predicted - c.measured))
        lines += [
            f"{era}CPU table ({len(cpu)} shared invocations): the pipeline's own {min(own):.2f}-{max(own):.2f} µs "
            f"a reading (median {statistics.median(own):.2f}); the most it may spend for {TARGET} % "
            f"{max(0.0, min(budget)):.2f}-{max(budget):.2f} (median {statistics.median(budget):.2f}); "
            f"within budget in {sum(c.own <= c.budget for c in cpu)}",
            f"{era}InfluxDB spent more on the pipeline's points than on raw ones in {dearer}, less in {cheaper}, "
            f"the same in {len(cpu) - dearer - cheaper}",
            f"{era}predicted and measured ratio differ by {worst.predicted - worst.measured:+d} points at most "
            f"(invocation {worst.number}); by more than 8 in "
            f"{sum(abs(c.predicted - c.measured) > 8 for c in cpu)}",
        ]
    return lines


def pairing(pairs: list[tuple[int, int]]) -> tuple[int, int, int, int]:
    """Of (pipeline, ingest alone) medians by invocation: how many with ingest alone at or above
    the target, and below it with the rules on only, with them off only, and both ways."""
    return (sum(a >= TARGET for _, a in pairs), sum(p < TARGET <= a for p, a in pairs),
            sum(a < TARGET <= p for p, a in pairs), sum(max(p, a) < TARGET for p, a in pairs))


def _alone(pairs: list[tuple[int, int]], where: str) -> str:
    """Ingest alone beside the pipeline: what the rules' cost accounts for, and what would miss
    the target even without them."""
    alone = [a for _, a in pairs]
    met, only_rules, only_alone, both = pairing(pairs)
    return (f"{where}, ingest alone (rules off) in {len(pairs)} of them: medians {min(alone)}-{max(alone)} % "
            f"(middle {statistics.median(alone):g} %), {met} at or above {TARGET} %; "
            f"below {TARGET} % with the rules on only in {only_rules}, with them off only in {only_alone}, "
            f"both in {both}")


def plot(invocations: list[Invocation], cpu: list[CpuRow], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b, c) = plt.subplots(1, 3, figsize=(16, 4.6), gridspec_kw={"width_ratios": [2.2, 1.6, 1]})
    for split, color, label in ((False, "#d62728", "every process on both cores"),
                                (True, "#1f77b4", "InfluxDB on a core of its own")):
        group = [i for i in invocations if i.split == split]
        x = [i.number for i in group]
        a.vlines(x, [min(i.runs) for i in group], [max(i.runs) for i in group], color=color, alpha=0.35, lw=1)
        a.plot(x, [i.ratio for i in group], "o", color=color, ms=4, label=label)
        alone = [i for i in group if i.alone is not None]
        a.plot([i.number for i in alone], [i.alone for i in alone], "o", mfc="none", color=color, ms=4, mew=0.7,
               alpha=0.6, label=f"{label}, rules off")
    a.axhline(TARGET, color="black", lw=0.8, ls="--")
    for era, _, name, _ in ERAS:
        first = min((i.number for i in invocations if getattr(i, era)), default=None)
        if first is not None:
            a.axvline(first - 0.5, color="grey", lw=0.8, ls=":")
            a.text(first - 0.5, a.get_ylim()[0], " " + name.removeprefix("the "), fontsize=7, color="grey", rotation=90,
                   va="bottom", ha="right")
    a.set_xlabel("invocation")
    a.set_ylabel("% of InfluxDB's raw rate (median, runs)")
    a.set_title("100 readings a message, every invocation", fontsize=10)
    a.legend(fontsize=8, loc="upper left")

    x = [r.number for r in cpu]
    colour = dict.fromkeys(x, "#d62728")
    for era, _, _, bars in ERAS:  # the newest era a shared invocation belongs to colours its bar
        colour.update((i.number, bars) for i in invocations if getattr(i, era) and i.number in colour)
    b.bar([str(n) for n in x], [r.own for r in cpu], alpha=0.7, label="pipeline's own CPU",
          color=[colour[n] for n in x])
    b.plot([str(n) for n in x], [max(0.0, r.budget) for r in cpu], "k_", ms=7, mew=2,
           label=f"most it may spend for {TARGET} %")
    b.set_ylabel("µs of CPU a reading")
    b.set_xlabel("invocation (shared cores)")
    b.set_title("the pipeline's CPU against its budget", fontsize=10)
    b.tick_params(axis="x", labelsize=5, rotation=90)
    b.legend(fontsize=8, loc="upper left")

    c.plot([r.predicted for r in cpu], [r.measured for r in cpu], "o", color="#d62728", ms=4)
    lo = min(min(r.predicted for r in cpu), min(r.measured for r in cpu)) - 3
    hi = max(max(r.predicted for r in cpu), max(r.measured for r in cpu)) + 3
    c.plot([lo, hi], [lo, hi], color="grey", lw=0.8)
    c.axhline(TARGET, color="black", lw=0.8, ls="--")
    c.set_xlabel("ratio the CPU columns predict, %")
    c.set_ylabel("measured, %")
    c.set_title("CPU shares predict the ratio", fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--doc", type=Path, default=ROOT / "docs" / "performance.md")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "img" / "ingest_history.png")
    args = ap.parse_args(argv)
    text = args.doc.read_text(encoding="utf-8")
    invocations, cpu = parse_invocations(text), parse_cpu(text)
    for line in summary(invocations, cpu):
        print(line)
    bad = inconsistencies(invocations, cpu)
    for line in bad:
        print(f"{args.doc}: {line}", file=sys.stderr)
    plot(invocations, cpu, args.out)
    print(f"plot: {args.out}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
