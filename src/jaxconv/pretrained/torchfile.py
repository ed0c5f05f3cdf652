"""PyTorch checkpoint files (``torch.save``) read as numpy arrays, without torch and without running code.

Formats:

- zip (torch >= 1.6): ``<archive>/data.pkl`` is the pickled object; each tensor in it is
  ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)``, its
  storage a persistent id ``('storage', torch.FloatStorage, key, location, numel)`` whose bytes are
  ``<archive>/data/<key>``, in the byte order of ``<archive>/byteorder`` (little when absent);
- legacy (torch < 1.6, e.g. torchvision's alexnet-owt-7be5be79.pth): consecutive pickles -- the magic
  number 0x1950a86a20f9469cfc6c, the protocol version 1001, sys_info, the object (persistent ids
  ``('storage', type, key, location, numel, view)``), the list of storage keys -- then for each key an
  int64 element count and the storage's bytes, little-endian;
- the tar format of the first PyTorch releases is refused (load it with torch and save it again).

Security rule: every pickle is read by an unpickler whose ``find_class`` knows only what a state dict
is made of -- ``collections.OrderedDict``, torch's tensor and parameter rebuild functions, its typed
storage classes -- each mapped to an immutable numpy stand-in defined here. Nothing is imported or
evaluated; any other global (``posix.system``, ``builtins.exec``, a model class) raises
WeightsFormatError unresolved. Tensors are bounds-checked against their storage before any view.
"""

from __future__ import annotations

import _compat_pickle
import collections
import io
import math
import pathlib
import pickle
import struct
import zipfile
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from jaxconv.errors import UserError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PREFIX = b"\x80\x02\x8a\x0a" + LEGACY_MAGIC.to_bytes(10, "little")  # pickle.dumps(LEGACY_MAGIC, 2)
LEGACY_PROTOCOL = 1001


class WeightsFormatError(UserError, ValueError):
    """A weights file cannot be read (unknown format, a refused pickle, not a state dict)."""


class _StorageType(NamedTuple):  # torch.FloatStorage & co.
    name: str
    dtype: str  # little-endian numpy dtype of the stored elements (bfloat16: their uint16 bits)


class _Call(NamedTuple):  # torch._utils' rebuild functions
    function: Any

    def __call__(self, *args):
        return self.function(*args)


class _Storage:
    """A storage: its elements' dtype and count, and its bytes or the root storage it is a slice of."""

    def __init__(self, kind: _StorageType, numel, byteorder="<", data=None, root: _Storage | None = None, offset=0):
        if not (isinstance(numel, int) and numel >= 0 and isinstance(offset, int) and offset >= 0):
            raise WeightsFormatError(f"a {kind.name} of {numel!r} elements from {offset!r}")
        self.kind, self.numel, self.data, self.root, self.offset = kind, numel, data, root, offset
        self.dtype = np.dtype(kind.dtype).newbyteorder(byteorder)

    def __setstate__(self, state):  # a pickle's BUILD on a storage (after _rebuild_parameter returned it)
        raise WeightsFormatError("a pickle that alters a storage")

    def array(self) -> np.ndarray:
        if self.root is not None:
            whole = self.root.array()
            if self.offset + self.numel > whole.size:
                raise WeightsFormatError(f"a storage view reaches past its {whole.size}-element root")
            return whole[self.offset:self.offset + self.numel]
        size, got = self.numel * self.dtype.itemsize, len(self.data or b"")
        if got < size:
            raise WeightsFormatError(f"truncated: a {self.kind.name} needs {size} bytes, the file has {got}")
        return np.frombuffer(self.data, self.dtype, self.numel).astype(self.dtype.newbyteorder("="), copy=False)


