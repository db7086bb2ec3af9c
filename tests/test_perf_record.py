"""The ingest record in docs/performance.md agrees with itself, and bench/ingest_history.py,
which reads it, catches a record that does not."""

from __future__ import annotations

import re
import statistics
import textwrap
from pathlib import Path

import pytest

from bench import ingest_history as h

DOC = Path(__file__).resolve().parent.parent / "docs" / "performance.md"

SAMPLE = f"""{h.GATEWAY_HEADING}

Invocations 2 and 4-5 ran with `--split`; the other two with every process on both cores.

| # | invocation | load | ratio, median (per run) | pipeline readings/s, CPU µs a reading | raw | alone | 1/msg |
|---|---|---|---|---|---|---|---|
| 1 | first | 0.1 → 1.0 | 70 % (60, 70, 90) | 300,000, 2.00 | 430,000 (3.50) | 75 % | 500 %, 7.00 × |
| 2 | split | 0.1 → 1.0 | 85 % (85, 99, 70) | 250,000, 2.10 | 290,000 (3.10) | 90 % | |
| 3 | second | 0.1 → 1.0 | {{ratio}} | 320,000, 1.90 | 450,000 (3.40) | 80 % | |
| 4 | split | 0.1 → 1.0 | 95 % (95, 101, 80) | 240,000, 2.00 | 250,000 (3.60) | 90 % | |
| 5 | split | 0.1 → 1.0 | 78 % (78, 81, 70) | 230,000, 2.20 | 300,000 (3.20) | 90 % | |

{h.CPU_HEADING}

| # | own | raw | pipeline | raw in all | pipeline in all | ratio in CPU | measured |
|---|---:|---:|---:|---:|---:|---:|---:|
| 1 | 2.00 | 3.50 | 3.40 | 3.80 | 5.40 | 70 % | 70 % |
| 3 | 1.90 | 3.40 | 3.50 | 3.70 | 5.40 | {{cpu}} | 73 % |
"""


def sample(ratio: str = "73 % (73, 75, 60)", cpu: str = "69 %") -> str:
    return SAMPLE.replace("{ratio}", ratio).replace("{cpu}", cpu)


def test_sample_is_read_by_placement_and_found_consistent() -> None:
    inv = h.parse_invocations(sample())
    assert [i.number for i in inv if i.split] == [2, 4, 5]
    assert inv[2] == h.Invocation(3, False, 73, (73, 75, 60), 320_000, 1.90, 450_000, alone=80)
    cpu = h.parse_cpu(sample())
    assert cpu[1].budget == pytest.approx(3.70 / 0.8 - 3.50)
    assert h.inconsistencies(inv, cpu) == []
    text = "\n".join(h.summary(inv, cpu))
    assert "shared cores: 2 invocations, medians 70-73 %" in text
    assert "InfluxDB on its own core: 3 invocations, medians 78-95 % (middle 85 %), 2 at or above 80 %" in text
    assert "more on the pipeline's points than on raw ones in 1, less in 1, the same in 0" in text


def test_ingest_alone_is_set_beside_the_pipeline_invocation_by_invocation() -> None:
    text = sample().replace("| 250,000 (3.60) | 90 % |", "| 250,000 (3.60) | 64 % (64, 70, 90) |")
    inv = h.parse_invocations(text)
    assert [i.alone for i in inv] == [75, 90, 80, 64, 90]
    lines = "\n".join(h.summary(inv, h.parse_cpu(text)))
    assert ("shared cores, ingest alone (rules off) in 2 of them: medians 75-80 % (middle 77.5 %), 1 at or above "
            "80 %; below 80 % with the rules on only in 1, with them off only in 0, both in 1") in lines
    assert ("InfluxDB on its own core, ingest alone (rules off) in 3 of them: medians 64-90 % (middle 90 %), 2 at "
            "or above 80 %; below 80 % with the rules on only in 1, with them off only in 1, both in 0") in lines
    # an invocation without the figure is left out of the pairing, not counted as a miss
    inv = h.parse_invocations(text.replace("| 75 % | 500 %", "|  | 500 %"))
    assert inv[0].alone is None
    assert "shared cores, ingest alone (rules off) in 1 of them: medians 80-80 %" in "\n".join(h.summary(inv, []))


