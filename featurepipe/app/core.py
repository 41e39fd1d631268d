"""The web app's logic as plain functions (the Streamlit page in :mod:`.streamlit_app` only lays them out).

Everything a page shows comes from here, so it is tested without a browser:

* :func:`open_model` loads a model file only through :func:`featurepipe.models.load_model`
  (the safe loader) and finds its model card; a refused or unreadable file becomes an
  error text for the page, never a traceback.
* :func:`serving_problem` says why a model cannot classify uploads (it needs lesion masks).
* :func:`classify_uploads` classifies uploaded files with
  :func:`featurepipe.models.predict_files` — the same function as ``featurepipe predict``,
  so the page shows the same numbers — and :func:`classify_folder` a folder on the machine.
* :func:`score_bars` turns a row into the bars shown: percentages only for probabilities
  (``proba_<class>`` columns); decision values (``score_<class>``) are shown as signed scores.
* :func:`activation_overlay` is the class activation map overlay, or the reason there is none.
* :func:`predictions_csv` is the CSV of the batch mode (``featurepipe predict``'s columns).
* :func:`demo_model` fits (once, cached) the model of ``featurepipe serve --demo``.
"""

from __future__ import annotations

import html
import io
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from ..card import is_calibrated

__all__ = [
    "DEMO_RECIPE",
    "PALETTE",
    "UPLOAD_TYPES",
    "Bar",
    "LoadedModel",
    "activation_overlay",
    "bars_html",
    "classify_folder",
    "classify_uploads",
    "demo_model",
    "format_score",
    "is_calibrated",
    "open_model",
    "predictions_csv",
    "score_bars",
    "serving_problem",
]

#: File types the upload widget accepts (``featurepipe.io.read_image`` reads them all).
UPLOAD_TYPES = ("png", "jpg", "jpeg", "gif", "tif", "tiff", "bmp", "pgm")
#: Okabe–Ito colour-blind-safe palette, one colour per class (cycled).
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
#: Recipe of the ``--demo`` model: offline EfficientNet-Lite0 features + linear SVM (CAM can explain it).
DEMO_RECIPE = "convnet_svm_linear"
_DEMO_VERSION = 1  # bump when the demo model's recipe or data change


@dataclass
class LoadedModel:
    """A model file opened for the app.

    ``model`` is ``None`` when loading failed; ``error`` then says why (e.g. the untrusted
    types of a skops file). ``card`` is the model card dict (``None`` when absent or not
    this file's) and ``card_note`` says which card is used or why none is.
    """

    path: str
    model: object = None
    error: str | None = None
    card: dict | None = None
    card_note: str = ""
    card_markdown: str | None = None

    @property
    def classes(self):
        return [str(c) for c in getattr(self.model, "classes_", [])]

    @property
    def synthetic(self):
        return bool(self.card and self.card.get("training_data", {}).get("synthetic"))


def open_model(path, *, trusted=None):
    """Load ``path`` with the safe loader and read its card; errors become ``LoadedModel.error``.

    Pickle files are never loaded here (the app has no ``--unsafe-pickle``).
    """
    from ..card import card_markdown, read_card
    from ..models import load_model

    loaded = LoadedModel(path=str(path))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            loaded.model = load_model(path, trusted=trusted, unsafe_pickle=False)
    except (ValueError, OSError, TypeError) as exc:  # UntrustedModelError is a ValueError
        loaded.error = f"{type(exc).__name__}: {exc}"
        return loaded
    loaded.card, _, loaded.card_note = read_card(path)
    if loaded.card is not None:
        loaded.card_markdown = card_markdown(loaded.card)
    return loaded


def serving_problem(model):
    """Why the app cannot classify uploads with ``model`` (text), or ``None`` when it can."""
    contract = getattr(model, "contract_", None) or {}
    if contract.get("use_mask"):
        return ("This model describes lesion masks (it was fitted with use_mask=True), so every image needs "
                "its mask, and this app does not take masks. Classify with the command line instead: "
                "featurepipe predict MODEL IMAGES --masks '{stem}_mask*.png'")
    if not hasattr(model, "predict"):
        return f"The file holds a {type(model).__name__}, not a classifier with predict()."
    return None


def _classify(model, paths):
    """``predict_files`` rows for ``paths`` and its warnings' texts."""
    from ..models import predict_files

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        rows = predict_files(model, [str(p) for p in paths])
    return rows, [str(w.message) for w in caught if issubclass(w.category, UserWarning)]


@dataclass
class _Upload:
    name: str
    row: dict
    image: object = None  # float array in [0, 1] for display, None when unreadable
    path: str | None = None
    extra: dict = field(default_factory=dict)


