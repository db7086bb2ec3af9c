"""The `ews` command: run the pipeline, check rules, simulate, demo."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from ews.yamlfile import ConfigError

log = logging.getLogger("ews")


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)


def cmd_run(args: argparse.Namespace) -> int:
    from ews.config import load_config
    from ews.pipeline import Pipeline

    pipeline = Pipeline(load_config(args.config))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    if args.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(args.metrics_port, addr="127.0.0.1")
    pipeline.start()
    stop.wait()
    log.info("stopping: draining the ingest queue and the outbox")
    pipeline.stop()
    return 0


def cmd_rules_check(args: argparse.Namespace) -> int:
    from ews.regions import RegionRegistry
    from ews.sensors import SensorRegistry
    from rules.check import check_file

    sensors = None
    if args.sensors is not None:
        regions = RegionRegistry.load(args.regions) if args.regions is not None else None
        sensors = SensorRegistry.load(args.sensors, regions)
    problems = check_file(Path(args.path), sensors)
    for line in problems:
        print(line, file=sys.stderr)
    if problems:
        print(f"{args.path}: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print(f"{args.path}: OK")
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from ews.simulate import run_simulation

    return run_simulation(args)


def cmd_demo(args: argparse.Namespace) -> int:
    from ews.demo import run_demo

    return run_demo(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ews", description="Early-warning stream processor for city districts")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the pipeline until SIGINT/SIGTERM")
    run.add_argument("--config", required=True, type=Path)
    run.add_argument("--metrics-port", type=int, default=0, help="serve Prometheus metrics on 127.0.0.1:PORT")
    run.set_defaults(fn=cmd_run)

    rules = sub.add_parser("rules", help="rule files").add_subparsers(dest="rules_command", required=True)
    check = rules.add_parser("check", help="validate a rules file or folder; exits 1 with file:line: reason")
    check.add_argument("path")
    check.add_argument("--sensors", type=Path, help="also bind against this sensor registry")
    check.add_argument("--regions", type=Path, help="region registry for --sensors")
    check.set_defaults(fn=cmd_rules_check)

    sim = sub.add_parser("simulate", help="publish a simulated event over MQTT")
    sim.add_argument("scenario", choices=["rainstorm"])
    sim.add_argument("--config", required=True, type=Path, help="broker and registries come from here")
    sim.add_argument("--speed", type=float, default=360.0, help="event seconds per wall second")
    sim.add_argument("--hours", type=float, default=6.0, help="event-time length of the storm")
    sim.add_argument("--seed", type=int, default=522)
    sim.add_argument("--batch", action="store_true", help="publish per-street gateway batches")
    sim.set_defaults(fn=cmd_simulate)

    demo = sub.add_parser("demo", help="a simulated rainstorm over the sample district, end to end")
    demo.add_argument("--speed", type=float, default=360.0, help="event seconds per wall second")
    demo.add_argument("--seed", type=int, default=522)
    demo.add_argument("--state-dir", type=Path, default=Path(".state/demo"))
    demo.add_argument("--keep", action="store_true", help="leave the servers running at the end")
    demo.set_defaults(fn=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    try:
        return int(args.fn(args))
    except ConfigError as exc:
        for problem in exc.problems:
            print(str(problem), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
