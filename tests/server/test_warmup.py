"""A repository written with a warm-up (``vfq-repository write --warmup-slices``): Triton runs every
instance of the four warmed models once before the server reports ready, each warm-up request is
answered (a refused one would stop the model from loading), and the server then analyses scans."""

from __future__ import annotations

from server_factories import FRACTURED_SPEC, scrape, value

from vfq.client import VfqClient
from vfq.export.repository import write_repository
from vfq.phantoms import generate
from vfq.server.embedded import EmbeddedServer
from vfq.tensors import DECODER_MODEL, DETECTOR_MODEL, LOCALIZER_MODEL, PREPROCESS_MODEL, STRAIGHTEN_MODEL


def test_a_warmed_up_server_has_run_every_instance_once_before_it_is_ready(tmp_path):
    repository = write_repository("embedded", tmp_path / "repo", warmup_slices=40)
    with EmbeddedServer(repository) as server:
        samples = scrape(server)
        runs = {
            step: value(samples, "vfq_step_duration_seconds_count", step=step)
            for step in (PREPROCESS_MODEL, LOCALIZER_MODEL, STRAIGHTEN_MODEL, DETECTOR_MODEL, DECODER_MODEL)
        }
        # two instances of each (the committed configs), each warmed once; the decoder is not warmed
        assert runs == {
            PREPROCESS_MODEL: 2.0,
            LOCALIZER_MODEL: 2.0,
            STRAIGHTEN_MODEL: 2.0,
            DETECTOR_MODEL: 2.0,
            DECODER_MODEL: 0.0,
        }
        ct = generate(FRACTURED_SPEC).ct
        with VfqClient(server.grpc_url, timeout_s=60) as client:
            study = client.analyze_array(ct.array, ct.geometry)
    assert study.not_assessable is None and len(study.vertebrae) >= 5
