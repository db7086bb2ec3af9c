"""The wheel a deployment installs (`pip install .`, not the editable install the tests run
from) carries every module and every data file of the source tree: a subpackage left out
(the API once was) or a data folder dropped shows up only on the production host."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# every top-level package of the tree but the tests: one added later is checked too
PACKAGES = sorted(p.parent.name for p in ROOT.glob("*/__init__.py") if p.parent.name != "tests")
DATA = {".yaml", ".html", ".js", ".css"}


def _source_files() -> set[str]:
    out = set()
    for top in PACKAGES:
        for p in (ROOT / top).rglob("*"):
            if p.is_file() and "__pycache__" not in p.parts and (p.suffix == ".py" or p.suffix in DATA):
                out.add(p.relative_to(ROOT).as_posix())
    return out


def _copy_tree(dest: Path) -> None:
    """What the build reads, copied: setuptools writes build/ and egg-info into the tree it builds."""
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dest / name)
    for top in PACKAGES:
        shutil.copytree(ROOT / top, dest / top, ignore=shutil.ignore_patterns("__pycache__"))


def test_wheel_holds_every_module_and_data_file(tmp_path: Path) -> None:
    src, out = tmp_path / "src", tmp_path / "dist"
    src.mkdir()
    _copy_tree(src)
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(src)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    # setuptools warns when a folder Python could import is not declared as a package
    assert "BuildBackendWarning" not in build.stderr, build.stderr[-3000:]
    wheels = list(out.glob("ews-*.whl"))
    assert len(wheels) == 1
    with zipfile.ZipFile(wheels[0]) as z:
        names = set(z.namelist())
    expected = _source_files()
    assert {"ews", "ingest", "detectors", "rules", "notifiers", "simulators"} <= set(PACKAGES)
    assert {"ews/api/app.py", "ews/api/static/index.html", "rules/defaults/gas.yaml"} <= expected
    missing = sorted(expected - names)
    assert not missing, f"left out of the wheel: {missing}"
    assert not any(n.startswith("tests/") for n in names)
