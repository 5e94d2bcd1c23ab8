"""The `vfq` command without a server: an unreachable port, study names, skipping what is done, and
a batch with a stand-in client that goes on past failures and stops when the server goes away."""

from __future__ import annotations

import csv
import json
import sys
import threading
import time
import types
from pathlib import Path
from typing import ClassVar

import pydicom
import pytest
from client_factories import free_port, not_assessable_outputs, oblique_geometry, pipeline_outputs
from dicom_factories import result_of, write_identified_series

from vfq.client import StudyResult, cli, write_json
from vfq.client.errors import RequestTimeoutError, ServerBusyError, ServerUnavailableError
from vfq.errors import NotCTError, VfqError


def run(argv: list[str]) -> int:
    return cli.main(argv)


def a_result(source: str, outputs=None) -> StudyResult:
    return StudyResult.from_outputs(
        pipeline_outputs() if outputs is None else outputs, oblique_geometry(), source, {"request": 0.5}
    )


# ---------------------------------------------------------------------- the server is not there


def test_an_unreachable_server_with_a_short_wait_fails_fast(tmp_path, capsys):
    url = f"127.0.0.1:{free_port()}"
    start = time.monotonic()
    code = run(["analyze", "ct.nii.gz", "--url", url, "--out", str(tmp_path / "out"), "--wait", "1"])
    elapsed = time.monotonic() - start
    err = capsys.readouterr().err
    assert code == cli.EXIT_SERVER == 3
    assert elapsed < 5.0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vfq: error: ") and url in lines[0]
    assert "Traceback" not in err


def test_the_url_comes_from_the_environment_when_not_given(tmp_path, capsys, monkeypatch):
    url = f"127.0.0.1:{free_port()}"
    monkeypatch.setenv(cli.URL_VARIABLE, url)
    assert run(["analyze", "ct.nii.gz", "--out", str(tmp_path), "--wait", "0.5"]) == cli.EXIT_SERVER
    assert url in capsys.readouterr().err


# ---------------------------------------------------------------------- study names


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("scans/ct.nii.gz", "ct"),
        ("scans/CT.NII.GZ", "CT"),
        ("a/chest.nii", "chest"),
        ("b/abdomen.nrrd", "abdomen"),
        ("c/spine.mha", "spine"),
        ("c/spine.mhd", "spine"),
        ("c/head.nhdr", "head"),
        ("d/series 12 (arterial)/", "series_12_arterial"),
        ("e/notes.txt", "notes.txt"),
        ("/", "study"),
    ],
)
def test_study_names_come_from_the_path(path, name):
    assert cli.study_name(path) == name


def test_a_dicom_folder_named_like_a_file_keeps_its_name(tmp_path):
    folder = tmp_path / "series.nii"
    folder.mkdir()
    assert cli.study_name(folder) == "series.nii"


def test_colliding_names_are_numbered_and_found_again_in_any_order(tmp_path):
    a, b, c = "site-a/ct.nii.gz", "site-b/ct.nii.gz", "site-c/ct.nrrd"
    assert cli.assign_study_names([a, b, c], tmp_path) == ["ct", "ct-2", "ct-3"]
    # after a run wrote them, each path finds its own folder whatever the order
    for path, name in zip([a, b, c], ["ct", "ct-2", "ct-3"]):
        (tmp_path / name).mkdir()
        write_json(a_result(str(Path(path).absolute())), tmp_path / name / cli.REPORT_NAME)
    assert cli.assign_study_names([c, a], tmp_path) == ["ct-3", "ct"]
    assert cli.assign_study_names(["site-d/ct.nii.gz"], tmp_path) == ["ct-4"]


def test_a_failed_study_keeps_its_name_through_its_error_record(tmp_path):
    (tmp_path / "ct").mkdir()
    (tmp_path / "ct" / cli.ERROR_NAME).write_text(json.dumps({"source": str(Path("x/ct.nii.gz").absolute())}))
    assert cli.recorded_source(tmp_path / "ct") == str(Path("x/ct.nii.gz").absolute())
    assert cli.assign_study_names(["x/ct.nii.gz", "y/ct.nii.gz"], tmp_path) == ["ct", "ct-2"]


