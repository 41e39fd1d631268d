"""Class-per-folder trees: ``<root>/<class>/<image>`` (optionally with mask files beside the images)."""

from __future__ import annotations

import re
from pathlib import Path

from ..dataset import Dataset
from ._common import (
    check_root,
    is_hidden,
    is_image_file,
    make_sample,
    natural_key,
    relpath,
    validate_samples,
    walk_tree,
)

__all__ = ["load_folder", "scan_folder"]


_NOT_SCANNED = "a folder; not scanned (recursive=False reads the class folders only)"


def walk_files(folder, recursive):
    """Non-hidden entries under ``folder`` that are not folders, in natural order, and the folders not scanned.

    Entries that are not regular files (FIFOs, devices, dangling links) are
    included, so that reading them reports why they cannot be used. With
    ``recursive`` symbolic links to folders are followed (see
    :func:`~featurepipe.datasets._common.walk_tree`); without it the
    sub-folders are returned as not scanned.
    """
    if not recursive:
        entries = [p for p in folder.iterdir() if not is_hidden(p.name)]
        files = [p for p in entries if not p.is_dir()]
        folders = [p for p in entries if p.is_dir()]
        return (sorted(files, key=lambda p: natural_key(p.name)), sorted(folders, key=lambda p: natural_key(p.name)))
    return sorted(walk_tree(folder), key=lambda p: natural_key(p.relative_to(folder).as_posix())), []


def scan_folder(folder, *, mask_suffix=None, recursive=True):
    """Pair the image files under ``folder`` with their mask files.

    Parameters
    ----------
    folder : path
        Folder to scan.
    mask_suffix : str, optional
        Files whose stem ends with this suffix, optionally followed by
        ``_<n>`` (``"x_mask.png"``, ``"x_mask_1.png"``), are masks of the image
        with stem ``x`` in the same folder. ``None``: every image file is an image.
    recursive : bool, default=True
        Also scan sub-folders.

    Returns
    -------
    images : list of (Path, tuple of Path)
        Each image file and its mask files (in mask-number order).
    orphans : list of (Path, str)
        Mask files without an image, with the reason.
    ignored : list of (Path, str)
        Files that are not images by extension (never decoded) and, when not
        ``recursive``, the sub-folders that were not scanned.
    """
    files, not_scanned = walk_files(Path(folder), recursive)
    ignored = [(p, "not an image file extension") for p in files if not is_image_file(p)]
    ignored += [(p, _NOT_SCANNED) for p in not_scanned]
    image_files = [p for p in files if is_image_file(p)]
    if mask_suffix is None:
        return [(p, ()) for p in image_files], [], ignored
    pattern = re.compile(r"^(?P<base>.+?)" + re.escape(mask_suffix) + r"(?:_(?P<n>\d+))?$")
    masks = {}
    plain = []
    for path in image_files:
        match = pattern.match(path.stem)
        if match:
            number = int(match.group("n")) if match.group("n") else 0
            masks.setdefault((path.parent, match.group("base")), []).append((number, path))
        else:
            plain.append(path)
    images = []
    used = set()
    for path in plain:
        found = masks.get((path.parent, path.stem), [])
        used.add((path.parent, path.stem))
        images.append((path, tuple(p for _, p in sorted(found, key=lambda t: (t[0], t[1].name)))))
    orphans = []
    for (parent, base), found in masks.items():
        if (parent, base) not in used:
            for _, path in found:
                orphans.append((path, f"mask file without an image: no '{base}.<ext>' image in {str(parent)!r}"))
    orphans.sort(key=lambda t: natural_key(t[0].as_posix()))
    return images, orphans, ignored


