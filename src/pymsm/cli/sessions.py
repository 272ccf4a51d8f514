"""`msm sessions list|show|delete|count`: the sessions the cache nodes hold.

`list` and `count` scan every node's keys (lru_crawler metadump; stats cachedump on old servers;
SCAN on Redis) one key at a time, so memory stays flat however many sessions there are; output
is streamed.
Exit 0 on success, 1 when a node could not be read or (show/delete) the session was not found.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import sys
from collections import Counter
from collections.abc import Generator, Iterator
from typing import Any

from pymsm.admin import sessions as admin
from pymsm.admin.scan import KINDS, KeyInfo, ScanInfo, scan_node
from pymsm.admin.stats import redis_admin
from pymsm.config import Config
from pymsm.core.ids import SessionId
from pymsm.exceptions import StoreError

from ._common import (
    OK,
    PROBLEMS,
    Progress,
    add_settings_args,
    human_bytes,
    human_seconds,
    load_config,
    pipe_safe,
    print_json,
    table,
    warn,
)

SESSION_KINDS = KINDS[:-1]  # everything but `other`


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("sessions", help="list, show, delete and count sessions")
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    listing = sub.add_parser("list", help="the keys of sessions held by each node")
    _scan_args(listing)
    listing.add_argument("--prefix", default="", help="only session ids starting with this")
    listing.add_argument(
        "--kind", action="append", choices=KINDS, help="only these key kinds (repeatable)"
    )
    listing.add_argument("--all", action="store_true", help="also keys that are not pymsm's")
    listing.add_argument("--limit", type=int, metavar="N", help="stop after N keys")
    listing.set_defaults(func=run_list)

    count = sub.add_parser("count", help="how many keys of each kind each node holds")
    _scan_args(count)
    count.set_defaults(func=run_count)

    show = sub.add_parser("show", help="one session: decoded record, validity, copies")
    show.add_argument("id", help="the session id (the cookie value)")
    show.add_argument("--reveal", action="store_true", help="print attribute values too")
    show.add_argument("--json", action="store_true", help="JSON output")
    add_settings_args(show)
    show.set_defaults(func=run_show)

    delete = sub.add_parser("delete", help="delete every key of a session on every node")
    delete.add_argument("id", help="the session id (the cookie value)")
    add_settings_args(delete)
    delete.set_defaults(func=run_delete)


def _scan_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--node", action="append", metavar="ID", help="only this node (repeatable)")
    parser.add_argument("--json", action="store_true", help="JSON output")
    parser.add_argument(
        "--progress", action="store_true", help="progress bar on stderr (default: on a TTY)"
    )
    add_settings_args(parser)


def scan(
    config: Config,
    args: argparse.Namespace,
    failed: dict[str, str],
    scanned: list[str] | None = None,
) -> Iterator[KeyInfo]:
    """Every key of the selected nodes; nodes that fail are recorded in `failed` and skipped,
    and every node scanned is appended to `scanned`. For a Redis URL the nodes are its servers
    (redis_admin.py: the one, or each primary)."""
    progress = Progress(Progress.wanted(args.progress))
    for name, info, keys in _node_scans(config, args, failed):
        if scanned is not None:
            scanned.append(name)
        try:
            for i, key in enumerate(keys):
                if i == 0:
                    progress.start(f"{name} ({info.method})", info.estimated)
                progress.advance()
                yield key
        except StoreError as exc:
            failed[name] = str(exc)
        finally:
            keys.close()
        progress.done()
        if info.partial:
            warn(
                f"{name}: stats cachedump shows only part of the {info.estimated} keys: "
                "this listing is partial (enable the LRU crawler for metadump)"
            )


def _node_scans(
    config: Config, args: argparse.Namespace, failed: dict[str, str]
) -> Iterator[tuple[str, ScanInfo, Generator[KeyInfo, None, None]]]:
    """(node, its ScanInfo, its keys) for each node `--node` selects."""
    wanted = set(args.node or ())
    seen: set[str] = set()
    if config.nodes.redis is not None:
        try:
            for name, info, keys in redis_admin().scan_servers(
                config.nodes.redis, config.key_prefix, args.timeout
            ):
                seen.add(name)
                if not wanted or name in wanted:
                    yield name, info, keys
        except StoreError as exc:
            failed["default"] = str(exc)
            return
    else:
        for node in config.nodes:
            seen.add(node.name)
            if not wanted or node.name in wanted:
                info = ScanInfo()
                yield node.name, info, scan_node(node, config.key_prefix, args.timeout, info)
    failed.update((n, "not a node of memcached_nodes") for n in sorted(wanted - seen))


def _report(failed: dict[str, str]) -> int:
    for node, error in failed.items():
        warn(f"{node}: {error}")
    return PROBLEMS if failed else OK


@pipe_safe
def run_list(args: argparse.Namespace) -> int:
    config = load_config(args)
    kinds = set(args.kind or (KINDS if args.all else SESSION_KINDS))
    failed: dict[str, str] = {}
    keys: Iterator[KeyInfo] = (
        k
        for k in scan(config, args, failed)
        if k.kind in kinds and (k.session_id or "").startswith(args.prefix)
    )
    if args.limit is not None:
        keys = itertools.islice(keys, args.limit)
    (_stream_json if args.json else _stream_table)(keys)
    return _report(failed)


_ROW = "{:<8} {:<15} {:<44} {:>9} {:>8} {:>8}"


def _stream_table(keys: Iterator[KeyInfo]) -> None:
    """Fixed-width rows written as they come (no buffering of the whole listing)."""
    print(_ROW.format("NODE", "KIND", "SESSION", "SIZE", "TTL", "IDLE").rstrip())
    counts: Counter[str] = Counter()
    for k in keys:
        counts[k.kind] += 1
        ttl = "never" if k.ttl is None else human_seconds(k.ttl)
        name = k.session_id or k.key
        print(_ROW.format(k.node, k.kind, name, human_bytes(k.size), ttl, human_seconds(k.idle)))
    summary = ", ".join(f"{counts[kind]} {kind}" for kind in KINDS if counts[kind])
    print(f"{sum(counts.values())} keys" + (f": {summary}" if summary else ""))


def _stream_json(keys: Iterator[KeyInfo]) -> None:
    """A JSON array written element by element."""
    out = sys.stdout
    out.write("[")
    for i, k in enumerate(keys):
        item = {
            "node": k.node,
            "kind": k.kind,
            "session_id": k.session_id,
            "key": k.key,
            "size": k.size,
            "ttl": k.ttl,
            "idle": k.idle,
        }
        out.write(("," if i else "") + "\n  " + json.dumps(item))
    out.write("\n]\n")


@pipe_safe
def run_count(args: argparse.Namespace) -> int:
    config = load_config(args)
    failed: dict[str, str] = {}
    found: dict[str, Counter[str]] = {}
    scanned: list[str] = []
    for key in scan(config, args, failed, scanned):
        found.setdefault(key.node, Counter())[key.kind] += 1
    counts = {n: found.get(n, Counter()) for n in scanned if n in found or n not in failed}
    total = Counter[str]()
    for c in counts.values():
        total.update(c)
    if args.json:
        doc: dict[str, Any] = {"sessions": total["primary"], "backups": total["backup"]}
        doc["nodes"] = {n: {k: c[k] for k in KINDS} for n, c in counts.items()}
        doc["unreachable"] = failed
        print_json(doc)
    else:
        rows = [[n, *(c[k] for k in KINDS)] for n, c in counts.items()]
        rows.append(["total", *(total[k] for k in KINDS)])
        table(["NODE", *(k.upper() for k in KINDS)], rows)
        print(f"{total['primary']} sessions, {total['backup']} backups")
    return _report(failed)


@pipe_safe
def run_show(args: argparse.Namespace) -> int:
    config = load_config(args)
    report = admin.show(config, SessionId.parse(args.id), args.timeout)
    problems = _problems(config, report)
    if args.json:
        doc = {
            "session_id": report.session_id,
            "found": report.found,
            "primary_node": report.primary_node,
            "expected_backup_node": report.expected_backup,
            "agree": report.agree,
            "locked_on": report.locked_on,
            "copies": [c.to_dict(args.reveal) for c in report.copies],
            "unreachable": report.unreachable,
            "problems": problems,
        }
        print_json(doc)
    else:
        _print_report(report, args.reveal)
        for problem in problems:
            print(f"problem: {problem}")
    return PROBLEMS if problems else OK


def _problems(config: Config, report: admin.Report) -> list[str]:
    problems = [f"{n} unreachable: {e}" for n, e in report.unreachable.items()]
    if not report.found:
        return [*problems, f"session {report.session_id} is on no node"]
    roles = {c.role for c in report.copies if c.raw is not None}
    if "primary" not in roles:
        problems.append(f"no primary copy on {report.primary_node} (only a backup)")
    if "backup" not in roles and report.expected_backup and not config.sticky:
        problems.append(f"no backup copy (expected on {report.expected_backup})")
    if report.agree is False:
        problems.append("primary and backup copies differ")
    problems += [f"{c.node} {c.role}: {c.error}" for c in report.copies if c.error]
    return problems


def _print_report(report: admin.Report, reveal: bool) -> None:
    found = {c.role: c for c in report.copies if c.raw is not None}
    where = {role: c.node for role, c in found.items()}
    print(f"session    {report.session_id}")
    print(f"primary    {where.get('primary', 'MISSING')} (its node: {report.primary_node})")
    if report.expected_backup or "backup" in where:
        expected = report.expected_backup or "none"
        print(f"backup     {where.get('backup', 'MISSING')} (expected on {expected})")
    else:
        print(f"backup     none ({report.no_backup})")
    print(f"agree      {({True: 'yes', False: 'NO', None: '-'})[report.agree]}")
    if report.locked_on:
        print(f"locked     on {', '.join(report.locked_on)}")
    main = found.get("primary") or found.get("backup")
    if main is None:
        return
    print(f"created    {_time(main.created)}")
    if main.validity is not None:
        print(f"accessed   {_time(main.validity.this_accessed)}")
        expires = main.validity.expires_at()
        print(f"expires    {'never' if expires is None else _time(expires)}")
    print(f"idle limit {human_seconds(main.max_inactive)}")
    for copy in sorted(report.copies, key=lambda c: c.role != "primary"):
        size = "-" if copy.raw is None else f"{len(copy.raw)} bytes"
        note = f"  ERROR {copy.error}" if copy.error else ""
        print(f"copy       {copy.role} on {copy.node}: {size}, written {_time(copy.written)}{note}")
    if main.attributes is not None:
        hint = "" if reveal else " (values redacted; --reveal shows them)"
        print(f"attributes {len(main.attributes)}{hint}")
        shown = main.attributes if reveal else admin.redact(main.attributes)
        for name, value in shown.items():
            print(f"  {name}: {value if not reveal else json.dumps(value, default=str)}")


def _time(ms: int | None) -> str:
    if ms is None:
        return "-"
    stamp = datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC)
    return stamp.strftime("%Y-%m-%d %H:%M:%S UTC")


@pipe_safe
def run_delete(args: argparse.Namespace) -> int:
    config = load_config(args)
    sid = SessionId.parse(args.id)
    deleted, unreachable = admin.delete(config, sid, args.timeout)
    for node, count in deleted.items():
        print(f"{node}: deleted {count} key{'s' if count != 1 else ''}")
    for node, error in unreachable.items():
        warn(f"{node}: {error} (its keys of {sid} are left)")
    if not sum(deleted.values()):
        warn(f"no key of session {sid} was found")
        return PROBLEMS
    return PROBLEMS if unreachable else OK
