"""Reading tensors out of a pickled PyTorch checkpoint without running any of its code.

YOLOv5 and ultralytics release files (``yolov5s.pt``, ``yolov5nu.pt``) pickle the whole model
object, so ``torch.load(weights_only=True)`` refuses them, and ``weights_only=False`` would import
``models.yolo`` and run whatever the pickle asks for. Here the torch zip archive is read directly
and its ``data.pkl`` is unpickled by ``RestrictedUnpickler``, whose ``find_class`` imports nothing:

- tensor rebuild functions map to small local versions that view the archive's storages;
- a few plain data types map to the real ones (``OrderedDict``, ``set``, ``torch.Size``, dtypes);
- every other global becomes an inert placeholder class (``PickledObject`` subclass) that only
  records its name, its constructor arguments and the state the pickle gives it.

Nothing real is ever resolved, so nothing from the file can run. A pickle that *calls* a function
(``os.system``, ``builtins.exec``, ``subprocess.Popen``: the usual payloads) is refused with
``UnsafePickleError``, so a booby-trapped file is reported instead of half-loaded; calls of other
classes (``pathlib.PosixPath``, numpy scalars, namespaces) are recorded as placeholders.
``module_tensors`` then turns a placeholder ``nn.Module`` graph into a flat state dict.
"""

from __future__ import annotations

import _compat_pickle
import collections
import io
import pickle
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor

#: Module roots whose callables can run programs or code, reach files or sockets, or (torch) do
#: more than rebuild a tensor: calls into them are refused even where the name looks like a class
#: (``subprocess.Popen``). Calls of other class-like names only record a placeholder.
CODE_MODULES = frozenset({
    "builtins", "__builtin__", "os", "posix", "nt", "subprocess", "sys", "shutil", "socket", "importlib",
    "runpy", "pty", "ctypes", "code", "codeop", "marshal", "pickle", "_pickle", "types", "functools",
    "operator", "webbrowser", "multiprocessing", "asyncio", "pdb", "timeit", "io", "_io", "tempfile",
    "torch",
})
#: Lower-case globals (functions, by convention) whose calls only build plain data (numpy values
#: and dates in training checkpoints): recorded as placeholders like classes.
INERT_CALLS = frozenset({
    "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar", "numpy.core.multiarray._reconstruct",
    "numpy._core.multiarray._reconstruct", "numpy.dtype", "numpy.core.numeric._frombuffer",
    "numpy._core.numeric._frombuffer", "datetime.datetime", "datetime.date", "datetime.time",
    "datetime.timedelta", "datetime.timezone",
})
_STORAGE_DTYPES = {
    "DoubleStorage": torch.float64, "FloatStorage": torch.float32, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool, "UntypedStorage": torch.uint8,
}
#: torch's dtypes by name (vars(), not getattr: torch's module __getattr__ imports submodules).
_DTYPES = {name: value for name, value in vars(torch).items() if isinstance(value, torch.dtype)}
_MAX_MODULE_DEPTH = 64


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle asks for something that is code, not data; nothing of it was run."""


class _PickledGlobal(type):
    """Metaclass of the placeholders: calling one (pickle REDUCE/INST/OBJ) records, never runs."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        if not cls.call_allowed:
            raise UnsafePickleError(f"the pickle calls {cls.pickled_global}(...) while loading and it was "
                                    "not run (only tensor rebuilds and plain data types may be called)")
        return cls.__new__(cls, *args, **kwargs)

    def __repr__(cls) -> str:
        return f"<pickled global {cls.pickled_global}>"


class PickledObject(metaclass=_PickledGlobal):
    """An object of a class that was never imported: its global's name, arguments and state."""

    pickled_global: ClassVar[str] = ""
    call_allowed: ClassVar[bool] = False

    def __new__(cls, *args: Any, **kwargs: Any) -> PickledObject:
        instance = object.__new__(cls)
        instance.__dict__.update(arguments=args, keyword_arguments=kwargs, state=None)
        return instance

    def __setstate__(self, state: Any) -> None:
        self.__dict__["state"] = state

    def __repr__(self) -> str:
        return f"<{self.pickled_global} (not constructed)>"


def _call_allowed(module: str, name: str) -> bool:
    qualified = f"{module}.{name}"
    if qualified in INERT_CALLS:
        return True
    return module.split(".")[0] not in CODE_MODULES and name[:1].isupper()


@dataclass(frozen=True)
class _StorageType:
    dtype: torch.dtype


def _rebuild_tensor(storage: Tensor, storage_offset: int, size: tuple[int, ...], stride: tuple[int, ...],
                    requires_grad: bool = False, backward_hooks: Any = None, metadata: Any = None) -> Tensor:
    """torch._utils._rebuild_tensor_v2: a strided view of a storage (bounds checked by torch)."""
    if not isinstance(storage, Tensor):
        raise UnsafePickleError(f"a tensor is rebuilt from {type(storage).__name__}, not from a storage")
    return torch.as_strided(storage, tuple(size), tuple(stride), int(storage_offset))


