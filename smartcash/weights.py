"""``python -m smartcash.weights inspect FILE`` and ``python -m smartcash.weights convert FILE OUT``.

inspect: what a weights file holds (format, tensors) and which of our model's tensors it would
fill for ``--model``, what is skipped and why. convert: the file's tensors as a plain state dict
(float32, loadable with ``torch.load(weights_only=True)``). Neither runs code from the file.

Exit codes (as every SmartCash command): 0 done; 1 FILE exists but is unreadable or refused (not a
weights file, or a pickle that would run code); 2 bad usage (FILE missing; OUT is FILE, a folder, or an
existing checkpoint, which is never overwritten; a bad flag).
"""

from __future__ import annotations

import argparse
import io
import logging
import os
from collections import Counter
from pathlib import Path

import torch

logger = logging.getLogger("smartcash.weights")

LISTED = 20  # lines of skipped tensors shown without --all


def build_parser() -> argparse.ArgumentParser:
    from smartcash.model.build import MODEL_NAMES

    parser = argparse.ArgumentParser(prog="python -m smartcash.weights", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    inspect = commands.add_parser("inspect", help="what FILE holds and what of it would load")
    inspect.add_argument("file", help="weights file (.pt, .pth, .safetensors)")
    inspect.add_argument("--model", default="yolov5n", choices=MODEL_NAMES, help="our model to load into")
    inspect.add_argument("--num-classes", type=int, default=None,
                         help="classes of our model (default: the taxonomy's, 17)")
    inspect.add_argument("--all", action="store_true", help="list every skipped and not-loaded name")
    convert = commands.add_parser("convert", help="write FILE's tensors as a plain state dict")
    convert.add_argument("file", metavar="FILE", help="weights file (.pt, .pth, .safetensors)")
    convert.add_argument("output", metavar="OUT", help="where to write the state dict (.pt; not an existing "
                         "checkpoint)")
    return parser


def _skipped_lines(skipped: tuple[str, ...], show_all: bool) -> list[str]:
    """"name: reason" entries, those sharing a reason on one line (85 tensors of an anchor-free head)."""
    groups: dict[str, list[str]] = {}
    for entry in skipped:
        name, _, reason = entry.partition(": ")
        groups.setdefault(reason, []).append(name)
    lines = []
    for reason, names in groups.items():
        if len(names) == 1:
            lines.append(f"  {names[0]}: {reason}")
        else:
            shown = names if show_all else names[:3]
            more = f", ... {len(names) - len(shown)} more" if len(shown) < len(names) else ""
            lines.append(f"  {len(names)} tensors, {reason}: {', '.join(shown)}{more}")
    if not show_all and len(lines) > LISTED:
        lines = [*lines[:LISTED], f"  ... {len(lines) - LISTED} more lines (--all lists them)"]
    return [f"skipped {len(skipped)}:", *lines] if skipped else []


def _missing_line(missing: tuple[str, ...], show_all: bool) -> list[str]:
    """Our tensors that get nothing, counted per module (``detect.convs 6``), or all with --all."""
    if not missing:
        return []
    if show_all:
        return [f"not loaded (ours) {len(missing)}:", *(f"  {name}" for name in missing)]
    modules = Counter(".".join(name.split(".")[:2]) for name in missing)
    return [f"not loaded (ours) {len(missing)}: {', '.join(f'{module} {count}' for module, count in modules.items())}"]


def inspect_file(path: Path, model_name: str, num_classes: int, show_all: bool = False) -> str:
    """The inspect report as text (raises FileNotFoundError / WeightsError like ``read_weights``)."""
    from smartcash.model.build import build_model
    from smartcash.model.weight_files import read_weights
    from smartcash.model.weights import plan_load

    weights = read_weights(path)
    model = build_model(model_name, num_classes)
    _, report = plan_load(model, weights)
    source = f" (weights from {weights.key!r})" if weights.key else ""
    lines = [f"file: {path} ({path.stat().st_size / 1e6:.1f} MB)",
             f"format: {weights.format}{source}; read without running code from it"]
    if weights.keys:
        lines.append(f"checkpoint keys: {', '.join(weights.keys)}")
    if weights.pickled_globals:
        lines.append(f"classes named by the pickle ({len(weights.pickled_globals)}, none imported): "
                     f"{', '.join(weights.pickled_globals)}")
    lines.append(f"tensors: {len(weights.tensors)} ({', '.join(weights.dtypes)}; floating point read as float32)")
    parts = Counter(name.split(".")[0] for name in report.loaded)
    total = report.loaded_count + len(report.missing)
    lines.append(f"into {model_name} ({num_classes} classes): {report.loaded_count} of our {total} tensors "
                 f"would load ({', '.join(f'{part} {count}' for part, count in parts.items()) or 'none'})")
    lines += _skipped_lines(report.skipped, show_all)
    lines += _missing_line(report.missing, show_all)
    lines += [f"note: {note}" for note in report.notes]
    return "\n".join(lines)


def convert_file(path: Path, output: Path) -> int:
    """Write ``path``'s tensors to ``output`` as a plain state dict, atomically; returns the tensor count.

    Raises:
        UsageError: ``output`` is ``path``, a folder, an existing checkpoint (another run's best.pt,
            an earlier conversion) or not writable; nothing is written.
        FileNotFoundError, WeightsError: as ``read_weights``.
    """
    from smartcash.atomic import atomic_write_bytes
    from smartcash.cli import output_file
    from smartcash.model.weight_files import read_weights

    output_file("OUT", output, inputs=[path], suffixes=(".pt", ".pth"))
    weights = read_weights(path)
    buffer = io.BytesIO()
    torch.save(weights.tensors, buffer)
    atomic_write_bytes(output, buffer.getvalue())
    return len(weights.tensors)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    os.environ.setdefault("YOLO_OFFLINE", "1")
    from smartcash.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, UsageError, print_error
    from smartcash.model.weight_files import WeightsError

    path = Path(args.file)
    try:
        if args.command == "inspect":
            num_classes = args.num_classes
            if num_classes is None:
                from smartcash.taxonomy import load_taxonomy

                num_classes = load_taxonomy().num_classes
            if num_classes < 1:
                raise UsageError(f"--num-classes {num_classes}: must be >= 1")
            print(inspect_file(path, args.model, num_classes, args.all))
        else:
            count = convert_file(path, Path(args.output))
            print(f"wrote {args.output}: {count} tensors (float32), loadable with torch.load(weights_only=True)")
    except WeightsError as error:  # FILE is there but is no weights file, or is refused
        print_error(error)
        return EXIT_FAILED
    except (OSError, UsageError) as error:  # OSError: FILE missing or unreadable, OUT not writable
        print_error(error)
        return EXIT_USAGE
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
