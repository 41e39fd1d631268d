"""Dataset builders: class-per-folder trees, CSV manifests and known public layouts.

Every builder returns a :class:`featurepipe.dataset.Dataset` of lazy
:class:`~featurepipe.sample.Sample` objects. Builders read each file's bytes
(for the sample key) and, with ``validate=True`` (the default), decode every
image and mask once, so that a returned dataset holds only usable samples;
files that cannot be used (unreadable, corrupt, missing mask, unparseable
name, no ground truth) are listed in ``Dataset.skipped`` with the reason and
never dropped silently: entries named like images that are not regular
files (FIFOs, devices, dangling symbolic links) are reported, never opened
for reading, and what a builder does not read (other files, folders outside
its layout) is listed in ``Dataset.info["ignored"]``. Symbolic links to
folders are followed. ``validate=False`` skips the decoding pass (fast for
large sets); decoding errors then surface at first use, naming the file.

Manifests are bounded by their data root: see
:mod:`featurepipe.datasets.manifest` (``allow_outside_root``).

==============  ======================================  ==========================
layout          builder                                 what it reads
==============  ======================================  ==========================
``folder``      :func:`load_folder`                     ``<root>/<class>/<image>``
``manifest``    :func:`load_manifest`                   CSV ``path,label[,group][,mask]``
``busi``        :func:`load_busi`                       BUSI with lesion masks
``mias``        :func:`load_mias`                       mini-MIAS ``Info.txt``
``breakhis``    :func:`load_breakhis`                   BreakHis file names
``dmr-ir``      :func:`load_dmr_ir`                     ``<root>/<class>/<patient>/...``
==============  ======================================  ==========================
"""

from __future__ import annotations

import os
from pathlib import Path

from ..registry import Registry
from ._common import is_hidden, is_image_file
from .breakhis import BREAKHIS_SUBTYPES, BreakHisName, load_breakhis, parse_breakhis_name
from .busi import BUSI_CLASSES, load_busi
from .dmr_ir import load_dmr_ir
from .folder import load_folder, scan_folder
from .manifest import MANIFEST_COLUMNS, ManifestRow, file_sha256, load_manifest, read_manifest, write_manifest
from .mias import MiasRecord, background_patch_centre, load_mias, mias_group, parse_mias_info
from .verify import ManifestReport, verify_manifest

__all__ = [
    "LAYOUTS",
    "detect_layout",
    "load_dataset",
    "load_folder",
    "scan_folder",
    "load_manifest",
    "read_manifest",
    "write_manifest",
    "file_sha256",
    "MANIFEST_COLUMNS",
    "ManifestRow",
    "verify_manifest",
    "ManifestReport",
    "load_busi",
    "BUSI_CLASSES",
    "load_mias",
    "parse_mias_info",
    "MiasRecord",
    "mias_group",
    "background_patch_centre",
    "load_breakhis",
    "parse_breakhis_name",
    "BreakHisName",
    "BREAKHIS_SUBTYPES",
    "load_dmr_ir",
]

#: Layout name -> builder ``f(root_or_manifest, **options) -> Dataset``: the built-in layouts of
#: the table above, and yours after ``LAYOUTS.register(name, builder)`` (then
#: ``load_dataset(path, layout=name)`` uses it; see :func:`load_dataset`).
LAYOUTS = Registry("layout")
for _name, _builder in [("folder", load_folder), ("manifest", load_manifest), ("busi", load_busi),
                        ("mias", load_mias), ("breakhis", load_breakhis), ("dmr-ir", load_dmr_ir)]:
    LAYOUTS.register(_name, _builder, built_in=True)
del _name, _builder


def detect_layout(target):
    """Guess the layout of a dataset path.

    Rules, in order: a file is a ``manifest``; a folder with ``Info.txt`` and
    ``mdb*`` images is ``mias``; a folder whose class folders are among
    benign/malignant/normal and hold ``*_mask*`` files is ``busi``; a folder
    whose image files all have BreakHis names (``SOB_...``) is ``breakhis``;
    a folder whose class folders are healthy/sick and hold patient
    sub-folders is ``dmr-ir``; any other folder is ``folder``.

    Raises
    ------
    FileNotFoundError
        When ``target`` does not exist.
    """
    path = Path(os.fspath(target))
    if not path.exists():
        raise FileNotFoundError(f"dataset path {str(path)!r} does not exist")
    if path.is_file():
        return "manifest"
    entries = [e for e in path.iterdir() if not is_hidden(e.name)]
    names = {e.name.lower(): e for e in entries}
    if "info.txt" in names and any(e.is_file() and e.name.lower().startswith("mdb") and is_image_file(e)
                                   for e in entries):
        return "mias"
    dirs = [e for e in entries if e.is_dir()]
    dir_names = {d.name.lower() for d in dirs}
    if dirs and dir_names <= set(BUSI_CLASSES) and any(
            "_mask" in f.name for d in dirs for f in d.iterdir() if is_image_file(f)):
        return "busi"
    image_names = []
    for _dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = [d for d in dirnames if not is_hidden(d)]
        image_names.extend(f for f in filenames if is_image_file(f) and not is_hidden(f))
    if image_names and all(name.startswith("SOB_") for name in image_names):
        return "breakhis"
    if dirs and dir_names <= {"healthy", "sick"} and all(
            any(sub.is_dir() for sub in d.iterdir()) for d in dirs):
        return "dmr-ir"
    return "folder"


def load_dataset(target, layout="auto", **options):
    """Build a dataset with the builder of ``layout`` (``"auto"``: :func:`detect_layout`).

    ``layout`` is ``"auto"`` or a name of :data:`LAYOUTS`, including layouts
    you registered there. ``options`` are passed to the builder (e.g.
    ``mode``, ``validate``, ``task``). Returns the
    :class:`~featurepipe.dataset.Dataset`.

    Examples
    --------
    A layout of your own: one class per file-name prefix (``<label>_<n>.png``)

    >>> import tempfile
    >>> from pathlib import Path
    >>> import cv2
    >>> import numpy as np
    >>> from featurepipe.dataset import Dataset
    >>> from featurepipe.sample import Sample
    >>> def load_prefixed(root, **options):
    ...     files = sorted(Path(root).glob("*.png"))
    ...     return Dataset([Sample.from_path(f, label=f.name.split("_")[0]) for f in files], name="prefixed")
    >>> _ = LAYOUTS.register("prefixed", load_prefixed)
    >>> root = Path(tempfile.mkdtemp())
    >>> for name in ("cyst_1.png", "cyst_2.png", "solid_1.png"):
    ...     _ = cv2.imwrite(str(root / name), np.zeros((8, 8), np.uint8))
    >>> dataset = load_dataset(root, layout="prefixed")
    >>> dataset.y.tolist()
    ['cyst', 'cyst', 'solid']
    >>> load_dataset(root, layout="bmp")
    Traceback (most recent call last):
    ...
    ValueError: layout must be 'auto' or one of ['breakhis', 'busi', ..., 'mias', 'prefixed']; got 'bmp'
    >>> LAYOUTS.unregister("prefixed")
    """
    if layout == "auto":
        layout = detect_layout(target)
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be 'auto' or one of {sorted(LAYOUTS)}; got {layout!r}")
    return LAYOUTS[layout](target, **options)
