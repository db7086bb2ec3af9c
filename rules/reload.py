"""Hot reload: watch the rule files and the calendar, and load a new rule set when they change.

Polling modification times (every 2 s by default) needs no inotify, works on network and
container file systems, and costs a few `stat` calls. A rule set that does not load is
rejected as a whole: every problem is logged with file, line and reason and counted, the
rules in force stay in force, and the same broken files are not retried until they change
again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from ews import metrics
from ews.yamlfile import ConfigError, Problem
from rules.loader import DEFAULTS_DIR, load_rules
from rules.model import RuleSet

log = logging.getLogger(__name__)
Stamp = tuple[tuple[str, int, int], ...]


def stamp_of(path: Path | None) -> Stamp:
    root = DEFAULTS_DIR if path is None else Path(path)
    files = sorted([*root.glob("*.yaml"), *root.glob("*.yml")]) if root.is_dir() else [root]
    out = []
    for f in files:
        try:
            st = f.stat()
            out.append((str(f), st.st_mtime_ns, st.st_size))
        except OSError:
            out.append((str(f), -1, -1))
    return tuple(out)


class RuleWatcher:
    def __init__(self, path: Path | None, profiles: Callable[[], list[str]]):
        self.path = path
        self.profiles_now = profiles
        self.profiles = profiles()
        self.stamp = stamp_of(path)
        self.ruleset = load_rules(path, self.profiles)  # a bad set at start-up stops the start
        self.problems: list[Problem] = []

    def poll(self, force: bool = False, count: bool = True) -> RuleSet | None:
        """A new rule set if the files or the profiles changed and it loads; else None.

        `count` False leaves the reload metric to the caller (the HTTP API counts its own).
        """
        stamp = stamp_of(self.path)
        profiles = self.profiles_now()
        if not force and stamp == self.stamp and profiles == self.profiles:
            return None
        self.stamp = stamp
        try:
            ruleset = load_rules(self.path, profiles)
        except ConfigError as exc:
            self.problems = exc.problems
            metrics.RULES_FILE_PROBLEMS.set(len(exc.problems))
            self.profiles = profiles  # do not retry until something changes again
            if count:
                metrics.RULES_RELOADS.labels("refused").inc()
            for p in exc.problems:
                log.error("rules reload rejected, previous rules (version %s) stay in force: %s",
                          self.ruleset.version, p)
            return None
        self.problems = []
        metrics.RULES_FILE_PROBLEMS.set(0)
        self.profiles = profiles
        if ruleset.digest == self.ruleset.digest:
            return None  # touched, not changed
        if ruleset.version == self.ruleset.version:
            log.warning("rules changed but their version %s did not: warnings will not tell the two "
                        "apart (bump `version:` in the file, or leave it out to use a content hash)",
                        ruleset.version)
        if count:
            metrics.RULES_RELOADS.labels("ok").inc()
        log.info("rules reloaded: version %s -> %s (profiles: %s)", self.ruleset.version, ruleset.version,
                 ", ".join(profiles) or "none")
        self.ruleset = ruleset
        return ruleset
