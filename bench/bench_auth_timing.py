#!/usr/bin/env python3
"""Wrong API keys of every shape, timed side by side through a real townhall under gunicorn.

    .venv/bin/python bench/bench_auth_timing.py [--requests 100] [--keys 2] [--json]

Issue 16 §7 asks that wrong keys of every shape take comparable time, so that timing tells an
attacker nothing about the configured keys. One private redis-server (unix socket), one
townhall (``gunicorn -c python:tinytown.gunicorn_conf townhall:app``, 1 worker) in ``api_key``
mode with ``--keys`` named keys. One client on one keep-alive connection sends
``GET /v1/town`` ``--requests`` times per shape and header (``Authorization: Bearer`` and
``X-API-Key``), in rounds: each round sends every (shape, header) once, in a new random order,
so machine noise hits them alike.

Prints p50 and p99 (ms) per shape and header, and the spread of the wrong-key shapes: max p50 /
min p50 (1.00 = identical). For reference, not in the spread: no key at all (401 before any
verification) and the right key (cached after its first success). The reasons the times are
alike are in ``tests/test_auth_wrong_keys.py``. Every process is stopped by PID at the end.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_api import free_port, gunicorn, redis_server, stop, wait_http  # noqa: E402

HEADERS = ("bearer", "x-api-key")
REFERENCE = ("no key", "right key (cached)")


def shapes(key: str, other_town_key: str, fresh_key: str) -> dict[str, bytes]:
    """Each shape's value as the bytes put on the wire (the shapes of the test)."""
    part = lambda doc: base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()
    flipped = key[:-1] + ("0" if key[-1] != "0" else "1")
    wrong = {
        "one char": "a",
        "right length, wrong": fresh_key,
        "prefix of a real key": key[:32],
        "real key + 1 char": key + "0",
        "last char changed": flipped,
        "upper-case real key": key.upper(),
        "non-ASCII": "ключ-ü-" + key[:8],
        "8 KB": "k" * 8000,
        "JWT-looking": ".".join([part({"alg": "RS256", "kid": "k1"}), part({"sub": "x"}), "c2ln"]),
        "another town's key": other_town_key,
    }
    return {name: value.encode("utf-8") for name, value in wrong.items()}


def header_for(header: str, value: bytes) -> dict:
    if not value:
        return {}
    return {"Authorization": b"Bearer " + value} if header == "bearer" else {"X-API-Key": value}


def one_request(conn: http.client.HTTPConnection, headers: dict, want: int) -> float:
    start = time.perf_counter()
    conn.request("GET", "/v1/town", headers=headers)
    resp = conn.getresponse()
    resp.read()
    took = time.perf_counter() - start
    if resp.status != want:
        raise RuntimeError(f"GET /v1/town answered {resp.status}, expected {want}")
    return took


def summary(latencies: list[float]) -> dict:
    ordered = sorted(latencies)
    return {
        "n": len(ordered),
        "p50_ms": statistics.median(ordered) * 1000,
        "p99_ms": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000,
    }


def measure(port: int, cases: dict[tuple[str, str], tuple[dict, int]], requests: int) -> dict:
    """``requests`` timed requests per case, interleaved in shuffled rounds."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    times: dict[tuple[str, str], list[float]] = {case: [] for case in cases}
    order = list(cases)
    for case in order:  # warm up: a connection, each code path once
        one_request(conn, *cases[case])
    rng = random.Random(16)
    for _ in range(requests):
        rng.shuffle(order)
        for case in order:
            times[case].append(one_request(conn, *cases[case]))
    conn.close()
    return {case: summary(t) for case, t in times.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--requests", type=int, default=100, help="per shape and header (default %(default)s)"
    )
    ap.add_argument("--keys", type=int, default=2, help="configured keys (default %(default)s)")
    ap.add_argument("--json", action="store_true", help="print one JSON document instead")
    args = ap.parse_args()

    from tinytown.core.apikeys import generate_key, hash_key

    tmp = Path(tempfile.mkdtemp(prefix="tt-bench-auth-"))
    redis_proc, url = redis_server(tmp)
    townhall = None
    out: dict = {
        "machine": {
            "cpus": os.cpu_count(),
            "cpu": platform.processor() or platform.machine(),
            "python": sys.version.split()[0],
        },
        "requests": args.requests,
        "keys": args.keys,
    }
    try:
        keys = [generate_key() for _ in range(args.keys)]
        town_dir = tmp / "town"
        town_dir.mkdir()
        tables = "".join(
            f'[[townhall.auth.keys]]\nname = "k{i}"\nhash = "{hash_key(k)}"\n'
            for i, k in enumerate(keys)
        )
        (town_dir / "tinytown.toml").write_text(
            f'name = "bench"\n[redis]\nurl = "{url}"\n[townhall]\nworkers = 1\n'
            f'[townhall.auth]\nmode = "api_key"\n{tables}'
        )
        port = free_port()
        townhall = gunicorn(town_dir, "townhall:app", port, {"TINYTOWN_TOWN_DIR": str(town_dir)})
        wait_http(port, "/health")

        wrong = shapes(keys[0], generate_key(), generate_key())
        cases: dict[tuple[str, str], tuple[dict, int]] = {
            (name, header): (header_for(header, value), 401)
            for name, value in wrong.items()
            for header in HEADERS
        }
        for header in HEADERS:
            cases[("no key", header)] = ({}, 401)
            cases[("right key (cached)", header)] = (header_for(header, keys[0].encode()), 200)
        results = measure(port, cases, args.requests)
    finally:
        if townhall is not None:
            stop(townhall)
        stop(redis_proc)
        shutil.rmtree(tmp, ignore_errors=True)

    rows = {}
    for (name, header), stats in results.items():
        rows.setdefault(name, {})[header] = stats
    out["shapes"] = rows
    p50s = [s["p50_ms"] for (name, _), s in results.items() if name not in REFERENCE]
    out["spread_max_p50_over_min_p50"] = max(p50s) / min(p50s)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print_table(out)
    return 0


def print_table(out: dict) -> None:
    m = out["machine"]
    print(
        f"machine: {m['cpus']} CPUs ({m['cpu']}), Python {m['python']}; "
        f"{out['keys']} configured keys, {out['requests']} requests per shape and header"
    )
    print()
    print(f"{'shape':<24} {'Bearer p50':>11} {'p99':>8}   {'X-API-Key p50':>13} {'p99':>8}  ms")
    for name, by_header in out["shapes"].items():
        b, x = by_header["bearer"], by_header["x-api-key"]
        print(
            f"{name:<24} {b['p50_ms']:>11.1f} {b['p99_ms']:>8.1f}   "
            f"{x['p50_ms']:>13.1f} {x['p99_ms']:>8.1f}"
        )
    print()
    print(
        f"spread of the wrong keys (max p50 / min p50, both headers): "
        f"{out['spread_max_p50_over_min_p50']:.3f}"
    )


if __name__ == "__main__":
    sys.exit(main())
