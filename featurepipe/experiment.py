"""Experiments as files: one spec object for the command line, the Python API and the results folder.

An experiment names its dataset, its pipelines — each a recipe with its
*own* options, or a user's pipeline factory — the cross-validation, the
metrics and where results go. It is written in TOML::

    output = "results/busi-backbones"   # relative paths: against this file's folder

    [dataset]
    path = "busi"
    mode = "gray"

    [cv]
    splits = 5
    seed = 0

    [[pipelines]]
    name = "cnn_lite0"
    recipe = "convnet_svm_linear"
    backbone = "efficientnet_lite0"

    [[pipelines]]
    name = "hog"
    recipe = "hog_svm"
    preprocessing = ["clahe"]
    grid = { "classifier__estimator__C" = [0.1, 1.0, 10.0] }

and run with ``featurepipe benchmark --config exp.toml`` or, in Python::

    from featurepipe import experiment
    result = experiment.run(experiment.load("exp.toml"))

``featurepipe benchmark`` without ``--config`` builds the same
:class:`ExperimentSpec` from its flags (``--recipes``, ``--backbone``,
``--splits`` …), and ``--set key.path=value`` overrides any field of
either (``--set pipelines.cnn_lite0.backbone=efficientnet_lite2``
addresses a pipeline by name; ``--set recipes.hog_svm.preprocessing=[]``
every pipeline of a recipe). Both call :func:`run`, which calls
:func:`featurepipe.benchmark.run_benchmark` and then stores the *resolved*
spec as ``experiment.toml`` in the results folder (beside the runner's
``experiment.json``): the dataset path made absolute, ``cv.tune`` expanded
into each pipeline's grid. ``featurepipe benchmark --config
results/x/experiment.toml --output results/y`` replays it: the same
pipelines on the same splits, so every metric is the same.

Keys
----
Top level: ``output`` (results folder; default
``featurepipe-benchmark-<dataset name>`` in the current folder),
``metrics`` (shown in the reports; default all), ``rank_by`` (default
``"mcc"``), ``plots`` (default true), ``cache`` (where features are kept
between runs: a folder, or ``"memory"`` for this run only; default
:func:`default_cache_dir`), ``n_jobs``, ``backend``, ``scheduler`` (folds in
parallel, see :func:`~featurepipe.benchmark.run_benchmark`).

``[dataset]``: ``path`` (manifest CSV or dataset folder) or ``demo = true``
(the synthetic demo set), ``layout`` (default ``"auto"``), ``mode``
(``"gray"``/``"rgb"``; default the layout's), ``mask_suffix`` (folder
layout: mask files beside images), ``task``/``unit`` (layouts that offer
several), ``patch_context`` (mias patches sized from the annotated radius), ``allow_outside_root`` (manifests), ``duplicates`` (``"near"``,
``"exact"``, ``"none"``), ``duplicate_threshold``, ``on_error``
(``"skip"``, ``"record"``, ``"raise"``), ``pairs`` (true: paired images,
one sample per pair: the dmr-ir layout's two crops per patient folder, or a
manifest's required ``partner`` column; a manifest with that column pairs
without it; see ``docs/pairs.md``) and, for dmr-ir, ``partner_marker``.
Recipes describe pairs with the pipeline option ``pair_asymmetry``.

``[cv]``: ``splits`` (5), ``repeats`` (1), ``seed`` (0: the splits and every
recipe's ``random_state``), ``inner_splits`` (3: folds of the nested tuning
CV), ``tune`` (false: true tunes every recipe pipeline without a ``grid``
on its recipe's default grid).

``[[pipelines]]`` (one table per pipeline, in table order): ``name``
(unique; the row of the results table) and either ``recipe = "<name>"``
(see ``featurepipe recipes``) plus any option of that recipe as a key of
the same table (``backbone``, ``preprocessing``, ``balancing``,
``use_mask``, ``class_weight``, ``random_state``, and what the recipe's
builder accepts), or ``pipeline = "package.module:callable"``, a factory
called with the table's other keys as keyword arguments that returns an
unfitted scikit-learn classifier. Optional ``params`` (a table of
``set_params`` values for the built pipeline) and ``grid`` (a table of
lists: tuned by nested CV).

``fallback_backbone`` (recipe pipelines with a CNN): the backbone to run
when ``backbone``'s ImageNet weights cannot be obtained — e.g.
``backbone = "mobilenet_v2"``, ``fallback_backbone = "efficientnet_lite0"``
runs MobileNetV2 when its weights are in the Keras cache or can be
downloaded, else the offline EfficientNet-Lite0. It is decided once, when
the experiment is prepared (:func:`resolve_backbones`), and never silently:
a fallback warns, and the resolved ``experiment.toml``, ``results.json``
(``pipelines.<name>.backbone_note``) and ``summary.md`` say which backbone
and weights ran and why (``backbone_note``; the resolved spec names the
backbone that ran, so it replays the same run). ``fallback_options`` (a
table of recipe options) replace the pipeline's own when the fallback
runs, e.g. ``{ unfreeze = 29 }`` where the requested backbone's layer count
is not a valid cut of the fallback.

TOML has no null: write ``"none"`` for Python's ``None`` in recipe options,
``params`` and ``grid`` (``class_weight = "none"``).

Trust: ``pipeline = "package.module:callable"`` imports that module and
calls it, as ``python -c "import package.module"`` would. Naming code in
your own experiment file is your explicit trust in it; do not run an
experiment file from someone you do not trust (recipes alone import
nothing but featurepipe).

Examples
--------
>>> spec = loads('''
... [dataset]
... demo = true
... [[pipelines]]
... name = "hog"
... recipe = "hog_svm"
... preprocessing = ["clahe"]
... ''')
>>> spec.pipelines[0].options, spec.cv.splits
({'preprocessing': ['clahe']}, 5)
>>> apply_overrides(spec, ["cv.splits=3", "pipelines.hog.balancing=smote"]).cv.splits
3
>>> loads('[cv]\\nsplits = "five"')
Traceback (most recent call last):
...
featurepipe.experiment.SpecError: cv.splits must be an integer >= 2; got 'five'
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, as a package
    import tomli as tomllib

__all__ = ["DEMO_RECIPES", "EXPERIMENT_TOML", "CrossValidation", "DatasetSpec", "ExperimentSpec", "PipelineSpec",
           "PreparedExperiment", "SpecError", "apply_overrides", "backbone_notes", "build_pipeline",
           "default_cache_dir", "dump", "dumps", "fit", "pipeline_grid", "from_dict", "load", "load_data", "loads",
           "prepare", "resolve_backbones", "run", "validate"]

#: Recipes of ``featurepipe benchmark`` without ``--recipes``: offline CNN + SVM, texture + SVM, HOG + SVM, CNN + ELM.
DEMO_RECIPES = ("convnet_svm_linear", "firstorder_glcm_svm", "hog_svm", "convnet_elm")
#: The resolved spec a results folder stores (beside the runner's ``experiment.json``).
EXPERIMENT_TOML = "experiment.toml"
#: TOML has no null: this string stands for ``None`` in recipe options, ``params`` and ``grid``.
NONE = "none"

_PIPELINE_KEYS = ("name", "recipe", "pipeline", "params", "grid", "fallback_backbone", "fallback_options",
                  "backbone_note")
_FACTORY = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")


class SpecError(ValueError):
    """An experiment spec is malformed; ``key`` is the key path (``"pipelines[2].backbone"``, ``"cv.splits"``)."""

    def __init__(self, key, message):
        self.key = key
        super().__init__(message)


def _bad(key, value, allowed):
    from ._validation import invalid_value_message

    return SpecError(key, invalid_value_message(key, value, allowed))


def default_cache_dir():
    """The default feature cache folder: ``$FEATUREPIPE_CACHE``, else ``$XDG_CACHE_HOME/featurepipe/features``,
    else ``~/.cache/featurepipe/features``."""
    if os.environ.get("FEATUREPIPE_CACHE"):
        return os.environ["FEATUREPIPE_CACHE"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "featurepipe", "features")


# ----------------------------------------------------------------------------- the spec
@dataclass
class DatasetSpec:
    """What to load: ``path`` (manifest CSV or folder; ``None`` with ``demo``) and how (see the module docstring)."""

    path: str | None = None
    demo: bool = False
    layout: str = "auto"
    mode: str | None = None
    mask_suffix: str | None = None
    task: str | None = None
    unit: str | None = None
    patch_context: float | None = None
    allow_outside_root: bool = False
    duplicates: str = "near"
    duplicate_threshold: float | None = None
    on_error: str = "skip"
    pairs: bool = False
    partner_marker: str | None = None


@dataclass
class PipelineSpec:
    """One pipeline: a ``recipe`` with its ``options``, or a user ``pipeline`` factory (``"module:callable"``)."""

    name: str
    recipe: str | None = None
    pipeline: str | None = None
    options: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    grid: dict | None = None
    #: Backbone to run when ``backbone``'s ImageNet weights cannot be obtained (resolved by :func:`prepare`).
    fallback_backbone: str | None = None
    #: Recipe options that replace the pipeline's when the fallback runs (e.g. an ``unfreeze`` valid for it).
    fallback_options: dict = field(default_factory=dict)
    #: Which backbone and weights ran and why (written by :func:`resolve_backbones`; informational).
    backbone_note: str | None = None


@dataclass
class CrossValidation:
    """Outer CV (``splits`` × ``repeats``, ``seed``) and nested tuning (``inner_splits``, ``tune``)."""

    splits: int = 5
    repeats: int = 1
    seed: int = 0
    inner_splits: int = 3
    tune: bool = False


@dataclass
class ExperimentSpec:
    """A whole experiment: dataset, pipelines, CV, metrics and where results go (see the module docstring)."""

    dataset: DatasetSpec = field(default_factory=DatasetSpec)
    pipelines: list = field(default_factory=list)
    cv: CrossValidation = field(default_factory=CrossValidation)
    metrics: list | None = None
    rank_by: str = "mcc"
    output: str | None = None
    plots: bool = True
    cache: str | None = None
    n_jobs: int | None = None
    backend: str | None = None
    scheduler: str | None = None
    #: The file the spec was read from (named in errors; not part of the spec).
    source: str | None = field(default=None, compare=False, repr=False)

    def pipeline(self, name):
        """The :class:`PipelineSpec` called ``name`` (``SpecError`` listing the names otherwise)."""
        for p in self.pipelines:
            if p.name == name:
                return p
        raise SpecError("pipelines", f"no pipeline named {name!r}; the experiment has "
                                     f"{[p.name for p in self.pipelines]}")

    def to_dict(self):
        """The spec as TOML-ready data: ``None`` fields left out, ``None`` inside options written ``"none"``."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "source":
                continue
            if f.name == "dataset" or f.name == "cv":
                out[f.name] = {k: v for k, v in dataclasses.asdict(value).items() if v is not None}
            elif f.name == "pipelines":
                out["pipelines"] = [_pipeline_dict(p) for p in value]
            elif value is not None:
                out[f.name] = copy.deepcopy(value)
        return out


