"""VfqClient against the real server: what a request carries and how the answer maps to world mm, the
retries while a server comes up, and each failure arriving as its own error type with a message that
says what happened (model not loaded, timeout, a refused CT), and the shared-memory region's life."""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import tritonclient.grpc as grpcclient
from server_factories import infer

from vfq.client import (
    ModelNotReadyError,
    RequestTimeoutError,
    ServerRejectedError,
    ServerUnavailableError,
    VfqClient,
)
from vfq.client.results import StudyResult
from vfq.server.embedded import EmbeddedServer, free_port
from vfq.tensors import GENANT_GRADE_OUTPUT, KEYPOINTS_OUTPUT, LEVEL_OUTPUT, PIPELINE_MODEL
from vfq.volume import ImageGeometry

#: A part of the phantom (z, y, x) holding a few vertebrae: a CT of another size.
PHANTOM_CROP = (slice(20, 140), slice(40, 340), slice(50, 330))
#: Values 0..900, no air: MR-like, which the server refuses as not CT in HU.
MR_LIKE_ARRAY = np.random.default_rng(7).integers(0, 900, size=(40, 64, 64)).astype(np.int16)


def geometry_with_an_origin(spacing: tuple[float, float, float], shape: tuple[int, ...]) -> ImageGeometry:
    """The phantom's spacing, an origin far from 0 and a direction rotated 12 degrees about z."""
    angle = np.deg2rad(12.0)
    c, s = np.cos(angle), np.sin(angle)
    direction = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    return ImageGeometry(shape, spacing, origin=(-172.25, 31.5, 1204.0), direction=direction)


def cropped(geometry: ImageGeometry, crop: tuple[slice, ...]) -> ImageGeometry:
    """The geometry of ``array[crop]``: the same spacing and direction, the origin at the crop's corner."""
    start = np.array([s.start for s in crop], dtype=np.float64)
    shape = tuple(s.stop - s.start for s in crop)
    origin = geometry.voxel_to_world(start)
    return ImageGeometry(shape, geometry.spacing, origin=tuple(origin), direction=geometry.direction)


def stacked_voxel_keypoints(result: StudyResult) -> np.ndarray:
    return np.array([v.keypoints_voxel for v in result.vertebrae]).reshape(-1, 6, 3)


def assert_same_answer(result: StudyResult, expected: StudyResult) -> None:
    assert [v.level for v in result.vertebrae] == [v.level for v in expected.vertebrae]
    assert [v.genant_grade for v in result.vertebrae] == [v.genant_grade for v in expected.vertebrae]
    np.testing.assert_allclose(stacked_voxel_keypoints(result), stacked_voxel_keypoints(expected), atol=1e-4)
    np.testing.assert_array_equal(result.sagittal_image, expected.sagittal_image)
    assert result.not_assessable == expected.not_assessable


def shm_entries() -> set[str]:
    """This process's vfq regions in /dev/shm."""
    return {name for name in os.listdir("/dev/shm") if name.startswith(f"vfq_ct_{os.getpid()}_")}


def registered_regions(url: str) -> set[str]:
    """The system shared-memory regions of this process that the server has registered."""
    with grpcclient.InferenceServerClient(url) as raw:
        regions = raw.get_system_shared_memory_status(client_timeout=10).regions
    return {name for name in regions if name.startswith(f"vfq_ct_{os.getpid()}_")}


@pytest.fixture(scope="module")
def scans(phantom):
    """The phantom and a crop of it, each with a geometry that has an origin and a rotation."""
    geometry = geometry_with_an_origin(phantom.ct.geometry.spacing, phantom.ct.array.shape)
    return {
        "whole": (phantom.ct.array, geometry),
        "crop": (np.ascontiguousarray(phantom.ct.array[PHANTOM_CROP]), cropped(geometry, PHANTOM_CROP)),
    }


@pytest.fixture(scope="module")
def plain_results(server, scans) -> dict[str, StudyResult]:
    """Each scan sent in the gRPC message (no shared memory)."""
    with VfqClient(server.grpc_url, timeout_s=60) as client:
        return {name: client.analyze_array(array, geometry) for name, (array, geometry) in scans.items()}


