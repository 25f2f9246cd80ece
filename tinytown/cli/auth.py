"""``tt auth add-key`` (a named API key written into tinytown.toml), ``tt auth gen-key`` and
``tt auth end-sessions`` (every status-page log-in ended).

``add-key`` edits ``tinytown.toml`` with tomlkit, so everything else in the file — comments,
order, spacing — stays as it was: it appends a ``[[townhall.auth.keys]]`` entry (name, Argon2id
hash, scopes), sets ``[townhall.auth] mode = "api_key"`` when it was ``"none"``, checks the
result the way every program of the town will read it, and only then replaces the file. The raw
key is printed once and stored nowhere. Townhall reads its keys when its gunicorn workers
start, so a running townhall needs ``kill -HUP <master pid>`` (a graceful reload) or a restart.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import tomlkit
import tomlkit.exceptions
from tomlkit.items import AoT, Array, InlineTable, Table

from tinytown.cli.common import NAME, guard_redis, open_town
from tinytown.config import SCOPES, default_town_name, load_config, town_dir
from tinytown.core import defaults
from tinytown.core.apikeys import generate_key, hash_key
from tinytown.core.errors import ConfigError, TinytownError

UPSTREAM_KEY_NAME = "api_key"  # the principal of [townhall.auth] api_key_hash


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "auth",
        help="API keys for townhall",
        description='API keys for townhall\'s [townhall.auth] mode = "api_key".',
    )
    asub = p.add_subparsers(dest="auth_command", metavar="ACTION", required=True)
    a = asub.add_parser(
        "add-key",
        help="add a named API key to tinytown.toml and print the key once",
        description="Generate an API key, add its Argon2id hash as a [[townhall.auth.keys]] "
        'entry of tinytown.toml (setting [townhall.auth] mode = "api_key" if it was "none"; '
        "the rest of the file, comments included, is kept), and print the key once. "
        "Clients send it as 'Authorization: Bearer <key>'. A running townhall picks it up "
        "after `kill -HUP <its gunicorn master pid>` (or a restart).",
    )
    a.add_argument("name", type=NAME, help="the key's name: the principal in the audit log")
    a.add_argument(
        "--scopes",
        type=scope_list,
        default=("admin",),
        metavar="SCOPE,…",
        help="comma-separated, from " + ", ".join(SCOPES) + " (default: admin)",
    )
    a.set_defaults(func=cmd_add_key)
    g = asub.add_parser(
        "gen-key",
        help="generate an API key and its Argon2id hash (to configure by hand; "
        "`tt auth add-key` does it for you)",
        description="Print a new 64-hex API key (shown once) and its Argon2id PHC hash "
        "(m=19456, t=2, p=1), for configuring by hand; `tt auth add-key NAME` writes it into "
        "tinytown.toml for you. Scripts can read the line after 'API Key (store securely, "
        "shown only once):' and the line after 'API Key Hash (add to tinytown.toml):'.",
    )
    g.set_defaults(func=cmd_gen_key)
    e = asub.add_parser(
        "end-sessions",
        help="log every browser out of the status pages",
        description="End every status-page log-in of this town at once (a cookie copied or a "
        "laptop lost): each browser must log in again. API keys are not changed; to withdraw a "
        "key, remove its entry from tinytown.toml and reload townhall, which also ends the "
        "sessions opened with it.",
    )
    e.set_defaults(func=cmd_end_sessions)


def scope_list(value: str) -> tuple[str, ...]:
    """``town.read,town.write`` → a tuple of known scopes (argparse: exit 2 on anything else)."""
    scopes = tuple(dict.fromkeys(s.strip() for s in value.split(",") if s.strip()))
    unknown = [s for s in scopes if s not in SCOPES]
    if not scopes or unknown:
        raise argparse.ArgumentTypeError(
            f"{(unknown or [value])[0]!r} is not a scope; use a comma-separated list of "
            + ", ".join(SCOPES)
        )
    return scopes


# --- gen-key ----------------------------------------------------------------------------------


def gen_key_text(key: str, phc: str) -> str:
    """What ``gen-key`` prints. The lines after the two headers are what scripts read; the rest
    points to ``add-key`` and says where the hash goes by hand (``tt init`` already wrote a
    ``[townhall.auth]`` table, so a second one would make the file invalid TOML)."""
    return (
        "🔐 Generated new API key\n\n"
        "API Key (store securely, shown only once):\n"
        f"{key}\n\n"
        "API Key Hash (add to tinytown.toml):\n"
        f"{phc}\n\n"
        "Easier: `tt auth add-key NAME [--scopes town.read,town.write]` writes a new key into\n"
        "tinytown.toml for you. By hand: a tinytown.toml made by `tt init` already has a\n"
        "[townhall.auth] table — do not add a second one; under it (or under a new one if the\n"
        "file has none), set these two lines:\n\n"
        'mode = "api_key"\n'
        f'api_key_hash = "{phc}"\n\n'
        "then reload townhall (kill -HUP <its gunicorn master pid>, or restart it).\n"
        "Clients send: Authorization: Bearer <the key>\n"
    )


def cmd_gen_key(args: argparse.Namespace) -> int:
    key = generate_key()
    print(gen_key_text(key, hash_key(key)), end="")
    return 0


# --- end-sessions -----------------------------------------------------------------------------


@guard_redis
def cmd_end_sessions(args: argparse.Namespace) -> int:
    ended = open_town(args).page_sessions.end_all()
    print(f"Ended {ended} status-page session{'' if ended == 1 else 's'}.")
    return 0


# --- add-key ----------------------------------------------------------------------------------


def cmd_add_key(args: argparse.Namespace) -> int:
    root = town_dir(args.town)
    path = root / defaults.CONFIG_FILENAME
    if not path.is_file():
        raise ConfigError(f"{path} does not exist; run `tt init` in {root} first")
    try:
        doc = tomlkit.parse(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ConfigError(f"cannot read {path}: {err.strerror}") from None
    except tomlkit.exceptions.ParseError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from None
    key = generate_key()
    previous_mode = add_key(doc, str(path), args.name, hash_key(key), args.scopes)
    write_checked(path, tomlkit.dumps(doc))
    mode_note = (
        f'; [townhall.auth] mode was "{previous_mode}", now "api_key"'
        if previous_mode != "api_key"
        else ""
    )
    print(f"Added API key {args.name!r} (scopes: {', '.join(args.scopes)}) to {path}{mode_note}.")
    print()
    print("API key (shown only once; store it now, it is kept nowhere):")
    print(key)
    print()
    print("Clients send it as:  Authorization: Bearer <the key>   (or X-API-Key: <the key>)")
    print(reload_hint(root, str(doc.get("name") or default_town_name(root))))
    return 0


def add_key(doc, source: str, name: str, phc: str, scopes: tuple[str, ...]) -> str:
    """Append the key to ``[townhall.auth]`` of ``doc`` (a tomlkit document) and make the mode
    ``api_key``; returns the mode it had. Raises :class:`TinytownError` when it cannot."""
    townhall = _table(doc, "townhall", source, "[townhall]")
    created = "auth" not in townhall
    auth = _table(townhall, "auth", source, "[townhall.auth]")
    mode = str(auth.get("mode", "none"))
    if mode == "oidc":
        raise TinytownError(
            f'{source}: [townhall.auth] mode = "oidc", which accepts no API keys; '
            'set mode = "api_key" (or "none") first'
        )
    keys = auth.get("keys")
    taken = {str(k.get("name")) for k in keys if hasattr(k, "get")} if keys is not None else set()
    if auth.get("api_key_hash"):
        taken.add(UPSTREAM_KEY_NAME)
    if name in taken:
        raise TinytownError(
            f"{source}: an API key named {name!r} is already configured; choose another name "
            "(or remove the old entry first to replace it)"
        )
    if mode != "api_key":
        auth["mode"] = "api_key"
    if created:
        auth.add(tomlkit.nl())
    entry = {"name": name, "hash": phc, "scopes": list(scopes)}
    if keys is None:
        table = tomlkit.table()
        table.update(entry)
        table.add(tomlkit.nl())
        aot = tomlkit.aot()
        aot.append(table)
        auth.append("keys", aot)
    elif isinstance(keys, AoT):
        table = tomlkit.table()
        table.update(entry)
        table.add(tomlkit.nl())
        keys.append(table)
    elif isinstance(keys, Array):
        inline = tomlkit.inline_table()
        inline.update(entry)
        keys.append(inline)
    else:
        raise TinytownError(f"{source}: [townhall.auth] keys is not an array of tables")
    return mode


def _table(parent, key: str, source: str, shown: str):
    """``parent[key]``, made (as a table) if absent; an inline table cannot take a new entry."""
    if key not in parent:
        parent.append(key, tomlkit.table(is_super_table=key == "townhall"))
    value = parent[key]
    if isinstance(value, InlineTable) or not isinstance(value, (Table, dict)):
        raise TinytownError(
            f"{source}: {shown} is written inline; make it a table ({shown}) to add keys"
        )
    return value


def write_checked(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` (same permissions) only if the town would accept it: the
    new text is validated first (as ``load_config`` reads it), then moved into place at once."""
    with tempfile.TemporaryDirectory(prefix="tt-auth-") as scratch:
        (Path(scratch) / path.name).write_text(text, encoding="utf-8")
        try:
            load_config(scratch)
        except ConfigError as err:
            shown = str(err).replace(str(Path(scratch) / path.name), str(path))
            raise ConfigError(f"{shown} (tinytown.toml left as it was)") from None
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.chmod(tmp, path.stat().st_mode & 0o7777)
    os.replace(tmp, path)


