"""The memory a process tree holds, read from ``/proc``, and its peaks while a sweep runs."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

from vfq.server.embedded import process_tree

#: How often :class:`MemorySampler` reads the RSS (s).
MEMORY_PERIOD_S = 0.2
#: :class:`MemorySampler` reads the PSS again when the summed RSS exceeds this multiple of its value
#: at the last reading.
PSS_REREAD_GROWTH = 1.01


def tree_memory_kib(root: int) -> tuple[int, int]:
    """Sum of ``VmRSS`` and of ``RssAnon`` (KiB) over the process tree of ``root``, from
    ``/proc/<pid>/status`` (cheap: about 0.3 ms for the server's tree). A page that n processes map
    (the python backend's shared memory) counts n times in ``VmRSS``."""
    rss, anon = _tree_sum_kib(root, "status", ("VmRSS", "RssAnon"))
    return rss, anon


def tree_pss_kib(root: int) -> int:
    """Sum of ``Pss`` (KiB) over the process tree of ``root``, from ``/proc/<pid>/smaps_rollup``: a
    page that n processes map counts 1/n in each, so the sum is what the tree holds. Costly — the
    kernel walks every mapping, 12 ms for the idle server's tree, holding each process's memory map
    lock meanwhile —, so :class:`MemorySampler` reads it only when the RSS grows."""
    return _tree_sum_kib(root, "smaps_rollup", ("Pss",))[0]


def _tree_sum_kib(root: int, proc_file: str, keys: Sequence[str]) -> list[int]:
    """Per key, the sum over the process tree of ``root`` of the ``key: N kB`` lines of
    ``/proc/<pid>/<proc_file>``; a process that exits meanwhile counts 0."""
    totals = dict.fromkeys(keys, 0)
    for pid in process_tree(root):
        try:
            text = Path(f"/proc/{pid}/{proc_file}").read_text(encoding="utf-8")
        except OSError:
            continue
        for line in text.splitlines():
            key, _, value = line.partition(":")
            if key in totals:
                totals[key] += int(value.split()[0])
    return [totals[key] for key in keys]


class MemorySampler:
    """Samples :func:`tree_memory_kib` every ``period_s`` in a thread and keeps the peaks (MiB); reads
    :func:`tree_pss_kib` only when the summed RSS has grown by :data:`PSS_REREAD_GROWTH` since its
    last reading (read every period it slowed the sweep it measured: 2.7-3.0 instead of 3.1-3.3
    scans/s at two clients), so the PSS peak is the PSS at the RSS peaks, within that growth."""

    def __init__(self, root: int, period_s: float = MEMORY_PERIOD_S) -> None:
        self.root, self.period_s = root, period_s
        self.peak_rss_mib = self.peak_pss_mib = self.peak_anon_mib = 0.0
        self._rss_at_pss_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            rss, anon = tree_memory_kib(self.root)
            self.peak_rss_mib = max(self.peak_rss_mib, rss / 1024)
            self.peak_anon_mib = max(self.peak_anon_mib, anon / 1024)
            if rss > self._rss_at_pss_kib * PSS_REREAD_GROWTH:
                self._rss_at_pss_kib = rss
                self.peak_pss_mib = max(self.peak_pss_mib, tree_pss_kib(self.root) / 1024)
            if self._stop.wait(self.period_s):
                return

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