def _pipeline_dict(p):
    out = {"name": p.name}
    if p.recipe is not None:
        out["recipe"] = p.recipe
    if p.pipeline is not None:
        out["pipeline"] = p.pipeline
    out.update(_to_toml(p.options))
    if p.params:
        out["params"] = _to_toml(p.params)
    if p.grid is not None:
        out["grid"] = _to_toml(p.grid)
    if p.fallback_backbone is not None:
        out["fallback_backbone"] = p.fallback_backbone
    if p.fallback_options:
        out["fallback_options"] = _to_toml(p.fallback_options)
    if p.backbone_note is not None:
        out["backbone_note"] = p.backbone_note
    return out


def _to_toml(value):
    if value is None:
        return NONE
    if isinstance(value, dict):
        return {str(k): _to_toml(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_toml(v) for v in value]
    return value


def _from_toml(value):
    if isinstance(value, str) and value == NONE:
        return None
    if isinstance(value, dict):
        return {k: _from_toml(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_toml(v) for v in value]
    return value


# ----------------------------------------------------------------------------- reading and checking
def _table(data, key):
    if not isinstance(data, dict):
        raise SpecError(key, f"{key} must be a table (a [section] or {{ ... }}); got {data!r}")
    return data


def _unknown(data, allowed, where):
    for key in data:
        if key not in allowed:
            path = f"{where}.{key}" if where else key
            raise SpecError(path, f"{path}: unknown key; {where or 'the top level'} allows "
                                  f"{', '.join(allowed)}")


def _int(data, key, where, minimum, default):
    value = data.get(key, default)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise _bad(f"{where}{key}", value, f"an integer >= {minimum}")
    return value


def _bool(data, key, where, default):
    value = data.get(key, default)
    if not isinstance(value, bool):
        raise _bad(f"{where}{key}", value, "true or false")
    return value


def _str(data, key, where, default, choices=None):
    value = data.get(key, default)
    if value is None:
        return None
    if choices is not None:
        if value not in choices:
            raise _bad(f"{where}{key}", value, tuple(choices))
    elif not isinstance(value, str) or not value:
        raise _bad(f"{where}{key}", value, "a non-empty string")
    return value


def from_dict(data):
    """An :class:`ExperimentSpec` from parsed TOML data; :class:`SpecError` naming the key path when malformed.

    Checks the structure and the values that need no pipeline built; :func:`validate` builds the
    pipelines too.
    """
    from .metrics import METRIC_NAMES

    data = _table(data, "experiment")
    top = [f.name for f in dataclasses.fields(ExperimentSpec) if f.name != "source"]
    _unknown(data, top, "")
    ds = _table(data.get("dataset", {}), "dataset")
    _unknown(ds, [f.name for f in dataclasses.fields(DatasetSpec)], "dataset")
    dataset = DatasetSpec(
        path=_str(ds, "path", "dataset.", None), demo=_bool(ds, "demo", "dataset.", False),
        layout=_str(ds, "layout", "dataset.", "auto"), mode=_str(ds, "mode", "dataset.", None, ("gray", "rgb")),
        mask_suffix=_str(ds, "mask_suffix", "dataset.", None), task=_str(ds, "task", "dataset.", None),
        unit=_str(ds, "unit", "dataset.", None, ("image", "patch")),
        patch_context=ds.get("patch_context"),
        allow_outside_root=_bool(ds, "allow_outside_root", "dataset.", False),
        duplicates=_str(ds, "duplicates", "dataset.", "near", ("near", "exact", "none")),
        duplicate_threshold=ds.get("duplicate_threshold"),
        on_error=_str(ds, "on_error", "dataset.", "skip", ("skip", "record", "raise")),
        pairs=_bool(ds, "pairs", "dataset.", False), partner_marker=_str(ds, "partner_marker", "dataset.", None))
    context = dataset.patch_context
    if context is not None and (isinstance(context, bool) or not isinstance(context, (int, float)) or not
                                0 <= context < float("inf")):
        raise _bad("dataset.patch_context", context, "a number >= 0 (a fraction of the abnormality's diameter)")
    threshold = dataset.duplicate_threshold
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))
                                  or not 0 < threshold <= 1):
        raise _bad("dataset.duplicate_threshold", threshold, "a number in (0, 1]")
    if dataset.layout != "auto":
        from .datasets import LAYOUTS

        if dataset.layout not in LAYOUTS:
            raise _bad("dataset.layout", dataset.layout, ("auto", *sorted(LAYOUTS)))
    if dataset.demo and dataset.path is not None:
        raise SpecError("dataset.path", "dataset.path and dataset.demo = true exclude each other; give one")
    c = _table(data.get("cv", {}), "cv")
    _unknown(c, [f.name for f in dataclasses.fields(CrossValidation)], "cv")
    cv = CrossValidation(splits=_int(c, "splits", "cv.", 2, 5), repeats=_int(c, "repeats", "cv.", 1, 1),
                         seed=_int(c, "seed", "cv.", 0, 0), inner_splits=_int(c, "inner_splits", "cv.", 2, 3),
                         tune=_bool(c, "tune", "cv.", False))
    if cv.seed >= 2**32:
        raise _bad("cv.seed", cv.seed, "an integer in [0, 4294967295]")
    raw = data.get("pipelines", [])
    if not isinstance(raw, list):
        raise _bad("pipelines", raw, "an array of tables ([[pipelines]])")
    pipelines, seen = [], {}
    for i, entry in enumerate(raw):
        pipelines.append(_pipeline_from(entry, f"pipelines[{i}]"))
        name = pipelines[-1].name
        if name in seen:
            raise SpecError(f"pipelines[{i}].name", f"pipelines[{i}].name: {name!r} is already the name of "
                                                    f"pipelines[{seen[name]}]; pipeline names must be unique")
        seen[name] = i
    metrics = data.get("metrics")
    if metrics is not None:
        if not isinstance(metrics, list) or not metrics:
            raise _bad("metrics", metrics, f"a non-empty array of metric names from {list(METRIC_NAMES)}")
        for j, m in enumerate(metrics):
            if m not in METRIC_NAMES:
                raise _bad(f"metrics[{j}]", m, METRIC_NAMES)
    spec = ExperimentSpec(
        dataset=dataset, pipelines=pipelines, cv=cv, metrics=metrics,
        rank_by=_str(data, "rank_by", "", "mcc", METRIC_NAMES), output=_str(data, "output", "", None),
        plots=_bool(data, "plots", "", True), cache=_str(data, "cache", "", None),
        n_jobs=data.get("n_jobs"), backend=_str(data, "backend", "", None),
        scheduler=_str(data, "scheduler", "", None))
    if spec.n_jobs is not None and (not isinstance(spec.n_jobs, int) or isinstance(spec.n_jobs, bool)
                                    or spec.n_jobs == 0):
        raise _bad("n_jobs", spec.n_jobs, "a non-zero integer (-1: all cores)")
    return spec


