"""bench/rules_against.py keeps the two trees' modules apart, in one process."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

import detectors.windows
from bench import rules_against as ra


def copy_with_other_rings(to: Path) -> Path:
    """The project's packages, with rings sized otherwise: a tree told apart by one default."""
    for package in ra.PACKAGES:
        shutil.copytree(ra.ROOT / package, to / package, ignore=shutil.ignore_patterns("__pycache__"))
    windows = to / "detectors" / "windows.py"
    text = windows.read_text(encoding="utf-8")
    assert "extra: int = 32" in text
    windows.write_text(text.replace("extra: int = 32", "extra: int = 7"), encoding="utf-8")
    return to


def test_each_tree_runs_on_its_own_modules_and_this_one_is_left_as_it_was(tmp_path: Path) -> None:
    before = {k: v for k, v in sys.modules.items() if ra._tree_module(k)}
    other = ra.Tree(copy_with_other_rings(tmp_path))
    # building it left this process's modules in place
    assert {k: v for k, v in sys.modules.items() if ra._tree_module(k)} == before
    assert Path(other.modules["rules.engine"].__file__ or "").is_relative_to(tmp_path)
    assert other.modules["ews.models"] is not sys.modules["ews.models"]
    import ews.metrics as ours

    assert "ews.metrics" not in other.modules
    with other.active():
        import ews.metrics as theirs_metrics

        assert theirs_metrics is ours  # shared: prometheus-client takes a metric once a process
        import detectors.windows as theirs

        assert theirs.capacity_for(3_600_000, 300_000) == 32  # 15 + 7 slots, to a power of two
        assert theirs is not detectors.windows
        # a module first imported during the turn comes from that tree, and stays with it
        import rules.backtest as late

        assert Path(late.__file__ or "").is_relative_to(tmp_path)
    assert detectors.windows.capacity_for(3_600_000, 300_000) == 64  # 15 + 32
    assert sys.modules["detectors.windows"] is detectors.windows
    assert Path(other.modules["rules.backtest"].__file__ or "").is_relative_to(tmp_path)
    assert {k: v for k, v in sys.modules.items() if ra._tree_module(k)} == before


def test_a_tree_that_imports_from_elsewhere_is_refused(tmp_path: Path) -> None:
    """A folder without the packages would quietly run this tree's engine twice."""
    (tmp_path / "rules").mkdir()
    with pytest.raises(SystemExit, match="came from outside"):
        ra.Tree(tmp_path)


def test_a_revision_that_is_not_a_commit_is_named() -> None:
    with pytest.raises(SystemExit, match="'no-such-rev' is not a commit"):
        ra.checkout("no-such-rev")
