"""Why a message or reading was rejected: one stable code per cause.

Codes are metric label values and appear on the dead-letter topic, so they never change
meaning once published.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Reason(StrEnum):
    BAD_TOPIC = "bad_topic"  # not ews/..., wrong depth, empty segment
    BAD_REGION_CODE = "bad_region_code"  # segment is not a 6/9/12-digit code of the right shape
    UNKNOWN_REGION = "unknown_region"  # well-formed code missing from the region registry
    UNKNOWN_KIND = "unknown_kind"
    UNKNOWN_SENSOR = "unknown_sensor"
    KIND_MISMATCH = "kind_mismatch"  # topic kind differs from the registered kind
    REGION_MISMATCH = "region_mismatch"  # sensor registered under another region
    PAYLOAD_TOO_LARGE = "payload_too_large"
    EMPTY_PAYLOAD = "empty_payload"
    NOT_UTF8 = "not_utf8"
    BAD_JSON = "bad_json"
    BAD_SHAPE = "bad_shape"  # valid JSON of the wrong shape (e.g. a string, or no readings)
    MISSING_FIELD = "missing_field"
    BAD_VALUE_TYPE = "bad_value_type"  # value is not a number (strings, bools, null)
    VALUE_NOT_FINITE = "value_not_finite"
    OUT_OF_RANGE = "out_of_range"
    BAD_TIMESTAMP = "bad_timestamp"
    FUTURE_TIMESTAMP = "future_timestamp"
    TOO_OLD = "too_old"  # older than the allowed lateness, under the reject policy
    BEYOND_RETENTION = "beyond_retention"  # older than InfluxDB's retention policy keeps
    UNKNOWN_UNIT = "unknown_unit"  # a unit we have no conversion for
    UNIT_MISMATCH = "unit_mismatch"  # a known unit of another quantity than the kind's
    SENML_BAD_RECORD = "senml_bad_record"  # a record is not an object, or a field has the wrong type
    SENML_NO_NAME = "senml_no_name"  # neither bn nor n, where no topic names the sensor
    SENML_BAD_NAME = "senml_bad_name"  # the name does not fit {sensor}[:{measure}], or names another sensor
    SENML_NO_VALUE = "senml_no_value"  # a record without v or vb
    SENML_UNSUPPORTED = "senml_unsupported"  # vs/vd/s values, or a bver above 10
    SENML_NO_READING = "senml_no_reading"  # a battery/rssi record with no reading at the same time
    PROCESSING_FAILED = "processing_failed"  # handling it raised: a bug, isolated to this message


@dataclass(slots=True)
class Rejection:
    reason: Reason
    detail: str
    topic: str
    payload: bytes
    index: int | None = None  # position of the reading inside a batch payload

    def excerpt(self, limit: int = 200) -> str:
        text = self.payload[:limit].decode("utf-8", errors="replace")
        return text + ("…" if len(self.payload) > limit else "")


class Rejected(Exception):
    def __init__(self, reason: Reason, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
