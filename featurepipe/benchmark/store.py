"""Append-only JSON-lines store of per-fold results, for resumable runs.

Every finished fold (and every computed stateless prefix) is appended as
one JSON line and flushed to disk at once, so an interrupted run loses at
most the folds that were still running. A rerun reads the file and skips
every fold whose record carries the same pipeline name and configuration
hash; records written under another configuration are ignored (kept in
the file, never mixed into results).

A record is data, verified before it is reused (:func:`check_fold_record`):
its test indices and true labels must be those of the current split, and
its metrics are recomputed from its stored predictions and must match. An
edited, truncated or incomplete record is treated as not done: the fold
runs again.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import warnings
from pathlib import Path

import numpy as np

__all__ = ["FoldStore", "to_jsonable", "check_fold_record", "output_lock", "OutputLockedError", "read_experiment",
           "write_experiment", "clear_outputs", "EXPERIMENT_FILE", "LOCK_FILE"]

#: The file recording which experiment an output folder holds.
EXPERIMENT_FILE = "experiment.json"
#: The lock file of a folder being written.
LOCK_FILE = ".featurepipe.lock"
#: Files a benchmark writes into its output folder (plots are the ``*.png`` files listed in experiment.json).
RESULT_FILES = ("folds.jsonl", "results.json", "folds.csv", "fold_metrics.csv", "summary.csv", "per_class.csv",
                "comparisons.csv", "summary.md", EXPERIMENT_FILE)

#: Keys a finished fold record must carry to be reused.
FOLD_RECORD_KEYS = ("repeat", "fold", "status", "metrics", "per_class", "confusion_matrix", "test_index", "y_true",
                    "y_pred", "y_score", "time", "n_train", "n_test")


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


def _same(a, b, rtol=1e-9, atol=1e-12):
    """Equality of JSON values with a float tolerance (the recomputation may run on another CPU)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k], rtol, atol) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y, rtol, atol) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=rtol, abs_tol=atol)
    return a == b


def check_fold_record(record, *, test_index, y_true, labels, pos_label):
    """Why a stored fold record cannot be reused, or ``None`` when it is sound.

    Parameters
    ----------
    record : dict
        A ``kind == "fold"``, ``status == "ok"`` record read from ``folds.jsonl``.
    test_index : array-like of int
        The test indices of that split in the current run.
    y_true : array-like
        The current labels of those test samples.
    labels, pos_label
        As passed to :func:`featurepipe.metrics.compute_metrics`.

    Returns
    -------
    str or None
        A short reason (missing keys, other test samples or labels, metrics
        that do not follow from the stored predictions), or ``None``.
    """
    from ..metrics import METRIC_NAMES, compute_metrics

    missing = [k for k in FOLD_RECORD_KEYS if k not in record]
    if missing:
        return f"missing {', '.join(missing)}"
    if not isinstance(record["metrics"], dict) or not isinstance(record["y_pred"], list):
        return "malformed metrics or predictions"
    if record["test_index"] != [int(i) for i in test_index]:
        return "test samples differ from the split"
    if record["y_true"] != to_jsonable(list(y_true)):
        return "true labels differ from the data"
    scores = record["y_score"]
    if scores is not None:
        if not isinstance(scores, list) or any(v is None for row in scores for v in (row or [None])):
            return "malformed scores"
    try:
        result = compute_metrics(record["y_true"], record["y_pred"], scores, labels=labels, pos_label=pos_label)
    except (ValueError, TypeError) as exc:
        return f"predictions cannot be scored ({exc})"
    expected = to_jsonable({m: result[m] for m in METRIC_NAMES})
    if not _same(to_jsonable(record["metrics"]), expected):
        changed = [m for m in METRIC_NAMES if not _same(record["metrics"].get(m), expected[m])]
        return f"stored metrics do not follow from the stored predictions ({', '.join(changed)})"
    if not _same(record["confusion_matrix"], result["confusion_matrix"]) or \
            not _same(record["per_class"], to_jsonable(result["per_class"])):
        return "stored confusion matrix or per-class values do not follow from the stored predictions"
    if not (isinstance(record["time"], dict) and {"fit_s", "predict_s"} <= record["time"].keys()):
        return "missing timings"
    return None


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


class OutputLockedError(OSError):
    """Another process is writing the same benchmark output folder (an ``OSError``: the folder is busy)."""


@contextlib.contextmanager
def output_lock(directory):
    """Hold the lock of a benchmark output folder (created if needed) while the block runs.

    The lock is an advisory ``flock`` on ``directory/.featurepipe.lock``: the
    operating system releases it when the holder exits, even when killed, so
    a crash never leaves a stale lock. The file records the holder's host and
    process id for the error message.

    Raises
    ------
    OutputLockedError
        When another process (or another open lock in this one) holds it.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK_FILE
    fh = open(path, "a+", encoding="utf-8")
    try:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no advisory locks; one process per folder is on the user
            fcntl = None
        if fcntl is not None:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                fh.seek(0)
                holder = fh.read().strip() or "another process"
                raise OutputLockedError(
                    f"output folder {str(directory)!r} is being written by {holder} (lock {str(path)!r}); wait for "
                    "that run to finish or choose another output folder") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"process {os.getpid()} on {socket.gethostname()}\n")
        fh.flush()
        yield path
    finally:
        fh.close()  # closing releases the flock


def read_experiment(directory):
    """The experiment recorded in ``directory/experiment.json``, or ``None`` when there is none (or unreadable)."""
    path = Path(directory) / EXPERIMENT_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "id" in data else None


def write_experiment(directory, experiment):
    """Record ``experiment`` (a dict with an ``id``) as the folder's experiment (atomic replace)."""
    path = Path(directory) / EXPERIMENT_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(to_jsonable(experiment), indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def clear_outputs(directory):
    """Delete what a benchmark wrote into ``directory``: result files and the plots it recorded.

    Other files in the folder are left alone. Returns the paths deleted.
    """
    directory = Path(directory)
    previous = read_experiment(directory) or {}
    names = set(RESULT_FILES) | {Path(f).name for f in previous.get("files", []) if isinstance(f, str)}
    removed = []
    for name in sorted(names):
        path = directory / name
        if path.is_file() and path.parent == directory:
            path.unlink()
            removed.append(str(path))
    return removed
