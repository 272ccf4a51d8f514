"""What the `msm` operations commands share: where settings come from, tables, JSON, progress.

Settings sources, later wins (as config.py documents): defaults, the TOML file (`--config`),
environment variables (`MSM_*`), flags (`--nodes`). `sources(args)` says which one each effective
setting came from, for `msm config show`.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TextIO

from pymsm.config import Config, env_settings, read_settings_file
from pymsm.exceptions import ConfigError

OK, PROBLEMS, USAGE = 0, 1, 2


def add_settings_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("settings (as the apps read them)")
    group.add_argument(
        "--nodes",
        metavar="NODES",
        help="memcached_nodes, e.g. n1:10.0.0.1:11211,n2:10.0.0.2:11211 or redis://host:6379/0 "
        "(default: MSM_MEMCACHED_NODES, or the --config file)",
    )
    group.add_argument(
        "--config", metavar="FILE", help="TOML file with pymsm settings (a [pymsm] table)"
    )
    group.add_argument(
        "--timeout",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="bound on each node operation (default 2)",
    )


def port_number(text: str) -> int:
    """An argparse type for a TCP port: 0..65535 (0: any free port), as memcached checks."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"wants a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0..65535, got {value}")
    return value


def read_file(path: str) -> dict[str, Any]:
    """The settings of a TOML file (its [pymsm] table, or the top level), unchecked values."""
    return read_settings_file(path)


def sources(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> dict[str, tuple[Any, str]]:
    """Every init setting with (value, source): default, file, env or flag."""
    found: dict[str, tuple[Any, str]] = {
        f.name: (f.default, "default") for f in dataclasses.fields(Config) if f.init
    }
    if getattr(args, "config", None):
        found.update((k, (v, "file")) for k, v in read_file(args.config).items())
    found.update((k, (v, "env")) for k, v in env_settings(environ).items())
    if getattr(args, "nodes", None):
        found["memcached_nodes"] = (args.nodes, "flag")
    return found


def load_config(args: argparse.Namespace) -> Config:
    """The effective Config. Raises ConfigError naming the setting (main turns it into exit 2)."""
    settings = {k: v for k, (v, src) in sources(args).items() if src != "default"}
    if not settings.get("memcached_nodes"):
        raise ConfigError(
            "memcached_nodes is not set: pass --nodes n1:host:port,n2:host:port, set "
            "MSM_MEMCACHED_NODES, or give --config FILE"
        )
    return Config(**settings)


# -- output -----------------------------------------------------------------------------------


def print_json(data: Any, out: TextIO | None = None, compact: bool = False) -> None:
    text = json.dumps(data, separators=(",", ":")) if compact else json.dumps(data, indent=2)
    print(text, file=out or sys.stdout)


def pipe_safe(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """`msm ... | head` closes the pipe early: that ends the command quietly, not a traceback."""

    @functools.wraps(run)
    def wrapper(args: argparse.Namespace) -> int:
        try:
            return run(args)
        except BrokenPipeError:
            # stdout is gone; point it at devnull so the interpreter's final flush stays quiet
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return OK

    return wrapper


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], out: TextIO | None = None) -> None:
    """Aligned columns; numbers (and `-`) right-aligned."""
    text = [[_cell(c) for c in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in text)]) for i, h in enumerate(headers)]
    right = [all(_numeric(r[i]) for r in text) and bool(text) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        parts = [
            c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right, strict=True)
        ]
        return "  ".join(parts).rstrip()

    print(line(headers), file=out or sys.stdout)
    for row in text:
        print(line(row), file=out or sys.stdout)


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)


def _numeric(text: str) -> bool:
    return text == "-" or text.replace(".", "").replace("%", "").replace(",", "").isdigit()


def human_bytes(size: int | None) -> str:
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{value:.1f}GiB"  # pragma: no cover (loop returns)


def human_seconds(seconds: float | None) -> str:
    """`never`-free compact duration: 45s, 12m, 3h05m, 2d04h."""
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def percent(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio * 100:.1f}%"


def warn(message: str) -> None:
    print(f"msm: {message}", file=sys.stderr)


class Progress:
    """A progress bar on stderr for long scans; silent unless enabled (a TTY or --progress).

    The total is an estimate (the node's item count when the scan began): the bar never runs
    past 100%, and `done()` prints the final count."""

    WIDTH = 30

    def __init__(self, enabled: bool, out: TextIO | None = None) -> None:
        self.enabled = enabled
        self.out = out or sys.stderr
        self._label = ""
        self._total = 0
        self._count = 0
        self._drawn = 0.0

    @staticmethod
    def wanted(flag: bool) -> bool:
        return flag or sys.stderr.isatty()

    def start(self, label: str, total: int) -> None:
        self._label, self._total, self._count, self._drawn = label, total, 0, 0.0

    def advance(self) -> None:
        self._count += 1
        if self.enabled and time.monotonic() - self._drawn >= 0.1:
            self._draw("\r")

    def done(self) -> None:
        if self.enabled:
            self._total = self._count
            self._draw("\r")
            self.out.write("\n")
            self.out.flush()

    def _draw(self, lead: str) -> None:
        self._drawn = time.monotonic()
        total = max(self._total, self._count, 1)
        filled = self.WIDTH * self._count // total
        bar = "#" * filled + "." * (self.WIDTH - filled)
        self.out.write(
            f"{lead}{self._label} [{bar}] {100 * self._count // total:3d}% "
            f"{self._count:,}/{total:,} keys"
        )
        self.out.flush()
