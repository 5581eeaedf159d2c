# Development only: MiniLake (a Databricks API emulator) behind kmflow's test bridge, for the
# docker-compose profile `databricks`. Build context: the repository root.
FROM python:3.11-slim
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1
RUN pip install "minilake==1.9.0" "databricks-sdk>=0.20.0" "uvicorn>=0.30" \
 && useradd --system --uid 10002 --create-home --home-dir /home/minilake minilake
WORKDIR /opt/kmflow-dev
COPY tests/__init__.py tests/__init__.py
COPY tests/datalake/__init__.py tests/datalake/minilake_bridge.py tests/datalake/latency_model.py \
     tests/datalake/serve_minilake.py tests/datalake/
USER minilake
EXPOSE 8080
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s --retries=12 \
  CMD ["test", "-f", "/home/minilake/data/.kmflow-ready"]
CMD ["python", "-m", "tests.datalake.serve_minilake", "--host", "0.0.0.0", "--port", "8080", "--data-dir", "/home/minilake/data"]
