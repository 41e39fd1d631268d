"""DMR-IR style breast thermograms: one folder per patient inside one folder per class.

Layout (designed for featurepipe; see ``data_manifests/dmr_ir.md``)::

    <root>/<class>/<patient id>/[<view or protocol sub-folders>/]<image>.{png,jpg,...}

    e.g.  dmr/healthy/P001/static/front.png
          dmr/healthy/P001/dynamic/0001.jpg
          dmr/sick/P017/static/front.png

* the label is the class folder (``healthy``/``sick`` in DMR-IR exports);
* the group is the patient folder name, so every image of a patient (the
  static views and the dynamic sequence) stays in one fold;
* sub-folders below the patient are kept in ``meta["view"]`` (``"static"``);
* files without an image extension (DMR-IR's ``.txt`` temperature matrices)
  are listed in ``info["ignored"]`` and not read;
* an image directly inside a class folder has no patient and is reported in
  ``Dataset.skipped``; a patient id found under two classes is reported in
  ``info["warnings"]`` (its images keep one group, so they never straddle folds).

Paired crops (``pairs=True``)
-----------------------------
Thermography exports often hold two crops per patient: the suspicious
region (hot spot) and the same region of the other breast (contralateral),
with one label for the patient. With ``pairs=True`` every patient folder
(its sub-folders included) must hold exactly two images, and exactly one
of them is the contralateral crop: the one whose file name, without
extension, ends with ``partner_marker`` (default ``"contralateral"``,
compared case-insensitively), e.g.::

    thermo/sick/P017/P017_hotspot.png          <- primary (the sample's image)
    thermo/sick/P017/P017_contralateral.png    <- its partner

Each patient is then *one* sample (group = patient id) whose
:attr:`~featurepipe.sample.Sample.partner` is the contralateral crop (see
:mod:`featurepipe.pairs`). A patient folder with one image, three or more,
no marked crop or two marked crops is refused with a ``ValueError`` listing
every such folder and its files (never dropped or paired by guess); a pair
whose file cannot be read is reported in ``Dataset.skipped`` as a whole.
"""

from __future__ import annotations

from ..dataset import Dataset
from ._common import check_root, is_hidden, is_image_file, make_pair, make_sample, natural_key, relpath, validate_samples
from .folder import walk_files

__all__ = ["DEFAULT_PARTNER_MARKER", "load_dmr_ir"]

#: End of the file name (without extension) that marks a patient's contralateral crop with ``pairs=True``.
DEFAULT_PARTNER_MARKER = "contralateral"