def _rebuild_tensor_v3(storage: Tensor, storage_offset: int, size: tuple[int, ...], stride: tuple[int, ...],
                       requires_grad: bool, backward_hooks: Any, dtype: torch.dtype,
                       metadata: Any = None) -> Tensor:
    """torch._utils._rebuild_tensor_v3: the same, with the dtype given apart from the storage."""
    if not isinstance(dtype, torch.dtype):
        raise UnsafePickleError(f"a tensor is rebuilt with dtype {dtype!r}")
    return _rebuild_tensor(storage.view(torch.uint8).view(dtype), storage_offset, size, stride)


def _rebuild_parameter(data: Tensor, requires_grad: bool = False, backward_hooks: Any = None,
                       state: Any = None) -> Tensor:
    return data  # the weights are what we want, not the Parameter wrapper


_REBUILDERS: dict[tuple[str, str], Callable[..., Tensor]] = {
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
}


def _rebuild_from_type(function: Any, new_type: Any, arguments: tuple[Any, ...], state: Any) -> Tensor:
    """torch._tensor._rebuild_from_type_v2 (tensors with Python state): the plain tensor."""
    if function not in _REBUILDERS.values():
        raise UnsafePickleError(f"a tensor is rebuilt by {function!r}, which is not a tensor rebuild function")
    return function(*arguments)


def _encode(text: str, encoding: str = "latin1") -> bytes:
    """_codecs.encode, which protocol-2 pickles use for bytes; only the latin1 case."""
    if encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError(f"the pickle calls _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


def _reconstructor(cls: Any, base: Any, state: Any) -> Any:
    """copyreg._reconstructor (protocol 0/1 objects): only for placeholders on ``object``."""
    if not (isinstance(cls, _PickledGlobal) and base is object):
        raise UnsafePickleError(f"the pickle reconstructs {cls!r} on base {base!r}")
    return cls.__new__(cls)


_DATA_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set, ("__builtin__", "set"): set,
    ("builtins", "frozenset"): frozenset, ("__builtin__", "frozenset"): frozenset,
    ("builtins", "slice"): slice, ("__builtin__", "slice"): slice,
    ("builtins", "complex"): complex, ("__builtin__", "complex"): complex,
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type,
    ("_codecs", "encode"): _encode,
    ("copyreg", "_reconstructor"): _reconstructor, ("copy_reg", "_reconstructor"): _reconstructor,
}


# pickle._Unpickler is the reference (pure Python) implementation of pickle.Unpickler; unlike
# the C one it lets BUILD be intercepted, so no real object ever receives attacker state.
class RestrictedUnpickler(pickle._Unpickler):  # type: ignore[name-defined]
    """Unpickles a torch ``data.pkl``: real tensors, plain data, placeholders for everything else.

    Args:
        file: the pickle stream.
        storages: the archive's storage key -> raw bytes reader.
    """

    dispatch = dict(pickle._Unpickler.dispatch)  # type: ignore[attr-defined]

    def __init__(self, file: io.BufferedIOBase, storages: Callable[[str], bytes]) -> None:
        super().__init__(file, encoding="utf-8")  # as torch.load
        self._read_storage = storages
        self._storages: dict[str, Tensor] = {}
        self._placeholders: dict[tuple[str, str], type] = {}

    @property
    def pickled_globals(self) -> tuple[str, ...]:
        """The globals the pickle named that became placeholders, sorted."""
        return tuple(sorted(cls.pickled_global for cls in self._placeholders.values()))

    def find_class(self, module: str, name: str) -> Any:
        if self.proto < 3:  # protocol 2 writes Python 2 names (subprocess.Popen as commands.Popen)
            module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
            module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        key = (module, name)
        if key in _REBUILDERS:
            return _REBUILDERS[key]
        if key in _DATA_GLOBALS:
            return _DATA_GLOBALS[key]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if module == "torch" and name in _DTYPES:
            return _DTYPES[name]
        if key not in self._placeholders:
            self._placeholders[key] = _PickledGlobal(name, (PickledObject,), {
                "pickled_global": f"{module}.{name}", "call_allowed": _call_allowed(module, name)})
        return self._placeholders[key]

    def persistent_load(self, pid: Any) -> Tensor:
        """('storage', storage type, key, location, numel) -> a flat tensor over the bytes."""
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise UnsafePickleError(f"unsupported persistent id {pid!r:.80}")
        _, storage_type, key, _location, numel = pid
        if key not in self._storages:
            dtype = storage_type.dtype
            raw = self._read_storage(str(key))
            size = int(numel) * dtype.itemsize
            if not 0 <= size <= len(raw):
                raise pickle.UnpicklingError(f"storage {key}: {len(raw)} bytes, expected {size}")
            flat = (torch.frombuffer(bytearray(raw[:size]), dtype=torch.uint8) if size  # (numel * itemsize,)
                    else torch.empty(0, dtype=torch.uint8))  # frombuffer refuses an empty buffer
            self._storages[key] = flat.view(dtype)  # (numel,)
        return self._storages[key]

    def load_build(self) -> None:
        state = self.stack.pop()
        instance = self.stack[-1]
        if isinstance(instance, PickledObject):
            instance.__setstate__(state)
        elif type(instance) is collections.OrderedDict and isinstance(state, dict):
            # state_dict() results carry ``_metadata`` as an attribute: plain data, kept as such.
            instance.__dict__.update((key, value) for key, value in state.items() if isinstance(key, str))
        else:
            raise UnsafePickleError(f"the pickle sets the state of a real {type(instance).__name__}")

    dispatch[pickle.BUILD[0]] = load_build


