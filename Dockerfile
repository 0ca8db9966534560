# syntax=docker/dockerfile:1.7
# streamguard release image: the package with its flows and SQL, plus the model registry it was built with.
#
#   docker build -t streamguard:dev .                                    CPU: python:3.12-slim
#   docker build --build-arg VARIANT=gpu -t streamguard:dev-gpu .        GPU: CUDA 12 runtime + CuPy
#
# The build context must hold a model registry (default .streamguard/models, written by `streamguard train`
# or `make run`); --build-arg MODEL_REGISTRY=<dir> picks another. Inside the cluster that copy only seeds the
# shared registry volume once (streamguard/deploy/pod/seed_models.py). See k8s/README.md.

ARG VARIANT=cpu
# bytewax 0.21.1 has wheels for CPython 3.8-3.12 only (none for 3.13, none for musl/Alpine).
ARG PYTHON_VERSION=3.12

# -- bases: both variants get python on PATH and the same layout ------------------------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS base-cpu
ENV SG_PIP_EXTRAS=""

FROM nvidia/cuda:12.6.3-runtime-ubuntu24.04 AS base-gpu
# Ubuntu 24.04's CPython is 3.12 and its glibc 2.39 meets bytewax's manylinux_2_31 wheel. The runtime image
# carries cuBLAS and NVRTC, which CuPy needs; the driver comes from the node. Ubuntu's archive keeps only
# the latest build of a package, so pinning apt versions would break rebuilds: the base tag pins instead.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.12 python3.12-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && ln -s /usr/bin/python3.12 /usr/local/bin/python
ENV SG_PIP_EXTRAS="[gpu]"

# hadolint ignore=DL3006
FROM base-${VARIANT} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# -- build: a virtualenv with the dependencies and an editable install pointing at /app -------------------
# Editable, so the package runs from /app as it does from a checkout: core.paths finds /app/sql next to it.
FROM base AS build
RUN python -m venv /opt/venv
WORKDIR /app
COPY pyproject.toml README.md ./
# Stub packages: the dependency layer depends on pyproject.toml only, not on the code.
RUN --mount=type=cache,target=/root/.cache/pip \
    mkdir -p streamguard flows models \
    && touch streamguard/__init__.py flows/__init__.py models/__init__.py \
    && pip install -e ".${SG_PIP_EXTRAS}"

# -- runtime ------------------------------------------------------------------------------------------------
FROM base AS runtime
ARG MODEL_REGISTRY=.streamguard/models
RUN groupadd --system --gid 10001 streamguard \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /app \
       --shell /usr/sbin/nologin streamguard
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY streamguard/ streamguard/
COPY flows/ flows/
COPY models/ models/
COPY sql/ sql/
COPY ${MODEL_REGISTRY}/ model-registry/
# In the working directory, where the Bytewax chart runs `sh ./entrypoint.sh` and `sh ./entrypoint-recovery.sh`.
COPY --chmod=0755 k8s/image/entrypoint.sh k8s/image/entrypoint-recovery.sh ./
# Byte-compile now: at run time the root filesystem is read-only.
RUN python -m compileall -q streamguard flows models \
    && python -c "import bytewax, flows, models, streamguard.deploy.pod.launch"
# Defaults for `docker run`; the cluster's ConfigMap points both at mounted volumes.
# numba caches compiled kernels next to the code by default, which is read-only here.
ENV STREAMGUARD_STATE_DIR=/tmp/streamguard \
    STREAMGUARD_MODEL_DIR=/app/model-registry \
    NUMBA_CACHE_DIR=/tmp/numba-cache
USER 10001:10001
# 9999: Bytewax processes talk to each other; 3030: Bytewax API (/metrics) when BYTEWAX_DATAFLOW_API_ENABLED.
EXPOSE 9999 3030
# Python handles SIGINT (KeyboardInterrupt) and Bytewax checks for it; SIGTERM would be ignored by PID 1.
STOPSIGNAL SIGINT
ENTRYPOINT ["/app/entrypoint.sh"]
CMD ["flows.fraud:flow"]