def test_invocations_with_the_compiled_scanner_are_summed_up_again_on_their_own() -> None:
    era = "cores. Invocations from 3 on read gateway batches with the\ncompiled scanner.\n"
    text = sample().replace("cores.\n", era)
    inv, cpu = h.parse_invocations(text), h.parse_cpu(text)
    assert [i.number for i in inv if i.scanner] == [3, 4, 5]
    assert not any(i.scanner for i in h.parse_invocations(sample()))
    lines = h.summary(inv, cpu)
    assert "with the compiled scanner (from 3), shared cores: 1 invocations, medians 73-73 %" in "\n".join(lines)
    assert "with the compiled scanner (from 3), InfluxDB on its own core: 2 invocations, medians 78-95 %" in \
        "\n".join(lines)
    assert any(line.startswith("with the compiled scanner (from 3), CPU table (1 shared") for line in lines)


def test_invocations_with_the_detectors_kernels_are_summed_up_again_on_their_own() -> None:
    eras = ("cores. Invocations from 2 on read gateway batches with the compiled scanner.\n"
            "Invocations from 4 on also run the detectors' compiled\nkernels.\n")
    text = sample().replace("cores.\n", eras)
    inv = h.parse_invocations(text)
    assert [i.number for i in inv if i.scanner] == [2, 3, 4, 5]
    assert [i.number for i in inv if i.kernels] == [4, 5]
    lines = "\n".join(h.summary(inv, h.parse_cpu(text)))
    assert "with the detectors' kernels (from 4), InfluxDB on its own core: 2 invocations, medians 78-95 %" in lines
    assert "with the detectors' kernels (from 4), shared cores" not in lines  # none of them shared
    assert "with the compiled scanner (from 2), shared cores: 1 invocations, medians 73-73 %" in lines
    assert "all five kernels" not in lines
    five = h.parse_invocations(text.replace("kernels.\n", "kernels. Invocations from 5 on run all five\nkernels.\n"))
    assert [i.number for i in five if i.five] == [5]
    assert "with all five kernels (from 5), InfluxDB on its own core: 1 invocations, medians 78-78 %" in "\n".join(
        h.summary(five, h.parse_cpu(text)))
    mapped = h.parse_invocations(text.replace("kernels.\n", "kernels. Invocations from 3 on copy line protocol\n"
                                                        "into memory mapped once.\n"))
    assert [i.number for i in mapped if i.mapped] == [3, 4, 5]
    assert "with memory mapped once (from 3), shared cores: 1 invocations, medians 73-73 %" in "\n".join(
        h.summary(mapped, h.parse_cpu(text)))


@pytest.mark.parametrize(("older", "newer"), list(zip(h.ERAS[3:], h.ERAS[4:], strict=False)),
                         ids=lambda era: era[0])
def test_an_era_is_told_from_the_one_before_it(older: tuple[str, str, str, str],
                                               newer: tuple[str, str, str, str]) -> None:
    """From memory mapped once on, each era began an invocation after the one before it: the
    two sentences, wrapped anywhere as the section's prose is, tell them apart."""
    sentences = textwrap.fill(f"kernels. Invocations from 4 on {older[1]}. Invocations from 5 on {newer[1]}.", 50)
    text = sample().replace("cores.\n", "cores. Invocations from 2 on read gateway batches with the compiled scanner.\n"
                                         f"Invocations from 4 on also run the detectors' compiled\n{sentences}\n")
    inv = h.parse_invocations(text)
    assert [i.number for i in inv if getattr(i, newer[0])] == [5]
    assert [i.number for i in inv if getattr(i, older[0])] == [4, 5]
    lines = "\n".join(h.summary(inv, h.parse_cpu(text)))
    assert f"with {newer[2]} (from 5), InfluxDB on its own core: 1 invocations, medians 78-78 %" in lines
    assert f"with {newer[2]} (from 5), shared cores" not in lines  # 5 ran with `--split`


