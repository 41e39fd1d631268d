"""BreakHis histopathology images (Spanhol et al. 2016): labels from file names.

File names read ``SOB_<B|M>_<subtype>-<year>-<slide id>-<magnification>-<seq>.png``,
e.g. ``SOB_B_A-14-22549AB-40-001.png``: benign adenosis, slide/patient
``14-22549AB``, 40x magnification, image 1. Files may lie anywhere under the
root (the original archive nests them as
``BreaKHis_v1/histology_slides/breast/<benign|malignant>/SOB/<subtype>/<patient>/<mag>X/``).

Subtypes: benign ``A`` adenosis, ``F`` fibroadenoma, ``PT`` phyllodes tumour,
``TA`` tubular adenoma; malignant ``DC`` ductal carcinoma, ``LC`` lobular
carcinoma, ``MC`` mucinous carcinoma, ``PC`` papillary carcinoma.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..dataset import Dataset
from ._common import check_root, is_image_file, make_sample, natural_key, relpath, validate_samples, walk_tree

__all__ = ["load_breakhis", "parse_breakhis_name", "BreakHisName", "BREAKHIS_SUBTYPES", "BREAKHIS_TASKS"]

BREAKHIS_SUBTYPES = {
    "A": ("benign", "adenosis"),
    "F": ("benign", "fibroadenoma"),
    "PT": ("benign", "phyllodes_tumor"),
    "TA": ("benign", "tubular_adenoma"),
    "DC": ("malignant", "ductal_carcinoma"),
    "LC": ("malignant", "lobular_carcinoma"),
    "MC": ("malignant", "mucinous_carcinoma"),
    "PC": ("malignant", "papillary_carcinoma"),
}
BREAKHIS_TASKS = ("binary", "subtype")
_MAGNIFICATIONS = (40, 100, 200, 400)
_NAME = re.compile(
    r"^SOB_(?P<cls>[A-Z]+)_(?P<subtype>[A-Z]+)-(?P<year>\d+)-(?P<slide>[0-9A-Za-z]+)-(?P<mag>\d+)-(?P<seq>\d+)$"
)


@dataclass(frozen=True)
class BreakHisName:
    """What a BreakHis file name encodes. ``patient`` (``"<year>-<slide id>"``) is the group."""

    label: str
    subtype_code: str
    subtype: str
    year: int
    slide: str
    patient: str
    magnification: int
    seq: int


def parse_breakhis_name(name):
    """Parse a BreakHis file name (with or without folder and extension).

    Raises
    ------
    ValueError
        Saying what part of the name does not fit the pattern
        ``SOB_<B|M>_<subtype>-<year>-<slide id>-<magnification>-<seq>``.
    """
    stem = Path(str(name)).name
    if is_image_file(stem):
        stem = Path(stem).stem
    match = _NAME.match(stem)
    if not match:
        raise ValueError(f"file name {stem!r} does not match "
                         "'SOB_<B|M>_<subtype>-<year>-<slide id>-<magnification>-<seq>'")
    tumour, code = match.group("cls"), match.group("subtype")
    if tumour not in ("B", "M"):
        raise ValueError(f"file name {stem!r}: tumour class {tumour!r} is not B or M")
    if code not in BREAKHIS_SUBTYPES:
        raise ValueError(f"file name {stem!r}: subtype {code!r} is not one of {sorted(BREAKHIS_SUBTYPES)}")
    label, subtype = BREAKHIS_SUBTYPES[code]
    if label[0].upper() != tumour:
        raise ValueError(f"file name {stem!r}: subtype {code} ({subtype}) is {label}, but the name says {tumour}")
    magnification = int(match.group("mag"))
    if magnification not in _MAGNIFICATIONS:
        raise ValueError(f"file name {stem!r}: magnification {magnification} is not one of {_MAGNIFICATIONS}")
    year, slide = int(match.group("year")), match.group("slide")
    return BreakHisName(label=label, subtype_code=code, subtype=subtype, year=year, slide=slide,
                        patient=f"{match.group('year')}-{slide}", magnification=magnification,
                        seq=int(match.group("seq")))


def load_breakhis(root, *, task="binary", magnification=None, mode=None, validate=True, n_jobs=None,
                  name="breakhis"):
    """Build a BreakHis dataset from every image file under ``root`` (searched recursively).

    Parameters
    ----------
    root : path
        Any folder holding BreakHis images (flat or in the original nested layout).
    task : {"binary", "subtype"}, default="binary"
        Labels ``"benign"``/``"malignant"``, or the eight subtypes
        (``"adenosis"`` … ``"papillary_carcinoma"``).
    magnification : int or sequence of int, optional
        Keep only these magnifications (40, 100, 200, 400); the others are
        counted in ``info["excluded"]``.
    mode : {None, "gray", "rgb"}, default=None
        Channel mode (BreakHis images are RGB).
    validate : bool, default=True
        Decode every image now; failures go to ``Dataset.skipped``.
    n_jobs : int, optional
        Threads for decoding during validation.

    Returns
    -------
    Dataset
        ``group`` is the patient (``"<year>-<slide id>"``, e.g. ``"14-22549AB"``);
        ``meta`` holds ``subtype``, ``subtype_code``, ``magnification``, ``seq``.
        Image files whose names do not parse are in ``skipped`` with the reason.
    """
    if task not in BREAKHIS_TASKS:
        raise ValueError(f"task must be one of {BREAKHIS_TASKS}; got {task!r}")
    if magnification is not None:
        wanted = (magnification,) if isinstance(magnification, int) else tuple(magnification)
        bad = [m for m in wanted if m not in _MAGNIFICATIONS]
        if bad or not wanted:
            raise ValueError(f"magnification must be None or among {_MAGNIFICATIONS}; got {magnification!r}")
    else:
        wanted = None
    root = check_root(root)
    skipped, ignored, samples = [], [], []
    excluded = {}
    paths = walk_tree(root)  # symlinked sub-folders too; FIFOs and dangling links are reported when read
    for path in sorted(paths, key=lambda p: natural_key(p.name)):
        if not is_image_file(path):
            ignored.append((str(path), "not an image file extension"))
            continue
        try:
            parsed = parse_breakhis_name(path.name)
        except ValueError as exc:
            skipped.append((str(path), str(exc)))
            continue
        if wanted is not None and parsed.magnification not in wanted:
            key = f"magnification {parsed.magnification}x (not in {list(wanted)})"
            excluded[key] = excluded.get(key, 0) + 1
            continue
        label = parsed.label if task == "binary" else parsed.subtype
        meta = {"relpath": relpath(path, root), "subtype": parsed.subtype, "subtype_code": parsed.subtype_code,
                "magnification": parsed.magnification, "seq": parsed.seq}
        sample = make_sample(path, None, mode=mode, label=label, group=parsed.patient, meta=meta,
                             skipped=skipped)
        if sample is not None:
            samples.append(sample)
    if validate:
        samples = validate_samples(samples, skipped, n_jobs=n_jobs)
    info = {
        "layout": "breakhis",
        "task": task,
        "mode": mode,
        "validated": bool(validate),
        "excluded": excluded,
        "ignored": ignored,
        "manifest_columns": ["subtype", "magnification"],
        "citation": ("F. A. Spanhol, L. S. Oliveira, C. Petitjean, L. Heutte, \"A dataset for breast cancer "
                     "histopathological image classification\", IEEE Trans. Biomed. Eng. 63(7) (2016) 1455-1462."),
    }
    return Dataset(samples, name=name, root=str(root), skipped=skipped, info=info)
