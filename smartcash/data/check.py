"""``python -m smartcash.data.check``: list every bad image/label of a dataset and summarise it.

Exit status 0 when the dataset is clean or only has warnings (a val split with no boxes), 1 when
anything is bad. One line per problem (``path[:line]: reason``), at most ``--max-report``, then a
summary per split, notes and warnings.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from smartcash.cli import EXIT_INTERRUPTED, EXIT_USAGE, UsageError, at_least, input_file, print_error
from smartcash.data.checks import DatasetReport, SplitReport, check_dataset
from smartcash.data.dataset_config import SPLITS


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m smartcash.data.check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None,
                        help="dataset yaml (default: the synthetic dataset, generated once)")
    parser.add_argument("--split", choices=SPLITS, action="append", default=None,
                        help="split to check, repeatable (default: every split the yaml names that exists)")
    parser.add_argument("--max-report", type=int, default=50, metavar="N",
                        help="list at most N problems (default 50)")
    parser.add_argument("--workers", type=int, default=None, help="threads for the image checks")
    return parser.parse_args(argv)


def _split_summary(report: SplitReport, names: tuple[str, ...]) -> list[str]:
    counts = report.boxes_per_class(len(names))
    per_class = ", ".join(f"{name}: {int(n)}" for name, n in zip(names, counts))
    lines = [f"{report.split}: {report.num_images} images, {report.num_labels} label files,"
             f" {report.num_backgrounds} backgrounds, {int(counts.sum())} boxes,"
             f" {report.num_skipped} images skipped",
             f"  boxes per class: {per_class}"]
    if report.problems:
        kinds = ", ".join(f"{kind}: {n}" for kind, n in report.problems_by_kind().items())
        lines.append(f"  problems by reason: {kinds}")
    return lines


def format_report(report: DatasetReport, max_report: int = 50) -> str:
    """The checker's text: problem lines (bounded), then the summary."""
    problems = report.problems
    lines = [str(p) for p in problems[:max(0, max_report)]]
    if len(problems) > max_report:
        lines.append(f"... and {len(problems) - max_report} more")
    lines.append(f"dataset: {report.data}")
    if report.config is not None:
        names = report.config.source_names
        kind = "SmartCash taxonomy" if report.config.taxonomy.is_smartcash else "its own names"
        lines.append(f"classes: {len(names)} ({kind})")
        for split in report.splits:
            lines.extend(_split_summary(split, names))
    lines.extend(f"note: {note}" for note in report.notes)
    lines.extend(f"warning: {warning}" for warning in report.warnings)
    if problems:
        lines.append(f"problems: {len(problems)}")
    elif report.warnings:  # usable (exit 0), but not clean
        count = len(report.warnings)
        lines.append(f"no problems found, {count} warning{'s' if count > 1 else ''}")
    else:
        lines.append("clean: no problems found")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        at_least("--workers", args.workers, 1)
        at_least("--max-report", args.max_report, 0)
    except UsageError as error:
        print_error(error)
        return EXIT_USAGE
    data = args.data
    try:
        if data is not None:  # a missing file is a usage error (2); a broken yaml is a problem (1)
            input_file("--data", data)
    except UsageError as error:
        print_error(error)
        return EXIT_USAGE
    try:
        if data is None:
            from smartcash.data.synthetic import ensure_synthetic_dataset  # lazy: generates on first use

            data = ensure_synthetic_dataset()
        report = check_dataset(data, tuple(args.split) if args.split else None, args.workers)
    except KeyboardInterrupt:
        print("interrupted: nothing checked", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(format_report(report, args.max_report))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
