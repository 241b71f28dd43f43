# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Give the memory that the C heap holds free back to the operating system.

A frame is scored on threads, each allocating and freeing arrays of a few
megabytes (tiles, bands, windows). glibc keeps such freed blocks in the
heap of the thread that allocated them, so the resident memory grows by
the blocks each thread last held: 2-3 bytes a pixel on a 8192x8192 frame.
``malloc_trim(0)`` returns them, as Dask's workers do to release memory;
where glibc is not the C library this does nothing.
"""

import ctypes
import ctypes.util
import sys

__all__ = ["release_free_memory"]


def _malloc_trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, ...)
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


_TRIM = _malloc_trim()


def release_free_memory():
    """Return the C heap's free memory to the system; True if it could."""
    if _TRIM is None:
        return False
    _TRIM(0)
    return True
