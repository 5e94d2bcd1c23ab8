# The vfq server image: the NGC Triton release that matches the embedded server (Triton 2.51.0 =
# NGC 24.10, TensorRT 10.5), plus what the python steps import (numpy<2, vfq; torch for the CT
# resamplings on the GPU), TensorRT's Python API to build plans on the target GPU, and the model
# repositories of the gpu and cpu-container targets.
#
#   docker build -t vfq-triton:0.1.0-24.10 .
#   docker run --gpus 1 --shm-size 1g -p 8001:8001 vfq-triton:0.1.0-24.10
#
# The first start builds the TensorRT plans on that GPU (the Helm chart does it in an init container,
# cached on a volume); a plan built elsewhere is refused (vfq-repository check-plans). Both repositories
# warm every model instance up with a 300-slice CT before the server reports ready (--warmup-slices).
ARG TRITON_RELEASE=24.10
FROM nvcr.io/nvidia/tritonserver:${TRITON_RELEASE}-py3

# TensorRT of this NGC release, for its Python API (the plan builder); CUDA runtime bindings to verify plans.
ARG TENSORRT_VERSION=10.5.0
# PyTorch for preprocess and straighten, which resample the CT on the GPU (their device parameter, auto)
# and read a CT that Triton holds in GPU memory without a copy to the host (DLPack).
ARG TORCH_VERSION=2.5.1

WORKDIR /opt/vfq/src
COPY pyproject.toml README.md constraints.txt ./
COPY vfq/ vfq/
COPY client/ client/
COPY export/ export/
COPY phantoms/ phantoms/
COPY model_repository/ model_repository/

RUN python3 -m pip install --no-cache-dir -c constraints.txt ".[server]" \
        "tensorrt-cu12==${TENSORRT_VERSION}" "cuda-python>=12.6,<13" "torch==${TORCH_VERSION}" \
    && vfq-repository write --target gpu --out /opt/vfq/model_repository --warmup-slices 300 \
    && vfq-repository write --target cpu-container --out /opt/vfq/model_repository_cpu --warmup-slices 300 \
    && mkdir -p /plan-cache && chown 1000:1000 /plan-cache

# tcmalloc (the NGC image ships it) at one path for every architecture, preloaded into tritonserver
# and its python-backend stubs: glibc's malloc maps and zeroes fresh pages for every CT a python step
# receives (vfq/server/embedded.py). The Helm chart sets LD_PRELOAD from server.allocator.
RUN mkdir -p /opt/vfq/lib \
    && ln -s "/usr/lib/$(uname -m)-linux-gnu/libtcmalloc.so.4" /opt/vfq/lib/libtcmalloc.so \
    && test -e /opt/vfq/lib/libtcmalloc.so

# One thread per step process for numpy's BLAS (and OpenMP, MKL): every python-step instance is its own
# process and Triton runs several at once; one thread per core in each of them collapsed throughput
# on a 16-core GPU host (vfq/server/embedded.py, benchmarks/README.md).
ENV OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

# The NGC image's non-root user (triton-server, uid 1000).
USER 1000
WORKDIR /opt/vfq
EXPOSE 8000 8001 8002

# Build (or keep) the plans for this GPU, check them, then serve. HTTP is off; the CUDA memory pool
# that hands GPU tensors between the steps is the chart's default size (helm/vfq/values.yaml,
# server.cudaMemoryPoolBytes); Kubernetes sets its own command (helm/vfq).
CMD ["sh", "-c", "vfq-repository build-plans --source /opt/vfq/model_repository --out /plan-cache/model_repository --timing-cache /plan-cache/timing.cache && vfq-repository check-plans --repository /plan-cache/model_repository && exec env LD_PRELOAD=/opt/vfq/lib/libtcmalloc.so tritonserver --model-repository=/plan-cache/model_repository --model-control-mode=none --strict-readiness=true --allow-http=false --exit-timeout-secs=30 --cuda-memory-pool-byte-size=0:402653184"]
