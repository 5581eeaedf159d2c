# kmflow API image. Configured only by environment variables; no secrets are baked in.
# Build: docker build --build-arg KMFLOW_EXTRAS=delta,databricks -t kmflow .
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ARG KMFLOW_EXTRAS=delta,databricks
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/kmflow
COPY pyproject.toml README.md /src/
COPY app /src/app
RUN /opt/kmflow/bin/pip install "/src[${KMFLOW_EXTRAS}]"

FROM ${PYTHON_IMAGE}
RUN useradd --system --uid 10001 --create-home --home-dir /data kmflow
COPY --from=build /opt/kmflow /opt/kmflow
ENV PATH=/opt/kmflow/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    API_HOST=0.0.0.0 \
    API_PORT=8000 \
    LOCAL_STORAGE_PATH=/data/evidence_store \
    STATE_PATH=/data/kmflow_state
WORKDIR /data
USER kmflow
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/api/v1/health', timeout=4)"]
CMD ["kmflow", "serve"]
