"""The bounded queue: a server whose steps may queue one request each, flooded by more clients than it
can hold, refuses the excess with ``ServerBusyError`` (Triton's UNAVAILABLE "Exceeds maximum
queue size"), answers every request it took as a lone request is answered, and serves again after."""

from __future__ import annotations

import logging
import threading
import time

import pytest
from server_factories import scrape, value

from vfq.client import ServerBusyError, VfqClient
from vfq.export.repository import write_repository
from vfq.server.embedded import EmbeddedServer
from vfq.tensors import PIPELINE_MODEL, PIPELINE_STEPS

#: More clients than the server below holds: five steps × (one instance + one waiting request).
CLIENTS = 16
#: Clients that retry: more than the first step holds, few enough for the retries to outlast them.
RETRYING_CLIENTS = 6


@pytest.fixture(scope="module")
def small_server(tmp_path_factory):
    repository = write_repository(
        "embedded",
        tmp_path_factory.mktemp("bounded") / "repo",
        step_instances=1,
        network_instances=1,
        max_queue_size=1,
    )
    with EmbeddedServer(repository) as running:
        yield running


def flood(url: str, array, geometry, count: int, retries: int) -> list[object]:
    """``count`` clients, each on its own thread and shared-memory region, send the CT at once;
    each one's study, or the exception it raised."""
    clients = [
        VfqClient(url, timeout_s=120, shared_memory=True, retries=retries, retry_backoff_s=0.2)
        for _ in range(count)
    ]
    results: list[object] = [None] * count
    start = threading.Barrier(count)

    def send(i: int) -> None:
        start.wait()
        try:
            results[i] = clients[i].analyze_array(array, geometry)
        except Exception as error:  # what each client met is the test's subject
            results[i] = error

    threads = [threading.Thread(target=send, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for client in clients:
        client.close()
    return results


def failures_since(before: dict, after: dict) -> dict[str, float]:
    """Triton's failed requests of each model (every reason) between two scrapes."""
    return {
        model: sum(
            after[key] - before.get(key, 0.0)
            for key in after
            if key[0] == "nv_inference_request_failure_total" and ("model", model) in key[1]
        )
        for model in (PIPELINE_MODEL, *PIPELINE_STEPS)
    }


def test_a_flood_beyond_the_queues_is_refused_and_what_was_taken_is_answered(small_server, phantom):
    array, geometry = phantom.ct.array, phantom.ct.geometry
    with VfqClient(small_server.grpc_url, timeout_s=120) as client:
        alone = client.analyze_array(array, geometry)
    before = scrape(small_server)

    results = flood(small_server.grpc_url, array, geometry, CLIENTS, retries=0)
    refused = [r for r in results if isinstance(r, ServerBusyError)]
    answered = [r for r in results if not isinstance(r, Exception)]
    assert len(refused) + len(answered) == CLIENTS, [r for r in results if isinstance(r, Exception)]
    assert refused and answered
    assert str(refused[0]) == (
        f"the server at {small_server.grpc_url} is busy: its queue was full (inference, after 0 retries); "
        "send the CT again later, or give the server more instances or replicas"
    )
    assert refused[0].url == small_server.grpc_url
    for study in answered:
        assert [v.level for v in study.vertebrae] == [v.level for v in alone.vertebrae]
        assert [v.genant_grade for v in study.vertebrae] == [v.genant_grade for v in alone.vertebrae]
    # Triton 2.51 counts each refusal twice as a failure of the ensemble (reason OTHER), none of a step;
    # it may count one just after the client has its answer, so the counters get a moment to settle
    expected = {PIPELINE_MODEL: 2.0 * len(refused), **{step: 0.0 for step in PIPELINE_STEPS}}
    deadline = time.monotonic() + 10
    while (
        failures := failures_since(before, scrape(small_server))
    ) != expected and time.monotonic() < deadline:
        time.sleep(0.1)
    assert failures == expected
    assert value(
        scrape(small_server),
        "nv_inference_request_failure_total",
        model=PIPELINE_MODEL,
        reason="OTHER",
        version="1",
    )

    with VfqClient(small_server.grpc_url, timeout_s=120) as client:
        again = client.analyze_array(array, geometry)
    assert [v.genant_grade for v in again.vertebrae] == [v.genant_grade for v in alone.vertebrae]


def test_a_busy_server_is_retried_and_says_so(small_server, phantom, caplog):
    caplog.set_level(logging.WARNING, logger="vfq.client.connection")
    results = flood(small_server.grpc_url, phantom.ct.array, phantom.ct.geometry, RETRYING_CLIENTS, retries=8)
    retries = [r.getMessage() for r in caplog.records if "retry" in r.getMessage()]
    assert retries and all(
        f"server at {small_server.grpc_url} busy (queue full), retry" in m for m in retries
    )
    assert [type(r).__name__ for r in results if isinstance(r, Exception)] == []
