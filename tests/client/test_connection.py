"""VfqClient without a server: what it refuses before sending, the checks of its options and of the
server's messages, and a port where nothing listens (retries, then an error naming the URL). The
behaviour against a server is tested on the real one (tests/server/test_client_errors.py)."""

from __future__ import annotations

import logging
import time

import numpy as np
import pytest
from client_factories import free_port, oblique_geometry, write_mha_header
from tritonclient.utils import InferenceServerException

from vfq.client import ServerUnavailableError, VfqClient, check_file_size
from vfq.client.connection import server_message
from vfq.errors import InputError, UnreadableInputError
from vfq.preprocess import MAX_SHAPE
from vfq.volume import ImageGeometry


def small_ct(shape=(60, 80, 70)) -> tuple[np.ndarray, ImageGeometry]:
    rng = np.random.default_rng(1)
    return rng.integers(-1000, 1500, size=shape, dtype=np.int16), oblique_geometry(shape)


def offline_client() -> VfqClient:
    """A client of a port where nothing listens, without retries: anything it sent would end in
    ServerUnavailableError, so any other error was raised before sending."""
    return VfqClient(f"127.0.0.1:{free_port()}", retries=0)


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
    geometry = ImageGeometry(array.shape, (1, 1, 1)) if array.ndim == 3 else oblique_geometry()
    with offline_client() as client, pytest.raises(InputError, match=message):
        client.analyze_array(array, geometry)


def test_a_ct_over_two_gib_is_refused_before_sending_unless_it_goes_through_shared_memory():
    array = np.zeros((2048, 1024, 520), np.int16)  # 2.03 GiB within the voxel limit; calloc'ed, never touched
    with offline_client() as client, pytest.raises(InputError) as caught:
        client.analyze_array(array, ImageGeometry(array.shape, (1.0, 0.7, 0.7)))
    assert str(caught.value) == (
        "the CT is 2.03 GiB, more than one gRPC message carries (2 GiB): send it through shared memory "
        "(a client on the server's host) or crop / resample it (nothing was sent)"
    )


def test_an_array_must_match_its_geometry():
    array, _ = small_ct()
    with offline_client() as client, pytest.raises(InputError, match="does not match"):
        client.analyze_array(array, oblique_geometry((10, 10, 10)))


def test_a_gigantic_file_is_refused_from_its_header_before_any_pixel_is_read(tmp_path):
    header = write_mha_header(tmp_path / "huge.mha", size_xyz=(2048, 2048, 2000))
    assert not (tmp_path / "huge.raw").exists()  # reading pixels would fail as unreadable
    with pytest.raises(InputError, match=r"\(2000, 2048, 2048\) voxels, over the limit") as caught:
        check_file_size(header)
    assert not isinstance(caught.value, UnreadableInputError)
    with offline_client() as client, pytest.raises(InputError, match="over the limit") as caught:
        client.analyze(header)
    assert not isinstance(caught.value, UnreadableInputError)


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
    with offline_client() as client, pytest.raises(UnreadableInputError):
        client.analyze(broken)  # ... the reader says what is wrong


# ---------------------------------------------------------------------- an unreachable port


def test_a_server_that_stays_away_is_unavailable_after_the_retries_and_the_message_names_the_url(caplog):
    caplog.set_level(logging.WARNING, logger="vfq.client.connection")
    url = f"127.0.0.1:{free_port()}"
    array, geometry = small_ct()
    start = time.monotonic()
    with VfqClient(url, retries=2, retry_backoff_s=0.1) as client:
        with pytest.raises(ServerUnavailableError) as caught:
            client.analyze_array(array, geometry)
    assert time.monotonic() - start >= 0.1 + 0.2  # 0.1 s, then doubled
    assert caught.value.url == url
    assert str(caught.value).startswith(f"no Triton server answers at {url} (inference, after 2 retries): ")
    assert [r.getMessage() for r in caplog.records] == [
        f"inference: server at {url} unavailable, retry 1 of 2 in 0.1 s",
        f"inference: server at {url} unavailable, retry 2 of 2 in 0.2 s",
    ]


def test_the_servers_message_is_kept_without_tritons_prefixes():
    message = (
        "in ensemble 'vertebra_pipeline', Failed to process the request(s) for model instance "
        "'preprocess_0_0', message: CT must be int16 Hounsfield units, got dtype float32"
    )
    prefixed = InferenceServerException(msg=message, status="StatusCode.INVALID_ARGUMENT")
    assert server_message(prefixed) == "CT must be int16 Hounsfield units, got dtype float32"
    plain = InferenceServerException(msg="spacing must be 3 values", status="StatusCode.INVALID_ARGUMENT")
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
