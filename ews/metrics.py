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
    "ews_ingest_event_lag_seconds", "Processing time minus event time of accepted readings",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 5, 30, 60, 300, 3600, 86400),
)
RULE_SECONDS = Histogram(
    "ews_rules_batch_seconds", "Time to evaluate rules over one batch",
    buckets=(0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1),
)
LEVEL_CHANGES = Counter("ews_rules_level_changes_total", "Level changes produced by rules", ["rule"])
PIPELINE_ERRORS = Counter("ews_pipeline_errors_total", "Unexpected errors caught in a stage", ["stage"])
