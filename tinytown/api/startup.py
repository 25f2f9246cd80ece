"""Townhall's start-up rules (upstream §9.1, made real) and the container key bootstrap.

Refuses to start, with the fix in the message, when:

- a non-loopback address is bound with ``[townhall.auth] mode = "none"``;
- ``[townhall.tls]`` is enabled and its ``cert_file``/``key_file`` is unset, missing or unreadable;
- ``[townhall.mtls]`` is enabled or required without a readable ``ca_file`` (mTLS needs TLS);
- gunicorn runs without :mod:`tinytown.gunicorn_conf` (so ``[townhall]`` is not applied) while
  TLS or mTLS is on: it would serve plain HTTP. Without TLS it only warns that gunicorn's own
  flags decide bind, port and workers.

A refusal is one line on stderr and an exit status from :class:`tinytown.core.errors.ExitStatus`:
3 for configuration, 6 for an address another process already listens on (another townhall?),
4 for a Redis that cannot be used.

Container bootstrap: bound to a non-loopback address with no auth configured and
``TINYTOWN_BOOTSTRAP_API_KEY=1``, townhall generates an API key, writes its Argon2id hash into
``tinytown.toml`` (``mode = "api_key"``) and the raw key to ``.townhall-api-key`` (mode 0600,
or ``TINYTOWN_TOWNHALL_API_KEY_PATH``). The key file is written once: when it already holds a
key (a ``tinytown.toml`` replaced since), that key is configured again rather than replaced, so
whoever reads the file (compose.yaml's scaler) keeps a working key. Concurrent workers serialise
on a lock file, so exactly one key is made. The key itself never reaches a log; the log names
the file.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import socket
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import NoReturn

from tinytown.config import Config, load_config
from tinytown.core import defaults
from tinytown.core.apikeys import generate_key, hash_key
from tinytown.core.errors import AddressInUse, ConfigError, TinytownError
from tinytown.core.urls import is_loopback

log = logging.getLogger("tinytown.townhall")
GUNICORN_CONFIG_MODULE = "tinytown.gunicorn_conf"
API_KEY_PATTERN = re.compile(r"[0-9a-f]{64}")  # what generate_key makes
RUN_WITH_CONFIG = (
    "run `gunicorn -c python:tinytown.gunicorn_conf townhall:app`, or `tt init` in the town "
    "directory to write the gunicorn.conf.py that plain `gunicorn townhall:app` reads"
)


def refuse_to_start(err: TinytownError) -> NoReturn:
    """Print ``townhall: <reason>`` on stderr and exit with the error's status (no traceback).

    Messages about Redis are redacted where they are made (:mod:`tinytown.connection.client`).
    """
    print(f"townhall: {err}", file=sys.stderr, flush=True)
    sys.exit(int(err.exit_status))


def bind_host(address: str) -> str:
    """The host part of a gunicorn bind (``host:port``, ``[v6]:port``, ``unix:/path``)."""
    if address.startswith(("unix:", "fd://")):
        return "unix"
    if address.startswith("["):
        return address[1:].split("]", 1)[0]
    return address.rsplit(":", 1)[0] if address.count(":") == 1 else address


def is_local_bind(host: str) -> bool:
    return host == "unix" or is_loopback(host)


def _readable(config: Config, value: str | None) -> Path | None:
    if not value:
        return None
    path = config.path(value)
    return path if path.is_file() and os.access(path, os.R_OK) else None


def startup_errors(config: Config, binds: Iterable[str] | None = None) -> list[str]:
    """Every reason townhall must not start, each with its fix (empty: fine to start)."""
    th = config.townhall
    hosts = [bind_host(b) for b in binds] if binds is not None else [th.bind]
    errors = []
    exposed = [h for h in hosts if not is_local_bind(h)]
    if exposed and th.auth.mode == "none":
        errors.append(
            f"townhall would listen on {exposed[0]} (not loopback) "
            'with [townhall.auth] mode = "none": '
            'anyone who can reach it could drive the town. Set mode = "api_key" with a hash from '
            '`tt auth gen-key` (or mode = "oidc"), '
            "or bind 127.0.0.1 ([townhall] bind / TINYTOWN_REST_BIND)"
        )
    if th.tls.enabled:
        for key in ("cert_file", "key_file"):
            value = getattr(th.tls, key)
            if _readable(config, value) is None:
                shown = config.path(value) if value else "unset"
                errors.append(
                    f"[townhall.tls] {key} is {shown} but TLS is enabled: "
                    "set it to a readable PEM file"
                )
    if th.mtls.enabled or th.mtls.required:
        if not th.tls.enabled:
            errors.append(
                "[townhall.mtls] is on but [townhall.tls] enabled = false: mTLS needs TLS; "
                "enable it with cert_file and key_file"
            )
        if _readable(config, th.mtls.ca_file) is None:
            shown = config.path(th.mtls.ca_file) if th.mtls.ca_file else "unset"
            errors.append(
                f"[townhall.mtls] ca_file is {shown}: "
                "set it to a readable PEM bundle of the CAs that sign client certificates"
            )
    return errors


def startup_warnings(config: Config, binds: Iterable[str] | None = None) -> list[str]:
    th = config.townhall
    hosts = [bind_host(b) for b in binds] if binds is not None else [th.bind]
    if (
        th.auth.mode == "api_key"
        and any(not is_local_bind(h) for h in hosts)
        and not th.tls.enabled
    ):
        return [
            "API keys travel in clear text without [townhall.tls]; "
            "enable TLS or terminate it in front of townhall"
        ]
    return []


def check_startup(config: Config, binds: Iterable[str] | None = None) -> None:
    """Raise :class:`ConfigError` listing every start-up rule broken; log the warnings."""
    binds = list(binds) if binds is not None else None
    for warning in startup_warnings(config, binds):
        log.warning("event=startup_warning detail=%s", warning)
    errors = startup_errors(config, binds)
    if errors:
        raise ConfigError("townhall refuses to start: " + "; ".join(errors))


# --- the addresses to bind -----------------------------------------------------------------------


def inherits_listeners(server, env: Mapping[str, str] | None = None) -> bool:
    """gunicorn will not bind itself: it was handed its sockets (a USR2 re-exec, systemd socket
    activation) or shares the port on purpose (``reuse_port``). The port is then rightly taken."""
    env = os.environ if env is None else env
    return bool(
        server.LISTENERS
        or env.get("GUNICORN_FD")
        or env.get("LISTEN_FDS")
        or getattr(server.cfg, "reuse_port", False)
    )


def check_addresses_free(addresses: Iterable) -> None:
    """Raise :class:`AddressInUse` (exit 6) if another process listens on one of gunicorn's TCP
    addresses (``server.cfg.address``: ``(host, port)``; unix sockets and file descriptors are
    left to gunicorn). Run before gunicorn binds, which would otherwise retry for 5 s and exit 1
    with a page of log. The probe binds as gunicorn does (``SO_REUSEADDR``), so a port held only
    by closing connections (``TIME_WAIT``) is free; any other bind error is gunicorn's to report.
    """
    for address in addresses:
        if not isinstance(address, tuple):
            continue
        host, port = address
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            probe = socket.socket(family, socket.SOCK_STREAM)
        except OSError:  # no IPv6 here, say: gunicorn reports it
            continue
        with probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as err:
                if err.errno != errno.EADDRINUSE:
                    continue
                shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
                raise AddressInUse(
                    f"{shown} is in use (another townhall?); stop it or set [townhall] "
                    "rest_port / TINYTOWN_REST_PORT"
                ) from None


# --- container bootstrap ----------------------------------------------------------------------


def set_auth_in_toml(text: str, phc: str) -> str:
    """``tinytown.toml`` text with ``mode = "api_key"`` and ``api_key_hash`` under
    ``[townhall.auth]``."""
    lines = text.splitlines()
    wanted = {"mode": '"api_key"', "api_key_hash": f'"{phc}"'}
    start = next((i for i, line in enumerate(lines) if line.strip() == "[townhall.auth]"), None)
    if start is None:
        block = ["", "[townhall.auth]"] + [f"{k} = {v}" for k, v in wanted.items()]
        return "\n".join(lines + block) + "\n"
    end = next(
        (i for i in range(start + 1, len(lines)) if lines[i].lstrip().startswith("[")), len(lines)
    )
    section = lines[start + 1 : end]
    for key, value in wanted.items():
        pattern = re.compile(rf"^\s*{key}\s*=")
        for i, line in enumerate(section):
            if pattern.match(line):
                section[i] = f"{key} = {value}"
                break
        else:
            section.insert(0, f"{key} = {value}")
    return "\n".join(lines[: start + 1] + section + lines[end:]) + "\n"


def key_file_path(config: Config, env: Mapping[str, str]) -> Path:
    custom = env.get("TINYTOWN_TOWNHALL_API_KEY_PATH")
    return Path(custom) if custom else config.root / defaults.TOWNHALL_API_KEY_FILENAME


def bootstrap_api_key(
    config: Config, env: Mapping[str, str] | None = None, binds: Iterable[str] | None = None
) -> Config:
    """Make and configure an API key if the container bootstrap applies; returns the config to
    use."""
    env = os.environ if env is None else env
    hosts = [bind_host(b) for b in binds] if binds is not None else [config.townhall.bind]
    if env.get("TINYTOWN_BOOTSTRAP_API_KEY") != "1" or config.townhall.auth.mode != "none":
        return config
    if all(is_local_bind(h) for h in hosts):
        return config
    config.runtime_dir.mkdir(parents=True, exist_ok=True)
    with open(config.runtime_dir / "bootstrap.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        current = load_config(config.root, env)
        if current.townhall.auth.mode != "none":
            return current  # another worker got here first
        path = config.root / defaults.CONFIG_FILENAME
        text = path.read_text(encoding="utf-8") if path.exists() else f'name = "{config.name}"\n'
        key_path = key_file_path(config, env)
        key, made = bootstrap_key(key_path)
        tmp = path.with_suffix(".toml.tmp")
        tmp.write_text(set_auth_in_toml(text, hash_key(key)), encoding="utf-8")
        if path.exists():  # keep a chmod 600 (the file may hold a Redis password)
            os.chmod(tmp, path.stat().st_mode & 0o7777)
        os.replace(tmp, path)
        log.warning(
            "event=api_key_bootstrapped key_file=%s detail=%s",
            key_path,
            ("generated an API key" if made else "configured the API key already in key_file")
            + " for this non-loopback townhall; its hash is in tinytown.toml",
        )
        return load_config(config.root, env)


def bootstrap_key(key_path: Path) -> tuple[str, bool]:
    """The key ``key_path`` already holds, else a new one written there (mode 0600, never
    overwriting); and whether it is new. Raises :class:`ConfigError` for a file that holds
    something else."""
    try:
        existing = key_path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        existing = None
    if existing is not None:
        if not API_KEY_PATTERN.fullmatch(existing):
            raise ConfigError(
                f"{key_path} (TINYTOWN_TOWNHALL_API_KEY_PATH) exists but does not hold an API key "
                "(64 lowercase hex characters): remove it, and townhall makes a new key there"
            )
        return existing, False
    key = generate_key()
    key_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key + "\n")
    os.chmod(key_path, 0o600)  # whatever the umask
    return key, True


def under_gunicorn(argv: list[str] | None = None) -> bool:
    """True in a process started as ``gunicorn …`` (its workers keep the master's argv)."""
    argv = sys.argv if argv is None else argv
    return bool(argv) and Path(argv[0]).name.startswith("gunicorn")


def check_gunicorn_settings(config: Config, argv: list[str] | None = None) -> None:
    """Under gunicorn without :mod:`tinytown.gunicorn_conf`, ``[townhall]`` is not applied.

    With TLS or mTLS on that would serve plain HTTP: raise :class:`ConfigError`. Otherwise log
    one warning that gunicorn's own flags decide bind, port and workers.
    """
    if not under_gunicorn(argv) or GUNICORN_CONFIG_MODULE in sys.modules:
        return
    th = config.townhall
    if th.tls.enabled or th.mtls.enabled or th.mtls.required:
        raise ConfigError(
            "townhall refuses to start: [townhall.tls] or [townhall.mtls] is on, but gunicorn was "
            "started without tinytown.gunicorn_conf, so it would serve plain HTTP on its own bind; "
            + RUN_WITH_CONFIG
        )
    log.warning(
        "event=startup_warning detail=gunicorn runs without tinytown.gunicorn_conf: "
        "[townhall] bind, rest_port, workers and timeouts are not applied; "
        "gunicorn's own flags (-b, -w, -t) decide them. To apply [townhall], %s",
        RUN_WITH_CONFIG,
    )


def gunicorn_command_binds(
    argv: list[str] | None = None, env: Mapping[str, str] | None = None
) -> list[str] | None:
    """Addresses given to gunicorn with ``-b``/``--bind`` (argv or ``GUNICORN_CMD_ARGS``), if any.

    Lets the app check the real bind even when gunicorn runs without this project's config
    module; None when this is not gunicorn or no bind was given on the command line.
    """
    import shlex

    argv = sys.argv if argv is None else argv
    env = os.environ if env is None else env
    if not under_gunicorn(argv):
        return None
    from gunicorn.config import Config as GunicornConfig

    parser = GunicornConfig().parser()
    binds: list[str] = []
    for args in (shlex.split(env.get("GUNICORN_CMD_ARGS", "")), argv[1:]):
        try:
            parsed, _ = parser.parse_known_args(args)
        except SystemExit:
            continue
        binds += parsed.bind or []
    return binds or None


def townhall_config(
    root=None, env: Mapping[str, str] | None = None, binds: Iterable[str] | None = None
) -> Config:
    """Load the town's config for townhall: bootstrap a key if asked, then enforce the rules."""
    env = os.environ if env is None else env
    binds = list(binds) if binds is not None else None
    config = bootstrap_api_key(load_config(root, env), env, binds)
    check_startup(config, binds)
    return config
