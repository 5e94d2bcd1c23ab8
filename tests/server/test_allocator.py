"""The processes of the embedded Triton (vfq.server.embedded). Memory: tcmalloc preloaded into the
server and every python-backend stub, glibc's malloc when asked, a warning when it is missing; what
a step's process keeps of it bounded by ``max_retained_mb`` (vfq.server.memory). Threads: the numeric
libraries of every stub sized to one thread unless the environment says otherwise."""

from __future__ import annotations

import ctypes.util
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from server_factories import scrape, value

from vfq.client import VfqClient
from vfq.export.repository import write_repository
from vfq.server.embedded import LIBRARY_THREAD_VARIABLES, EmbeddedServer, allocator_preload, process_tree
from vfq.server.memory import RetainedMemoryCap
from vfq.volume import ImageGeometry


def mapped_libraries(pid: int) -> set[str]:
    maps = Path(f"/proc/{pid}/maps").read_text(encoding="utf-8").splitlines()
    return {Path(line.split()[-1]).name for line in maps if line.endswith(".so") or ".so." in line}


def stubs_of(server: EmbeddedServer, model: str | None = None) -> list[int]:
    """The python-backend stub processes of ``model`` (of every model for ``None``)."""
    found = []
    for pid in process_tree(server.process.pid):
        arguments = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if not arguments[0].endswith(b"triton_python_backend_stub"):
            continue
        if model is None or Path(arguments[1].decode()).parts[-3] == model:  # <model>/1/model.py
            found.append(pid)
    return found


def private_mib(pid: int) -> float:
    """The process's private resident memory (``RssAnon``), MiB."""
    status = Path(f"/proc/{pid}/status").read_text(encoding="utf-8")
    (line,) = [line for line in status.splitlines() if line.startswith("RssAnon:")]
    return int(line.split()[1]) / 1024


def test_the_server_and_every_stub_run_on_tcmalloc(server):
    assert server.preload is not None, "tcmalloc is missing: `make setup` installs libtcmalloc-minimal4"
    stubs = stubs_of(server)
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


def environment_of(pid: int) -> dict[str, str]:
    items = Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0")
    return dict(item.split("=", 1) for item in items if "=" in item)


def test_every_stub_runs_its_numeric_libraries_on_one_thread(server):
    stubs = stubs_of(server)
    assert len(stubs) == 10
    for pid in stubs:
        environment = environment_of(pid)
        assert {name: environment.get(name) for name in LIBRARY_THREAD_VARIABLES} == dict.fromkeys(
            LIBRARY_THREAD_VARIABLES, "1"
        ), pid


def test_library_threads_fill_in_what_the_environment_leaves_unset(monkeypatch):
    for name in LIBRARY_THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    environment = EmbeddedServer(library_threads=2).environment()
    assert {name: environment[name] for name in LIBRARY_THREAD_VARIABLES} == {
        "OPENBLAS_NUM_THREADS": "2",
        "OMP_NUM_THREADS": "4",
        "MKL_NUM_THREADS": "2",
    }
    untouched = EmbeddedServer(library_threads=None).environment()
    assert "OPENBLAS_NUM_THREADS" not in untouched and untouched["OMP_NUM_THREADS"] == "4"
    with pytest.raises(ValueError, match=r"library_threads must be >= 1 or None, got 0"):
        EmbeddedServer(library_threads=0)


def test_a_missing_tcmalloc_is_a_warning_that_says_what_to_install(monkeypatch):
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    with pytest.warns(RuntimeWarning, match=r"tcmalloc is not installed \(Debian: libtcmalloc-minimal4\)"):
        server = EmbeddedServer()
    assert server.preload is None


def test_an_unknown_allocator_is_refused():
    with pytest.raises(ValueError, match=r"must be one of \('tcmalloc', 'system'\), got 'jemalloc'"):
        allocator_preload("jemalloc")


def test_a_steps_process_hands_back_what_it_keeps_above_max_retained_mb(tmp_path):
    repository = write_repository("embedded", tmp_path / "repo")
    for step in ("preprocess", "straighten"):
        config = repository / step / "config.pbtxt"
        text = config.read_text(encoding="utf-8")
        assert 'key: "max_retained_mb", value: { string_value: "1024" }' in text
        config.write_text(text.replace('string_value: "1024"', 'string_value: "32"'), encoding="utf-8")
    localizer = repository / "spine_localizer" / "config.pbtxt"  # no ONNX Runtime arena: bounded too
    assert 'key: "memory_arena", value: { string_value: "false" }' in localizer.read_text(encoding="utf-8")
    with localizer.open("a", encoding="utf-8") as config:
        config.write('parameters { key: "max_retained_mb", value: { string_value: "32" } }\n')
    big = np.full((800, 512, 512), -1000, np.int16)  # 400 MiB: each CT step gets a copy
    small = big[:40, :64, :64].copy()
    with EmbeddedServer(repository) as server, VfqClient(server.grpc_url, shared_memory=True) as client:
        steps = {step: stubs_of(server, step) for step in ("preprocess", "spine_localizer", "straighten")}
        assert all(len(pids) == 2 for pids in steps.values())
        study = client.analyze_array(big, ImageGeometry(big.shape, (1.0, 0.7, 0.7)))
        assert study.not_assessable.startswith("no spine found")
        deadline = time.monotonic() + 10
        while max(private_mib(pid) for pids in steps.values() for pid in pids) > 250:
            assert time.monotonic() < deadline, {
                pid: private_mib(pid) for pids in steps.values() for pid in pids
            }
            time.sleep(0.2)
        # A step reports what it handed back when it next runs: two clients at once keep both
        # instances of every step busy, whichever of them took the big CT.
        with VfqClient(server.grpc_url) as other, ThreadPoolExecutor(2) as pool:
            for _ in range(3):
                list(
                    pool.map(
                        lambda c: c.analyze_array(small, ImageGeometry(small.shape, (1.0, 0.7, 0.7))),
                        (client, other),
                    )
                )
        released = scrape(server)
    # A copy of the 400 MiB CT in each CT step; the localizer's intermediates on its 200×96×96 grid.
    for step, least_mib in {"preprocess": 350, "straighten": 350, "spine_localizer": 100}.items():
        assert value(released, "vfq_memory_released_bytes_total", step=step) >= least_mib * 2**20, step


def test_the_cap_does_nothing_without_tcmalloc_and_refuses_a_negative_ceiling():
    cap = RetainedMemoryCap(0)  # the tests run on glibc's malloc unless preloaded otherwise
    assert cap.active is ("tcmalloc" in os.environ.get("LD_PRELOAD", ""))
    cap.stop()
    with pytest.raises(ValueError, match="max_bytes must be >= 0, got -1"):
        RetainedMemoryCap(-1)