def classify_uploads(model, files, workdir):
    """Classify uploaded files; one result per file, in order.

    Parameters
    ----------
    model : fitted model (from :func:`open_model`)
    files : sequence of (name, bytes)
        The uploads' original names and contents.
    workdir : path
        Folder the uploads are written to (as ``000.png`` …: the user's name never becomes a path).

    Returns
    -------
    list of _Upload
        ``row`` is the :func:`~featurepipe.models.predict_files` row with ``path`` replaced by
        the upload's name; ``image`` the decoded pixels (``None`` when the file did not decode);
        ``path`` the written file.
    """
    from ..io import read_image

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    results, paths = [], []
    for i, (name, data) in enumerate(files):
        suffix = Path(str(name)).suffix.lower()
        upload = _Upload(name=str(name), row={"path": str(name), "prediction": "", "error": ""})
        results.append(upload)
        if suffix.lstrip(".") not in UPLOAD_TYPES:
            upload.row["error"] = (f"{name}: not an image type this app reads (expected "
                                   f"{', '.join(UPLOAD_TYPES)})")
            continue
        path = workdir / f"{i:03d}{suffix}"
        path.write_bytes(bytes(data))
        upload.path = str(path)
        paths.append(upload)
    if paths:
        rows, _ = _classify(model, [u.path for u in paths])
        for upload, row in zip(paths, rows, strict=True):
            row = dict(row)
            row["path"] = upload.name
            if row["error"]:
                row["error"] = row["error"].replace(upload.path, upload.name)
            upload.row = row
            if not row["error"]:
                contract = getattr(model, "contract_", None) or {}
                upload.image = read_image(upload.path, mode=contract.get("mode"))
    return results


def classify_folder(model, folder):
    """``predict_files`` rows for every image under ``folder`` (a folder on this machine) and the warnings."""
    folder = Path(str(folder).strip()).expanduser()
    if not folder.is_dir():
        raise ValueError(f"{str(folder)!r} is not a folder on this computer")
    return _classify(model, [folder])


def predictions_csv(rows):
    """CSV text of ``rows`` with ``featurepipe predict``'s columns."""
    from ..models import write_predictions_csv

    out = io.StringIO()
    write_predictions_csv(rows, out)
    return out.getvalue()


@dataclass(frozen=True)
class Bar:
    """One class's bar: ``value`` (probability or decision score), its ``text``, the bar's
    ``fraction`` of full width, its ``colour`` and whether it is the ``predicted`` class."""

    label: str
    value: float
    text: str
    fraction: float
    colour: str
    predicted: bool


def format_score(value, kind):
    """Text of one class's value.

    ``"proba"`` (calibrated probability) as a percentage, ``"estimate"`` (an uncalibrated
    probability estimate) as a plain number in [0, 1], ``"score"`` (decision value) signed.

    >>> format_score(0.8234, "proba"), format_score(0.8234, "estimate"), format_score(-1.23456, "score")
    ('82.3%', '0.823', '-1.235')
    """
    if kind == "proba":
        return f"{100.0 * value:.1f}%"
    if kind == "estimate":
        return f"{value:.3f}"
    return f"{value:+.3f}"


def score_bars(row, classes, *, calibrated=True):
    """The bars of one result row, and their kind (``"proba"``, ``"estimate"``, ``"score"`` or ``None``).

    ``proba_<class>`` columns are ``"proba"`` (percentages) when ``calibrated``, else ``"estimate"``;
    ``score_<class>`` columns are ``"score"``. Probabilities fill ``value`` of the bar's width;
    decision scores fill ``|value|`` relative to the largest ``|value|`` of the row (they have no
    fixed scale and are not percentages).
    """
    column = "proba" if any(k.startswith("proba_") for k in row) else (
        "score" if any(k.startswith("score_") for k in row) else None)
    if column is None or row.get("error"):
        return [], column
    kind = "estimate" if column == "proba" and not calibrated else column
    values = [float(row[f"{column}_{c}"]) for c in classes]
    largest = max(abs(v) for v in values) or 1.0
    bars = []
    for i, (label, value) in enumerate(zip(classes, values, strict=True)):
        fraction = min(max(value, 0.0), 1.0) if column == "proba" else abs(value) / largest
        bars.append(Bar(label=label, value=value, text=format_score(value, kind), fraction=fraction,
                        colour=PALETTE[i % len(PALETTE)], predicted=label == row["prediction"]))
    return bars, kind


