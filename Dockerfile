# kmflow API image. Configured only by environment variables; no secrets are baked in (see
# .dockerignore: no .env, no local stores).
#   docker build -t kmflow .                                   # all three backends
#   docker build --build-arg KMFLOW_EXTRAS= -t kmflow:local .  # the local backend only
# tests/deploy/test_image.py runs this file's build RUN steps and CMD outside Docker.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
# Comma-separated extras of pyproject.toml: delta, databricks (local needs none).
ARG KMFLOW_EXTRAS=delta,databricks
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/kmflow
WORKDIR /src
RUN python -m venv "$VIRTUAL_ENV"
# Dependencies in a layer of their own: rebuilt only when pyproject.toml, the pinned versions
# (constraints.txt: what the image was tested with) or the extras change.
COPY pyproject.toml constraints.txt scripts/requirements_from_pyproject.py ./
RUN python requirements_from_pyproject.py "$KMFLOW_EXTRAS" > requirements.txt \
    && "$VIRTUAL_ENV/bin/pip" install --requirement requirements.txt --constraint constraints.txt
# Then the code, without touching the dependencies again.
COPY README.md ./
COPY app ./app
RUN "$VIRTUAL_ENV/bin/pip" install --no-deps .

FROM ${PYTHON_IMAGE}
ENV VIRTUAL_ENV=/opt/kmflow
# Numeric ids so that Kubernetes' runAsNonRoot can check them; /data (the volume for the store
# and the state) belongs to that user, so a fresh named volume starts writable.
RUN groupadd --system --gid 10001 kmflow \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /data kmflow \
    && install --directory --owner=10001 --group=10001 --mode=0750 /data
COPY --from=build /opt/kmflow /opt/kmflow
ENV PATH="$VIRTUAL_ENV/bin:$PATH" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/data \
    API_HOST=0.0.0.0 \
    API_PORT=8000 \
    LOCAL_STORAGE_PATH=/data/evidence_store \
    STATE_PATH=/data/kmflow_state
WORKDIR /data
USER 10001:10001
EXPOSE 8000
# Readiness (/api/v1/health: 503 while the backend cannot be reached), not liveness
# (/api/v1/health/live): Docker restarts nothing on an unhealthy container, so the status is
# there to say whether kmflow can serve, which is what `docker ps` readers and compose's
# `depends_on: condition: service_healthy` want to know. Kubernetes ignores HEALTHCHECK and
# uses its own probes (deploy/kubernetes/deployment.yaml: liveness on /api/v1/health/live).
# Orchestrators that replace unhealthy containers (Swarm) should check /api/v1/health/live.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ['API_PORT']}/api/v1/health\", timeout=4)"]
# Exec form: kmflow (uvicorn) is PID 1 and gets SIGTERM itself. It stops accepting, lets
# in-flight requests finish for up to 30 s, then cancels them; a cancelled upload's staged
# file is removed, so nothing is left half-written. Orchestrators should allow > 30 s before
# SIGKILL (Kubernetes: terminationGracePeriodSeconds; compose: stop_grace_period).
CMD ["kmflow", "serve"]
