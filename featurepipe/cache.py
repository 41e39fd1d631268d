"""Per-sample cache of the outputs of stateless steps.

Entries are keyed by ``(step token, sample key)``: the step token names the
step class, every parameter that can change the output and the featurepipe
version (see :func:`step_token`); the sample key identifies
the pixels (see :mod:`featurepipe.sample`). Nothing is keyed on object
identity or on which fold a sample belongs to, so a sample's features are
computed once per process (or once ever, with a disk cache) whichever CV
split, grid point or clone asks for them.

The memory layer is a byte-bounded LRU shared by the whole process; the
optional disk layer stores one ``.npz`` file per entry (the array and a
BLAKE2b checksum of its dtype, shape and bytes) under
``<directory>/<step hash>/`` and is safe to share between processes (writes
are atomic renames). Disk entries are data, verified on every read: a bad
one is discarded, recomputed, rewritten and reported (:class:`CacheWarning`),
never returned.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
import threading
import warnings
import zipfile
import zlib
from collections import OrderedDict
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator

from ._version import __version__
from .sample import hash_bytes

__all__ = ["CacheWarning", "FeatureCache", "get_cache", "cached_per_sample", "clear_memory_cache", "set_memory_limit",
           "step_token"]

_DEFAULT_MEMORY_LIMIT = 2 * 1024**3  # bytes


class _MemoryLRU:
    def __init__(self, max_bytes):
        self.max_bytes = max_bytes
        self._data = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def set(self, key, value):
        size = value.nbytes
        if size > self.max_bytes:
            return
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
            self._data[key] = value
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, evicted = self._data.popitem(last=False)
                self._bytes -= evicted.nbytes

    def clear(self):
        with self._lock:
            self._data.clear()
            self._bytes = 0

    def __len__(self):
        return len(self._data)


_MEMORY = _MemoryLRU(_DEFAULT_MEMORY_LIMIT)


def set_memory_limit(max_bytes):
    """Set the byte budget of the process-wide in-memory feature cache (LRU eviction)."""
    if not isinstance(max_bytes, (int, np.integer)) or max_bytes < 0:
        raise ValueError(f"max_bytes must be a non-negative integer; got {max_bytes!r}")
    _MEMORY.max_bytes = int(max_bytes)


def clear_memory_cache():
    """Drop every entry of the process-wide in-memory feature cache."""
    _MEMORY.clear()


class CacheWarning(UserWarning):
    """A disk cache entry was bad (discarded and recomputed) or the cache directory cannot be written."""


class _BadEntry(Exception):
    """Internal: why a disk entry cannot be returned."""


#: Entries larger than this are refused unread when the expected shape is unknown (bytes).
_MAX_ENTRY_BYTES = 256 * 1024**2
#: Bytes an entry may hold beyond its array (zip and ``.npy`` headers, the checksum).
_ENTRY_OVERHEAD_BYTES = 64 * 1024
#: Bad entries named in one warning (the count covers them all).
_MAX_NAMED = 5


class FeatureCache:
    """Cache of per-sample step outputs: process memory, optionally backed by a directory.

    A disk entry is one ``.npz`` file holding the array (``values``) and a
    BLAKE2b checksum of its dtype, shape and bytes (``blake2b``). On read the
    checksum, and the shape and dtype the caller expects, are verified; an
    entry that fails (edited, truncated, empty, wrong shape or dtype, not a
    regular file, unreadable) is never returned: it is removed when it is a
    file, recomputed and rewritten, and the batch's bad entries are reported
    in one :class:`CacheWarning`. A directory that cannot be written costs
    one :class:`CacheWarning` per batch and the features are computed anyway.

    Parameters
    ----------
    directory : str or path-like, optional
        Where entries persist between processes; ``None`` for memory only.
    memory : bool, default=True
        Use the process-wide in-memory LRU as well.
    """

    ENTRY_SUFFIX = ".npz"

    def __init__(self, directory=None, memory=True):
        self.directory = None if directory is None else Path(directory)
        self.memory = memory

    @staticmethod
    def step_id(token):
        return hash_bytes(token)[:24]

    @staticmethod
    def checksum(values):
        """Hex BLAKE2b (128-bit) of an array's dtype, shape and bytes."""
        values = np.ascontiguousarray(values)
        h = hashlib.blake2b(digest_size=16)
        for chunk in (values.dtype.str.encode("ascii"), repr(values.shape).encode("ascii"), values.tobytes()):
            h.update(len(chunk).to_bytes(8, "little"))
            h.update(chunk)
        return h.hexdigest()

    @staticmethod
    def write_entry(path, values, digest=None):
        """Atomically write ``values`` with its checksum (``digest`` overrides it, for tests) to ``path``.

        Raises ``OSError`` when the file cannot be written.
        """
        values = np.ascontiguousarray(values)
        digest = FeatureCache.checksum(values) if digest is None else digest
        _atomic_write(Path(path), lambda fh: np.savez(fh, values=values, blake2b=np.array(digest)))

    @staticmethod
    def read_entry_unverified(path):
        """``(values, stored checksum)`` of an entry file, checking only that it is well formed.

        Raises ``_BadEntry`` naming the reason otherwise.
        """
        try:
            entry = np.load(path, allow_pickle=False)
            if not isinstance(entry, np.lib.npyio.NpzFile):
                raise _BadEntry("not a featurepipe cache entry (a bare array, without its checksum)")
            with entry:
                if set(entry.files) != {"values", "blake2b"}:
                    raise _BadEntry("not a featurepipe cache entry (expected arrays 'values' and 'blake2b')")
                values = entry["values"]
                digest = entry["blake2b"]
        except _BadEntry:
            raise
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
            raise _BadEntry(f"cannot be read ({type(exc).__name__}: {exc})") from None
        if digest.shape != () or digest.dtype.kind != "U":
            raise _BadEntry("its checksum field is malformed")
        return values, str(digest)

    def _read_verified(self, path, expected_shape, dtype):
        try:
            info = os.stat(path)
        except FileNotFoundError:
            return None
        except OSError:  # a parent is not a directory, or cannot be searched: nothing readable there
            return None
        if not stat.S_ISREG(info.st_mode):
            raise _BadEntry("not a regular file")
        if info.st_size == 0:
            raise _BadEntry("empty file")
        limit = _MAX_ENTRY_BYTES
        if expected_shape is not None:
            limit = int(np.prod(expected_shape)) * np.dtype(dtype or np.float64).itemsize + _ENTRY_OVERHEAD_BYTES
        if info.st_size > limit:
            raise _BadEntry(f"{info.st_size} bytes, more than the {limit} an entry of this step can take")
        values, digest = self.read_entry_unverified(path)
        if expected_shape is not None and values.shape != tuple(expected_shape):
            raise _BadEntry(f"shape {values.shape}, expected {tuple(expected_shape)}")
        if dtype is not None and values.dtype != np.dtype(dtype):
            raise _BadEntry(f"dtype {values.dtype}, expected {np.dtype(dtype)}")
        if self.checksum(values) != digest:
            raise _BadEntry("checksum mismatch (the stored values were changed)")
        return values

    def _path(self, step_id, sample_key):
        return self.directory / step_id / sample_key[:2] / f"{sample_key}{self.ENTRY_SUFFIX}"

    def get_many(self, token, sample_keys, *, expected_shape=None, dtype=None):
        """Dict ``sample key -> cached array`` for the keys present and verified.

        Parameters
        ----------
        token : str
            The step's cache token.
        sample_keys : iterable of str
        expected_shape : tuple of int, optional
            Shape every entry must have (e.g. ``(n_features,)``).
        dtype : dtype, optional
            Dtype every entry must have.

        Bad disk entries are removed (when they are files), left out of the
        result so the caller recomputes them, and reported in one
        :class:`CacheWarning`.
        """
        step_id = self.step_id(token)
        found = {}
        bad = []
        for key in sample_keys:
            value = _MEMORY.get((step_id, key)) if self.memory else None
            if value is not None and not _matches(value, expected_shape, dtype):
                value = None
            if value is None and self.directory is not None:
                path = self._path(step_id, key)
                try:
                    value = self._read_verified(path, expected_shape, dtype)
                except _BadEntry as exc:
                    bad.append((path, str(exc)))
                    _discard(path)
                    value = None
                if value is not None and self.memory:
                    value.setflags(write=False)
                    _MEMORY.set((step_id, key), value)
            if value is not None:
                found[key] = value
        if bad:
            named = "; ".join(f"{path}: {reason}" for path, reason in bad[:_MAX_NAMED])
            more = f"; and {len(bad) - _MAX_NAMED} more" if len(bad) > _MAX_NAMED else ""
            warnings.warn(f"discarded {len(bad)} bad cache entr{'y' if len(bad) == 1 else 'ies'} under "
                          f"{self.directory} (recomputing and rewriting them): {named}{more}",
                          CacheWarning, stacklevel=3)
        return found

    def set_many(self, token, items):
        """Store ``{sample key: array}`` produced by the step with cache token ``token``.

        When the directory cannot be written, the entries stay in memory only
        and one :class:`CacheWarning` says why.
        """
        step_id = self.step_id(token)
        frozen = {}
        for key, value in items.items():
            value = np.array(value, copy=True)
            value.setflags(write=False)
            frozen[key] = value
            if self.memory:
                _MEMORY.set((step_id, key), value)
        if self.directory is None or not frozen:
            return
        try:
            description = self.directory / step_id / "STEP.txt"
            if not description.is_file():
                _atomic_write(description, lambda fh: fh.write((token + "\n").encode("utf-8")))
            for key, value in frozen.items():
                self.write_entry(self._path(step_id, key), value)
        except OSError as exc:
            warnings.warn(f"cannot write to the feature cache {self.directory} ({exc}); the features were "
                          "computed and are kept in memory only", CacheWarning, stacklevel=3)


