"""`ews silence add|list|cancel`: silences and maintenance windows from the command line.

They are written to the pipeline's SQLite file; a running pipeline sees them within a second.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime
from pathlib import Path

from pydantic import ValidationError

from ews.regions import RegionRegistry
from ews.store import Store
from ews.yamlfile import validation_lines
from notifiers.silence import SilenceError, Silences
from notifiers.templates import BEIJING


def _show(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, BEIJING).strftime("%Y-%m-%d %H:%M")


def run_silence(args: argparse.Namespace) -> int:
    from ews.config import load_config

    cfg = load_config(args.config)
    regions = RegionRegistry.load(cfg.registries.regions)
    with Store(Path(cfg.state_dir) / "warnings.sqlite") as store:
        silences = Silences(store, regions)
        try:
            if args.action == "add":
                start = args.start if args.start is not None else int(time.time() * 1000)
                if args.end is not None:
                    end = args.end
                elif args.hours:
                    end = start + int(args.hours * 3_600_000)
                else:
                    raise SilenceError("end", "give --end or --hours")
                s = silences.add({"region": args.region, "sensor": args.sensor, "rule": args.rule,
                                  "starts_ts_ms": args.start, "ends_ts_ms": end,
                                  "author": args.author or "", "reason": args.reason or ""})
                print(f"{s['id']}: {s['kind']} {_show(s['starts_ts_ms'])} – {_show(s['ends_ts_ms'])}")
            elif args.action == "cancel":
                if not args.id or not args.author:
                    raise SilenceError("id", "cancel needs the silence id and --author")
                if not silences.cancel(args.id, args.author):
                    print(f"{args.id}: no such silence in force", file=sys.stderr)
                    return 1
                print(f"{args.id}: cancelled")
            else:
                now = int(time.time() * 1000)
                for s in store.silences():
                    if not args.all and (s["cancelled_ts_ms"] is not None or s["ends_ts_ms"] <= now):
                        continue
                    what = ", ".join(f"{k}={s[k]}" for k in ("region", "sensor", "rule") if s[k])
                    print(f"{s['id']}  {s['kind']:<11} {_show(s['starts_ts_ms'])} – {_show(s['ends_ts_ms'])}  "
                          f"{what}  by {s['author']}: {s['reason']}"
                          + (f"  (cancelled by {s['cancelled_by']})" if s["cancelled_by"] else ""))
        except ValidationError as exc:
            print(f"ews silence: {'; '.join(validation_lines(exc, 'silence'))}", file=sys.stderr)
            return 2
        except (SilenceError, ValueError) as exc:
            print(f"ews silence: {exc}", file=sys.stderr)
            return 2
    return 0
