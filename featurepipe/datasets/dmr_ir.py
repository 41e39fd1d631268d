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
"""

from __future__ import annotations

from ..dataset import Dataset
from ._common import check_root, is_hidden, is_image_file, make_sample, natural_key, relpath, validate_samples
from .folder import walk_files

__all__ = ["load_dmr_ir"]


def load_dmr_ir(root, *, classes=None, mode=None, validate=True, n_jobs=None, name="dmr-ir"):
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

    Returns
    -------
    Dataset
        ``group`` is the patient id; ``meta`` holds ``patient`` and ``view``.
    """
    root = check_root(root)
    if mode not in (None, "gray", "rgb"):
        raise ValueError(f"mode must be None, 'gray' or 'rgb'; got {mode!r}")
    classes = None if classes is None else [str(c) for c in classes]
    skipped, ignored, samples = [], [], []
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
            meta = {"relpath": relpath(path, root), "patient": patient, "view": "/".join(parts[1:-1])}
            sample = make_sample(path, None, mode=mode, label=label, group=patient, meta=meta, skipped=skipped)
            if sample is not None:
                samples.append(sample)
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
        "citation": ("L. F. Silva, D. C. M. Saade, G. O. Sequeiros, A. C. Silva, A. C. Paiva, R. S. Bravo, "
                     "A. Conci, \"A new database for breast research with infrared image\", Journal of Medical "
                     "Imaging and Health Informatics 4(1) (2014) 92-100."),
    }
    return Dataset(samples, name=name, root=str(root), skipped=skipped, info=info)
