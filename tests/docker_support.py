"""Docker engine access for tests: find the engine, build the project's images, clean up.

Images built here are labelled ``tinytown.test=1``; label containers the same way so that
``remove_test_artifacts`` finds both. The engine and the base image come from
``bash .ci/docker-engine.sh``; nothing here pulls from a registry.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import docker
import docker.errors
import pytest

from tinytown.core.clock import parse_rfc3339

REPO_ROOT = Path(__file__).resolve().parent.parent
WHEEL_DIR = REPO_ROOT / ".docker-wheels"
BASE_IMAGE = os.environ.get("TINYTOWN_BASE_IMAGE", "tinytown-base:bookworm")
TEST_LABEL = "tinytown.test"
TEST_LABELS = {TEST_LABEL: "1"}
STAGE_LABEL = "tinytown.stage"  # the Dockerfile's venv stage …
# … with a value of this checkout's own, so that test runs of two checkouts on one engine never
# prune each other's stage images.
STAGE = "venv-" + hashlib.sha256(str(REPO_ROOT).encode()).hexdigest()[:12]
ENGINE_SETUP_HINT = "run `bash .ci/docker-engine.sh` as root to install and start it"

# What goes into the wheels; a change to any of these makes the wheelhouse stale.
_PACKAGE_SOURCES = (
    "setup.cfg",
    "setup.py",
    "pyproject.toml",
    "requirements.lock",
    "townhall.py",
    "agent_worker.py",
    "scaler.py",
)
_PACKAGE_DIRS = ("tinytown",)


def docker_client_or_skip_reason() -> docker.DockerClient | str:
    """A client for the local engine, or a sentence saying why there is none (for pytest.skip).

    With ``TINYTOWN_REQUIRE_DOCKER=1`` (set by ``.ci/run``) a missing engine fails the tests
    instead: CI must run them, not skip them.
    """
    try:
        client = docker.from_env(timeout=30)
        client.ping()
    except docker.errors.DockerException as exc:
        reason = f"no Docker engine reachable ({exc}); {ENGINE_SETUP_HINT}"
        if os.environ.get("TINYTOWN_REQUIRE_DOCKER") == "1":
            pytest.fail(f"TINYTOWN_REQUIRE_DOCKER=1 but {reason}", pytrace=False)
        return reason
    return client


def _newest_source_mtime() -> float:
    paths = [REPO_ROOT / name for name in _PACKAGE_SOURCES]
    for folder in _PACKAGE_DIRS:
        paths.extend(p for p in (REPO_ROOT / folder).rglob("*") if "__pycache__" not in p.parts)
    return max((p.stat().st_mtime for p in paths if p.is_file()), default=0.0)


def wheelhouse_is_stale() -> bool:
    """True when .docker-wheels/ is missing or older than any package source."""
    wheels = list(WHEEL_DIR.glob("*.whl"))
    if not wheels:
        return True
    return min(w.stat().st_mtime for w in wheels) < _newest_source_mtime()


def ensure_wheelhouse() -> None:
    """Run scripts/build-wheelhouse with this interpreter when the wheelhouse is stale."""
    if not wheelhouse_is_stale():
        return
    result = subprocess.run(
        [str(REPO_ROOT / "scripts" / "build-wheelhouse")],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHON": os.environ.get("PYTHON", sys.executable)},
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"scripts/build-wheelhouse failed (exit {result.returncode}):\n{result.stdout}{result.stderr}"
        )


def build_image(target: str, tag: str, client: docker.DockerClient | None = None) -> str:
    """Build Dockerfile target ``target`` on the local base image as ``tag``; return the image id.

    Raises RuntimeError carrying the build log when the build fails.
    """
    client = client or docker.from_env(timeout=600)
    try:
        client.images.get(BASE_IMAGE)
    except docker.errors.ImageNotFound:
        raise RuntimeError(f"base image {BASE_IMAGE} is missing; {ENGINE_SETUP_HINT}") from None
    ensure_wheelhouse()
    try:
        image, _log = client.images.build(
            path=str(REPO_ROOT),
            target=target,
            tag=tag,
            buildargs={"BASE_IMAGE": BASE_IMAGE, "TINYTOWN_STAGE": STAGE},
            labels=TEST_LABELS,
            pull=False,
            rm=True,
            forcerm=True,
        )
    except docker.errors.BuildError as exc:
        log = "".join(chunk.get("stream", "") or chunk.get("error", "") for chunk in exc.build_log)
        raise RuntimeError(f"docker build --target {target} failed: {exc.msg}\n{log}") from None
    except docker.errors.APIError as exc:  # the daemon refused the build before it started
        raise RuntimeError(f"docker build --target {target} refused: {exc.explanation}") from None
    remove_stale_stages(client, STAGE)
    return image.id


def remove_stale_stages(client: docker.DockerClient, stage: str) -> list[str]:
    """Remove the untagged ``stage`` images of earlier builds; keep the newest (the build cache).

    The classic builder docker-py uses keeps each stage as an image; a new wheelhouse (every
    source change) leaves the previous venv stage behind, about 75 MB each. Returns the removed ids.
    """
    stages = client.images.list(filters={"dangling": True, "label": f"{STAGE_LABEL}={stage}"})
    stages.sort(key=lambda image: parse_rfc3339(image.attrs["Created"]), reverse=True)
    removed = []
    for image in stages[1:]:
        try:
            client.images.remove(image.id)
            removed.append(image.id)
        except docker.errors.APIError:  # in use by a build running beside this one: next time
            pass
    return removed


def remove_test_artifacts(client: docker.DockerClient) -> None:
    """Force-remove every container, then every image, labelled tinytown.test=1.

    That includes other concurrent test runs' on a shared engine: call it at session end in CI,
    and remove by name where runs may overlap.
    """
    label_filter = {"label": f"{TEST_LABEL}=1"}
    for container in client.containers.list(all=True, filters=label_filter, ignore_removed=True):
        container.remove(force=True)
    for image in client.images.list(filters=label_filter):
        try:
            client.images.remove(image.id, force=True)
        except docker.errors.NotFound:
            pass  # already gone with a tag removed just before
