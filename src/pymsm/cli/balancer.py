"""`msm balancer`: run the embedded HTTP load balancer in front of app nodes."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from pymsm.balancer import (
    STRATEGIES,
    BalancerConfig,
    HealthCheck,
    Limits,
    Timeouts,
    parse_address,
    parse_backends,
)
from pymsm.exceptions import ConfigError


def add_backend_options(parser: argparse.ArgumentParser, default_listen: str) -> None:
    """Options shared with `msm nginx-config`: same topology, same flags."""
    parser.add_argument(
        "--listen",
        default=default_listen,
        metavar="HOST:PORT",
        help=f"address to listen on (default {default_listen})",
    )
    parser.add_argument(
        "--backend",
        action="append",
        default=[],
        metavar="NAME=HOST:PORT",
        help="an app node; repeat for each (NAME is its route, e.g. app1=127.0.0.1:9001)",
    )
    parser.add_argument(
        "--route-cookie", default="MSMROUTE", help="sticky_cookie's cookie (default MSMROUTE)"
    )
    parser.add_argument(
        "--session-cookie",
        default="MSMSESSIONID",
        help="session cookie whose id carries the route (default MSMSESSIONID)",
    )


def add_parser(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "balancer",
        help="run the embedded HTTP load balancer",
        description="Embedded HTTP/1.1 load balancer (asyncio + h11) for the demo and tests.",
    )
    add_backend_options(parser, "127.0.0.1:8080")
    parser.add_argument("--strategy", default="round_robin", help=", ".join(STRATEGIES))
    parser.add_argument("--health-path", help="enable active checks: GET this path, e.g. /healthz")
    parser.add_argument("--health-interval", type=float, default=2.0, metavar="SECONDS")
    parser.add_argument("--health-timeout", type=float, default=1.0, metavar="SECONDS")
    parser.add_argument(
        "--fail-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="skip a backend this long after a failed connection (default 10)",
    )
    parser.add_argument(
        "--status-path", help="serve state as JSON here, and POST <path>/<backend>/down|up"
    )
    parser.add_argument("--connect-timeout", type=float, default=5.0, metavar="SECONDS")
    parser.add_argument("--read-timeout", type=float, default=60.0, metavar="SECONDS")
    parser.add_argument("--idle-timeout", type=float, default=75.0, metavar="SECONDS")
    parser.add_argument("--client-timeout", type=float, default=60.0, metavar="SECONDS")
    parser.add_argument("--max-header-size", type=int, default=16 * 1024, metavar="BYTES")
    parser.add_argument("--max-body-size", type=int, default=1024 * 1024, metavar="BYTES")
    parser.add_argument("--max-connections", type=int, default=1024)
    parser.add_argument("--pool-size", type=int, default=32, help="idle connections per backend")
    parser.add_argument("--name", default="pymsm-balancer", help="value of the X-Proxy header")
    parser.add_argument("--no-access-log", action="store_true", help="no log line per request")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes sharing the port with SO_REUSEPORT (health shared, counters summed)",
    )
    parser.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> BalancerConfig:
    """Raises ConfigError naming the flag and the fix."""
    if not args.backend:
        raise ConfigError("no backend: add --backend NAME=HOST:PORT (repeat for each app node)")
    if args.strategy not in STRATEGIES:
        raise ConfigError(f"--strategy {args.strategy!r} is unknown: use one of {STRATEGIES}")
    if args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    for flag in ("health_interval", "health_timeout", "connect_timeout", "read_timeout"):
        if getattr(args, flag) <= 0:
            raise ConfigError(f"--{flag.replace('_', '-')} must be > 0 seconds")
    host, port = parse_address(args.listen, "--listen address")
    return BalancerConfig(
        backends=parse_backends(args.backend),
        host=host,
        port=port,
        strategy=args.strategy,
        route_cookie=args.route_cookie,
        session_cookie=args.session_cookie,
        name=args.name,
        status_path=args.status_path,
        access_log=not args.no_access_log,
        workers=args.workers,
        timeouts=Timeouts(
            args.connect_timeout, args.read_timeout, args.idle_timeout, args.client_timeout
        ),
        limits=Limits(
            args.max_header_size, args.max_body_size, args.max_connections, args.pool_size
        ),
        health=HealthCheck(
            args.health_path, args.health_interval, args.health_timeout, args.fail_timeout
        ),
    )


def run(args: argparse.Namespace) -> int:
    from pymsm.balancer import run as serve

    try:
        config = config_from_args(args)
    except ConfigError as exc:
        print(f"msm balancer: {exc}", file=sys.stderr)
        return 2
    try:
        serve(config)
    except OSError as exc:
        print(f"msm balancer: cannot listen on {args.listen}: {exc.strerror}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0
