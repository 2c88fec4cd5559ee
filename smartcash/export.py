"""``python -m smartcash.export``: export a checkpoint's eval-mode detector to ONNX, check the file,
and compare onnxruntime with PyTorch on a random batch; ``export(**flags)`` for Python
(``from smartcash import export``; this module is callable as it).

The ONNX graph takes ``images`` (B, 3, S, S) float32 RGB in [0, 1] (letterboxed, as
``smartcash.inference.Predictor.preprocess`` makes them) and returns ``output`` (B, N, 5 + nc):
[cx, cy, w, h] in input pixels, objectness and class probabilities (the eval-mode decoded output;
NMS is left to the caller). The batch axis is dynamic unless ``--no-dynamic``. Class names and the
17 -> 8 map travel in the model's metadata.

onnx and onnxruntime are optional (the ``dev`` extra) and imported only here, when needed.
The file is written once, atomically, after the checks; it never replaces the checkpoint it was
made from, nor any other checkpoint. Exit codes (``smartcash.cli``): 0 done, 1 the export or its
check failed or --weights is no SmartCash checkpoint, 2 bad flags, a missing --weights (or onnx
missing), 130 Ctrl-C.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

DEFAULT_OPSET = 17
#: The neck's nearest upsampling has no ONNX form before opset 9 (torch fails after dumping the
#: whole graph); 9 and 10 export it as Upsample, which onnxruntime runs to the same outputs here.
MIN_MODEL_OPSET = 9
INPUT_NAME, OUTPUT_NAME = "images", "output"
INSTALL_HINT = "pip install onnx onnxruntime"


class ExportError(RuntimeError):
    """The export cannot run (missing package, bad argument) or its result is wrong."""


def require_onnx() -> Any:
    """The ``onnx`` module, or an ExportError saying how to install it."""
    try:
        import onnx
    except ImportError as error:
        raise ExportError(f"ONNX export needs the onnx package ({error}); install it with `{INSTALL_HINT}`") from error
    return onnx


def _decoded_only(model: Any) -> Any:
    """A module whose forward returns only the eval-mode decoded tensor (B, N, 5 + nc)."""
    import torch

    class DecodedOutput(torch.nn.Module):
        def __init__(self, detector: torch.nn.Module) -> None:
            super().__init__()
            self.detector = detector

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return self.detector(images)[0]

    # eval() on the wrapper too: torch.onnx.export restores the wrapper's mode on every submodule
    # afterwards, and a wrapper left in train mode would switch the detector back to training.
    return DecodedOutput(model).eval()


def export_onnx(model: Any, path: str | os.PathLike[str], imgsz: int, opset: int = DEFAULT_OPSET,
                dynamic: bool = True, metadata: dict[str, str] | None = None) -> Path:
    """Write ``model`` (a Detector) as ONNX at ``path`` and run ``onnx.checker`` on the result.

    Args:
        model: the detector; exported in eval mode on the CPU.
        path: the .onnx file to write (folders created).
        imgsz: input square side, a multiple of 32.
        opset: ONNX opset version.
        dynamic: a symbolic batch axis on input and output; else batch 1.
        metadata: strings stored as the model's metadata_props.

    Raises:
        ExportError: onnx missing, or the checker rejects the file.
    """
    onnx = require_onnx()
    import torch

    from smartcash.atomic import atomic_open

    path = Path(path)
    wrapper = _decoded_only(model.cpu().eval())
    sample = torch.zeros(1, 3, imgsz, imgsz)
    axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic else None
    buffer = io.BytesIO()  # the file is written once, atomically, after every check passed
    with warnings.catch_warnings(), torch.no_grad():
        # The legacy TorchScript exporter (dynamo=False) needs torch alone and handles the dynamic
        # batch axis reliably; the dynamo exporter (torch's default since 2.9) needs onnxscript,
        # which is not a dependency of this project. Its deprecation notice, and the tracer's
        # warnings about the Python-level input-size check in Detector.forward, are expected.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        try:
            torch.onnx.export(wrapper, (sample,), buffer, dynamo=False, opset_version=opset,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamic_axes=axes,
                              do_constant_folding=True)
        except (RuntimeError, ValueError, TypeError) as error:  # torch.onnx's errors derive from these
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ExportError(f"torch.onnx.export failed at opset {opset}: {first_line}") from error
    proto = onnx.load_from_string(buffer.getvalue())
    for key, value in (metadata or {}).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as error:
        raise ExportError(f"{path}: onnx.checker rejected the exported model ({error})") from error
    with atomic_open(path, "wb") as handle:
        handle.write(proto.SerializeToString())
    return path


def compare_with_onnxruntime(model: Any, path: str | os.PathLike[str], imgsz: int, batch_size: int,
                             seed: int = 0) -> float | None:
    """Max abs difference between onnxruntime and PyTorch on a random (batch_size, 3, S, S) input;
    None (with a log line) when onnxruntime is not installed."""
    try:
        import onnxruntime
    except ImportError:
        logger.warning("onnxruntime is not installed: skipping the comparison with PyTorch (%s)", INSTALL_HINT)
        return None
    import torch

    images = torch.rand(batch_size, 3, imgsz, imgsz, generator=torch.Generator().manual_seed(seed))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (onnx_output,) = session.run([OUTPUT_NAME], {INPUT_NAME: images.numpy()})
    with torch.no_grad():
        torch_output = _decoded_only(model.cpu().eval())(images).numpy()
    if onnx_output.shape != torch_output.shape:
        raise ExportError(f"{path}: onnxruntime output {onnx_output.shape} != PyTorch {torch_output.shape}")
    return float(abs(onnx_output - torch_output).max())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m smartcash.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", required=True, help="checkpoint (.pt) written by smartcash.train")
    parser.add_argument("--format", default="onnx", choices=("onnx",), help="export format")
    parser.add_argument("--imgsz", type=int, help="input size (default: the checkpoint's, else imgsz_cpu "
                        "of configs/default.yaml)")
    parser.add_argument("--output", help="output file (default: the weights path with .onnx)")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    parser.add_argument("--dynamic", action=argparse.BooleanOptionalAction, default=True,
                        help="dynamic batch axis (default on)")
    return parser


def supported_opsets() -> range:
    """The opsets torch's TorchScript exporter (the one used here) can write."""
    from torch.onnx import _constants

    highest = getattr(_constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", _constants.ONNX_MAX_OPSET)
    return range(_constants.ONNX_MIN_OPSET, highest + 1)


def _check_arguments(args: argparse.Namespace) -> Path:
    """The checked flags; returns the output path (default: the weights path with .onnx)."""
    from smartcash.cli import UsageError, image_size, input_file, output_file

    input_file("--weights", args.weights)
    image_size("--imgsz", args.imgsz)
    opsets = supported_opsets()
    if args.opset not in opsets:
        raise UsageError(f"--opset {args.opset}: this torch exports opsets {opsets.start}..{opsets.stop - 1}")
    if args.opset < MIN_MODEL_OPSET:
        raise UsageError(f"--opset {args.opset}: the model's nearest upsampling needs opset {MIN_MODEL_OPSET} or "
                         f"newer (this torch exports up to {opsets.stop - 1}; default {DEFAULT_OPSET})")
    output = Path(args.output) if args.output else Path(args.weights).with_suffix(".onnx")
    return output_file("--output", output, inputs=[args.weights], suffixes=(".onnx",))


@dataclass(frozen=True)
class ExportResult:
    """What ``run_export`` wrote and measured."""

    path: Path  # the .onnx file
    imgsz: int
    dynamic: bool
    batch_size: int  # of the onnxruntime comparison
    max_difference: float | None  # onnxruntime vs PyTorch, max abs; None without onnxruntime


def prepare_export(args: argparse.Namespace) -> tuple[Path, Any, Any, dict[str, Any]]:
    """Check the flags and onnx, load the checkpoint: (output path, model, taxonomy, checkpoint).

    Raises:
        UsageError, ExportError (onnx missing): the CLI's exit 2; CheckpointError: its exit 1.
    """
    os.environ.setdefault("YOLO_OFFLINE", "1")
    from smartcash.inference import load_model

    output = _check_arguments(args)
    require_onnx()  # fail before the slow part, with the install hint
    model, taxonomy, checkpoint = load_model(args.weights)
    return output, model, taxonomy, checkpoint


def run_export(args: argparse.Namespace, output: Path, model: Any, taxonomy: Any,
               checkpoint: dict[str, Any]) -> ExportResult:
    """Export, check with onnx, compare with onnxruntime; the file is written once, atomically.

    Raises:
        ExportError: the export or its check failed. OSError: the file could not be written.
    """
    from smartcash.data.dataset import stride_aligned
    from smartcash.inference import checkpoint_imgsz

    imgsz = stride_aligned(checkpoint_imgsz(checkpoint, args.imgsz))
    metadata = {"names": json.dumps(list(taxonomy.names)), "main_names": json.dumps(list(taxonomy.main_names)),
                "fine_to_main": json.dumps(list(taxonomy.fine_to_main)), "imgsz": str(imgsz),
                "stride": json.dumps([int(s) for s in model.stride.tolist()]),
                "output": "(batch, N, 5 + nc): cx, cy, w, h (input pixels), objectness, class probabilities"}
    path = export_onnx(model, output, imgsz, args.opset, args.dynamic, metadata)
    batch_size = 2 if args.dynamic else 1  # a batch other than the traced 1 shows the axis is dynamic
    difference = compare_with_onnxruntime(model, path, imgsz, batch_size)
    return ExportResult(path, imgsz, args.dynamic, batch_size, difference)


def export(**flags: Any) -> Path:
    """Export from Python: ``export(weights="best.pt")`` -> the ONNX file's path.

    Keywords are the flags of ``python -m smartcash.export`` without their dashes (``output``,
    ``opset``, ``dynamic=False`` ...), with the same defaults. Needs onnx (and onnxruntime for the
    comparison with PyTorch).

    Raises:
        TypeError: an unknown keyword. ValueError (UsageError): bad flags. ExportError: onnx missing,
        or the export or its check failed. CheckpointError: unreadable weights. OSError: a failed write.
    """
    from smartcash.cli import parse_keywords

    args = parse_keywords(build_parser(), flags, "export")
    return run_export(args, *prepare_export(args)).path


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    os.environ.setdefault("YOLO_OFFLINE", "1")
    from smartcash.cli import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, UsageError, print_error
    from smartcash.model.training.checkpoint import CheckpointError

    try:
        prepared = prepare_export(args)
    except (ExportError, UsageError) as error:
        print_error(error)
        return EXIT_USAGE
    except CheckpointError as error:  # --weights exists (checked first) but is no SmartCash checkpoint
        print_error(error)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("interrupted: nothing exported", file=sys.stderr)
        return EXIT_INTERRUPTED
    output = prepared[0]
    try:
        result = run_export(args, *prepared)
    except ExportError as error:
        print_error(error)
        return EXIT_FAILED
    except OSError as error:  # the output could not be written (full disk ...): nothing half-written
        print_error(f"{error} (nothing exported)")
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(f"interrupted: {output} not written (or left as it was)", file=sys.stderr)
        return EXIT_INTERRUPTED
    size_mb = result.path.stat().st_size / 1e6
    imgsz = result.imgsz
    print(f"exported {result.path} ({size_mb:.1f} MB, opset {args.opset}, input {'batch' if args.dynamic else 1}x3x"
          f"{imgsz}x{imgsz}, {'dynamic' if args.dynamic else 'static'} batch)")
    if result.max_difference is not None:
        print(f"onnxruntime vs PyTorch on a random batch of {result.batch_size}: max abs diff "
              f"{result.max_difference:.3g}")
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
else:
    from smartcash.cli import callable_module

    callable_module(__name__, export)
