"""The client of the served ``vertebra_pipeline`` model (Triton, gRPC).

::

    with VfqClient("127.0.0.1:8001") as client:
        client.wait_ready(timeout_s=30)
        result = client.analyze("scans/ct.nii.gz")      # a StudyResult

Only the pixels (int16 HU, ``(z, y, x)`` of the LPS array) and the voxel size travel to the server:
no patient identifiers, no origin or direction. The origin and direction stay with the client, which
maps the server's voxel keypoints to world LPS mm.

Failures become the types of :mod:`vfq.client.errors`. Every call has an explicit timeout; calls
that meet a gRPC ``UNAVAILABLE`` (no server, or a server whose queue is full) are retried ``retries``
times with exponential backoff, any other error is raised at once.

With ``shared_memory=True`` the CT goes through a system shared-memory region (``/dev/shm``) instead
of the gRPC message: much faster, but only when client and server share a host (and its
``/dev/shm``). One client holds one region, grown as needed and reused across calls; a client with
shared memory serves one request at a time.
"""

from __future__ import annotations

import functools
import logging
import os
import random
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.utils.shared_memory as system_shm
from tritonclient.utils import InferenceServerException

from vfq.client.errors import (
    ModelNotReadyError,
    RequestTimeoutError,
    ServerBusyError,
    ServerRejectedError,
    ServerUnavailableError,
    SharedMemoryError,
)
from vfq.client.results import StudyResult
from vfq.client.tls import GrpcTls
from vfq.client.wire import RawInfer, infer_request_bytes
from vfq.errors import InputError, VfqError
from vfq.preprocess import MAX_SHAPE
from vfq.tensors import CT_INPUT, PIPELINE_MODEL, PIPELINE_OUTPUTS, SPACING_INPUT
from vfq.volume import ImageGeometry

__all__ = ["COMPRESSIONS", "DEFAULT_URL", "VfqClient", "check_file_size", "server_message"]

logger = logging.getLogger(__name__)

#: Where a server started by ``vfq serve`` or the Triton container listens for gRPC.
DEFAULT_URL = "127.0.0.1:8001"
#: gRPC compressions the client can apply to requests.
COMPRESSIONS: tuple[str, ...] = ("gzip", "deflate")
#: gRPC's largest message (bytes): a whole CT travels in one request, its outputs in one answer.
MAX_MESSAGE_BYTES = 2**31 - 1
#: Room left in a message for everything but the CT's bytes.
MESSAGE_HEADROOM_BYTES = 1 << 20
#: Longest single readiness probe (s) within :meth:`VfqClient.wait_ready`.
PROBE_TIMEOUT_S = 5.0
#: Longest wait (ms) between two reconnection attempts of the channel: a server that comes up is
#: seen within this time (gRPC's default grows to 2 minutes).
MAX_RECONNECT_BACKOFF_MS = 2000
#: Triton's message (with gRPC ``UNAVAILABLE``) for a request that finds a step's queue full.
QUEUE_FULL_MESSAGE = "Exceeds maximum queue size"

T = TypeVar("T")

#: What the server answers to unregistering a region that a request it has not yet released still holds.
_REGION_IN_USE = "currently in use"

#: Prefixes Triton puts before a model's own error message (ensemble, model instance).
_TRITON_PREFIX = re.compile(
    r"^(?:in ensemble '[^']*', "
    r"|Failed to process the request\(s\) for model(?: instance)? '[^']*', message: )"
)


def _channel_args() -> list[tuple[str, int]]:
    keepalive = grpcclient.KeepAliveOptions()
    return [
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_reconnect_backoff_ms", MAX_RECONNECT_BACKOFF_MS),
        ("grpc.keepalive_time_ms", keepalive.keepalive_time_ms),
        ("grpc.keepalive_timeout_ms", keepalive.keepalive_timeout_ms),
        ("grpc.keepalive_permit_without_calls", int(keepalive.keepalive_permit_without_calls)),
        ("grpc.http2.max_pings_without_data", keepalive.http2_max_pings_without_data),
    ]


def server_message(error: InferenceServerException) -> str:
    """The server's own message of a tritonclient error, without the gRPC status and Triton's prefixes."""
    text = error.message() if error.message() is not None else str(error)
    while True:
        stripped = _TRITON_PREFIX.sub("", text, count=1)
        if stripped == text:
            return text.strip()
        text = stripped


def _queue_full(error: InferenceServerException) -> bool:
    """Whether Triton refused the request because a step's queue was full (the server is busy)."""
    return "UNAVAILABLE" in (error.status() or "") and QUEUE_FULL_MESSAGE in server_message(error)


