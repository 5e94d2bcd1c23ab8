"""The ``vfq`` command.

::

    vfq analyze PATH... --out DIR [--url HOST:PORT] [--timeout S] [--wait S] [--jobs N]
                        [--shared-memory] [--compression gzip|deflate] [--force]
                        [--fracture-threshold 0.20|0.25] [--min-report-grade 0-3] [--dicom-sr]
    vfq serve ...       the embedded Triton server (vfq.server.embedded)
    vfq demo ...        the end-to-end demonstration (vfq.client.demo)

``vfq analyze`` writes, for every study (a DICOM series folder or a NIfTI / NRRD / MetaImage file),
``DIR/<study>/report.json`` (schema ``vfq-result/1``) and ``DIR/<study>/overlay.png``, or
``DIR/<study>/error.json`` when the study fails; then ``DIR/vertebrae.csv`` over every report in DIR
(this run's and earlier runs'). With ``--dicom-sr``, a DICOM series also gets ``DIR/<study>/report.sr.dcm``
(a DICOM SR, :mod:`vfq.client.dicom_sr`) and ``DIR/<study>/key_image.dcm``; another input fails with
:class:`~vfq.client.errors.DicomSourceError` before any request. ``--fracture-threshold`` and
``--min-report-grade`` set the operating point (:mod:`vfq.client.operating_point`), recorded in every
output. A study is skipped unless ``--force`` when its ``report.json`` exists at the same operating
point, with the DICOM files if they are asked for. ``--jobs N`` keeps N studies in flight, each on its
own connection (and shared-memory region), so that the server works on one while the next is read.
The server URL is ``--url``, else the environment variable ``VFQ_URL``, else ``127.0.0.1:8001``.

Exit codes:

* 0 — every study was analysed (or had been before);
* 1 — at least one study failed (its ``error.json`` says why); the others were written;
* 2 — usage: bad arguments, an output folder that cannot be made, a command not installed;
* 3 — the server cannot be used: unreachable, the model not ready, or shared memory refused.
  Checked before the batch; a batch stops at once when it happens mid-way (rerun to continue);
* 130 — interrupted (Ctrl-C); studies written so far are kept.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import queue
import re
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from vfq import __version__
from vfq.client.connection import COMPRESSIONS, DEFAULT_URL, VfqClient
from vfq.client.errors import ModelNotReadyError, ServerUnavailableError, SharedMemoryError
from vfq.client.operating_point import DEFAULT_OPERATING_POINT, FRACTURE_THRESHOLDS, OperatingPoint
from vfq.client.outputs import write_csv, write_error_json, write_json, write_overlay_png
from vfq.client.results import StudyResult
from vfq.client.tls import add_tls_arguments, tls_from_arguments
from vfq.errors import VfqError
from vfq.genant import GenantGrade
from vfq.io.ct import SUPPORTED_SUFFIXES

__all__ = [
    "CSV_NAME",
    "ERROR_NAME",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_SERVER",
    "EXIT_USAGE",
    "KEY_IMAGE_NAME",
    "OVERLAY_NAME",
    "REPORT_NAME",
    "SR_NAME",
    "assign_study_names",
    "build_parser",
    "load_report",
    "main",
    "recorded_source",
    "study_name",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_SERVER = 3
EXIT_INTERRUPTED = 130

REPORT_NAME = "report.json"
OVERLAY_NAME = "overlay.png"
ERROR_NAME = "error.json"
CSV_NAME = "vertebrae.csv"
SR_NAME = "report.sr.dcm"
KEY_IMAGE_NAME = "key_image.dcm"
#: Environment variable naming the server when ``--url`` is not given.
URL_VARIABLE = "VFQ_URL"

#: Errors after which no further study can succeed: the batch stops with :data:`EXIT_SERVER`.
SERVER_ERRORS = (ServerUnavailableError, ModelNotReadyError, SharedMemoryError)
#: Commands handed over, with their remaining arguments, to another module's ``main(argv)``.
DISPATCHED = {
    "serve": ("vfq.server.embedded", "start the embedded Triton server with the vfq models"),
    "demo": ("vfq.client.demo", "run the end-to-end demonstration on a phantom"),
}

EPILOG = """\
exit codes:
  0    every study analysed (or already done)
  1    at least one study failed (see DIR/<study>/error.json); the others were written
  2    usage: bad arguments, an output folder that cannot be made, a command not installed
  3    the server cannot be used: unreachable, model not ready, or shared memory refused
       (checked before the batch; a batch stops at once when it happens mid-way)
  130  interrupted; studies written so far are kept
