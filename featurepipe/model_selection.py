"""Leakage-aware cross-validation: stratified, grouped, repeated K-fold, and group merging.

``RepeatedStratifiedGroupKFold`` repeats scikit-learn's
:class:`~sklearn.model_selection.StratifiedGroupKFold` with a different
shuffle per repeat: every repeat is a partition of the samples into
``n_splits`` test folds, no group is ever split across folds, and class
proportions are kept as close as the groups allow. Groups should merge
patients and duplicate clusters: :func:`merge_groups` does that.
"""

from __future__ import annotations

import numbers
import warnings

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from sklearn.model_selection import BaseCrossValidator, StratifiedGroupKFold
from sklearn.model_selection._split import GroupsConsumerMixin
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import type_of_target

__all__ = ["RepeatedStratifiedGroupKFold", "merge_groups", "check_groups_per_class", "group_labels"]


def _codes(values, name, sort=False):
    """Integer codes of arbitrary hashable values (``None`` allowed).

    Codes follow the sorted order of the values when ``sort`` is set and the
    values are mutually comparable (as ``np.unique`` orders them, so a split
    on the codes equals scikit-learn's split on the values), else their
    order of first appearance.
    """
    values = np.asarray(values, dtype=object) if not isinstance(values, np.ndarray) else values
    if values.ndim != 1:
        raise ValueError(f"{name} must be 1-D; got shape {values.shape}")
    if sort:
        try:
            uniques, codes = np.unique(values, return_inverse=True)
            return codes.astype(np.int64).ravel(), len(uniques)
        except TypeError:
            values = values.astype(object)
    values = values.astype(object)
    table = {}
    codes = np.empty(len(values), dtype=np.int64)
    for i, value in enumerate(values.tolist()):
        try:
            codes[i] = table.setdefault(value, len(table))
        except TypeError:
            raise ValueError(f"{name}[{i}] = {value!r} is not hashable; use ids such as strings or integers") \
                from None
    return codes, len(table)


def merge_groups(*groupings):
    """Merge several groupings of the same samples into one (connected components).

    Two samples end up in the same merged group when they share a value in
    any of the groupings, directly or through a chain of samples (patient A
    has a duplicate in patient B's images -> A and B form one group).

    Parameters
    ----------
    *groupings : array-like of shape (n_samples,)
        E.g. patient ids and duplicate-cluster ids. ``None`` is an ordinary
        value; give unknown patients unique ids (``Dataset.groups`` does).

    Returns
    -------
    groups : ndarray of int, shape (n_samples,)
        Merged group ids ``0, 1, ...`` in order of first appearance.
    """
    if not groupings:
        raise ValueError("merge_groups needs at least one grouping")
    n = len(groupings[0])
    rows, cols = [], []
    offset = 0
    for k, grouping in enumerate(groupings):
        codes, n_values = _codes(grouping, f"groupings[{k}]")
        if len(codes) != n:
            raise ValueError(f"groupings[{k}] has {len(codes)} entries; groupings[0] has {n}")
        # Bipartite graph: sample nodes 0..n-1, value nodes after them.
        rows.append(np.arange(n))
        cols.append(n + offset + codes)
        offset += n_values
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    size = n + offset
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(size, size))
    _, components = connected_components(graph, directed=False)
    merged, _ = _codes(components[:n], "components")
    return merged


def check_groups_per_class(y, groups, n_splits):
    """Raise ``ValueError`` when a class occurs in fewer distinct groups than ``n_splits``.

    With fewer groups than folds, some test folds cannot contain that class
    at all (a grouped split never divides a group), so per-fold metrics
    such as recall or ROC-AUC would be undefined, and a training part may
    hold a single class. The message names each such class, its group
    count and ``n_splits``.
    """
    y = np.asarray(y, dtype=object)
    codes, _ = _codes(groups, "groups")
    per_class = {}
    for label, group in zip(y.tolist(), codes.tolist()):
        per_class.setdefault(label, set()).add(group)
    short = {label: len(g) for label, g in per_class.items() if len(g) < n_splits}
    if short:
        detail = "; ".join(f"class {label!r} in {count} group(s) only"
                           for label, count in sorted(short.items(), key=lambda t: str(t[0])))
        raise ValueError(
            f"{detail}, fewer than n_splits={n_splits} (a group — patient or duplicate cluster — is never split "
            f"between folds, so some test folds would contain no sample of that class). Use n_splits <= "
            f"{min(short.values())}, or more data."
        )


def group_labels(primary, merged):
    """Label each merged group by the smallest ``primary`` value inside it.

    When merging (e.g. patients joined through duplicate clusters) joins
    nothing, the result equals ``primary`` itself, so splitting on it gives
    exactly the folds that :class:`RepeatedStratifiedGroupKFold` gives on
    ``primary`` (scikit-learn's grouped splitters depend on the order of the
    group labels, not only on the partition).

    Parameters
    ----------
    primary : array-like of shape (n_samples,)
        The user's grouping (patient ids), comparable values preferred.
    merged : array-like of shape (n_samples,)
        A coarser grouping (:func:`merge_groups` of ``primary`` and others).

    Returns
    -------
    ndarray of object, shape (n_samples,)

    Examples
    --------
    >>> group_labels(["p2", "p1", "p3"], [0, 0, 1]).tolist()
    ['p1', 'p1', 'p3']
    """
    values = np.asarray(list(primary), dtype=object)
    codes, _ = _codes(values, "primary", sort=True)
    merged_codes, n_merged = _codes(merged, "merged")
    if len(merged_codes) != len(codes):
        raise ValueError(f"merged has {len(merged_codes)} entries; primary has {len(codes)}")
    smallest = np.full(n_merged, np.iinfo(np.int64).max)
    np.minimum.at(smallest, merged_codes, codes)
    first_of_code = np.full(codes.max() + 1 if len(codes) else 0, -1)
    for i in range(len(codes) - 1, -1, -1):
        first_of_code[codes[i]] = i
    return values[first_of_code[smallest[merged_codes]]]


