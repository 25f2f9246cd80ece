# Tinytown images: one file, three targets (compose.yaml builds all three).
#
#   scripts/build-wheelhouse                                  # wheels into .docker-wheels/
#   docker build --target townhall     -t tinytown-townhall .
#   docker build --target agent-worker -t tinytown-agent-worker .
#   docker build --target scaler       -t tinytown-scaler .
#   docker build --target agent-worker --build-arg AGENT_CLI_NPM=@anthropic-ai/claude-code \
#       -t tinytown-agent-worker .                            # with a coding CLI baked in
#
# Nothing is fetched from a package index during the build: pip installs from the wheels in
# .docker-wheels/ (--no-index), at the versions requirements.lock names (-c). Builds work where
# the builder has no route to PyPI (CI, air-gapped hosts) and ship what the lock pinned. Rebuild
# the wheelhouse after changing the package, its dependencies or the lock.
#
# Without --target, a build gives the last stage, townhall.
#
# AGENT_CLI_NPM (agent-worker only; default empty): an npm package spec, such as
# @anthropic-ai/claude-code or @openai/codex@0.1.2 (pin a version for repeatable builds). When set,
# the build installs the base's Debian nodejs and npm and `npm install -g` the package, so the
# worker image carries that coding CLI; check that Debian's Node.js (18 on bookworm, 20 on trixie)
# is one the CLI supports. This is the only step that needs the npm registry; empty, the build
# fetches nothing. Its credentials (ANTHROPIC_API_KEY, …) are given at run time, never baked in.
#
# BASE_IMAGE: production uses python:3.11-slim unchanged. CI, which cannot pull images, passes
# --build-arg BASE_IMAGE=tinytown-base:bookworm, a debootstrap image made by
# .ci/docker-engine.sh (python3 3.11.2 at /usr/bin, with git and tini preinstalled).
#
# PID 1 is tini in both targets. The worker's coding CLI spawns its own children (node, git,
# shells); when they are orphaned they are re-parented to PID 1, and only an init reaps them.
# An image-level init also holds under Kubernetes and Cloud Run, which have no `docker run
# --init`. tini forwards SIGTERM, so the worker's own SIGTERM handling (drain, hand back, exit 0)
# and gunicorn's graceful shutdown work unchanged. tini is installed by apt only when the base
# lacks it, so the CI base never touches the network.
#
# No HEALTHCHECK here. Townhall: which port and scheme it serves (tinytown.toml, TLS) is only
# known at run time; compose.yaml probes /livez for its known setup, Kubernetes and Cloud Run
# use their own probes. Workers: the scaler gives each container it starts a healthcheck
# (`python -P -m tinytown.worker.health_file`, reading the file the worker writes after each heartbeat
# when TINYTOWN_HEALTH_FILE is set), so derived images need nothing; see docs/scaler.md.
ARG BASE_IMAGE=python:3.11-slim

# --- venv: the package and its dependencies, from the wheelhouse only --------------------------
FROM ${BASE_IMAGE} AS venv
# Only this stage carries the label (the images are FROM runtime): a builder that keeps stage
# images (docker-py's, the classic one) leaves one behind per wheelhouse, found and pruned by it.
# The test suite sets a value per checkout, so that two checkouts never prune each other's.
ARG TINYTOWN_STAGE=venv
LABEL tinytown.stage=${TINYTOWN_STAGE}
COPY .docker-wheels/ /tmp/wheels/
COPY requirements.lock /tmp/requirements.lock
# `python3 -m venv`, not a path: python3 is /usr/local/bin in python:*-slim, /usr/bin in Debian.
# The package and what it needs, at the versions the lock names (a wheel of another version in
# the wheelhouse makes the build fail rather than ship it).
RUN python3 -m venv /opt/tinytown \
 && /opt/tinytown/bin/pip install --no-cache-dir --no-index --disable-pip-version-check \
        --find-links=/tmp/wheels -c /tmp/requirements.lock tinytown

# --- runtime: what the three images share ---------------------------------------------------------
FROM ${BASE_IMAGE} AS runtime
# PATH spelled out rather than extended: an imported base image has no PATH to extend.
ENV PATH=/opt/tinytown/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TINYTOWN_TOWN_DIR=/workspace
# /run/tinytown: where compose.yaml has townhall write the bootstrap key (its `secrets` volume). A
# directory only the image's user can enter, so that a new named volume mounted over it, which
# takes the owner and mode of what it covers, starts that way too, in whichever image mounts it
# first.
RUN if ! command -v tini >/dev/null; then \
        apt-get update \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends tini \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
 && groupadd --gid 10001 tinytown \
 && useradd --uid 10001 --gid 10001 --home-dir /home/tinytown --create-home --shell /bin/bash tinytown \
 && install -d -o 10001 -g 10001 /workspace \
 && install -d -o 10001 -g 10001 -m 700 /run/tinytown
COPY --from=venv /opt/tinytown /opt/tinytown
WORKDIR /workspace
ENTRYPOINT ["tini", "--"]
# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001

# --- scaler: starts and retires worker containers from townhall's /api/scaling --------------------
# (Before the others, so that a classic-builder build of this target builds neither of them.)
# The same package as townhall's image, with its own command; compose.yaml runs it with the
# Docker socket mounted (docs/scaler.md). Its state file lives in /var/lib/tinytown-scaler, a
# directory of the image's user so that a named volume mounted there takes that owner.
FROM runtime AS scaler
USER root
RUN install -d -o 10001 -g 10001 -m 700 /var/lib/tinytown-scaler
USER 10001:10001
CMD ["tinytown-scaler", "run"]

# --- agent-worker: takes tasks, runs the coding CLI, exits when idle -------------------------------
# (Before townhall, so that a classic-builder build of this target does not build townhall too.)
# A coding CLI is baked in only with AGENT_CLI_NPM (see the top of this file); otherwise derive
# an image with yours, or point an [agent_clis.NAME] of tinytown.toml at a program on a volume.
FROM runtime AS agent-worker
USER root
# git: the worker commits and pushes task work. The system identity is a fallback that the
# task's or the user's git config overrides; safe.directory because workspace volumes are often
# owned by another uid, which git otherwise refuses to touch.
RUN if ! command -v git >/dev/null; then \
        apt-get update \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends git ca-certificates \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
 && git config --system user.name "Tinytown agent" \
 && git config --system user.email "agent@tinytown.invalid" \
 && git config --system --add safe.directory '*'
# Declared here, not earlier, so that changing it rebuilds only this step.
ARG AGENT_CLI_NPM=""
RUN if [ -n "$AGENT_CLI_NPM" ]; then \
        apt-get update \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nodejs npm \
        && npm install -g --no-fund --no-audit "$AGENT_CLI_NPM" \
        && npm cache clean --force \
        && apt-get clean && rm -rf /var/lib/apt/lists/* /root/.npm; \
    fi
USER 10001:10001
# -P: do not put the working directory on sys.path, so a workspace that happens to hold a
# tinytown/ or agent_worker.py (a checkout of this repo) cannot shadow the installed code.
CMD ["python", "-P", "-m", "agent_worker"]

# --- townhall: REST API, probes, metrics, scaling signal ------------------------------------------
FROM runtime AS townhall
# A container listening on its own loopback is unreachable; bind all interfaces, which makes the
# townhall refuse to start without auth (TINYTOWN_BOOTSTRAP_API_KEY=1 or a configured key).
ENV TINYTOWN_REST_BIND=0.0.0.0 \
    TINYTOWN_REST_PORT=8080
EXPOSE 8080
CMD ["gunicorn", "-c", "python:tinytown.gunicorn_conf", "townhall:app"]
