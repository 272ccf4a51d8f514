"""`msm doctor`: is this cluster set up to keep sessions? Configuration, nodes, features, clocks,
memory, item size and backups (sampled). Exit 0 when no problem was found, 1 otherwise
(warnings alone do not fail)."""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict
from typing import Any

from pymsm.admin import doctor
from pymsm.admin.stats import collect, collect_config
from pymsm.exceptions import StoreError

from ._common import OK, PROBLEMS, add_settings_args, pipe_safe, print_json, sources

LABELS = {"ok": "ok", "warning": "WARNING", "problem": "PROBLEM"}


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "doctor", help="check configuration, nodes and backups", description=__doc__
    )
    parser.add_argument("--json", action="store_true", help="JSON output")
    parser.add_argument(
        "--sample",
        type=int,
        default=200,
        metavar="N",
        help="sessions per node checked for a backup (default 200)",
    )
    add_settings_args(parser)
    parser.set_defaults(func=run)


@pipe_safe
def run(args: argparse.Namespace) -> int:
    findings = diagnose(args)
    if args.json:
        print_json({"findings": [asdict(f) for f in findings]})
    else:
        for f in findings:
            print(f"{LABELS[f.level]:<8} {f.check:<22} {f.message}")
        problems = sum(f.level == "problem" for f in findings)
        warnings = sum(f.level == "warning" for f in findings)
        print(f"\n{problems} problem(s), {warnings} warning(s)")
    return PROBLEMS if any(f.level == "problem" for f in findings) else OK


def diagnose(args: argparse.Namespace) -> list[doctor.Finding]:
    settings = {k: v for k, (v, src) in sources(args).items() if src != "default"}
    config, findings = doctor.check_settings(settings)
    if config is None:
        return findings
    if config.nodes.redis is not None:  # Redis keeps the copies: its own checks
        stats = collect_config(config, args.timeout, time.time)
        findings += doctor.check_redis(stats, config.nodes.redis.kind)
        return findings + doctor.check_memory(stats)
    stats = collect(config.nodes, args.timeout, time.time)
    down = [s.node for s in stats if not s.up]
    feats = {}
    for node in config.nodes:
        if node.name not in down:
            try:
                feats[node.name] = doctor.features(node, args.timeout)
            except StoreError as exc:
                findings.append(doctor.Finding("problem", node.name, f"feature probe: {exc}"))
    findings += doctor.check_nodes(stats, feats)
    findings += doctor.check_clocks(stats)
    findings += doctor.check_memory(stats)
    samples = []
    for node in config.nodes:
        if node.name in down:
            continue
        try:
            samples.append(doctor.sample_node(node, config.key_prefix, args.timeout, args.sample))
        except StoreError as exc:
            findings.append(doctor.Finding("problem", node.name, f"cannot list keys: {exc}"))
    findings += doctor.check_item_size(samples, stats, config.item_size_limit)
    findings += doctor.check_backups(config, samples, args.timeout, down)
    return findings
