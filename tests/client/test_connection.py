"""VfqClient without a server: local refusals before sending, what a request carries, retries and
error mapping (a stand-in for tritonclient's gRPC client), the shared-memory region's life, and an
unreachable port."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
from client_factories import (
    FakeTriton,
    fake_client,
    free_port,
    oblique_geometry,
    pipeline_outputs,
    triton_error,
    write_mha_header,
)

from vfq.client import (
    ModelNotReadyError,
    RequestTimeoutError,
    ServerRejectedError,
    ServerUnavailableError,
    VfqClient,
    check_file_size,
)
from vfq.client.connection import server_message
from vfq.errors import InputError, UnreadableInputError
from vfq.preprocess import MAX_SHAPE
from vfq.tensors import CT_INPUT, KEYPOINTS_OUTPUT, PIPELINE_MODEL, PIPELINE_OUTPUTS, SPACING_INPUT
from vfq.volume import ImageGeometry

UNAVAILABLE = "StatusCode.UNAVAILABLE"


def small_ct(shape=(60, 80, 70)) -> tuple[np.ndarray, ImageGeometry]:
    rng = np.random.default_rng(1)
    return rng.integers(-1000, 1500, size=shape, dtype=np.int16), oblique_geometry(shape)


# ---------------------------------------------------------------------- refused before sending


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((8, 8, 8), np.float32), "int16"),
        (np.zeros((8, 8), np.int16), "3D"),
        (np.broadcast_to(np.int16(0), (MAX_SHAPE[0] + 1, 4, 4)), "over the limit"),
        (np.broadcast_to(np.int16(0), (4, 4, MAX_SHAPE[2] + 1)), "over the limit"),
    ],
    ids=["float", "2d", "too-many-slices", "too-wide"],
)
def test_arrays_the_server_would_refuse_are_refused_locally(array, message):
    fake = FakeTriton()
    geometry = ImageGeometry(array.shape, (1, 1, 1)) if array.ndim == 3 else oblique_geometry()
    with fake_client(fake) as client, pytest.raises(InputError, match=message):
        client.analyze_array(array, geometry)
    assert fake.calls_to("infer") == []


def test_an_array_must_match_its_geometry():
    array, _ = small_ct()
    with fake_client(FakeTriton()) as client, pytest.raises(InputError, match="does not match"):
        client.analyze_array(array, oblique_geometry((10, 10, 10)))


def test_a_gigantic_file_is_refused_from_its_header_before_any_pixel_is_read(tmp_path):
    header = write_mha_header(tmp_path / "huge.mha", size_xyz=(2048, 2048, 2000))
    assert not (tmp_path / "huge.raw").exists()  # reading pixels would fail as unreadable
    with pytest.raises(InputError, match=r"\(2000, 2048, 2048\) voxels, over the limit") as caught:
        check_file_size(header)
    assert not isinstance(caught.value, UnreadableInputError)
    fake = FakeTriton()
    with fake_client(fake) as client, pytest.raises(InputError, match="over the limit") as caught:
        client.analyze(header)
    assert not isinstance(caught.value, UnreadableInputError)
    assert fake.calls == []


def test_the_header_size_is_judged_in_lps_order(tmp_path):
    # file axis 0 runs along world z: 2000 slices once reoriented, within the limit of 2048
    swap_x_z = (0, 0, 1, 0, 1, 0, 1, 0, 0)
    check_file_size(write_mha_header(tmp_path / "sagittal.mha", (2000, 600, 600), swap_x_z))
    with pytest.raises(InputError, match=r"\(600, 600, 2000\)"):
        check_file_size(write_mha_header(tmp_path / "axial.mha", (2000, 600, 600)))


def test_files_whose_header_cannot_be_read_are_left_to_the_reader(tmp_path):
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"not an image")
    check_file_size(broken)  # no verdict here ...
    with fake_client(FakeTriton()) as client, pytest.raises(UnreadableInputError):
        client.analyze(broken)  # ... the reader says what is wrong


# ---------------------------------------------------------------------- a request


def test_a_request_carries_the_pixels_and_the_spacing_only():
    array, geometry = small_ct()
    fake = FakeTriton()
    with fake_client(fake, timeout_s=42.0, compression="gzip") as client:
        result = client.analyze_array(array, geometry, source="phantom")
    ((args, kwargs),) = fake.calls_to("infer")
    model, inputs = args
    assert model == PIPELINE_MODEL
    assert [i.name() for i in inputs] == [CT_INPUT, SPACING_INPUT]
    assert inputs[0].datatype() == "INT16" and inputs[0].shape() == list(array.shape)
    assert inputs[0]._raw_content == array.tobytes()
    assert inputs[1].datatype() == "FP32"
    spacing_sent = np.frombuffer(inputs[1]._raw_content, np.float32)
    np.testing.assert_array_equal(spacing_sent, np.float32([2.5, 0.7, 0.8]))  # (z, y, x) mm
    assert [o.name() for o in kwargs["outputs"]] == list(PIPELINE_OUTPUTS)
    assert kwargs["client_timeout"] == 42.0 and kwargs["compression_algorithm"] == "gzip"
    assert result.source == "phantom" and result.model_version == "1"
    assert result.seconds["request"] >= 0
    np.testing.assert_allclose(
        result.vertebrae[0].keypoints_world,
        geometry.voxel_to_world(pipeline_outputs()[KEYPOINTS_OUTPUT][0]),
        atol=1e-9,
    )


def test_analyze_reads_the_file_and_times_the_read(tmp_path):
    import SimpleITK as sitk

    array, _ = small_ct((20, 24, 28))
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.8, 0.7, 2.5))
    image.SetOrigin((10.0, -20.0, 30.0))
    sitk.WriteImage(image, str(tmp_path / "ct.nrrd"))
    fake = FakeTriton()
    with fake_client(fake) as client:
        result = client.analyze(tmp_path / "ct.nrrd")
    ((args, _),) = fake.calls_to("infer")
    assert args[1][0]._raw_content == array.tobytes()
    assert result.source == str(tmp_path / "ct.nrrd")
    assert result.geometry.origin == (10.0, -20.0, 30.0)
    assert set(result.seconds) == {"read", "request"}


# ---------------------------------------------------------------------- retries and errors


def test_unavailable_is_retried_with_backoff_then_succeeds():
    fake = FakeTriton(answers=[triton_error(UNAVAILABLE, "connection reset")] * 2 + [pipeline_outputs()])
    array, geometry = small_ct()
    with fake_client(fake, retries=3, retry_backoff_s=0.01) as client:
        start = time.monotonic()
        result = client.analyze_array(array, geometry)
    assert len(fake.calls_to("infer")) == 3
    assert time.monotonic() - start >= 0.01 + 0.02  # 0.01 s, then doubled
    assert len(result.vertebrae) == 3


def test_a_server_that_stays_away_is_unavailable_and_the_message_names_the_url():
    fake = FakeTriton(answers=[triton_error(UNAVAILABLE, "failed to connect")], live=False)
    array, geometry = small_ct()
    with fake_client(fake, retries=2) as client, pytest.raises(ServerUnavailableError) as caught:
        client.analyze_array(array, geometry)
    assert len(fake.calls_to("infer")) == 3
    assert client.url in str(caught.value) and caught.value.url == client.url


def test_unavailable_from_a_live_server_means_the_model_is_not_ready():
    error = triton_error(UNAVAILABLE, "Request for unknown model: 'vertebra_pipeline' has no versions")
    fake = FakeTriton(answers=[error], live=True)
    array, geometry = small_ct()
    with fake_client(fake, retries=1) as client, pytest.raises(ModelNotReadyError, match="no versions"):
        client.analyze_array(array, geometry)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("StatusCode.DEADLINE_EXCEEDED", RequestTimeoutError),
        ("StatusCode.INVALID_ARGUMENT", ServerRejectedError),
        ("StatusCode.INTERNAL", ServerRejectedError),
        ("StatusCode.NOT_FOUND", ModelNotReadyError),
    ],
)
def test_other_errors_are_mapped_at_once_without_retry(status, expected):
    fake = FakeTriton(answers=[triton_error(status, "Deadline Exceeded")])
    array, geometry = small_ct()
    with fake_client(fake, retries=3, timeout_s=7.5) as client, pytest.raises(expected) as caught:
        client.analyze_array(array, geometry)
    assert len(fake.calls_to("infer")) == 1
    if expected is RequestTimeoutError:
        assert "7.5 s" in str(caught.value) and caught.value.timeout_s == 7.5


def test_a_rejection_carries_the_servers_message_without_tritons_prefixes():
    message = (
        "in ensemble 'vertebra_pipeline', Failed to process the request(s) for model instance "
        "'preprocess_0_0', message: CT must be int16 Hounsfield units, got dtype float32"
    )
    fake = FakeTriton(answers=[triton_error("StatusCode.INVALID_ARGUMENT", message)])
    array, geometry = small_ct()
    with fake_client(fake) as client, pytest.raises(ServerRejectedError) as caught:
        client.analyze_array(array, geometry)
    assert str(caught.value) == "CT must be int16 Hounsfield units, got dtype float32"
    assert caught.value.status == "StatusCode.INVALID_ARGUMENT"
    plain = triton_error("StatusCode.INVALID_ARGUMENT", "spacing must be 3 values")
    assert server_message(plain) == "spacing must be 3 values"


def test_options_are_checked():
    with pytest.raises(ValueError, match="compression"):
        VfqClient(compression="zstd")
    with pytest.raises(ValueError, match="timeout_s"):
        VfqClient(timeout_s=0)
    with pytest.raises(ValueError, match="retries"):
        VfqClient(retries=-1)


# ---------------------------------------------------------------------- readiness


def test_wait_ready_on_an_unreachable_port_names_the_url_quickly():
    url = f"127.0.0.1:{free_port()}"
    start = time.monotonic()
    with VfqClient(url, retry_backoff_s=0.1) as client, pytest.raises(ServerUnavailableError) as caught:
        client.wait_ready(timeout_s=1.0)
    assert time.monotonic() - start < 3.0
    assert url in str(caught.value)


def test_wait_ready_tells_a_model_that_is_not_ready_from_a_server_that_is_down():
    with fake_client(FakeTriton(live=True, model_ready=False)) as client:
        with pytest.raises(ModelNotReadyError, match=PIPELINE_MODEL):
            client.wait_ready(timeout_s=0.2)
    with fake_client(FakeTriton(live=True, model_ready=True)) as client:
        client.wait_ready(timeout_s=0.2)


# ---------------------------------------------------------------------- shared memory


def regions() -> set[str]:
    return {name for name in os.listdir("/dev/shm") if name.startswith(f"vfq_ct_{os.getpid()}_")}


@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="system shared memory lives in /dev/shm")
def test_the_shared_memory_region_is_reused_grown_and_released():
    fake = FakeTriton()
    small, small_geometry = small_ct((20, 30, 40))
    large, large_geometry = small_ct((40, 30, 40))
    client = fake_client(fake, shared_memory=True)
    with client:
        client.analyze_array(small, small_geometry)
        client.analyze_array(small, small_geometry)
        ((first, _),) = fake.calls_to("register_system_shared_memory")
        name, key, byte_size = first
        assert byte_size == small.nbytes and key == "/" + name and regions() == {name}
        (args, _), _ = fake.calls_to("infer")
        ct_input = args[1][0]
        assert ct_input._input.parameters["shared_memory_region"].string_param == name
        assert ct_input._input.parameters["shared_memory_byte_size"].int64_param == small.nbytes
        assert not ct_input._raw_content  # the pixels went through the region, not the message

        client.analyze_array(large, large_geometry)  # a larger CT needs a larger region
        registered = fake.calls_to("register_system_shared_memory")
        assert [args[2] for args, _ in registered] == [small.nbytes, large.nbytes]
        assert [args for args, _ in fake.calls_to("unregister_system_shared_memory")] == [(name,)]
        assert regions() == {registered[1][0][0]}
    assert [args[0] for args, _ in fake.calls_to("unregister_system_shared_memory")] == [
        name,
        registered[1][0][0],
    ]
    assert regions() == set() and fake.closed
    client.close()  # idempotent
