"""The leakage report: what could let test information into training, checked on the real splits.

Checked from the splits actually used:

* **duplicate clusters** — copies of one image must all fall on the same
  side of every split (count of clusters split between train and test:
  must be 0);
* **groups** — images of one patient likewise;
* **fold sizes** — how many independent groups the merging of patients
  and duplicate clusters left, the largest of them, and every fold's
  train/test size (the runner refuses folds that are degenerate, so a
  report exists only for usable ones).

Checked by inspecting each evaluated pipeline:

* **resampling / augmentation** (SMOTE, random oversampling, featurepipe's
  augmenting sampler …: anything with ``fit_resample``) — inside an
  imbalanced-learn :class:`~imblearn.pipeline.Pipeline` a sampler runs only
  in ``fit``, i.e. on the training part of each fold, never on test images;
* **the stateless prefix** — the steps computed once on all samples; they
  learn nothing from data, so this is not leakage (listed for the record);
* **tuning** — with a parameter grid, hyper-parameters are chosen by an
  inner CV on each outer training part only (nested CV);
* **annotation masks** — when the images carry masks (lesion outlines drawn
  by experts), the runner recomputes each pipeline's stateless prefix on two
  images with and without their masks: if the output changes, the pipeline
  reads the masks of *test* images too, so its scores are those of a method
  that is handed the expert segmentation at prediction time (and an empty
  mask can give a class away). That is flagged, not forbidden: shape
  features need masks, but the paper must say so.

What cannot be detected: data that were oversampled or augmented *before*
they were handed to the runner (synthetic SMOTE samples are new images
with no link to their parents). Exact copies made by naive oversampling are
caught by the duplicate check; anything else is the user's responsibility.
"""

from __future__ import annotations

import numpy as np
from sklearn.pipeline import FeatureUnion, Pipeline

__all__ = ["straddling_groups", "find_samplers", "leakage_report"]

UNDETECTABLE_NOTE = (
    "Oversampling or augmentation applied to the data before they reached the runner cannot be "
    "detected (synthetic samples carry no link to their parents); exact copies are caught by the "
    "duplicate check."
)


def straddling_groups(splits, labels):
    """Per split, the label values found on both the training and the test side.

    Parameters
    ----------
    splits : list of Split
    labels : array-like of shape (n_samples,)
        Group or cluster id per sample (``None``: no constraint).

    Returns
    -------
    list of dict
        ``{"repeat", "fold", "values": [...]}`` for each split with at least one straddler.
    """
    labels = np.asarray(labels, dtype=object)
    out = []
    for split in splits:
        train_values = {v for v in labels[split.train] if v is not None}
        test_values = {v for v in labels[split.test] if v is not None}
        both = sorted(train_values & test_values, key=str)
        if both:
            out.append({"repeat": split.repeat, "fold": split.fold, "values": both})
    return out


def _is_imblearn_pipeline(obj):
    return type(obj).__module__.startswith("imblearn") and isinstance(obj, Pipeline)


def find_samplers(estimator, path="", inside_imblearn=False):
    """Every resampling step (anything with ``fit_resample``) in an estimator, recursively.

    Returns
    -------
    list of dict
        ``{"step": dotted path, "class": name, "inside_training_folds": bool, "where": text}``.
    """
    found = []
    if hasattr(estimator, "fit_resample") and not isinstance(estimator, Pipeline):
        inside = inside_imblearn
        where = ("in an imbalanced-learn Pipeline: runs in fit only, i.e. on the training part of each fold"
                 if inside else
                 "NOT inside an imbalanced-learn Pipeline: it may have resampled data outside the training folds")
        found.append({"step": path or type(estimator).__name__, "class": type(estimator).__name__,
                      "inside_training_folds": inside, "where": where})
        return found
    if isinstance(estimator, Pipeline):
        imb = _is_imblearn_pipeline(estimator)
        for name, step in estimator.steps:
            found += find_samplers(step, f"{path}.{name}" if path else name, imb)
    elif isinstance(estimator, FeatureUnion):
        for name, step in estimator.transformer_list:
            found += find_samplers(step, f"{path}.{name}" if path else name, False)
    else:
        # Meta-estimators (GridSearchCV, bagging …) wrap their estimator: look inside.
        for attr in ("estimator", "base_estimator"):
            inner = getattr(estimator, attr, None)
            if inner is not None and hasattr(inner, "get_params"):
                found += find_samplers(inner, f"{path}.{attr}" if path else attr, inside_imblearn)
    return found


