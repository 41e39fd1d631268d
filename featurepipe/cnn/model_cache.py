"""The per-process model cache: the only global state of :mod:`featurepipe.cnn`.

Building a Keras network takes seconds and hundreds of megabytes, tracing its
``tf.function`` or converting it for ONNX Runtime / OpenVINO takes longer.
Every clone of a :class:`~featurepipe.cnn.CNNFeatures` in a grid search must
share them, so they live here, in :data:`MODEL_CACHE`, for the life of the
process; nothing in it is pickled or part of a cache key.

Entries are keyed by tuples ``(kind, backbone, ...)``: the kind of object
(``"model"``, ``"runner"``, ``"session"`` …) and the registered backbone name
it was built from, then whatever else identifies it. That lets
:meth:`ModelCache.invalidate` forget everything built from one backbone when
it is re-registered, and :meth:`ModelCache.discard` forget one kind (e.g. the
runtime sessions, to read converted models from disk again).

Examples
--------
>>> cache = ModelCache()
>>> built = []
>>> def build():
...     built.append(1)
...     return object()
>>> first = cache.get_or_build(("model", "net", 0), build)
>>> cache.get_or_build(("model", "net", 0), build) is first, len(built)
(True, 1)
>>> cache.invalidate("net")
>>> cache.generation("net"), ("model", "net", 0) in cache
(1, False)
"""

from __future__ import annotations

import threading
import uuid

__all__ = ["MODEL_CACHE", "ModelCache", "clear_model_cache"]


class ModelCache:
    """Thread-safe per-process store of built networks and the objects derived from them.

    Two threads asking for the same missing key build it once (the second
    waits for the first); different keys build concurrently. A build that
    was running while the cache was cleared (or its backbone invalidated)
    returns its value but does not store it, so a clear really forgets
    everything built before it.
    """

    def __init__(self):
        self._lock = threading.RLock()
        self._entries = {}
        self._building = {}  # key -> lock held while that key is built
        self._generations = {}  # backbone -> times it was (re-)registered or removed
        self._epoch = 0  # times anything was forgotten
        self._clears = 0  # times everything was forgotten
        # Random (weights=None) networks differ between processes and between rebuilds: features computed
        # with them are keyed by this nonce and the epoch (see random_weights_token).
        self._nonce = uuid.uuid4().hex[:16]

    def get_or_build(self, key, build):
        """The value cached under ``key``, or ``build()`` stored under it.

        Parameters
        ----------
        key : tuple
            ``(kind, backbone, ...)``, hashable.
        build : callable
            Called without arguments when ``key`` is missing; returns the value.
        """
        if not isinstance(key, tuple) or len(key) < 2:
            raise ValueError(f"ModelCache keys are tuples (kind, backbone, ...); got {key!r}")
        with self._lock:
            if key in self._entries:
                return self._entries[key]
            key_lock = self._building.setdefault(key, threading.Lock())
            started = (self._clears, self._generations.get(key[1], 0))
        with key_lock:
            with self._lock:
                if key in self._entries:  # built by another thread while this one waited
                    return self._entries[key]
            try:
                value = build()
            finally:
                with self._lock:
                    self._building.pop(key, None)
            with self._lock:
                if (self._clears, self._generations.get(key[1], 0)) == started:
                    self._entries[key] = value
            return value

    def generation(self, backbone):
        """How many times ``backbone`` was re-registered or removed (part of keys, so stale builds are never served)."""
        with self._lock:
            return self._generations.get(backbone, 0)

    def invalidate(self, backbone):
        """Forget everything built from ``backbone`` (its registration changed) and bump its generation."""
        with self._lock:
            self._generations[backbone] = self._generations.get(backbone, 0) + 1
            self._epoch += 1
            for key in [k for k in self._entries if k[1] == backbone]:
                del self._entries[key]

    def discard(self, kind):
        """Forget every entry of one ``kind`` (e.g. ``"session"``); the rest stays."""
        with self._lock:
            for key in [k for k in self._entries if k[0] == kind]:
                del self._entries[key]

    def clear(self):
        """Forget every entry (frees memory; the next use rebuilds)."""
        with self._lock:
            self._epoch += 1
            self._clears += 1
            self._entries.clear()

    def random_weights_token(self):
        """Identifies this process's random (``weights=None``) networks in feature-cache keys.

        It changes with every :meth:`clear` or :meth:`invalidate`, since the
        rebuilt networks get new random weights.
        """
        with self._lock:
            return f"{self._nonce}.{self._epoch}"

    def __contains__(self, key):
        with self._lock:
            return key in self._entries

    def __len__(self):
        with self._lock:
            return len(self._entries)

    def __repr__(self):
        return f"ModelCache({len(self)} entries)"


#: The process-wide cache used by :func:`featurepipe.cnn.load_backbone`, the extractor and the runtimes.
MODEL_CACHE = ModelCache()


def clear_model_cache():
    """Forget every built model, compiled function and runtime session (frees memory; the next use rebuilds)."""
    MODEL_CACHE.clear()