# ---------------------------------------------------------------------- skipping what is done


def done_study(out: Path, path: str, outputs=None) -> None:
    folder = out / cli.study_name(path)
    folder.mkdir(parents=True)
    write_json(a_result(str(Path(path).absolute()), outputs), folder / cli.REPORT_NAME)


def test_studies_already_done_are_skipped_without_calling_the_server(tmp_path, capsys):
    out = tmp_path / "out"
    done_study(out, "x/first.nii.gz")
    done_study(out, "x/second.nii.gz", not_assessable_outputs())
    url = f"127.0.0.1:{free_port()}"  # nobody listens: a call would be exit 3
    code = run(["analyze", "x/first.nii.gz", "x/second.nii.gz", "--url", url, "--out", str(out)])
    assert code == cli.EXIT_OK
    printed = capsys.readouterr().out
    assert "skipped" in printed and "first" in printed and "second" in printed
    with (out / cli.CSV_NAME).open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [row["study"] for row in rows] == ["first"] * 3 + ["second"]
    # --force redoes them, so it needs the server
    forced = ["analyze", "x/first.nii.gz", "--url", url, "--out", str(out), "--wait", "0.5", "--force"]
    assert run(forced) == cli.EXIT_SERVER


def test_an_unreadable_report_is_redone_and_left_out_of_the_csv(tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    (out / "broken").mkdir(parents=True)
    (out / "broken" / cli.REPORT_NAME).write_text("{not json")
    monkeypatch.setattr(cli, "VfqClient", StandInClient)
    StandInClient.analysed = []
    assert run(["analyze", "x/broken.nii.gz", "--out", str(out)]) == cli.EXIT_OK
    assert StandInClient.analysed == [str(Path("x/broken.nii.gz").absolute())]
    assert json.loads((out / "broken" / cli.REPORT_NAME).read_text())["schema"] == "vfq-result/1"


# ---------------------------------------------------------------------- a batch with a stand-in client


class StandInClient:
    """Stands in for VfqClient in the CLI: answers by file name."""

    analysed: ClassVar[list[str]] = []
    closed = 0

    def __init__(self, url: str, **options: object) -> None:
        self.url = url

    def __enter__(self) -> StandInClient:
        return self

    def __exit__(self, *_: object) -> None:
        StandInClient.closed += 1

    def wait_ready(self, timeout_s: float) -> None:
        pass

    def analyze(self, path: str) -> StudyResult:
        StandInClient.analysed.append(path)
        name = Path(path).name
        if name.startswith("mr"):
            raise NotCTError(f"{path!r} is an MR series\nnot a CT")
        if name.startswith("slow"):
            raise RequestTimeoutError("no answer within the timeout of 1 s", 1.0)
        if name.startswith("gone"):
            raise ServerUnavailableError(f"no Triton server answers at {self.url}", self.url)
        if name.startswith("busy"):
            raise ServerBusyError(f"the server at {self.url} is busy: its queue was full", self.url)
        if name.startswith("empty"):
            return a_result(path, not_assessable_outputs())
        return a_result(path)


@pytest.fixture
def stand_in(monkeypatch):
    monkeypatch.setattr(cli, "VfqClient", StandInClient)
    StandInClient.analysed = []
    StandInClient.closed = 0
    return StandInClient


def test_a_batch_goes_on_past_failures_and_records_them(tmp_path, capsys, stand_in):
    out = tmp_path / "out"
    paths = ["in/chest.nii.gz", "in/mr_head", "in/slow.nrrd", "in/empty.mha", "in/chest.nii.gz"]
    assert run(["analyze", *paths, "--out", str(out)]) == cli.EXIT_FAILED
    assert len(stand_in.analysed) == 4  # the repeated path once
    assert stand_in.closed == 1
    report = json.loads((out / "chest" / cli.REPORT_NAME).read_text())
    assert report["source"] == str(Path("in/chest.nii.gz").absolute()) and len(report["vertebrae"]) == 3
    assert (out / "chest" / cli.OVERLAY_NAME).stat().st_size > 1000
    assert (out / "empty" / cli.OVERLAY_NAME).is_file()
    error = json.loads((out / "mr_head" / cli.ERROR_NAME).read_text())
    assert error["type"] == "NotCTError" and "MR series" in error["message"]
    assert json.loads((out / "slow" / cli.ERROR_NAME).read_text())["type"] == "RequestTimeoutError"
    assert not (out / "mr_head" / cli.REPORT_NAME).exists()
    assert sorted(p.name for p in out.rglob(".*")) == []  # no temporary files left

    printed = capsys.readouterr()
    failure_lines = [line for line in printed.err.splitlines() if line.startswith("vfq: ")]
    assert failure_lines == [
        f"vfq: mr_head: NotCTError: {str(Path('in/mr_head').absolute())!r} is an MR series not a CT",
        "vfq: slow: RequestTimeoutError: no answer within the timeout of 1 s",
    ]
    summary = printed.out.splitlines()
    assert summary[0].split() == ["study", "vertebrae", "max", "grade", "score", "status"]
    by_study = {line.split()[0]: line for line in summary[1:]}
    assert by_study["chest"].split()[1:5] == ["3", "2", "0.310", "ok"]
    assert "not assessable" in by_study["empty"] and "failed: NotCTError" in by_study["mr_head"]

    with (out / cli.CSV_NAME).open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [row["study"] for row in rows] == ["chest"] * 3 + ["empty"]

    # a rerun retries the failures only; a success replaces the error record
    stand_in.analysed = []
    assert run(["analyze", *paths[:4], "--out", str(out)]) == cli.EXIT_FAILED
    assert [Path(p).name for p in stand_in.analysed] == ["mr_head", "slow.nrrd"]


def test_a_success_after_a_failure_removes_the_error_record(tmp_path, stand_in):
    out = tmp_path / "out"
    (out / "chest").mkdir(parents=True)
    (out / "chest" / cli.ERROR_NAME).write_text(
        json.dumps({"source": str(Path("in/chest.nii.gz").absolute()), "type": "RequestTimeoutError"})
    )
    assert run(["analyze", "in/chest.nii.gz", "--out", str(out)]) == cli.EXIT_OK
    assert sorted(p.name for p in (out / "chest").iterdir()) == [cli.OVERLAY_NAME, cli.REPORT_NAME]


def test_a_busy_server_fails_that_study_and_the_batch_goes_on(tmp_path, capsys, stand_in):
    out = tmp_path / "out"
    paths = ["in/first.nii.gz", "in/busy.nii.gz", "in/third.nii.gz"]
    assert run(["analyze", *paths, "--out", str(out)]) == cli.EXIT_FAILED
    assert [Path(p).name for p in stand_in.analysed] == ["first.nii.gz", "busy.nii.gz", "third.nii.gz"]
    assert json.loads((out / "busy" / cli.ERROR_NAME).read_text())["type"] == "ServerBusyError"
    assert (out / "third" / cli.REPORT_NAME).is_file()
    assert "failed: ServerBusyError" in capsys.readouterr().out


def test_a_server_gone_mid_batch_stops_it_with_exit_3(tmp_path, capsys, stand_in):
    out = tmp_path / "out"
    paths = ["in/first.nii.gz", "in/gone.nii.gz", "in/third.nii.gz"]
    assert run(["analyze", *paths, "--out", str(out)]) == cli.EXIT_SERVER
    assert [Path(p).name for p in stand_in.analysed] == ["first.nii.gz", "gone.nii.gz"]
    summary = capsys.readouterr().out
    assert "batch stopped" in summary and "not run" in summary
    assert (out / "first" / cli.REPORT_NAME).is_file() and (out / cli.CSV_NAME).is_file()


class SlowStandIn(StandInClient):
    """Takes 0.2 s a study (a server that is gone answers at once) and counts how many studies are
    in flight at once."""

    analysed: ClassVar[list[str]] = []
    in_flight = 0
    most_in_flight = 0
    lock = threading.Lock()

    def analyze(self, path: str) -> StudyResult:
        with SlowStandIn.lock:
            SlowStandIn.in_flight += 1
            SlowStandIn.most_in_flight = max(SlowStandIn.most_in_flight, SlowStandIn.in_flight)
        try:
            if not Path(path).name.startswith("gone"):
                time.sleep(0.2)
            return super().analyze(path)
        finally:
            with SlowStandIn.lock:
                SlowStandIn.in_flight -= 1


@pytest.fixture
def slow_stand_in(monkeypatch):
    monkeypatch.setattr(cli, "VfqClient", SlowStandIn)
    StandInClient.analysed, StandInClient.closed = [], 0
    SlowStandIn.in_flight = SlowStandIn.most_in_flight = 0
    return SlowStandIn


def test_jobs_keep_that_many_studies_in_flight_each_on_its_own_client(tmp_path, capsys, slow_stand_in):
    out = tmp_path / "out"
    paths = [f"in/chest{i}.nii.gz" for i in range(5)] + ["in/mr_head"]
    assert run(["analyze", *paths, "--out", str(out), "--jobs", "2"]) == cli.EXIT_FAILED
    assert slow_stand_in.most_in_flight == 2 and StandInClient.closed == 2
    assert sorted(Path(p).name for p in StandInClient.analysed) == sorted(Path(p).name for p in paths)
    assert all((out / f"chest{i}" / cli.REPORT_NAME).is_file() for i in range(5))
    assert json.loads((out / "mr_head" / cli.ERROR_NAME).read_text())["type"] == "NotCTError"
    summary = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in summary[1:]] == [f"chest{i}" for i in range(5)] + ["mr_head"]
    with (out / cli.CSV_NAME).open(newline="") as f:
        assert len(list(csv.DictReader(f))) == 5 * 3


