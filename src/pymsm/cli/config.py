"""`msm config check|show|import`: validate a settings file, show the effective settings and
where each came from, convert a Tomcat MSM context.xml.

Exit codes: check 0 valid, 1 problems found; show 0 (2 if the settings are invalid);
import 0 converted (warnings do not fail), 2 when the file is unreadable or has no MSM Manager.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from typing import Any

from pymsm.admin import doctor, tomcat
from pymsm.config import Config
from pymsm.exceptions import ConfigError

from ._common import (
    OK,
    PROBLEMS,
    add_settings_args,
    load_config,
    pipe_safe,
    print_json,
    read_file,
    sources,
    table,
    warn,
)

SECRET = ("secret_key",)
SECONDS = (
    "operation_timeout",
    "session_backup_timeout",
    "lock_wait_timeout",
    "lock_expiration",
    "node_dead_timeout",
)


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("config", help="check, show and import settings")
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    check = sub.add_parser("check", help="validate a TOML settings file")
    check.add_argument("file", help="TOML file ([pymsm] table)")
    check.add_argument("--json", action="store_true", help="JSON output")
    check.set_defaults(func=run_check)

    show = sub.add_parser("show", help="effective settings and their source")
    show.add_argument("--json", action="store_true", help="JSON output")
    add_settings_args(show)
    show.set_defaults(func=run_show)

    imp = sub.add_parser("import", help="convert a Tomcat context.xml MSM Manager to TOML")
    imp.add_argument("file", help="context.xml (or server.xml) with the MSM <Manager> element")
    imp.add_argument("-o", "--output", metavar="FILE", help="write the TOML here (default stdout)")
    imp.set_defaults(func=run_import)


@pipe_safe
def run_check(args: argparse.Namespace) -> int:
    try:
        settings = read_file(args.file)
    except ConfigError as exc:
        findings = [doctor.Finding("problem", "file", str(exc))]
    else:
        _, findings = doctor.check_settings(settings)
    if args.json:
        print_json({"file": args.file, "findings": [asdict(f) for f in findings]})
    else:
        for f in findings:
            print(f"{f.level:<8} {f.check:<22} {f.message}")
    return PROBLEMS if any(f.level == "problem" for f in findings) else OK


@pipe_safe
def run_show(args: argparse.Namespace) -> int:
    config = load_config(args)
    rows = []
    for name, (_, source) in sources(args).items():
        value = getattr(config, name)
        if name in SECRET and value is not None:
            value = "(set, hidden)"
        elif name == "memcached_nodes" and config.nodes.redis is not None:
            value = str(config.nodes.redis)  # a Redis URL without its password
        rows.append((name, value, source))
    if args.json:
        print_json({name: {"value": _plain(v), "source": s} for name, v, s in rows})
    else:
        table(["SETTING", "VALUE", "SOURCE"], [(n, _shown(n, v), s) for n, v, s in rows])
    return OK


def _plain(value: Any) -> Any:
    return value if value is None or isinstance(value, bool | int | float | str) else str(value)


def _shown(name: str, value: Any) -> str:
    if name in SECONDS:
        return f"{value:g}s"  # Config holds seconds, whatever unit the source used
    return repr(value) if isinstance(value, str) else str(value)


@pipe_safe
def run_import(args: argparse.Namespace) -> int:
    try:
        with open(args.file, "rb") as file:
            data = file.read()
    except OSError as exc:
        raise ConfigError(f"cannot read {args.file}: {exc.strerror}") from exc
    result = tomcat.parse(data, args.file)
    text = tomcat.to_toml(result, args.file)
    for message in result.warnings:
        warn(f"warning: {message}")
    for message in result.notes:
        warn(f"note: {message}")
    if args.output:
        with open(args.output, "w", encoding="utf-8") as out:
            out.write(text)
    else:
        sys.stdout.write(text)
    _check_imported(result.settings)
    return OK


def _check_imported(settings: dict[str, Any]) -> None:
    """Warn (not fail) when the imported values are not valid pymsm settings as they stand."""
    try:
        Config(**settings)
    except ConfigError as exc:
        warn(f"warning: the imported settings need an edit: {exc}")
