"""Keep large buffers in the heap, for processes that stream images.

An image streams as 1 MiB messages, and each one is several fresh 1 MiB
buffers (the file read, the protobuf field, gRPC's copy).  glibc hands out
such buffers with mmap or trims them off the heap's top as soon as they are
freed, so every message pays for new pages from the kernel (faults and
zeroing): measured here, a third of an upload's time.  Raising both
thresholds once keeps them in the heap, at the cost of up to TRIM bytes the
process keeps after a burst.  A no-op where libc is not glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP = 4 << 20  # buffers below this come from the heap
TRIM = 64 << 20  # free heap kept before it is given back to the kernel

_done = False
_lock = threading.Lock()


def keep_large_buffers() -> bool:
    """Raise glibc's mmap and trim thresholds (once per process); True if set."""
    global _done
    with _lock:
        if _done:
            return True
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            mallopt = libc.mallopt
        except (OSError, AttributeError):
            return False
        _done = bool(mallopt(M_MMAP_THRESHOLD, MMAP)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM))
        return _done
