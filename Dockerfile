# syntax=docker/dockerfile:1
#
# asynctask: one image for every role. The command picks it:
#   docker run IMAGE            -> api (the default CMD, port 4000)
#   docker run IMAGE workers    -> the supervisor and its worker processes
#   docker run IMAGE migrate    -> apply schema.sql once, then exit (idempotent)
# DATABASE_URL must be set (postgresql://user:password@host:5432/dbname): without it every command
# stops with one line and exit status 2. The image has no embedded PostgreSQL (the
# asynctask[embedded] extra is not installed), and ASYNCTASK_REQUIRE_DATABASE_URL=1 below says so.
#
# Configuration: without a file the packaged default config.yaml is used, overridden by the
# environment (ASYNCTASK_*). To use your own file, mount it and point ASYNCTASK_CONFIG at it:
#   -v "$PWD/config.yaml:/etc/asynctask/config.yaml:ro" -e ASYNCTASK_CONFIG=/etc/asynctask/config.yaml
#
# .ci/container-check runs the same install steps (wheel, fresh venv, offline install, migrate,
# smoke test) without Docker; keep the two in step.

# Debian codename pinned too: the tini version below is bookworm's.
FROM python:3.11-slim-bookworm AS base


# --- builder: every dependency as a wheel, plus asynctask's own --------------------------------
FROM base AS builder
WORKDIR /src
# Only what the package build reads. schema.sql and config.yaml sit at the top level, and so do
# service/ and workers/; the package asynctask/ holds symlinks to all four (asynctask/core/schema.sql,
# asynctask/core/default_config.yaml, asynctask/service, asynctask/workers) that setuptools copies
# into the wheel as real files.
COPY pyproject.toml setup.py README.md config.yaml schema.sql ./
COPY asynctask/ asynctask/
COPY service/ service/
COPY workers/ workers/
# Every dependency ships manylinux wheels, so no compiler is installed here; if one ever needs
# building from source, add build-essential to this stage only.
RUN --mount=type=cache,target=/root/.cache/pip \
    pip wheel --wheel-dir /wheels .


# --- runtime: no compilers, no source tree, no wheels left behind ------------------------------
FROM base AS runtime

LABEL org.opencontainers.image.title="asynctask" \
      org.opencontainers.image.description="A PostgreSQL-backed task queue service (api, workers, migrate)"

# tini is PID 1: it forwards SIGTERM/SIGINT to the asynctask process (the API or the workers'
# supervisor, which stops its children gracefully) and reaps zombies.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini=0.19.0-1+b3 \
    && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 asynctask \
    && useradd --system --no-log-init --uid 10001 --gid asynctask \
        --home-dir /app --create-home --shell /usr/sbin/nologin asynctask

# ASYNCTASK_REQUIRE_DATABASE_URL: a container without DATABASE_URL is a mistake (api and workers
# would not share a database), never a request for a private embedded one. The listeners bind
# every interface of the container (its network is the boundary; loopback would be unreachable);
# without tokens the API then refuses to start unless ASYNCTASK_API_ALLOW_ANONYMOUS=true.
ENV VIRTUAL_ENV=/opt/asynctask \
    PATH=/opt/asynctask/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ASYNCTASK_API_HOST=0.0.0.0 \
    ASYNCTASK_METRICS_HOST=0.0.0.0 \
    ASYNCTASK_REQUIRE_DATABASE_URL=1

# Installed offline from the builder's wheels only (bind-mounted, so no layer keeps them): a
# dependency missing from the wheel set fails the build instead of being fetched here. The base
# image's pip installs into a venv without pip or setuptools of its own (about 25 MB less).
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    /usr/local/bin/python -m venv --without-pip /opt/asynctask \
    && /usr/local/bin/python -m pip --python /opt/asynctask/bin/python install \
        --no-cache-dir --no-index --find-links=/wheels /wheels/asynctask-*.whl

# No config.yaml here, so the packaged default is used (see the top of this file).
WORKDIR /app
USER 10001:10001
EXPOSE 4000

# The API's liveness route (no database access). Only meaningful for the api command: compose
# disables it for workers and migrate; with plain `docker run IMAGE workers` add --no-healthcheck.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('ASYNCTASK_API_PORT', '4000'), timeout=4)"]

ENTRYPOINT ["tini", "--", "asynctask"]
CMD ["api"]
