"""Per-sample cache of the outputs of stateless steps.

Entries are keyed by ``(step token, sample key)``: the step token names the
step class, every parameter that can change the output and the featurepipe
version (see :func:`featurepipe.base.step_token`); the sample key identifies
the pixels (see :mod:`featurepipe.sample`). Nothing is keyed on object
identity or on which fold a sample belongs to, so a sample's features are
computed once per process (or once ever, with a disk cache) whichever CV
split, grid point or clone asks for them.

The memory layer is a byte-bounded LRU shared by the whole process; the
optional disk layer stores one ``.npy`` file per entry under
``<directory>/<step hash>/`` and is safe to share between processes (writes
are atomic renames).
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from .sample import hash_bytes

__all__ = ["FeatureCache", "get_cache", "cached_per_sample", "clear_memory_cache", "set_memory_limit"]

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


class FeatureCache:
    """Cache of per-sample step outputs: process memory, optionally backed by a directory.

    Parameters
    ----------
    directory : str or path-like, optional
        Where entries persist between processes; ``None`` for memory only.
    memory : bool, default=True
        Use the process-wide in-memory LRU as well.
    """

    def __init__(self, directory=None, memory=True):
        self.directory = None if directory is None else Path(directory)
        self.memory = memory

    @staticmethod
    def step_id(token):
        return hash_bytes(token)[:24]

    def _path(self, step_id, sample_key):
        return self.directory / step_id / sample_key[:2] / f"{sample_key}.npy"

    def get_many(self, token, sample_keys):
        """Dict ``sample key -> cached array`` for the keys present."""
        step_id = self.step_id(token)
        found = {}
        for key in sample_keys:
            value = _MEMORY.get((step_id, key)) if self.memory else None
            if value is None and self.directory is not None:
                path = self._path(step_id, key)
                if path.is_file():
                    try:
                        value = np.load(path, allow_pickle=False)
                    except (OSError, ValueError):  # a torn or corrupt file is a miss, recomputed
                        value = None
                    if value is not None and self.memory:
                        value.setflags(write=False)
                        _MEMORY.set((step_id, key), value)
            if value is not None:
                found[key] = value
        return found

    def set_many(self, token, items):
        """Store ``{sample key: array}`` produced by the step with cache token ``token``."""
        step_id = self.step_id(token)
        if self.directory is not None:
            step_dir = self.directory / step_id
            step_dir.mkdir(parents=True, exist_ok=True)
            description = step_dir / "STEP.txt"
            if not description.exists():
                description.write_text(token + "\n", encoding="utf-8")
        for key, value in items.items():
            value = np.array(value, copy=True)
            value.setflags(write=False)
            if self.memory:
                _MEMORY.set((step_id, key), value)
            if self.directory is not None:
                path = self._path(step_id, key)
                path.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
                try:
                    with os.fdopen(fd, "wb") as fh:
                        np.save(fh, value, allow_pickle=False)
                    os.replace(tmp, path)
                except BaseException:
                    if os.path.exists(tmp):
                        os.unlink(tmp)
                    raise


def get_cache(cache):
    """The :class:`FeatureCache` for a step's ``cache`` parameter, or ``None``.

    ``True`` means process memory; ``False`` or ``None`` means no caching; a
    string or path means that directory plus process memory.
    """
    if cache is True:
        return FeatureCache(None, memory=True)
    if cache is False or cache is None:
        return None
    if isinstance(cache, (str, os.PathLike)):
        return FeatureCache(cache, memory=True)
    raise ValueError(f"cache must be True, False, None or a directory path; got {cache!r}")


def cached_per_sample(cache, token, samples, compute):
    """``{sample key: output}`` for ``samples``, computing only what ``cache`` lacks.

    Parameters
    ----------
    cache : FeatureCache or None
        From :func:`get_cache`; ``None`` computes everything.
    token : str
        The step's cache token (:func:`featurepipe.base.step_token`).
    samples : sequence of Sample
    compute : callable
        ``compute(missing_samples) -> sequence of arrays`` aligned with its
        input; called at most once, with each missing key once.
    """
    unique = {}
    for sample in samples:
        unique.setdefault(sample.key, sample)
    found = cache.get_many(token, unique) if cache is not None else {}
    missing = [s for key, s in unique.items() if key not in found]
    if missing:
        new = dict(zip((s.key for s in missing), compute(missing)))
        if cache is not None:
            cache.set_many(token, new)
        found.update(new)
    return found
