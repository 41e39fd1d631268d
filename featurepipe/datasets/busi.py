"""BUSI (Breast Ultrasound Images, Al-Dhabyani et al. 2020).

Layout::

    <root>/benign/benign (1).png
    <root>/benign/benign (1)_mask.png
    <root>/benign/benign (4)_mask_1.png      # extra lesions of one image
    <root>/malignant/...
    <root>/normal/...                          # normal images have empty masks

Every image gets its lesion mask; an image with several mask files
(``_mask``, ``_mask_1``, ``_mask_2``) gets their logical OR. BUSI has no
patient identifiers and contains exact and near-duplicate images, some
across classes: run :func:`featurepipe.duplicates.find_duplicates` and
split on its clusters (see ``data_manifests/busi.md``).
"""

from __future__ import annotations

from .folder import load_folder

__all__ = ["load_busi", "BUSI_CLASSES"]

#: The class folders of BUSI.
BUSI_CLASSES = ("benign", "malignant", "normal")


def load_busi(root, *, mode="gray", require_mask=True, validate=True, n_jobs=None, name="busi"):
    """Build the BUSI dataset: 780 images (benign 437, malignant 210, normal 133) with lesion masks.

    Parameters
    ----------
    root : path
        Folder holding ``benign/``, ``malignant/`` and ``normal/``.
    mode : {"gray", "rgb", None}, default="gray"
        Channel mode. BUSI is B-mode ultrasound; 16 files are stored as RGB
        only because of coloured annotation markers, so ``"gray"`` (luma)
        gives every image the same convention.
    require_mask : bool, default=True
        Report images without a mask file in ``Dataset.skipped``.
    validate : bool, default=True
        Decode every image and mask now (see :func:`~featurepipe.datasets.load_folder`).
    n_jobs : int, optional
        Threads for decoding during validation.

    Returns
    -------
    Dataset
        Labels ``"benign"``, ``"malignant"``, ``"normal"``; ``group`` is
        ``None`` (BUSI has no patient ids); ``meta["mask_paths"]`` lists the
        mask files merged into each sample's mask.
    """
    dataset = load_folder(root, mode=mode, mask_suffix="_mask", require_mask=require_mask,
                          classes=BUSI_CLASSES, recursive=False, validate=validate, n_jobs=n_jobs,
                          name=name, layout="busi")
    dataset.info["citation"] = ("W. Al-Dhabyani, M. Gomaa, H. Khaled, A. Fahmy, \"Dataset of breast "
                                "ultrasound images\", Data in Brief 28 (2020) 104863.")
    return dataset
