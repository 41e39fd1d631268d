"""Read PyTorch checkpoint files into NumPy arrays without importing torch.

``torch.save`` has written two formats:

* the *legacy* format (before PyTorch 1.6, or ``_use_new_zipfile_serialization=False``):
  a sequence of pickles — magic number, protocol version, system information
  (byte order, type sizes), the saved object, the list of storage keys — then
  the raw data of each storage in that order, each preceded by its element
  count as an 8-byte little-endian integer;
* the *zip* format: an archive holding ``<name>/data.pkl`` and one file
  ``<name>/data/<key>`` per storage.

In both, the object pickle refers to tensor storages by *persistent id*
``("storage", storage type, key, location, numel[, view metadata])`` and
rebuilds tensors with ``torch._utils._rebuild_tensor_v2(storage, offset,
size, stride, ...)``. :func:`load_torch_file` replaces those with NumPy
functions. Unpickling is restricted to the handful of globals a state dict
needs (``collections.OrderedDict``, the tensor rebuild functions and the
storage types), so a malicious file cannot run code.
"""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from collections import OrderedDict

import numpy as np

__all__ = ["LEGACY_MAGIC_NUMBER", "TorchFileError", "load_torch_file"]

#: The first pickle of a legacy torch file.
LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL_VERSION = 1001

# torch storage class -> NumPy dtype (little-endian)
_STORAGE_DTYPES = {
    "DoubleStorage": np.dtype("<f8"),
    "FloatStorage": np.dtype("<f4"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}
# torch.<dtype> objects appear as the storage type in files written by torch >= 2.0 (UntypedStorage era).
_TORCH_DTYPES = {
    "float64": "DoubleStorage", "float32": "FloatStorage", "float16": "HalfStorage", "int64": "LongStorage",
    "int32": "IntStorage", "int16": "ShortStorage", "int8": "CharStorage", "uint8": "ByteStorage",
    "bool": "BoolStorage",
}


class TorchFileError(ValueError):
    """A torch checkpoint file could not be read; the message names the file and the reason."""

    def __init__(self, path, reason):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot read torch file {self.path!r}: {reason}")

    def __reduce__(self):
        return (type(self), (self.path, self.reason))


class _StorageType:
    """Stand-in for ``torch.FloatStorage`` etc.: only carries the dtype."""

    def __init__(self, name):
        self.name = name
        self.dtype = _STORAGE_DTYPES[name]


class _Storage:
    """A storage announced by a persistent id; ``data`` is filled in once the raw bytes are read."""

    def __init__(self, key, dtype, numel):
        self.key = key
        self.dtype = dtype
        self.numel = numel
        self.data = None


class _StorageView:
    def __init__(self, root, offset, size):
        self.root = root
        self.offset = offset
        self.size = size


class _PendingTensor:
    """``_rebuild_tensor_v2`` arguments, turned into an array after the storages are read."""

    def __init__(self, storage, offset, size, stride):
        self.storage = storage
        self.offset = offset
        self.size = tuple(size)
        self.stride = tuple(stride)

    def materialise(self, path):
        storage, offset = self.storage, self.offset
        if isinstance(storage, _StorageView):
            offset += storage.offset
            storage = storage.root
        flat = storage.data
        if flat is None:
            raise TorchFileError(path, f"storage {storage.key!r} has no data")
        if not self.size:
            return np.array(flat[offset])
        extent = offset + 1 + sum((n - 1) * s for n, s in zip(self.size, self.stride) if n > 0)
        if any(n == 0 for n in self.size):
            return np.empty(self.size, dtype=flat.dtype)
        if offset < 0 or extent > flat.size:
            raise TorchFileError(path, f"tensor of size {self.size} and stride {self.stride} at offset "
                                       f"{offset} runs past its storage of {flat.size} elements")
        strides = tuple(s * flat.itemsize for s in self.stride)
        view = np.lib.stride_tricks.as_strided(flat[offset:], shape=self.size, strides=strides, writeable=False)
        return np.array(view)  # own, contiguous copy


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None):
    return _PendingTensor(storage, storage_offset, size, stride)


def _rebuild_tensor(storage, storage_offset, size, stride):
    return _PendingTensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    return data


def _rebuild_parameter_with_state(data, requires_grad=False, backward_hooks=None, state=None):
    return data


_ALLOWED = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
}


