"""The server side: the ensemble's python steps (:mod:`vfq.server.steps`), their Triton adapters
(:mod:`vfq.server.backend`) and the embedded ``tritonserver`` launcher (:mod:`vfq.server.embedded`).

The Triton release every target pins (DESIGN §3): the embedded server of the ``nvidia-pytriton``
wheel and the NGC container of the derived image (``Dockerfile``) are the same Triton version."""

#: Triton Inference Server version of the embedded binary and of the NGC release below.
TRITON_VERSION = "2.51.0"
#: The NGC ``tritonserver`` container release with that Triton, and its TensorRT.
NGC_RELEASE = "24.10"
TENSORRT_VERSION = "10.5.0"
#: PyTorch in the derived image, for the CT resamplings on the GPU (``device: auto`` in preprocess and
#: straighten): the release of the NGC container's time, built for CUDA 12.4 (runs on the drivers that
#: CUDA 12.6 of NGC 24.10 needs), for its Python 3.10 and with numpy < 2.
IMAGE_TORCH_VERSION = "2.5.1"
