"""What `msm demo` starts: node counts, session mode, balancer, store backend. Validated here so
the CLI and tests get one clear error naming the option and the fix."""

from __future__ import annotations

from dataclasses import dataclass

from pymsm.balancer import STRATEGIES
from pymsm.exceptions import ConfigError

BALANCERS = (*STRATEGIES, "nginx")
MODES = ("non-sticky", "sticky")
BACKENDS = ("memcached", "redis")


@dataclass(frozen=True)
class DemoConfig:
    """The demo cluster. `port` 0 picks a free port for the balancer (tests); `balancer` None
    means `route` in sticky mode (sessions stay on the app that caches them) and `round_robin`
    otherwise (every request may land on another app: the point of non-sticky)."""

    memcached: int = 2
    apps: int = 2
    mode: str = "non-sticky"
    balancer: str | None = None
    locking: str = "optimistic"
    failover_nodes: str = ""
    port: int = 8080
    host: str = "127.0.0.1"
    backend: str = "memcached"
    memcached_binary: str | None = None  # None: `memcached` from PATH, else the embedded server
    embedded_memcached: bool = False  # force the embedded server even when memcached is installed
    app_threads: int = 4
    health_interval: float = 1.0
    fail_timeout: float = 3.0

    def __post_init__(self) -> None:
        if not 1 <= self.memcached <= 9:
            raise ConfigError(f"--memcached {self.memcached}: use 1 to 9 nodes")
        if not 1 <= self.apps <= 9:
            raise ConfigError(f"--apps {self.apps}: use 1 to 9 app nodes")
        if self.mode not in MODES:
            raise ConfigError(f"--mode {self.mode!r}: use one of {', '.join(MODES)}")
        if self.balancer is not None and self.balancer not in BALANCERS:
            raise ConfigError(f"--balancer {self.balancer!r}: use one of {', '.join(BALANCERS)}")
        if self.backend not in BACKENDS:
            raise ConfigError(f"--backend {self.backend!r}: use one of {', '.join(BACKENDS)}")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"--port {self.port}: use 1..65535 (0 picks a free port)")
        if self.backend == "redis" and self.failover_nodes:
            raise ConfigError("--failover-nodes applies to memcached nodes, not --backend redis")
        known = set(self.memcached_names)
        for node in filter(None, self.failover_nodes.replace(",", " ").split()):
            if node not in known:
                raise ConfigError(
                    f"--failover-nodes {self.failover_nodes!r}: {node!r} is not one of the "
                    f"memcached nodes {', '.join(sorted(known))}"
                )

    @property
    def sticky(self) -> bool:
        return self.mode == "sticky"

    @property
    def strategy(self) -> str:
        """The balancing strategy (for nginx, the one its generated config implements)."""
        if self.balancer is not None and self.balancer != "nginx":
            return self.balancer
        return "route" if self.sticky else "round_robin"

    @property
    def uses_nginx(self) -> bool:
        return self.balancer == "nginx"

    @property
    def routes(self) -> bool:
        """App nodes put their route in ids in sticky mode (needed for takeover) and when the
        balancer routes on it; otherwise an id would name the app that created it, which a
        round-robin cluster ignores anyway."""
        return self.sticky or self.strategy == "route"

    @property
    def memcached_names(self) -> list[str]:
        if self.backend == "redis":
            return ["redis"]
        return [f"n{i + 1}" for i in range(self.memcached)]

    @property
    def app_names(self) -> list[str]:
        return [f"app{i + 1}" for i in range(self.apps)]