#: What gRPC says when a TLS handshake fails (lower case).
_TLS_FAILURES = ("handshake failed", "certificate_verify_failed", "hostname verification")


def _connection_hint(text: str, tls: GrpcTls | None) -> str:
    """What to check when a connection fails with gRPC's ``text``, given the client's TLS (or ``""``)."""
    lowered = text.lower()
    if any(failure in lowered for failure in _TLS_FAILURES):
        return (
            "; the TLS handshake failed: check the CA of the server's certificate (--root-certificates) "
            "and the name it carries (--ssl-target-name)"
        )
    if "socket closed" not in lowered:
        return ""
    # A closed socket can also be a server that went away: say what it would mean for TLS, as an "if".
    if tls is None:
        return "; if the server uses TLS (it closes plaintext connections), connect with --ssl"
    if tls.private_key is None:
        return (
            "; if the server asks for client certificates (it closes connections without one), "
            "give --private-key and --certificate-chain"
        )
    return ""


@dataclass(frozen=True)
class _Region:
    """A system shared-memory region registered with the server."""

    name: str
    key: str
    byte_size: int
    handle: Any


class VfqClient:
    """Calls the ``vertebra_pipeline`` model of a Triton server over gRPC.

    Args:
        url: ``host:port`` of the server's gRPC endpoint.
        timeout_s: limit (s) on each inference call, transfer included.
        retries: how many times a call that meets gRPC ``UNAVAILABLE`` is tried again.
        retry_backoff_s: wait (s) before the first retry; doubled before each further one. After a
            refusal of a busy server (queue full) each wait is drawn between half and one and a half
            times that, so that clients refused together do not come back together.
        shared_memory: send the CT through system shared memory (client and server on one host).
        compression: ``"gzip"`` or ``"deflate"`` to compress requests (costs CPU, saves bandwidth
            on slow links), ``None`` for none.
        model: the served model to call.
        tls: connect with TLS (a server started with ``--grpc-use-ssl``); ``None``: plaintext.
        verbose: let tritonclient print the gRPC messages it sends on stdout (for debugging; the
            plain-gRPC inference request, serialized by :mod:`vfq.client.wire`, is not among them).

    Use it as a context manager, or call :meth:`close`, so that the shared-memory region is
    unregistered and freed.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        timeout_s: float = 120.0,
        retries: int = 3,
        retry_backoff_s: float = 0.5,
        shared_memory: bool = False,
        compression: str | None = None,
        model: str = PIPELINE_MODEL,
        tls: GrpcTls | None = None,
        verbose: bool = False,
    ) -> None:
        if not (timeout_s > 0 and np.isfinite(timeout_s)):
            raise ValueError(f"timeout_s must be a positive number of seconds, got {timeout_s!r}")
        if retries < 0 or retry_backoff_s < 0:
            raise ValueError(
                f"retries and retry_backoff_s must be >= 0, got {retries!r} and {retry_backoff_s!r}"
            )
        if compression is not None and compression not in COMPRESSIONS:
            raise ValueError(f"compression must be one of {COMPRESSIONS} or None, got {compression!r}")
        self.url = url
        self.timeout_s = float(timeout_s)
        self.retries = int(retries)
        self.retry_backoff_s = float(retry_backoff_s)
        self.shared_memory = shared_memory
        self.compression = compression
        self.model = model
        self.tls = tls
        self._client = grpcclient.InferenceServerClient(
            url,
            verbose=verbose,
            channel_args=_channel_args() + (tls.channel_args() if tls else []),
            **(tls.client_options() if tls else {}),
        )
        self._raw_infer = RawInfer(self._client)
        self._region: _Region | None = None
        self._closed = False

    # ------------------------------------------------------------------ lifetime

    def __enter__(self) -> VfqClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Unregister and free the shared-memory region (if any) and close the connection. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self._release_region()
        finally:
            self._client.close()

    # ------------------------------------------------------------------ readiness

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        """Wait until the server is live and the model ready.

        Args:
            timeout_s: how long to wait in all (s); the server is polled every ``retry_backoff_s``.

        Raises:
            ServerUnavailableError: no server answered at the URL within ``timeout_s``.
            ModelNotReadyError: the server answered but the model was not ready within ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        server_up, last_error = False, "no answer"
        while True:
            probe_s = max(min(deadline - time.monotonic(), PROBE_TIMEOUT_S), 0.05)
            try:
                server_up = bool(self._client.is_server_live(client_timeout=probe_s))
                if server_up and self._client.is_model_ready(self.model, client_timeout=probe_s):
                    return
                last_error = "server not live" if not server_up else "model not ready"
            except InferenceServerException as e:
                status = e.status() or ""
                if "UNAVAILABLE" not in status and "DEADLINE_EXCEEDED" not in status:
                    raise self._map_error(e, "readiness check", probe_s) from e
                server_up, last_error = False, server_message(e)
            pause = max(self.retry_backoff_s, 0.05)
            if time.monotonic() + pause >= deadline:
                break
            time.sleep(pause)
        if not server_up:
            raise ServerUnavailableError(
                f"no Triton server answered at {self.url} within {timeout_s:g} s ({last_error}); "
                "check the address and that the server runs (vfq serve, or the Triton container)",
                self.url,
            )
        raise ModelNotReadyError(
            f"the server at {self.url} is up but model {self.model!r} was not ready within {timeout_s:g} s; "
            "check the server log for model loading errors",
            self.url,
            self.model,
        )

    # ------------------------------------------------------------------ analysis

    def analyze(self, path: str | os.PathLike[str]) -> StudyResult:
        """Read a CT (DICOM series folder, NIfTI, NRRD or MetaImage file) and analyse it.

        The size in the file header is checked against :data:`vfq.preprocess.MAX_SHAPE` before any
        pixel is read (:func:`check_file_size`). ``seconds["read"]`` records the reading time.

        Raises:
            InputError: the file cannot be read as a CT (see :func:`vfq.io.read_ct`) or is too large.
            ServerUnavailableError, ModelNotReadyError, RequestTimeoutError, ServerRejectedError,
            SharedMemoryError, ResponseError: as :meth:`analyze_array`.
        """
        from vfq.io import read_ct  # SimpleITK is imported on use: clients sending arrays need none

        check_file_size(path)
        start = time.perf_counter()
        ct = read_ct(path)
        seconds = {"read": time.perf_counter() - start}
        array = _checked_array(ct.array, ct.geometry)
        return self._analyze(array, ct.geometry, str(path), seconds)

    def analyze_array(self, array: np.ndarray, geometry: ImageGeometry, source: str = "array") -> StudyResult:
        """Analyse a CT given as an array.

        Args:
            array: ``(z, y, x)`` int16 Hounsfield units of an LPS-oriented volume (as
                :func:`vfq.io.read_ct` returns it).
            geometry: its geometry; only the spacing is sent, the rest maps the keypoints to world mm.
            source: a name for the result.

        Raises:
            InputError: not a 3D int16 array, a shape that does not match ``geometry``, one larger
                than :data:`vfq.preprocess.MAX_SHAPE`, or (without shared memory) more bytes than a
                gRPC message carries (refused before sending).
            ServerUnavailableError: no server answered, even after the retries.
            ModelNotReadyError: the server answered but the model is not loaded.
            RequestTimeoutError: no answer within ``timeout_s``.
            ServerRejectedError: the server refused this CT (its message says why).
            SharedMemoryError: with ``shared_memory``, the region could not be set up.
            ResponseError: the answer does not follow the served API.
        """
        return self._analyze(_checked_array(array, geometry), geometry, source, {})

    def _analyze(
        self, array: np.ndarray, geometry: ImageGeometry, source: str, seconds: dict[str, float]
    ) -> StudyResult:
        spacing = np.asarray(geometry.spacing, dtype=np.float32)
        if self.shared_memory:
            start = time.perf_counter()
            region = self._region_for(array.nbytes)
            system_shm.set_shared_memory_region(region.handle, [array])
            seconds["shared_memory_copy"] = time.perf_counter() - start
            ct_input = grpcclient.InferInput(CT_INPUT, list(array.shape), "INT16")
            ct_input.set_shared_memory(region.name, array.nbytes)
            spacing_input = grpcclient.InferInput(SPACING_INPUT, [3], "FP32")
            spacing_input.set_data_from_numpy(spacing)
            start = time.perf_counter()
            infer = functools.partial(
                self._client.infer,
                self.model,
                [ct_input, spacing_input],
                outputs=[grpcclient.InferRequestedOutput(name) for name in PIPELINE_OUTPUTS],
                compression_algorithm=self.compression,
            )
        else:
            if array.nbytes > MAX_MESSAGE_BYTES - MESSAGE_HEADROOM_BYTES:
                raise InputError(
                    f"the CT is {array.nbytes / 2**30:.2f} GiB, more than one gRPC message carries "
                    f"({MAX_MESSAGE_BYTES / 2**30:.0f} GiB): send it through shared memory (a client on the "
                    "server's host) or crop / resample it (nothing was sent)"
                )
            start = time.perf_counter()  # serializing is part of the request, as in tritonclient's infer
            payload = infer_request_bytes(
                self.model, [(CT_INPUT, array), (SPACING_INPUT, spacing)], PIPELINE_OUTPUTS
            )
            seconds["serialize"] = time.perf_counter() - start
            infer = functools.partial(self._raw_infer, payload, compression=self.compression)
        try:
            answer = self._call("inference", infer, timeout_s=self.timeout_s)
        except ServerUnavailableError as e:
            if self._server_live():
                raise ModelNotReadyError(
                    f"the server at {self.url} is up but model {self.model!r} is not available: {e}",
                    self.url,
                    self.model,
                ) from e
            raise
        seconds["request"] = time.perf_counter() - start
        outputs = {name: answer.as_numpy(name) for name in PIPELINE_OUTPUTS}
        logger.debug("analysed a CT of shape %s (z, y, x) in %.2f s", array.shape, seconds["request"])
        return StudyResult.from_outputs(
            {name: value for name, value in outputs.items() if value is not None},
            geometry,
            source,
            seconds,
            model=self.model,
            model_version=answer.get_response().model_version,
        )

    # ------------------------------------------------------------------ gRPC calls and errors

    def _call(self, what: str, fn: Callable[..., T], *args: Any, timeout_s: float, **kwargs: Any) -> T:
        """``fn(*args, client_timeout=timeout_s, **kwargs)``, retried on ``UNAVAILABLE``, errors mapped."""
        attempt = 0
        while True:
            try:
                return fn(*args, client_timeout=timeout_s, **kwargs)
            except InferenceServerException as e:
                if "UNAVAILABLE" not in (e.status() or "") or attempt >= self.retries:
                    raise self._map_error(e, what, timeout_s) from e
                busy = _queue_full(e)
                pause = self.retry_backoff_s * 2**attempt * (random.uniform(0.5, 1.5) if busy else 1.0)
                attempt += 1
                logger.warning(
                    "%s: server at %s %s, retry %d of %d in %.1f s",
                    what,
                    self.url,
                    "busy (queue full)" if busy else "unavailable",
                    attempt,
                    self.retries,
                    pause,
                )
                time.sleep(pause)

    def _map_error(self, error: InferenceServerException, what: str, timeout_s: float) -> VfqError:
        status = error.status() or ""
        text = server_message(error)
        if _queue_full(error):
            return ServerBusyError(
                f"the server at {self.url} is busy: its queue was full ({what}, after {self.retries} "
                "retries); send the CT again later, or give the server more instances or replicas",
                self.url,
            )
        if "UNAVAILABLE" in status:
            return ServerUnavailableError(
                f"no Triton server answers at {self.url} ({what}, after {self.retries} retries): {text}"
                + _connection_hint(text, self.tls),
                self.url,
            )
        if "DEADLINE_EXCEEDED" in status:
            return RequestTimeoutError(
                f"{what}: no answer from {self.url} within the timeout of {timeout_s:g} s; "
                "allow more time (--timeout) or check the server's load",
                timeout_s,
            )
        if "NOT_FOUND" in status:
            return ModelNotReadyError(
                f"the server at {self.url} does not serve model {self.model!r}: {text}", self.url, self.model
            )
        return ServerRejectedError(text, status)

    def _server_live(self) -> bool:
        try:
            return bool(self._client.is_server_live(client_timeout=PROBE_TIMEOUT_S))
        except InferenceServerException:
            return False

    # ------------------------------------------------------------------ shared memory

    def _region_for(self, byte_size: int) -> _Region:
        """The registered region, replaced by a larger one when it holds fewer than ``byte_size`` bytes."""
        if self._region is not None and self._region.byte_size >= byte_size:
            return self._region
        self._release_region()
        name = f"vfq_ct_{os.getpid()}_{uuid.uuid4().hex[:12]}"
        key = "/" + name
        try:
            handle = system_shm.create_shared_memory_region(name, key, byte_size, create_only=True)
        except system_shm.SharedMemoryException as e:
            raise SharedMemoryError(
                f"cannot create a shared-memory region of {byte_size / 2**20:.0f} MiB ({e.__cause__ or e}); "
                "enlarge /dev/shm or send the CT without shared memory"
            ) from e
        try:
            self._call(
                "register shared memory",
                self._client.register_system_shared_memory,
                name,
                key,
                byte_size,
                timeout_s=self.timeout_s,
            )
        except ServerRejectedError as e:
            system_shm.destroy_shared_memory_region(handle)
            raise SharedMemoryError(
                f"the server at {self.url} cannot use this client's shared memory ({e}); shared memory "
                "works only when client and server share a host: send the CT without it"
            ) from e
        except VfqError:
            system_shm.destroy_shared_memory_region(handle)
            raise
        self._region = _Region(name=name, key=key, byte_size=byte_size, handle=handle)
        return self._region

    def _release_region(self) -> None:
        region, self._region = self._region, None
        if region is None:
            return
        # The server holds a region until it has released the last request that read it, which can
        # be just after the answer arrived ("currently in use"): ask again for a short while.
        deadline = time.monotonic() + PROBE_TIMEOUT_S
        try:
            while True:
                try:
                    self._client.unregister_system_shared_memory(region.name, client_timeout=PROBE_TIMEOUT_S)
                    return
                except InferenceServerException as e:
                    if _REGION_IN_USE not in server_message(e) or time.monotonic() >= deadline:
                        logger.warning(
                            "could not unregister shared memory %s at %s: %s", region.name, self.url, e
                        )
                        return
                time.sleep(0.01)
        finally:
            system_shm.destroy_shared_memory_region(region.handle)