def _pipeline_from(entry, where):
    if not isinstance(entry, dict):
        raise _bad(where, entry, "a table with name and recipe (or pipeline)")
    name = entry.get("name")
    if not isinstance(name, str) or not name.strip():
        raise _bad(f"{where}.name", name, "a non-empty string (the pipeline's row in the results)")
    recipe, factory = entry.get("recipe"), entry.get("pipeline")
    if (recipe is None) == (factory is None):
        raise SpecError(f"{where}.recipe", f"{where} ({name!r}): give exactly one of recipe = \"<recipe name>\" "
                                           "or pipeline = \"package.module:callable\"")
    if recipe is not None:
        from . import recipes

        try:
            recipes.get(recipe)
        except (KeyError, ValueError):
            raise _bad(f"{where}.recipe", recipe, tuple(r for r, _, _ in recipes.list())) from None
    if factory is not None and (not isinstance(factory, str) or not _FACTORY.match(factory)):
        raise _bad(f"{where}.pipeline", factory, "an import path \"package.module:callable\"")
    params = entry.get("params", {})
    if not isinstance(params, dict):
        raise _bad(f"{where}.params", params, "a table of parameter = value (set_params of the built pipeline)")
    grid = entry.get("grid")
    if grid is not None:
        if not isinstance(grid, dict) or not grid:
            raise _bad(f"{where}.grid", grid, "a non-empty table of parameter = [values]")
        for key, values in grid.items():
            if not isinstance(values, list) or not values:
                raise _bad(f"{where}.grid.{key}", values, "a non-empty array of values")
    fallback, note = entry.get("fallback_backbone"), entry.get("backbone_note")
    if fallback is not None:
        from .cnn.specs import BACKBONES

        if not isinstance(fallback, str) or fallback not in BACKBONES:
            raise _bad(f"{where}.fallback_backbone", fallback, tuple(BACKBONES))
        if recipe is None or not recipes.get(recipe).uses_cnn:
            raise SpecError(f"{where}.fallback_backbone", f"{where}.fallback_backbone: pipeline {name!r} runs no CNN "
                                                          f"backbone (recipe {recipe!r}), so it has nothing to fall "
                                                          "back from; remove the key")
    fallback_options = entry.get("fallback_options", {})
    if not isinstance(fallback_options, dict):
        raise _bad(f"{where}.fallback_options", fallback_options, "a table of recipe options (used with the fallback)")
    if fallback_options and fallback is None:
        raise SpecError(f"{where}.fallback_options", f"{where}.fallback_options: pipeline {name!r} has no "
                                                     "fallback_backbone for these options to apply to")
    if "backbone" in fallback_options:
        raise SpecError(f"{where}.fallback_options.backbone", f"{where}.fallback_options: give the backbone as "
                                                              "fallback_backbone, not in fallback_options")
    if note is not None and not isinstance(note, str):
        raise _bad(f"{where}.backbone_note", note, "a string")
    options = {k: v for k, v in entry.items() if k not in _PIPELINE_KEYS}
    return PipelineSpec(name=name, recipe=recipe, pipeline=factory, options=_from_toml(options),
                        params=_from_toml(params), grid=None if grid is None else _from_toml(grid),
                        fallback_backbone=fallback, fallback_options=_from_toml(fallback_options),
                        backbone_note=note)


