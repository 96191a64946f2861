"""``placement topology show``: summarise a topology preset or YAML file."""

from __future__ import annotations

import argparse

from ._common import Formatter, Subparsers, echo, examples

__all__ = ["register", "run"]


def register(subparsers: Subparsers) -> argparse.ArgumentParser:
    """Add ``placement topology show`` to the CLI's subparsers."""
    pg = subparsers.add_parser("topology", help="topology tools (show)", formatter_class=Formatter,
                               epilog=examples("placement topology show fat-tree:4x8"))
    gsub = pg.add_subparsers(dest="topology_command", metavar="SUBCOMMAND")
    gsub.required = True
    p = gsub.add_parser("show", help="summarise a topology (GPUs, servers, tiers, diameter)",
                        formatter_class=Formatter,
                        epilog=examples("placement topology show dgx-h100",
                                        "placement topology show examples/topologies/two-servers.yaml"))
    p.add_argument("topology", help="preset spec or YAML file")
    p.add_argument("--json", action="store_true", help="print JSON")
    return pg


def run(args: argparse.Namespace) -> int:
    """Print the topology's summary as aligned lines, or as JSON with ``--json``."""
    import json

    from ..api import as_topology

    info = as_topology(args.topology).summary()
    if args.json:
        echo(json.dumps(info, indent=2, default=str))
    else:
        width = max(len(k) for k in info)
        for key, value in info.items():
            echo(f"{key:<{width}}  {value}")
    return 0
