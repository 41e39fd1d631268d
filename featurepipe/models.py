"""Fitted models as files: fit a recipe, save it, load it safely, classify image files.

A model written by :func:`save_model` is an :class:`ImageModel`: the fitted
pipeline together with its *input contract* (``contract_``): whether it needs
lesion masks, the channel mode it was trained on, the classes, the recipe and
its options (backbone, input size), and the featurepipe version and model
format that wrote it. :func:`predict_files` honours that contract: it reads
images in the trained mode, requires masks when the model uses them, and
skips files that are recognisably masks of the images beside them.

Loading is safe by default
--------------------------
:func:`load_model` never runs code that the caller did not explicitly trust:

* skops files (the default format) are checked with
  :func:`skops.io.get_untrusted_types` before anything is built. Beyond
  skops' own defaults (scikit-learn estimators, NumPy and SciPy containers)
  the loader trusts featurepipe's own estimator classes (see
  :func:`is_trusted_type`) and the enumerated scikit-learn / imbalanced-learn
  types in :data:`TRUSTED_TYPES`. Any other type (``os.system``,
  ``builtins.eval``, a function of featurepipe, …) is refused with
  :class:`UntrustedModelError`, which lists the types; pass them in
  ``trusted=`` (``--trust TYPE[,TYPE]`` on the command line) only if you
  trust the file's author.
* pickle and joblib files can run arbitrary code when loaded. They are read
  only with ``unsafe_pickle=True`` (``--unsafe-pickle``), with a warning.
  The format is recognised from the file's bytes, not its name.

Keras models inside featurepipe's Keras estimators are stored as ``.keras``
bytes and rebuilt by Keras with ``safe_mode`` (no deserialised Python code),
so no Keras Python type appears in a skops file.
"""

from __future__ import annotations

import glob
import importlib
import importlib.util
import re
import warnings
from pathlib import Path

from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context, clone
from sklearn.utils._param_validation import HasMethods, Options, StrOptions
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted

from ._validation import ParamValidationMixin
from ._version import __version__

__all__ = [
    "MASK_SUFFIX",
    "MODEL_FORMAT",
    "TRUSTED_TYPES",
    "ImageModel",
    "UntrustedModelError",
    "find_images",
    "fit_estimator",
    "fit_model",
    "is_trusted_type",
    "load_model",
    "predict_files",
    "save_model",
    "tune_parameters",
    "untrusted_types",
    "write_predictions_csv",
]

#: Version of the model file layout (:class:`ImageModel` and its ``contract_``). A file with a
#: newer format is refused: this featurepipe would not know how to honour it.
MODEL_FORMAT = 1

#: Types a skops model file may contain beyond skops' defaults and featurepipe's own estimators.
#: Each is a data-holding class whose loading only restores attributes: imbalanced-learn's pipeline
#: and samplers (the recipes' ``balance`` step), scikit-learn's fitted calibrators (calibrated
#: recipes), decision trees' ``Tree`` (random forests), CV splitters and the pass-through scorer
#: (fitted searches), scikit-learn's ``Bunch`` (the fusion recipes' named members). NumPy
#: arrays/dtypes/random states and SciPy sparse matrices are already trusted by skops itself;
#: Keras models travel as bytes (see the module docstring).
TRUSTED_TYPES = (
    "imblearn.pipeline.Pipeline",
    "imblearn.over_sampling._random_over_sampler.RandomOverSampler",
    "imblearn.over_sampling._smote.base.SMOTE",
    "imblearn.over_sampling._smote.base.SMOTEN",
    "imblearn.over_sampling._smote.base.SMOTENC",
    "imblearn.over_sampling._smote.filter.BorderlineSMOTE",
    "imblearn.over_sampling._adasyn.ADASYN",
    "imblearn.under_sampling._prototype_selection._random_under_sampler.RandomUnderSampler",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.calibration._TemperatureScaling",
    "sklearn.tree._tree.Tree",
    "sklearn.model_selection._split.KFold",
    "sklearn.model_selection._split.StratifiedKFold",
    "sklearn.model_selection._split.StratifiedGroupKFold",
    "sklearn.model_selection._split.GroupKFold",
    "sklearn.model_selection._split.RepeatedStratifiedKFold",
    "sklearn.metrics._scorer._PassthroughScorer",
    "sklearn.utils._bunch.Bunch",  # a dict with attribute access: VotingClassifier.named_estimators_
)

