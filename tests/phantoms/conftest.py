from __future__ import annotations

import pytest
from phantom_factories import FRACTURES

from vfq.phantoms import Acquisition, PhantomSpec, SpineShape, build_anatomy


@pytest.fixture(scope="session")
def fractured_anatomy():
    spec = PhantomSpec(
        seed=21,
        shape=SpineShape(kyphosis=45, lordosis=45, scoliosis=0.0),
        fractures=FRACTURES,
        osteoporosis=0.3,
        acquisition=Acquisition(noise_hu=0.0, slice_thickness=0.4, circular_field=False),
    )
    return build_anatomy(spec)
