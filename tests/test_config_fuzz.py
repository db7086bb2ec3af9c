"""Mutated configuration and registry files: `ews run` either refuses them with problems that
name the file (and line, where the file has one), or builds its pipeline from them.

The sample district's config.yaml, regions.yaml, sensors.yaml, roster.yaml and devices.yaml
are changed as the rule files are (tests/test_rules_fuzz.py), one file at a time, and the
pipeline is built as `ews run` builds it before it connects anywhere. Seeds are fixed so a
failure reproduces.
"""

from __future__ import annotations

import random
import re
import shutil
from pathlib import Path

import pytest
import yaml

from ews.config import load_config, sample_dir
from ews.pipeline import Pipeline
from ews.yamlfile import ConfigError

from .mutation import mutated_files

EDGES = [
    0, -1, 1, 0.5, 1e300, float("nan"), float("inf"), "", "x", "440106", "440106001", "440106001001", "44010600100",
    "rain", "gas", None, True, False, [], {}, [1], {"a": 1}, "x" * 300, 2**63, "http://127.0.0.1:1", "../..", "/",
    "zh-CN", "red", "00:00", "25:61", "04-15", "13-45", "$warning_level", 10**6,
]
KEYS = ["extra", "id", "code", "kind", "params", "tags", "lat", "lon", "contacts", "role", "name", "channels", "type",
        "url", "roster", "from", "to", "profile"]
FILES = ["config.yaml", "regions.yaml", "sensors.yaml", "roster.yaml", "devices.yaml"]
NAMED = re.compile(r"^\S+(:\d+)?: ")  # file[:line]: field: reason


@pytest.mark.parametrize("seed", [1, 2])
def test_every_mutated_configuration_is_refused_by_file_or_builds(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    docs = {f: yaml.safe_load((sample_dir() / f).read_text(encoding="utf-8")) for f in FILES}
    refused = built = 0
    for n, name, doc in mutated_files(rng, docs, EDGES, KEYS, 40):
        folder = tmp_path / str(n)
        shutil.copytree(sample_dir(), folder)
        config = dict(docs["config.yaml"], state_dir=str(folder / "state"))
        if name == "config.yaml" and isinstance(doc, dict) and "state_dir" in doc:
            doc["state_dir"] = str(folder / "state")  # never the sample's own state
        files = {"config.yaml": config, name: doc}
        for f, d in files.items():
            (folder / f).write_text(yaml.safe_dump(d, allow_unicode=True), encoding="utf-8")
        pipeline = None
        try:
            pipeline = Pipeline(load_config(folder / "config.yaml"))
            built += 1
        except ConfigError as exc:
            refused += 1
            assert exc.problems and all(NAMED.match(str(p)) for p in exc.problems), exc.problems
        finally:
            if pipeline is not None:
                pipeline.stop()
    assert refused > 10 and built > 5, (refused, built)