class _Unpickler(pickle.Unpickler):
    """Unpickler that builds NumPy stand-ins for torch objects and refuses every other global."""

    def __init__(self, file, path, storages):
        super().__init__(file, encoding="utf-8")
        self._path = path
        self.storages = storages

    def find_class(self, module, name):
        target = _ALLOWED.get((module, name))
        if target is not None:
            return target
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        if module == "torch" and name in _TORCH_DTYPES:
            return _StorageType(_TORCH_DTYPES[name])
        raise pickle.UnpicklingError(
            f"{self._path!r}: refusing to load the global {module}.{name} (only state dicts of tensors are "
            "supported; arbitrary objects could run code)"
        )

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
            raise pickle.UnpicklingError(f"{self._path!r}: unsupported persistent id {pid!r}")
        storage_type, key, _location, numel = pid[1:5]
        view_metadata = pid[5] if len(pid) > 5 else None
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"{self._path!r}: unsupported storage type {storage_type!r}")
        key = str(key)
        storage = self.storages.get(key)
        if storage is None:
            storage = self.storages[key] = _Storage(key, storage_type.dtype, int(numel))
        if view_metadata is not None:
            _view_key, offset, size = view_metadata
            return _StorageView(storage, int(offset), int(size))
        return storage


def _materialise(obj, path):
    if isinstance(obj, _PendingTensor):
        return obj.materialise(path)
    if isinstance(obj, OrderedDict):
        out = OrderedDict((k, _materialise(v, path)) for k, v in obj.items())
        return out
    if isinstance(obj, dict):
        return {k: _materialise(v, path) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_materialise(v, path) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_materialise(v, path) for v in obj)
    return obj


def _load_legacy(fh, path):
    def next_pickle(what):
        try:
            return _Unpickler(fh, path, storages).load()
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
            raise TorchFileError(path, f"corrupt {what} pickle ({type(exc).__name__}: {exc})") from None

    storages = {}
    magic = next_pickle("magic-number")
    if magic != LEGACY_MAGIC_NUMBER:
        raise TorchFileError(path, "not a torch file (wrong magic number)")
    protocol = next_pickle("protocol-version")
    if protocol != _LEGACY_PROTOCOL_VERSION:
        raise TorchFileError(path, f"unsupported legacy protocol version {protocol!r} (expected 1001)")
    sys_info = next_pickle("system-info")
    if not isinstance(sys_info, dict) or not sys_info.get("little_endian", False):
        raise TorchFileError(path, "written on a big-endian machine (only little-endian files are supported)")
    obj = next_pickle("object")
    keys = next_pickle("storage-keys")
    if not isinstance(keys, list):
        raise TorchFileError(path, f"the storage-key list is a {type(keys).__name__}")
    for key in keys:
        storage = storages.get(str(key))
        if storage is None:
            raise TorchFileError(path, f"storage {key!r} is listed but never used")
        header = fh.read(8)
        if len(header) != 8:
            raise TorchFileError(path, f"truncated before the data of storage {key!r}")
        numel = int.from_bytes(header, "little", signed=True)
        if numel != storage.numel:
            raise TorchFileError(path, f"storage {key!r} announces {storage.numel} elements but its data "
                                       f"header says {numel}")
        nbytes = numel * storage.dtype.itemsize
        raw = fh.read(nbytes)
        if len(raw) != nbytes:
            raise TorchFileError(path, f"truncated inside the data of storage {key!r} "
                                       f"({len(raw)} of {nbytes} bytes)")
        storage.data = np.frombuffer(raw, dtype=storage.dtype)
    return _materialise(obj, path)


def _load_zip(path):
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pkl = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pkl) != 1:
            raise TorchFileError(path, "zip archive without exactly one data.pkl (not a torch file)")
        prefix = pkl[0][: -len("data.pkl")]
        storages = {}
        try:
            obj = _Unpickler(io.BytesIO(archive.read(pkl[0])), path, storages).load()
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
            raise TorchFileError(path, f"corrupt object pickle ({type(exc).__name__}: {exc})") from None
        for key, storage in storages.items():
            member = f"{prefix}data/{key}"
            try:
                raw = archive.read(member)
            except KeyError:
                raise TorchFileError(path, f"storage file {member!r} is missing from the archive") from None
            data = np.frombuffer(raw, dtype=storage.dtype)
            if data.size < storage.numel:
                raise TorchFileError(path, f"storage {key!r} has {data.size} elements, expected {storage.numel}")
            storage.data = data[: storage.numel]
    return _materialise(obj, path)


def load_torch_file(path):
    """Load a PyTorch checkpoint (legacy or zip format) as NumPy arrays, without torch.

    Parameters
    ----------
    path : str or path-like
        A ``.pth``/``.pt`` file written by ``torch.save`` holding (nested)
        dicts/lists of tensors, e.g. a model's ``state_dict()``.

    Returns
    -------
    object
        The saved object with every tensor replaced by a NumPy array of the
        same shape and dtype (``OrderedDict`` for a state dict).

    Raises
    ------
    TorchFileError
        Naming the file: missing, truncated, corrupt, big-endian, or holding
        objects other than tensors and containers.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise TorchFileError(path, "no such file")
    if zipfile.is_zipfile(path):
        return _load_zip(path)
    with open(path, "rb") as fh:
        return _load_legacy(fh, path)
