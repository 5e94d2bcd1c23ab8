"""`vfq serve` and `vfq demo` as a user runs them: the server comes up, answers, and stops cleanly on
Ctrl-C or SIGTERM (Triton with it); the demo writes the reports of the README and finds the phantom's
severe fracture."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from server_factories import infer

from vfq.client.demo import main as demo_main
from vfq.tensors import NOT_ASSESSABLE_OUTPUT

#: The installed `vfq` command beside this interpreter.
VFQ = str(Path(sys.executable).parent / "vfq")


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_vfq_serve_answers_and_stops_cleanly_on_ctrl_c_or_sigterm(stop_signal):
    command = [VFQ, "serve", "--grpc-port", "0", "--http-port", "0", "--metrics-port", "0"]
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, encoding="utf-8"
    )
    try:
        ready = ""
        deadline = time.monotonic() + 120
        while "ready" not in ready and time.monotonic() < deadline:
            ready = process.stderr.readline()
            assert ready or process.poll() is None, "vfq serve exited before it was ready"
        url = re.search(r"gRPC (127\.0\.0\.1:\d+)", ready).group(1)
        outputs = infer(url, np.full((20, 32, 32), -1000, np.int16), (2, 2, 2))  # air: no spine
        assert outputs[NOT_ASSESSABLE_OUTPUT][0].startswith(b"no spine found")
        server_pid = int(subprocess.check_output(["pgrep", "-P", str(process.pid), "tritonserver"]))
        process.send_signal(stop_signal)
        assert process.wait(timeout=60) == 0
        assert not Path(f"/proc/{server_pid}").exists()  # Triton stopped with it
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stderr.close()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--grpc-port", "nope"], "invalid int value: 'nope'"),
        (["--library-threads", "-1"], "--library-threads must be >= 0, got -1"),
    ],
)
def test_vfq_serve_refuses_bad_arguments(argv, message):
    result = subprocess.run([VFQ, "serve", *argv], capture_output=True, text=True)
    assert result.returncode == 2 and message in result.stderr


def test_the_demo_writes_the_reports_and_finds_the_crushed_t12(tmp_path, capsys):
    assert demo_main(["--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "results" / "phantom_dicom" / "report.json").read_text(encoding="utf-8"))
    grades = {v["level"]: v["genant_grade"] for v in report["vertebrae"]}
    assert grades["T12"] == 3  # the phantom's 44 % crush
    assert grades["T8"] >= 1  # its 30 % wedge
    assert (tmp_path / "results" / "phantom_dicom" / "overlay.png").is_file()
    assert (tmp_path / "results" / "ct" / "report.json").is_file()  # the real lumbar CT
    printed = capsys.readouterr().out
    assert "served result against the exact truth" in printed
    assert re.search(r"T12\s+3\s+44%\s+3", printed)