#: Suffix of BUSI-style mask files (``x_mask.png``, ``x_mask_1.png`` beside ``x.png``).
MASK_SUFFIX = "_mask"
_SKOPS_MAGIC = b"PK\x03\x04"  # skops files are zip archives


class UntrustedModelError(ValueError):
    """A skops model file asks for types that are not trusted; nothing was loaded.

    ``types`` lists them (``"module.Name"`` strings, the values ``trusted=`` accepts).
    """

    def __init__(self, path, types):
        self.path = str(path)
        self.types = list(types)
        super().__init__(
            f"model file {self.path!r} asks to load types that featurepipe does not trust: "
            f"{', '.join(self.types)}. Nothing was loaded or run. Only if you made this file or trust its "
            f"author, allow them with --trust {','.join(self.types)} (Python: load_model(..., trusted=[...]))")


# ----------------------------------------------------------------------------- the model
class ImageModel(ParamValidationMixin, ClassifierMixin, BaseEstimator):
    """A fitted image classifier with its input contract, as saved by :func:`save_model`.

    Parameters
    ----------
    estimator : classifier taking images or :class:`~featurepipe.sample.Sample` objects as ``X``
        Usually a recipe's pipeline (:func:`featurepipe.recipes.make`).
    use_mask : bool, default=False
        The estimator describes the lesion mask: images to classify need masks.
    mode : {None, "gray", "rgb"}, default=None
        Channel mode of the training images (``None``: as stored, mixed).
    recipe : str, optional
        Recipe name, recorded in the contract.
    options : dict, optional
        Recipe options (preprocessing, balancing, backbone, …), recorded in the contract.

    Attributes
    ----------
    estimator_ : the fitted clone of ``estimator``
    classes_ : ndarray of shape (n_classes,)
    contract_ : dict
        ``format``, ``featurepipe_version``, ``use_mask``, ``mode``, ``classes``,
        ``recipe``, ``options``, ``backbone`` and ``input_size`` (``None`` when the
        model has no CNN) — plain JSON-like values.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.svm import SVC
    >>> from featurepipe.features import FirstOrderFeatures
    >>> from sklearn.pipeline import make_pipeline
    >>> rng = np.random.default_rng(0)
    >>> X = np.empty(6, dtype=object); X[:] = [rng.uniform(0, s, (16, 16)) for s in (0.2, 1, 0.2, 1, 0.2, 1)]
    >>> model = ImageModel(make_pipeline(FirstOrderFeatures(), SVC()), mode="gray").fit(X, [0, 1] * 3)
    >>> model.contract_["classes"], model.contract_["mode"], model.contract_["use_mask"]
    (['0', '1'], 'gray', False)
    >>> model.predict(X).tolist()
    [0, 1, 0, 1, 0, 1]
    """

    def __init__(self, estimator=None, *, use_mask=False, mode=None, recipe=None, options=None):
        self.estimator = estimator
        self.use_mask = use_mask
        self.mode = mode
        self.recipe = recipe
        self.options = options

    _parameter_constraints = {
        "estimator": [HasMethods(["fit", "predict"])],
        "use_mask": [Options(bool, {False, True})],  # a plain bool: it goes into the JSON-like contract
        "mode": [None, StrOptions({"gray", "rgb"})],
        "recipe": [None, str],
        "options": [None, dict],
    }

    @_fit_context(prefer_skip_nested_validation=False)  # the user's estimator validates its own parameters
    def fit(self, X, y):
        """Fit a clone of ``estimator`` on images ``X`` and labels ``y``; record the contract."""
        self.estimator_ = clone(self.estimator).fit(X, y)
        self.classes_ = self.estimator_.classes_
        params = self.estimator_.get_params(deep=True) if hasattr(self.estimator_, "get_params") else {}
        backbone, input_size = _param_ending(params, "backbone"), _param_ending(params, "input_size")
        if backbone is not None and input_size is None:
            from .cnn import get_backbone

            input_size = get_backbone(backbone).default_input_size  # what the backbone resizes images to
        self.contract_ = {
            "format": MODEL_FORMAT,
            "featurepipe_version": __version__,
            "use_mask": self.use_mask,
            "mode": self.mode,
            "classes": [str(c) for c in self.classes_],
            "recipe": self.recipe,
            "options": _plain(self.options or {}),
            "backbone": _plain(backbone),
            "input_size": _plain(input_size),
        }
        return self

    def predict(self, X):
        """Predicted class of each image, shape (n_samples,)."""
        check_is_fitted(self, "estimator_")
        return self.estimator_.predict(X)

    @available_if(lambda self: hasattr(self.estimator_, "predict_proba"))
    def predict_proba(self, X):
        """Class probabilities, shape (n_samples, n_classes), columns in ``classes_`` order."""
        return self.estimator_.predict_proba(X)

    @available_if(lambda self: hasattr(self.estimator_, "decision_function"))
    def decision_function(self, X):
        """The estimator's decision values (not probabilities)."""
        return self.estimator_.decision_function(X)


