"""What every ``python -m smartcash.X`` shares: its exit codes, the checks of flag values and
output paths made at the edge, before any work starts, and the Python API's keyword arguments
(the same flags, parsed by the same parser).

The contract: ``error: ...`` on stderr naming the input and the fix, never a traceback;
exit 0 done, 1 the run failed (bad data, unreadable file, failed write), 2 bad usage (a flag value,
a missing or wrong input file, an output that cannot be written), 130 interrupted by Ctrl-C,
143 stopped by SIGTERM (both after writing what was done). No output ever replaces an input.
"""

from __future__ import annotations

import argparse
import inspect
import os
import sys
import types
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

Result = TypeVar("Result")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C
EXIT_TERMINATED = 143  # 128 + SIGTERM

#: First bytes of a PyTorch checkpoint: a zip archive (torch >= 1.6) or a bare pickle (protocol 2+).
_CHECKPOINT_MAGIC = (b"PK\x03\x04", b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")


class UsageError(ValueError):
    """A flag value or path that cannot be used (exit 2)."""


def print_error(error: BaseException | str) -> None:
    """``error: MESSAGE`` on stderr."""
    print(f"error: {error}", file=sys.stderr)


#: The largest input size a command accepts: a 4096 px float batch of one is already ~200 MB; past
#: it a typo (--imgsz 64000) would exhaust memory instead of failing.
MAX_IMGSZ = 4096


def image_size(flag: str, value: int | None) -> None:
    """``value`` (None: not given) within [32, ``MAX_IMGSZ``]."""
    in_range(flag, value, 32, MAX_IMGSZ)


def at_least(flag: str, value: int | float | None, minimum: int | float) -> None:
    """``value >= minimum`` (None: the flag was not given)."""
    if value is not None and not value >= minimum:
        raise UsageError(f"{flag} {value}: must be >= {minimum}")


def in_range(flag: str, value: float | None, low: float, high: float, *, low_open: bool = False,
             high_open: bool = False) -> None:
    """``value`` within [low, high], each end open when asked (None: the flag was not given)."""
    if value is None:
        return
    above = value > low if low_open else value >= low
    below = value < high if high_open else value <= high
    if not (above and below):
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise UsageError(f"{flag} {value}: must be in {interval}")


def input_file(flag: str, path: str | os.PathLike[str]) -> Path:
    """An existing, readable file."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{flag} {path}: is a folder, not a file")
    if not path.is_file():
        raise UsageError(f"{flag} {path}: no such file")
    if not os.access(path, os.R_OK):
        raise UsageError(f"{flag} {path}: not readable (check its permissions)")
    return path


def looks_like_checkpoint(path: Path) -> bool:
    """True when ``path`` starts like a PyTorch checkpoint (zip archive or pickle)."""
    try:
        with open(path, "rb") as handle:
            return _starts_like_checkpoint(handle.read(4))
    except OSError:
        return False


def _starts_like_checkpoint(head: bytes) -> bool:
    return any(head.startswith(magic) for magic in _CHECKPOINT_MAGIC)


def checkpoint_file(flag: str, path: str | os.PathLike[str]) -> Path:
    """An existing, readable file that starts like a PyTorch checkpoint (what val and predict load).

    Raises:
        UsageError: no such file, a folder, or not readable (exit 2: a wrong input).
        CheckpointError: a file that is no checkpoint by its first bytes, such as a text file or a
            saved web page (exit 1: an unreadable checkpoint, as training reports its --weights).
    """
    path = input_file(flag, path)
    with open(path, "rb") as handle:
        head = handle.read(8)
    if _starts_like_checkpoint(head):
        return path
    from smartcash.model.training.checkpoint import CheckpointError

    what = "an empty file" if not head else f"its first bytes are {head!r}"
    raise CheckpointError(f"{flag} {path}: not a weights file ({what}; expected a checkpoint (.pt) written by "
                          "smartcash.train)")


#: The longest file name ext4, XFS, Btrfs, APFS and NTFS take (bytes, UTF-8 on Linux).
MAX_FOLDER_NAME_BYTES = 255
PLAIN_FOLDER_NAME_RULE = f"must be a plain folder name (no '/', at most {MAX_FOLDER_NAME_BYTES} bytes)"


def is_plain_folder_name(name: str) -> bool:
    """One path component (not '', '.' or '..') that file systems take: a run's folder under
    PROJECT stays inside it, and is made before any work starts, not after the model is built."""
    return (bool(name) and Path(name).name == name and name not in (".", "..")
            and len(os.fsencode(name)) <= MAX_FOLDER_NAME_BYTES)


def plain_folder_name(flag: str, name: str) -> str:
    """``name`` when it is a plain folder name (``is_plain_folder_name``).

    Raises:
        UsageError: it has a '/', is '', '.' or '..', or is too long for a file system.
    """
    if not is_plain_folder_name(name):
        shown = name if len(name) <= 60 else f"{name[:40]}...({len(name)} characters)"
        raise UsageError(f"{flag} {shown!r}: {PLAIN_FOLDER_NAME_RULE}")
    return name


def output_file(flag: str, path: str | os.PathLike[str], inputs: Iterable[str | os.PathLike[str]] = (),
                suffixes: Iterable[str] = ()) -> Path:
    """A file this command may (re)write: not a folder, not one of ``inputs``, not an existing
    checkpoint, registry or dataset file, named with one of ``suffixes`` (any name when none are
    given), in a folder that exists and is writable, or can be made.

    Raises:
        UsageError: any of these does not hold (exit 2); nothing has been written.
    """
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{flag} {path}: is a folder; give a file name")
    for source in inputs:
        if _same_file(path, Path(source)):
            raise UsageError(f"{flag} {path}: is the input {source}; choose another output file "
                             "(an output never replaces its input)")
    if path.is_file():
        kind = _protected_kind(path)
        if kind:
            raise UsageError(f"{flag} {path}: is {kind}; choose another output file ({kind} is never overwritten)")
    suffixes = tuple(suffixes)
    if suffixes and path.suffix.lower() not in suffixes:
        raise UsageError(f"{flag} {path}: must end in {' or '.join(suffixes)} (the file this command writes)")
    writable_folder(flag, path.parent)
    if path.exists() and not os.access(path, os.W_OK):
        raise UsageError(f"{flag} {path}: not writable (check its permissions)")
    return path


def _protected_kind(path: Path) -> str | None:
    """What the existing file ``path`` is when no output may replace it (None: it may be replaced)."""
    from smartcash.data.image_files import IMAGE_SUFFIXES

    if looks_like_checkpoint(path):
        return "a checkpoint"
    if path.suffix.lower() in {".yaml", ".yml", ".txt", *IMAGE_SUFFIXES}:  # a dataset yaml, labels, images
        return "a dataset file"
    if path.suffix.lower() == ".json" and _is_registry(path):
        return "a model registry"
    return None


def _is_registry(path: Path) -> bool:
    """True when ``path`` holds a SmartCash registry, ``{"version": ..., "runs": {...}}``."""
    import json

    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # unreadable or not JSON: not a registry
        return False
    return isinstance(payload, dict) and "version" in payload and isinstance(payload.get("runs"), dict)


def writable_folder(flag: str, folder: str | os.PathLike[str]) -> Path:
    """A folder that exists and is writable, or whose nearest existing parent is."""
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"{flag}: {existing} is a file, not a folder")
    if not (os.access(existing, os.W_OK) and bool(existing.stat().st_mode & 0o222)):
        # The mode bits too: root ignores permissions, and a read-only folder means "do not write".
        raise UsageError(f"{flag}: cannot write in {existing} (read-only; choose another place)")
    return folder


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def add_layout_arguments(parser: argparse.ArgumentParser, images_help: str) -> None:
    """The importers' shared flags: --images, --out, --split and how images are transferred
    (--copy, the default, --link or --symlink into ``mode``)."""
    parser.add_argument("--images", type=Path, required=True, help=images_help)
    parser.add_argument("--out", type=Path, required=True, help="new output folder")
    parser.add_argument("--split", default="train", help="split folder to write (default train)")
    how = parser.add_mutually_exclusive_group()
    how.add_argument("--copy", dest="mode", action="store_const", const="copy", help="copy images (default)")
    how.add_argument("--link", dest="mode", action="store_const", const="hardlink", help="hard-link images")
    how.add_argument("--symlink", dest="mode", action="store_const", const="symlink", help="symlink images")


def write_into_folder(job: Callable[[], Result], out: str | os.PathLike[str]) -> tuple[Result | None, int]:
    """Run ``job``, which writes a dataset under ``out`` (an importer, split), with the CLI contract:
    ``(its result, 0)``, or ``(None, exit code)`` after one line on stderr (2 bad input, 130 Ctrl-C,
    1 a failed write: the OSError names the file)."""
    from smartcash.data.errors import DatasetError

    try:
        return job(), EXIT_OK
    except DatasetError as error:
        print_error(error)
        return None, EXIT_USAGE
    except KeyboardInterrupt:
        print(f"interrupted: {out} is incomplete; delete it and run again", file=sys.stderr)
        return None, EXIT_INTERRUPTED
    except OSError as error:
        print_error(f"{error} ({out} is incomplete; delete it and run again)")
        return None, EXIT_FAILED


# ---------------------------------------------------------------------- the Python API's keywords
def keyword_of(option: str) -> str:
    """The API keyword of a long flag: ``--precise-bn`` -> ``precise_bn``."""
    return option.lstrip("-").replace("-", "_")


def _flag_actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """keyword -> the parser's action, for every long flag (``--no-x`` of an on/off flag excluded)."""
    actions: dict[str, argparse.Action] = {}
    for action in parser._actions:  # argparse has no public list of its actions
        if isinstance(action, argparse._HelpAction):
            continue
        for option in action.option_strings:
            negative = isinstance(action, argparse.BooleanOptionalAction) and option.startswith("--no-")
            if option.startswith("--") and not negative:
                actions[keyword_of(option)] = action
    return actions


def argv_from_keywords(parser: argparse.ArgumentParser, keywords: dict[str, Any], api: str) -> list[str]:
    """The command line that API ``keywords`` stand for: ``epochs=30`` -> ``--epochs 30``.

    A keyword is a long flag without its dashes, ``-`` read as ``_`` (``precise_bn`` for
    ``--precise-bn``). On/off flags take True/False (False on a plain switch is the default: left
    out); None leaves a flag out; paths and numbers become their text.

    Raises:
        TypeError: a keyword that is no flag of this command (the message lists the valid ones).
    """
    actions = _flag_actions(parser)
    unknown = sorted(set(keywords) - set(actions))
    if unknown:
        raise TypeError(f"{api}() got unexpected keyword argument(s) {', '.join(map(repr, unknown))}; "
                        f"valid keywords (the flags of `{parser.prog}`): {', '.join(sorted(actions))}")
    argv: list[str] = []
    for keyword, value in keywords.items():
        action = actions[keyword]
        option = next(option for option in action.option_strings if keyword_of(option) == keyword)
        if value is None:
            continue
        if action.nargs == 0:  # a switch: store_true / store_const / --x/--no-x
            if not isinstance(value, bool):
                raise TypeError(f"{api}(): {keyword} takes True or False, got {value!r}")
            if value:
                argv.append(option)
            elif isinstance(action, argparse.BooleanOptionalAction):
                argv.append(f"--no-{option[2:]}")
        elif isinstance(value, bool):  # save_dir=True would become a folder named "True"
            raise TypeError(f"{api}(): {keyword} takes a value, not {value!r}")
        elif isinstance(value, Mapping):  # loss_gains={"cls": 0.5} -> --loss-gains cls=0.5
            argv.append(f"{option}={','.join(f'{key}={item}' for key, item in value.items())}")
        elif isinstance(value, (list, tuple)):
            argv += [option, *(os.fspath(item) if isinstance(item, os.PathLike) else str(item) for item in value)]
        else:  # --flag=VALUE: a value starting with "-" (name="-x") is not read as another flag
            argv.append(f"{option}={os.fspath(value) if isinstance(value, os.PathLike) else value}")
    return argv


def parse_keywords(parser: argparse.ArgumentParser, keywords: dict[str, Any], api: str) -> argparse.Namespace:
    """Parse API ``keywords`` with the command's own parser, as its flags would be.

    Raises:
        TypeError: an unknown keyword; UsageError: a value the parser refuses (type, choice, missing).
    """
    argv = argv_from_keywords(parser, keywords, api)

    def refuse(message: str) -> None:  # argparse would print the usage and exit: an API raises
        raise UsageError(f"{api}(): {message} (keywords: {', '.join(f'{k}={v!r}' for k, v in keywords.items())})")

    parser.error = refuse  # type: ignore[method-assign]
    return parser.parse_args(argv)


class _CallableModule(types.ModuleType):
    """A command's module that can also be called: ``smartcash.train(phase=1)`` (see ``callable_module``)."""

    def __call__(self, *args: Any, **keywords: Any) -> Any:
        return self.__dict__["_api_function"](*args, **keywords)

    def __repr__(self) -> str:
        return (f"<module {self.__name__!r}, callable as {self.__name__}(**flags) "
                f"-> {self.__signature__.return_annotation}>")


def callable_module(module_name: str, function: Callable[..., Any]) -> None:
    """Make the module ``module_name`` callable as ``function``.

    ``from smartcash import train`` gives the API function the issue promises, but
    ``smartcash.train`` is also the module of ``python -m smartcash.train``, and Python binds a
    package's submodule to the package's attribute of that name whenever it is imported. A module
    that is also the function keeps both meanings whatever was imported first: ``train(phase=1)``
    and ``train.main([...])``.
    """
    module = sys.modules[module_name]
    module.__class__ = _CallableModule
    module._api_function = function  # type: ignore[attr-defined]
    module.__signature__ = inspect.signature(function)  # type: ignore[attr-defined]