# ---------------------------------------------------------------------- answers


def test_the_server_answers_in_voxels_and_the_client_maps_them_with_its_own_geometry(
    server, scans, plain_results
):
    array, geometry = scans["whole"]
    result = plain_results["whole"]
    raw = infer(server.grpc_url, array, geometry.spacing)  # pixels and spacing, nothing else

    assert len(result.vertebrae) == len(raw[KEYPOINTS_OUTPUT]) > 0
    assert [v.level for v in result.vertebrae] == [level.decode() for level in raw[LEVEL_OUTPUT]]
    assert [v.genant_grade for v in result.vertebrae] == raw[GENANT_GRADE_OUTPUT].tolist()
    np.testing.assert_allclose(stacked_voxel_keypoints(result), raw[KEYPOINTS_OUTPUT], atol=1e-4)  # voxels
    world = np.array([v.keypoints_world for v in result.vertebrae])
    np.testing.assert_allclose(world, geometry.voxel_to_world(raw[KEYPOINTS_OUTPUT]), atol=1e-6)
    # the origin and rotation matter: an identity geometry puts the points elsewhere
    unrotated = ImageGeometry(geometry.shape, geometry.spacing)
    moved = np.linalg.norm(world - unrotated.voxel_to_world(raw[KEYPOINTS_OUTPUT]), axis=-1)
    assert moved.min() > 1000.0
    assert result.geometry is geometry and result.source == "array"
    assert result.seconds["request"] > 0 and result.model_version == "1"


def test_analyze_reads_a_file_with_its_origin_and_times_its_parts(server, scans, plain_results, tmp_path):
    array, geometry = scans["crop"]
    origin = (10.0, -20.0, 30.0)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(geometry.spacing[::-1])  # (x, y, z)
    image.SetOrigin(origin)
    path = tmp_path / "crop.nrrd"
    sitk.WriteImage(image, str(path))

    with VfqClient(server.grpc_url, timeout_s=60) as client:
        result = client.analyze(path)

    assert result.source == str(path) and len(result.vertebrae) > 0
    assert result.geometry.origin == origin and result.geometry.spacing == geometry.spacing
    assert set(result.seconds) == {"read", "serialize", "request"} and min(result.seconds.values()) > 0
    assert_same_answer(result, plain_results["crop"])  # the file's pixels arrived unchanged
    # an axial file: world (x, y, z) = origin + voxel (x, y, z) * spacing (x, y, z)
    world = np.array([v.keypoints_world for v in result.vertebrae])
    voxel_xyz = stacked_voxel_keypoints(result)[..., ::-1]
    expected = np.array(origin) + voxel_xyz * np.array(geometry.spacing[::-1])
    np.testing.assert_allclose(world, expected, atol=1e-6)


# ---------------------------------------------------------------------- retries


def test_unavailable_is_retried_until_a_server_comes_up(caplog):
    caplog.set_level(logging.WARNING, logger="vfq.client.connection")
    port = free_port()
    array = np.full((20, 24, 28), -1000, np.int16)
    geometry = ImageGeometry(array.shape, (2.0, 1.0, 1.0))
    with (
        VfqClient(f"127.0.0.1:{port}", retries=6, retry_backoff_s=0.5, timeout_s=30) as client,
        ThreadPoolExecutor(max_workers=1) as pool,
    ):
        pending = pool.submit(client.analyze_array, array, geometry)  # nothing listens yet
        with EmbeddedServer(grpc_port=port):
            result = pending.result(timeout=60)
    assert result.not_assessable is not None and result.vertebrae == ()  # air: answered, not graded
    retried = [r.getMessage() for r in caplog.records if "unavailable, retry" in r.getMessage()]
    assert retried[:1] == [f"inference: server at 127.0.0.1:{port} unavailable, retry 1 of 6 in 0.5 s"]


# ---------------------------------------------------------------------- errors


