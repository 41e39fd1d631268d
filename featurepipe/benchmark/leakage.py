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
* **single-class predictions** — a pipeline that predicts one class on a
  fold (MCC 0, balanced accuracy 1/k: it learned nothing, typically the
  majority class of an imbalanced set) is flagged with the folds affected;
* **the mask cue** ("was it cropped?") — when a pipeline reads the masks and
  their mere presence predicts the label in-fold (BUSI's normal images have
  empty masks), its scores may come from the annotation, not the image;
* **annotation masks** — when the images carry masks (lesion outlines drawn
  by experts), the runner recomputes each pipeline's stateless prefix on two
  images with and without their masks: if the output changes, the pipeline
  reads the masks of *test* images too (a prefix that works with masks and
  refuses images without them, like ``CropToMask``, reads them too), so its scores are those of a method
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
from sklearn.base import clone
from sklearn.pipeline import FeatureUnion, Pipeline

from ..sample import Sample, as_samples

__all__ = ["straddling_groups", "find_samplers", "single_class_predictions", "mask_cue_probe", "leakage_report",
           "mask_probe_images", "prefix_uses_masks", "mask_fractions"]

#: The mask cue is reported as a leak when its in-fold balanced accuracy exceeds chance by more than this.
MASK_CUE_MARGIN = 0.1

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


def single_class_predictions(folds):
    """Folds on which a pipeline predicted a single class (a classifier that learned nothing).

    Parameters
    ----------
    folds : list of dict
        The pipeline's finished fold records (``repeat``, ``fold``, ``y_pred``,
        ``metrics`` with ``mcc`` and ``balanced_accuracy``); failed ones are ignored.

    Returns
    -------
    dict
        ``n_folds``, ``n_single_class_folds``, ``classes`` (class -> number of
        folds predicting only it), ``pooled`` (the class if all pooled
        predictions are one class, else ``None``), ``folds`` (repeat, fold,
        class, mcc, balanced_accuracy of each such fold) and ``message`` (a
        sentence for the report, ``None`` when no fold is affected).

    Examples
    --------
    >>> rec = {"repeat": 0, "fold": 0, "status": "ok", "y_pred": ["a", "a"],
    ...        "metrics": {"mcc": 0.0, "balanced_accuracy": 0.5}}
    >>> single_class_predictions([rec])["message"]
    "predicts only 'a' on 1 of 1 folds (MCC 0, balanced accuracy 0.5)"
    """
    recs = [r for r in folds if r.get("status", "ok") == "ok"]
    single, classes = [], {}
    for r in recs:
        predicted = {str(v) for v in r["y_pred"]}
        if len(predicted) == 1:
            cls = predicted.pop()
            classes[cls] = classes.get(cls, 0) + 1
            single.append({"repeat": r["repeat"], "fold": r["fold"], "class": cls,
                           "mcc": r["metrics"].get("mcc"), "balanced_accuracy": r["metrics"].get("balanced_accuracy")})
    pooled = {str(v) for r in recs for v in r["y_pred"]}
    message = None
    if single:
        def mean(metric):
            values = [f[metric] for f in single if f[metric] is not None and np.isfinite(f[metric])]
            return f"{float(np.mean(values)):.3g}" if values else "n/a"

        what = (f"only {next(iter(classes))!r}" if len(classes) == 1 else "a single class")
        detail = "" if len(classes) == 1 else ", ".join(f"{c!r} on {n}" for c, n in sorted(classes.items())) + "; "
        message = (f"predicts {what} on {len(single)} of {len(recs)} folds "
                   f"({detail}MCC {mean('mcc')}, balanced accuracy {mean('balanced_accuracy')})")
    return {"n_folds": len(recs), "n_single_class_folds": len(single), "classes": classes,
            "pooled": next(iter(pooled)) if len(pooled) == 1 else None, "folds": single, "message": message}


