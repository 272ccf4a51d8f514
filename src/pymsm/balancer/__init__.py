"""Embedded HTTP/1.1 load balancer for the demo cluster and tests (asyncio + h11).

    from pymsm.balancer import BalancerConfig, BalancerThread, parse_backends

    config = BalancerConfig(parse_backends(["app1=127.0.0.1:9001", "app2=127.0.0.1:9002"]),
                            port=0, strategy="route", health=HealthCheck(path="/healthz"))
    with BalancerThread(config) as lb:
        print(lb.url, lb.state())

See docs/balancer.md for strategies, the health model, limits and the nginx config generator.
"""

import importlib.util

if importlib.util.find_spec("h11") is None:  # fail here with the install hint, not deep inside
    raise ImportError("the balancer needs h11: pip install 'pymsm[balancer]'")

from pymsm.balancer.config import (
    STRATEGIES,
    BackendSpec,
    BalancerConfig,
    HealthCheck,
    Limits,
    Timeouts,
    parse_address,
    parse_backend,
    parse_backends,
)
from pymsm.balancer.runner import BalancerThread, command, run
from pymsm.balancer.server import Balancer
from pymsm.balancer.strategies import session_route

__all__ = [
    "STRATEGIES",
    "BackendSpec",
    "Balancer",
    "BalancerConfig",
    "BalancerThread",
    "HealthCheck",
    "Limits",
    "Timeouts",
    "command",
    "parse_address",
    "parse_backend",
    "parse_backends",
    "run",
    "session_route",
]