def _param_ending(params, suffix):
    """The first value of a parameter named ``suffix`` or ``*__suffix`` (``None`` when absent)."""
    for key, value in params.items():
        if key == suffix or key.endswith("__" + suffix):
            return value
    return None


def _plain(value):
    """``value`` as JSON-like builtins (tuples become lists), so the contract needs no extra trusted type."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


# ----------------------------------------------------------------------------- fit / save
def fit_model(recipe, dataset, *, mode=None, random_state=0, cache=True, **options):
    """Fit recipe ``recipe`` on every sample of ``dataset``; returns a fitted :class:`ImageModel`.

    ``options`` are those of :func:`featurepipe.recipes.make`. ``mode`` is the channel mode the
    dataset was read with; ``None`` records the mode the training images actually have
    (``"gray"`` or ``"rgb"`` when they all agree). ``cache`` is the feature cache used while
    fitting (``True``: memory; a directory: also on disk, see
    :func:`featurepipe.base.set_feature_cache`); the returned model's extractors use the
    memory cache, so a saved model names no local folder.
    """
    from . import recipes

    return fit_estimator(recipes.make(recipe, random_state=random_state, **options), dataset, mode=mode,
                         cache=cache, use_mask=bool(options.get("use_mask", False)), recipe=recipe,
                         options={**options, "random_state": random_state})


def fit_estimator(estimator, dataset, *, mode=None, cache=True, use_mask=False, recipe=None, options=None):
    """Fit an unfitted ``estimator`` (a pipeline taking samples) on every sample of ``dataset``.

    Returns the fitted :class:`ImageModel` whose contract records ``use_mask``, ``mode`` (``None``:
    the mode the training images have, when they all agree), ``recipe`` (a name, or a user
    factory's import path) and ``options``. ``cache`` as in :func:`fit_model`.
    """
    from .base import set_feature_cache

    pipe = set_feature_cache(clone(estimator), cache)
    if mode is None:
        ndims = {sample.image.ndim for sample in dataset.samples}
        mode = {frozenset({2}): "gray", frozenset({3}): "rgb"}.get(frozenset(ndims))
    model = ImageModel(pipe, use_mask=bool(use_mask), mode=mode, recipe=recipe, options=options or {})
    model.fit(dataset.samples, dataset.y)
    if cache is not True:
        set_feature_cache(model.estimator, True)
        set_feature_cache(model.estimator_, True)
    return model


def tune_parameters(estimator, dataset, param_grid, *, n_splits=3, random_state=0, scoring="balanced_accuracy"):
    """The best parameters of ``param_grid`` for ``estimator`` on the whole of ``dataset``.

    A grid search with the benchmark's folds (:class:`~featurepipe.model_selection.RepeatedStratifiedGroupKFold`,
    ``n_splits`` folds grouped by patient and by near-duplicate cluster) and the benchmark's inner
    ``scoring``, so ``fit`` tunes a pipeline the way each outer fold of a nested benchmark did.
    Feature extractors cache per sample, so the stateless prefix is computed once per image.
    Returns ``best_params_`` (a dict).
    """
    from sklearn.model_selection import GridSearchCV

    from .duplicates import find_duplicates
    from .model_selection import RepeatedStratifiedGroupKFold, merge_groups

    samples = dataset.samples
    patient = [s.group if s.group is not None else f"sample:{s.key}" for s in samples]
    groups = merge_groups(patient, find_duplicates(samples).cluster_ids)
    search = GridSearchCV(estimator, param_grid, scoring=scoring, refit=False, error_score="raise",
                          cv=RepeatedStratifiedGroupKFold(n_splits=n_splits, n_repeats=1, random_state=random_state))
    search.fit(samples, dataset.y, groups=groups)
    return dict(search.best_params_)


def save_model(model, path, format="skops"):
    """Write ``model`` with skops (``format="skops"``, safe to load) or joblib (a pickle)."""
    if format not in ("skops", "joblib"):
        raise ValueError(f"format must be 'skops' or 'joblib'; got {format!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if format == "skops":
        import skops.io

        skops.io.dump(model, path)
    else:
        import joblib

        joblib.dump(model, path)
    return path


# ----------------------------------------------------------------------------- safe load
def is_trusted_type(type_name):
    """Whether the skops type ``"module.Name"`` is trusted without an explicit opt-in.

    True for :data:`TRUSTED_TYPES` and for scikit-learn estimator classes *defined* in a
    featurepipe module. A prefix check on ``featurepipe.`` alone would not do: it would also
    admit names a module merely imports (``featurepipe.cli_run.os``) and functions such as
    ``featurepipe.cli.main``, which a crafted file can call with its own arguments. Estimator
    classes only store their parameters when built, so building them runs nothing else. The
    module is imported only if it is a featurepipe module (never ``__main__``).
    """
    if type_name in TRUSTED_TYPES:
        return True
    module, _, name = str(type_name).rpartition(".")
    parts = module.split(".")
    if parts[0] != "featurepipe" or not all(p.isidentifier() for p in parts) or "__main__" in parts:
        return False
    try:
        if importlib.util.find_spec(module) is None:
            return False
        obj = getattr(importlib.import_module(module), name, None)
    except ImportError:
        return False
    return (isinstance(obj, type) and obj.__module__ == module and obj.__qualname__ == name
            and issubclass(obj, BaseEstimator))


def untrusted_types(path, trusted=()):
    """Types of skops file ``path`` that are neither trusted by default nor listed in ``trusted``."""
    import skops.io

    listed = set(trusted or ())
    return [t for t in skops.io.get_untrusted_types(file=path) if t not in listed and not is_trusted_type(t)]


def load_model(path, *, trusted=None, unsafe_pickle=False):
    """Load a model file written by :func:`save_model`, running nothing that was not trusted.

    Parameters
    ----------
    path : path
        A skops file (recognised by its bytes, whatever its name) or, with ``unsafe_pickle``,
        a pickle/joblib file.
    trusted : sequence of str, optional
        Extra skops types (``"module.Name"``) to trust, e.g. those listed by a previous
        :class:`UntrustedModelError`. Only for files whose author you trust.
    unsafe_pickle : bool, default=False
        Allow pickle/joblib files. Unpickling runs whatever code the file names: use it only
        for files you made. A :class:`UserWarning` says so each time.

    Raises
    ------
    UntrustedModelError
        The skops file needs types that are not trusted (nothing is built).
    ValueError
        Missing file, a folder, a pickle without ``unsafe_pickle``, a file that is neither
        format, or a model whose contract this featurepipe cannot honour.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"model path {str(path)!r} is a folder, not a model file (pass the .skops file "
                         "written by `featurepipe fit`)")
    if not path.is_file():
        raise ValueError(f"model file {str(path)!r} does not exist")
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head == _SKOPS_MAGIC:
        import skops.io

        try:
            refused = untrusted_types(path, trusted)
        except Exception as exc:  # a zip that is not a skops file
            raise ValueError(f"model file {str(path)!r} is not a valid skops file ({type(exc).__name__}: "
                             f"{exc})") from exc
        if refused:
            raise UntrustedModelError(path, refused)
        model = skops.io.load(path, trusted=skops.io.get_untrusted_types(file=path))
    elif not unsafe_pickle:
        if head[:1] == b"\x80":  # pickle protocol 2+, what pickle and uncompressed joblib write
            what = "is a pickle/joblib file" + (" despite its .skops name" if path.suffix.lower() == ".skops" else "")
        else:
            what = f"is not a skops file (it starts with {head!r}); if it is a compressed joblib file, note that"
        raise ValueError(
            f"model file {str(path)!r} {what}. Loading a pickle runs whatever code it contains, so featurepipe "
            "does not load it by default. Only if you made this file yourself, pass --unsafe-pickle (Python: "
            "load_model(..., unsafe_pickle=True)); better, re-save it as skops.")
    else:
        warnings.warn(f"loading pickle {str(path)!r} with --unsafe-pickle: unpickling runs any code the file "
                      "contains, with your permissions; do this only for files you made", UserWarning,
                      stacklevel=2)
        import joblib

        try:
            model = joblib.load(path)
        except Exception as exc:  # noqa: BLE001 - any unreadable file: name it
            raise ValueError(f"model file {str(path)!r} is neither a skops file nor a readable pickle/joblib file "
                             f"({type(exc).__name__}: {exc})") from exc
    _check_contract(model, path)
    return model