# ---------------------------------------------------------------------- local checks


def _too_large(shape: tuple[int, ...], what: str) -> InputError:
    return InputError(
        f"{what} has shape (z, y, x) = {tuple(shape)} voxels, over the limit {MAX_SHAPE} that the "
        "server accepts; crop it to the spine or resample it to thicker slices (nothing was sent)"
    )


def _checked_array(array: np.ndarray, geometry: ImageGeometry) -> np.ndarray:
    """The CT as a C-contiguous int16 ``(z, y, x)`` array, refused locally if the server would refuse it."""
    array = np.asarray(array)
    if array.ndim != 3:
        raise InputError(
            f"a CT is a 3D array (z, y, x), got {array.ndim} dimension(s) of shape {array.shape}"
        )
    if array.dtype != np.int16:
        raise InputError(
            f"a CT is sent as int16 Hounsfield units, got dtype {array.dtype}; convert to HU and round "
            "to int16 (vfq.io.read_ct does)"
        )
    if any(n > m for n, m in zip(array.shape, MAX_SHAPE)):
        raise _too_large(array.shape, "the CT")
    if tuple(array.shape) != geometry.shape:
        raise InputError(f"array shape {array.shape} does not match its geometry's shape {geometry.shape}")
    return np.ascontiguousarray(array)


