"""Reading history for the rules: from InfluxDB (InfluxQL), the ingest spool or a CSV file,
into pandas and then into event-time batches for the engine.

Used to rebuild detector state after a restart and to replay history in backtests. InfluxQL
is asked per kind (one measurement each) with `GROUP BY "sensor"` in chunks, so a day of
10 000 sensors streams as a few hundred JSON documents rather than one huge one; each chunk
goes straight into numpy arrays. Values that are not numbers (another writer's strings, which
InfluxDB lets sit in shards of their own) are skipped and logged, not the end of a start. The
spool holds what InfluxDB has not taken yet (it was down or slow), as line protocol. A CSV
holds the columns `sensor, ts, value` (ts in epoch milliseconds or RFC 3339 / ISO 8601; times
without an offset are Beijing time).
"""

from __future__ import annotations

import itertools
import logging
from array import array
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import httpx
import numpy as np
import orjson
import pandas as pd  # type: ignore[import-untyped]

from ews.models import ReadingBatch
from ews.sensors import SensorRegistry
from ingest.influx_v1 import InfluxV1
from ingest.lineproto import read_lines

COLUMNS = ["sensor", "ts", "value"]
log = logging.getLogger(__name__)


class HistoryError(Exception):
    """History could not be read (server down, no InfluxQL, bad CSV); the message says why."""

    def __init__(self, message: str, unreachable: bool = False):
        super().__init__(message)
        self.unreachable = unreachable  # the server did not answer at all