def loads(text, *, base=None):
    """An :class:`ExperimentSpec` from TOML ``text``; relative ``dataset.path``, ``output`` and ``cache`` are
    taken against the folder ``base`` (left relative, i.e. to the current folder, without it)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError("", f"not valid TOML: {exc}") from None
    spec = from_dict(data)
    if base is not None:
        if spec.dataset.path is not None and not os.path.isabs(spec.dataset.path):
            spec.dataset.path = str(Path(base) / spec.dataset.path)
        if spec.output is not None and not os.path.isabs(spec.output):
            spec.output = str(Path(base) / spec.output)
        if spec.cache not in (None, "memory") and not os.path.isabs(spec.cache):
            spec.cache = str(Path(base) / spec.cache)
    return spec


def load(path):
    """Read the experiment file ``path`` (TOML). Relative paths in it (``dataset.path``, ``output``, ``cache``)
    are against the file's folder.

    Errors name the file and the key path.
    """
    path = Path(path)
    if not path.is_file():
        raise SpecError("", f"experiment file {str(path)!r} does not exist (or is not a file)")
    try:
        spec = loads(path.read_text(encoding="utf-8"), base=path.resolve().parent)
    except SpecError as exc:
        raise SpecError(exc.key, f"experiment file {str(path)!r}: {exc}") from None
    spec.source = str(path)
    return spec


def dumps(spec):
    """``spec`` as TOML text (what :func:`loads` reads back into an equal spec)."""
    import tomli_w

    return tomli_w.dumps(spec.to_dict())


def dump(spec, path, *, header=None):
    """Write ``spec`` to ``path`` as TOML (atomic replace), after an optional comment ``header``."""
    from ._version import __version__

    path = Path(path)
    lines = [f"# featurepipe {__version__} experiment"] + ([f"# {line}" for line in header.splitlines()]
                                                          if header else [])
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n\n" + dumps(spec), encoding="utf-8")
    os.replace(tmp, path)
    return path


# ----------------------------------------------------------------------------- --set overrides
def _parse_value(text):
    """A ``--set`` value: a TOML value (``3``, ``true``, ``[1, 2]``, ``"x"``), else the text as a string."""
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(spec, assignments):
    """A copy of ``spec`` with each ``"key.path=value"`` of ``assignments`` applied, in order.

    Paths: ``cv.splits``, ``dataset.path``, ``output``, ``pipelines.<name>.<option>`` (a pipeline by
    name; ``pipelines.<name>.params.<parameter>`` and ``pipelines.<name>.grid.<parameter>`` too), and
    ``recipes.<recipe>.<option>`` (every pipeline of that recipe). Values are TOML values, else plain
    strings (``backbone=vgg16``). A path that names nothing, or a value the spec refuses, raises
    :class:`SpecError` naming the ``--set``.
    """
    for assignment in assignments:
        where = f"--set {assignment}"
        key, sep, text = str(assignment).partition("=")
        key = key.strip()
        if not sep or not key:
            raise SpecError(key, f"{where}: expected key.path=value, e.g. cv.splits=3")
        parts = key.split(".")
        if any(not p for p in parts):
            raise SpecError(key, f"{where}: empty part in the key path {key!r}")
        data = spec.to_dict()
        value = _to_toml(_parse_value(text.strip()))
        targets = _resolve(data, parts, where)
        for container, last in targets:
            container[last] = value
        try:
            spec = dataclasses.replace(from_dict(data), source=spec.source)
        except SpecError as exc:
            raise SpecError(exc.key, f"{where}: {exc}") from None
    return spec


def _resolve(data, parts, where):
    """The (container, key) pairs a ``--set`` path names in the dict form of a spec."""
    head = parts[0]
    if head in ("pipelines", "recipes"):
        if len(parts) < 3:
            raise SpecError(".".join(parts), f"{where}: address a pipeline option as {head}.<name>.<option>")
        if head == "pipelines":
            chosen = [p for p in data["pipelines"] if p["name"] == parts[1]]
            if not chosen:
                raise SpecError(".".join(parts), f"{where}: no pipeline named {parts[1]!r}; the experiment has "
                                                 f"{[p['name'] for p in data['pipelines']]}")
        else:
            chosen = [p for p in data["pipelines"] if p.get("recipe") == parts[1]]
            if not chosen:
                raise SpecError(".".join(parts), f"{where}: no pipeline uses the recipe {parts[1]!r}; the "
                                                 f"experiment's recipes are "
                                                 f"{sorted({p['recipe'] for p in data['pipelines'] if 'recipe' in p})}")
        return [_walk(p, parts[2:], where, ".".join(parts[:2])) for p in chosen]
    return [_walk(data, parts, where, "")]


def _walk(container, parts, where, prefix):
    for depth, part in enumerate(parts[:-1]):
        path = ".".join(filter(None, [prefix, *parts[:depth + 1]]))
        if part not in container:
            container[part] = {}
        container = container[part]
        if not isinstance(container, dict):
            raise SpecError(path, f"{where}: {path} is a value, not a table; it has no key {parts[depth + 1]!r}")
    return container, parts[-1]


# ----------------------------------------------------------------------------- building
def build_pipeline(spec, p, *, index=None):
    """The unfitted estimator of pipeline spec ``p`` (options, then ``params``); errors name the key path."""
    where = f"pipelines[{index}]" if index is not None else f"pipelines.{p.name}"
    if p.recipe is not None:
        from . import recipes

        options = {"random_state": spec.cv.seed, **p.options}
        try:
            estimator = recipes.make(p.recipe, **options)
        except (TypeError, ValueError) as exc:
            mentioned = [k for k in p.options if re.search(rf"\b{re.escape(k)}\b", str(exc))]
            key = f"{where}.{mentioned[0]}" if len(mentioned) == 1 else where
            raise SpecError(key, f"{key} (pipeline {p.name!r}, recipe {p.recipe!r}): {exc}") from None
    else:
        estimator = _call_factory(p, where)
    if p.params:
        _check_names(estimator, p.params, f"{where}.params", p.name)
        try:
            estimator.set_params(**p.params)
        except (TypeError, ValueError) as exc:
            raise SpecError(f"{where}.params", f"{where}.params (pipeline {p.name!r}): {exc}") from None
    if p.grid:
        _check_names(estimator, p.grid, f"{where}.grid", p.name)
    return estimator


def _check_names(estimator, table, where, name):
    known = estimator.get_params(deep=True)
    for key in table:
        if key not in known:
            close = [k for k in known if k.endswith("__" + key.rsplit("__", 1)[-1])][:5]
            raise SpecError(f"{where}.{key}", f"{where}.{key}: pipeline {name!r} has no parameter {key!r}"
                                              + (f"; similar: {', '.join(close)}" if close else ""))


def _call_factory(p, where):
    """Import and call the user's factory ``module:callable`` (their explicit trust: they named it)."""
    module_name, _, attribute = p.pipeline.partition(":")
    try:
        target = importlib.import_module(module_name)
    except ImportError as exc:
        raise SpecError(f"{where}.pipeline", f"{where}.pipeline: cannot import {module_name!r} ({exc}); the "
                                             "module must be importable (on PYTHONPATH or installed)") from None
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise SpecError(f"{where}.pipeline", f"{where}.pipeline: {module_name!r} has no {attribute!r}")
        target = getattr(target, part)
    if not callable(target):
        raise _bad(f"{where}.pipeline", p.pipeline, "a callable returning an unfitted classifier")
    try:
        estimator = target(**p.options)
    except TypeError as exc:
        raise SpecError(where, f"{where} (pipeline {p.name!r}): {p.pipeline}(**options) failed: {exc}") from None
    if not (hasattr(estimator, "fit") and hasattr(estimator, "get_params")):
        raise SpecError(f"{where}.pipeline", f"{where}.pipeline: {p.pipeline} returned {type(estimator).__name__}, "
                                             "not a scikit-learn estimator")
    return estimator


