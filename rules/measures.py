"""What the rules of one sensor kind measure, computed once per round for all of them.

The rules of a kind share one ring buffer per sensor, so their measures are columns of one
matrix (k readings x C measures): the reading itself, rolling sums for the union of their
accumulation windows (and the shortened windows accumulation forecasts need), least-squares
trends, and forecasts. A rule picks its columns by index. The same code evaluates at each
sensor's newest reading (the hot path, with remembered window starts) or at any past time
(warming up a changed rule from the readings already held).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from detectors.accumulate import Accumulator, first_after, rolling_sums
from detectors.forecast import accumulation_forecast, accumulation_spans, value_forecast
from detectors.trend import slopes
from detectors.windows import FloatArray, IntArray, Windows
from rules.binding import Binding

Key = tuple[str, int, int, int]  # (what, ms, ms, ms), unused parts 0
VALUE_KEY: Key = ("value", 0, 0, 0)


@dataclass
class MeasurePlan:
    spans: list[int] = field(default_factory=list)  # accumulator windows, ms
    fits: list[int] = field(default_factory=list)  # least-squares windows, ms
    forecasts: list[Key] = field(default_factory=list)
    columns: dict[Key, int] = field(default_factory=lambda: {VALUE_KEY: 0})
    gather: int = 0  # slots gathered for trends

    @property
    def n_columns(self) -> int:
        return len(self.columns)

    @property
    def longest_ms(self) -> int:
        return max([0, *self.spans, *self.fits])

    @classmethod
    def for_rules(cls, bindings: list[Binding]) -> MeasurePlan:
        spans: set[int] = set()
        fits: set[int] = set()
        forecasts: list[Key] = []
        for b in bindings:
            spec = b.spec
            spans.update(spec.windows_ms.values())
            fits.update(spec.trends_ms.values())
            for fc in spec.forecasts.values():
                if fc.of == "value":
                    fits.add(fc.fit_ms)
                    key: Key = ("fc_value", fc.horizon_ms, fc.fit_ms, 0)
                else:
                    w = spec.windows_ms[fc.of]
                    spans.update([w, fc.fit_ms, *[s for s in accumulation_spans(w, fc.horizon_ms) if s > 0]])
                    key = ("fc_sum", w, fc.horizon_ms, fc.fit_ms)
                if key not in forecasts:
                    forecasts.append(key)
        plan = cls(sorted(spans), sorted(fits), forecasts)
        for s in plan.spans:
            plan.columns[("sum", s, 0, 0)] = len(plan.columns)
        for f in plan.fits:
            plan.columns[("slope", f, 0, 0)] = len(plan.columns)
            plan.columns[("fit", f, 0, 0)] = len(plan.columns)
        for key in forecasts:
            plan.columns[key] = len(plan.columns)
        return plan

    def key_of(self, b: Binding, measure: str) -> Key:
        spec = b.spec
        if measure == "value":
            return VALUE_KEY
        if measure in spec.windows_ms:
            return ("sum", spec.windows_ms[measure], 0, 0)
        if measure in spec.trends_ms:
            return ("slope", spec.trends_ms[measure], 0, 0)
        fc = spec.forecasts[measure]
        if fc.of == "value":
            return ("fc_value", fc.horizon_ms, fc.fit_ms, 0)
        return ("fc_sum", spec.windows_ms[fc.of], fc.horizon_ms, fc.fit_ms)

    def compute(self, win: Windows, acc: Accumulator | None, rows: IntArray, value: FloatArray,
                t: IntArray | None = None) -> FloatArray:
        """(k, C) measures of `rows`: at each newest reading (t None) or at times `t`."""
        k = rows.shape[0]
        if self.n_columns == 1:
            return value[:, None]
        out = np.empty((k, self.n_columns))
        out[:, 0] = value
        c = 1
        if self.spans:
            spans = np.asarray(self.spans, np.int64)
            if t is None:
                assert acc is not None
                out[:, c:c + len(self.spans)] = acc.sums_at_newest(rows)
            else:
                out[:, c:c + len(self.spans)] = rolling_sums(win, rows, t, spans)
            c += len(self.spans)
        if self.fits:
            upto = None if t is None else first_after(win, rows, t)
            tt = win.newest(rows)[0] if t is None else t
            a, b = slopes(win, rows, tt, np.asarray(self.fits, np.int64), self.gather, upto)
            for j in range(len(self.fits)):
                out[:, c] = b[:, j]
                out[:, c + 1] = a[:, j]
                c += 2
        for key in self.forecasts:
            if key[0] == "fc_value":
                _, horizon, fit, _ = key
                out[:, c] = value_forecast(out[:, self.columns[("fit", fit, 0, 0)]],
                                           out[:, self.columns[("slope", fit, 0, 0)]], horizon)
            else:
                _, w, horizon, fit = key
                cols = [self.columns[("sum", s, 0, 0)] if s > 0 else -1
                        for s in accumulation_spans(w, horizon)]
                shortened = np.stack([out[:, j] if j >= 0 else np.zeros(k) for j in cols], axis=1)
                out[:, c] = accumulation_forecast(out[:, self.columns[("sum", w, 0, 0)]], shortened,
                                                  out[:, self.columns[("sum", fit, 0, 0)]], fit, horizon)
            c += 1
        return out
