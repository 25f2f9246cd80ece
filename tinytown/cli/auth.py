"""``tt auth gen-key``: a new API key and the Argon2id hash to configure."""

from __future__ import annotations

import argparse

from tinytown.core.apikeys import gen_key_text, generate_key, hash_key


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "auth",
        help="API keys for townhall",
        description='API keys for townhall\'s [townhall.auth] mode = "api_key".',
    )
    asub = p.add_subparsers(dest="auth_command", metavar="ACTION", required=True)
    g = asub.add_parser(
        "gen-key",
        help="generate an API key and its Argon2id hash",
        description="Print a new 64-hex API key (shown once) and its Argon2id PHC hash "
        "(m=19456, t=2, p=1) for [townhall.auth] api_key_hash or [[townhall.auth.keys]] hash. "
        "Scripts can read the line after 'API Key (store securely, shown only once):' and the "
        "line after 'API Key Hash (add to tinytown.toml):'.",
    )
    g.set_defaults(func=cmd_gen_key)


def cmd_gen_key(args: argparse.Namespace) -> int:
    key = generate_key()
    print(gen_key_text(key, hash_key(key)), end="")
    return 0
