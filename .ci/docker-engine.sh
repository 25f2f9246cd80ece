#!/usr/bin/env bash
# Make a Docker engine and the local base image available, from nothing, on Debian bookworm.
#
#   bash .ci/docker-engine.sh          # safe to run again: each step is skipped when done
#
# 1. Installs docker.io, docker-compose (Debian's v1 tool, which tests/test_stack_e2e.py drives
#    compose.yaml with) and debootstrap (apt-get update only when apt cannot find them).
# 2. Starts dockerd in the background when `docker info` fails, and waits for it.
# 3. Builds the base image when missing: no registry is reachable in CI, so python:3.11-slim
#    cannot be pulled; a debootstrap of bookworm with python3 (3.11.2), git and tini stands in
#    for it (docker build --build-arg BASE_IMAGE=tinytown-base:bookworm).
# 4. Builds the Redis image when missing, for the same reason: redis:7 cannot be pulled, so
#    Debian's redis-server (7.0) on the base image stands in for it in compose.yaml's stack.
#
# Environment (all optional):
#   TINYTOWN_BASE_IMAGE     image name to ensure        (default tinytown-base:bookworm)
#   TINYTOWN_REDIS_IMAGE    Redis image name to ensure  (default tinytown-redis:bookworm)
#   TINYTOWN_DEBIAN_MIRROR  Debian mirror for debootstrap (default: the one apt uses here)
#   DOCKERD_LOG             dockerd's log file           (default /var/log/dockerd.log)
#   DOCKERD_PIDFILE         dockerd's pidfile            (default /var/run/docker.pid)
#   DOCKERD_WAIT_SECS       how long to wait for dockerd (default 60)
# Must run as root.
set -euo pipefail

base_image="${TINYTOWN_BASE_IMAGE:-tinytown-base:bookworm}"
redis_image="${TINYTOWN_REDIS_IMAGE:-tinytown-redis:bookworm}"
dockerd_log="${DOCKERD_LOG:-/var/log/dockerd.log}"
dockerd_pidfile="${DOCKERD_PIDFILE:-/var/run/docker.pid}"
dockerd_wait_secs="${DOCKERD_WAIT_SECS:-60}"
base_packages="python3,python3-venv,ca-certificates,git,tini"
host_packages=(docker.io docker-compose debootstrap debian-archive-keyring iptables ca-certificates)

