# syntax=docker/dockerfile:1
# The edge gateway as a container, for linux/amd64 and linux/arm64 (every dependency has wheels
# for both, so the build needs no compiler).
#
#   docker build -t edge-gateway .
#   docker run -d --name edge-gateway --restart unless-stopped \
#     -v /etc/edge-gateway:/etc/edge-gateway:ro -v edge-data:/var/lib/edge-gateway \
#     edge-gateway
#
# The operator panel and /metrics ([panel] enabled = true) listen inside the container: set
# EDGE_PANEL__HOST=0.0.0.0 and publish the port, e.g. -p 127.0.0.1:8080:8080.
# For GPIO or serial inputs add e.g. --device /dev/gpiochip0 --device /dev/ttyUSB0
# --group-add "$(getent group dialout | cut -d: -f3)". The process gets SIGTERM on `docker stop`
# and commits what is queued before it exits (give it --stop-timeout 30).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build: a virtual environment with the gateway and its dependencies -----------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/edge-gateway
WORKDIR /src
COPY pyproject.toml README.md ./
COPY edge ./edge
COPY simulators ./simulators
RUN /opt/edge-gateway/bin/pip install --no-compile . \
    && /opt/edge-gateway/bin/python -m compileall -q /opt/edge-gateway/lib

# ---- runtime: the venv, a non-root user, nothing else -----------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="edge-gateway" \
      org.opencontainers.image.description="Work-center edge gateway (orders, counts, MQTT 5 sync)" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 edge-gateway \
    && useradd --system --uid 10001 --gid edge-gateway --no-create-home \
       --home-dir /var/lib/edge-gateway --shell /usr/sbin/nologin edge-gateway \
    && install -d -o edge-gateway -g edge-gateway -m 0750 /var/lib/edge-gateway \
    && install -d -m 0755 /etc/edge-gateway
COPY --from=build /opt/edge-gateway /opt/edge-gateway
COPY config/example.toml /usr/share/doc/edge-gateway/example.toml
ENV PATH=/opt/edge-gateway/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    EDGE_CONFIG=/etc/edge-gateway/edge.toml \
    EDGE_GATEWAY__LOG_JSON=true
USER 10001:10001
WORKDIR /var/lib/edge-gateway
VOLUME ["/var/lib/edge-gateway"]
# the operator panel, its local API and /metrics, when [panel] is enabled
EXPOSE 8080
STOPSIGNAL SIGTERM
# Healthy while the config is valid and the database opens and reads (edge status exits 1/2).
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["edge", "status"]
ENTRYPOINT ["edge"]
CMD ["run"]
