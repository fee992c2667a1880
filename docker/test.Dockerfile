# syntax=docker/dockerfile:1.7
# CPU image for the unit-test job: the TensorFlow CPU image plus the pinned test tooling, so
# the job skips its installs (set TFSHIP_CI_IMAGE to this image and TFSHIP_SKIP_INSTALL=true).
ARG TF_VERSION=2.21.0
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

COPY requirements.txt requirements-dev.txt requirements-serving-api.txt ./
RUN --mount=type=cache,target=/root/.cache/pip \
    python3 -m pip install -r requirements.txt -r requirements-dev.txt \
    && python3 -m pip install --no-deps -r requirements-serving-api.txt

COPY --chown=tfship:tfship . ./
RUN python3 -m pip install --no-cache-dir --no-deps -e . \
    && chown -R tfship:tfship /app

USER 10001:10001
VOLUME ["/logs"]
CMD ["python3", "-m", "pytest", "-m", "not slow and not integration and not e2e"]
