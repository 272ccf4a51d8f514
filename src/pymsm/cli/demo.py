"""`msm demo`: run a local cluster (store nodes, app nodes, a balancer) until Ctrl-C, and
`msm demo ctl status|kill|start` to watch and break it from another terminal."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any

from pymsm.cli._common import port_number
from pymsm.demo.config import BACKENDS, BALANCERS, MODES, DemoConfig
from pymsm.demo.processes import DemoError
from pymsm.exceptions import ConfigError


def add_parser(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "demo",
        help="run a local cluster: memcached nodes, app nodes, a load balancer",
        description="Start memcached (or Redis) nodes, app nodes serving the demo page with "
        "pymsm, and a load balancer on 127.0.0.1:PORT; Ctrl-C stops everything. "
        "`msm demo ctl` kills and restarts nodes of a running demo.",
    )
    add = parser.add_argument
    add("--port", type=port_number, default=8080, help="balancer port (default 8080)")
    add("--memcached", type=int, default=2, metavar="N", help="memcached nodes (default 2)")
    add("--apps", type=int, default=2, metavar="M", help="app nodes (default 2)")
    add("--mode", default="non-sticky", choices=MODES, help="session mode (default non-sticky)")
    add(
        "--balancer",
        choices=BALANCERS,
        help="strategy of the embedded balancer, or nginx (default: route when sticky, "
        "else round_robin)",
    )
    add("--locking", default="optimistic", help="locking_mode of the app nodes")
    add("--failover-nodes", default="", metavar="IDS", help="failover_nodes, e.g. n2")
    add("--backend", default="memcached", choices=BACKENDS, help="session store")
    add(
        "--embedded-memcached",
        action="store_true",
        help="pymsm's server even if memcached is installed",
    )
    add("--threads", type=int, default=4, help="threads per app node (default 4)")
    parser.set_defaults(func=run)
    sub = parser.add_subparsers(dest="demo_command", metavar="ctl")
    ctl = sub.add_parser("ctl", help="status, kill or start nodes of a running demo")
    ctl.add_argument("--port", type=port_number, default=8080, help="the demo's balancer port")
    ctl.add_argument("action", choices=("status", "kill", "start"))
    ctl.add_argument("kind", nargs="?", help="memcached (or redis) or app")
    ctl.add_argument("name", nargs="?", help="e.g. n2 or app1")
    ctl.set_defaults(func=run_ctl)


def config_from_args(args: argparse.Namespace) -> DemoConfig:
    return DemoConfig(
        memcached=args.memcached,
        apps=args.apps,
        mode=args.mode,
        balancer=args.balancer,
        locking=args.locking,
        failover_nodes=args.failover_nodes,
        port=args.port,
        backend=args.backend,
        embedded_memcached=args.embedded_memcached,
        app_threads=args.threads,
    )


def run(args: argparse.Namespace) -> int:
    from pymsm.demo.supervisor import Demo

    try:
        demo = Demo(config_from_args(args))
    except ConfigError as exc:
        print(f"msm demo: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        print("msm demo: starting ...", flush=True)
        demo.start()
    except DemoError as exc:
        signal.signal(signal.SIGTERM, previous)
        print(f"msm demo: {exc}", file=sys.stderr)
        return 1
    print(topology(demo.state()), flush=True)
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        # a second Ctrl-C or SIGTERM must not cut the clean-up short and orphan the children
        interrupt = signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("msm demo: stopping ...", flush=True)
        demo.stop()
        signal.signal(signal.SIGINT, interrupt)
        signal.signal(signal.SIGTERM, previous)
    print("msm demo: stopped", flush=True)
    return 0


def run_ctl(args: argparse.Namespace) -> int:
    from pymsm.demo import control

    try:
        url = control.find(args.port)
        if args.action == "status":
            print(topology(control.call(url)))
            return 0
        if not (args.kind and args.name):
            print(f"msm demo ctl: {args.action} needs a node, e.g. `{args.action} memcached n1` "
                  f"or `{args.action} app app1`", file=sys.stderr)  # fmt: skip
            return 2
        answer = control.call(url, "POST", f"/{args.action}/{args.kind}/{args.name}")
    except DemoError as exc:
        print(f"msm demo ctl: {exc}", file=sys.stderr)
        return 1
    print(answer.get("message", answer))
    return 0 if answer.get("ok") else 1


def topology(state: dict[str, Any]) -> str:
    """The cluster as text: where to point the browser, what runs where, how to break it."""
    lb = state["balancer"]
    kind = "nginx" if lb["kind"] == "nginx" else "pymsm balancer"
    lines = [
        "",
        f"  open  {state['url']}/   ({kind}, {lb['strategy']}; {state['mode']} sessions, "
        f"locking {state['locking']})",
    ]
    if lb.get("status"):
        lines.append(f"        {lb['status']}   (balancer status)")
    lines.append("")
    for app in state["apps"]:
        lines.append(_node_line(f"app {app['name']}", app))
    store = "redis" if state["backend"] == "redis" else "memcached"
    for node in state["memcached"]:
        lines.append(_node_line(f"{store} {node['name']}", node))
    port = state["url"].rsplit(":", 1)[1]
    flag = "" if port == "8080" else f" --port {port}"
    first = state["memcached"][0]["name"]
    lines += [
        "",
        f"  logs  {state['logs']}",
        f"  try   msm demo ctl{flag} kill memcached {first}    (or the kill buttons on the page)",
        f"        msm demo ctl{flag} start memcached {first}",
        "  Ctrl-C stops everything.",
    ]
    return "\n".join(lines)


def _node_line(label: str, node: dict[str, Any]) -> str:
    state = f"up, pid {node['pid']} ({node['program']})" if node["up"] else node["status"]
    url = f"http://{node['address']}/" if node["kind"] == "app" else node["address"]
    return f"  {label:<14} {url:<28} {state}"