class _Tensor(NamedTuple):
    storage: _Storage
    offset: Any
    size: Any
    stride: Any

    def numpy(self) -> np.ndarray:
        """A contiguous copy of the strided view (bfloat16 widened to float32), never reading past the storage."""
        base, offset, size, stride = self.storage.array(), self.offset, self.size, self.stride
        if not (isinstance(offset, int) and isinstance(size, tuple) and isinstance(stride, tuple) and len(size) ==
                len(stride) and all(isinstance(n, int) and n >= 0 for n in (offset, *size, *stride))):
            raise WeightsFormatError(f"a tensor of offset {offset!r}, size {size!r}, stride {stride!r}")
        count = math.prod(size)
        end = offset + sum((n - 1) * s for n, s in zip(size, stride)) + 1 if count else 0
        if end > base.size or count > base.size:  # an expanded view (stride 0) is not read either
            raise WeightsFormatError(f"a tensor of size {size} reaches past its {base.size}-element storage")
        if not count:
            array = np.empty(size, base.dtype)
        else:
            array = np.lib.stride_tricks.as_strided(base[offset:], size, [s * base.itemsize for s in stride]).copy()
        if self.storage.kind.name == "BFloat16Storage":  # its bits are a float32's upper half
            return (array.astype(np.uint32) << 16).view(np.float32)
        return array


def _rebuild_tensor(storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None) -> _Tensor:
    if not isinstance(storage, _Storage):
        raise WeightsFormatError(f"a tensor whose storage is a {type(storage).__name__}")
    if metadata:  # conjugate or negative bits: the stored values are not the tensor's
        raise WeightsFormatError(f"a tensor with metadata {str(metadata)[:80]}")
    return _Tensor(storage, offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, hooks=None, state=None):
    return data


_NUMPY = {"Float": "<f4", "Half": "<f2", "BFloat16": "<u2", "Double": "<f8", "Long": "<i8", "Int": "<i4",
          "Short": "<i2", "Char": "i1", "Byte": "u1", "Bool": "?"}
# Every global a pickle may name, and the stand-in it gets: nothing here is torch's, nothing is imported.
ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    **{("torch._utils", f): _Call(_rebuild_tensor) for f in ("_rebuild_tensor", "_rebuild_tensor_v2")},
    **{("torch._utils", f): _Call(_rebuild_parameter) for f in ("_rebuild_parameter", "_rebuild_parameter_with_state")},
    **{("torch", f"{k}Storage"): _StorageType(f"{k}Storage", v) for k, v in _NUMPY.items()},
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, storage=None):
        super().__init__(file, encoding="utf-8")
        self.storage = storage  # (type, key, location, numel[, view]) -> _Storage; None: no tensors here

    def find_class(self, module: str, name: str):
        if (module, name) not in ALLOWED:  # named as Python 3 knows it: __builtin__.eval is builtins.eval
            module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
            module = _compat_pickle.IMPORT_MAPPING.get(module, module)
            raise WeightsFormatError(f"refuses to unpickle {module}.{name}: a weights file holds only tensors")
        return ALLOWED[module, name]

    def persistent_load(self, pid):
        if self.storage is None or not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"
                                        and isinstance(pid[1], _StorageType) and isinstance(pid[2], str)):
            raise WeightsFormatError(f"an unknown persistent id {str(pid)[:80]}")
        return self.storage(*pid[1:])


def _load_zip(f) -> Any:
    with zipfile.ZipFile(f) as archive:
        names = set(archive.namelist())
        pickles = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise WeightsFormatError("a zip archive, but not torch.save's (no <archive>/data.pkl)")
        prefix = pickles[0].removesuffix("data.pkl")
        order = archive.read(prefix + "byteorder") if prefix + "byteorder" in names else b"little"
        if order not in (b"little", b"big"):
            raise WeightsFormatError(f"unknown byte order {order[:20]!r}")
        storages: dict[str, _Storage] = {}

        def storage(kind, key, location, numel):
            if key not in storages:
                if f"{prefix}data/{key}" not in names:
                    raise WeightsFormatError(f"storage {prefix}data/{key} is missing")
                data = archive.read(f"{prefix}data/{key}")
                storages[key] = _Storage(kind, numel, "<" if order == b"little" else ">", data)
            return storages[key]

        return _Unpickler(io.BytesIO(archive.read(pickles[0])), storage).load()