def test_with_jobs_a_server_gone_starts_no_further_study(tmp_path, capsys, slow_stand_in):
    out = tmp_path / "out"
    # "first" (0.2 s) is taken first, so "gone" (at once) is the other job's: both start, then none
    paths = ["in/first.nii.gz", "in/gone.nii.gz"] + [f"in/later{i}.nii.gz" for i in range(4)]
    assert run(["analyze", *paths, "--out", str(out), "--jobs", "2"]) == cli.EXIT_SERVER
    assert sorted(Path(p).name for p in StandInClient.analysed) == ["first.nii.gz", "gone.nii.gz"]
    summary = capsys.readouterr().out
    assert summary.count("not run") == 4 and "batch stopped" in summary
    assert (out / "first" / cli.REPORT_NAME).is_file()


# ---------------------------------------------------------------------- the operating point and DICOM SR


class DicomStandIn(StandInClient):
    """Answers a DICOM folder with a result on that series' own grid."""

    analysed: ClassVar[list[str]] = []

    def analyze(self, path: str) -> StudyResult:
        DicomStandIn.analysed.append(path)
        return result_of(Path(path), source=path)


def test_dicom_sr_writes_the_documents_of_a_dicom_series_and_refuses_other_inputs(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr(cli, "VfqClient", DicomStandIn)
    DicomStandIn.analysed = []
    series = str(write_identified_series(tmp_path / "in" / "ct_dicom"))
    out = tmp_path / "out"
    argv = ["analyze", series, "in/chest.nii.gz", "--out", str(out), "--dicom-sr"]
    point = ["--fracture-threshold", "0.25", "--min-report-grade", "1"]
    assert run([*argv, *point]) == cli.EXIT_FAILED
    assert DicomStandIn.analysed == [series]  # the NIfTI fails before any request
    error = json.loads((out / "chest" / cli.ERROR_NAME).read_text())
    assert error["type"] == "DicomSourceError" and "NIfTI file" in error["message"]
    assert "chest: DicomSourceError" in capsys.readouterr().err
    study = out / "ct_dicom"
    assert pydicom.dcmread(study / cli.SR_NAME).Modality == "SR"
    assert pydicom.dcmread(study / cli.KEY_IMAGE_NAME).Modality == "OT"
    report = json.loads((study / cli.REPORT_NAME).read_text())
    assert report["operating_point"] == {"fracture_threshold": 0.25, "min_report_grade": 1}
    with (out / cli.CSV_NAME).open(newline="") as f:
        assert {row["fracture_threshold"] for row in csv.DictReader(f)} == {"0.25"}

    DicomStandIn.analysed = []  # done at this operating point, with its documents: skipped
    assert run([*argv[:2], *argv[3:], *point]) == cli.EXIT_OK and DicomStandIn.analysed == []
    assert run([*argv[:2], *argv[3:]]) == cli.EXIT_OK  # another operating point: redone
    assert DicomStandIn.analysed == [series]
    assert json.loads((study / cli.REPORT_NAME).read_text())["operating_point"]["fracture_threshold"] == 0.2
    # without --dicom-sr a redone study loses the documents of the earlier run
    assert run(["analyze", series, "--out", str(out), "--force"]) == cli.EXIT_OK
    assert sorted(p.name for p in study.iterdir()) == [cli.OVERLAY_NAME, cli.REPORT_NAME]


# ---------------------------------------------------------------------- usage and dispatch


def test_usage_errors_are_exit_2(tmp_path, capsys):
    assert run([]) == cli.EXIT_USAGE
    assert run(["analyze", "ct.nii.gz"]) == cli.EXIT_USAGE  # no --out
    assert run(["analyze", "ct.nii.gz", "--out", str(tmp_path), "--timeout", "-1"]) == cli.EXIT_USAGE
    assert run(["analyze", "ct.nii.gz", "--out", str(tmp_path), "--compression", "zstd"]) == cli.EXIT_USAGE
    assert (
        run(["analyze", "ct.nii.gz", "--out", str(tmp_path), "--fracture-threshold", "0.3"]) == cli.EXIT_USAGE
    )
    assert run(["analyze", "ct.nii.gz", "--out", str(tmp_path), "--min-report-grade", "4"]) == cli.EXIT_USAGE
    assert run(["analyze", "ct.nii.gz", "--out", str(tmp_path), "--jobs", "0"]) == cli.EXIT_USAGE
    assert "argument --jobs: must be at least 1, got 0" in capsys.readouterr().err
    blocked = tmp_path / "file"
    blocked.write_text("")
    assert run(["analyze", "ct.nii.gz", "--out", str(blocked / "sub")]) == cli.EXIT_USAGE
    assert "cannot make the output folder" in capsys.readouterr().err


def test_help_documents_the_exit_codes(capsys):
    assert run(["analyze", "--help"]) == cli.EXIT_OK
    text = capsys.readouterr().out
    for code in ("0", "1", "2", "3"):
        assert f"\n  {code} " in text
    flags = ("--url", "--out", "--timeout", "--shared-memory", "--compression", "--force", "--dicom-sr")
    for flag in (*flags, "--fracture-threshold", "--min-report-grade"):
        assert flag in text


@pytest.mark.parametrize(
    ("command", "module"), [("serve", "vfq.server.embedded"), ("demo", "vfq.client.demo")]
)
def test_serve_and_demo_hand_their_arguments_over(command, module, monkeypatch):
    received = []
    stand_in = types.SimpleNamespace(main=lambda argv: received.append(argv) or 5)
    monkeypatch.setitem(sys.modules, module, stand_in)
    assert run([command, "--port", "9001", "-v"]) == 5
    assert received == [["--port", "9001", "-v"]]


def test_a_command_whose_module_is_missing_says_so(monkeypatch, capsys):
    monkeypatch.setitem(cli.DISPATCHED, "serve", ("vfq.no_such_module", "start the server"))
    assert run(["serve"]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("vfq: error: 'vfq serve' is not available") and "Traceback" not in err


def test_an_error_a_user_can_act_on_is_one_line(monkeypatch, capsys):
    def fail(argv):
        raise VfqError("the model repository has no vertebra_pipeline\nsee the log")

    monkeypatch.setitem(sys.modules, "vfq.client.demo", types.SimpleNamespace(main=fail))
    assert run(["demo"]) == cli.EXIT_FAILED
    err = capsys.readouterr().err
    assert err == "vfq: error: the model repository has no vertebra_pipeline see the log\n"
