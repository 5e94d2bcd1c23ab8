"""The client process on transparent huge pages: when it runs again, with what, and that it works."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import entry_points

import pytest

from vfq.hugepages import TUNABLE, environment_with_hugepages, glibc_version, thp_mode

GLIBC = (2, 36)


def test_the_tunable_is_added_where_the_kernel_gives_huge_pages_on_request():
    env = environment_with_hugepages({"PATH": "/bin"}, GLIBC, "madvise")
    assert env == {"PATH": "/bin", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}


def test_tunables_already_set_are_kept_before_it():
    env = environment_with_hugepages({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, GLIBC, "madvise")
    assert env == {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"}


@pytest.mark.parametrize(
    ("environ", "glibc", "mode"),
    [
        ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, GLIBC, "madvise"),  # the user's choice
        ({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"}, GLIBC, "madvise"),
        ({}, (2, 34), "madvise"),  # a glibc that does not know the tunable
        ({}, None, "madvise"),  # not glibc (musl, macOS)
        ({}, GLIBC, "always"),  # every large block gets huge pages anyway
        ({}, GLIBC, "never"),
        ({}, GLIBC, None),  # no transparent huge pages in this kernel
    ],
)
def test_no_second_run_where_it_changes_nothing(environ, glibc, mode):
    assert environment_with_hugepages(environ, glibc, mode) is None


def test_the_kernel_mode_is_the_bracketed_one(tmp_path):
    enabled = tmp_path / "enabled"
    enabled.write_text("always [madvise] never\n", encoding="utf-8")
    assert thp_mode(enabled) == "madvise"
    enabled.write_text("[always] madvise never\n", encoding="utf-8")
    assert thp_mode(enabled) == "always"
    assert thp_mode(tmp_path / "missing") is None


_PROGRAM = """
import json, os, sys
print("start", flush=True)
from vfq.hugepages import relaunch_with_hugepages
relaunch_with_hugepages()
block = b"\\x01" * (64 << 20)  # written: its pages are faulted in
huge = [int(line.split()[1]) for line in open("/proc/self/smaps_rollup") if line.startswith("AnonHugePages:")]
print(json.dumps({"tunables": os.environ.get("GLIBC_TUNABLES"), "huge_kib": huge[0], "argv": sys.argv[1:]}))
"""


def test_the_process_runs_again_once_and_its_large_blocks_get_huge_pages():
    environ = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    expected = environment_with_hugepages(environ, glibc_version(), thp_mode())
    run = subprocess.run(
        [sys.executable, "-c", _PROGRAM, "--flag", "value"],
        env=environ,
        capture_output=True,
        text=True,
        check=True,
    )
    lines = run.stdout.splitlines()
    report = json.loads(lines[-1])
    assert report["argv"] == ["--flag", "value"]
    if expected is None:  # this machine gains nothing from it: one run, environment untouched
        assert lines[:-1] == ["start"] and report["tunables"] is None
        return
    assert lines[:-1] == ["start", "start"]
    assert report["tunables"] == f"{TUNABLE}=1"
    assert report["huge_kib"] >= 2048, report  # at least one 2 MiB page


def test_the_vfq_command_starts_through_the_launcher():
    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "vfq"]
    assert script.value == "vfq.launcher:vfq"
    code = "import sys; from vfq.launcher import vfq; sys.exit(vfq())"
    run = subprocess.run([sys.executable, "-c", code, "--help"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "analyze" in run.stdout and run.stdout.startswith("usage: vfq")