def pipeline_grid(spec, p):
    """The grid pipeline ``p`` is tuned on: its own, or its recipe's default under ``cv.tune`` (else ``None``)."""
    if p.grid is not None:
        return p.grid
    if spec.cv.tune and p.recipe is not None:
        from . import recipes

        return recipes.grid(p.recipe)
    return None


def validate(spec):
    """Check ``spec`` fully (structure, then every pipeline built and its params/grid names); returns it."""
    source = spec.source if isinstance(spec, ExperimentSpec) else None
    spec = from_dict(spec.to_dict()) if isinstance(spec, ExperimentSpec) else from_dict(spec)
    spec.source = source
    try:
        if not spec.pipelines:
            raise SpecError("pipelines", "pipelines: the experiment has no pipeline; add [[pipelines]] tables with "
                                         "name and recipe")
        for i, p in enumerate(spec.pipelines):
            build_pipeline(spec, p, index=i)
            if p.fallback_backbone is not None:  # what runs when the fallback is taken must build too
                try:
                    build_pipeline(spec, dataclasses.replace(
                        p, options={**p.options, **p.fallback_options, "backbone": p.fallback_backbone}), index=i)
                except SpecError as exc:
                    key = f"pipelines[{i}].{'fallback_options' if p.fallback_options else 'fallback_backbone'}"
                    raise SpecError(key, f"{key}: the pipeline as it runs with the fallback "
                                         f"{p.fallback_backbone!r} does not build: {exc}") from None
    except SpecError as exc:
        if source is None:
            raise
        raise SpecError(exc.key, f"experiment file {source!r}: {exc}") from None
    return spec


