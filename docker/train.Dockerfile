# syntax=docker/dockerfile:1.7
# GPU training image: TensorFlow comes from the pinned base image (requirements.txt has no
# TensorFlow on purpose). Layer order = change frequency: OS user, pinned requirements, then the
# package source, so a code-only change rebuilds only the last layers (benchmarks/docker_layers.py).
#
# Build (CI does this in ci/build-image, with a registry cache):
#   docker buildx build -f docker/train.Dockerfile \
#     --build-arg TF_BASE_DIGEST=sha256:<digest of tensorflow/tensorflow:2.21.0-gpu> .
ARG TF_VERSION=2.21.0
# Pin the base by digest as well as by tag: tags are mutable. Empty = tag only (local builds).
ARG TF_BASE_DIGEST=""
FROM tensorflow/tensorflow:${TF_VERSION}-gpu${TF_BASE_DIGEST:+@${TF_BASE_DIGEST}}

ARG TF_VERSION
ARG TF_BASE_DIGEST
ARG VCS_REF=unknown
ARG SOURCE_URL=""
LABEL org.opencontainers.image.title="tfship-train" \
      org.opencontainers.image.description="tfship GPU training image (TensorFlow ${TF_VERSION})" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.revision="${VCS_REF}" \
      org.opencontainers.image.base.name="tensorflow/tensorflow:${TF_VERSION}-gpu" \
      org.opencontainers.image.base.digest="${TF_BASE_DIGEST}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      io.tfship.tensorflow.version="${TF_VERSION}"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=2

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# Unprivileged user. /logs is a volume for logs that must outlive the container; run
# directories go wherever TFSHIP_RUN_RUNS_DIR / --run-dir point (a mounted path).
RUN groupadd --gid 10001 tfship \
    && useradd --uid 10001 --gid tfship --create-home --shell /bin/bash tfship \
    && mkdir -p /app /logs /runs \
    && chown tfship:tfship /app /logs /runs

WORKDIR /app

# Requirements first: this layer is rebuilt only when the lock changes. Runtime only (no test or
# lint tool), every package pinned and checked against its hash; TensorFlow is the base image's.
COPY requirements.lock requirements-serving-api.txt ./
RUN --mount=type=cache,target=/root/.cache/pip \
    python3 -m pip install --require-hashes -r requirements.lock \
    && python3 -m pip install --no-deps --require-hashes -r requirements-serving-api.txt

# Source last: a code-only change invalidates only the layers from here on. Built with the
# locked setuptools (--no-build-isolation): nothing unpinned is downloaded for the build.
COPY pyproject.toml README.md* ./
COPY src/ ./src/
COPY ci/gpu-preflight ./ci/gpu-preflight
RUN python3 -m pip install --no-cache-dir --no-deps --no-build-isolation . \
    && tfship --version

USER 10001:10001
VOLUME ["/logs"]
ENTRYPOINT ["tfship"]
CMD ["--help"]
