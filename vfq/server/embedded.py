"""The embedded Triton: the ``tritonserver`` binary of the ``nvidia-pytriton`` wheel on our repository.

``vfq serve`` (and the tests, the demo and the benchmarks, through :class:`EmbeddedServer`) start it
on the model repository with declared or free ports, wait until ``vertebra_pipeline`` is ready,
stream the server's log, and stop it cleanly (SIGINT, then SIGKILL after the exit timeout).

What the binary needs (DESIGN §3): the python backend's stub built for the interpreter that runs the
steps — the wheel ships one per Python version, and a backend directory is assembled here with the
stub of this interpreter — and that interpreter's shared library (Debian: ``libpython3.11``). The
stub embeds the first ``python3`` on ``PATH``; the launcher puts this interpreter's ``bin`` first,
so the steps import numpy, onnxruntime and vfq from this environment.

The memory allocator: the python backend's stub copies every input tensor of a step into a new numpy
array. With glibc's malloc a block that large (the 157 MB of a 512×512×300 CT) is a fresh ``mmap``
each time, and the kernel zeroing and mapping its pages costs more than the copy itself (``perf``:
about a quarter of the CT steps' time in ``clear_page``). tcmalloc keeps freed pages for the next
request, so the server's processes run with it preloaded (``LD_PRELOAD``) when the system has it
(Debian: ``libtcmalloc-minimal4``); Triton's documentation recommends it, and its container ships it.
What each step's process keeps that way is bounded by :mod:`vfq.server.memory`.

Threads: every instance of a python step is its own process, and Triton runs several at once, so the
numeric libraries in them (OpenBLAS under numpy, OpenMP, MKL) get one thread per process
(:data:`LIBRARY_THREAD_VARIABLES`) unless the environment already sizes them. With their default of
one thread per core, each process started as many spinning threads as the host has cores: on a 16-core
GPU host, 8 clients got 1.1 scans/s (fewer than 1 client's 2.7); with one thread, 14.6 (benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import ctypes.util
import http.client
import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from vfq.errors import VfqError
from vfq.tensors import PIPELINE_MODEL

#: The repository in a source checkout (``make demo``, the tests).
DEFAULT_REPOSITORY = Path(__file__).resolve().parents[2] / "model_repository"
#: Seconds Triton waits for in-flight requests when asked to stop.
EXIT_TIMEOUT_S = 30
#: Memory allocators of the server's processes (see the module's docstring); the first is the default.
ALLOCATORS = ("tcmalloc", "system")
#: Environment variables that size the thread pools of the numeric libraries in the step processes.
LIBRARY_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
#: Threads of those libraries in each step process (see the module's docstring).
STEP_LIBRARY_THREADS = 1
#: Libraries that provide tcmalloc, the first found is preloaded (gperftools' minimal build first).
TCMALLOC_LIBRARIES = ("tcmalloc_minimal", "tcmalloc")


class ServerStartError(VfqError):
    """The embedded server could not be started (binary missing, port taken, a model failed to load)."""


#: Triton's log line for a model that did not load: the model, its version, the first line of why.
_LOAD_FAILURE = re.compile(r"failed to load '([^']+)' version (\d+): (.*?)(?:\\n|\"?$)", re.MULTILINE)


def load_failures(log: str) -> list[str]:
    """``"model (version N): why"`` for each model Triton's ``log`` says failed to load — the first
    line of the reason (a python step's exception, without its traceback)."""
    return [f"{model} (version {version}): {why}" for model, version, why in _LOAD_FAILURE.findall(log)]


def triton_home() -> Path:
    """The ``tritonserver`` folder inside the installed ``nvidia-pytriton`` wheel."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or spec.origin is None:
        raise ServerStartError(
            "the embedded Triton is not installed: `pip install --no-deps nvidia-pytriton` "
            "(`make setup` does it), and the system package libpython3.11"
        )
    home = Path(spec.origin).parent / "tritonserver"
    if not (home / "bin" / "tritonserver").is_file():
        raise ServerStartError(f"the nvidia-pytriton wheel has no tritonserver binary under {home}")
    return home


def python_stub(home: Path) -> Path:
    """The python-backend stub of this interpreter's Python version in the ``tritonserver`` folder."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    return home / "python_backend_stubs" / version / "triton_python_backend_stub"


def wheel_libraries(home: Path) -> Path:
    """The wheel's shared libraries beside its ``tritonserver`` folder, which the server and its stubs
    load (on the library path of the server's environment)."""
    return home.parents[1] / "nvidia_pytriton.libs"


def server_library_path() -> str:
    """``LD_LIBRARY_PATH`` as the server and its stubs get it: this process's, then the wheel's
    libraries."""
    libraries = wheel_libraries(triton_home())
    return os.pathsep.join(p for p in (os.environ.get("LD_LIBRARY_PATH"), str(libraries)) if p)


def build_backend_directory(home: Path, target: Path) -> Path:
    """Assemble ``target/python``: the python backend with the stub of this interpreter."""
    stub = python_stub(home)
    if not stub.is_file():
        raise ServerStartError(
            f"the embedded Triton has no python-backend stub for Python {stub.parent.name}"
        )
    python = target / "python"
    python.mkdir(parents=True, exist_ok=True)
    for item in (home / "backends" / "python").iterdir():
        if item.is_file():
            (python / item.name).symlink_to(item)
    shutil.copy2(stub, python / stub.name)
    return target


def allocator_preload(allocator: str) -> str | None:
    """The library to preload for ``allocator`` (a soname the dynamic loader finds), or ``None``:
    ``"system"``, or tcmalloc not installed."""
    if allocator not in ALLOCATORS:
        raise ValueError(f"allocator must be one of {ALLOCATORS}, got {allocator!r}")
    if allocator == "system":
        return None
    return next(filter(None, map(ctypes.util.find_library, TCMALLOC_LIBRARIES)), None)


def process_tree(root: int) -> list[int]:
    """``root`` first, then every process below it, from the parent links in ``/proc/*/stat``: for the
    embedded server's process, the server and its python-backend stubs (Linux only)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text(encoding="utf-8").rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # a process that ended meanwhile
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def free_port() -> int:
    """A TCP port on the loopback nobody listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedServer:
    """The embedded ``tritonserver`` on a model repository, as a context manager.

    Args:
        model_repository: the repository (default: the checkout's ``model_repository``).
        grpc_port, http_port, metrics_port: ports to listen on; ``0`` picks a free one.
        log: where the server's log goes: a path (appended), an open file, or ``None`` for a temporary
            file (read it with :meth:`log_tail`).
        startup_timeout_s: how long to wait for ``vertebra_pipeline`` to be ready.
        extra_args: more ``tritonserver`` options (TLS on gRPC, say: readiness is polled over HTTP,
            which must stay on).
        model_control: Triton's ``--model-control-mode``: ``"none"`` loads every model at start and
            waits for ``vertebra_pipeline``; ``"explicit"`` loads nothing (models are loaded through
            the repository API) and waits for the server only.
        allocator: ``"tcmalloc"`` (preloaded into the server and its stubs when the system has it,
            otherwise a warning and glibc's malloc) or ``"system"``; see the module's docstring.
        library_threads: threads of the numeric libraries in each step process, set through
            :data:`LIBRARY_THREAD_VARIABLES` where the environment does not set them already;
            ``None`` leaves the libraries' own default (one per core).

    Attributes: ``preload``, the allocator library preloaded (``None``: glibc's malloc); after
    :meth:`start`: ``grpc_url`` (``host:port``), ``http_url``, ``metrics_url``.
    """

    def __init__(
        self,
        model_repository: str | os.PathLike[str] | None = None,
        *,
        grpc_port: int = 0,
        http_port: int = 0,
        metrics_port: int = 0,
        log: str | os.PathLike[str] | IO[str] | None = None,
        startup_timeout_s: float = 180.0,
        extra_args: Sequence[str] = (),
        model_control: str = "none",
        allocator: str = ALLOCATORS[0],
        library_threads: int | None = STEP_LIBRARY_THREADS,
    ) -> None:
        self.model_repository = Path(model_repository or DEFAULT_REPOSITORY).resolve()
        self.ports = {
            "grpc": grpc_port or free_port(),
            "http": http_port or free_port(),
            "metrics": metrics_port or free_port(),
        }
        self.grpc_url = f"127.0.0.1:{self.ports['grpc']}"
        self.http_url = f"127.0.0.1:{self.ports['http']}"
        self.metrics_url = f"http://127.0.0.1:{self.ports['metrics']}/metrics"
        self.startup_timeout_s = startup_timeout_s
        self.extra_args = tuple(extra_args)
        if model_control not in ("none", "explicit"):
            raise ValueError(f"model_control must be 'none' or 'explicit', got {model_control!r}")
        self.model_control = model_control
        self.preload = allocator_preload(allocator)
        if allocator == "tcmalloc" and self.preload is None:
            warnings.warn(
                "tcmalloc is not installed (Debian: libtcmalloc-minimal4): the server runs on glibc's "
                "malloc, and the steps that take the CT are slower",
                RuntimeWarning,
                stacklevel=2,
            )
        if library_threads is not None and library_threads < 1:
            raise ValueError(f"library_threads must be >= 1 or None, got {library_threads}")
        self.library_threads = library_threads
        self._log_target = log
        self._log: IO[str] | None = None
        self._workdir: tempfile.TemporaryDirectory[str] | None = None
        self.process: subprocess.Popen[bytes] | None = None

    def command(self, backend_directory: Path) -> list[str]:
        """The ``tritonserver`` command line."""
        return [
            str(triton_home() / "bin" / "tritonserver"),
            f"--model-repository={self.model_repository}",
            f"--backend-directory={backend_directory}",
            f"--model-control-mode={self.model_control}",
            "--strict-readiness=true",
            "--disable-auto-complete-config",
            f"--exit-timeout-secs={EXIT_TIMEOUT_S}",
            f"--grpc-port={self.ports['grpc']}",
            f"--http-port={self.ports['http']}",
            f"--metrics-port={self.ports['metrics']}",
            "--allow-cpu-metrics=true",
            "--allow-gpu-metrics=false",
            *self.extra_args,
        ]

    def environment(self) -> dict[str, str]:
        """The server's environment: this interpreter first on ``PATH``, the wheel's libraries found,
        the allocator preloaded, the numeric libraries' threads set."""
        env = dict(os.environ)
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        env["LD_LIBRARY_PATH"] = server_library_path()
        if self.preload:
            env["LD_PRELOAD"] = " ".join(p for p in (self.preload, env.get("LD_PRELOAD")) if p)
        if self.library_threads is not None:
            for name in LIBRARY_THREAD_VARIABLES:
                env.setdefault(name, str(self.library_threads))
        return env

    def start(self) -> EmbeddedServer:
        """Start the server and wait until ``vertebra_pipeline`` is ready."""
        if not (self.model_repository / PIPELINE_MODEL / "config.pbtxt").is_file():
            raise ServerStartError(
                f"{self.model_repository} is not a vfq model repository (no {PIPELINE_MODEL})"
            )
        self._workdir = tempfile.TemporaryDirectory(prefix="vfq-triton-")
        backends = build_backend_directory(triton_home(), Path(self._workdir.name) / "backends")
        self._log = self._open_log()
        self.process = subprocess.Popen(
            self.command(backends),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self.environment(),
            cwd=self._workdir.name,
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _open_log(self) -> IO[str]:
        target = self._log_target
        if target is None:
            assert self._workdir is not None
            return open(Path(self._workdir.name) / "tritonserver.log", "a+", encoding="utf-8")
        if isinstance(target, (str, os.PathLike)):
            return open(target, "a+", encoding="utf-8")
        return target

    def readiness_urls(self) -> list[str]:
        """What must answer 200 before :meth:`start` returns: Triton's HTTP health endpoints (plain
        HTTP, whatever TLS ``extra_args`` put on gRPC; Triton starts gRPC before HTTP, so gRPC is up
        once HTTP answers) and its metrics port, which Triton opens last, so that a caller may
        scrape it as soon as the server is started."""
        base = f"http://{self.http_url}/v2"
        urls = [f"{base}/health/ready"]
        if self.model_control != "explicit":
            urls.append(f"{base}/models/{PIPELINE_MODEL}/ready")
        if "--allow-metrics=false" not in self.extra_args:
            urls.append(self.metrics_url)
        return urls

    def _wait_ready(self) -> None:
        checks = self.readiness_urls()
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                failures = "".join(f"{line}\n" for line in load_failures(self.log_text()))
                raise ServerStartError(f"tritonserver exited while starting:\n{failures}{self.log_tail()}")
            if all(_answers_ok(url) for url in checks):
                return
            time.sleep(0.25)
        raise ServerStartError(
            f"{PIPELINE_MODEL} was not ready after {self.startup_timeout_s:g} s:\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the server's log (when it goes to a file)."""
        if self._log is None or not hasattr(self._log, "name") or not Path(str(self._log.name)).is_file():
            return ""
        text = Path(str(self._log.name)).read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def log_text(self) -> str:
        """The server's whole log so far (when it goes to a file)."""
        return self.log_tail(lines=1 << 30)

    def stop(self) -> int | None:
        """Ask the server to finish in-flight requests and exit; returns its exit code."""
        code = None
        if self.process is not None:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGINT)
                try:
                    self.process.wait(timeout=EXIT_TIMEOUT_S + 10)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
            code = self.process.returncode
        if self._log is not None and self._log is not self._log_target:
            self._log.close()
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None
        return code

    def __enter__(self) -> EmbeddedServer:
        return self.start() if self.process is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


#: Signals on which ``vfq serve`` stops the server cleanly (Ctrl-C; a container runtime's stop).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _answers_ok(url: str) -> bool:
    """Whether a GET of ``url`` answers 200 within 2 s (not listening yet, 400 "not ready": no)."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (OSError, http.client.HTTPException):  # URLError and HTTPError are OSErrors
        return False


def _stop_on_signal(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """``vfq serve``: run the embedded Triton in the foreground until Ctrl-C or SIGTERM."""
    parser = argparse.ArgumentParser(prog="vfq serve", description=main.__doc__)
    parser.add_argument("--model-repository", type=Path, default=DEFAULT_REPOSITORY)
    parser.add_argument("--grpc-port", type=int, default=8001, help="0 = a free port (default 8001)")
    parser.add_argument("--http-port", type=int, default=8000, help="0 = a free port (default 8000)")
    parser.add_argument("--metrics-port", type=int, default=8002, help="0 = a free port (default 8002)")
    parser.add_argument("--startup-timeout", type=float, default=180.0, help="seconds (default 180)")
    parser.add_argument("--log-verbose", type=int, default=0, help="Triton's verbose log level")
    parser.add_argument(
        "--allocator",
        choices=ALLOCATORS,
        default=ALLOCATORS[0],
        help="memory allocator of the server's processes (default tcmalloc, when installed)",
    )
    parser.add_argument(
        "--library-threads",
        type=int,
        default=STEP_LIBRARY_THREADS,
        help="threads of numpy's BLAS (and OpenMP, MKL) in each step process; 0 = one per core "
        f"(default {STEP_LIBRARY_THREADS}; OPENBLAS_NUM_THREADS and the like, where set, win)",
    )
    args = parser.parse_args(argv)
    if args.library_threads < 0:
        parser.error(f"--library-threads must be >= 0, got {args.library_threads}")
    server = EmbeddedServer(
        args.model_repository,
        grpc_port=args.grpc_port,
        http_port=args.http_port,
        metrics_port=args.metrics_port,
        log=sys.stdout,
        startup_timeout_s=args.startup_timeout,
        extra_args=[f"--log-verbose={args.log_verbose}"],
        allocator=args.allocator,
        library_threads=args.library_threads or None,
    )
    # Whatever this process inherited (a signal blocked or ignored by its parent), both signals stop
    # the server: Triton finishes its requests and exits, and no orphaned tritonserver is left.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    for stop_signal in STOP_SIGNALS:
        signal.signal(stop_signal, _stop_on_signal)
    try:
        server.start()
        print(
            f"vfq: {PIPELINE_MODEL} ready - gRPC {server.grpc_url}, HTTP {server.http_url}, "
            f"metrics {server.metrics_url}; Ctrl-C or SIGTERM stops",
            file=sys.stderr,
            flush=True,
        )
        assert server.process is not None
        return server.process.wait()
    except KeyboardInterrupt:
        return server.stop() or 0
    except ServerStartError as error:
        print(f"vfq: error: {error}", file=sys.stderr)
        return 3
    finally:
        server.stop()