# ----------------------------------------------------------------------------- backbone fallback
def _requested_backbone(p):
    """The backbone pipeline ``p`` asks for: its ``backbone`` option, else its recipe's default."""
    from . import recipes

    return p.options.get("backbone") or recipes.get(p.recipe).option_defaults["backbone"]


def resolve_backbones(spec):
    """A copy of ``spec`` whose ``fallback_backbone`` keys are resolved, each once, at plan time.

    For every pipeline with a ``fallback_backbone``: when the ImageNet weights of its ``backbone``
    can be obtained (:func:`featurepipe.cnn.weights.imagenet_weights_status`: an installed
    weights package, the Keras cache, or a download URL that answers), the backbone stays;
    otherwise the pipeline runs ``fallback_backbone`` instead. Either way the resolved pipeline has
    no ``fallback_backbone`` (so the resolved spec replays exactly what ran) and its
    ``backbone_note`` says which backbone and weights ran and why; a fallback is also announced
    with a :class:`UserWarning` — never silently.
    """
    import warnings

    from .cnn import weights as cnn_weights
    from .cnn.specs import get_backbone

    spec = copy.deepcopy(spec)
    checked = {}

    def weights_status(name):  # once per backbone: the check may wait for the network
        if name not in checked:
            checked[name] = cnn_weights.imagenet_weights_status(get_backbone(name))
        return checked[name]

    for p in spec.pipelines:
        if p.fallback_backbone is None:
            continue
        requested = _requested_backbone(p)
        status = weights_status(requested)
        if status.available:
            p.backbone_note = (f"ran {requested} with ImageNet weights ({status.detail}); the fallback "
                               f"{p.fallback_backbone} was not needed")
        else:
            fallback_status = weights_status(p.fallback_backbone)
            p.backbone_note = (f"ran the fallback {p.fallback_backbone} with ImageNet weights "
                               f"({fallback_status.detail}) instead of the requested {requested}, whose ImageNet "
                               f"weights could not be obtained: {status.detail}")
            p.options.update(p.fallback_options, backbone=p.fallback_backbone)
            if p.fallback_options:
                p.backbone_note += f"; with the fallback's options {p.fallback_options}"
            warnings.warn(f"pipeline {p.name!r}: {p.backbone_note}", UserWarning, stacklevel=2)
        p.fallback_backbone, p.fallback_options = None, {}
    return spec


