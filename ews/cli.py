"""The `ews` command: run the pipeline, check rules, simulate, demo."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from ews import argtypes
from ews.statelock import FolderInUse
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

    config = load_config(args.config)
    if args.metrics_port:
        from prometheus_client import start_http_server

        try:
            start_http_server(args.metrics_port, addr=args.metrics_host)
        except OSError as exc:
            # most often a second shard on the same host with the same port
            print(f"ews run: cannot serve metrics on {args.metrics_host}:{args.metrics_port}: {exc.strerror or exc} "
                  f"(each pipeline on a host needs its own --metrics-port)", file=sys.stderr)
            return 1
    pipeline = Pipeline(config)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
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


def cmd_rules_explain(args: argparse.Namespace) -> int:
    from rules.commands import explain

    return explain(args)


def cmd_backtest(args: argparse.Namespace) -> int:
    from rules.commands import backtest

    return backtest(args)


def _rule_source_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="configuration file: registries, rules, profiles, InfluxDB")
    p.add_argument("--rules", type=Path, help="rules file or folder (default: the config's, else the packaged)")
    p.add_argument("--profile", action="append", help="rule profile (repeatable; default: the config's)")
    p.add_argument("--sensors", type=Path, help="sensor registry without --config (default: the sample)")
    p.add_argument("--regions", type=Path, help="region registry without --config (default: the sample)")


def cmd_simulate(args: argparse.Namespace) -> int:
    from ews.simulate import run_simulation

    return run_simulation(args)


def cmd_broker_provision(args: argparse.Namespace) -> int:
    from ews.brokerauth import provision

    passwords = provision(args.clients, args.out)
    creds = args.out / "credentials.txt"
    creds.write_text("".join(f"{k} {v}\n" for k, v in passwords.items()))
    creds.chmod(0o600)
    print(f"wrote {args.out / 'passwd'} and {args.out / 'acl'} for {len(passwords)} clients; "
          f"passwords in {creds} (mode 600): move them to your secret store and delete the file")
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from simulators.replay import run_replay

    return run_replay(args)


def cmd_loadtest(args: argparse.Namespace) -> int:
    from simulators.loadtest import run_loadtest

    return run_loadtest(args)


def cmd_cap_feed(args: argparse.Namespace) -> int:
    from notifiers.cap_feed import serve

    return serve(str(args.db), args.listen, args.base_url)


def cmd_report(args: argparse.Namespace) -> int:
    from ews.report import run_report

    try:
        return run_report(args)
    except ValueError as exc:
        print(f"ews report: {exc}", file=sys.stderr)
        return 2


def cmd_quarantine(args: argparse.Namespace) -> int:
    from ews.quarantine_cmd import run_quarantine

    return run_quarantine(args)


def cmd_silence(args: argparse.Namespace) -> int:
    from ews.silence_cmd import run_silence

    return run_silence(args)


def cmd_api_token(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from ews.api.auth import token_entry
    from ews.yamlfile import validation_lines

    try:
        token, entry = token_entry(args.name, args.role, args.region, args.expires)
    except ValidationError as exc:
        for line in validation_lines(exc, "token"):
            print(line, file=sys.stderr)
        return 2
    print(f"token (give it to {args.name}; it is not stored anywhere and cannot be shown again):\n  {token}\n")
    print("add to the tokens file under `tokens:`:")
    print(entry, end="")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from ews.demo import run_demo
    from ews.servers import ServerError

    try:
        return run_demo(args)
    except ServerError as exc:  # a server missing or not starting: what to do, not a traceback
        print(f"ews demo: {exc}", file=sys.stderr)
        return 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ews", description="Early-warning stream processor for city districts")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the pipeline until SIGINT/SIGTERM")
    run.add_argument("--config", required=True, type=Path)
    run.add_argument("--metrics-port", type=argtypes.port, default=0,
                     help="serve Prometheus metrics on PORT (0: not at all)")
    run.add_argument("--metrics-host", default="127.0.0.1",
                     help="address to serve them on; 0.0.0.0 in a container, where Prometheus scrapes its address")
    run.set_defaults(fn=cmd_run)

    rules = sub.add_parser("rules", help="rule files").add_subparsers(dest="rules_command", required=True)
    check = rules.add_parser("check", help="validate a rules file or folder; exits 1 with file:line: reason")
    check.add_argument("path")
    check.add_argument("--sensors", type=Path, help="also bind against this sensor registry")
    check.add_argument("--regions", type=Path, help="region registry for --sensors")
    check.set_defaults(fn=cmd_rules_check)
    explain = rules.add_parser("explain", help="which rules apply to a sensor, with its resolved parameters")
    explain.add_argument("sensor")
    _rule_source_args(explain)
    explain.add_argument("--json", action="store_true", help="print the explanation as JSON")
    explain.set_defaults(fn=cmd_rules_explain)

    bt = sub.add_parser("backtest", help="replay rules over history (CSV or InfluxDB), score against recorded "
                                         "events, plot a timeline")
    _rule_source_args(bt)
    src = bt.add_mutually_exclusive_group(required=True)
    src.add_argument("--csv", type=Path, help="history as CSV: sensor, ts, value")
    src.add_argument("--influx", action="store_true", help="history from the InfluxDB of --config")
    bt.add_argument("--from", dest="since", help="start of the history (epoch ms or ISO time; Beijing if naive)")
    bt.add_argument("--to", help="end of the history (default: now, with --influx)")
    bt.add_argument("--events", type=Path, help="recorded events (CSV or YAML: sensor or region, level, start, end)")
    bt.add_argument("--max-lead", type=argtypes.duration_ms, default="3h",
                    help="how early a warning may come and still count (default 3h)")
    bt.add_argument("--rule", action="append", help="score only this rule (repeatable; default: every hazard rule)")
    bt.add_argument("--min-accuracy", type=argtypes.fraction, help="exit 1 when the accuracy is below this (0..1)")
    bt.add_argument("--plot", type=Path, help="write a timeline PNG here")
    bt.add_argument("--changes-csv", type=Path, help="write every level change to this CSV")
    bt.add_argument("--all", action="store_true", help="print every level change")
    bt.set_defaults(fn=cmd_backtest)

    sim = sub.add_parser("simulate", help="publish a scenario (file or shipped name) over MQTT")
    sim.add_argument("scenario", help="a scenario YAML file, or a shipped one: rainstorm, typhoon, river_flood, "
                     "gas_leak, fire, faulty_network, quiet_day")
    sim.add_argument("--config", required=True, type=Path, help="broker, registries and rules come from here")
    sim.add_argument("--speed", type=argtypes.speed, help="event seconds per wall second (default: the file's)")
    sim.add_argument("--hours", type=argtypes.positive, help="event-time length (default: the file's)")
    sim.add_argument("--seed", type=argtypes.whole, help="default: the file's")
    sim.add_argument("--batch", action="store_true", help="publish per-street gateway batches")
    sim.add_argument("--drill", action=argparse.BooleanOptionalAction, default=None,
                     help="publish as a drill (演练) or not (default: the file's)")
    sim.add_argument("--dry-run", action="store_true", help="run the rules alone, check `expect:`, publish nothing")
    sim.set_defaults(fn=cmd_simulate)

    rep = sub.add_parser("replay", help="publish a recorded event (CSV or InfluxDB history) at a chosen speed")
    rep.add_argument("--config", required=True, type=Path, help="broker and registries (and InfluxDB) come from here")
    src = rep.add_mutually_exclusive_group(required=True)
    src.add_argument("--csv", type=Path, help="CSV with columns sensor, ts, value (ts: epoch s/ms or RFC 3339)")
    src.add_argument("--influx", metavar="FROM/TO", help="history from InfluxDB between two RFC 3339 times, "
                     "e.g. 2020-05-22T00:00:00+08:00/2020-05-22T12:00:00+08:00")
    rep.add_argument("--database", help="InfluxDB database to read (default: the configuration's)")
    rep.add_argument("--sensors", help="comma-separated sensor ids or region codes to replay (default: all)")
    rep.add_argument("--speed", type=argtypes.speed, default=60.0, help="event seconds per wall second")
    rep.add_argument("--keep-time", action="store_true", help="keep the recorded timestamps (default: shift "
                     "them so the event ends now)")
    rep.add_argument("--live", action="store_true", help="publish as live readings, not as a drill "
                     "(only for a system that is not in service)")
    rep.add_argument("--batch", action="store_true", help="publish per-street gateway batches")
    rep.set_defaults(fn=cmd_replay)

    lt = sub.add_parser("loadtest", help="drive the pipeline with N sensors at R readings/s; report loss and latency")
    lt.add_argument("--config", required=True, type=Path, help="broker and InfluxDB (and, with --pid, registries)")
    lt.add_argument("--sensors", type=argtypes.count, default=1000,
                    help="sensors publishing (generated, or from the registry)")
    lt.add_argument("--rate", type=argtypes.positive, default=2000.0, help="readings per second")
    lt.add_argument("--duration", type=argtypes.positive, default=10.0, help="seconds per run (per step when stepped)")
    lt.add_argument("--processes", type=argtypes.whole, default=0,
                    help="publisher processes (0: one per 15,000 readings/s)")
    lt.add_argument("--pid", type=argtypes.count, help="attach to a running pipeline (its registry is in --config) "
                    "instead of starting one")
    lt.add_argument("--stepped", action="store_true", help="raise the rate step by step until loss or "
                    "latency breaks a limit; report the highest sustainable rate")
    lt.add_argument("--step", type=argtypes.non_negative, default=0.0, help="rate added per step (0: double each step)")
    lt.add_argument("--max-rate", type=argtypes.positive, default=200_000.0)
    lt.add_argument("--max-p99-ms", type=argtypes.positive, default=1000.0, help="stepped mode: latency limit")
    lt.add_argument("--out", type=Path, default=Path("loadtest-out"), help="folder for the summary JSON and PNG plots")
    lt.set_defaults(fn=cmd_loadtest)

    broker = sub.add_parser("broker", help="broker credentials and ACLs").add_subparsers(
        dest="broker_command", required=True
    )
    prov = broker.add_parser("provision", help="write a Mosquitto password file and ACL from a client registry")
    prov.add_argument("clients", type=Path, help="YAML list of clients (see ews/sample/broker-clients.yaml)")
    prov.add_argument("out", type=Path, help="folder for passwd, acl and credentials.txt")
    prov.set_defaults(fn=cmd_broker_provision)

    feed = sub.add_parser("cap-feed", help="serve the CAP Atom feed of a cap channel's message file")
    feed.add_argument("--db", required=True, type=Path, help="the cap channel's `db` file")
    feed.add_argument("--listen", type=argtypes.listen, default="127.0.0.1:8090", help="host:port")
    feed.add_argument("--base-url", help="public address of the feed, used in its links")
    feed.set_defaults(fn=cmd_cap_feed)

    report = sub.add_parser("report", help="warning KPIs per region and period: table, CSV and PNG chart")
    report.add_argument("--config", required=True, type=Path, help="registries and state_dir come from here")
    report.add_argument("--from", dest="start", required=True, help="2024-07-01 or '2024-07-01 08:00' (Beijing)")
    report.add_argument("--to", dest="end", required=True, help="end, exclusive; a date alone includes that day")
    report.add_argument("--region", help="report on the children of this region code (default: per district)")
    report.add_argument("--drill", action="store_true", help="report on drill warnings instead of real ones")
    report.add_argument("--out", default="ews-report", help="write OUT.csv and OUT.png (default: ews-report)")
    report.set_defaults(fn=cmd_report)

    quarantine = sub.add_parser("quarantine", help="readings InfluxDB refused to store: list them, or send them "
                                "again once the cause is mended")
    quarantine.add_argument("action", choices=["list", "replay"])
    quarantine.add_argument("--config", required=True, type=Path, help="the pipeline's configuration")
    quarantine.set_defaults(fn=cmd_quarantine)

    silence = sub.add_parser("silence", help="silences and maintenance windows (notifications held back)")
    silence.add_argument("action", choices=["add", "list", "cancel"])
    silence.add_argument("id", nargs="?", help="cancel: the silence id")
    silence.add_argument("--config", required=True, type=Path, help="registries and state_dir come from here")
    silence.add_argument("--region", help="a region code: its whole subtree")
    silence.add_argument("--sensor", help="a sensor id")
    silence.add_argument("--rule", help="a rule id")
    silence.add_argument("--start", type=argtypes.beijing_ms, help="'2024-07-01 08:00' (Beijing; default: now)")
    silence.add_argument("--end", type=argtypes.beijing_ms, help="'2024-07-01 18:00' (Beijing)")
    silence.add_argument("--hours", type=argtypes.positive, help="instead of --end: this many hours after the start")
    silence.add_argument("--author", help="who asks (add, cancel)")
    silence.add_argument("--reason", help="why (add)")
    silence.add_argument("--all", action="store_true", help="list: also ended and cancelled ones")
    silence.set_defaults(fn=cmd_silence)

    api = sub.add_parser("api", help="HTTP API and dashboard").add_subparsers(dest="api_command", required=True)
    tok = api.add_parser("token", help="make an API token; prints it once and the hash entry for the tokens file")
    tok.add_argument("--name", required=True, help="identity written in the audit log, e.g. 沙河街道值班室")
    tok.add_argument("--role", required=True, choices=["viewer", "duty_officer", "admin"])
    tok.add_argument("--region", required=True, help="6/9/12-digit region code of its subtree, or '*'")
    tok.add_argument("--expires", help="RFC 3339 time after which the token is refused")
    tok.set_defaults(fn=cmd_api_token)

    demo = sub.add_parser("demo", help="a simulated rainstorm over the sample district, end to end")
    demo.add_argument("--speed", type=argtypes.speed, default=360.0, help="event seconds per wall second")
    demo.add_argument("--seed", type=argtypes.whole, default=522)
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
    except FolderInUse as exc:  # a second pipeline (run, demo) on state another one holds
        print(f"ews {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
