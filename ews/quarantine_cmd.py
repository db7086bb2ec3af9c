"""`ews quarantine list|replay`: what InfluxDB refused to store, and sending it again once the
cause is mended (a field type conflict after its shard rolled over, a proxy's size limit
raised, a retention policy lengthened).

The quarantine (`<spool>/quarantine/*.lp`; drill readings under `<spool>/drill/quarantine/`)
is line protocol with millisecond timestamps. Posted by hand it needs `precision=ms`, or every
reading lands in January 1970, and the pipeline's database, credentials and CA; `replay` takes
all of that from the pipeline's own configuration. A file InfluxDB takes whole is deleted; one
it still refuses, whole or in part, stays, with InfluxDB's answer shown. A point written twice
is stored once, so a file may be sent again safely. It may run beside the pipeline, which only
ever adds new files there.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ews.config import Config, load_config
from ingest.influx import make_writer
from ingest.influx_v1 import WriteError
from ingest.spool import DRILL_FOLDER, QUARANTINE_FOLDER, batches


@dataclass
class Held:
    target: str  # main or drill
    database: str
    path: Path
    readings: int
    size: int


def held(cfg: Config) -> list[Held]:
    """The quarantined files, oldest first, main then drill."""
    spool = cfg.spool_dir
    out = []
    for target, folder, db in (("main", spool / QUARANTINE_FOLDER, cfg.influxdb.database),
                               ("drill", spool / DRILL_FOLDER / QUARANTINE_FOLDER, cfg.influxdb.drill_db)):
        for path, _, readings in batches(folder):
            out.append(Held(target, db, path, readings, path.stat().st_size))
    return out


def run_quarantine(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    files = held(cfg)
    if not files:
        print("the quarantine is empty")
        return 0
    if args.action == "list":
        for h in files:
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(h.path.stat().st_mtime))
            print(f"{h.target:5}  {h.path}  {h.readings} readings  {h.size:,} bytes  kept {when}")
        print(f"{len(files)} files, {sum(h.readings for h in files)} readings")
        return 0
    return _replay(cfg, files)


def _replay(cfg: Config, files: list[Held]) -> int:
    writers = {db: make_writer(cfg.influxdb, db) for db in {h.database for h in files}}
    stored = kept = 0
    try:
        for h in files:
            try:
                writers[h.database].write(h.path.read_bytes())
            except WriteError as exc:
                if exc.retryable:  # down, or credentials: the rest would fail alike
                    print(f"ews quarantine: InfluxDB did not take {h.path}: {exc}; nothing more sent",
                          file=sys.stderr)
                    return 1
                kept += h.readings
                print(f"still refused, kept: {h.path}: {exc}")
                continue
            h.path.unlink()
            stored += h.readings
            print(f"stored, deleted: {h.path} ({h.readings} readings into {h.database})")
    finally:
        for w in writers.values():
            w.close()
    print(f"{stored} readings stored; {kept} still refused")
    return 1 if kept else 0
