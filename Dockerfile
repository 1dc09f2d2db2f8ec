# syntax=docker/dockerfile:1
#
# The courier-gateway image: every role (ingress, worker, replay, operator, sign) in one venv.
#
#   docker build -t courier-gateway:dev .
#
# The base is pinned by tag here. Release builds pin it by digest as well, without editing this
# file: --build-arg PYTHON_IMAGE=python:3.12.8-slim-bookworm@sha256:<digest>, the digest read
# with `docker buildx imagetools inspect python:3.12.8-slim-bookworm`.
ARG PYTHON_IMAGE=python:3.12.8-slim-bookworm

# ---- builder: dependencies and the project wheel, installed into /opt/venv -------------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# A venv without pip: the image's pip installs into it (--python), so none ships in the runtime.
RUN python -m venv --without-pip /opt/venv

WORKDIR /src

# Dependencies first, in their own layer: it is rebuilt only when pyproject.toml changes. Only the
# runtime dependencies: the `embedded` store and the dev tools stay out of the image.
COPY pyproject.toml ./
RUN python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
        > /tmp/requirements.txt \
    && pip --python /opt/venv/bin/python install --requirement /tmp/requirements.txt

# Then the project itself, as a wheel, without touching the dependency layer.
COPY README.md ./
COPY services/ services/
COPY operator/ operator/
RUN pip wheel --no-deps --wheel-dir /tmp/wheels . \
    && pip --python /opt/venv/bin/python install --no-deps /tmp/wheels/*.whl

# ---- runtime: the venv and a non-root user, nothing else -------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

ARG PYTHON_IMAGE
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="courier-gateway" \
      org.opencontainers.image.description="Kubernetes-native gateway for signed courier shipment webhooks, and its operator." \
      org.opencontainers.image.source="https://github.com/courier-gateway/courier-gateway" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"

# A fixed UID/GID, so Kubernetes securityContext (runAsUser: 10001) and the image agree.
RUN groupadd --system --gid 10001 courier \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin courier

COPY --from=builder /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# Pods mount an emptyDir on /tmp (their root filesystem is read-only): anything written
# relative to the working directory lands there.
WORKDIR /tmp
USER 10001

# 3000: ingress HTTP API and metrics; 9100: worker metrics and health.
EXPOSE 3000 9100
ENTRYPOINT ["courier-gateway"]
CMD ["--help"]
