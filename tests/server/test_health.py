"""`vfq-health`, the probe's command: ready only when the pipeline model is, and the embedded server
is the pinned Triton release."""

from __future__ import annotations

import urllib.request

import pytest
import tritonclient.grpc as grpcclient

from vfq.client.health import main as health
from vfq.server import TRITON_VERSION
from vfq.server.embedded import EmbeddedServer, free_port


def test_the_embedded_server_is_the_pinned_triton(server):
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        assert client.get_server_metadata().version == TRITON_VERSION


def test_ready_when_the_pipeline_is(server, capsys):
    assert health(["--url", server.grpc_url]) == 0
    assert capsys.readouterr().out == f"vfq-health: vertebra_pipeline ready at {server.grpc_url}\n"


def test_not_ready_when_the_server_is_up_but_the_pipeline_is_not_loaded(capsys):
    with EmbeddedServer(model_control="explicit") as bare:
        assert health(["--url", bare.grpc_url]) == 1
    assert capsys.readouterr().err == f"vfq-health: model vertebra_pipeline at {bare.grpc_url} is not ready\n"


def test_not_ready_when_nothing_answers(capsys):
    url = f"127.0.0.1:{free_port()}"
    assert health(["--url", url, "--timeout", "0.5"]) == 1
    assert capsys.readouterr().err.startswith(f"vfq-health: server at {url} does not answer: ")


@pytest.mark.parametrize("metrics", [True, False])
def test_started_means_the_metrics_port_answers_unless_metrics_are_off(metrics):
    """Triton opens its metrics port after gRPC and HTTP: a scrape right after start must not be refused."""
    extra_args = [] if metrics else ["--allow-metrics=false"]
    with EmbeddedServer(model_control="explicit", extra_args=extra_args) as bare:
        assert (bare.metrics_url in bare.readiness_urls()) is metrics
        if metrics:
            with urllib.request.urlopen(bare.metrics_url, timeout=2) as response:
                assert response.status == 200
                assert b"nv_cpu_utilization" in response.read()