def bars_html(bars, kind):
    """HTML of colour-coded horizontal bars (class names escaped).

    Probabilities fill a bar from the left; decision scores are drawn from a centre line,
    to the left when negative and to the right when positive.
    """
    head = {"proba": "probability (calibrated)",
            "estimate": "probability estimate of the model, NOT calibrated: not a percentage chance",
            }.get(kind, "decision score: not a probability (sign and size only; larger = more this class)")
    parts = [f'<div class="fp-bars" data-kind="{kind}"><div style="font-size:0.85em;color:#555">{head}</div>']
    track = "flex:1;display:flex;background:#eee;height:1.1em;border-radius:3px"
    for bar in bars:
        weight = "700" if bar.predicted else "400"
        width = f"{100.0 * bar.fraction:.1f}%"
        fill = f'<span style="display:block;height:100%;width:{width};background:{bar.colour}"></span>'
        if kind in ("proba", "estimate"):
            body = f'<span style="{track}">{fill}</span>'
        else:
            negative, positive = (fill, "") if bar.value < 0 else ("", fill)
            body = (f'<span style="{track}">'
                    f'<span style="flex:1;display:flex;justify-content:flex-end;border-right:1px solid #333">'
                    f'{negative}</span><span style="flex:1;display:flex">{positive}</span></span>')
        parts.append(
            f'<div class="fp-bar" data-class="{html.escape(bar.label)}" style="display:flex;align-items:center;'
            f'gap:0.5em;margin:2px 0">'
            f'<span class="fp-bar-label" style="width:9em;font-weight:{weight}">{html.escape(bar.label)}</span>'
            f'{body}<span class="fp-bar-value" style="width:5em;text-align:right;font-weight:{weight}">'
            f'{html.escape(bar.text)}</span></div>')
    parts.append("</div>")
    return "".join(parts)


def activation_overlay(model, image_path, row=None, *, rtol=1e-4):
    """``(overlay uint8 (H, W, 3), note)`` of the class activation map for the predicted class.

    Uses :func:`featurepipe.cnn.cam.class_activation_map` on the model's pipeline; when it
    cannot explain the model (no CNN features, a non-linear head …) the overlay is ``None``
    and ``note`` gives its reason. With ``row`` (the image's
    :func:`~featurepipe.models.predict_files` row) the map is shown only if it explains that
    very decision: its class is the predicted one and, for decision scores, its score
    (spatial mean + bias) equals the model's ``score_<class>`` within ``rtol`` — a map that
    does not reproduce the model's number explains something else and is not shown.
    """
    from ..sample import Sample

    estimator = getattr(model, "estimator_", model)
    contract = getattr(model, "contract_", None) or {}
    if not contract.get("backbone"):
        return None, "No class activation map: this model has no CNN features to localise evidence in."
    try:
        from ..cnn.cam import cam_overlay, class_activation_map

        sample = Sample.from_path(image_path, mode=contract.get("mode"))
        cam = class_activation_map(estimator, sample)
        # The map explains the image after the model's image steps (a crop, a resize): draw it there.
        pixels = sample.image if cam.image is None else cam.image
        stepped = cam.image is not None and cam.image.shape[:2] != sample.image.shape[:2]
        overlay = cam_overlay(pixels, cam.heatmap)
    except (ValueError, TypeError) as exc:
        return None, f"No class activation map for this model: {exc}"
    if row is not None:
        if str(cam.target) != row.get("prediction"):
            return None, (f"No class activation map: the map's linear head picks '{cam.target}' but the model "
                          f"predicts '{row.get('prediction')}', so the map would not explain this decision.")
        expected = row.get(f"score_{cam.target}")
        if expected is not None and not abs(cam.score - expected) <= rtol * max(1.0, abs(expected)):
            return None, (f"No class activation map: the map's score for '{cam.target}' ({cam.score:+.3f}) differs "
                          f"from the model's decision score ({expected:+.3f}), so it would not explain this decision.")
    where = " Drawn on the image after the model's image steps (its crop or resize)." if stepped else ""
    return overlay, (f"Class activation map for '{cam.target}' (decision score {cam.score:+.3f}): warm colours "
                     f"mark where the linear head found evidence for that class.{where}")


def demo_model(cache_dir=None, *, progress=print):
    """Path of the ``--demo`` model (fitted on the SYNTHETIC demo data on first use, then cached)."""
    from ..card import build_card, write_card
    from ..demo import demo_cache_dir, load_demo
    from ..models import fit_model, save_model

    base = Path(cache_dir) if cache_dir is not None else demo_cache_dir().parent / "serve"
    path = base / f"demo-{DEMO_RECIPE}-v{_DEMO_VERSION}.skops"
    card_json = path.with_name(path.stem + ".card.json")
    if path.is_file() and card_json.is_file():
        return path
    progress(f"fitting the demo model ({DEMO_RECIPE}) on the SYNTHETIC demo data, once; cached in {base}")
    dataset = load_demo()
    model = fit_model(DEMO_RECIPE, dataset)
    base.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=base) as tmp:  # write, then move: no half-written cache
        tmp_path = save_model(model, Path(tmp) / path.name)
        write_card(build_card(model, dataset, model_path=tmp_path, source=dataset.root), tmp_path)
        for written in Path(tmp).iterdir():
            written.replace(base / written.name)
    return path
