"""The memory allocator of the embedded Triton (vfq.server.embedded): tcmalloc preloaded into the
server and every python-backend stub, glibc's malloc when asked, a warning when it is missing."""

from __future__ import annotations

import ctypes.util
from pathlib import Path

import pytest

from vfq.server.embedded import EmbeddedServer, allocator_preload


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc's parent links)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text(encoding="utf-8").rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # a process that ended meanwhile
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def mapped_libraries(pid: int) -> set[str]:
    maps = Path(f"/proc/{pid}/maps").read_text(encoding="utf-8").splitlines()
    return {Path(line.split()[-1]).name for line in maps if line.endswith(".so") or ".so." in line}


def test_the_server_and_every_stub_run_on_tcmalloc(server):
    assert server.preload is not None, "tcmalloc is missing: `make setup` installs libtcmalloc-minimal4"
    stubs = [
        pid
        for pid in descendants(server.process.pid)
        if b"triton_python_backend_stub" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]
    assert len(stubs) == 10  # five python models, two instances each
    for pid in [server.process.pid, *stubs]:
        assert any(name.startswith("libtcmalloc") for name in mapped_libraries(pid)), pid


def test_the_preload_goes_first_and_the_system_allocator_preloads_nothing(monkeypatch):
    monkeypatch.setenv("LD_PRELOAD", "libother.so")
    tcmalloc = EmbeddedServer()
    assert tcmalloc.environment()["LD_PRELOAD"] == f"{tcmalloc.preload} libother.so"
    assert EmbeddedServer(allocator="system").environment()["LD_PRELOAD"] == "libother.so"
    monkeypatch.delenv("LD_PRELOAD")
    assert "LD_PRELOAD" not in EmbeddedServer(allocator="system").environment()


def test_a_missing_tcmalloc_is_a_warning_that_says_what_to_install(monkeypatch):
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    with pytest.warns(RuntimeWarning, match=r"tcmalloc is not installed \(Debian: libtcmalloc-minimal4\)"):
        server = EmbeddedServer()
    assert server.preload is None


def test_an_unknown_allocator_is_refused():
    with pytest.raises(ValueError, match=r"must be one of \('tcmalloc', 'system'\), got 'jemalloc'"):
        allocator_preload("jemalloc")
