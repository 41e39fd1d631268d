"""Append-only JSON-lines store of per-fold results, for resumable runs.

Every finished fold (and every computed stateless prefix) is appended as
one JSON line and flushed to disk at once, so an interrupted run loses at
most the folds that were still running. A rerun reads the file and skips
every fold whose record carries the same pipeline name and configuration
hash; records written under another configuration are ignored (kept in
the file, never mixed into results).
"""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path

import numpy as np

__all__ = ["FoldStore", "to_jsonable"]


def to_jsonable(value):
    """Convert NumPy values, tuples and non-finite floats into strict JSON values.

    ``nan``/``inf`` become ``None`` (JSON has no representation for them);
    dict keys become strings.
    """
    if isinstance(value, dict):
        return {str(to_jsonable(k)) if not isinstance(k, str) else k: to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return [to_jsonable(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


class FoldStore:
    """The ``folds.jsonl`` file of a benchmark output directory.

    Parameters
    ----------
    path : str or path-like
        The JSON-lines file (created on first append).
    """

    def __init__(self, path):
        self.path = Path(path)

    def load(self):
        """All readable records, in file order.

        A line that is not valid JSON (a write torn by a crash) is skipped
        with a warning naming the line; its fold simply runs again.
        """
        if not self.path.exists():
            return []
        records = []
        with open(self.path, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    warnings.warn(f"{self.path}:{lineno}: unreadable record (interrupted write?) ignored; "
                                  "that fold will be recomputed", UserWarning, stacklevel=2)
                    continue
                if isinstance(record, dict):
                    records.append(record)
        return records

    def append(self, record):
        """Write one record as a JSON line and force it to disk."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(to_jsonable(record), allow_nan=False, separators=(",", ":"))
        # A crash can leave half a line at the end: start on a fresh line so this record stays readable.
        torn = False
        if self.path.exists() and self.path.stat().st_size > 0:
            with open(self.path, "rb") as fh:
                fh.seek(-1, os.SEEK_END)
                torn = fh.read(1) != b"\n"
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(("\n" if torn else "") + line + "\n")
            fh.flush()
            os.fsync(fh.fileno())
