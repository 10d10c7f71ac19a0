# The image every Kubeflow Pipelines v2 / Vertex AI task runs in (run_kubeflow.py --image).
# Same install as a developer machine: `make env` (pinned lock, runtime compatibility step),
# on the Debian 12 / Python 3.11 base these were measured on. Not built in CI (no Docker there).
#
#   docker build -t REGISTRY/recommender:TAG . && docker push REGISTRY/recommender:TAG
FROM python:3.11-slim-bookworm

RUN apt-get update \
    && apt-get install -y --no-install-recommends make g++ \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /pipeline
COPY . .
RUN make env PYTHON=python3.11 && rm -rf /root/.cache

# TFX's KFP v2 entrypoint (`python -m tfx.orchestration.kubeflow.v2.container...`) and the
# components' dotted module paths resolve in this environment.
ENV PATH=/pipeline/.venv/bin:$PATH \
    PYTHONPATH=/pipeline
