"""Prometheus metrics for every stage, in one place so names stay consistent."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

MESSAGES = Counter("ews_ingest_messages_total", "MQTT messages taken from the broker")
READINGS = Counter("ews_ingest_readings_total", "Readings accepted and stored", ["kind"])
REJECTED = Counter("ews_ingest_rejected_total", "Messages or readings rejected, by reason", ["reason"])
BATCHES = Counter("ews_ingest_batches_total", "Batches processed by the ingest worker")
BATCH_SIZE = Histogram(
    "ews_ingest_batch_messages", "Messages per ingest batch", buckets=(1, 10, 100, 500, 1000, 5000, 20000)
)
WRITE_SECONDS = Histogram(
    "ews_influx_write_seconds", "Time to write one batch to InfluxDB",
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
)
WRITE_ERRORS = Counter("ews_influx_write_errors_total", "Failed InfluxDB writes (retried)")
QUEUE_DEPTH = Gauge("ews_ingest_queue_depth", "Messages received and not yet processed")
EVENT_LAG = Histogram(
    "ews_ingest_event_lag_seconds", "Processing time minus event time of the newest live reading of "
    "each batch (drills left out)",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 5, 30, 60, 300, 3600, 86400),
)
HOST_CLOCK_BEHIND = Gauge(
    "ews_ingest_host_clock_behind_seconds", "How far this host's clock is behind the sensors' (0: it is not); "
    "readings are judged against theirs meanwhile"
)
QUEUE_BYTES = Gauge("ews_ingest_queue_bytes", "Payload bytes received and not yet processed")
BACKPRESSURE_SECONDS = Counter(
    "ews_ingest_backpressure_seconds_total", "Time the MQTT thread waited for room in the receive queue"
)
ACKS = Counter("ews_ingest_acks_total", "QoS 1 messages acknowledged to the broker")
SESSIONS_LOST = Counter(
    "ews_mqtt_sessions_lost_total", "Connections on which the broker had not kept this pipeline's session: what it "
    "was sent for us meanwhile is lost at the broker"
)
SUBSCRIPTIONS_REFUSED = Gauge(
    "ews_mqtt_subscriptions_refused", "Topic filters the broker refused on the current connection (its ACL): no "
    "reading under them arrives"
)
INFLIGHT_WINDOW = Gauge(
    "ews_ingest_inflight_window", "Unacknowledged messages the broker stops at, known or learned (0: none seen)"
)
WINDOW_CLOSED = Counter(
    "ews_ingest_window_closed_batches_total", "Batches closed because the broker's in-flight window was full"
)
LATE_STORED = Counter(
    "ews_ingest_late_readings_total", "Readings older than the allowed lateness, stored but not evaluated"
)
UNREGISTERED = Counter(
    "ews_ingest_unregistered_readings_total", "Readings of unregistered sensors stored (policy store)"
)
# the disk spool, per target database ("main" or "drill")
SPOOL_BYTES = Gauge("ews_spool_bytes", "Bytes of line protocol waiting in the disk spool", ["target"])
SPOOL_READINGS = Gauge("ews_spool_readings", "Readings waiting in the disk spool", ["target"])
SPOOL_LIMIT_BYTES = Gauge("ews_spool_limit_bytes", "Size at which the spool stops taking batches", ["target"])
SPOOL_FILLING = Gauge(
    "ews_spool_filling", "1 while the spool is past its warning fraction (2 when full: acks stop)", ["target"]
)
SPOOLED = Counter("ews_spool_spooled_readings_total", "Readings written to the spool", ["target"])
REPLAYED = Counter("ews_spool_replayed_readings_total", "Spooled readings replayed into InfluxDB", ["target"])
QUARANTINED = Counter(
    "ews_spool_quarantined_readings_total", "Readings InfluxDB would not store, kept on disk", ["target"]
)
QUARANTINE_DROPPED = Counter(
    "ews_spool_quarantine_dropped_readings_total", "Readings InfluxDB would not store, not kept: quarantine full",
    ["target"],
)
INFLUX_REFUSED = Counter(
    "ews_influx_refused_points_total",
    "Points InfluxDB would not store, by cause (beyond_retention, type_conflict, unparsable, too_large, refused)",
    ["target", "cause"],
)
INFLUX_REQUEST_LIMIT = Gauge(
    "ews_influx_request_limit_bytes", "Largest write request sent, learned from InfluxDB's 413 (0: none)", ["target"]
)
RULE_SECONDS = Histogram(
    "ews_rules_batch_seconds", "Time to evaluate rules over one batch",
    buckets=(0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1),
)
LEVEL_CHANGES = Counter("ews_rules_level_changes_total", "Level changes produced by rules", ["rule"])
PIPELINE_ERRORS = Counter("ews_pipeline_errors_total", "Unexpected errors caught in a stage", ["stage"])
ACKNOWLEDGED = Counter("ews_warnings_acknowledged_total", "Warnings acknowledged by people on duty")
SUPPRESSED = Counter(
    "ews_notifications_suppressed_total", "Transitions not notified, by what held them back", ["by"]
)
REMINDERS = Counter("ews_warning_reminders_total", "Reminders sent for unacknowledged warnings")
ESCALATIONS = Counter("ews_warning_escalations_total", "Escalations up the region tree, by tier", ["tier"])
DELIVERIES = Counter(
    "ews_delivery_attempts_total", "Delivery attempts by channel and result", ["channel", "result"]
)
DELIVERY_GIVEN_UP = Counter("ews_delivery_given_up_total", "Messages given up, by channel", ["channel"])
DELIVERY_SECONDS = Histogram(
    "ews_delivery_delay_seconds", "From a message's origin to its delivery, by channel", ["channel"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30, 60, 300, 3600),
)

# rules: which set is in force (one series, value 1, labelled with its version)
RULES_INFO = Gauge("ews_rules_info", "The rule set in force (value 1), by version", ["version"])
RULES_ACTIVE = Gauge("ews_rules_active", "Rules in force (hazard and device-fault rules)")
RULES_RELOADS = Counter("ews_rules_reloads_total", "Rule reloads asked for, by result", ["result"])
RULES_FILE_PROBLEMS = Gauge(
    "ews_rules_file_problems", "Problems in the rule files on disk that kept the last reload from loading "
    "(0: they load); the rules loaded before stay in force"
)
UNREACHABLE = Gauge(
    "ews_recipients_unreachable", "Contacts and routing targets none of whose channels is configured, found "
    "at start (the log names them): they hear of no warning"
)
RULES_WITHOUT_HISTORY = Gauge(
    "ews_rules_kinds_without_history", "Sensor kinds whose rules run on windows without their history (InfluxDB "
    "could not give it at start); tried again until it does"
)
RULES_FALLS_HELD = Counter(
    "ews_rules_falls_held_total", "Lowered or lifted levels not passed on: the kind's history is not read yet "
    "and InfluxDB does not answer", ["kind"]
)

# warnings: every transition, the open set and how long after its reading a warning was issued
WARNING_TRANSITIONS = Counter(
    "ews_warnings_transitions_total", "Warning transitions by type and level (the level after, or the "
    "level lifted for a resolve)", ["type", "level"]
)
OPEN_WARNINGS = Gauge("ews_warnings_open", "Open warnings by current level", ["level"])
ISSUE_LAG = Histogram(
    "ews_warning_issue_lag_seconds", "From the event time of the reading behind a transition to its commit",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 30, 60, 300, 3600),
)
# end to end: the reading's event time to the notification leaving the outbox
END_TO_END_LAG = Histogram(
    "ews_end_to_end_lag_seconds", "From the event time of the reading behind a notification to its "
    "delivery, by channel", ["channel"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 30, 60, 300, 3600),
)

# the HTTP API and dashboard
API_REQUESTS = Counter("ews_api_requests_total", "HTTP API requests by route and status", ["method", "route", "status"])
API_SECONDS = Histogram(
    "ews_api_request_seconds", "HTTP API request time by route", ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5),
)
API_DENIED = Counter("ews_api_denied_total", "Requests refused by access control, by reason", ["reason"])
API_STREAMS = Gauge("ews_api_event_streams", "Dashboards connected to the live event stream")


def set_rules(version: str, active: int) -> None:
    """Mark `version` as the rule set in force (the previous version's series goes)."""
    RULES_INFO.clear()
    RULES_INFO.labels(version).set(1)
    RULES_ACTIVE.set(active)


def set_open(levels: list[str]) -> None:
    """The open-warning gauge from scratch (at start-up): the level of every open warning."""
    for name in ("blue", "yellow", "orange", "red"):
        OPEN_WARNINGS.labels(name).set(levels.count(name))


def observe_transition(ttype: str, before: str, after: str, event_ts_ms: int, committed_ts_ms: int) -> None:
    """Count a warning transition (labelled with the level it is about: the new one, or the
    one lifted by a resolve) and move the open-warning gauge from `before` to `after`."""
    WARNING_TRANSITIONS.labels(ttype, before if ttype == "resolve" else after).inc()
    ISSUE_LAG.observe(max(0, committed_ts_ms - event_ts_ms) / 1000)
    if before != "none":
        OPEN_WARNINGS.labels(before).dec()
    if after != "none":
        OPEN_WARNINGS.labels(after).inc()


def initialise(counter: Counter, *label_sets: tuple[str, ...]) -> None:
    """Expose each labelled series at 0 before its first event: Prometheus's `increase()` sees
    no increase in a series whose first sample is already 1, so an alert on the first quarantine
    drop or the first message given up would otherwise never fire."""
    for labels in label_sets:
        counter.labels(*labels)


# the stages that count unexpected errors, and the results of a rule reload
PIPELINE_STAGES = ("ingest", "rules", "device", "warnings", "warnings-timer")
initialise(PIPELINE_ERRORS, *((s,) for s in PIPELINE_STAGES))
initialise(RULES_RELOADS, ("ok",), ("refused",))
