"""Grouped, stratified, optionally repeated CV splits shared by every pipeline.

Samples that must never be separated — images of one patient, and copies of
one image (duplicate clusters) — are merged into connected groups
(:func:`featurepipe.model_selection.merge_groups`), and the splits keep each group whole on one side:
stratified by class as far as the groups allow, by the one splitter of the
package, :class:`featurepipe.model_selection.RepeatedStratifiedGroupKFold`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..model_selection import RepeatedStratifiedGroupKFold
from ..duplicates import find_duplicates
from ..sample import hash_bytes

__all__ = ["CVSpec", "Split", "exact_duplicate_clusters", "make_splits", "splits_fingerprint"]


@dataclass(frozen=True)
class CVSpec:
    """Outer cross-validation: ``n_repeats`` × stratified grouped ``n_splits``-fold, seeded.

    Parameters
    ----------
    n_splits : int, default=5
        Folds per repeat (>= 2).
    n_repeats : int, default=1
        Independent reshufflings of the groups into folds.
    random_state : int, default=0
        Seed; the same seed gives the same splits (required for resuming).
    """

    n_splits: int = 5
    n_repeats: int = 1
    random_state: int = 0

    @classmethod
    def coerce(cls, cv, *, name="cv"):
        """A :class:`CVSpec` from an int (``n_splits``), a dict of its fields, or a CVSpec."""
        if isinstance(cv, CVSpec):
            spec = cv
        elif isinstance(cv, (int, np.integer)) and not isinstance(cv, bool):
            spec = cls(n_splits=int(cv))
        elif isinstance(cv, dict):
            unknown = set(cv) - {"n_splits", "n_repeats", "random_state"}
            if unknown:
                raise ValueError(
                    f"{name} has unknown keys {sorted(unknown)}; allowed: n_splits, n_repeats, random_state")
            spec = cls(**cv)
        else:
            raise TypeError(
                f"{name} must be an int (number of folds), a dict with n_splits/n_repeats/random_state, or a "
                f"CVSpec; got {type(cv).__name__}"
            )
        spec.validate(name)
        return spec

    def validate(self, name="cv"):
        for field, minimum in (("n_splits", 2), ("n_repeats", 1)):
            value = getattr(self, field)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
                raise ValueError(f"{name}.{field} must be an integer >= {minimum}; got {value!r}")
        if not isinstance(self.random_state, (int, np.integer)) or isinstance(self.random_state, bool):
            raise ValueError(
                f"{name}.random_state must be an integer (fixed splits are needed to compare pipelines on the "
                f"same folds and to resume); got {self.random_state!r}"
            )

    def as_dict(self):
        return {"n_splits": int(self.n_splits), "n_repeats": int(self.n_repeats),
                "random_state": int(self.random_state)}


@dataclass(frozen=True)
class Split:
    """One outer fold: ``train`` and ``test`` are sorted sample indices."""

    repeat: int
    fold: int
    train: np.ndarray
    test: np.ndarray

    @property
    def id(self):
        return (self.repeat, self.fold)


def exact_duplicate_clusters(samples, errors=None):
    """Cluster id per sample: samples with bit-identical decoded images share one.

    Two files with the same pixels (whatever their names, masks or
    encodings) are one cluster. Returns an int array of shape
    ``(n_samples,)``; a sample without copies is a cluster of its own.
    This is :func:`featurepipe.duplicates.find_duplicates` with
    ``method="exact"``.

    Parameters
    ----------
    samples : sequence of Sample
    errors : list, optional
        Without it an unreadable image raises. With a list, each unreadable
        sample gets a cluster of its own and ``(index, reason)`` is appended.
    """
    report = find_duplicates(samples, method="exact", on_error="raise" if errors is None else "report")
    if errors is not None:
        errors.extend((int(i), reason) for i, _, reason in report.unreadable)
    return np.asarray(report.cluster_ids, dtype=np.int64)


def make_splits(y, groups, spec):
    """The outer splits for labels ``y`` and merged ``groups`` under ``spec`` (a :class:`CVSpec`).

    The folds are exactly those of
    :class:`featurepipe.model_selection.RepeatedStratifiedGroupKFold` with
    the same ``n_splits``, ``n_repeats`` and ``random_state`` (the one
    splitter of featurepipe), so ``GridSearchCV(cv=RepeatedStratifiedGroupKFold(...))``
    and :func:`~featurepipe.benchmark.run_benchmark` evaluate on the same folds.

    Raises
    ------
    ValueError
        When there are fewer groups than folds, or a class occurs in fewer
        groups than folds (the message names the class, its group count and
        ``n_splits``).
    """
    spec = CVSpec.coerce(spec)
    y = np.asarray(y)
    groups = np.asarray(groups, dtype=object)
    if len(y) != len(groups):
        raise ValueError(f"y has {len(y)} entries but groups has {len(groups)}")
    splitter = RepeatedStratifiedGroupKFold(n_splits=spec.n_splits, n_repeats=spec.n_repeats,
                                            random_state=int(spec.random_state))
    splits = []
    for k, (train, test) in enumerate(splitter.split(np.zeros(len(y)), y, groups)):
        splits.append(Split(k // spec.n_splits, k % spec.n_splits, np.sort(train), np.sort(test)))
    return splits


def splits_fingerprint(splits, y, groups):
    """A hash identifying the splits, labels and groups (changes when any of them does)."""
    parts = [repr([str(v) for v in np.asarray(y).tolist()]), repr(np.asarray(groups).tolist())]
    for s in splits:
        parts.append(f"{s.repeat}:{s.fold}")
        test = np.ascontiguousarray(s.test, dtype=np.int64)
        parts.append(hash_bytes(str(test.dtype), repr(test.shape), test.tobytes()))
    return hash_bytes(*parts)[:24]
