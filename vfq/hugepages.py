"""Transparent huge pages for the CT-sized buffers of a client process (glibc's malloc).

Reading a CT and sending it over plain gRPC fill several buffers the size of the CT: SimpleITK's
image, its LPS-reoriented copy, the serialized request and gRPC's own copy of it. glibc's malloc
takes each block that large freshly from the kernel (``mmap``), and the first write to each of its
4 KiB pages traps into the kernel, which maps and zeroes it: for the 157 MB of a 512×512×300 int16
CT that is 38 000 page faults, which cost several times the copy itself. With glibc's tunable
``glibc.malloc.hugetlb=1`` (glibc ≥ 2.35) malloc asks the kernel for transparent huge pages
(``madvise(MADV_HUGEPAGE)``), 2 MiB each: 75 faults. On the 2-core reference machine (kernel
mode ``madvise``; benchmarks/README.md) ``vfq.io.read_ct`` of that CT took 45 ms instead of 164 as
``.nii.gz`` and 240 instead of 313 as a DICOM series, and ``VfqClient.analyze`` of the ``.nii.gz``
0.72 s instead of 0.96 over plain gRPC, 0.61 instead of 0.74 over shared memory.

A tunable is read when a process starts, so :func:`relaunch_with_hugepages` — called first by
the ``vfq`` command (:mod:`vfq.launcher`) — executes the process again with it set, once, where it
makes a difference: Linux with glibc ≥ 2.35 whose kernel gives huge pages on request only (mode
``madvise``, the common default; in mode ``always`` every large block gets them anyway, in
``never`` none can). A ``GLIBC_TUNABLES`` that already names the tunable is left as it is, so
``GLIBC_TUNABLES=glibc.malloc.hugetlb=0`` turns this off. A service that imports
:class:`vfq.client.VfqClient` can set the variable in its own environment; plain-gRPC requests
interleaved with ONNX Runtime inference in the same process did not gain from it. The figures are of
a virtual machine whose hypervisor takes back free guest memory (free page reporting), where fresh
pages, huge ones most, are slower to touch than on a host without it (benchmarks/README.md).

Standard library only: this runs before anything heavy is imported.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Mapping
from pathlib import Path

__all__ = ["TUNABLE", "environment_with_hugepages", "glibc_version", "relaunch_with_hugepages", "thp_mode"]

#: glibc's malloc tunable; value 1: transparent huge pages through ``madvise``.
TUNABLE = "glibc.malloc.hugetlb"
#: The first glibc that knows the tunable.
MIN_GLIBC = (2, 35)
#: Where Linux says when it gives transparent huge pages: ``always [madvise] never``.
THP_ENABLED = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def thp_mode(path: Path = THP_ENABLED) -> str | None:
    """The kernel's transparent-huge-page mode (``"always"``, ``"madvise"``, ``"never"``), the one
    in brackets in ``path``; ``None`` where the file is missing or unreadable (not Linux, say)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return None
    start, end = text.find("["), text.find("]")
    return text[start + 1 : end] if 0 <= start < end else None


def glibc_version() -> tuple[int, ...] | None:
    """This process's glibc version, ``(2, 36)`` say; ``None`` where the C library is not glibc."""
    name, version = platform.libc_ver()
    if name != "glibc":
        return None
    try:
        return tuple(int(part) for part in version.split("."))
    except ValueError:
        return None


def environment_with_hugepages(
    environ: Mapping[str, str], glibc: tuple[int, ...] | None, mode: str | None
) -> dict[str, str] | None:
    """The environment to run the process again with, or ``None`` when there is no need.

    Args:
        environ: the process's environment.
        glibc: the C library's version where it is glibc, else ``None`` (:func:`glibc_version`).
        mode: the kernel's transparent-huge-page mode, ``None`` if unknown (:func:`thp_mode`).

    Returns:
        ``environ`` with ``glibc.malloc.hugetlb=1`` added to ``GLIBC_TUNABLES`` (after the tunables
        already there), where the C library is glibc ≥ 2.35, the mode is ``madvise`` and
        ``GLIBC_TUNABLES`` does not name the tunable yet; otherwise ``None``.
    """
    tunables = environ.get("GLIBC_TUNABLES", "")
    named = any(item.split("=", 1)[0] == TUNABLE for item in tunables.split(":"))
    if glibc is None or glibc < MIN_GLIBC or mode != "madvise" or named:
        return None
    return {**environ, "GLIBC_TUNABLES": ":".join(t for t in (tunables, f"{TUNABLE}=1") if t)}


def relaunch_with_hugepages() -> None:
    """Execute this process again, same interpreter and arguments, with the environment of
    :func:`environment_with_hugepages` for this process; return at once where that is ``None`` or
    the command line is unknown, and carry on as before if the execution fails. Call it before the
    process has started threads or written anything."""
    environment = environment_with_hugepages(os.environ, glibc_version(), thp_mode())
    if environment is None or not sys.executable or not sys.orig_argv:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], environment)
    except OSError:
        return
