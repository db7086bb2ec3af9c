"""How the hot path's numba functions (ingest's gateway scanner and line protocol, the
detectors' kernels) are compiled: bounds-checked, without the interpreter lock, and cached on
disk where numba finds a folder it may write. `guarded` leaves numba's bounds check out, for
the few functions on every reading's path that check each index themselves (the gateway
scanner's compact path: ingest/gatewayscan.py); the tests force the check back on
(`NUMBA_BOUNDSCHECK=1`) to show that none of them reaches outside an array.

`copy_bytes` copies a run of bytes between arrays as one `memcpy`, its bounds checked first
like every other access here. numba compiles a slice assignment (`out[k:k + n] = src[a:b]`)
into a general loop that costs about 25 ns for a run of 75 bytes, the length of a line's tags;
line protocol is made of such runs.

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

from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

log = logging.getLogger(__name__)
_said = [False]


def kernel(fn: Callable[..., Any]) -> Any:
    return _compiled(fn, boundscheck=True)


def guarded(fn: Callable[..., Any]) -> Any:
    """`kernel` without numba's own bounds check, for code that checks every index itself
    before using it (each such function says how)."""
    return _compiled(fn, boundscheck=False)


def _compiled(fn: Callable[..., Any], boundscheck: bool) -> Any:
    try:
        return njit(cache=True, nogil=True, boundscheck=boundscheck)(fn)
    except RuntimeError as exc:  # no writable cache folder
        if not _said[0]:
            _said[0] = True
            log.warning("compiled code cannot be cached (%s): it is compiled at every start; set "
                        "NUMBA_CACHE_DIR to a writable folder", exc)
        return njit(cache=False, nogil=True, boundscheck=boundscheck)(fn)


def _bytes_array(t: Any) -> bool:
    return isinstance(t, types.Array) and t.ndim == 1 and t.dtype == types.uint8 and t.layout == "C"


@intrinsic
def _memcpy(typingctx, dst, at, src, start, count):  # type: ignore[no-untyped-def]
    """dst[at:at + count] = src[start:start + count], unchecked: only `copy_bytes` calls it."""
    if not (_bytes_array(dst) and _bytes_array(src)
            and all(isinstance(x, types.Integer) for x in (at, start, count))):
        return None  # a typing error: only contiguous byte arrays are copied by address

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        d, i, s, j, n = args
        i, j, n = (context.cast(builder, v, signature.args[k], types.intp) for v, k in ((i, 1), (j, 3), (n, 4)))
        d_arr = context.make_array(signature.args[0])(context, builder, d)
        s_arr = context.make_array(signature.args[2])(context, builder, s)
        cgutils.raw_memcpy(builder, builder.gep(d_arr.data, [i]), builder.gep(s_arr.data, [j]), n, 1)
        return context.get_dummy_value()

    return types.void(dst, at, src, start, count), codegen


@kernel
def copy_bytes(dst, at, src, start, count):  # type: ignore[no-untyped-def]
    """dst[at:at + count] = src[start:start + count] for contiguous uint8 arrays; IndexError
    when either range reaches outside its array."""
    if count < 0 or at < 0 or start < 0 or at + count > dst.shape[0] or start + count > src.shape[0]:
        raise IndexError("copy_bytes: a range reaches outside its array")
    _memcpy(dst, at, src, start, count)  # type: ignore[call-arg]  # numba passes the typing context
