# syntax=docker/dockerfile:1
# One image recipe for every Portico process: the gateway and the six services.
#   docker build --build-arg SERVICE=orders -t portico/orders .
# SERVICE picks the default command, port and health check (docker/entry.py); compose and the
# Kubernetes manifests pass the command explicitly anyway.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: a virtualenv from the lock alone, so code edits do not reinstall dependencies ---
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
COPY requirements.lock /tmp/requirements.lock
RUN /opt/venv/bin/pip install --requirement /tmp/requirements.lock

# --- runtime: the virtualenv, then the code, run by an unprivileged user ---
FROM ${PYTHON_IMAGE} AS runtime
ARG SERVICE=gateway
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PORTICO_SERVICE=${SERVICE}
RUN groupadd --system --gid 10001 portico \
    && useradd --system --uid 10001 --gid portico --home-dir /app --shell /usr/sbin/nologin portico
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY --chown=root:root chassis/ chassis/
COPY --chown=root:root gateway/ gateway/
COPY --chown=root:root services/ services/
COPY --chown=root:root portico_proto/ portico_proto/
COPY --chown=root:root docker/entry.py docker/entry.py
# the default feature flags (chassis.flags); mount another file and set PORTICO_FLAGS_FILE
COPY --chown=root:root flags.yaml flags.yaml
# var/ holds each service's data (SQLite default, identity's keys, orders' client file);
# named volumes mounted there inherit this ownership on first use.
RUN mkdir -p var/identity var/catalog var/inventory var/payments var/orders var/notifications var/views \
    && chown -R portico:portico var
USER 10001:10001
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "/app/docker/entry.py", "health", "/health/live"]
ENTRYPOINT ["python", "/app/docker/entry.py"]
CMD ["serve"]
