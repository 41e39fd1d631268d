"""The dataset object: samples with labels and groups, plus what could not be read."""

from __future__ import annotations

from collections import Counter

import numpy as np

from .sample import Sample

__all__ = ["Dataset", "SkippedFile"]


class SkippedFile(tuple):
    """``(path, reason)`` of a file a dataset builder could not use."""

    __slots__ = ()

    def __new__(cls, path, reason):
        return super().__new__(cls, (str(path), str(reason)))

    @property
    def path(self):
        return self[0]

    @property
    def reason(self):
        return self[1]


class Dataset:
    """Labelled samples ready for scikit-learn: ``X = ds.samples``, ``y = ds.y``, ``groups = ds.groups``.

    Parameters
    ----------
    samples : sequence of Sample
        Every sample must have a label.
    name : str
        Short name used in reports.
    root : str, optional
        Data root the sample paths were resolved against.
    skipped : list of (path, reason), optional
        Files that were found but could not be used; reported, never silently dropped.
    info : dict, optional
        Free-form facts about the dataset (layout, task, citation).
    """

    def __init__(self, samples, name="dataset", root=None, skipped=(), info=None):
        arr = np.empty(len(samples), dtype=object)
        for i, sample in enumerate(samples):
            if not isinstance(sample, Sample):
                raise TypeError(f"samples[{i}] is a {type(sample).__name__}, not a Sample")
            if sample.label is None:
                raise ValueError(f"samples[{i}] ({sample.name}) has no label")
            arr[i] = sample
        self.samples = arr
        self.name = name
        self.root = None if root is None else str(root)
        self.skipped = [SkippedFile(*item) for item in skipped]
        self.info = dict(info or {})

    @property
    def X(self):
        return self.samples

    @property
    def y(self):
        return np.array([s.label for s in self.samples])

    @property
    def groups(self):
        """Group of each sample; a sample without a group is its own group (its key)."""
        return np.array([s.group if s.group is not None else f"sample:{s.key}" for s in self.samples],
                        dtype=object)

    @property
    def classes(self):
        return np.unique(self.y)

    def class_counts(self):
        """``{label: count}`` in sorted label order."""
        counts = Counter(self.y.tolist())
        return {label: counts[label] for label in sorted(counts)}

    def __len__(self):
        return len(self.samples)

    def __iter__(self):
        return iter(self.samples)

    def __getitem__(self, index):
        """A sample for an integer; a sub-dataset for a slice, index array or boolean mask."""
        if isinstance(index, (int, np.integer)):
            return self.samples[index]
        return Dataset(list(self.samples[index]), name=self.name, root=self.root,
                       skipped=self.skipped, info=self.info)

    def with_groups(self, groups):
        """A copy whose samples carry ``groups`` (one per sample)."""
        groups = list(groups)
        if len(groups) != len(self):
            raise ValueError(f"groups has {len(groups)} entries for {len(self)} samples")
        return Dataset([s.replace(group=g) for s, g in zip(self.samples, groups)], name=self.name,
                       root=self.root, skipped=self.skipped, info=self.info)

    def __repr__(self):
        counts = ", ".join(f"{k}: {v}" for k, v in self.class_counts().items())
        extra = f", {len(self.skipped)} skipped" if self.skipped else ""
        return f"Dataset({self.name!r}, {len(self)} samples [{counts}]{extra})"
