"""`msm stats`: per-node health and counters, once or refreshed (`--watch`) with rates.

Exit 0 when every node answered, 1 when any is down.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from pymsm.admin.stats import NodeStats, collect_config, rates

from ._common import (
    OK,
    PROBLEMS,
    add_settings_args,
    human_bytes,
    human_seconds,
    load_config,
    percent,
    pipe_safe,
    print_json,
    table,
)

HEADERS = ["NODE", "ADDRESS", "STATE", "VERSION", "UPTIME", "CONNS", "ITEMS", "USED/LIMIT"]
HEADERS += ["HIT%", "EVICTIONS", "GETS", "SETS"]


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "stats", help="per-node state and counters", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--json", action="store_true", help="JSON (one document per sample)")
    parser.add_argument(
        "--watch",
        nargs="?",
        type=float,
        const=2.0,
        metavar="SECONDS",
        help="refresh every SECONDS (default 2) with per-second rates",
    )
    parser.add_argument("--count", type=int, metavar="N", help="with --watch: stop after N samples")
    add_settings_args(parser)
    parser.set_defaults(func=run)


@pipe_safe
def run(args: argparse.Namespace) -> int:
    config = load_config(args)
    samples = 1 if args.watch is None else (args.count or -1)
    previous: list[NodeStats] | None = None
    taken = 0
    while True:
        current = collect_config(config, args.timeout, time.time)
        per_second = (
            [rates(b, a) for b, a in zip(previous, current, strict=True)] if previous else None
        )
        show(current, per_second, args.json, clear=args.watch is not None)
        taken += 1
        if taken == samples:
            break
        previous = current
        time.sleep(args.watch)
    return OK if all(s.up for s in current) else PROBLEMS


def show(
    current: list[NodeStats], per_second: list[dict[str, float]] | None, as_json: bool, clear: bool
) -> None:
    if as_json:
        docs = [
            s.to_dict() | {"rates": r}
            for s, r in zip(current, per_second or [{}] * len(current), strict=True)
        ]
        print_json({"time": time.time(), "nodes": docs}, compact=clear)
        return
    if clear and sys.stdout.isatty():  # a live view; in a pipe, samples follow each other
        sys.stdout.write("\x1b[H\x1b[2J")
    headers = HEADERS + (["GET/S", "SET/S", "HIT%/NOW"] if per_second is not None else [])
    rows = []
    for i, s in enumerate(current):
        row = _row(s)
        if per_second is not None:
            rate = per_second[i]
            lookups = rate.get("get_hits", 0) + rate.get("get_misses", 0)
            row += [
                _rate(rate.get("cmd_get")),
                _rate(rate.get("cmd_set")),
                percent(rate["get_hits"] / lookups if lookups else None),
            ]
        rows.append(row)
    table(headers, rows)
    for s in current:
        if not s.up:
            print(f"{s.node} is down: {s.error}")
    sys.stdout.flush()


def _row(s: NodeStats) -> list[Any]:
    if not s.up:
        return [s.node, s.address, "down", *["-"] * (len(HEADERS) - 3)]
    limit = s.get("limit_maxbytes")
    # Redis without maxmemory has no limit (memcached always has one)
    used = f"{human_bytes(s.get('bytes'))}/{human_bytes(limit) if limit else 'none'}"
    return [
        s.node,
        s.address,
        "up",
        s.version,
        human_seconds(s.get("uptime")),
        s.get("curr_connections"),
        s.get("curr_items"),
        used,
        percent(s.hit_ratio),
        s.get("evictions"),
        s.get("cmd_get"),
        s.get("cmd_set"),
    ]


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"