def _version_tuple(version):
    match = re.match(r"(\d+)\.(\d+)", str(version))
    return (int(match.group(1)), int(match.group(2))) if match else None


def _check_contract(model, path):
    contract = getattr(model, "contract_", None)
    if not isinstance(model, ImageModel) or contract is None:
        return
    fmt = contract.get("format")
    saved = contract.get("featurepipe_version")
    if not isinstance(fmt, int) or fmt > MODEL_FORMAT:
        raise ValueError(f"model file {str(path)!r} has model format {fmt!r} (written by featurepipe {saved}); "
                         f"this featurepipe {__version__} reads format {MODEL_FORMAT} at most: upgrade featurepipe")
    ours, theirs = _version_tuple(__version__), _version_tuple(saved)
    if theirs is None or (ours is not None and theirs > ours):
        raise ValueError(f"model file {str(path)!r} was written by featurepipe {saved}, newer than this "
                         f"featurepipe {__version__}: its estimators may hold state this version cannot honour; "
                         "upgrade featurepipe")


# ----------------------------------------------------------------------------- predict
def find_images(inputs, *, masks=None):
    """The images to classify in ``inputs``, with their mask files, and the files skipped.

    Parameters
    ----------
    inputs : sequence of paths
        Image files (always kept, even if missing or unreadable: their rows report it) and
        folders (searched recursively for image files).
    masks : str, optional
        Glob pattern of each image's mask file(s), relative to the image's folder, with
        ``{stem}`` standing for the image's file name without extension, e.g.
        ``"{stem}_mask*.png"`` (BUSI). Several matches are merged.

    Returns
    -------
    images : list of (Path, tuple of Path or None)
        Each image and its mask files (``()`` without ``masks``; ``None`` when ``masks`` was given
        and nothing matched).
    skipped : list of (Path, str)
        Files under folders that are masks of an image beside them (``x_mask.png``,
        ``x_mask_1.png`` next to ``x.png``), with the reason.
    """
    from .datasets.folder import scan_folder

    found, skipped = [], []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            images, orphans, _ = scan_folder(p, mask_suffix=MASK_SUFFIX)
            for image, mask_files in images:
                found.append(image)
                skipped += [(m, f"mask of {image.name} beside it, not an image to classify") for m in mask_files]
            found += [path for path, _ in orphans]  # mask-like name but no image beside it: classify it
        else:
            found.append(p)  # missing or odd files are reported per file, never dropped
    if masks is not None:
        try:
            masks.format(stem="x")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"masks pattern {masks!r} may use only {{stem}} (the image's name without extension), "
                             f"e.g. '{{stem}}_mask*.png'; got {type(exc).__name__}: {exc}") from None
    pairs = []
    for image in found:
        if masks is None:
            pairs.append((image, ()))
        else:
            pattern = str(Path(glob.escape(str(image.parent))) / masks.format(stem=glob.escape(image.stem)))
            pairs.append((image, tuple(Path(m) for m in sorted(glob.glob(pattern))) or None))
    return pairs, skipped


