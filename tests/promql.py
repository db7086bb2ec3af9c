"""What a PromQL expression names, checked against what the pipeline's registry exposes: the
Grafana dashboard and the Prometheus alert rules may only query series that exist."""

from __future__ import annotations

import re

from prometheus_client import REGISTRY

# functions, keywords and the target labels Prometheus adds, as they appear in our expressions
_WORDS = {"sum", "rate", "increase", "histogram_quantile", "max", "by", "le", "label_values", "instance",
          "job", "absent", "unless"}


def metric_names(expr: str) -> set[str]:
    """The series an expression reads, and any other word it holds that is not a known
    function or keyword (so that a misspelt function shows up as an unknown series)."""
    no_strings = re.sub(r'"[^"]*"', '""', expr)
    no_labels = re.sub(r"\{[^}]*\}", "", no_strings)
    no_grouping = re.sub(r"\bby\s*\([^)]*\)", "", no_labels)
    words = set(re.findall(r"\b[a-zA-Z_:][a-zA-Z0-9_:]*\b", no_grouping))
    return {w for w in words if w.startswith("ews_")} | ({w for w in words - _WORDS if not w.startswith("ews_")}
                                                         - {"__rate_interval", "h", "m"})


def label_names(expr: str) -> set[str]:
    """The labels an expression groups by or matches on."""
    no_strings = re.sub(r'"[^"]*"', '""', expr)
    grouped = {w.strip() for g in re.findall(r"\bby\s*\(([^)]*)\)", no_strings) for w in g.split(",")}
    matched = {m for sel in re.findall(r"\{([^}]*)\}", no_strings) for m in re.findall(r"(\w+)\s*[=!~]", sel)}
    return (grouped | matched) - {""}


def registered() -> set[str]:
    """Every series name the registry can expose (with _total, _bucket, ... suffixes), also of
    labelled metrics that have no series yet."""
    import ews.metrics  # noqa: F401  (registers them)

    return set().union(*REGISTRY._collector_to_names.values())


def labels_of(series: str) -> set[str]:
    """The labels the pipeline puts on a series it exposes (`le` on a histogram's buckets)."""
    import ews.metrics  # noqa: F401

    for collector, names in REGISTRY._collector_to_names.items():
        if series in names:
            own = set(getattr(collector, "_labelnames", ()))
            return own | ({"le"} if series.endswith("_bucket") else set())
    raise KeyError(series)
