"""The `msm` command: one sub-command per module, registered in COMMANDS.

Each sub-command module exposes `add_parser(subparsers)` which adds its parser and sets
`func=run` on it; `run(args) -> int` returns the exit code (0 ok, 1 problems found, 2 usage).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from pymsm import __version__
from pymsm.exceptions import SessionError

# sub-command modules, in the order `msm --help` lists them
COMMANDS: list[str] = [
    "stats",
    "sessions",
    "doctor",
    "config",
    "memcached",
    "balancer",
    "nginx-config",
    "demo",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="msm", description="pymsm operations tools")
    parser.add_argument("--version", action="version", version=f"pymsm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"pymsm.cli.{name.replace('-', '_')}")
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        code: int = args.func(args)
    except SessionError as exc:
        print(f"msm: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code