def check_file_size(path: str | os.PathLike[str]) -> None:
    """Refuse a NIfTI / NRRD / MetaImage file whose header announces a CT larger than
    :data:`vfq.preprocess.MAX_SHAPE`, before any pixel is read.

    The header's size is taken in LPS order, as :func:`vfq.io.read_ct` will reorient the volume.
    Folders (DICOM series) and files whose header cannot be read pass: reading them reports why.

    Raises:
        InputError: the announced volume is larger than the limit.
    """
    import SimpleITK as sitk  # imported on use, as in VfqClient.analyze

    from vfq.io.ct import SUPPORTED_SUFFIXES

    path = Path(path)
    name = path.name.lower()
    suffix = next((s for s in SUPPORTED_SUFFIXES if name.endswith(s)), None)
    if suffix is None or not path.is_file():
        return
    reader = sitk.ImageFileReader()
    reader.SetImageIO(SUPPORTED_SUFFIXES[suffix][1])
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return
    size, dimension = reader.GetSize(), reader.GetDimension()
    if dimension < 3:
        return
    direction = np.array(reader.GetDirection(), dtype=np.float64).reshape(dimension, dimension)[:3, :3]
    world_axis = np.abs(direction).argmax(axis=0)  # the LPS axis (x, y, z) each file axis runs along
    size_xyz = list(size[:3])
    if sorted(world_axis.tolist()) == [0, 1, 2]:
        for file_axis, axis in enumerate(world_axis):
            size_xyz[axis] = size[file_axis]
    shape_zyx = tuple(int(n) for n in size_xyz[::-1])
    if any(n > m for n, m in zip(shape_zyx, MAX_SHAPE)):
        raise _too_large(shape_zyx, f"{str(path)!r}")
