"""A ceiling on the freed memory tcmalloc keeps in a python step's process.

The server runs on tcmalloc (:mod:`vfq.server.embedded`): freed pages stay in the process for the
next request, so the copy of the next CT lands in pages already mapped. Without a ceiling, each
process of a step that takes the CT would keep the pages of the largest CT it ever received — a
2 GB upload would leave 2 GB behind in every such process. :class:`RetainedMemoryCap` checks
tcmalloc's page heap twice a second from a daemon thread and hands everything above the ceiling
back to the system (``MallocExtension_ReleaseToSystem``).

Uses the C API of gperftools' tcmalloc through ctypes; where the process does not run on it
(``allocator="system"``) the cap does nothing.
"""

from __future__ import annotations

import ctypes
import threading

#: Freed bytes a python step's process may keep for reuse, by default (config parameter
#: ``max_retained_mb``): several 512×512×300 CTs and their temporaries.
DEFAULT_MAX_RETAINED_MB = 1024
#: Seconds between two looks at the page heap.
PERIOD_S = 0.5
_FREE_BYTES = b"tcmalloc.pageheap_free_bytes"


class RetainedMemoryCap:
    """Keeps tcmalloc's free page heap at or below ``max_bytes``; ``active`` is false without tcmalloc.

    Args:
        max_bytes: the ceiling on freed-but-kept bytes.

    Attributes:
        released: bytes handed back so far (read it from the thread that reports it: an int, so
            reading it never sees half an update).
    """

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = max_bytes
        self.released = 0
        process = ctypes.CDLL(None)
        try:
            self._get = process.MallocExtension_GetNumericProperty
            self._release = process.MallocExtension_ReleaseToSystem
        except AttributeError:
            self.active = False
            return
        self._get.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_size_t)]
        self._get.restype = ctypes.c_int
        self._release.argtypes = [ctypes.c_size_t]
        self._release.restype = None
        self.active = True
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vfq-memory-cap", daemon=True)
        self._thread.start()

    def free_bytes(self) -> int:
        """Bytes tcmalloc holds freed and mapped, ready for reuse."""
        value = ctypes.c_size_t(0)
        return int(value.value) if self._get(_FREE_BYTES, ctypes.byref(value)) else 0

    def trim(self) -> int:
        """Hand back what lies above the ceiling now; returns the bytes asked back."""
        excess = self.free_bytes() - self.max_bytes
        if excess <= 0:
            return 0
        self._release(excess)
        self.released += excess
        return excess

    def stop(self) -> None:
        if self.active:
            self._stop.set()
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(PERIOD_S):
            self.trim()