def _quote(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def influx_history(influx: InfluxV1, kind: str, since_ms: int, until_ms: int,
                   sensors: list[str] | None = None, chunk_size: int = 20_000,
                   progress: Callable[[int], None] | None = None) -> pd.DataFrame:
    """Readings of one kind with since < ts <= until as a DataFrame (sensor, ts, value)."""
    where = f"time > {int(since_ms)}ms AND time <= {int(until_ms)}ms"
    if sensors:
        ids = " OR ".join(f"\"sensor\" = '{s}'" for s in sensors if "'" not in s)
        where += f" AND ({ids})"
    q = f'SELECT "value" FROM {_quote(kind)} WHERE {where} GROUP BY "sensor"'
    params = {"db": influx.database, "q": q, "epoch": "ms", "chunked": "true", "chunk_size": str(chunk_size)}
    names: list[str] = []
    ts_parts: list[np.ndarray] = []
    val_parts: list[np.ndarray] = []
    skipped = 0
    try:
        with influx.http.stream("GET", "/query", params=params) as r:
            if r.status_code != 200:
                raise HistoryError(f"InfluxDB /query answered {r.status_code}: {r.read()[:300]!r}")
            for line in r.iter_lines():
                if not line.strip():
                    continue
                doc = orjson.loads(line)
                for res in doc.get("results", []):
                    if "error" in res:
                        if "database not found" in str(res["error"]):
                            return pd.DataFrame({c: [] for c in COLUMNS})
                        raise HistoryError(f"InfluxQL error: {res['error']}")
                    for series in res.get("series", []):
                        if series.get("columns", [])[:2] != ["time", "value"]:
                            # VictoriaMetrics answers every /query with its list of databases
                            raise HistoryError(f"/query answered {str(series)[:200]} instead of readings: "
                                               f"the server does not speak InfluxQL")
                        rows = series.get("values") or []
                        if not rows:
                            continue
                        try:
                            arr = np.asarray([(row[0], np.nan if row[1] is None else row[1]) for row in rows],
                                             np.float64)
                        except (TypeError, ValueError):
                            arr, others = _numbers_only(rows)
                            skipped += others
                            if not len(arr):
                                continue
                        names.append(series.get("tags", {}).get("sensor", ""))
                        ts_parts.append(arr[:, 0].astype(np.int64))
                        val_parts.append(arr[:, 1])
                        if progress is not None:
                            progress(len(rows))
    except httpx.HTTPError as exc:
        raise HistoryError(f"InfluxDB unreachable at {influx.http.base_url}: {exc!r}", unreachable=True) from exc
    if skipped:
        log.warning("%s history: %d values that are not numbers skipped (written by something other than "
                    "this pipeline: InfluxDB keeps a field's type per shard, so they can sit beside ours)",
                    kind, skipped)
    if not names:
        return pd.DataFrame({c: [] for c in COLUMNS})
    return pd.DataFrame({
        "sensor": np.repeat(np.asarray(names, dtype=object), [p.shape[0] for p in ts_parts]),
        "ts": np.concatenate(ts_parts),
        "value": np.concatenate(val_parts),
    })


def _numbers_only(rows: list[list[object]]) -> tuple[np.ndarray, int]:
    """(time, value) rows whose value is a number (or null), and how many were not."""
    kept = [(row[0], np.nan if row[1] is None else row[1]) for row in rows
            if row[1] is None or isinstance(row[1], int | float)]
    return np.asarray(kept, np.float64).reshape(-1, 2), len(rows) - len(kept)


def spool_history(batches: Iterable[bytes], since_ms: int) -> dict[str, pd.DataFrame]:
    """Readings with ts > since of the spool's line-protocol batches, per kind (sensor, ts, value)."""
    # times and values in typed arrays, 8 bytes a reading each: a full spool holds millions
    cols: dict[str, tuple[list[str], array[int], array[float]]] = {}
    for lines in batches:
        for kind, sensor, ts, value in read_lines(lines):
            if ts > since_ms:
                c = cols.setdefault(kind, ([], array("q"), array("d")))
                c[0].append(sensor)  # one str object per series, shared
                c[1].append(ts)
                c[2].append(value)
    return {k: pd.DataFrame({"sensor": pd.Series(c[0], dtype=object), "ts": np.frombuffer(c[1], np.int64),
                             "value": np.frombuffer(c[2], np.float64)}) for k, c in cols.items()}


def csv_history(path: Path | str) -> pd.DataFrame:
    try:
        df = pd.read_csv(path, dtype={"sensor": str})
    except (OSError, ValueError) as exc:
        raise HistoryError(f"{path}: cannot read CSV: {exc}") from exc
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise HistoryError(f"{path}: missing column(s) {', '.join(missing)}; the columns are sensor, ts, value")
    return pd.DataFrame({"sensor": df["sensor"].astype(str), "ts": parse_ts(df["ts"], str(path)),
                         "value": pd.to_numeric(df["value"], errors="coerce")})


def parse_ts(col: pd.Series, where: str) -> np.ndarray:
    """Epoch milliseconds from numbers or date-time text (text without an offset is Beijing time)."""
    num = pd.to_numeric(col, errors="coerce")
    if num.notna().all():
        out: np.ndarray = num.astype(np.int64).to_numpy()
        return out
    text = col.astype(str).str.strip()
    aware = text.str.contains(r"(?:Z|[+-]\d{2}:?\d{2})$", regex=True)
    out = np.zeros(len(text), np.int64)
    try:
        for mask, utc in ((aware, True), (~aware, False)):
            if not mask.any():
                continue
            t = pd.to_datetime(text[mask], utc=utc, format="ISO8601")
            if not utc:
                t = t.dt.tz_localize("Asia/Shanghai")
            out[mask.to_numpy()] = t.dt.tz_convert("UTC").dt.as_unit("ms").astype("int64").to_numpy()
    except (ValueError, TypeError) as exc:
        first = str(exc).split(". You might", 1)[0]  # pandas goes on with advice about its own arguments
        raise HistoryError(f"{where}: cannot read times (use epoch ms or ISO 8601): {first}") from exc
    return out


def batches(df: pd.DataFrame, sensors: SensorRegistry, span_ms: int = 3_600_000
            ) -> tuple[Iterator[ReadingBatch], int, list[str]]:
    """Event-time slices of `span_ms` as ReadingBatches, the count of readings they hold, and
    the ids not in the registry (their readings are left out)."""
    idx = df["sensor"].map(sensors.index)
    unknown = sorted(set(df["sensor"][idx.isna()].astype(str)))
    ok = idx.notna().to_numpy() & np.isfinite(df["value"].to_numpy(np.float64))
    sensor = idx[ok].astype(np.int64).to_numpy()
    ts = df["ts"].to_numpy(np.int64)[ok]
    value = df["value"].to_numpy(np.float64)[ok]
    order = np.argsort(ts, kind="stable")
    sensor, ts, value = sensor[order], ts[order], value[order]

    def gen() -> Iterator[ReadingBatch]:
        if ts.shape[0] == 0:
            return
        edges = np.arange(int(ts[0]) // span_ms * span_ms, int(ts[-1]) + span_ms + 1, span_ms)
        cuts = np.searchsorted(ts, edges, side="left")
        for a, b in itertools.pairwise(cuts):
            if b > a:
                yield ReadingBatch(sensor[a:b], ts[a:b], value[a:b])

    return gen(), int(ts.shape[0]), unknown