def backbone_notes(spec):
    """``{pipeline name: backbone_note}`` of the pipelines of ``spec`` that carry one."""
    return {p.name: p.backbone_note for p in spec.pipelines if p.backbone_note}


# ----------------------------------------------------------------------------- running
def load_data(dataset_spec):
    """The :class:`~featurepipe.dataset.Dataset` that ``dataset_spec`` names (the demo set with ``demo``)."""
    d = dataset_spec
    if d.demo or d.path is None:
        if d.task is not None or d.unit is not None or d.patch_context is not None:
            raise SpecError("dataset.task", "dataset.task, dataset.unit: --task/--unit apply to a dataset's layout, "
                                           "not to the demo set")
        from .demo import load_demo

        return load_demo()
    from .cli_data import task_options
    from .datasets import detect_layout, load_dataset

    if not os.path.exists(d.path):
        raise SpecError("dataset.path", f"dataset {d.path!r} does not exist (pass a manifest CSV or a dataset "
                                        "folder)")
    layout = detect_layout(d.path) if d.layout == "auto" else d.layout
    options = task_options(d, layout)
    if d.mode is not None:
        options["mode"] = d.mode
    if d.mask_suffix is not None:
        if layout != "folder":
            raise SpecError("dataset.mask_suffix", f"dataset.mask_suffix applies to the folder layout, not to "
                                                   f"{layout!r}")
        options["mask_suffix"] = d.mask_suffix
    if d.allow_outside_root:
        if layout != "manifest":
            raise SpecError("dataset.allow_outside_root", "dataset.allow_outside_root (--allow-outside-root) "
                                                          "applies to manifests only")
        options["allow_outside_root"] = True
    if d.pairs:
        if layout not in ("dmr-ir", "manifest"):
            raise SpecError("dataset.pairs", f"dataset.pairs applies to the dmr-ir and manifest layouts, not to "
                                             f"{layout!r}")
        options["pairs"] = True
    if d.partner_marker is not None:
        if layout != "dmr-ir" or not d.pairs:
            raise SpecError("dataset.partner_marker", "dataset.partner_marker applies to the dmr-ir layout with "
                                                      "dataset.pairs = true")
        options["partner_marker"] = d.partner_marker
    return load_dataset(d.path, layout, **options)


@dataclass
class PreparedExperiment:
    """An experiment ready to run: the resolved spec, its dataset, built pipelines, grids and output folder."""

    spec: ExperimentSpec
    dataset: object
    pipelines: dict
    grids: dict
    output: str | None


def prepare(spec):
    """Validate ``spec``, load its dataset and build its pipelines; returns a :class:`PreparedExperiment`.

    The prepared spec is *resolved*: the dataset path absolute, ``fallback_backbone`` decided
    (:func:`resolve_backbones`: the backbone that runs, and a ``backbone_note`` saying why),
    ``cv.tune`` expanded into each recipe pipeline's grid, and ``output`` the folder results go to.
    """
    from .base import set_feature_cache

    spec = resolve_backbones(validate(spec))
    if spec.dataset.path is not None:
        spec.dataset.path = os.path.abspath(spec.dataset.path)
    grids = {p.name: g for p in spec.pipelines if (g := pipeline_grid(spec, p)) is not None}
    for p in spec.pipelines:
        if p.name in grids:
            p.grid = grids[p.name]
    spec.cv.tune = False
    cache = _cache_of(spec)
    pipelines = {p.name: set_feature_cache(build_pipeline(spec, p, index=i), cache)
                 for i, p in enumerate(spec.pipelines)}
    dataset = load_data(spec.dataset)
    if spec.output is None:
        from .benchmark.plots import slug

        spec.output = f"featurepipe-benchmark-{slug(dataset.name, separator='-', lower=True, default='dataset')}"
    spec.output = os.path.abspath(spec.output)
    return PreparedExperiment(spec=spec, dataset=dataset, pipelines=pipelines, grids=grids, output=spec.output)


