"""Bad requests through the real server: each gets a clear error (or, for a CT without a spine, a
"not assessable" answer), and the server goes on serving the next request correctly."""

from __future__ import annotations

import numpy as np
import pytest
from server_factories import infer
from tritonclient.utils import InferenceServerException

from vfq.phantoms import build_anatomy, render
from vfq.phantoms.generate import field_of_view_geometry
from vfq.pipeline import NO_SPINE
from vfq.tensors import GENANT_GRADE_OUTPUT, KEYPOINTS_OUTPUT, NOT_ASSESSABLE_OUTPUT

rng = np.random.default_rng(7)
CT_LIKE = np.where(rng.random((40, 64, 64)) < 0.3, -1000, 40).astype(np.int16)  # air and soft tissue
MR_LIKE = rng.integers(0, 900, size=(40, 64, 64)).astype(np.int16)

REFUSED = {
    "empty": (
        np.zeros((0, 64, 64), np.int16),
        (1, 1, 1),
        "StatusCode.INVALID_ARGUMENT",
        "CT is empty: shape (0, 64, 64)",
    ),
    "2D": (
        np.zeros((64, 64), np.int16),
        (1, 1, 1),
        "StatusCode.INVALID_ARGUMENT",
        "unexpected shape for input 'CT'",
    ),
    "4D": (
        np.zeros((2, 8, 8, 8), np.int16),
        (1, 1, 1),
        "StatusCode.INVALID_ARGUMENT",
        "unexpected shape for input 'CT'",
    ),
    "float32 CT": (
        CT_LIKE.astype(np.float32),
        (1, 1, 1),
        "StatusCode.INVALID_ARGUMENT",
        "data-type is 'FP32'",
    ),
    "NaN spacing": (
        CT_LIKE,
        (1, float("nan"), 1),
        "StatusCode.INVALID_ARGUMENT",
        "spacing must be 3 finite values",
    ),
    "inf spacing": (
        CT_LIKE,
        (1, float("inf"), 1),
        "StatusCode.INVALID_ARGUMENT",
        "spacing must be 3 finite values",
    ),
    "zero spacing": (
        CT_LIKE,
        (0, 1, 1),
        "StatusCode.INVALID_ARGUMENT",
        "spacing must be 3 finite values in (0.1, 20]",
    ),
    "negative spacing": (
        CT_LIKE,
        (1, -0.7, 0.7),
        "StatusCode.INVALID_ARGUMENT",
        "got [1.0, -0.699999988079071",
    ),
    "absurd spacing": (
        CT_LIKE,
        (1, 1, 500),
        "StatusCode.INVALID_ARGUMENT",
        "spacing must be 3 finite values in (0.1, 20]",
    ),
    "over the size limit": (
        np.full((2049, 2, 2), -1000, np.int16),
        (1, 1, 1),
        "StatusCode.INVALID_ARGUMENT",
        "exceeds the limit (2048, 1024, 1024) voxels",
    ),
    "MR-like values": (
        MR_LIKE,
        (1, 1, 1),
        "StatusCode.INVALID_ARGUMENT",
        "does not look like CT in Hounsfield units",
    ),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_a_bad_request_is_refused_with_a_clear_message(server, case):
    array, spacing, status, message = REFUSED[case]
    with pytest.raises(InferenceServerException) as error:
        infer(server.grpc_url, array, spacing)
    assert error.value.status() == status
    assert message in error.value.message()
    assert server.process.poll() is None


def spineless_ct():
    """An abdominal phantom rendered without its skeleton: soft tissue, organs, air — no bones."""
    from vfq.phantoms import sample_spec

    anatomy = build_anatomy(sample_spec(77))
    ct, _ = render(anatomy, field_of_view_geometry(anatomy), include_skeleton=False)
    return ct


@pytest.mark.parametrize(
    "scan",
    [
        pytest.param(lambda: (spineless_ct().array, spineless_ct().geometry.spacing), id="CT without spine"),
        pytest.param(
            lambda: (rng.integers(-1024, 2000, (60, 96, 96)).astype(np.int16), (2, 1, 1)), id="noise"
        ),
        pytest.param(lambda: (CT_LIKE[:8, :8, :8].copy(), (1, 1, 1)), id="tiny 8x8x8"),
    ],
)
def test_a_scan_without_a_spine_is_answered_not_assessable(server, scan):
    array, spacing = scan()
    outputs = infer(server.grpc_url, array, spacing)
    assert outputs[NOT_ASSESSABLE_OUTPUT].tolist() == [NO_SPINE.encode()]
    assert outputs[KEYPOINTS_OUTPUT].shape == (0, 6, 3)
    assert outputs[GENANT_GRADE_OUTPUT].shape == (0,)


def test_after_all_the_bad_requests_the_server_still_answers_correctly(server, phantom, in_process):
    outputs = infer(server.grpc_url, phantom.ct.array, phantom.ct.geometry.spacing)
    reference = in_process.analyze(phantom.ct).vertebrae
    np.testing.assert_allclose(
        outputs[KEYPOINTS_OUTPUT], reference.keypoints_voxel(phantom.ct.geometry), atol=1e-3
    )
