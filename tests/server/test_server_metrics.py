"""The python steps' own metrics on Triton's metrics port, next to Triton's, parsed as Prometheus text."""

from __future__ import annotations

import numpy as np
import pytest
from server_factories import infer, scrape, value
from tritonclient.utils import InferenceServerException

from vfq.tensors import GENANT_GRADE_OUTPUT, PIPELINE_STEPS


def test_a_scan_moves_the_scan_vertebra_fracture_and_latency_metrics(server, phantom):
    before = scrape(server)
    outputs = infer(server.grpc_url, phantom.ct.array, phantom.ct.geometry.spacing)
    after = scrape(server)
    grades = outputs[GENANT_GRADE_OUTPUT]
    assert (
        value(after, "vfq_scans_total", outcome="assessed")
        - value(before, "vfq_scans_total", outcome="assessed")
        == 1
    )
    found = value(after, "vfq_vertebrae_per_scan_sum") - value(before, "vfq_vertebrae_per_scan_sum")
    assert found == grades.size
    for grade in (1, 2, 3):
        delta = value(after, "vfq_fractures_total", grade=str(grade)) - value(
            before, "vfq_fractures_total", grade=str(grade)
        )
        assert delta == np.count_nonzero(grades == grade)
    for step in PIPELINE_STEPS:
        count = "vfq_step_duration_seconds_count"
        assert value(after, count, step=step) - value(before, count, step=step) == 1
    # Triton's own metrics are served beside them.
    assert value(after, "nv_inference_request_success_total", model="vertebra_pipeline", version="1") >= 1


def test_a_refused_request_is_counted_by_step_and_reason(server):
    before = scrape(server)
    with pytest.raises(InferenceServerException):
        infer(server.grpc_url, np.zeros((4, 4, 4), np.int16), (1, 1, 1))  # all 0 HU: not CT
    after = scrape(server)
    name, labels = "vfq_rejected_requests_total", {"step": "preprocess", "reason": "NotCTError"}
    assert value(after, name, **labels) - value(before, name, **labels) == 1
