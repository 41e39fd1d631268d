"""Helpers shared by the dataset builders: file scanning, sample creation, validation."""

from __future__ import annotations

import os
import re
from pathlib import Path

from joblib import Parallel, delayed

from ..io import IMAGE_EXTENSIONS, ImageReadError
from ..sample import Sample

__all__ = ["natural_key", "is_image_file", "is_hidden", "check_root", "make_sample", "make_pair",
           "validate_samples", "relpath", "walk_tree"]

_DIGITS = re.compile(r"(\d+)")


def natural_key(text):
    """Sort key that orders ``"a (2)"`` before ``"a (10)"`` (digit runs compare as numbers)."""
    text = str(text)
    return [(0, int(part), "") if part.isdigit() else (1, 0, part.lower()) for part in _DIGITS.split(text)]


def is_image_file(path):
    """Whether the file name has one of :data:`featurepipe.io.IMAGE_EXTENSIONS` (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def is_hidden(name):
    """Hidden files and folders (``.DS_Store``, ``.ipynb_checkpoints``) are never data."""
    return str(name).startswith(".")


def walk_tree(folder):
    """Every non-hidden entry under ``folder`` that is not a folder, in no particular order.

    Symbolic links to folders are followed (each real folder is scanned once,
    so a link cycle ends), and entries that are not regular files (FIFOs,
    devices, dangling links) are returned too: callers report them instead of
    dropping them. Hidden folders are not entered.
    """
    visited = set()
    out = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in visited:
            dirnames[:] = []
            continue
        visited.add(real)
        # real folders before links to folders, so files keep their own path when both lead to them
        dirnames[:] = sorted((d for d in dirnames if not is_hidden(d)),
                             key=lambda d: (os.path.islink(os.path.join(dirpath, d)), natural_key(d)))
        out.extend(Path(dirpath) / name for name in filenames if not is_hidden(name))
    return out


def check_root(root, what="data root"):
    """The root as a :class:`~pathlib.Path`; a clear error when it is missing or not a folder."""
    path = Path(os.fspath(root))
    if not path.exists():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist")
    if not path.is_dir():
        raise NotADirectoryError(f"{what} {str(path)!r} is not a folder")
    return path


def relpath(path, root):
    """``path`` relative to ``root`` with forward slashes (as written in manifests)."""
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return Path(path).as_posix()


def make_sample(path, masks, *, mode, label, group, meta, skipped):
    """``Sample.from_path`` that records a file it cannot open in ``skipped`` and returns ``None``.

    Only the bytes are read here (for the key); decoding is left to
    :func:`validate_samples` or to the first use of the pixels.
    """
    try:
        return Sample.from_path(path, masks or None, mode=mode, label=label, group=group, meta=meta)
    except ImageReadError as exc:
        skipped.append(_skip_entry(str(path), exc))
        return None


def make_pair(path, partner_path, *, mode, label, group, meta, skipped):
    """The paired sample of image ``path`` and its partner image ``partner_path`` (see
    :meth:`Sample.with_partner <featurepipe.sample.Sample.with_partner>`), or ``None`` after recording
    in ``skipped`` a file that cannot be opened (the entry is the primary image, the reason names the file).
    """
    primary = make_sample(path, None, mode=mode, label=label, group=group, meta=meta, skipped=skipped)
    if primary is None:
        return None
    try:
        partner = Sample.from_path(partner_path, mode=mode, label=label, group=group)
    except ImageReadError as exc:
        skipped.append(_skip_entry(str(path), exc, partner_path))
        return None
    return primary.with_partner(partner)


def _skip_entry(image_path, exc, partner_path=None):
    if os.fspath(exc.path) == os.fspath(image_path):
        return (image_path, exc.reason)
    if partner_path is not None and os.fspath(exc.path) == os.fspath(partner_path):
        return (image_path, f"its partner image {os.fspath(exc.path)!r}: {exc.reason}")
    return (image_path, f"mask {exc.path!r}: {exc.reason}")


def _try_load(sample):
    try:
        sample.load()
        if sample.partner is not None:  # a pair is usable only when both of its images decode
            sample.partner.load()
    except ImageReadError as exc:
        return exc
    return None


def validate_samples(samples, skipped, *, n_jobs=None):
    """Decode every sample (image and masks); move those that fail to ``skipped``.

    Samples that share a source image (e.g. several patches of one
    mammogram) are decoded once. Decoding runs in threads when ``n_jobs`` is
    set (Pillow and zlib release the GIL while decoding).

    Returns
    -------
    kept : list of Sample
        The samples whose pixels decode, in their original order.
    """
    sources = {}
    for sample in samples:
        sources.setdefault(_source_id(sample), sample)
    unique = list(sources.values())
    if n_jobs in (None, 1) or len(unique) < 2:
        errors = [_try_load(_root_sample(s)) for s in unique]
    else:
        errors = Parallel(n_jobs=n_jobs, prefer="threads")(delayed(_try_load)(_root_sample(s)) for s in unique)
    failed = {}
    for sample, exc in zip(unique, errors):
        if exc is not None:
            failed[_source_id(sample)] = exc
    kept = []
    reported = set()
    for sample in samples:
        exc = failed.get(_source_id(sample))
        if exc is None:
            kept.append(sample)
            continue
        path = sample.path or sample.key
        entry = _skip_entry(path, exc, None if sample.partner is None else sample.partner.path)
        if "patch" in sample.meta:
            entry = (entry[0], f"{entry[1]} (its patch {sample.meta['patch']} is skipped too)")
        if entry not in reported:
            reported.add(entry)
            skipped.append(entry)
    return kept


def _source_id(sample):
    return (sample.path or sample.key, tuple(sample.meta.get("mask_paths", ())), sample.meta.get("partner_path"))


def _root_sample(sample):
    """The file sample a (possibly derived) sample was made from; decoding it validates the file."""
    parent = getattr(sample._source, "parent", None)
    while parent is not None:
        sample = parent
        parent = getattr(sample._source, "parent", None)
    return sample
