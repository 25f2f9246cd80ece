"""Installs stay reproducible: ranges in setup.cfg, exact versions in requirements.lock, and every
install path (README commands, CI, the Docker build) taking its versions from the lock."""

from __future__ import annotations

import configparser
import importlib.metadata
import re
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements.lock"
# Installers' own tools and the project itself are not dependencies.
NOT_LOCKED = {"pip", "setuptools", "wheel", "tinytown"}


def declared() -> list[Requirement]:
    """install_requires and every extra of setup.cfg."""
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    lines = cfg["options"]["install_requires"].splitlines()
    for _extra, value in cfg["options.extras_require"].items():
        lines += value.splitlines()
    return [Requirement(line) for line in lines if line.strip()]


def locked() -> dict[str, tuple[str, Requirement]]:
    """Name → (pinned version, requirement with its marker), from the lock."""
    pins = {}
    for line in LOCK.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        req = Requirement(line)
        (spec,) = req.specifier
        assert spec.operator == "==", line
        pins[canonicalize_name(req.name)] = (spec.version, req)
    return pins


def test_every_declared_range_is_capped_below_the_next_major_release():
    for req in declared():
        assert any(spec.operator == "<" for spec in req.specifier), f"{req} has no upper bound"


def test_the_lock_satisfies_every_range_in_setup_cfg():
    """Editing setup.cfg without `scripts/refresh-lock --keep` fails here."""
    pins = locked()
    for req in declared():
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is in setup.cfg but not in requirements.lock"
        assert req.specifier.contains(pins[name][0], prereleases=True), (
            f"lock pins {name}=={pins[name][0]}, setup.cfg says {req}"
        )


def test_this_environment_holds_exactly_the_locked_versions():
    """What the README's test command installed is what the lock names, nothing newer or extra."""
    pins = locked()
    env = default_environment()
    for dist in importlib.metadata.distributions():
        name = canonicalize_name(dist.metadata["Name"])
        if name in NOT_LOCKED:
            continue
        assert name in pins, f"{name} {dist.version} is installed but not in requirements.lock"
        version, req = pins[name]
        if req.marker is None or req.marker.evaluate(env):
            assert dist.version == version, f"{name}: installed {dist.version}, locked {version}"


def test_every_install_path_takes_its_versions_from_the_lock():
    readme = (ROOT / "README.md").read_text()
    commands = [
        c for c in re.findall(r"```sh\n(.+?)\n```", readme, flags=re.S) if "pip install" in c
    ]
    assert len(commands) >= 2 and all("-c requirements.lock" in c for c in commands)
    assert "-c requirements.lock" in (ROOT / ".ci" / "run").read_text()
    assert "-c /tmp/requirements.lock" in (ROOT / "Dockerfile").read_text()
    assert (
        '-c "$repo_root/requirements.lock"' in (ROOT / "scripts" / "build-wheelhouse").read_text()
    )
