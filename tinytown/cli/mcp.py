"""``tt mcp-stdio``: serve the town to a local assistant over MCP (stdin and stdout)."""

from __future__ import annotations

import argparse

from tinytown.cli.common import open_town

CLAUDE_DESKTOP = (
    '{"mcpServers": {"tinytown": {"command": "tt", '
    '"args": ["mcp-stdio", "--town", "/path/to/town"]}}}'
)
DESCRIPTION = """\
Run an MCP server on stdin and stdout for an assistant on this machine (Claude
Desktop, Codex, ...): the tools, resources and prompts of townhall's /mcp, each
tool running the code of its REST route. The assistant starts it; you do not.

You are the caller, with every scope (--read-only: town.read only). Each tool
call that writes, and each refusal, leaves one JSON audit line on stderr;
stdout carries only protocol messages."""
EPILOG = f"""Claude Desktop (claude_desktop_config.json):
  {CLAUDE_DESKTOP}

See docs/mcp.md for Codex and for townhall's /mcp (remote, with an API key)."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "mcp-stdio",
        help="serve the town to a local assistant over MCP (stdin/stdout)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "-t",
        "--town",
        metavar="DIR",
        default=argparse.SUPPRESS,  # `tt --town DIR mcp-stdio` works too
        help="town directory (default: $TINYTOWN_TOWN_DIR, else the current directory)",
    )
    p.add_argument(
        "--read-only",
        action="store_true",
        help="only the tools that read (town.read); the others are refused and not listed",
    )
    p.set_defaults(func=cmd_mcp_stdio)


def cmd_mcp_stdio(args: argparse.Namespace) -> int:
    from tinytown.mcp import stdio  # the SDK is heavy: only this command loads it

    town = open_town(args)  # exit 3 before serving if this is not a town, 4 without Redis
    try:
        stdio.serve(town, read_only=args.read_only)
    finally:
        town.close()
    return 0
