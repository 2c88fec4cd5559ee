"""COCO bbox evaluation from the command line, a numpy-only stand-in for pycocotools' COCOeval.

    python -m smartcash.coco_eval GT.json DT.json [--json OUT] [--per-class]

Prints the 12 summary lines exactly as ``COCOeval.summarize()`` does, then (``--per-class``) one
row per category; ``--json`` writes the numbers to a file. ``evaluate_coco`` is importable from
here too: ``from smartcash.coco_eval import evaluate_coco``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from smartcash.atomic import atomic_write_text
from smartcash.cli import EXIT_FAILED, EXIT_USAGE, UsageError, output_file, print_error
from smartcash.model.training.core.coco_evaluation import STAT_NAMES, CocoEvaluation, evaluate_coco

__all__ = ["STAT_NAMES", "CocoEvaluation", "evaluate_coco", "main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m smartcash.coco_eval", description=__doc__.splitlines()[0])
    parser.add_argument("ground_truth", type=Path, help="COCO dataset JSON (images, annotations, categories)")
    parser.add_argument("detections", type=Path, help="COCO results JSON: [{image_id, category_id, bbox, score}]")
    parser.add_argument("--json", type=Path, default=None, help="also write stats, summary and per-class numbers here")
    parser.add_argument("--per-class", action="store_true", help="print a table of the 12 numbers per category")
    parser.add_argument("--max-detections", type=int, nargs=3, default=(1, 10, 100), metavar="N",
                        help="COCOeval maxDets (default 1 10 100)")
    parser.add_argument("--pool-categories", action="store_true",
                        help="ignore categories when matching (COCOeval params.useCats = 0)")
    args = parser.parse_args(argv)
    if args.json is not None:
        try:  # before the evaluation: never onto an input, a dataset file or the run registry
            args.json = output_file("--json", args.json, inputs=[args.ground_truth, args.detections],
                                    suffixes=(".json",))
        except UsageError as error:
            print_error(error)
            return EXIT_USAGE
    try:
        result = evaluate_coco(args.ground_truth, args.detections, max_detections=tuple(args.max_detections),
                               use_categories=not args.pool_categories)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print("\n".join(result.summary_lines()))
    if args.per_class:
        print()
        print(result.per_category_table())
    if args.json is not None:
        try:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(args.json, json.dumps(result.to_dict(), indent=2) + "\n")
        except OSError as error:
            print(f"error: {args.json}: cannot write the results ({error.strerror or error})", file=sys.stderr)
            return EXIT_FAILED
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