def _cache_of(spec):
    """The ``cache`` value of every feature extractor: a folder, or ``True`` (memory only)."""
    return True if spec.cache == "memory" else (spec.cache or default_cache_dir())


def fit(spec, name=None, *, dataset=None, progress=None):
    """Fit pipeline ``name`` of ``spec`` (default: its only one) on the whole dataset; a fitted ImageModel.

    The pipeline is built exactly as :func:`run` builds it (options, ``params``); with a grid (its
    own, or its recipe's under ``cv.tune``) its parameters are first tuned by
    :func:`featurepipe.models.tune_parameters` (``cv.inner_splits`` grouped folds, ``cv.seed``), the
    procedure each outer fold of the benchmark's nested CV followed. ``dataset`` saves loading it
    again; ``progress`` is called with a line of text before tuning.
    """
    from .models import fit_estimator, tune_parameters

    spec = validate(spec)
    if name is None:
        if len(spec.pipelines) != 1:
            raise SpecError("pipelines", f"the experiment has {len(spec.pipelines)} pipelines "
                                         f"({', '.join(p.name for p in spec.pipelines)}): name the one to fit")
        name = spec.pipelines[0].name
    spec.pipelines = [resolve_backbones(dataclasses.replace(spec, pipelines=[q])).pipelines[0]
                      if q.name == name else q for q in spec.pipelines]
    p = spec.pipeline(name)
    estimator = build_pipeline(spec, p, index=spec.pipelines.index(p))
    if dataset is None:
        dataset = load_data(spec.dataset)
    # The contract always records the options every recipe takes (None: the recipe's default).
    options = ({"preprocessing": None, "balancing": None, "backbone": None, "use_mask": False,
                "random_state": spec.cv.seed, **p.options} if p.recipe is not None else dict(p.options))
    if p.params:
        options["params"] = dict(p.params)
    if p.backbone_note:
        options["backbone_note"] = p.backbone_note
    grid = pipeline_grid(spec, p)
    if grid:
        from .base import set_feature_cache

        if progress is not None:
            progress(f"tuning {name} over {grid} ({spec.cv.inner_splits} grouped folds)")
        best = tune_parameters(set_feature_cache(estimator, _cache_of(spec)), dataset, grid,
                               n_splits=spec.cv.inner_splits, random_state=spec.cv.seed)
        estimator.set_params(**best)
        options["tuned"] = best
    return fit_estimator(estimator, dataset, mode=spec.dataset.mode, cache=_cache_of(spec),
                         use_mask=bool(p.options.get("use_mask", False)), recipe=p.recipe or p.pipeline,
                         options=options)


def _record_backbone_notes(result, notes, output):
    """Put each pipeline's backbone note into the result (``results.json``: ``pipelines.<name>.backbone_note``)
    and re-render the report files, which print it."""
    for name, note in notes.items():
        if name in result.pipelines:
            result.pipelines[name]["backbone_note"] = note
    if output is not None:
        from .benchmark import write_report

        files = list(result.files or [])
        write_report(result, output, plots=False)  # the plots already drawn stay; the text files gain the notes
        result.files = list(dict.fromkeys(files + list(result.files)))


def run(spec, *, overwrite=False, progress=True):
    """Run experiment ``spec`` (an :class:`ExperimentSpec` or a :class:`PreparedExperiment`).

    Calls :func:`featurepipe.benchmark.run_benchmark` with the spec's dataset, pipelines, grids and
    settings, then writes the resolved spec to ``<output>/experiment.toml``. ``overwrite`` replaces
    another experiment's results in the output folder (see ``run_benchmark``). Returns the
    :class:`~featurepipe.benchmark.BenchmarkResult`.
    """
    from .benchmark import run_benchmark
    from .sample import decode_once

    with decode_once():  # the dataset's validation and the run decode each image once
        prepared = spec if isinstance(spec, PreparedExperiment) else prepare(spec)
        s = prepared.spec
        stale = Path(prepared.output) / EXPERIMENT_TOML
        if overwrite and stale.is_file():  # the results it described are about to be deleted
            stale.unlink()
        result = run_benchmark(
            prepared.dataset, prepared.pipelines,
            cv={"n_splits": s.cv.splits, "n_repeats": s.cv.repeats, "random_state": s.cv.seed},
            param_grids=prepared.grids or None, inner_cv=s.cv.inner_splits, metrics=s.metrics, rank_by=s.rank_by,
            duplicates=s.dataset.duplicates, duplicate_threshold=s.dataset.duplicate_threshold,
            output_dir=prepared.output, overwrite=overwrite, n_jobs=s.n_jobs, backend=s.backend,
            scheduler=s.scheduler, plots=s.plots, progress=progress, on_error=s.dataset.on_error)
    notes = backbone_notes(s)
    if notes:
        _record_backbone_notes(result, notes, prepared.output)
    if prepared.output is not None:
        dump(s, Path(prepared.output) / EXPERIMENT_TOML,
             header="The resolved spec of this results folder. Replay it into another folder with\n"
                    f"  featurepipe benchmark --config {EXPERIMENT_TOML} --output NEW_FOLDER")
    return result