def _load_legacy(f) -> Any:
    if _Unpickler(f).load() != LEGACY_MAGIC:
        raise WeightsFormatError("not a PyTorch checkpoint (a pickle without torch.save's magic number)")
    if (protocol := _Unpickler(f).load()) != LEGACY_PROTOCOL:
        raise WeightsFormatError(f"torch.save's legacy protocol {protocol!r} (only {LEGACY_PROTOCOL} is read)")
    _Unpickler(f).load()  # sys_info: byte order and C type sizes of the saving machine (data is little-endian)
    storages: dict[str, _Storage] = {}

    def storage(kind, key, location, numel, view=None):  # view: (its key, offset, numel) in the root
        root = storages.setdefault(key, _Storage(kind, numel))
        if view is None:
            return root
        return storages.setdefault(view[0], _Storage(kind, view[2], root=root, offset=view[1]))

    result = _Unpickler(f, storage).load()
    for key in _Unpickler(f).load():  # the storages' bytes follow, in this order
        root, count = storages[key], f.read(8)
        if len(count) < 8:
            raise WeightsFormatError(f"truncated before storage {key}")
        if (numel := struct.unpack("<q", count)[0]) != root.numel:
            raise WeightsFormatError(f"storage {key} holds {numel} elements, its tensors expect {root.numel}")
        root.data = f.read(root.numel * root.dtype.itemsize)
    return result


def _load(f) -> Any:
    head = f.read(512)
    f.seek(0)
    if head.startswith(b"PK"):
        return _load_zip(f)
    if head[257:262] == b"ustar":
        raise WeightsFormatError("the tar format of the first PyTorch releases is not read: load the file with "
                                 "torch and save it again (torch.save, or as .safetensors)")
    if head.startswith(b"\x80"):  # a pickle: torch.save's legacy format begins with one
        return _load_legacy(f)
    raise WeightsFormatError("not a PyTorch checkpoint (neither torch.save's zip nor its legacy format)")


def unwrap(state: Any) -> Any:
    """{'state_dict': sd} and {'model': sd} checkpoints -> sd; DataParallel's 'module.' prefix removed."""
    for wrapper in ("state_dict", "model"):
        if isinstance(state, Mapping) and set(state) == {wrapper} and isinstance(state[wrapper], Mapping):
            state = state[wrapper]
    if isinstance(state, Mapping) and state and all(isinstance(k, str) and k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


def read_state_dict(path: str | pathlib.Path) -> dict[str, np.ndarray]:
    """A torch.save'd state dict as key -> numpy array, in the tensors' own dtypes (bfloat16 as float32).

    Raises WeightsFormatError, naming the file, for anything but a (wrapped) mapping of tensors.
    """
    with open(path, "rb") as f:
        try:
            state = unwrap(_load(f))
            if not isinstance(state, Mapping):
                raise WeightsFormatError(f"holds a {type(state).__name__}, not a state dict (a key -> tensor map)")
            for key, value in state.items():
                if not isinstance(value, _Tensor):
                    raise WeightsFormatError(f"entry {key!r} is not a tensor ({type(value).__name__})")
                if not isinstance(key, str):
                    raise WeightsFormatError(f"a state dict's keys are strings, not {type(key).__name__} ({key!r})")
            return {key: value.numpy() for key, value in state.items()}
        except WeightsFormatError as e:
            raise WeightsFormatError(f"{path}: {e}") from None
        except Exception as e:  # pickle, zip, struct and OS errors; a stand-in called with the wrong arguments
            raise WeightsFormatError(f"{path}: a damaged or truncated PyTorch checkpoint ({type(e).__name__}: "
                                     f"{str(e)[:200]})") from None