def load_dmr_ir(root, *, classes=None, mode=None, validate=True, n_jobs=None, name="dmr-ir", pairs=False,
                partner_marker=DEFAULT_PARTNER_MARKER):
    """Build a thermogram dataset from the patient-folder layout described in the module docstring.

    Parameters
    ----------
    root : path
        Folder holding one folder per class.
    classes : sequence of str, optional
        Allowed class folders (e.g. ``("healthy", "sick")``); images in other
        folders are reported as skipped. Default: every folder is a class.
    mode : {None, "gray", "rgb"}, default=None
        Channel mode (exports are grayscale or false-colour images).
    validate : bool, default=True
        Decode every image now; failures go to ``Dataset.skipped``.
    n_jobs : int, optional
        Threads for decoding during validation.
    pairs : bool, default=False
        One sample per patient folder holding exactly two crops, the primary
        crop with the contralateral one as its partner (see "Paired crops" in
        the module docstring); other patient folders are refused with a
        ``ValueError`` naming them.
    partner_marker : str, default="contralateral"
        With ``pairs=True``: the end of the contralateral crop's file name
        (without extension), compared case-insensitively.

    Returns
    -------
    Dataset
        ``group`` is the patient id; ``meta`` holds ``patient`` and ``view``
        (and, for pairs, ``partner_path`` and ``partner_relpath``).
    """
    root = check_root(root)
    if mode not in (None, "gray", "rgb"):
        raise ValueError(f"mode must be None, 'gray' or 'rgb'; got {mode!r}")
    classes = None if classes is None else [str(c) for c in classes]
    if not isinstance(pairs, bool):
        raise TypeError(f"pairs must be True or False; got {pairs!r}")
    if pairs and (not isinstance(partner_marker, str) or not partner_marker.strip()):
        raise ValueError(f"partner_marker must be a non-empty string (the end of the contralateral crop's file "
                         f"name); got {partner_marker!r}")
    skipped, ignored, samples = [], [], []
    patient_files = {}
    patient_classes = {}
    class_dirs = []
    for entry in sorted(root.iterdir(), key=lambda p: natural_key(p.name)):
        if is_hidden(entry.name):
            continue
        if entry.is_dir():
            class_dirs.append(entry)
        elif is_image_file(entry):
            skipped.append((str(entry), "image directly under the root; the layout needs "
                                        "<root>/<class>/<patient>/<image>"))
        else:
            ignored.append((str(entry), "not an image file extension"))
    if not class_dirs:
        raise ValueError(f"no class folders under {str(root)!r}: the DMR-IR layout needs "
                         "<root>/<class>/<patient>/<image> files")
    for class_dir in class_dirs:
        label = class_dir.name
        for path in walk_files(class_dir, recursive=True)[0]:
            if not is_image_file(path):
                ignored.append((str(path), "not an image file extension"))
                continue
            parts = path.relative_to(class_dir).parts
            if classes is not None and label not in classes:
                skipped.append((str(path), f"folder {label!r} is not one of the classes {classes}"))
                continue
            if len(parts) < 2:
                skipped.append((str(path), f"image directly inside class folder {label!r}; the layout needs "
                                           "<root>/<class>/<patient>/<image>"))
                continue
            patient = parts[0]
            patient_classes.setdefault(patient, set()).add(label)
            if pairs:
                patient_files.setdefault((label, patient, class_dir / patient), []).append(path)
                continue
            meta = {"relpath": relpath(path, root), "patient": patient, "view": "/".join(parts[1:-1])}
            sample = make_sample(path, None, mode=mode, label=label, group=patient, meta=meta, skipped=skipped)
            if sample is not None:
                samples.append(sample)
    if pairs:
        samples = _paired_samples(patient_files, root, partner_marker, mode, skipped)
    if validate:
        samples = validate_samples(samples, skipped, n_jobs=n_jobs)
    warnings = [f"patient {patient!r} appears under several classes {sorted(labels)}; its images share "
                "one group" for patient, labels in sorted(patient_classes.items()) if len(labels) > 1]
    info = {
        "layout": "dmr-ir",
        "mode": mode,
        "validated": bool(validate),
        "ignored": ignored,
        "warnings": warnings,
        "manifest_columns": ["view"],
        "pairs": bool(pairs),
        "citation": ("L. F. Silva, D. C. M. Saade, G. O. Sequeiros, A. C. Silva, A. C. Paiva, R. S. Bravo, "
                     "A. Conci, \"A new database for breast research with infrared image\", Journal of Medical "
                     "Imaging and Health Informatics 4(1) (2014) 92-100."),
    }
    return Dataset(samples, name=name, root=str(root), skipped=skipped, info=info)


def _paired_samples(patient_files, root, marker, mode, skipped):
    """One paired sample per patient folder (primary crop + contralateral partner); refuses folders that are no pair."""
    marker = marker.strip().lower()
    samples, problems = [], []
    for (label, patient, folder), files in patient_files.items():
        files = sorted(files, key=lambda p: natural_key(relpath(p, folder)))
        marked = [p for p in files if p.stem.lower().endswith(marker)]
        names = [relpath(p, folder) for p in files]
        if len(files) != 2:
            problems.append(f"{relpath(folder, root)!r} holds {len(files)} image(s) {names}, not 2")
            continue
        if len(marked) != 1:
            problems.append(f"{relpath(folder, root)!r}: {'both' if marked else 'neither'} of {names} "
                            f"end(s) with {marker!r}; exactly one crop must be the contralateral one")
            continue
        partner = marked[0]
        primary = files[0] if files[1] is partner else files[1]
        meta = {"relpath": relpath(primary, root), "patient": patient,
                "view": "/".join(primary.relative_to(folder).parts[:-1]), "partner_relpath": relpath(partner, root)}
        sample = make_pair(primary, partner, mode=mode, label=label, group=patient, meta=meta, skipped=skipped)
        if sample is not None:
            samples.append(sample)
    if problems:
        shown = "; ".join(problems[:10]) + (f"; and {len(problems) - 10} more" if len(problems) > 10 else "")
        raise ValueError(f"pairs=True needs every patient folder to hold exactly two crops, one of them named "
                         f"'<...>{marker}.<ext>' (the contralateral crop); {len(problems)} patient folder(s) do "
                         f"not: {shown}")
    return samples
