"""``tt redis start|stop|status``: the town's own Redis server."""

from __future__ import annotations

import argparse

from tinytown.cli.common import add_json_flag, config_of, print_json
from tinytown.connection.client import make_client, verify
from tinytown.connection.embedded import EmbeddedServer, find_server_binary
from tinytown.connection.target import resolve_target
from tinytown.core.errors import RedisUnavailable


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "redis",
        help="start, stop or inspect the town's own Redis",
        description="The town's own Redis runs on .tt/redis.sock (or loopback TCP when "
        "[redis].use_socket = false). With REDIS_URL or [redis].url set, Redis is external and "
        "these commands only report on it.",
    )
    rsub = p.add_subparsers(dest="redis_command", metavar="ACTION", required=True)
    rsub.add_parser(
        "start",
        help="start the server unless it already answers",
        description="Start the town's own server (every tt command and worker also does on first "
        "use); a server that already answers is reused.",
    ).set_defaults(func=cmd_start)
    rsub.add_parser(
        "stop",
        help="stop the server, saving an RDB snapshot",
        description="Stop the town's own server with SHUTDOWN, saving an RDB snapshot "
        "(SIGTERM to the pid in .tt/redis.pid if it does not answer).",
    ).set_defaults(func=cmd_stop)
    s = rsub.add_parser(
        "status",
        help="is it answering? (exit 0 if so, 4 if not)",
        description="Report whether the town's Redis (its own or an external one) answers: "
        "exit 0 if it does, 4 if not.",
    )
    add_json_flag(s)
    s.set_defaults(func=cmd_status)


def cmd_start(args: argparse.Namespace) -> int:
    server = EmbeddedServer(config_of(args))
    binary = find_server_binary()
    started = server.ensure_running()
    verb = "Started" if started else "Already running:"
    print(f"{verb} {binary.flavour}-server on {server.target.display} (pid {server.pid()})")
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    server = EmbeddedServer(config_of(args))
    if server.stop():
        print(f"Stopped the town's Redis on {server.target.display}")
    else:
        print(f"No Redis was running on {server.target.display}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    config = config_of(args)
    target = resolve_target(config)
    if target.managed:
        st = EmbeddedServer(config).status()
        data = {
            "endpoint": st.endpoint,
            "managed": True,
            "running": st.running,
            "pid": st.pid,
            "detail": st.detail,
        }
    else:
        client = make_client(config, target)
        try:
            version = verify(client, target)
            data = {
                "endpoint": target.display,
                "managed": False,
                "running": True,
                "version": version,
            }
        except RedisUnavailable as err:
            data = {
                "endpoint": target.display,
                "managed": False,
                "running": False,
                "detail": str(err),
            }
        finally:
            client.close()
    if args.json:
        print_json(data)
    else:
        state = "running" if data["running"] else "not running"
        extra = f" (pid {data['pid']})" if data.get("pid") else ""
        print(
            f"Redis {data['endpoint']}: {state}{extra}"
            + (
                f" ({data['detail']})"
                if not data["running"] and data["detail"] != "not running"
                else ""
            )
        )
    return 0 if data["running"] else 4