def _matches(value, expected_shape, dtype):
    return ((expected_shape is None or value.shape == tuple(expected_shape))
            and (dtype is None or value.dtype == np.dtype(dtype)))


def _discard(path):
    """Remove a bad entry if it is a file or a link; never a directory (it may not be ours)."""
    try:
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            os.unlink(path)
    except OSError:
        pass  # read-only cache: the entry stays bad, is reported again and never returned


def _atomic_write(path, write):
    """Write ``path`` via a temporary file in its folder and a rename (readers never see a torn file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# ----------------------------------------------------------------------------- step tokens
def _canonical(value, where):
    """A stable text form of a parameter value (same value -> same text across processes)."""
    if isinstance(value, BaseEstimator):
        return step_token(value, include_version=False)
    if value is None or isinstance(value, (bool, int, str)):
        return repr(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, np.generic):
        return _canonical(value.item(), where)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_canonical(v, where) for v in value) + "]"
    if isinstance(value, dict):
        items = sorted((repr(k), _canonical(v, where)) for k, v in value.items())
        return "{" + ",".join(f"{k}:{v}" for k, v in items) + "}"
    if isinstance(value, np.ndarray):
        from .sample import array_digest

        return f"array({array_digest(value)})"
    if isinstance(value, os.PathLike):
        return repr(os.fspath(value))
    if callable(value):
        qualname = getattr(value, "__qualname__", "")
        if not qualname or "<lambda>" in qualname or "<locals>" in qualname:
            raise ValueError(
                f"{where}: cannot build a cache key from the callable {value!r}; use a module-level "
                "function (lambdas and local functions have no stable name)"
            )
        return f"{getattr(value, '__module__', '?')}.{qualname}"
    raise TypeError(f"{where}: cannot build a cache key from a parameter of type {type(value).__name__}")


def step_token(step, include_version=True):
    """Text that identifies what ``step`` computes: class, output-relevant params, version.

    Parameters listed in the class attribute ``_non_key_params`` (cache,
    n_jobs, batch size …) are left out because they cannot change the output.
    """
    cls = type(step)
    skip = set(getattr(step, "_non_key_params", ()))
    params = step.get_params(deep=False)
    parts = [
        f"{name}={_canonical(value, f'{cls.__name__}.{name}')}"
        for name, value in sorted(params.items())
        if name not in skip
    ]
    extra = step._cache_token_extra() if hasattr(step, "_cache_token_extra") else ""
    token = f"{cls.__module__}.{cls.__qualname__}({','.join(parts)}){extra}"
    if include_version:
        token += f"@featurepipe-{__version__}"
    return token



def get_cache(cache):
    """The :class:`FeatureCache` for a step's ``cache`` parameter, or ``None``.

    ``True`` means process memory; ``False`` or ``None`` means no caching; a
    (non-empty) string or path means that directory plus process memory.
    """
    if cache is True:
        return FeatureCache(None, memory=True)
    if cache is False or cache is None:
        return None
    if isinstance(cache, (str, bytes, os.PathLike)):
        text = os.fsdecode(cache)
        if not text.strip():
            raise ValueError(f"cache={cache!r} is an empty path, which would write into the current folder; "
                             "pass True (memory), False (off) or a directory path")
        return FeatureCache(text, memory=True)
    raise ValueError(f"cache must be True, False, None or a directory path; got {cache!r}")


def cached_per_sample(cache, token, samples, compute, *, expected_shape=None, dtype=None):
    """``{sample key: output}`` for ``samples``, computing only what ``cache`` lacks.

    Parameters
    ----------
    cache : FeatureCache or None
        From :func:`get_cache`; ``None`` computes everything.
    token : str
        The step's cache token (:func:`step_token`).
    samples : sequence of Sample
    compute : callable
        ``compute(missing_samples) -> sequence of arrays`` aligned with its
        input; called at most once, with each missing key once.
    expected_shape : tuple of int, optional
        Shape of one sample's output (e.g. ``(n_features,)``); cached entries
        of another shape are discarded and recomputed.
    dtype : dtype, optional
        Dtype of one sample's output, verified likewise.
    """
    unique = {}
    for sample in samples:
        unique.setdefault(sample.key, sample)
    found = cache.get_many(token, unique, expected_shape=expected_shape, dtype=dtype) if cache is not None else {}
    missing = [s for key, s in unique.items() if key not in found]
    if missing:
        new = dict(zip((s.key for s in missing), compute(missing)))
        if cache is not None:
            cache.set_many(token, new)
        found.update(new)
    return found
