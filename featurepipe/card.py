"""Model cards: what a saved model was trained on, how well it is expected to do, and what it is for.

``featurepipe fit ... -o m.skops`` writes, beside the model, ``m.card.json``
(machine-readable) and ``m.card.md`` (the same content for people). A card
holds:

* ``model``: the model file's name, SHA-256 and format, the recipe, the full
  pipeline and its parameters;
* ``contract``: the model's input contract (:attr:`featurepipe.models.ImageModel.contract_`:
  channel mode, masks, classes, CNN backbone and input size);
* ``training_data``: the dataset source, image counts per class, patient
  groups, duplicate images found (and how they were handled), files left out;
* ``estimate``: a cross-validated estimate with confidence intervals, either
  computed by :func:`cv_estimate` (``fit --cv N``: the benchmark runner's
  grouped CV of the same pipeline) or read from a benchmark results folder by
  :func:`estimate_from_results` (``fit --from-results DIR``), or ``None``;
* ``intended_use`` and ``limitations`` (research use, not a medical device);
* ``versions`` of Python and the packages.

:func:`read_card` finds the card of a model file and says whether it
describes that very file (the SHA-256 matches).
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

from ._version import package_versions
from .datasets.manifest import file_sha256

__all__ = [
    "CARD_FORMAT",
    "INTENDED_USE",
    "build_card",
    "card_markdown",
    "card_paths",
    "cv_estimate",
    "estimate_from_results",
    "is_calibrated",
    "read_card",
    "write_card",
]

#: Version of the card layout.
CARD_FORMAT = 1

#: The intended-use statement of every card.
INTENDED_USE = ("Research use only: comparing and demonstrating image-classification pipelines on the data "
                "described below. This model is NOT a medical device. It has not been clinically validated and "
                "must not be used to diagnose, treat or make any decision about a patient.")

#: Metrics shown in the Markdown card (all of featurepipe.metrics.METRIC_NAMES are kept in the JSON).
_SHOWN_METRICS = ("accuracy", "balanced_accuracy", "sensitivity", "specificity", "f1", "roc_auc", "mcc")

def is_calibrated(model):
    """Whether ``model``'s probabilities come from a fitted calibration (a ``CalibratedClassifierCV`` head).

    Other ``predict_proba`` outputs (random-forest vote shares, an SVM's internal Platt scaling …)
    are probability estimates that nobody checked: the app does not show them as percentages.
    """
    final = getattr(model, "estimator_", model)
    while hasattr(final, "steps"):  # Pipeline: its last step
        final = final.steps[-1][1]
    final = getattr(final, "best_estimator_", final)  # a fitted search
    return hasattr(model, "predict_proba") and getattr(final, "calibrated_classifiers_", None) is not None


def card_paths(model_path):
    """``(markdown, json)`` card paths of a model file: ``m.skops`` -> ``m.card.md``, ``m.card.json``.

    >>> [p.name for p in card_paths("out/m.skops")]
    ['m.card.md', 'm.card.json']
    """
    path = Path(model_path)
    stem = path.name[: -len(path.suffix)] if path.suffix else path.name
    return path.with_name(stem + ".card.md"), path.with_name(stem + ".card.json")


def _jsonable(value):
    from .benchmark.store import to_jsonable

    return to_jsonable(value)


def _pipeline_params(estimator):
    """Parameters of ``estimator`` as JSON values (non-scalar values as their repr)."""
    params = estimator.get_params(deep=True) if hasattr(estimator, "get_params") else {}
    return {k: v if isinstance(v, (int, float, str, bool, type(None))) else repr(v) for k, v in params.items()}


# ----------------------------------------------------------------------------- estimates
def _estimate_from(result, pipeline_name, source, **extra):
    """The card's ``estimate`` section from a :class:`~featurepipe.benchmark.BenchmarkResult`."""
    summary = result.summary.get(pipeline_name)
    if summary is None:
        raise ValueError(f"the benchmark results hold no pipeline {pipeline_name!r}; they hold "
                         f"{sorted(result.summary)}")
    recs = [r for r in result.folds if r.get("pipeline") == pipeline_name]
    failed = [r for r in recs if r.get("status") != "ok"]
    return {
        "source": source,
        "pipeline": pipeline_name,
        "cv": result.config.get("cv"),
        "cv_description": result.config.get("cv_description"),
        "duplicates": result.config.get("duplicates"),
        "confidence": result.config.get("confidence"),
        "ci_method": result.config.get("ci_method"),
        "n_folds_ok": len(recs) - len(failed),
        "n_folds_failed": len(failed),
        "metrics": {m: dict(v) for m, v in summary.items()},
        "per_class": result.per_class.get(pipeline_name, {}),
        "dataset": {k: result.dataset.get(k) for k in ("name", "n_samples", "class_counts", "n_patient_groups",
                                                       "n_independent_groups")},
        **extra,
    }


def cv_estimate(estimator, dataset, *, n_splits=5, n_repeats=1, random_state=0, name="model"):
    """Cross-validate ``estimator`` on ``dataset`` with the benchmark's grouped splits; the card's estimate.

    The folds are those of :func:`featurepipe.benchmark.run_benchmark`: stratified by class and
    grouped by patient and by duplicate cluster (near duplicates merged into one group), so an
    image and its copies never sit on both sides. Metrics are
    :func:`featurepipe.metrics.compute_metrics` per fold, summarised by
    :func:`featurepipe.stats.summarize` (mean, std, corrected t-interval).

    Returns
    -------
    dict
        ``source="cv"``, ``cv`` spec, ``metrics[metric]`` = ``{mean, std, ci_low, ci_high, n, ...}``,
        ``per_class``, the fold counts and the dataset summary the estimate is about.
    """
    from .benchmark import run_benchmark

    if not isinstance(n_splits, int) or isinstance(n_splits, bool) or n_splits < 2:
        raise ValueError(f"--cv must be an integer >= 2 (folds); got {n_splits!r}")
    result = run_benchmark(dataset, {name: estimator}, cv={"n_splits": n_splits, "n_repeats": n_repeats,
                                                            "random_state": random_state},
                           output_dir=None, plots=False, progress=False, on_error="record")
    return _estimate_from(result, name, "cv")


def estimate_from_results(results_dir, pipeline_name, *, estimator=None, dataset=None, tuned=False):
    """The card's estimate read from a benchmark results folder (its ``results.json``).

    The estimate is only used when it is about this model: when ``estimator`` is given its
    parameters must equal those the benchmark recorded for ``pipeline_name``, and when
    ``dataset`` is given its size and class counts must equal the benchmark's. Otherwise a
    ``ValueError`` says what differs (a card never carries another model's numbers). A pipeline
    the benchmark tuned by nested CV is accepted only with ``tuned=True``: the model was tuned
    the same way (:func:`featurepipe.experiment.fit`), so the nested estimate describes it.
    """
    from .benchmark import BenchmarkResult

    result = BenchmarkResult.load(results_dir)
    if pipeline_name not in result.summary:
        raise ValueError(f"--from-results {str(results_dir)!r}: no pipeline {pipeline_name!r} in its results; "
                         f"it holds {sorted(result.summary)}")
    if result.pipelines.get(pipeline_name, {}).get("param_grid") and not tuned:
        raise ValueError(f"--from-results {str(results_dir)!r}: pipeline {pipeline_name!r} was tuned by nested CV "
                         "over a parameter grid; `fit` does not tune, so that estimate does not describe this model "
                         "(use --cv N, or benchmark without --grid)")
    if estimator is not None:
        recorded = result.pipelines.get(pipeline_name, {}).get("params", {})
        ours = _jsonable(_pipeline_params(estimator))
        differ = sorted(k for k in set(recorded) | set(ours) if recorded.get(k) != ours.get(k))
        if differ:
            shown = "; ".join(f"{k}: benchmark {recorded.get(k)!r}, this model {ours.get(k)!r}" for k in differ[:4])
            raise ValueError(f"--from-results {str(results_dir)!r}: pipeline {pipeline_name!r} was benchmarked with "
                             f"other parameters than this model ({len(differ)} differ: {shown}); its estimate does "
                             "not describe this model")
    if dataset is not None:
        counts = {str(k): int(v) for k, v in dataset.class_counts().items()}
        theirs = {str(k): int(v) for k, v in (result.dataset.get("class_counts") or {}).items()}
        if result.dataset.get("n_samples") != len(dataset) or counts != theirs:
            raise ValueError(f"--from-results {str(results_dir)!r}: the benchmark ran on "
                             f"{result.dataset.get('n_samples')} images {theirs}, this model is trained on "
                             f"{len(dataset)} images {counts}; its estimate does not describe this training set")
    return _estimate_from(result, pipeline_name, "benchmark results",
                          results_path=str(Path(results_dir).resolve()))


# ----------------------------------------------------------------------------- the card
def build_card(model, dataset, *, model_path=None, source=None, estimate=None, duplicates=None):
    """The model card (a JSON-ready dict) of fitted ``model`` trained on ``dataset``.

    Parameters
    ----------
    model : fitted :class:`~featurepipe.models.ImageModel`
    dataset : :class:`~featurepipe.dataset.Dataset`
        What the model was fitted on (its skipped files are listed).
    model_path : path, optional
        The saved model file (its name, size and SHA-256 go in the card).
    source : str, optional
        Where the data came from (the manifest or folder given to ``fit``).
    estimate : dict, optional
        From :func:`cv_estimate` or :func:`estimate_from_results`.
    duplicates : :class:`~featurepipe.duplicates.DuplicateReport`, optional
        Duplicate images of ``dataset`` (default: found with
        :func:`featurepipe.duplicates.find_duplicates`).
    """
    from .duplicates import find_duplicates

    contract = dict(getattr(model, "contract_", None) or {})
    if not contract:
        raise ValueError("build_card needs a fitted featurepipe.models.ImageModel (with contract_)")
    if duplicates is None:
        duplicates = find_duplicates(dataset.samples)
    groups = [s.group for s in dataset.samples]
    synthetic = bool((dataset.info or {}).get("synthetic", False))
    estimator = getattr(model, "estimator_", model)
    calibrated = is_calibrated(model)
    model_section = {"recipe": contract.get("recipe"), "options": contract.get("options"),
                     "pipeline": repr(estimator), "class": f"{type(estimator).__module__}.{type(estimator).__qualname__}",
                     "parameters": _jsonable(_pipeline_params(estimator)),
                     "outputs": ("calibrated probabilities (predict_proba of a fitted calibration)" if calibrated
                                 else "probability estimates (predict_proba), not calibrated"
                                 if hasattr(model, "predict_proba")
                                 else "decision scores (no predict_proba): not probabilities")}
    if model_path is not None:
        path = Path(model_path)
        model_section.update(file=path.name, sha256=file_sha256(path), bytes=path.stat().st_size)
    limitations = [
        f"Trained on {len(dataset)} images of {dataset.name!r}; performance on images from other scanners, "
        "sites, populations or acquisition protocols is unknown.",
        "A cross-validated estimate on one data source is optimistic for other sources; validate on "
        "external data before drawing conclusions.",
    ]
    if synthetic:
        limitations.insert(0, "SYNTHETIC training data (featurepipe.demo): not real medical images; this model "
                              "demonstrates the software only.")
    if not calibrated:
        limitations.append("The model outputs " + ("uncalibrated probability estimates" if hasattr(model, "predict_proba")
                                                    else "decision scores") +
                           ", not calibrated probabilities: do not read them as the chance of a class.")
    if contract.get("use_mask"):
        limitations.append("Needs a lesion mask with every image (its features describe the mask).")
    if estimate is None:
        limitations.append("No cross-validated estimate was computed for this model (use `featurepipe fit --cv N` "
                           "or `--from-results DIR`).")
    card = {
        "card_format": CARD_FORMAT,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model": model_section,
        "contract": contract,
        "training_data": {
            "name": dataset.name,
            "source": None if source is None else str(Path(source).resolve()),
            "root": None if dataset.root is None else str(dataset.root),
            "synthetic": synthetic,
            "note": (dataset.info or {}).get("note"),
            "n_images": len(dataset),
            "class_counts": {str(k): int(v) for k, v in dataset.class_counts().items()},
            "n_patient_groups": len({g for g in groups if g is not None}),
            "n_images_without_group": sum(g is None for g in groups),
            "duplicates": {
                "method": f"exact pixels + perceptual-hash near duplicates (Hamming distance <= "
                          f"{duplicates.threshold})",
                "n_clusters": int(duplicates.n_clusters),
                "n_images_in_clusters": int(duplicates.n_duplicate_images),
                "n_exact_pairs": int(duplicates.n_exact_pairs),
                "n_near_pairs": int(duplicates.n_near_pairs),
                "handled": ("all images were used for the final fit (copies weigh more); "
                            + ("in the estimate's cross-validation each duplicate cluster was merged with its "
                               "patients into one group, so copies never sit on both sides of a split"
                               if estimate is not None else "no cross-validation was run")),
            },
            "skipped": [{"path": str(p), "reason": str(r)} for p, r in dataset.skipped],
        },
        "estimate": None if estimate is None else _jsonable(estimate),
        "intended_use": INTENDED_USE,
        "limitations": limitations,
        "versions": package_versions(),
    }
    return card


def _fmt(value, digits=3):
    if value is None or (isinstance(value, float) and value != value):
        return "n/a"
    return f"{value:.{digits}f}"


def card_markdown(card):
    """The card as Markdown (same facts as the JSON)."""
    from .metrics import METRIC_LABELS

    model, contract, data, est = card["model"], card["contract"], card["training_data"], card["estimate"]
    title = model.get("file") or contract.get("recipe") or "model"
    lines = [f"# Model card: {title}", ""]
    if data.get("synthetic"):
        lines += ["> **SYNTHETIC training data**: this model demonstrates the software only.", ""]
    lines += ["## Intended use", "", card["intended_use"], "", "## Limitations", ""]
    lines += [f"- {text}" for text in card["limitations"]]
    lines += ["", "## Model", "",
              f"- recipe: `{contract.get('recipe')}` (options: `{json.dumps(contract.get('options'))}`)",
              f"- outputs: {model['outputs']}"]
    if model.get("sha256"):
        lines.append(f"- file: `{model['file']}` ({model['bytes']} bytes, SHA-256 `{model['sha256']}`)")
    lines += ["", "```", model["pipeline"], "```", "", "## Input contract", "",
              f"- classes: {', '.join(contract.get('classes', []))}",
              f"- channel mode: {contract.get('mode') or 'as stored'}",
              f"- lesion masks needed: {'yes' if contract.get('use_mask') else 'no'}",
              f"- CNN backbone: {contract.get('backbone') or 'none'}"
              + (f" (input size {contract.get('input_size')})" if contract.get("backbone") else ""),
              f"- written by featurepipe {contract.get('featurepipe_version')} (model format {contract.get('format')})",
              "", "## Training data", "",
              f"- dataset: {data['name']}" + (f" from `{data['source']}`" if data.get("source") else "")]
    if data.get("note"):
        lines.append(f"- note: {data['note']}")
    lines += [f"- images: {data['n_images']} ("
              + ", ".join(f"{k}: {v}" for k, v in data["class_counts"].items()) + ")",
              f"- patient groups: {data['n_patient_groups']}; images without a group: {data['n_images_without_group']}",
              f"- duplicates ({data['duplicates']['method']}): {data['duplicates']['n_clusters']} clusters, "
              f"{data['duplicates']['n_images_in_clusters']} images in them; {data['duplicates']['handled']}",
              f"- files left out: {len(data['skipped'])}"]
    lines += [f"  - `{s['path']}`: {s['reason']}" for s in data["skipped"][:50]]
    if len(data["skipped"]) > 50:
        lines.append(f"  - … {len(data['skipped']) - 50} more in the JSON card")
    lines += ["", "## Cross-validated estimate", ""]
    if est is None:
        lines.append("None computed (`featurepipe fit --cv N` or `--from-results DIR` adds one).")
    else:
        where = (f"the benchmark results in `{est['results_path']}`" if est.get("results_path")
                 else "a cross-validation of the same pipeline run by `featurepipe fit --cv`")
        lines += [f"From {where}: {est.get('cv_description')}; duplicates: {est.get('duplicates')}; "
                  f"{est['n_folds_ok']} folds" + (f", {est['n_folds_failed']} failed" if est["n_folds_failed"] else "")
                  + f". Interval: {est.get('ci_method')} at {_fmt(est.get('confidence'), 2)}.", "",
                  "| metric | mean | std | CI low | CI high |", "|---|---|---|---|---|"]
        for m in _SHOWN_METRICS:
            s = est["metrics"].get(m)
            if s:
                lines.append(f"| {METRIC_LABELS.get(m, m)} | {_fmt(s['mean'])} | {_fmt(s['std'])} | "
                             f"{_fmt(s['ci_low'])} | {_fmt(s['ci_high'])} |")
    lines += ["", "## Versions", ""] + [f"- {k}: {v}" for k, v in card["versions"].items()]
    lines += ["", f"_Card format {card['card_format']}, written {card['created']}._", ""]
    return "\n".join(lines)


def write_card(card, model_path):
    """Write ``card`` beside ``model_path`` as Markdown and JSON; returns ``(md_path, json_path)``."""
    md_path, json_path = card_paths(model_path)
    json_path.write_text(json.dumps(card, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    md_path.write_text(card_markdown(card), encoding="utf-8")
    return md_path, json_path


def read_card(model_path):
    """The card beside ``model_path``: ``(card dict or None, json path, note)``.

    ``note`` says which card is used, that none was found, that it cannot be read, or that
    it describes another file (its SHA-256 differs from the model file's); in the last two
    cases ``card`` is ``None``.
    """
    _, json_path = card_paths(model_path)
    if not json_path.is_file():
        return None, json_path, f"no model card found beside {model_path} (expected {json_path.name})"
    try:
        card = json.loads(json_path.read_text(encoding="utf-8"))
        recorded = card["model"].get("sha256")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return None, json_path, f"model card {json_path} cannot be read ({type(exc).__name__}: {exc}); ignored"
    if recorded and Path(model_path).is_file() and recorded != file_sha256(model_path):
        return None, json_path, (f"model card {json_path} describes another model file (its SHA-256 differs "
                                 f"from {model_path}'s); ignored")
    return card, json_path, f"model card: {json_path}"