@dataclass(frozen=True)
class PickledArchive:
    """What ``read_torch_archive`` found: the unpickled payload and the globals it named."""

    payload: Any
    pickled_globals: tuple[str, ...] = field(default=())


def read_torch_archive(path: Path) -> PickledArchive:
    """Unpickle a ``torch.save`` zip archive with ``RestrictedUnpickler``.

    Raises:
        UnsafePickleError: the pickle calls code.
        pickle.UnpicklingError: not a torch zip archive, or a malformed one.
    """
    if not zipfile.is_zipfile(path):
        raise pickle.UnpicklingError("not a torch zip archive (files saved by torch < 1.6 that pickle objects "
                                     "are not supported)")
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [name for name in names if name.endswith("/data.pkl") and name.count("/") == 1]
        if len(pickles) != 1:
            raise pickle.UnpicklingError("not a torch zip archive (no single <name>/data.pkl)")
        prefix = pickles[0].removesuffix("data.pkl")
        if any(name.startswith(prefix + "code/") for name in names):
            raise pickle.UnpicklingError("a TorchScript archive (torch.jit.save); save a state dict instead")
        if f"{prefix}byteorder" in names and archive.read(f"{prefix}byteorder").strip() != b"little":
            raise pickle.UnpicklingError("a big-endian archive, not supported")

        def storage_bytes(key: str) -> bytes:
            try:
                return archive.read(f"{prefix}data/{key}")
            except KeyError:
                raise pickle.UnpicklingError(f"storage {key!r} missing from the archive") from None

        unpickler = RestrictedUnpickler(io.BytesIO(archive.read(pickles[0])), storage_bytes)
        try:
            payload = unpickler.load()
        except pickle.UnpicklingError:
            raise
        except (RecursionError, RuntimeError, TypeError, ValueError, AttributeError, IndexError, KeyError,
                EOFError) as error:  # what a malformed stream raises from the opcode handlers
            raise pickle.UnpicklingError(f"malformed pickle ({type(error).__name__}: {error})") from error
    return PickledArchive(payload, unpickler.pickled_globals)


def is_module(value: Any) -> bool:
    """A placeholder of a pickled ``nn.Module`` (its state holds ``_parameters`` and ``_modules``)."""
    return (isinstance(value, PickledObject) and isinstance(value.state, dict)
            and "_parameters" in value.state and "_modules" in value.state)


def named_modules(root: PickledObject) -> dict[str, PickledObject]:
    """Every placeholder module of a pickled ``nn.Module`` graph by dotted path ("" for the root);
    a module reachable twice is listed once, as ``nn.Module.named_modules`` does."""
    modules: dict[str, PickledObject] = {}
    seen: set[int] = set()

    def visit(node: PickledObject, path: str, depth: int) -> None:
        if id(node) in seen or depth > _MAX_MODULE_DEPTH:
            return
        seen.add(id(node))
        modules[path] = node
        children = node.state.get("_modules")
        for name, child in (children.items() if isinstance(children, Mapping) else ()):
            if is_module(child):
                visit(child, f"{path}.{name}" if path else str(name), depth + 1)

    visit(root, "", 0)
    return modules


def module_tensors(root: PickledObject) -> dict[str, Tensor]:
    """The state dict of a pickled ``nn.Module`` graph: dotted names, as ``state_dict()`` gives
    (non-persistent buffers left out)."""
    tensors: dict[str, Tensor] = {}
    for path, module in named_modules(root).items():
        prefix = f"{path}." if path else ""
        transient = module.state.get("_non_persistent_buffers_set")
        transient = transient if isinstance(transient, (set, frozenset)) else set()
        for group in ("_parameters", "_buffers"):
            entries = module.state.get(group)
            for name, tensor in (entries.items() if isinstance(entries, Mapping) else ()):
                if isinstance(tensor, Tensor) and not (group == "_buffers" and name in transient):
                    tensors[f"{prefix}{name}"] = tensor
    return tensors
