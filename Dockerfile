# syntax=docker/dockerfile:1
# Evergreen Sidecar image: `sidecar proxy`, `sidecar eventlog serve` and every other command.
#   docker build -t evergreen-sidecar:0.1.0 .
#   docker run --rm -v "$PWD/sidecar.yaml:/etc/sidecar/sidecar.yaml:ro" \
#     evergreen-sidecar:0.1.0 proxy --config /etc/sidecar/sidecar.yaml
# Kubernetes example: deploy/k8s/. The event log runs from the same image
# (`eventlog serve ...`, with SIDECAR_HEALTH_ADDR set to its --listen address).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: install the package and its dependencies into a virtualenv ----------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/sidecar
COPY pyproject.toml README.md ./
COPY sidecar ./sidecar
RUN /opt/sidecar/bin/pip install --no-cache-dir . \
    && /opt/sidecar/bin/sidecar --version

# --- runtime: the virtualenv only, as an unprivileged user -------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="evergreen-sidecar" \
      org.opencontainers.image.description="gRPC sidecar: adaptive circuit breakers, OpenTelemetry, event-sourced breaker log" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 sidecar \
    && useradd --system --uid 10001 --gid sidecar --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin sidecar \
    && mkdir -p /var/lib/sidecar /etc/sidecar \
    && chown sidecar:sidecar /var/lib/sidecar
COPY --from=build /opt/sidecar /opt/sidecar
ENV PATH=/opt/sidecar/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SIDECAR_HEALTH_ADDR=127.0.0.1:15000
WORKDIR /var/lib/sidecar
USER 10001:10001
# proxy (listen), admin + grpc.health.v1 (admin_listen), Prometheus /metrics (metrics_listen)
EXPOSE 15001 15000 9464
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["sidecar", "health", "--timeout-s", "3"]
ENTRYPOINT ["sidecar"]
CMD ["proxy", "--config", "/etc/sidecar/sidecar.yaml"]
