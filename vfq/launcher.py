"""The ``vfq`` command's entry point: the process on transparent huge pages, then the command.

Kept apart from :mod:`vfq.client.cli` so that the process runs again (:mod:`vfq.hugepages`) before
the client's imports, not after them.
"""

from __future__ import annotations

from vfq.hugepages import relaunch_with_hugepages


def vfq() -> int:
    """Run ``vfq`` with the process's arguments (:func:`vfq.client.cli.main`); returns its exit code."""
    relaunch_with_hugepages()
    from vfq.client.cli import main

    return main()
