"""Factories for the client tests: geometries, the ensemble's output arrays, a stand-in for
tritonclient's gRPC client, free ports and MetaImage headers."""

from __future__ import annotations

import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from tritonclient.utils import InferenceServerException

from vfq.client import VfqClient
from vfq.tensors import (
    DETECTION_SCORE_OUTPUT,
    FRACTURE_SCORE_OUTPUT,
    GENANT_GRADE_OUTPUT,
    HEIGHTS_OUTPUT,
    KEYPOINTS_OUTPUT,
    LEVEL_OUTPUT,
    NOT_ASSESSABLE_OUTPUT,
    SAGITTAL_IMAGE_OUTPUT,
    SAGITTAL_KEYPOINTS_OUTPUT,
)
from vfq.volume import ImageGeometry

#: A reason the server gives for a study it cannot grade.
NO_SPINE = "no spine found: the localizer saw no vertebral column in this scan"


def oblique_geometry(shape: tuple[int, int, int] = (60, 80, 70)) -> ImageGeometry:
    """A geometry with anisotropic spacing, an origin far from 0 and a rotated direction."""
    angle = np.deg2rad(12.0)
    c, s = np.cos(angle), np.sin(angle)
    direction = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]) @ np.diag([1.0, -1.0, -1.0])
    return ImageGeometry(
        shape=shape, spacing=(2.5, 0.7, 0.8), origin=(-172.25, 31.5, 1204.0), direction=direction
    )


def pipeline_outputs(
    levels: tuple[str, ...] = ("T12", "L1", ""),
    grades: tuple[int, ...] = (0, 2, 1),
    image_shape: tuple[int, int] = (120, 96),
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """The ensemble's outputs for ``len(levels)`` vertebrae, dtypes as tritonclient returns them
    (``BYTES`` as object arrays of ``bytes``)."""
    rng = np.random.default_rng(seed)
    n = len(levels)
    keypoints = rng.uniform(5.0, 50.0, size=(n, 6, 3)).astype(np.float32)
    return {
        KEYPOINTS_OUTPUT: keypoints,
        HEIGHTS_OUTPUT: rng.uniform(15.0, 30.0, size=(n, 3)).astype(np.float32),
        FRACTURE_SCORE_OUTPUT: np.array([0.05, 0.31, 0.22][:n] + [0.1] * (n - 3), dtype=np.float32),
        GENANT_GRADE_OUTPUT: np.array(grades, dtype=np.int32),
        DETECTION_SCORE_OUTPUT: rng.uniform(0.5, 1.0, size=n).astype(np.float32),
        LEVEL_OUTPUT: np.array([level.encode() for level in levels], dtype=object),
        SAGITTAL_IMAGE_OUTPUT: rng.uniform(-1000.0, 1500.0, size=image_shape).astype(np.float32),
        SAGITTAL_KEYPOINTS_OUTPUT: rng.uniform(10.0, 90.0, size=(n, 6, 2)).astype(np.float32),
        NOT_ASSESSABLE_OUTPUT: np.array([b""], dtype=object),
    }


def not_assessable_outputs(reason: str = NO_SPINE) -> dict[str, np.ndarray]:
    """The ensemble's outputs for a study it cannot grade: no vertebra, an empty image, a reason."""
    outputs = pipeline_outputs(levels=(), grades=(), image_shape=(0, 0))
    outputs[NOT_ASSESSABLE_OUTPUT] = np.array([reason.encode()], dtype=object)
    return outputs


def free_port() -> int:
    """A loopback TCP port nobody listens on (bound and released at once)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_mha_header(
    path: Path, size_xyz: tuple[int, int, int], direction: tuple[float, ...] = (1, 0, 0, 0, 1, 0, 0, 0, 1)
) -> Path:
    """A MetaImage header announcing a volume of ``size_xyz`` int16 voxels whose pixel data file does
    not exist: reading its pixels would fail, reading its header works."""
    path.write_text(
        "ObjectType = Image\n"
        "NDims = 3\n"
        "BinaryData = True\n"
        "BinaryDataByteOrderMSB = False\n"
        f"TransformMatrix = {' '.join(str(v) for v in direction)}\n"
        "Offset = 0 0 0\n"
        "ElementSpacing = 0.5 0.5 0.5\n"
        f"DimSize = {' '.join(str(n) for n in size_xyz)}\n"
        "ElementType = MET_SHORT\n"
        f"ElementDataFile = {path.stem}.raw\n"
    )
    return path


class FakeAnswer:
    """What tritonclient's ``infer`` returns: ``as_numpy(name)`` and ``get_response().model_version``."""

    def __init__(self, outputs: Mapping[str, np.ndarray], model_version: str = "1") -> None:
        self._outputs = dict(outputs)
        self.model_version = model_version

    def as_numpy(self, name: str) -> np.ndarray | None:
        return self._outputs.get(name)

    def get_response(self) -> FakeAnswer:
        return self


def triton_error(status: str, message: str) -> InferenceServerException:
    """A tritonclient error as its gRPC client raises it (``status`` like ``StatusCode.UNAVAILABLE``)."""
    return InferenceServerException(msg=message, status=status, debug_details="")


class FakeTriton:
    """A stand-in for ``tritonclient.grpc.InferenceServerClient`` that records calls.

    Args:
        answers: what successive ``infer`` calls do: an exception to raise, else the outputs to
            answer with (the last entry repeats).
        live: what ``is_server_live`` answers, or an exception it raises.
    """

    def __init__(
        self, answers: list[Any] | None = None, live: bool | Exception = True, model_ready: bool = True
    ) -> None:
        self.answers = answers if answers is not None else [pipeline_outputs()]
        self.live = live
        self.model_ready = model_ready
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self.closed = False

    def _record(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.calls.append((name, args, kwargs))

    def calls_to(self, name: str) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
        return [(args, kwargs) for called, args, kwargs in self.calls if called == name]

    def infer(self, *args: Any, **kwargs: Any) -> FakeAnswer:
        self._record("infer", args, kwargs)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return FakeAnswer(answer)

    def is_server_live(self, **kwargs: Any) -> bool:
        self._record("is_server_live", (), kwargs)
        if isinstance(self.live, Exception):
            raise self.live
        return self.live

    def is_model_ready(self, *args: Any, **kwargs: Any) -> bool:
        self._record("is_model_ready", args, kwargs)
        return self.model_ready

    def register_system_shared_memory(self, *args: Any, **kwargs: Any) -> None:
        self._record("register_system_shared_memory", args, kwargs)

    def unregister_system_shared_memory(self, *args: Any, **kwargs: Any) -> None:
        self._record("unregister_system_shared_memory", args, kwargs)

    def close(self) -> None:
        self.closed = True


def fake_client(fake: FakeTriton, **options: Any) -> VfqClient:
    """A :class:`VfqClient` (no retry pause unless ``options`` say) whose gRPC client is ``fake``."""
    client = VfqClient(f"127.0.0.1:{free_port()}", **{"retry_backoff_s": 0.0, **options})
    client._client.close()
    client._client = fake
    return client
