"""Run every benchmark: ``python -m bench [--quick] [--only NAME[,NAME]] [--list]``.

Each benchmark prints its own tables as it finishes; at the end comes a summary, and one JSON
document per run is written to ``bench/results/<UTC time>.json`` (git ignores the folder). The
scaler benchmark needs a Docker engine: it runs only when one answers a ping, and never with
``--skip-docker`` (which also points the other benchmarks' scaler processes at no engine).
Exits 1 when a benchmark fails, naming it; 2 for a usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

from bench.suite import BENCHMARKS, NO_ENGINE, ROOT, by_name, docker_engine_answers, machine, run

RESULTS_DIR = ROOT / "bench" / "results"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__.split("\n\n")[0].split(": ", 1)[0]
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run: few rounds, seconds")
    parser.add_argument("--only", help="comma-separated benchmark names (see --list)")
    parser.add_argument("--list", action="store_true", help="print the benchmarks and exit")
    parser.add_argument(
        "--skip-docker", action="store_true", help="skip what needs Docker, even if an engine runs"
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        default=ROOT,
        help="the checkout dispatch_ab compares against (default: this one, an A/A run)",
    )
    parser.add_argument(
        "--results-dir", type=Path, default=RESULTS_DIR, help="where the run's JSON goes"
    )
    args = parser.parse_args(argv)
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in by_name()]
        if unknown:
            parser.error(f"--only: no benchmark {', '.join(unknown)}; see --list")
        args.selected = [by_name()[n] for n in names]
    else:
        args.selected = list(BENCHMARKS)
    return args


def print_list() -> None:
    for b in BENCHMARKS:
        docker = "  (needs Docker)" if b.needs_docker else ""
        print(f"{b.name:12} bench/{b.script.name:22} {b.about}{docker}")
        print(f"{'':12} quick: {' '.join(b.quick)}")
        print(f"{'':12} full:  {' '.join(b.full)}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        print_list()
        return 0
    started = datetime.now(UTC)
    env = dict(os.environ)
    engine = False
    if args.skip_docker:
        env["DOCKER_HOST"] = NO_ENGINE
    elif any(b.needs_docker for b in args.selected):
        engine = docker_engine_answers()
    doc = {
        "started": started.isoformat(timespec="seconds"),
        "command": " ".join(["python -m bench", *(argv if argv is not None else sys.argv[1:])]),
        "mode": "quick" if args.quick else "full",
        "machine": machine(),
        "benchmarks": {},
    }
    for bench in args.selected:
        if bench.needs_docker and not engine:
            why = "--skip-docker" if args.skip_docker else "no Docker engine answered a ping"
            doc["benchmarks"][bench.name] = {"status": "skipped", "reason": why}
            print(f"\n== {bench.name}: skipped ({why})", flush=True)
            continue
        print(f"\n== {bench.name}: {bench.about}", flush=True)
        record = run(bench, args.quick, args.baseline, env)
        print(f"== {bench.name}: {record['status']} in {record['seconds']} s", flush=True)
        doc["benchmarks"][bench.name] = record
    doc["seconds"] = round((datetime.now(UTC) - started).total_seconds(), 1)

    args.results_dir.mkdir(parents=True, exist_ok=True)
    out = args.results_dir / f"{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"\n{'benchmark':12} {'status':8} {'secs':>7}  note")
    for name, record in doc["benchmarks"].items():
        secs = f"{record['seconds']:.1f}" if "seconds" in record else "-"
        print(f"{name:12} {record['status']:8} {secs:>7}  {record.get('reason', '')}")
    print(f"total {doc['seconds']:.1f} s; JSON: {out}")
    failed = [n for n, r in doc["benchmarks"].items() if r["status"] == "failed"]
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