def load_folder(root, *, mode=None, mask_suffix=None, require_mask=False, classes=None, recursive=True,
                validate=True, n_jobs=None, name=None, layout="folder"):
    """Build a dataset from a class-per-folder tree ``<root>/<class>/[<sub-folders>/]<image>``.

    The label of an image is the name of the first-level folder it lies in.

    Parameters
    ----------
    root : path
        The data root.
    mode : {None, "gray", "rgb"}, default=None
        Channel mode for reading the images (see :func:`featurepipe.io.read_image`).
    mask_suffix : str, optional
        Treat ``<stem><mask_suffix>[_<n>].<ext>`` files as masks of ``<stem>.<ext>``;
        several masks of one image are merged with logical OR.
    require_mask : bool, default=False
        Skip (and report) images that have no mask file.
    classes : sequence of str, optional
        The allowed class folders; images in other folders are reported as skipped.
    recursive : bool, default=True
        Take images from sub-folders of the class folders too, following
        symbolic links to folders (each real folder once, so link cycles
        end). With ``False`` the sub-folders are listed in ``info["ignored"]``.
    validate : bool, default=True
        Decode every image and mask now and report those that fail in
        ``Dataset.skipped``. With ``False`` only the file bytes are read (for
        the sample keys) and decoding errors surface later, naming the file.
    n_jobs : int, optional
        Threads for decoding during validation.
    name : str, optional
        Dataset name (default: the root folder's name).

    Returns
    -------
    Dataset
        ``skipped`` lists every image file that could not be used, with the
        reason (including image-named entries that are not regular files:
        FIFOs, devices, dangling symbolic links); ``info["ignored"]`` lists
        files that are not images by extension (e.g. ``README.txt``) and
        folders not scanned; nothing is dropped silently.

    Raises
    ------
    FileNotFoundError, NotADirectoryError
        When ``root`` is not an existing folder.
    ValueError
        When ``root`` holds no class folder.
    """
    root = check_root(root)
    if mode not in (None, "gray", "rgb"):
        raise ValueError(f"mode must be None, 'gray' or 'rgb'; got {mode!r}")
    if classes is not None:
        classes = [str(c) for c in classes]
    skipped = []
    ignored = []
    class_dirs = []
    for entry in sorted(root.iterdir(), key=lambda p: natural_key(p.name)):
        if is_hidden(entry.name):
            continue
        if entry.is_dir():
            class_dirs.append(entry)
        elif is_image_file(entry):
            skipped.append((str(entry), "image directly under the root; the layout needs <root>/<class>/<image>"))
        else:
            ignored.append((str(entry), "not an image file extension"))
    if not class_dirs:
        raise ValueError(
            f"no class folders under {str(root)!r}: a class-per-folder dataset needs <root>/<class>/<image> files"
        )
    samples = []
    counts_found = {}
    for class_dir in class_dirs:
        label = class_dir.name
        images, orphans, class_ignored = scan_folder(class_dir, mask_suffix=mask_suffix, recursive=recursive)
        ignored.extend((str(p), reason) for p, reason in class_ignored)
        if classes is not None and label not in classes:
            for path, _ in images:
                skipped.append((str(path), f"folder {label!r} is not one of the classes {classes}"))
            continue
        skipped.extend((str(p), reason) for p, reason in orphans)
        counts_found[label] = len(images)
        for path, masks in images:
            if require_mask and not masks:
                skipped.append((str(path), f"no mask file: expected '{path.stem}{mask_suffix}{path.suffix}' "
                                           "beside the image"))
                continue
            sample = make_sample(path, [str(m) for m in masks], mode=mode, label=label, group=None,
                                 meta={"relpath": relpath(path, root)}, skipped=skipped)
            if sample is not None:
                samples.append(sample)
    if validate:
        samples = validate_samples(samples, skipped, n_jobs=n_jobs)
    info = {
        "layout": layout,
        "mode": mode,
        "validated": bool(validate),
        "mask_suffix": mask_suffix,
        "class_folders": list(counts_found),
        "ignored": ignored,
    }
    return Dataset(samples, name=name or root.name, root=str(root), skipped=skipped, info=info)
