"""How the hot path's numba functions (ingest's gateway scanner and line protocol, the
detectors' kernels) are compiled: bounds-checked, without the interpreter lock, and cached on
disk where numba finds a folder it may write.

numba refuses to cache (a RuntimeError when the function is defined, i.e. when the module is
imported) if neither `NUMBA_CACHE_DIR`, the source's `__pycache__` nor the user's cache folder
is writable: a read-only install run by a user without a home. The pipeline must start there
too, so such a function is compiled without a cache instead, at every start (7-8 s of CPU,
before the first message), and the log says how to avoid it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from numba import njit

log = logging.getLogger(__name__)
_said = [False]


def kernel(fn: Callable[..., Any]) -> Any:
    try:
        return njit(cache=True, nogil=True, boundscheck=True)(fn)
    except RuntimeError as exc:  # no writable cache folder
        if not _said[0]:
            _said[0] = True
            log.warning("compiled code cannot be cached (%s): it is compiled at every start; set "
                        "NUMBA_CACHE_DIR to a writable folder", exc)
        return njit(cache=False, nogil=True, boundscheck=True)(fn)