@pytest.mark.parametrize(("ratio", "cpu", "named"), [
    ("75 % (73, 75, 60)", "69 %", "invocation 3: median 75 %"),  # not the median of its runs
    ("73 % (73, 75, 60)", "71 %", "CPU row 3: 3.7 / 5.4 is not 71 %"),
])
def test_a_row_that_disagrees_with_itself_is_named(ratio: str, cpu: str, named: str) -> None:
    bad = h.inconsistencies(h.parse_invocations(sample(ratio, cpu)), h.parse_cpu(sample(ratio, cpu)))
    assert len(bad) == 1 and bad[0].startswith(named)


def test_a_split_invocation_in_the_shared_cpu_table_is_named() -> None:
    text = sample().replace("| 3 | 1.90 |", "| 2 | 1.90 |")
    bad = h.inconsistencies(h.parse_invocations(text), h.parse_cpu(text))
    assert bad == ["CPU row 2 is a `--split` invocation; the table covers shared cores"]


def test_a_malformed_row_and_a_missing_one_are_errors() -> None:
    with pytest.raises(ValueError, match="row 3 is not"):
        h.parse_invocations(sample(ratio="73 %, 75, 60"))
    with pytest.raises(ValueError, match=r"no row: \[6\]"):
        h.parse_invocations(sample().replace("2 and 4-5 ran", "2, 4-5 and 6 ran"))


def test_the_record_agrees_with_itself_and_with_the_targets_table(tmp_path: Path) -> None:
    text = DOC.read_text(encoding="utf-8")
    inv, cpu = h.parse_invocations(text), h.parse_cpu(text)
    assert h.inconsistencies(inv, cpu) == []
    assert len(cpu) >= 10 and {c.number for c in cpu} <= {i.number for i in inv}
    numbers = [i.number for i in inv]
    assert numbers == list(range(1, len(inv) + 1))  # numbered in the order taken, none left out
    # the headline ranges in the targets table are the tables' own
    row = next(line for line in text.splitlines() if line.startswith("| 100 readings a message"))
    for split, pattern in ((False, r"Medians of (\d+)-(\d+) % over"), (True, r"and (\d+)-(\d+) % over")):
        m = re.search(pattern, row)
        assert m is not None, pattern
        medians = [i.ratio for i in inv if i.split == split]
        assert (int(m[1]), int(m[2])) == (min(medians), max(medians))
    m = re.search(r"(\d+\.\d+) the\s+median over these", text)
    assert m is not None and float(m[1]) == pytest.approx(statistics.median(c.budget for c in cpu), abs=0.005)
    # the table of the pipeline against ingest alone is the record's own
    pairs = re.findall(r"^\| (\d+)-(\d+)[^|]* \| (shared cores|InfluxDB apart) \| (\d+) of (\d+) \| (\d+) of "
                       r"(\d+) \| (\d+) \| (\d+) \| (\d+) \|$", text, re.M)
    assert len(pairs) >= 4
    for lo, hi, where, *counts in pairs:
        pairs = [(i.ratio, i.alone) for i in inv if int(lo) <= i.number <= int(hi)
                 and i.split == (where == "InfluxDB apart") and i.alone is not None]
        alone, rules_only, off_only, both = h.pairing(pairs)
        met = sum(p >= h.TARGET for p, _ in pairs)
        assert [int(c) for c in counts] == [met, len(pairs), alone, len(pairs), rules_only, off_only, both], (lo, where)
    h.plot(inv, cpu, tmp_path / "history.png")
    assert (tmp_path / "history.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
