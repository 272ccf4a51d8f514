"""`msm memcached`: run the embedded memcached-compatible server, with memcached's own flags."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from typing import Any

from pymsm.cli._common import port_number
from pymsm.server import MemcachedServer, Settings
from pymsm.server.server import EVENT_LOOPS, new_event_loop
from pymsm.server.settings import MB, parse_size


def _positive(name: str) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} wants a number, got {text!r}") from None
        if value < 0:
            raise argparse.ArgumentTypeError(f"{name} must not be negative, got {value}")
        return value

    return parse


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"-I: {exc}") from None


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "memcached",
        help="run the embedded memcached-compatible server",
        description="Embedded memcached-compatible server (text + meta protocol). "
        "Takes memcached's own flags; -t, -U and -u are accepted for compatibility.",
    )
    add = parser.add_argument
    add("-p", "--port", type=port_number, default=11211, help="TCP port (default 11211)")
    add("-l", "--listen", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    add("-m", "--memory-limit", type=_positive("-m"), default=64, help="item memory in MB")
    add("-M", "--disable-evictions", action="store_true", help="error instead of evicting")
    add("-c", "--conn-limit", type=_positive("-c"), default=1024, help="max connections")
    add("-I", "--max-item-size", type=_size, default=MB, help="item size limit (default 1m)")
    add("-t", "--threads", type=_positive("-t"), default=4, help="accepted; one event loop")
    add("-U", "--udp-port", type=port_number, default=0, help="accepted; UDP is not served")
    add("-u", "--user", default="", help="accepted; the user is never changed")
    add("--event-loop", choices=EVENT_LOOPS, default="auto",
        help="auto (default): uvloop when installed, else asyncio")  # fmt: skip
    add("-v", "--verbose", action="count", default=0, help="-v errors, -vv client commands")
    parser.set_defaults(func=run)


def settings_from(args: argparse.Namespace) -> Settings:
    return Settings(
        port=args.port,
        listen=args.listen,
        memory_limit=args.memory_limit * MB,
        no_evict=args.disable_evictions,
        max_connections=args.conn_limit,
        item_size_max=args.max_item_size,
        threads=args.threads,
        udp_port=args.udp_port,
        user=args.user,
        verbosity=args.verbose,
        event_loop=args.event_loop,
    )


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    level = logging.WARNING if settings.verbosity == 0 else logging.INFO
    logging.getLogger("pymsm.server").setLevel(level)
    try:
        loop = new_event_loop(settings.event_loop)
    except ValueError as exc:
        logging.getLogger("pymsm.server").error("--event-loop: %s", exc)
        return 2
    try:
        with asyncio.Runner(loop_factory=lambda: loop) as runner:
            runner.run(_serve(settings))
    except OSError as exc:
        logging.getLogger("pymsm.server").error("cannot listen on %s:%d: %s",
                                                settings.listen, settings.port, exc)  # fmt: skip
        return 1
    return 0


async def _serve(settings: Settings) -> None:
    server = MemcachedServer(settings)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # not on Windows
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await server.stop()
