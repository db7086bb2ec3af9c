"""`ews rules check PATH`: every problem in a rule file or folder, one human line each."""

from __future__ import annotations

from pathlib import Path

from ews.regions import RegionRegistry
from ews.sensors import SensorRegistry
from ews.yamlfile import ConfigError
from rules.binding import bind, bind_fault
from rules.loader import collect
from rules.model import RuleSpec


def check_file(
    path: Path | str,
    sensors: SensorRegistry | None = None,
    *,
    sensors_path: Path | str | None = None,
    regions_path: Path | str | None = None,
) -> list[str]:
    """Lines "file:line: field: reason" (empty when the rules are good).

    All files are checked, including those of profiles. With a sensor registry (given, or
    loaded from `sensors_path`) the rules are also bound and every (rule, sensor) that would
    be skipped is listed; with a region registry, rule regions must exist in it.
    """
    files, problems = collect(Path(path))
    lines = [str(p) for p in problems]
    regions: RegionRegistry | None = None
    try:
        if regions_path is not None:
            regions = RegionRegistry.load(regions_path)
        if sensors_path is not None:
            sensors = SensorRegistry.load(sensors_path, regions)
    except ConfigError as exc:
        return lines + [str(p) for p in exc.problems]
    if problems:
        return lines
    for f in files:
        for spec in f.specs():
            section = "rules" if isinstance(spec, RuleSpec) else "faults"
            where = f"{f.file}:{spec.line}: {section}.{spec.id}"
            if regions is not None:
                lines += [f"{where}: region {code} is not in the region registry"
                          for code in spec.select.regions if code not in regions]
            if sensors is not None:
                found = bind(spec, sensors)[1] if isinstance(spec, RuleSpec) else bind_fault(spec, sensors)[1]
                lines += [f"{where}: {msg}" for msg in found]
    return lines