def reload_hint(root: Path, town_name: str) -> str:
    """How to make a running townhall read the new key, naming its gunicorn master if it runs
    on this host."""
    pids = townhall_masters(root, town_name)
    if pids:
        return f"reload townhall: kill -HUP {' '.join(map(str, pids))} (or restart it)"
    return (
        "reload townhall: kill -HUP <its gunicorn master pid> (or restart it); no townhall of "
        "this town runs on this host, one started from now on reads the key by itself"
    )


def townhall_masters(root: Path, town_name: str) -> list[int]:
    """PIDs of gunicorn masters serving ``townhall:app`` for this town on this host (Linux
    ``/proc``; elsewhere none are found): started in the town directory or with
    ``TINYTOWN_TOWN_DIR`` naming it, or titled ``townhall-<town>``, and not a child of another."""
    proc = Path("/proc")
    if not proc.is_dir():
        return []
    found: dict[int, int] = {}  # pid → parent pid
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
            titled = bool(argv) and argv[0].startswith("gunicorn: master")  # setproctitle
            if titled:
                if f"[townhall-{town_name}]" not in argv[0]:
                    continue
            elif not _runs_townhall(argv) or _town_of(entry) != root:
                continue
            stat = (entry / "stat").read_text()
            found[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile, or another user's
    return sorted(pid for pid, parent in found.items() if parent not in found)


def _runs_townhall(argv: list[str]) -> bool:
    runs_gunicorn = any(Path(a).name.startswith("gunicorn") for a in argv[:2])
    return runs_gunicorn and any(a.endswith("townhall:app") for a in argv)


def _town_of(entry: Path) -> Path:
    """The town a process serves: its ``TINYTOWN_TOWN_DIR``, else its working directory."""
    cwd = Path(os.readlink(entry / "cwd"))
    env = (entry / "environ").read_bytes().decode(errors="replace").split("\0")
    named = next((v.split("=", 1)[1] for v in env if v.startswith("TINYTOWN_TOWN_DIR=")), "")
    return (cwd / named).resolve() if named else cwd.resolve()
