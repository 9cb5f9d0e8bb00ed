# llm-pessoal in a container: the TUI and the CLI, Stable Diffusion in-process.
#
#   docker build -t llm-pessoal .                                       CPU torch (the default)
#   docker build --build-arg TORCH_VARIANT=cu130 -t llm-pessoal:cuda .  a CUDA build of torch
#
# docker-compose.yml runs it beside Ollama; the README's "Docker" section has the commands.

# Python 3.11 (the project's floor) on Debian 13, slim. For bit-for-bit rebuilds pin the
# digest as well: FROM python:3.11-slim-trixie@sha256:...
FROM python:3.11-slim-trixie

# torch comes from the PyTorch index of TORCH_VARIANT: "cpu" by default (no CUDA libraries,
# a far smaller image), or a CUDA build such as "cu130" or "cu128", whichever the index
# holds for TORCH_VERSION. TORCH_INDEX_URL replaces the index outright, e.g.
# https://pypi.org/simple, whose Linux wheel of torch 2.13.0 is the CUDA 13.0 build.
# TORCH_VERSION must be pyproject.toml's torch== pin (tests/test_docker_files.py checks it).
ARG TORCH_VERSION=2.13.0
ARG TORCH_VARIANT=cpu
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/${TORCH_VARIANT}
# The user the app runs as. Match your own (APP_UID=$(id -u) APP_GID=$(id -g)) so the
# files it writes into bind-mounted folders (outputs/, logs/, exports/) are yours.
ARG APP_UID=1000
ARG APP_GID=1000

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# The group may exist already (gid 100 "users", or 20 on macOS hosts): then it is reused.
RUN (getent group "${APP_GID}" >/dev/null || groupadd --gid "${APP_GID}" app) \
    && useradd --uid "${APP_UID}" --gid "${APP_GID}" --create-home --shell /bin/bash app

# torch first, in its own layer: the largest download, and it changes least.
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"

# Then the app's dependencies, read from pyproject.toml, so that editing the code does not
# download them again. The local-version build (2.13.0+cpu) satisfies torch==2.13.0, so pip
# keeps it rather than fetching PyPI's CUDA build.
COPY pyproject.toml /tmp/src/
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('/tmp/src/pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# Then the app itself: a regular (not editable) install, without the dev extras.
COPY README.md /tmp/src/
COPY engines /tmp/src/engines
COPY tui /tmp/src/tui
RUN pip install --no-cache-dir /tmp/src \
    && rm -rf /tmp/src

# The container's settings: Ollama at the compose service, every path under /app. The
# folders are made here, owned by the app's user, so named volumes mounted on them start
# out writable by it.
WORKDIR /app
COPY docker/config.toml /app/config.toml
RUN mkdir -p /app/outputs /app/logs /app/data /app/exports /app/cache \
        /app/models/loras /app/models/embeddings /app/data/attachments /app/presets \
    && chown "${APP_UID}:${APP_GID}" /app/outputs /app/logs /app/data /app/exports /app/cache /app/models \
        /app/models/loras /app/models/embeddings /app/data/attachments /app/presets

# TERM/COLORTERM: `docker run -t` sets TERM=xterm, which would give the TUI few colours;
# docker-compose.yml passes the host terminal's own values through instead.
ENV LLM_PESSOAL_CONFIG=/app/config.toml \
    HF_HOME=/app/cache \
    TERM=xterm-256color \
    COLORTERM=truecolor

# By number, so runtimes that check for a non-root user (runAsNonRoot) can tell.
USER ${APP_UID}:${APP_GID}

# No health check. This container is an interactive TUI started on demand
# (`docker compose run --rm app`), not a long-running service: nothing waits on its
# health, and `llm-pessoal health` every interval would start a second Python process in
# the user's session only to report Ollama's state, which the ollama service's own check
# in docker-compose.yml already covers. `docker compose run --rm app health` runs it by hand.
HEALTHCHECK NONE

ENTRYPOINT ["llm-pessoal"]
