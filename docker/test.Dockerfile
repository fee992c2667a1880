# syntax=docker/dockerfile:1.7
# CPU image for the unit-test job: the TensorFlow CPU image plus the pinned test tooling, so
# the job skips its installs (set TFSHIP_CI_IMAGE to this image and TFSHIP_SKIP_INSTALL=true).
ARG TF_VERSION=2.21.0
# Pin the base by digest as well (--build-arg TF_BASE_DIGEST=sha256:...; for 2.21.0 on linux/amd64
# sha256:f325279f01a3e742a1285d8d736b7e600f72ccf8b55cc19ee0a90b8cbfce4c7a). Not a default here:
# Renovate moves ARG TF_VERSION, and a stale default digest would silently keep the old base.
ARG TF_BASE_DIGEST=""
FROM tensorflow/tensorflow:${TF_VERSION}${TF_BASE_DIGEST:+@${TF_BASE_DIGEST}}

ARG TF_VERSION
ARG TF_BASE_DIGEST
ARG VCS_REF=unknown
ARG SOURCE_URL=""
LABEL org.opencontainers.image.title="tfship-test" \
      org.opencontainers.image.description="tfship CPU test image (TensorFlow ${TF_VERSION})" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.revision="${VCS_REF}" \
      org.opencontainers.image.base.name="tensorflow/tensorflow:${TF_VERSION}" \
      org.opencontainers.image.base.digest="${TF_BASE_DIGEST}" \
      io.tfship.tensorflow.version="${TF_VERSION}"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=3 \
    TF_ENABLE_ONEDNN_OPTS=0

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

RUN groupadd --gid 10001 tfship \
    && useradd --uid 10001 --gid tfship --create-home --shell /bin/bash tfship \
    && mkdir -p /app /logs \
    && chown tfship:tfship /app /logs

WORKDIR /app

# Runtime + test tools from the hashed lock (TensorFlow is the base image's).
COPY requirements-dev.lock requirements-serving-api.txt ./
RUN --mount=type=cache,target=/root/.cache/pip \
    python3 -m pip install --require-hashes -r requirements-dev.lock \
    && python3 -m pip install --no-deps --require-hashes -r requirements-serving-api.txt

COPY --chown=tfship:tfship . ./
RUN python3 -m pip install --no-cache-dir --no-deps --no-build-isolation -e . \
    && chown -R tfship:tfship /app

USER 10001:10001
VOLUME ["/logs"]
CMD ["python3", "-m", "pytest", "-m", "not slow and not integration and not e2e"]
