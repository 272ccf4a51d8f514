"""`msm nginx-config`: write an nginx configuration for the same topology and strategy as
`msm balancer` (a standalone nginx.conf, or with --snippet only the upstream and server part)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pymsm.balancer import parse_address, parse_backends
from pymsm.balancer.nginx import full_config, snippet
from pymsm.cli.balancer import add_backend_options
from pymsm.exceptions import ConfigError

NGINX_STRATEGIES = ("round_robin", "least_conn", "ip_hash", "sticky_cookie", "route")


def add_parser(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "nginx-config",
        help="write an nginx config for the same backends and strategy",
        description="Write an nginx configuration equivalent to `msm balancer` with the same "
        "flags. Run it with: nginx -p PREFIX_DIR -c FILE",
    )
    add_backend_options(parser, "127.0.0.1:8080")
    parser.add_argument("--strategy", default="round_robin", help=", ".join(NGINX_STRATEGIES))
    parser.add_argument("-o", "--output", help="write to this file (default: standard output)")
    parser.add_argument(
        "--snippet", action="store_true", help="only upstreams, maps and server (for http {})"
    )
    parser.add_argument("--workers", default="auto", help="worker_processes (default auto)")
    parser.add_argument("--no-access-log", action="store_true", help="access_log off")
    parser.add_argument("--connect-timeout", type=float, default=5.0, metavar="SECONDS")
    parser.add_argument("--read-timeout", type=float, default=60.0, metavar="SECONDS")
    parser.add_argument("--max-body-size", type=int, default=1024 * 1024, metavar="BYTES")
    parser.add_argument("--keepalive", type=int, default=32, help="idle connections per upstream")
    parser.set_defaults(func=run)


def render(args: argparse.Namespace) -> str:
    """Raises ConfigError naming the flag and the fix."""
    if not args.backend:
        raise ConfigError("no backend: add --backend NAME=HOST:PORT (repeat for each app node)")
    if args.strategy not in NGINX_STRATEGIES:
        raise ConfigError(
            f"--strategy {args.strategy!r} is unknown: use one of {', '.join(NGINX_STRATEGIES)}"
        )
    if not (args.workers == "auto" or args.workers.isdigit()):
        raise ConfigError(f"--workers {args.workers!r}: use a number or auto")
    host, port = parse_address(args.listen, "--listen address")
    listen = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    backends = parse_backends(args.backend)
    options = {
        "session_cookie": args.session_cookie,
        "connect_timeout": args.connect_timeout,
        "read_timeout": args.read_timeout,
        "max_body_size": args.max_body_size,
        "keepalive": args.keepalive,
    }
    if args.snippet:
        return snippet(backends, args.strategy, listen, **options)
    return full_config(
        backends,
        args.strategy,
        listen,
        workers=args.workers,
        access_log=not args.no_access_log,
        **options,
    )


def run(args: argparse.Namespace) -> int:
    try:
        text = render(args)
    except ConfigError as exc:
        print(f"msm nginx-config: {exc}", file=sys.stderr)
        return 2
    if args.output:
        Path(args.output).write_text(text)
        print(f"wrote {args.output}; run: nginx -p PREFIX_DIR -c {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0
