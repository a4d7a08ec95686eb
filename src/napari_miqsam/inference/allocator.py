"""glibc's malloc told to keep large freed blocks for reuse, so a click does not page-fault its buffers.

A click allocates and frees the same few tens-of-MB buffers every time (stride-2 maps: 16 queries x
76^3 cells at 128^3 is 28 MB each). glibc serves blocks that large with ``mmap`` and returns them to
the kernel on ``free``, so the next click takes fresh zeroed pages again, and whether it does depends
on glibc's adaptive threshold: a 128^3 click on 2 CPU cores varied from 65 to 170 ms in one process.
With blocks up to 32 MB served from the heap (``M_MMAP_THRESHOLD``; glibc's own adaptive limit) and
the heap's top returned to the kernel only beyond 512 MB free (``M_TRIM_THRESHOLD``), the same
clicks took 61-65 ms every time. The cost: up to 512 MB of freed memory may stay mapped to the
process between clicks (peak memory is unchanged). Linux with glibc only; elsewhere nothing is done.
The ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` environment variables, when set, win.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024
TRIM_THRESHOLD = 512 * 1024 * 1024

_done = False


def keep_freed_blocks() -> bool:
    """Set the two glibc malloc thresholds above, once per process. True when they were set."""
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ:
        return False  # the user chose
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    except (OSError, AttributeError):
        return False
    _done = ok
    return ok