def predict_files(model, inputs, *, mode=None, masks=None):
    """Classify image files; every image gets a row, failures with an ``error`` reason.

    Parameters
    ----------
    model : fitted classifier taking images as ``X``
        An :class:`ImageModel` has its contract honoured: images are read in its ``mode``,
        and ``masks`` is required when it uses masks.
    inputs : sequence of paths
        Files and folders, as :func:`find_images`. Mask files beside their images are
        skipped (a :class:`UserWarning` lists them).
    mode : {None, "gray", "rgb"}
        Channels to read (default: the model's recorded mode, else as stored). A mode that
        contradicts the model's contract is refused.
    masks : str, optional
        Mask file pattern, as in :func:`find_images`.

    Returns
    -------
    rows : list of dict
        ``path``, ``prediction``, ``proba_<class>`` for each class (or, when the model has no
        ``predict_proba``, ``score_<class>`` decision values and a :class:`UserWarning` saying
        they are not probabilities) and ``error`` (empty when the file was classified).
    """
    from .sample import Sample

    contract = getattr(model, "contract_", None) if isinstance(model, ImageModel) else None
    if contract is None:
        warnings.warn("the model carries no input contract (not saved by featurepipe.models.save_model): "
                      "featurepipe cannot check that the images are read as it was trained", UserWarning,
                      stacklevel=2)
    else:
        if mode is not None and contract["mode"] is not None and mode != contract["mode"]:
            raise ValueError(f"mode={mode!r} contradicts the model, which was trained on {contract['mode']} "
                             f"images; leave the mode out to read images as {contract['mode']}")
        mode = mode if mode is not None else contract["mode"]
        if contract["use_mask"] and masks is None:
            raise ValueError("the model describes lesion masks (fitted with use_mask=True): pass the masks of the "
                             "images, e.g. --masks '{stem}_mask*.png' (Python: masks=...)")
    pairs, skipped = find_images(inputs, masks=masks)
    if not pairs:
        raise ValueError(f"no image files found in {list(map(str, inputs))}")
    if skipped:
        warnings.warn(f"skipped {len(skipped)} mask files beside their images (not classified): "
                      + ", ".join(str(p) for p, _ in skipped[:5]) + (", ..." if len(skipped) > 5 else ""),
                      UserWarning, stacklevel=2)
    classes = [str(c) for c in getattr(model, "classes_", [])]
    kind = _score_kind(model)
    if kind == "score":
        warnings.warn("the model has no predict_proba: the score_<class> columns are decision values, "
                      "not probabilities", UserWarning, stacklevel=2)
    rows, good, samples = [], [], []
    for path, mask_files in pairs:
        row = {"path": str(path), "prediction": "", "error": ""}
        rows.append(row)
        if path.is_symlink() and not path.exists():
            row["error"] = f"dangling symbolic link (its target {str(path.readlink())!r} does not exist)"
            continue
        if mask_files is None:
            row["error"] = f"no mask file matches {masks!r} beside it"
            continue
        try:
            sample = Sample.from_path(path, list(mask_files) or None, mode=mode)
            sample.load()  # decode now, so that a bad file is named in its own row
            samples.append(sample)
            good.append(row)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is reported, not dropped
            row["error"] = _reason(exc)
    if good:
        try:
            _fill(model, kind, good, samples, classes)
        except Exception:  # noqa: BLE001 - isolate the failing image below
            # One bad image fails the batch: redo one by one to name it.
            for row, sample in zip(good, samples, strict=True):
                try:
                    _fill(model, kind, [row], [sample], classes)
                except Exception as exc:  # noqa: BLE001 - reported in the row
                    row["error"] = _reason(exc)
    return rows


