"""The long-lived heap, out of the garbage collector's way.

A full collection walks every object the collector tracks. After start-up that is some
100,000 objects (imported modules, registries, rules, rebuilt detector state), 70-100 ms with
the interpreter lock held, and the first one comes soon after start, in the middle of the
backlog a restarted pipeline is catching up on (bench/ingest.py caught it there: 0.07-0.1 s
of a run's 0.6 s of CPU). `settle()` collects once and freezes what survives (`gc.freeze`),
so later collections walk only what was made since.

Frozen objects are never collected, even when they become garbage in a cycle; so a rules
reload, which replaces the largest long-lived structure (the engine and its windows), calls
`settle()` again, which unfreezes first: anything replaced meanwhile (a re-read token file, a
drill lane's engine) is freed then at the latest.
"""

from __future__ import annotations

import gc


def settle() -> None:
    gc.unfreeze()
    gc.collect()
    gc.freeze()
