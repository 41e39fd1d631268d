"""CSV manifests: one row per image, paths relative to a data root.

Format
------
UTF-8 CSV with a header row. Columns:

``path`` (required)
    Image file, relative to the data root, with forward slashes (an
    absolute path is used as it is).
``label`` (required)
    Class label (text).
``group`` (optional)
    Patient / group id; empty when unknown.
``mask`` (optional)
    Mask file(s) relative to the root; several masks of one image are
    separated by ``;`` and merged with logical OR.
``sha256`` / ``mask_sha256`` (optional)
    Hex SHA-256 of the image file and of each mask file (``;``-separated,
    in the order of ``mask``), checked by :func:`load_manifest` with
    ``check_sha256=True`` and by :func:`~featurepipe.datasets.verify_manifest`.

Any other column is kept as text in each sample's ``meta`` (e.g.
``subtype``, ``magnification``, ``tissue``).
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..dataset import Dataset
from ._common import make_sample, validate_samples

__all__ = ["MANIFEST_COLUMNS", "ManifestRow", "read_manifest", "load_manifest", "write_manifest",
           "file_sha256"]

#: Standard columns, in the order :func:`write_manifest` writes them.
MANIFEST_COLUMNS = ("path", "label", "group", "mask", "sha256", "mask_sha256")
_SEP = ";"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class ManifestRow:
    """One parsed manifest row; ``line`` is its 1-based line number in the file (header = 1)."""

    line: int
    path: str
    label: str
    group: str | None = None
    masks: tuple = ()
    sha256: str | None = None
    mask_sha256: tuple = ()
    extra: dict = field(default_factory=dict)


def file_sha256(path, chunk_size=1 << 20):
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(chunk_size), b""):
            h.update(chunk)
    return h.hexdigest()


def _split_list(text):
    return tuple(part.strip() for part in text.split(_SEP) if part.strip()) if text else ()


def read_manifest(manifest):
    """Parse a manifest CSV into :class:`ManifestRow` objects (no file under the root is touched).

    Raises
    ------
    FileNotFoundError
        When the manifest does not exist.
    ValueError
        Naming the manifest and line for a missing ``path``/``label`` column,
        a row with the wrong number of fields, an empty path or label, a
        malformed checksum, or a path listed twice.
    """
    manifest = Path(os.fspath(manifest))
    if not manifest.is_file():
        raise FileNotFoundError(f"manifest {str(manifest)!r} does not exist or is not a file")
    with open(manifest, newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise ValueError(f"manifest {str(manifest)!r} is empty; expected a header row "
                             f"with at least 'path,label'") from None
        missing = [c for c in ("path", "label") if c not in header]
        if missing:
            raise ValueError(f"manifest {str(manifest)!r}: header {header} lacks the required column(s) {missing}")
        if len(set(header)) != len(header):
            raise ValueError(f"manifest {str(manifest)!r}: header {header} repeats a column name")
        rows = []
        seen = {}
        for values in reader:
            line = reader.line_num
            if not values or all(not v.strip() for v in values):
                continue
            if len(values) != len(header):
                raise ValueError(f"manifest {str(manifest)!r} line {line}: {len(values)} fields, "
                                 f"but the header has {len(header)} ({','.join(header)})")
            record = {k: v.strip() for k, v in zip(header, values)}
            where = f"manifest {str(manifest)!r} line {line}"
            if not record["path"]:
                raise ValueError(f"{where}: empty 'path'")
            if not record["label"]:
                raise ValueError(f"{where}: empty 'label' for {record['path']!r}")
            sha = record.get("sha256", "").lower() or None
            if sha is not None and not _HEX64.match(sha):
                raise ValueError(f"{where}: 'sha256' must be 64 hex digits; got {record['sha256']!r}")
            masks = _split_list(record.get("mask", ""))
            mask_sha = tuple(s.lower() for s in _split_list(record.get("mask_sha256", "")))
            if mask_sha and len(mask_sha) != len(masks):
                raise ValueError(f"{where}: {len(mask_sha)} 'mask_sha256' values for {len(masks)} mask file(s)")
            for value in mask_sha:
                if not _HEX64.match(value):
                    raise ValueError(f"{where}: 'mask_sha256' values must be 64 hex digits; got {value!r}")
            if record["path"] in seen:
                raise ValueError(f"{where}: {record['path']!r} is already listed on line {seen[record['path']]}")
            seen[record["path"]] = line
            extra = {k: v for k, v in record.items() if k not in MANIFEST_COLUMNS and v != ""}
            rows.append(ManifestRow(line=line, path=record["path"], label=record["label"],
                                    group=record.get("group") or None, masks=masks, sha256=sha,
                                    mask_sha256=mask_sha, extra=extra))
    return rows


def _resolve(root, path):
    path = Path(path)
    return path if path.is_absolute() else root / path


def load_manifest(manifest, root=None, *, mode=None, validate=True, check_sha256=False, n_jobs=None,
                  name=None):
    """Build a dataset from a manifest CSV (see the module docstring for the format).

    Parameters
    ----------
    manifest : path
        The CSV file.
    root : path, optional
        Folder the manifest's paths are relative to (default: the manifest's folder).
    mode : {None, "gray", "rgb"}, default=None
        Channel mode for reading the images.
    validate : bool, default=True
        Decode every image and mask now; failures go to ``Dataset.skipped``.
    check_sha256 : bool, default=False
        Compare file checksums with the ``sha256``/``mask_sha256`` columns;
        rows whose files differ go to ``Dataset.skipped``.
    n_jobs : int, optional
        Threads for decoding during validation.
    name : str, optional
        Dataset name (default: the manifest's file name without extension).

    Returns
    -------
    Dataset
        Labels and groups as written in the manifest (text); extra columns
        in ``meta``; rows whose files are missing, differ from their
        checksum or do not decode are in ``skipped`` with the reason.
    """
    manifest = Path(os.fspath(manifest))
    rows = read_manifest(manifest)
    root = manifest.parent if root is None else Path(os.fspath(root))
    if not root.is_dir():
        raise NotADirectoryError(f"data root {str(root)!r} for manifest {str(manifest)!r} is not a folder")
    skipped = []
    samples = []
    for row in rows:
        path = _resolve(root, row.path)
        masks = [_resolve(root, m) for m in row.masks]
        where = f"{manifest.name} line {row.line}"
        if not path.is_file():
            skipped.append((str(path), f"listed in {where} but not found under {str(root)!r}"))
            continue
        lost = [m for m in masks if not m.is_file()]
        if lost:
            skipped.append((str(path), f"mask file {str(lost[0])!r} listed in {where} not found"))
            continue
        if check_sha256:
            problem = _checksum_problem(path, row.sha256, masks, row.mask_sha256, where)
            if problem:
                skipped.append((str(path), problem))
                continue
        meta = {"relpath": row.path, "manifest_line": row.line, **row.extra}
        sample = make_sample(path, [str(m) for m in masks], mode=mode, label=row.label, group=row.group,
                             meta=meta, skipped=skipped)
        if sample is not None:
            samples.append(sample)
    if validate:
        samples = validate_samples(samples, skipped, n_jobs=n_jobs)
    info = {"layout": "manifest", "manifest": str(manifest), "mode": mode, "validated": bool(validate),
            "checked_sha256": bool(check_sha256), "ignored": []}
    return Dataset(samples, name=name or manifest.stem, root=str(root), skipped=skipped, info=info)


def _checksum_problem(path, sha, masks, mask_sha, where):
    if sha is not None:
        actual = file_sha256(path)
        if actual != sha:
            return f"sha256 mismatch: {where} says {sha}, the file has {actual}"
    for mask, expected in zip(masks, mask_sha):
        actual = file_sha256(mask)
        if actual != expected:
            return f"mask {str(mask)!r}: sha256 mismatch: {where} says {expected}, the file has {actual}"
    return None


def write_manifest(dataset, out, *, root=None, checksums=True, extra_columns=None):
    """Write a dataset of file samples as a manifest CSV.

    Parameters
    ----------
    dataset : Dataset
        Samples read from files (not derived samples such as patches: a
        manifest lists files).
    out : path
        The CSV to write (parent folders are created).
    root : path, optional
        Paths are written relative to it (default: ``dataset.root``).
    checksums : bool, default=True
        Fill the ``sha256`` and ``mask_sha256`` columns.
    extra_columns : sequence of str, optional
        ``meta`` fields to write as extra columns (default: the builder's
        ``dataset.info["manifest_columns"]``).

    Returns
    -------
    pathlib.Path
        The written file.
    """
    root = root if root is not None else dataset.root
    if root is None:
        raise ValueError("write_manifest needs a root: the dataset has none, pass root=")
    root = Path(os.fspath(root)).resolve()
    if extra_columns is None:
        extra_columns = list(dataset.info.get("manifest_columns", ()))
    clash = [c for c in extra_columns if c in MANIFEST_COLUMNS]
    if clash:
        raise ValueError(f"extra_columns {clash} clash with the standard columns {list(MANIFEST_COLUMNS)}")
    records = []
    for sample in dataset.samples:
        if sample.path is None:
            raise ValueError(f"sample {sample.name!r} was not read from a file; a manifest lists files")
        if "patch" in sample.meta:
            raise ValueError(f"sample {sample.name!r} is a patch ({sample.meta['patch']}), not a file; "
                             "write the manifest of the whole images instead")
        masks = list(sample.meta.get("mask_paths", ()))
        record = [_relative(sample.path, root), str(sample.label),
                  "" if sample.group is None else str(sample.group),
                  _SEP.join(_relative(m, root, is_mask=True) for m in masks),
                  file_sha256(sample.path) if checksums else "",
                  _SEP.join(file_sha256(m) for m in masks) if checksums else ""]
        record += ["" if sample.meta.get(c) is None else str(sample.meta.get(c)) for c in extra_columns]
        records.append(record)
    out = Path(os.fspath(out))
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(list(MANIFEST_COLUMNS) + list(extra_columns))
        writer.writerows(records)
    return out


def _relative(path, root, is_mask=False):
    path = Path(os.fspath(path)).resolve()
    try:
        text = path.relative_to(root).as_posix()
    except ValueError:
        raise ValueError(f"{str(path)!r} is not under the manifest root {str(root)!r}") from None
    if is_mask and _SEP in text:
        raise ValueError(f"{text!r} contains {_SEP!r}, which separates mask files in manifests")
    return text
