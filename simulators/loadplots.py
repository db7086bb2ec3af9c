"""PNG plots of a load test: rates over time, latency over time (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from simulators.loadtest import Step


def _rates(times: list[float], counts: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Per-second rates from cumulative counts sampled at irregular times."""
    t = np.asarray(times, np.float64)
    c = np.asarray(counts, np.float64)
    if t.size < 2:
        return t, np.zeros_like(t)
    edges = np.arange(np.floor(t[0]), np.ceil(t[-1]) + 1.0)
    at = np.interp(edges, t, c)
    return edges[1:], np.diff(at) / np.diff(edges)


def plot(steps: list[Step], out: Path, label: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rate_png, latency_png = out / "loadtest_rate.png", out / "loadtest_latency.png"
    fig, ax = plt.subplots(figsize=(9, 4.2), dpi=100)
    rss_ax = ax.twinx()
    for k, s in enumerate(steps):
        if not s.series:
            continue
        t = [x[0] for x in s.series]
        tp, pub = _rates(t, [x[1] for x in s.series])
        ts, sto = _rates(t, [x[2] for x in s.series])
        first = k == 0
        ax.plot(tp, pub, color="tab:blue", lw=1, label="published/s" if first else None)
        ax.plot(ts, sto, color="tab:green", lw=1, alpha=0.8, label="stored in InfluxDB/s" if first else None)
        ax.hlines(s.rate, t[0], t[0] + s.seconds, colors="grey", linestyles="dashed",
                  label="target" if first else "_nolegend_")
        if s.rss_mb:
            rss_ax.plot([x[0] for x in s.rss_mb], [x[1] for x in s.rss_mb], color="tab:red", lw=0.8,
                        label="pipeline RSS" if first else None)
    ax.set_xlabel("seconds since the load test began")
    ax.set_ylabel("readings per second")
    rss_ax.set_ylabel("pipeline RSS (MB)", color="tab:red")
    lines = ax.get_legend_handles_labels()
    more = rss_ax.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], loc="upper left", fontsize=8)
    ax.set_title(f"load test rate ({label})")
    fig.tight_layout()
    fig.savefig(rate_png)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(9, 4.2), dpi=100)
    for k, s in enumerate(steps):
        if not s.latencies_ms:
            continue
        ax.scatter(s.latency_t, s.latencies_ms, s=6, alpha=0.6, label=f"{s.rate:,.0f}/s")
        p99 = s.p(99)
        if p99 is not None:
            ax.hlines(p99, min(s.latency_t), max(s.latency_t) + 1.0, colors="black", lw=1,
                      label="p99 of each step" if k == 0 else "_nolegend_")
    ax.set_yscale("log")
    ax.set_xlabel("seconds since the load test began (when the probe was sent)")
    ax.set_ylabel("publish to warning (ms)")
    ax.set_title(f"publish-to-warning latency ({label})")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(latency_png)
    plt.close(fig)
    return [rate_png, latency_png]
