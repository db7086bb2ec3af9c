"""The long-lived heap, out of the garbage collector's way, and the batches' memory, mapped
once.

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

A batch's buffers (its payloads joined, its columns, its line protocol and the copies of it
that are written) come to megabytes, made and freed batch after batch. glibc's allocator
hands such blocks back to the kernel when they are freed (above its thresholds, which it
raises as it goes) and the next batch faults them in again, page by page: about 2 µs a 4 KB
page on this machine, 1,000 pages a 20,000-reading batch in line protocol alone, twice what
the compiled layout itself costs. `keep_freed_memory()` has it keep what it frees below 32 MB for
the next allocation, and `reserve()`, called by each of the collector's worker threads before
the broker is connected, maps the memory that thread's batches will use in its own arena (glibc
gives each thread one), so a backlog right after a start does not pay the faults either. The
process then keeps its high-water mark of memory, which the batch limits bound.
"""

from __future__ import annotations

import ctypes
import gc
import logging

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # the most glibc takes on 64-bit; larger blocks are mapped apart
_kept = [False]


def settle() -> None:
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def keep_freed_memory() -> bool:
    """Have the C allocator keep freed blocks under 32 MB for reuse instead of returning them to
    the kernel; False where the C library has no `mallopt` that takes it (not glibc)."""
    if _kept[0]:
        return True
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    _kept[0] = bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    if not _kept[0]:
        log.info("the C library does not take glibc's malloc settings; batches' memory is faulted in as it comes")
    return _kept[0]


def reserve(nbytes: int) -> None:
    """Map `nbytes` in the calling thread's allocator arena now (written, so every page is
    faulted in, then freed into the arena), once `keep_freed_memory()` has made freed memory
    stay; without it this would only cost the faults."""
    if _kept[0]:
        bytearray(min(nbytes, _MMAP_THRESHOLD_MAX - 1024 * 1024))
