"""``python -m smartcash.registry list|best --metric M``: query the registry of finished runs."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from smartcash.cli import EXIT_FAILED, EXIT_USAGE, print_error
from smartcash.model.training.registry import ModelRegistry, RegistryError

SHOWN_METRICS = ("metrics/mAP50", "metrics/mAP50-95", "fitness")
DEFAULT_REGISTRY = "runs/registry.json"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m smartcash.registry",
                                     description="Query the registry of finished training runs.")
    parser.add_argument("--registry", help=f"registry file (default {DEFAULT_REGISTRY}; absent there: no runs yet)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="every run, oldest first")
    best = commands.add_parser("best", help="the run with the best value of a metric")
    best.add_argument("--metric", default="fitness",
                      help="metric name, e.g. mAP50-95, metrics/mAP50, fitness (default)")
    best.add_argument("--phase", type=int, choices=(1, 2), help="only runs of this phase")
    best.add_argument("--json", action="store_true", help="print the entry as JSON")
    show = commands.add_parser("show", help="one run by id (NAME/phaseN)")
    show.add_argument("id")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.registry is None:
        args.registry = DEFAULT_REGISTRY  # absent: no run has finished yet
    elif not Path(args.registry).exists():  # named by the user: absent is a mistyped path
        print_error(f"--registry {args.registry}: no such file (training writes PROJECT/registry.json, "
                    f"default {DEFAULT_REGISTRY})")
        return EXIT_USAGE
    registry = ModelRegistry(args.registry)
    try:
        if args.command == "list":
            entries = registry.entries()
            if not entries:
                print(f"{args.registry}: no runs yet")
                return 0
            print(f"{'id':<24} {'phase':>5} {'model':<16} " + " ".join(f"{m:>18}" for m in SHOWN_METRICS)
                  + "  weights")
            for entry in entries:
                values = " ".join(f"{_value(entry.metrics.get(m)):>18}" for m in SHOWN_METRICS)
                print(f"{entry.id:<24} {entry.phase:>5} {entry.model:<16} {values}  {entry.weights}")
            return 0
        if args.command == "show":
            print(json.dumps(asdict(registry.get(args.id)), indent=2))
            return 0
        entry = registry.best(args.metric, phase=args.phase)
        if entry is None:
            return _no_best(registry, args)
        if args.json:
            print(json.dumps(asdict(entry), indent=2))
        else:
            value = entry.metrics.get(args.metric, entry.metrics.get(f"metrics/{args.metric}"))
            print(f"{entry.id}  {args.metric}={_value(value)}  {entry.weights}")
        return 0
    except RegistryError as error:
        print_error(error)
        return EXIT_USAGE
    except OSError as error:  # a folder or an unreadable file where the registry should be
        print_error(f"{error} (--registry must name a registry file)")
        return EXIT_USAGE


def _no_best(registry: ModelRegistry, args: argparse.Namespace) -> int:
    """Why ``best`` found nothing: no runs or none of the phase (1), or a metric no run has (2)."""
    entries = registry.entries()
    if not entries:
        print(f"{args.registry}: no runs yet", file=sys.stderr)
        return EXIT_FAILED
    names = sorted({name for entry in entries for name in entry.metrics})
    if args.metric not in names and f"metrics/{args.metric}" not in names:
        print_error(f"--metric {args.metric}: no run in {args.registry} has it; "
                    f"the runs have {', '.join(names) or 'no metrics'}")
        return EXIT_USAGE
    where = f"phase {args.phase} " if args.phase is not None else ""
    print(f"{args.registry}: no {where}run has a finite value of metric {args.metric!r}", file=sys.stderr)
    return EXIT_FAILED


def _value(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "-"


if __name__ == "__main__":
    raise SystemExit(main())