"""

if TYPE_CHECKING:
    from vfq.client.dicom_source import DicomSource

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------- study names and state


def study_name(path: str | os.PathLike[str]) -> str:
    """The folder name of a study in the output: the file name without its image suffix
    (``.nii.gz``, ``.nii``, ``.nrrd``, ``.nhdr``, ``.mha``, ``.mhd``) or the folder's name (DICOM),
    with characters other than letters, digits, ``.``, ``_`` and ``-`` replaced by ``_``."""
    name = Path(os.path.abspath(path)).name
    lower = name.lower()
    suffix = next((s for s in SUPPORTED_SUFFIXES if lower.endswith(s)), "")
    if suffix and not Path(path).is_dir():
        name = name[: -len(suffix)]
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "study"


def recorded_source(study_dir: Path) -> str | None:
    """The source recorded in a study folder's ``report.json`` or ``error.json``; ``None`` if neither
    is there or readable."""
    for name in (REPORT_NAME, ERROR_NAME):
        try:
            source = json.loads((study_dir / name).read_text(encoding="utf-8")).get("source")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(source, str):
            return source
    return None


def assign_study_names(paths: Sequence[str | os.PathLike[str]], out_dir: Path) -> list[str]:
    """A distinct output folder name for each path (:func:`study_name`, then ``-2``, ``-3``, … on a
    collision).

    A name is taken by another path of this batch, or by a folder of ``out_dir`` whose records name
    another source (its absolute path), so that reruns of overlapping batches find each study's own
    folder again whatever the order of the paths.
    """
    taken: set[str] = set()
    names = []
    for path in paths:
        base, source = study_name(path), os.path.abspath(path)
        number = 1
        while True:
            candidate = base if number == 1 else f"{base}-{number}"
            if candidate not in taken and recorded_source(out_dir / candidate) in (None, source):
                break
            number += 1
        taken.add(candidate)
        names.append(candidate)
    return names


def load_report(study_dir: Path) -> StudyResult | None:
    """The study's result from its ``report.json``, ``None`` if there is none.

    Raises:
        OSError, ValueError: the file cannot be read or does not follow schema ``vfq-result/1``.
    """
    path = study_dir / REPORT_NAME
    if not path.is_file():
        return None
    return StudyResult.from_json_dict(json.loads(path.read_text(encoding="utf-8")))


# ---------------------------------------------------------------------- vfq analyze


@dataclass(frozen=True)
class _Request:
    """What ``vfq analyze`` makes of every study: the operating point, and whether DICOM files."""

    operating_point: OperatingPoint = DEFAULT_OPERATING_POINT
    dicom_sr: bool = False

    def done_result(self, study_dir: Path) -> StudyResult | None:
        """The study's earlier result if it is what this request makes, else ``None``.

        Raises:
            OSError, ValueError: its ``report.json`` cannot be read (see :func:`load_report`).
        """
        result = load_report(study_dir)
        if result is None or result.operating_point != self.operating_point:
            return None
        if self.dicom_sr and not all((study_dir / name).is_file() for name in (SR_NAME, KEY_IMAGE_NAME)):
            return None
        return result


@dataclass(frozen=True)
class _Outcome:
    """One line of the summary table; ``failed`` studies have no result, ``stop`` ends the batch."""

    study: str
    status: str
    result: StudyResult | None = None
    failed: bool = False
    stop: bool = False

    def cells(self) -> tuple[str, ...]:
        r = self.result
        if r is None:
            return (self.study, "-", "-", "-", self.status)
        return (self.study, str(len(r.vertebrae)), str(r.max_grade), f"{r.study_score:.3f}", self.status)


def _status(result: StudyResult) -> str:
    return "ok" if result.not_assessable is None else f"not assessable: {result.not_assessable}"


def _print_summary(outcomes: Sequence[_Outcome]) -> None:
    rows = [("study", "vertebrae", "max grade", "score", "status"), *(o.cells() for o in outcomes)]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[4])


def _rebuild_csv(out_dir: Path) -> Path:
    """``DIR/vertebrae.csv`` from every readable ``DIR/*/report.json``, studies in name order."""
    results: dict[str, StudyResult] = {}
    for study_dir in sorted(p for p in out_dir.iterdir() if p.is_dir()):
        try:
            result = load_report(study_dir)
        except (OSError, ValueError) as e:
            _warn(f"{study_dir / REPORT_NAME} left out of {CSV_NAME}: {e}")
            continue
        if result is not None:
            results[study_dir.name] = result
    return write_csv(results, out_dir / CSV_NAME)


def _analyze_command(args: argparse.Namespace) -> int:
    out_dir = Path(args.out)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        _error(f"cannot make the output folder {str(out_dir)!r}: {e.strerror or e}")
        return EXIT_USAGE
    paths = list(dict.fromkeys(os.path.abspath(p) for p in args.paths))  # each study once
    names = assign_study_names(paths, out_dir)
    request = _Request(OperatingPoint(args.fracture_threshold, args.min_report_grade), args.dicom_sr)
    outcomes: dict[str, _Outcome] = {}
    todo = []
    for path, name in zip(paths, names):
        try:
            done = None if args.force else request.done_result(out_dir / name)
        except (OSError, ValueError):
            done = None  # an unreadable report is redone
        if done is None:
            todo.append((path, name))
        else:
            outcomes[name] = _Outcome(name, f"skipped ({REPORT_NAME} exists)", done)

    if todo:
        outcomes.update(_analyze_studies(args, request, todo, out_dir))
    failures = [o for o in outcomes.values() if o.failed]
    code = EXIT_SERVER if any(o.stop for o in failures) else EXIT_FAILED if failures else EXIT_OK
    _rebuild_csv(out_dir)
    _print_summary([outcomes.get(name, _Outcome(name, "not run")) for name in names])
    return code


def _analyze_studies(
    args: argparse.Namespace, request: _Request, todo: Sequence[tuple[str, str]], out_dir: Path
) -> dict[str, _Outcome]:
    """Analyse ``todo`` (path, study name) with ``args.jobs`` studies in flight, one client each;
    after a server error no further study is started (those left have no outcome)."""
    from tqdm import tqdm  # the progress bar is the CLI's alone

    clients: queue.SimpleQueue[VfqClient] = queue.SimpleQueue()
    stop = threading.Event()
    outcomes: dict[str, _Outcome] = {}
    with ExitStack() as stack:  # left in reverse: no new study, the running ones end, clients, bar
        bar = stack.enter_context(tqdm(total=len(todo), unit="study", file=sys.stderr, disable=None))
        for job in range(args.jobs):
            client = stack.enter_context(
                VfqClient(
                    args.url,
                    timeout_s=args.timeout,
                    shared_memory=args.shared_memory,
                    compression=args.compression,
                    tls=args.tls,
                )
            )
            if job == 0:
                client.wait_ready(args.wait)  # SERVER_ERRORS end the command with EXIT_SERVER in main()
            clients.put(client)

        def analyze(path: str, name: str) -> _Outcome | None:
            if stop.is_set():
                return None
            client = clients.get()
            try:
                bar.set_postfix_str(name)
                outcome = _analyze_study(client, request, path, out_dir / name, name, bar.write)
            finally:
                clients.put(client)
            if outcome.stop:
                stop.set()
            return outcome

        pool = stack.enter_context(ThreadPoolExecutor(args.jobs, thread_name_prefix="vfq-study"))
        stack.callback(stop.set)
        futures = {pool.submit(analyze, path, name): name for path, name in todo}
        for future in as_completed(futures):
            outcome = future.result()
            if outcome is not None:
                outcomes[futures[future]] = outcome
                bar.update()
    return outcomes


def _analyze_study(
    client: VfqClient, request: _Request, path: str, study_dir: Path, name: str, say: Callable[..., None]
) -> _Outcome:
    """Analyse one study and write its files; a failure is recorded in ``error.json`` and said."""
    try:
        source = _read_dicom_source(path) if request.dicom_sr else None  # before the request: fail fast
        result = client.analyze(path).with_operating_point(request.operating_point)
        study_dir.mkdir(exist_ok=True)
        write_overlay_png(result, study_dir / OVERLAY_NAME)
        _write_dicom_files(result, source, study_dir)
        write_json(result, study_dir / REPORT_NAME)  # last: its presence marks the study done
        (study_dir / ERROR_NAME).unlink(missing_ok=True)
        return _Outcome(name, _status(result), result)
    except Exception as e:  # one study's failure, whatever it is, must not end the batch
        stop = isinstance(e, SERVER_ERRORS)
        try:
            study_dir.mkdir(exist_ok=True)
            write_error_json(e, path, study_dir / ERROR_NAME)
        except OSError as write_error:
            _warn(f"{name}: cannot record the error in {study_dir / ERROR_NAME}: {write_error}")
        say(f"vfq: {name}: {type(e).__name__}: {_one_line(str(e))}", file=sys.stderr)
        status = f"failed{', batch stopped' if stop else ''}: {type(e).__name__}"
        return _Outcome(name, status, failed=True, stop=stop)


def _read_dicom_source(path: str) -> DicomSource:
    from vfq.client.dicom_source import read_dicom_source  # pydicom only when DICOM files are asked for

    return read_dicom_source(path)


def _write_dicom_files(result: StudyResult, source: DicomSource | None, study_dir: Path) -> None:
    """The SR and key image of ``source``'s study; without a source, those of an earlier run are removed
    (they would not match this run's report)."""
    if source is None:
        for name in (SR_NAME, KEY_IMAGE_NAME):
            (study_dir / name).unlink(missing_ok=True)
        return
    from vfq.client.dicom_sr import write_dicom_sr, write_key_image  # highdicom only when asked for

    write_dicom_sr(result, source, study_dir / SR_NAME)
    write_key_image(result, source, study_dir / KEY_IMAGE_NAME)


# ---------------------------------------------------------------------- the parser and main


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def _positive_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The ``vfq`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="vfq",
        description="Vertebral fracture quantification in CT, served on NVIDIA Triton.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"vfq {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    analyze = commands.add_parser(
        "analyze",
        help="analyse CT studies on a server; write reports, overlays and a CSV",
        description=(
            "Analyse CT studies on a vfq Triton server. Each PATH is a DICOM series folder or a "
            f"{'/'.join(SUPPORTED_SUFFIXES)} file. Writes DIR/<study>/report.json and overlay.png "
            f"(or error.json) and DIR/{CSV_NAME} over every report in DIR. Only pixels and voxel "
            "size are sent, never patient identifiers."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    analyze.add_argument("paths", nargs="+", metavar="PATH", help="DICOM folder or image file")
    analyze.add_argument("--out", required=True, metavar="DIR", help="output folder (made if missing)")
    analyze.add_argument(
        "--url",
        default=os.environ.get(URL_VARIABLE, DEFAULT_URL),
        metavar="HOST:PORT",
        help=f"the server's gRPC endpoint (default: ${URL_VARIABLE}, else {DEFAULT_URL})",
    )
    analyze.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=120.0,
        metavar="S",
        help="limit on each study's request, in seconds (default: 120)",
    )
    analyze.add_argument(
        "--wait",
        type=_positive_seconds,
        default=30.0,
        metavar="S",
        help="how long to wait for the server and model to be ready, in seconds (default: 30)",
    )
    analyze.add_argument(
        "--jobs",
        type=_positive_count,
        default=1,
        metavar="N",
        help=(
            "studies in flight at once, each on its own connection (default: 1). As many as the server's "
            "network instances (2 in the shipped repositories) keep it busy while the next study is "
            "read; each job holds one CT in memory"
        ),
    )
    analyze.add_argument(
        "--shared-memory",
        action="store_true",
        help="send CTs through system shared memory (only when the server runs on this host)",
    )
    analyze.add_argument("--compression", choices=COMPRESSIONS, help="compress requests (costs CPU)")
    add_tls_arguments(analyze)
    analyze.add_argument(
        "--force",
        action="store_true",
        help=(
            f"redo studies already done ({REPORT_NAME} at the same operating point, and the DICOM files "
            "if asked for)"
        ),
    )
    analyze.add_argument(
        "--fracture-threshold",
        type=float,
        choices=FRACTURE_THRESHOLDS,
        default=DEFAULT_OPERATING_POINT.fracture_threshold,
        metavar="0.20|0.25",
        help=(
            "relative height loss from which a vertebra is flagged fractured: 0.20 = Genant grade >= 1, "
            "0.25 = grade >= 2 (default: 0.20); the grades never change with it"
        ),
    )
    analyze.add_argument(
        "--min-report-grade",
        type=int,
        choices=[int(grade) for grade in GenantGrade],
        default=DEFAULT_OPERATING_POINT.min_report_grade,
        metavar="0-3",
        help="lowest Genant grade the DICOM SR lists a vertebra with (default: 0, every vertebra)",
    )
    analyze.add_argument(
        "--dicom-sr",
        action="store_true",
        help=(
            f"also write DIR/<study>/{SR_NAME} (DICOM SR, TID 1500: levels, keypoints, heights, grades) and "
            f"{KEY_IMAGE_NAME} (the overlay as a Secondary Capture) in the study of each DICOM series; "
            "other inputs fail"
        ),
    )
    analyze.set_defaults(run=_analyze_command)
    for command, (_, help_text) in DISPATCHED.items():
        commands.add_parser(command, help=help_text, add_help=False)
    return parser


def _dispatch(command: str, argv: list[str]) -> int:
    module_name = DISPATCHED[command][0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        _error(f"'vfq {command}' is not available in this installation ({e}); install the extra it needs")
        return EXIT_USAGE
    return int(module.main(argv) or 0)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``vfq`` command with ``argv`` (default: the process's arguments); returns the exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="vfq: %(levelname)s: %(message)s")
    try:
        if args_list and args_list[0] in DISPATCHED:
            return _dispatch(args_list[0], args_list[1:])
        parser = build_parser()
        try:
            args = parser.parse_args(args_list)
            args.tls = tls_from_arguments(args) if args.command == "analyze" else None
        except SystemExit as e:  # argparse has printed the usage or the help
            return int(e.code or 0)
        except ValueError as e:  # TLS options that do not fit together
            parser.print_usage(sys.stderr)
            _error(str(e))
            return EXIT_USAGE
        if args.command is None:
            parser.print_usage(sys.stderr)
            _error("a command is required (analyze, serve, demo)")
            return EXIT_USAGE
        return int(args.run(args))
    except SERVER_ERRORS as e:
        _error(_one_line(str(e)))
        return EXIT_SERVER
    except VfqError as e:
        _error(_one_line(str(e)))
        return EXIT_FAILED
    except KeyboardInterrupt:
        _error("interrupted")
        return EXIT_INTERRUPTED


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _error(message: str) -> None:
    print(f"vfq: error: {message}", file=sys.stderr)


def _warn(message: str) -> None:
    print(f"vfq: warning: {message}", file=sys.stderr)