def leakage_report(splits, *, patient_groups, duplicate_clusters, duplicates_method, pipelines, prefixes,
                   tuned, mask_use=None, has_masks=False, structure=None, excluded=None):
    """Build the leakage report (a JSON-ready dict).

    Parameters
    ----------
    splits : list of Split
    patient_groups : array-like
        Patient / group id per sample as given by the dataset (``None`` entries: no group).
    duplicate_clusters : array-like or None
        Duplicate-cluster id per sample, ``None`` when duplicates were not checked.
    duplicates_method : str
        How clusters were found (reported).
    pipelines : dict name -> estimator
    prefixes : dict name -> list of step names computed once on all samples
    tuned : dict name -> bool (nested CV with a grid)
    mask_use : dict name -> bool or str, optional
        Whether each pipeline's features depend on the masks (or why unknown).
    has_masks : bool
        Whether the images carry (partial) masks at all.
    structure : dict, optional
        What the grouping left (from the runner): ``n_independent_groups``,
        ``largest_groups``, ``fold_sizes``, ``max_test_over_mean``; reported
        as ``report["splits"]``.
    excluded : list of dict, optional
        Images excluded for every pipeline (``name``, ``path``, ``reason``);
        reported as ``report["excluded_images"]``.
    """
    warnings_out = []
    report = {}
    if duplicate_clusters is None:
        report["duplicates"] = {"method": duplicates_method, "status": "not checked",
                                "note": "duplicates='none': copies of an image may sit in both train and test"}
        warnings_out.append("duplicate images were not checked (duplicates='none')")
    else:
        clusters = np.asarray(duplicate_clusters)
        values, counts = np.unique(clusters, return_counts=True)
        multi = set(values[counts > 1].tolist())
        labels = np.array([c if c in multi else None for c in clusters.tolist()], dtype=object)
        straddle = straddling_groups(splits, labels)
        n_straddle = sum(len(s["values"]) for s in straddle)
        report["duplicates"] = {
            "method": duplicates_method,
            "n_clusters_with_copies": len(multi),
            "n_samples_in_such_clusters": int(counts[counts > 1].sum()),
            "straddling": n_straddle,
            "straddling_detail": straddle,
            "status": "ok" if n_straddle == 0 else "LEAK",
        }
        if n_straddle:
            warnings_out.append(f"{n_straddle} duplicate cluster(s) split between train and test")
        if duplicates_method.startswith("exact"):
            report["duplicates"]["note"] = ("only bit-identical copies were grouped; near duplicates (re-saved, "
                                            "cropped or annotated copies) need duplicates=find_duplicates(dataset)")
    groups = np.array(list(patient_groups), dtype=object)
    values, counts = np.unique(np.array([str(g) for g in groups if g is not None]), return_counts=True)
    straddle = straddling_groups(splits, groups)
    n_straddle = sum(len(s["values"]) for s in straddle)
    report["groups"] = {
        "n_groups": len(values),
        "n_groups_with_several_samples": int((counts > 1).sum()),
        "straddling": n_straddle,
        "straddling_detail": straddle,
        "status": "ok" if n_straddle == 0 else "LEAK",
    }
    if n_straddle:
        warnings_out.append(f"{n_straddle} patient group(s) split between train and test")

    if structure is not None:
        report["splits"] = {**structure, "status": "ok"}
    report["excluded_images"] = list(excluded or [])
    if excluded:
        warnings_out.append(f"{len(excluded)} image(s) could not be processed and were excluded for every pipeline "
                            "(listed under 'Excluded images')")

    mask_use = mask_use or {}
    per_pipeline = {}
    for name, estimator in pipelines.items():
        uses = mask_use.get(name, "not checked")
        if uses is True:
            warnings_out.append(f"pipeline {name!r} reads the annotation masks of test images (its features "
                                "change without them): its scores assume expert segmentations at prediction time")
        samplers = find_samplers(estimator)
        for s in samplers:
            if not s["inside_training_folds"]:
                warnings_out.append(f"pipeline {name!r}: sampler {s['step']} is not inside an imblearn Pipeline")
        per_pipeline[name] = {
            "resampling": samplers,
            "resampling_summary": ("none" if not samplers else
                                   "inside training folds only" if all(s["inside_training_folds"] for s in samplers)
                                   else "OUTSIDE training folds"),
            "stateless_prefix_computed_once": list(prefixes.get(name, [])),
            "tuning": ("nested CV: hyper-parameters chosen by inner CV on each outer training part"
                       if tuned.get(name) else "fixed hyper-parameters (no tuning on test folds)"),
            "uses_annotation_masks": uses if has_masks else "no masks in the data",
        }
    report["pipelines"] = per_pipeline
    report["undetectable"] = UNDETECTABLE_NOTE
    report["warnings"] = warnings_out
    report["status"] = "ok" if not warnings_out else "warnings"
    return report