def test_a_server_without_the_model_is_model_not_ready_not_unavailable():
    array = np.full((20, 24, 28), -1000, np.int16)
    with EmbeddedServer(model_control="explicit") as bare, VfqClient(bare.grpc_url, retries=0) as client:
        with pytest.raises(ModelNotReadyError) as waited:
            client.wait_ready(timeout_s=2)
        with pytest.raises(ModelNotReadyError) as sent:
            client.analyze_array(array, ImageGeometry(array.shape, (1.0, 1.0, 1.0)))
    for caught in (waited, sent):
        assert not isinstance(caught.value, ServerUnavailableError)
        assert (caught.value.url, caught.value.model) == (bare.grpc_url, PIPELINE_MODEL)
        assert f"the server at {bare.grpc_url}" in str(caught.value)
        assert f"model {PIPELINE_MODEL!r}" in str(caught.value)
    assert "was not ready within 2 s" in str(waited.value)
    assert str(sent.value).endswith(f"Request for unknown model: '{PIPELINE_MODEL}' is not found")


def test_a_timeout_is_its_own_error_not_retried_and_the_server_answers_afterwards(
    server, scans, plain_results, caplog
):
    caplog.set_level(logging.WARNING, logger="vfq.client.connection")
    array, geometry = scans["crop"]
    start = time.monotonic()
    with VfqClient(server.grpc_url, timeout_s=0.001, retries=3, retry_backoff_s=10) as client:
        with pytest.raises(RequestTimeoutError) as caught:
            client.analyze_array(array, geometry)
    assert time.monotonic() - start < 5  # a retry would have waited 10 s
    assert caught.value.timeout_s == 0.001
    assert str(caught.value).startswith(
        f"inference: no answer from {server.grpc_url} within the timeout of 0.001 s"
    )
    assert not [r for r in caplog.records if "retry" in r.getMessage()]

    with VfqClient(server.grpc_url, timeout_s=60) as client:
        assert_same_answer(client.analyze_array(array, geometry), plain_results["crop"])


def test_a_refused_ct_carries_the_servers_message_without_tritons_prefixes(server):
    geometry = ImageGeometry(MR_LIKE_ARRAY.shape, (1.0, 1.0, 1.0))
    start = time.monotonic()
    with VfqClient(server.grpc_url, retries=3, retry_backoff_s=10) as client:
        with pytest.raises(ServerRejectedError) as caught:
            client.analyze_array(MR_LIKE_ARRAY, geometry)
    assert time.monotonic() - start < 5  # refused at once, not retried
    message = str(caught.value)
    assert message.startswith("the volume does not look like CT in Hounsfield units: of the sampled voxels")
    assert "values range 0…899" in message and message.endswith("send CT in HU")
    for prefix in ("in ensemble", "Failed to process the request(s)", "StatusCode", "message: "):
        assert prefix not in message
    assert caught.value.status == "StatusCode.INVALID_ARGUMENT"


# ---------------------------------------------------------------------- shared memory


@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="system shared memory lives in /dev/shm")
def test_shared_memory_gives_the_same_answers_and_is_released_on_close(server, scans, plain_results):
    assert shm_entries() == set() and registered_regions(server.grpc_url) == set()
    client = VfqClient(server.grpc_url, timeout_s=60, shared_memory=True)
    with client:
        crop, crop_geometry = scans["crop"]
        result = client.analyze_array(crop, crop_geometry)
        assert "shared_memory_copy" in result.seconds
        assert_same_answer(result, plain_results["crop"])
        first = shm_entries()
        assert len(first) == 1 and registered_regions(server.grpc_url) == first

        whole, whole_geometry = scans["whole"]  # larger: the region is replaced by a larger one
        assert_same_answer(client.analyze_array(whole, whole_geometry), plain_results["whole"])
        second = shm_entries()
        assert len(second) == 1 and second != first and registered_regions(server.grpc_url) == second
    assert shm_entries() == set() and registered_regions(server.grpc_url) == set()
    client.close()  # idempotent