class RepeatedStratifiedGroupKFold(GroupsConsumerMixin, BaseCrossValidator):
    """Stratified grouped K-fold, repeated with a different shuffle each time.

    Each repeat runs :class:`sklearn.model_selection.StratifiedGroupKFold`
    with ``shuffle=True`` and a seed drawn from ``random_state``. Within a
    repeat every sample is in exactly one test fold; a group is never split
    between train and test.

    Parameters
    ----------
    n_splits : int, default=5
        Folds per repeat (at least 2).
    n_repeats : int, default=1
        Number of repeats (at least 1).
    random_state : int, RandomState instance or None, default=None
        Seeds the shuffles; an int makes ``split`` deterministic.

    Notes
    -----
    ``split`` raises ``ValueError`` when ``groups`` is missing or when a
    class occurs in fewer groups than ``n_splits`` (see
    :func:`check_groups_per_class`).
    """

    def __init__(self, n_splits=5, n_repeats=1, random_state=None):
        self.n_splits = n_splits
        self.n_repeats = n_repeats
        self.random_state = random_state

    def get_params(self, deep=True):
        """Parameters of this splitter (so that ``sklearn.base.clone`` and reports can use them)."""
        return {"n_splits": self.n_splits, "n_repeats": self.n_repeats, "random_state": self.random_state}

    def set_params(self, **params):
        """Set parameters by name; returns ``self``."""
        valid = self.get_params()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(f"invalid parameter {name!r} for {type(self).__name__}; valid: {sorted(valid)}")
            setattr(self, name, value)
        return self

    def _check_params(self):
        for name, low in (("n_splits", 2), ("n_repeats", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}; got {value!r}")

    def get_n_splits(self, X=None, y=None, groups=None):
        """Number of train/test splits: ``n_splits * n_repeats``."""
        self._check_params()
        return int(self.n_splits) * int(self.n_repeats)

    def split(self, X, y, groups=None):
        """Generate ``(train, test)`` index arrays, ``n_splits`` per repeat, repeat after repeat.

        Parameters
        ----------
        X : array-like of length n_samples
            Only its length is used (samples, paths or feature rows).
        y : array-like of shape (n_samples,)
            Class labels (binary or multi-class).
        groups : array-like of shape (n_samples,)
            Group of each sample (patient, duplicate cluster, or merged).
        """
        self._check_params()
        n_samples = X.shape[0] if hasattr(X, "shape") else len(X)
        if y is None:
            raise ValueError("RepeatedStratifiedGroupKFold needs y (class labels) to stratify")
        if groups is None:
            raise ValueError("RepeatedStratifiedGroupKFold needs groups; pass np.arange(n_samples) "
                             "when every sample is its own group")
        y = np.asarray(y)
        if y.ndim != 1 or len(y) != n_samples:
            raise ValueError(f"y must be 1-D with {n_samples} entries (one per sample); got shape {y.shape}")
        target_type = type_of_target(y)
        if target_type not in ("binary", "multiclass"):
            raise ValueError(f"y must hold class labels (binary or multiclass); got a {target_type!r} target")
        group_codes, n_groups = _codes(groups, "groups", sort=True)
        if len(group_codes) != n_samples:
            raise ValueError(f"groups has {len(group_codes)} entries; X has {n_samples} samples")
        if n_groups < self.n_splits:
            raise ValueError(f"n_splits={self.n_splits} is more than the number of groups: there are only "
                             f"{n_groups} independent groups (patients and duplicate clusters merged); use fewer "
                             "folds")
        if len(np.unique(y)) < 2:
            raise ValueError(f"at least two classes are needed; every sample has label {np.unique(y).tolist()}")
        check_groups_per_class(y, group_codes, self.n_splits)
        rng = check_random_state(self.random_state)
        seeds = rng.randint(np.iinfo(np.int32).max, size=self.n_repeats)
        for seed in seeds:
            cv = StratifiedGroupKFold(n_splits=self.n_splits, shuffle=True, random_state=int(seed))
            with warnings.catch_warnings():
                # Every class has >= n_splits groups (checked above), so scikit-learn's "least populated
                # class" warning can only count samples, not groups: it says nothing the check did not.
                warnings.filterwarnings("ignore", message=".*least populated class.*", category=UserWarning)
                folds = list(cv.split(np.zeros(n_samples), y, group_codes))
            yield from folds

    def _iter_test_indices(self, X=None, y=None, groups=None):
        # split() is overridden; this satisfies BaseCrossValidator's interface.
        for _, test in self.split(X, y, groups):
            yield test
