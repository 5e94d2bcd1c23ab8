"""vfq — vertebral fracture quantification: the geometry core shared by every part.

The modules here are numpy-only so that the Triton python-backend steps can import them
(Python >= 3.10, no scipy, no torch):

* :mod:`vfq.levels` — vertebra levels;
* :mod:`vfq.keypoints` — the six keypoints and heights;
* :mod:`vfq.genant` — the Genant rule;
* :mod:`vfq.volume` — CT volume + geometry, voxel ↔ world;
* :mod:`vfq.straighten` — spine curve, straightening, point mapping;
* :mod:`vfq.metrics` — evaluation metrics;
* :mod:`vfq.annotation` — ground-truth structures and their JSON form;
* :mod:`vfq.io` — CT and annotation readers (SimpleITK).
"""

__version__ = "0.1.0"
