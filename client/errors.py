"""Errors of the client that a caller can act on, each its own type (all :class:`vfq.errors.VfqError`).

::

    VfqError
    ├── InputError (vfq.errors)        the CT cannot be analysed as given (read, size, dtype)
    │   └── DicomSourceError           no DICOM SR can be made for this source (not a DICOM series, or
    │                                  one that does not match the analysed volume)
    ├── ServerUnavailableError         nothing answers at the URL (connection refused, UNAVAILABLE)
    ├── ServerBusyError                the server answers, but its queue is full (UNAVAILABLE "Exceeds
    │                                  maximum queue size"), even after the retries
    ├── ModelNotReadyError             the server answers, the pipeline model is not loaded / ready
    ├── RequestTimeoutError            no answer within the timeout (gRPC DEADLINE_EXCEEDED)
    ├── ServerRejectedError            the server answered this request with an error (e.g. not a CT)
    ├── SharedMemoryError              the shared-memory transfer cannot be set up (not one host, /dev/shm)
    └── ResponseError                  the answer does not follow the served API (version mismatch)

Reading problems keep the types of :mod:`vfq.errors` (``UnreadableInputError``, ``NotCTError``,
``InconsistentSeriesError``, all ``InputError``).
"""

from __future__ import annotations

from vfq.errors import InputError, VfqError

__all__ = [
    "DicomSourceError",
    "ModelNotReadyError",
    "RequestTimeoutError",
    "ResponseError",
    "ServerBusyError",
    "ServerRejectedError",
    "ServerUnavailableError",
    "SharedMemoryError",
]


class ServerUnavailableError(VfqError):
    """No Triton server answers at the URL, even after the retries (the message names the URL).

    Attributes:
        url: the ``host:port`` that was called.
    """

    def __init__(self, message: str, url: str) -> None:
        super().__init__(message)
        self.url = url


class ServerBusyError(VfqError):
    """The server refused the request because a step's queue was full, even after the retries: it is
    overloaded, not down (a repository written with ``vfq-repository write --max-queue-size N`` queues
    at most N requests for each step; README, "Bounded queues"). Nothing of the request was kept;
    sending it later may succeed.

    Attributes:
        url: the ``host:port`` of the server.
    """

    def __init__(self, message: str, url: str) -> None:
        super().__init__(message)
        self.url = url


class ModelNotReadyError(VfqError):
    """The server answers, but the pipeline model is not loaded or not ready.

    Attributes:
        url: the ``host:port`` of the server.
        model: the model that is not ready.
    """

    def __init__(self, message: str, url: str, model: str) -> None:
        super().__init__(message)
        self.url = url
        self.model = model


class RequestTimeoutError(VfqError):
    """The server did not answer within the timeout (gRPC ``DEADLINE_EXCEEDED``).

    Attributes:
        timeout_s: the timeout in seconds.
    """

    def __init__(self, message: str, timeout_s: float) -> None:
        super().__init__(message)
        self.timeout_s = timeout_s


class ServerRejectedError(VfqError):
    """The server answered this request with an error (``INVALID_ARG`` for a CT it refuses, or another).

    ``str(error)`` is the server's own message, without Triton's prefixes (gRPC status, ensemble and
    model-instance names).

    Attributes:
        status: the gRPC status of the answer (e.g. ``"StatusCode.INVALID_ARGUMENT"``), or ``""``.
    """

    def __init__(self, message: str, status: str = "") -> None:
        super().__init__(message)
        self.status = status


class SharedMemoryError(VfqError):
    """The CT cannot go through system shared memory: the region cannot be created (``/dev/shm`` too
    small) or the server cannot open it (it runs on another host or in a container without the
    client's ``/dev/shm``). Sending without shared memory works."""


class ResponseError(VfqError):
    """The server's answer does not follow the served API (an output missing or of the wrong shape):
    the client and the model repository come from different versions of vfq."""


class DicomSourceError(InputError):
    """No DICOM SR or key image can be made for this source: it is not a DICOM series (a NIfTI, NRRD
    or MetaImage file has no study, series or patient to file them under), or its headers lack what
    the documents must reference, or they do not describe the volume that was analysed."""