step() { echo "docker-engine: $*"; }
die() { echo "docker-engine: error: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (it installs packages and starts dockerd)"

# Two concurrent runs would race to start dockerd and to build the base image.
exec 9>/var/lock/tinytown-docker-engine.lock
flock 9

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

install_host_packages() {
    local missing=() pkg
    for pkg in "${host_packages[@]}"; do installed "$pkg" || missing+=("$pkg"); done
    if [ ${#missing[@]} -eq 0 ]; then
        step "packages: ${host_packages[*]} already installed"
        return
    fi
    step "packages: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Refresh the package lists only when apt cannot install from the ones it has.
    if ! apt-get install -y -q --no-install-recommends "${missing[@]}" >/tmp/docker-engine-apt.log 2>&1; then
        step "packages: apt lists stale or missing, running apt-get update"
        apt-get update -q >>/tmp/docker-engine-apt.log 2>&1 || die "apt-get update failed; see /tmp/docker-engine-apt.log"
        apt-get install -y -q --no-install-recommends "${missing[@]}" >>/tmp/docker-engine-apt.log 2>&1 \
            || die "apt-get install ${missing[*]} failed; see /tmp/docker-engine-apt.log"
    fi
}

engine_up() { timeout 10 docker info >/dev/null 2>&1; }

start_dockerd() {
    if engine_up; then
        step "dockerd: already running"
        return
    fi
    # A dockerd from an earlier run may still be starting; start a second one only if not.
    if [ -s "$dockerd_pidfile" ] && kill -0 "$(cat "$dockerd_pidfile")" 2>/dev/null; then
        step "dockerd: pid $(cat "$dockerd_pidfile") is running but not answering yet; waiting"
    else
        step "dockerd: starting (log $dockerd_log, pidfile $dockerd_pidfile)"
        # setsid: the daemon must outlive this script and the CI step's process group.
        # 9>&-: it must not inherit the lock, or every later run would wait on it forever.
        setsid nohup dockerd --pidfile "$dockerd_pidfile" >>"$dockerd_log" 2>&1 </dev/null 9>&- &
    fi
    local waited=0
    until engine_up; do
        if [ "$waited" -ge "$dockerd_wait_secs" ]; then
            tail -n 20 "$dockerd_log" >&2 || true
            die "dockerd did not answer within ${dockerd_wait_secs}s; its log is $dockerd_log (tail above)"
        fi
        sleep 1
        waited=$((waited + 1))
    done
    step "dockerd: up after ${waited}s ($(docker info --format '{{.ServerVersion}}, storage {{.Driver}}'))"
}

# The Debian mirror apt already uses on this machine: the first enabled `debian` (not
# debian-security) URI in one-line or deb822 sources.
debian_mirror() {
    if [ -n "${TINYTOWN_DEBIAN_MIRROR:-}" ]; then echo "$TINYTOWN_DEBIAN_MIRROR"; return; fi
    local uri
    uri="$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | sed -n -e 's/^deb \(\[[^]]*\] \)\{0,1\}\([^ ]*\).*/\2/p' -e 's/^URIs: *//p' \
        | tr ' ' '\n' | grep -E '^https?://.*/debian/?$' | head -n 1 || true)"
    echo "${uri:-http://deb.debian.org/debian}"
}

build_base_image() {
    if docker image inspect "$base_image" >/dev/null 2>&1; then
        step "base image: $base_image present"
        return
    fi
    local mirror rootfs started
    mirror="$(debian_mirror)"
    # /var/tmp, not /tmp: the root filesystem is ~400 MB and /tmp may be a small tmpfs.
    rootfs="$(mktemp -d /var/tmp/tinytown-base.XXXXXX)"
    trap 'rm -rf "$rootfs"' EXIT
    started=$SECONDS
    step "base image: debootstrap bookworm from $mirror (about a minute)"
    debootstrap --variant=minbase --include="$base_packages" bookworm "$rootfs" "$mirror" \
        >/tmp/docker-engine-debootstrap.log 2>&1 \
        || die "debootstrap failed; see /tmp/docker-engine-debootstrap.log (mirror $mirror; set TINYTOWN_DEBIAN_MIRROR to use another)"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    step "base image: importing as $base_image"
    # An imported image has no config; give it the PATH and locale python:*-slim has.
    tar --numeric-owner -C "$rootfs" -c . | docker import \
        -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        -c 'ENV LANG=C.UTF-8' \
        -c 'CMD ["/bin/bash"]' \
        - "$base_image" >/dev/null
    rm -rf "$rootfs"
    trap - EXIT
    step "base image: $base_image built in $((SECONDS - started))s ($(docker run --rm --pull never "$base_image" python3 --version))"
}

# Like the official image where compose.yaml relies on it: redis-server and redis-cli on PATH,
# working directory /data (a volume), run as user redis. apt runs inside the build: Debian's
# mirror is reachable over plain HTTP from containers here (pip's index is not: TLS).
build_redis_image() {
    if docker image inspect "$redis_image" >/dev/null 2>&1; then
        step "redis image: $redis_image present"
        return
    fi
    local started=$SECONDS
    step "redis image: building $redis_image from $base_image (apt-get install redis-server)"
    docker build --pull=false -t "$redis_image" - >/tmp/docker-engine-redis.log 2>&1 <<DOCKERFILE \
        || die "building $redis_image failed; see /tmp/docker-engine-redis.log"
FROM $base_image
RUN apt-get update \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server \\
 && apt-get clean && rm -rf /var/lib/apt/lists/* \\
 && install -d -o redis -g redis /data
WORKDIR /data
USER redis
EXPOSE 6379
CMD ["redis-server", "--protected-mode", "no"]
DOCKERFILE
    step "redis image: $redis_image built in $((SECONDS - started))s ($(docker run --rm --pull never "$redis_image" redis-server --version | cut -d' ' -f1-3))"
}

install_host_packages
start_dockerd
build_base_image
build_redis_image
step "ready (dockerd pidfile $dockerd_pidfile, base image $base_image, redis image $redis_image)"
