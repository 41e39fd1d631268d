"""mini-MIAS mammograms (Suckling et al. 1994) from the ground-truth file ``Info.txt``.

``Info.txt`` rows read ``REF TISSUE CLASS SEVERITY X Y RADIUS``:

* ``REF`` ``mdb001`` … ``mdb322``; the image is ``<root>/<REF>.png`` (or ``.pgm`` …);
* ``TISSUE`` ``F``/``G``/``D`` (fatty, fatty-glandular, dense-glandular);
* ``CLASS`` ``CALC``/``CIRC``/``SPIC``/``MISC``/``ARCH``/``ASYM``/``NORM``;
* ``SEVERITY`` ``B``/``M``, absent for ``NORM``;
* ``X Y RADIUS`` the centre and radius (pixels) of a circle around the
  abnormality, **origin at the bottom-left corner**: the centre lies at
  column ``X`` and row ``H - Y`` of the image array (``H`` = image height,
  1024). Some abnormal rows have no coordinates (widely distributed
  calcifications), and in the full database end with a note reference
  instead (``mdb216 D CALC M *NOTE 3*``); an image can have several rows.

Consecutive images ``mdb(2k-1)``/``mdb(2k)`` are the two breasts of one
woman and share the group ``"mias-<k>"`` (3 digits), so a grouped split keeps them in one fold.

Units and tasks
---------------
``unit="image"``: one sample per mammogram. ``unit="patch"``: one square
patch per abnormality row, centred on ``(row H - Y, column X)`` (the centre
sits at patch pixel ``(size // 2, size // 2)``), plus one background patch per
normal image taken inside the breast (see :func:`background_patch_centre`).
Patches are lazy derived samples: nothing is decoded until the pixels are
needed and their keys are exact (parent key + crop box).

Border policy (``border``) for an abnormality patch that would extend beyond
the image: ``"pad"`` (default) keeps the abnormality centred and fills the
outside with zeros (black, the mammogram background); ``"shift"`` moves the
window inside the image (the centre is then off-centre, recorded in
``meta["centre_in_patch"]``); ``"skip"`` reports the row in ``Dataset.skipped``.

Patch size (``patch_size``, ``fit_radius``, ``context``): by default every
patch is ``patch_size`` pixels square. ``fit_radius=True`` adapts an
abnormality patch to the annotated circle: its side is the circle's
diameter ``d = 2 * RADIUS + 1`` plus ``context`` times ``d`` on every side
(rounded up; :func:`featurepipe.preprocessing.context_margin`), i.e. the box
``CropToMask(context=context, square=True)`` cuts around a disk mask of that
radius, and never less than ``patch_size`` (the floor keeps small
calcification clusters, radius a few pixels, in a patch a CNN can read; lower
``patch_size`` for a lower floor). ``context=0.5`` makes every lesion fill
half the patch side whatever its size. Background patches of normal images
stay ``patch_size`` square: in tasks with normal patches their fixed size
differs from the lesion-sized abnormal patches, so a classifier could read
the label from the patch scale; size-adaptive patches are meant for
``task="benign-malignant"``.

Tasks: ``"normal-abnormal"``, ``"benign-malignant"`` (normal images are
left out, counted in ``info["excluded"]``) and ``"normal-benign-malignant"``.
An image whose rows disagree in severity is labelled malignant in image tasks
(the worst finding); patches carry their own row's severity. Abnormal rows
without coordinates are valid whole-image samples (their label needs no
location); they cannot give a patch, and with ``unit="patch"`` they are
reported in ``Dataset.skipped``, never dropped silently. The task and unit
are recorded in ``Dataset.info["task"]`` and ``Dataset.info["unit"]``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu
from skimage.measure import label as label_components
from skimage.morphology import disk

from ..dataset import Dataset
from ..preprocessing import context_margin
from ._common import check_root, is_hidden, is_image_file, make_sample, natural_key, validate_samples

__all__ = ["load_mias", "parse_mias_info", "MiasRecord", "background_patch_centre", "MIAS_TASKS",
           "MIAS_ABNORMALITIES", "MIAS_TISSUES", "mias_group", "radius_patch_side"]

MIAS_TISSUES = {"F": "fatty", "G": "fatty-glandular", "D": "dense-glandular"}
MIAS_ABNORMALITIES = {
    "CALC": "calcification",
    "CIRC": "well-defined/circumscribed mass",
    "SPIC": "spiculated mass",
    "MISC": "other, ill-defined mass",
    "ARCH": "architectural distortion",
    "ASYM": "asymmetry",
    "NORM": "normal",
}
MIAS_TASKS = ("normal-abnormal", "benign-malignant", "normal-benign-malignant")
_UNITS = ("image", "patch")
_BORDERS = ("pad", "shift", "skip")
_REF = re.compile(r"^mdb\d+$", re.IGNORECASE)
_SEVERITY = {"B": "benign", "M": "malignant"}
_PREFERRED_EXT = (".png", ".pgm", ".tif", ".tiff", ".bmp", ".jpg", ".jpeg")


@dataclass(frozen=True)
class MiasRecord:
    """One row of ``Info.txt``.

    ``x``, ``y``, ``radius`` are ``None`` when the row has no coordinates;
    ``y`` is measured from the *bottom* of the image as in the file.
    ``note`` is a trailing reference to the file's notes (``"*NOTE 3*"`` in
    the full database: calcifications too widespread for one circle), else ``None``.
    """

    ref: str
    tissue: str
    abnormality: str
    severity: str | None
    x: int | None
    y: int | None
    radius: int | None
    line: int
    text: str
    note: str | None = None

    @property
    def has_location(self):
        return self.x is not None

    @property
    def number(self):
        return int(self.ref[3:])


def mias_group(ref):
    """Group id of the woman an image belongs to: ``mdb001``/``mdb002`` -> ``"mias-001"``."""
    number = int(str(ref)[3:])
    return f"mias-{(number + 1) // 2:03d}"


def parse_mias_info(path):
    """Parse ``Info.txt``: the rows that start with ``mdb<digits>``; other lines are documentation.

    Returns
    -------
    records : list of MiasRecord
    problems : list of (line number, text, reason)
        Rows that start with a reference but cannot be parsed.
    """
    path = Path(os.fspath(path))
    if not path.is_file():
        raise FileNotFoundError(f"MIAS ground-truth file {str(path)!r} does not exist")
    records, problems = [], []
    with open(path, encoding="latin-1") as fh:
        for number, raw in enumerate(fh, start=1):
            text = raw.strip()
            tokens = text.split()
            if not tokens or not _REF.match(tokens[0]):
                continue
            record, reason = _parse_tokens(tokens, number, text)
            if record is None:
                problems.append((number, text, reason))
            else:
                records.append(record)
    return records, problems


def _parse_tokens(tokens, number, text):
    expected = "expected 'REF TISSUE CLASS [SEVERITY [X Y RADIUS] [*NOTE n*]]'"
    if len(tokens) < 3:
        return None, f"too few fields; {expected}"
    ref, tissue, abnormality = tokens[0].lower(), tokens[1].upper(), tokens[2].upper()
    if tissue not in MIAS_TISSUES:
        return None, f"tissue {tokens[1]!r} is not one of {sorted(MIAS_TISSUES)}"
    if abnormality not in MIAS_ABNORMALITIES:
        return None, f"class {tokens[2]!r} is not one of {sorted(MIAS_ABNORMALITIES)}"
    if abnormality == "NORM":
        if len(tokens) > 3:
            return None, f"a NORM row has extra fields {tokens[3:]}"
        return MiasRecord(ref, tissue, abnormality, None, None, None, None, number, text), None
    if len(tokens) < 4 or tokens[3].upper() not in _SEVERITY:
        return None, f"an abnormal row needs severity B or M; {expected}"
    severity = tokens[3].upper()
    rest = tokens[4:]
    note = None
    # The full database ends some rows with a note reference, "*NOTE 3*" (split into "*NOTE", "3*").
    starts = [i for i, t in enumerate(rest) if t.startswith("*")]
    if starts:
        first = starts[0]
        if not rest[-1].endswith("*") or (first == len(rest) - 1 and len(rest[-1]) < 2):
            return None, f"note {' '.join(rest[first:])!r} is not closed by '*' (expected e.g. '*NOTE 3*')"
        note = " ".join(rest[first:])
        rest = rest[:first]
    x = y = radius = None
    if len(rest) == 3 and all(t.isdigit() for t in rest):
        x, y, radius = (int(t) for t in rest)
    elif rest:
        return None, f"coordinates {rest} are not three integers X Y RADIUS"
    return MiasRecord(ref, tissue, abnormality, severity, x, y, radius, number, text, note), None


def background_patch_centre(image):
    """A deterministic point deep inside the breast of a mammogram: ``(row, col)``.

    The image (gray, or the channel mean of RGB) is reduced so its short side
    is about 256 px (area averaging), thresholded with Otsu's method, opened
    with a disk of radius 2 (drops labels and thin artefacts), the largest
    connected component is kept and its holes filled; the point farthest from
    the component's boundary and from the image border (Euclidean distance
    transform; the first maximum in raster order) is mapped back to full
    resolution. A uniform image has no tissue: its centre is returned.
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 3:
        image = image.mean(axis=2)
    height, width = image.shape
    factor = max(1, min(height, width) // 256)
    small = image
    if factor > 1:
        small = cv2.resize(image, (width // factor, height // factor), interpolation=cv2.INTER_AREA)
    if float(small.max()) <= float(small.min()):
        return height // 2, width // 2
    foreground = ndi.binary_opening(small > threshold_otsu(small), structure=disk(2))
    components = label_components(foreground)
    if components.max() == 0:
        return height // 2, width // 2
    largest = np.argmax(np.bincount(components.ravel())[1:]) + 1
    breast = ndi.binary_fill_holes(components == largest)
    # Pad with background so the image border counts as a boundary too.
    distance = ndi.distance_transform_edt(np.pad(breast, 1))[1:-1, 1:-1]
    row, col = np.unravel_index(int(np.argmax(distance)), distance.shape)
    return min(height - 1, int(row) * factor + factor // 2), min(width - 1, int(col) * factor + factor // 2)


class _Crop:
    """Picklable crop ``image[row0:row0+size, col0:col0+size]``, zero-padded outside the image."""

    def __init__(self, row0, col0, size):
        self.row0, self.col0, self.size = int(row0), int(col0), int(size)

    def __call__(self, image, mask):
        return _crop_padded(image, self.row0, self.col0, self.size), (
            None if mask is None else _crop_padded(mask, self.row0, self.col0, self.size))


class _BackgroundCrop:
    """Picklable crop of ``size`` px around :func:`background_patch_centre`, shifted inside the image."""

    def __init__(self, size):
        self.size = int(size)

    def __call__(self, image, mask):
        row, col = background_patch_centre(image)
        height, width = image.shape[:2]
        row0 = int(np.clip(row - self.size // 2, 0, max(0, height - self.size)))
        col0 = int(np.clip(col - self.size // 2, 0, max(0, width - self.size)))
        return _Crop(row0, col0, self.size)(image, mask)


def _crop_padded(array, row0, col0, size):
    out = np.zeros((size, size) + array.shape[2:], dtype=array.dtype)
    height, width = array.shape[:2]
    r0, c0 = max(row0, 0), max(col0, 0)
    r1, c1 = min(row0 + size, height), min(col0 + size, width)
    if r1 > r0 and c1 > c0:
        out[r0 - row0:r1 - row0, c0 - col0:c1 - col0] = array[r0:r1, c0:c1]
    return out


def radius_patch_side(radius, context=0.0):
    """Side in pixels of a patch around a circle of ``radius`` px with ``context``: ``d + 2 * ceil(context * d)``.

    ``d = 2 * radius + 1`` is the circle's diameter in pixels; the context
    rule is :func:`featurepipe.preprocessing.context_margin`, so this is the
    side of the box ``CropToMask(context=context, square=True)`` cuts
    around a disk mask of that radius.

    >>> radius_patch_side(40), radius_patch_side(40, 0.5), radius_patch_side(3, 0.5)
    (81, 163, 15)
    """
    diameter = 2 * int(radius) + 1
    return diameter + 2 * context_margin(diameter, 0, context)


def _check_params(task, unit, patch_size, fit_radius, border, mode, context):
    if task not in MIAS_TASKS:
        raise ValueError(f"task must be one of {MIAS_TASKS}; got {task!r}")
    if unit not in _UNITS:
        raise ValueError(f"unit must be one of {_UNITS}; got {unit!r}")
    if isinstance(patch_size, bool) or not isinstance(patch_size, (int, np.integer)) or patch_size < 8:
        raise ValueError(f"patch_size must be an integer >= 8 (pixels); got {patch_size!r}")
    if not isinstance(fit_radius, bool):
        raise ValueError(f"fit_radius must be True or False; got {fit_radius!r}")
    if isinstance(context, bool) or not isinstance(context, (int, float, np.integer, np.floating)) or not (
            np.isfinite(context) and context >= 0):
        raise ValueError(f"context must be a number >= 0 (a fraction of the abnormality's diameter); got {context!r}")
    if context > 0 and not fit_radius:
        raise ValueError(f"context={context!r} sizes patches from the annotated radius, so it needs fit_radius=True")
    if border not in _BORDERS:
        raise ValueError(f"border must be one of {_BORDERS}; got {border!r}")
    if mode not in (None, "gray", "rgb"):
        raise ValueError(f"mode must be None, 'gray' or 'rgb'; got {mode!r}")


def _image_label(records, task):
    if records[0].abnormality == "NORM":
        return None if task == "benign-malignant" else "normal"
    if task == "normal-abnormal":
        return "abnormal"
    return "malignant" if any(r.severity == "M" for r in records) else "benign"


def _row_label(record, task):
    if task == "normal-abnormal":
        return "abnormal"
    return _SEVERITY[record.severity]


def _image_size(path):
    """``(height, width)`` from the file header (no decoding)."""
    with Image.open(path) as im:
        width, height = im.size
    return height, width


def load_mias(root, *, info_file="Info.txt", task="normal-benign-malignant", unit="image", patch_size=128,
              fit_radius=False, context=0.0, border="pad", mode="gray", validate=True, n_jobs=None,
              name="mini-mias"):
    """Build a mini-MIAS dataset (whole images or patches) from ``Info.txt``.

    Parameters
    ----------
    root : path
        Folder with the images ``mdbNNN.png`` (or ``.pgm``) and ``Info.txt``.
    info_file : str or path, default="Info.txt"
        The ground-truth file, relative to ``root`` unless absolute.
    task : {"normal-benign-malignant", "normal-abnormal", "benign-malignant"}
        Labels (see the module docstring).
    unit : {"image", "patch"}, default="image"
        Whole mammograms, or patches around abnormalities / inside normal breasts.
    patch_size : int, default=128
        Side of the square patches in pixels (200 µm per pixel in mini-MIAS).
    fit_radius : bool, default=False
        Size an abnormality patch from its annotated circle: side
        ``d + 2 * ceil(context * d)`` with ``d = 2 * RADIUS + 1``, or
        ``patch_size`` when that is larger (see "Patch size" in the module
        docstring).
    context : float >= 0, default=0.0
        With ``fit_radius``: context on every side of the circle, as a
        fraction of its diameter (0: the circle alone).
    border : {"pad", "shift", "skip"}, default="pad"
        What to do with an abnormality patch that extends beyond the image.
    mode : {"gray", "rgb", None}, default="gray"
        Channel mode for reading the images.
    validate : bool, default=True
        Decode every image now; images that fail (and all their patches)
        go to ``Dataset.skipped``.
    n_jobs : int, optional
        Threads for decoding during validation.

    Returns
    -------
    Dataset
        ``group`` is the woman (``"mias-001"`` for mdb001/mdb002); ``meta``
        holds ``ref``, ``tissue``, ``abnormality`` and, for patches, ``x``,
        ``y`` (file convention), ``radius``, ``centre_row``, ``centre_col``,
        ``patch_box`` ``(row0, col0, row1, col1)`` (may exceed the image with
        ``border="pad"``) and ``centre_in_patch``.
    """
    _check_params(task, unit, patch_size, fit_radius, border, mode, context)
    root = check_root(root)
    info_path = Path(os.fspath(info_file))
    if not info_path.is_absolute():
        info_path = root / info_path
    records, problems = parse_mias_info(info_path)
    files = {}
    ignored = []
    for entry in sorted(root.iterdir(), key=lambda p: natural_key(p.name)):
        if is_hidden(entry.name) or entry == info_path:
            continue
        if entry.is_dir():
            ignored.append((str(entry), "a folder; the mias layout reads the image files directly under the root"))
        elif is_image_file(entry):  # FIFOs and dangling links too: reading them reports why they fail
            files.setdefault(entry.stem.lower(), []).append(entry)
        else:
            ignored.append((str(entry), "not an image file extension"))
    for paths in files.values():
        paths.sort(key=lambda p: _PREFERRED_EXT.index(p.suffix.lower())
                   if p.suffix.lower() in _PREFERRED_EXT else len(_PREFERRED_EXT))

    skipped = []
    for line, text, reason in problems:
        ref = text.split()[0].lower()
        where = str(files[ref][0]) if ref in files else str(info_path)
        skipped.append((where, f"{info_path.name} line {line} {text!r} cannot be parsed: {reason}"))

    by_ref = {}
    for record in records:
        by_ref.setdefault(record.ref, []).append(record)
    listed = set(by_ref) | {text.split()[0].lower() for _, text, _ in problems}
    for stem, paths in files.items():
        if stem not in listed:
            skipped.append((str(paths[0]), f"image has no row in {info_path.name}, so it has no label"))

    excluded = {}
    samples = []
    for ref, rows in by_ref.items():
        if ref not in files:
            skipped.append((str(root / f"{ref}.png"),
                            f"listed in {info_path.name} line {rows[0].line} but no image file {ref}.* "
                            f"found in {str(root)!r}"))
            continue
        path = files[ref][0]
        kinds = {r.abnormality == "NORM" for r in rows}
        if len(kinds) > 1:
            skipped.append((str(path), f"{info_path.name} has both NORM and abnormal rows for {ref} "
                                       f"(lines {[r.line for r in rows]})"))
            continue
        label = _image_label(rows, task)
        if label is None:
            excluded["normal images (not part of the benign-malignant task)"] = (
                excluded.get("normal images (not part of the benign-malignant task)", 0) + 1)
            continue
        meta = {
            "ref": ref,
            "relpath": path.name,
            "tissue": rows[0].tissue,
            "abnormality": ";".join(dict.fromkeys(r.abnormality for r in rows)),
            "info_lines": tuple(r.line for r in rows),
        }
        base = make_sample(path, None, mode=mode, label=label, group=mias_group(ref), meta=meta,
                           skipped=skipped)
        if base is None:
            continue
        if unit == "image":
            samples.append(base)
            continue
        if rows[0].abnormality == "NORM":
            token = f"featurepipe.datasets.mias.background(size={patch_size},method=otsu-edt-v1)"
            patch_meta = dict(base.meta, patch=f"{ref} background")
            samples.append(base.derive(token, _BackgroundCrop(patch_size)).replace(meta=patch_meta))
            continue
        try:
            height, width = _image_size(path)
        except (OSError, ValueError, SyntaxError) as exc:
            skipped.append((str(path), f"cannot read the image size from the file header ({exc})"))
            continue
        for index, record in enumerate(rows):
            patch = _abnormality_patch(base, record, index, path, height, width, task, patch_size,
                                       fit_radius, context, border, info_path.name, skipped)
            if patch is not None:
                samples.append(patch)

    if validate:
        samples = validate_samples(samples, skipped, n_jobs=n_jobs)
    info = {
        "layout": "mias",
        "task": task,
        "unit": unit,
        "patch_size": patch_size if unit == "patch" else None,
        "fit_radius": bool(fit_radius) if unit == "patch" else None,
        "context": float(context) if unit == "patch" and fit_radius else None,
        "border": border if unit == "patch" else None,
        "mode": mode,
        "validated": bool(validate),
        "info_file": str(info_path),
        "excluded": excluded,
        "manifest_columns": ["tissue", "abnormality"],
        "ignored": ignored,
        "citation": ("J. Suckling et al., \"The Mammographic Image Analysis Society digital mammogram "
                     "database\", Excerpta Medica, International Congress Series 1069 (1994) 375-378."),
    }
    return Dataset(samples, name=name, root=str(root), skipped=skipped, info=info)


def _abnormality_patch(base, record, index, path, height, width, task, patch_size, fit_radius, context, border,
                       info_name, skipped):
    where = f"{info_name} line {record.line} {record.text!r}"
    if not record.has_location:
        skipped.append((str(path), f"{where} has no coordinates (X Y RADIUS), so no patch can be centred "
                                   "on the abnormality"))
        return None
    row, col = height - record.y, record.x
    if not (0 <= row < height and 0 <= col < width):
        skipped.append((str(path), f"{where}: centre x={record.x}, y={record.y} (row {row}, column {col}) "
                                   f"lies outside the {width}x{height} image"))
        return None
    size = max(patch_size, radius_patch_side(record.radius, context)) if fit_radius else patch_size
    row0, col0 = row - size // 2, col - size // 2
    inside = row0 >= 0 and col0 >= 0 and row0 + size <= height and col0 + size <= width
    placement = "inside"
    if not inside:
        if border == "skip":
            skipped.append((str(path), f"{where}: the {size}x{size} patch around row {row}, column {col} "
                                       f"extends beyond the {width}x{height} image (border='skip')"))
            return None
        if border == "shift":
            if size > height or size > width:
                skipped.append((str(path), f"{where}: a {size}x{size} patch does not fit in the "
                                           f"{width}x{height} image (border='shift')"))
                return None
            row0 = int(np.clip(row0, 0, height - size))
            col0 = int(np.clip(col0, 0, width - size))
            placement = "shifted"
        else:
            placement = "padded"
    token = f"featurepipe.datasets.mias.crop(row0={row0},col0={col0},size={size})"
    patch_meta = dict(base.meta)
    patch_meta.update({
        "patch": f"{record.ref} row {index + 1}: {record.abnormality} {record.severity} at x={record.x} "
                 f"y={record.y}",
        "abnormality": record.abnormality,
        "severity": _SEVERITY[record.severity],
        "x": record.x,
        "y": record.y,
        "radius": record.radius,
        "centre_row": row,
        "centre_col": col,
        "patch_box": (row0, col0, row0 + size, col0 + size),
        "centre_in_patch": (row - row0, col - col0),
        "placement": placement,
        "info_lines": (record.line,),
    })
    return base.derive(token, _Crop(row0, col0, size)).replace(label=_row_label(record, task), meta=patch_meta)
