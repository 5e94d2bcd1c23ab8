"""vfq — vertebral fracture quantification: the geometry core shared by every part.

The core modules are numpy-only so that the Triton python-backend steps can import them
(Python >= 3.10, no scipy, no torch):

* :mod:`vfq.levels` — vertebra levels;
* :mod:`vfq.keypoints` — the six keypoints and heights;
* :mod:`vfq.genant` — the Genant rule;
* :mod:`vfq.volume` — CT volume + geometry, voxel ↔ world;
* :mod:`vfq.straighten` — spine curve, straightening, point mapping;
* :mod:`vfq.metrics` — evaluation metrics;
* :mod:`vfq.annotation` — ground-truth structures and their JSON form.

Beside them, each with the library it needs: :mod:`vfq.io` — CT and annotation readers
(SimpleITK); :mod:`vfq.runtime` — the networks on ONNX Runtime or OpenVINO;
:mod:`vfq.torch_resampling` — the CT resamplings on a GPU (PyTorch); :mod:`vfq.cuda_runtime` — the
CUDA runtime for TensorRT plans and CUDA shared memory (cuda-python, imported when first called).
"""

__version__ = "0.1.0"