def _score_kind(model):
    """``"proba"`` when the model has usable probabilities, ``"score"`` for decision values only, else None."""
    if hasattr(model, "predict_proba"):  # False for an SVC without probability estimates
        return "proba"
    if hasattr(model, "decision_function"):
        return "score"
    return None


def _reason(exc):
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


def _fill(model, kind, rows, samples, classes):
    import numpy as np

    from .metrics import score_columns

    X = np.empty(len(samples), dtype=object)
    X[:] = samples
    predictions = model.predict(X)
    if kind == "proba":
        scores = model.predict_proba(X)
    elif kind == "score":
        scores = score_columns(model.decision_function(X))  # binary: one decision value, for the second class
    for i, row in enumerate(rows):
        row["prediction"] = str(predictions[i])
        if kind is not None:
            for j, c in enumerate(classes):
                row[f"{kind}_{c}"] = float(scores[i, j])


def write_predictions_csv(rows, file):
    """Write :func:`predict_files` rows to the open text ``file`` as CSV.

    Columns: ``path``, ``prediction``, the ``proba_<class>`` (or ``score_<class>``) columns in
    the order they first appear, then ``error`` — those of ``featurepipe predict``.
    """
    import csv

    fields = ["path", "prediction"]
    for row in rows:
        fields += [k for k in row if k not in fields and k != "error"]
    fields.append("error")
    writer = csv.DictWriter(file, fieldnames=fields, restval="")
    writer.writeheader()
    writer.writerows(rows)