def mask_cue_probe(mask_fraction, y, splits):
    """How well the annotation mask alone — is there one, how large — predicts the label, in-fold.

    A logistic regression (balanced class weights) on the mask's presence
    (any foreground pixel) is fitted on each split's training part and scored
    on its test part. When a class has no masks (BUSI's normal images),
    presence alone gives that class away, and any pipeline that reads masks
    (crops to them, or describes their region) can learn "was it cropped?"
    instead of the anatomy. The same with the mask's area fraction added is
    reported for information only: lesion size is a legitimate cue.

    Parameters
    ----------
    mask_fraction : array-like of shape (n_samples,)
        Fraction of each image's pixels inside its mask (0 for no mask or an empty one).
    y : array-like of shape (n_samples,)
    splits : list of Split

    Returns
    -------
    dict
        ``balanced_accuracy`` of mask presence (mean over the splits),
        ``balanced_accuracy_with_area``, ``chance`` (1 / number of classes),
        ``classes_without_mask`` (classes whose images all lack a mask) and
        ``predicts_label`` (presence's balanced accuracy above chance by more
        than :data:`MASK_CUE_MARGIN`).

    Examples
    --------
    >>> from featurepipe.benchmark.splits import CVSpec, make_splits
    >>> y = np.array(["normal", "lesion"] * 10)
    >>> fraction = np.where(y == "normal", 0.0, 0.2)
    >>> probe = mask_cue_probe(fraction, y, make_splits(y, np.arange(20), CVSpec(5, 1, 0)))
    >>> probe["balanced_accuracy"], probe["predicts_label"], probe["classes_without_mask"]
    (1.0, True, ['normal'])
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score

    fraction = np.asarray(mask_fraction, dtype=np.float64)
    y = np.asarray(y)
    present = (fraction > 0).astype(np.float64)[:, None]
    labels = sorted(set(y.tolist()), key=str)

    def in_fold(cues):
        scores = []
        for split in splits:
            train, test = np.asarray(split.train), np.asarray(split.test)
            if len(set(y[train].tolist())) < 2:
                continue
            model = LogisticRegression(class_weight="balanced").fit(cues[train], y[train])
            scores.append(balanced_accuracy_score(y[test], model.predict(cues[test])))
        return float(np.mean(scores)) if scores else float("nan")

    chance = 1.0 / len(labels)
    presence = in_fold(present)
    with_area = in_fold(np.hstack([present, fraction[:, None]]))
    return {"balanced_accuracy": presence, "balanced_accuracy_with_area": with_area,
            "chance": chance, "classes_without_mask": [str(c) for c in labels if not np.any(fraction[y == c] > 0)],
            "predicts_label": bool(np.isfinite(presence) and presence > chance + MASK_CUE_MARGIN)}


def leakage_report(splits, *, patient_groups, duplicate_clusters, duplicates_method, pipelines, prefixes,
                   tuned, mask_use=None, has_masks=False, structure=None, excluded=None, single_class=None,
                   mask_cue=None):
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
    single_class : dict name -> dict, optional
        :func:`single_class_predictions` of each pipeline's folds; reported per
        pipeline and warned about when some fold predicts a single class.
    mask_cue : dict, optional
        :func:`mask_cue_probe` on the run's splits; reported as
        ``report["mask_cue"]`` and warned about when the cue predicts the
        label and some pipeline reads the masks.
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
    single_class = single_class or {}
    if mask_cue is not None:
        readers = [name for name in pipelines if mask_use.get(name) is True]
        report["mask_cue"] = {**mask_cue, "pipelines_reading_masks": readers}
        if mask_cue["predicts_label"] and readers:
            without = mask_cue["classes_without_mask"]
            warnings_out.append(
                f"the annotation masks predict the label (mask presence alone: in-fold balanced accuracy "
                f"{mask_cue['balanced_accuracy']:.2f} vs chance {mask_cue['chance']:.2f}"
                + (f"; class(es) {', '.join(map(repr, without))} have no mask" if without else "")
                + f") and pipeline(s) {', '.join(map(repr, readers))} read the masks: their scores may come from "
                "'was it cropped/annotated?' rather than the image (use a task where every image has a region, "
                "e.g. benign-vs-malignant)")
    per_pipeline = {}
    for name, estimator in pipelines.items():
        uses = mask_use.get(name, "not checked")
        if uses is True:
            warnings_out.append(f"pipeline {name!r} reads the annotation masks of test images (its features "
                                "change without them): its scores assume expert segmentations at prediction time")
        single = single_class.get(name)
        if single is not None and single["message"]:
            warnings_out.append(f"pipeline {name!r} {single['message']}")
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
        if single is not None:
            per_pipeline[name]["single_class_predictions"] = single
    report["pipelines"] = per_pipeline
    report["undetectable"] = UNDETECTABLE_NOTE
    report["warnings"] = warnings_out
    report["status"] = "ok" if not warnings_out else "warnings"
    return report


# ----------------------------------------------------------------------------- mask probes
def mask_probe_images(samples, n_probe=2, max_scan=200):
    """Up to ``n_probe`` (image, mask) pairs with a partial mask (some pixels in, some out)."""
    found = []
    for sample in samples[:max_scan]:
        meta = sample.meta
        source = getattr(sample, "_source", None)
        if not meta.get("mask_paths") and getattr(source, "mask", None) is None and \
                not hasattr(source, "parent"):
            continue  # a file sample without mask files, or an array sample without a mask
        try:
            image, mask = sample.load()
        except Exception:  # an unreadable image is reported elsewhere; the probe only needs two good ones
            continue
        if mask is not None and mask.any() and not mask.all():
            found.append((image, mask))
            if len(found) == n_probe:
                break
    return found


def _outputs_differ(a, b):
    if isinstance(a, np.ndarray) and a.dtype != object:
        return not np.allclose(a, b, equal_nan=True)
    return any(not np.array_equal(x.image, z.image) for x, z in zip(a, b))


def prefix_uses_masks(prefix, probe):
    """Whether the stateless prefix's output changes when the probe images lose their masks.

    ``prefix`` is a pipeline of stateless steps (or ``None``), ``probe`` the pairs of
    :func:`mask_probe_images`. Returns ``True``/``False``, or a string saying why it could not
    be checked (the probe never stops a benchmark).
    """
    if prefix is None:
        return "not checked (no stateless prefix to probe)"
    if not probe:
        return False
    try:
        step = clone(prefix)
        with_mask = as_samples([Sample.from_array(image, mask) for image, mask in probe])
        without = as_samples([Sample.from_array(image) for image, _ in probe])
        step.fit(with_mask)
        masked = step.transform(with_mask)
    except Exception as exc:  # the probe must never stop a benchmark
        return f"not checked ({type(exc).__name__}: {exc})"
    try:
        unmasked = step.transform(without)
    except Exception:  # works with masks, refuses without them (CropToMask): it reads them
        return True
    try:
        return bool(_outputs_differ(masked, unmasked))
    except Exception as exc:
        return f"not checked ({type(exc).__name__}: {exc})"


def mask_fractions(samples):
    """Fraction of each sample's pixels inside its mask (0 without a mask), for the mask-cue probe."""
    out = np.zeros(len(samples), dtype=np.float64)
    for i, sample in enumerate(samples):
        try:
            mask = sample.mask
        except Exception:  # unreadable images were excluded before; the probe must never stop a benchmark
            continue
        if mask is not None and mask.size:
            out[i] = float(np.count_nonzero(mask)) / mask.size
    return out
