"""CSV manifests: one row per image, paths relative to a data root.

Format
------
UTF-8 CSV with a header row. Columns:

``path`` (required)
    Image file, relative to the data root, with forward slashes. Paths are
    normalised lexically (``./a.png``, ``data//a.png`` and ``data/x/../a.png``
    are ``a.png``, ``data/a.png``, ``data/a.png``), and one file may be listed
    only once, under any spelling (a symbolic link to a listed file counts as
    the same file).
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
``partner`` (optional)
    Paired images (e.g. thermography's hot-spot crop in ``path`` and the
    contralateral crop here; one label per pair): the row's second image,
    relative to the root, checked like ``path`` (inside the root, listed
    once: a file is either some row's image or some row's partner). The row
    is then one sample whose :attr:`~featurepipe.sample.Sample.partner` is
    this image (see :mod:`featurepipe.pairs`). When the column exists every
    row must fill it (``pairs=False`` keeps it as plain text instead).

Any other column is kept as text in each sample's ``meta`` (e.g.
``subtype``, ``magnification``, ``tissue``).

The data root is a boundary
---------------------------
A manifest is data, perhaps from someone else, so its paths may not point
anywhere on the machine: a path (image or mask) that resolves outside the
data root (``../../etc/passwd``, or a symbolic link under the root that
points out of it) and any absolute path are refused with a ``ValueError``
naming the manifest line, before any file is opened, unless the user opts
in with ``allow_outside_root=True`` (``--allow-outside-root`` on the
command line).

Encoding: UTF-8 (a byte-order mark is allowed); anything else is refused
with an error naming the file, the line and the offending byte. A manifest
must list at least one image.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import os
import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..dataset import Dataset
from ..io import ImageReadError, open_regular_file
from ..sample import Sample
from ._common import make_sample, validate_samples

__all__ = ["MANIFEST_COLUMNS", "ManifestRow", "read_manifest", "load_manifest", "write_manifest",
           "file_sha256", "normalise_manifest_path", "resolve_manifest_path", "resolve_manifest_rows"]

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
    partner: str | None = None


def file_sha256(path, chunk_size=1 << 20):
    """Hex SHA-256 of a file's bytes.

    Only regular files are hashed (a FIFO or a device such as ``/dev/zero``
    raises :class:`~featurepipe.io.ImageReadError` instead of blocking or
    reading forever).
    """
    h = hashlib.sha256()
    fh, _ = open_regular_file(path)
    with fh:
        for chunk in iter(lambda: fh.read(chunk_size), b""):
            h.update(chunk)
    return h.hexdigest()


def normalise_manifest_path(text):
    """A manifest path in its one canonical spelling (lexical: nothing on disk is looked at).

    >>> [normalise_manifest_path(p) for p in ("./data/a.png", "data//a.png", "data/x/../a.png")]
    ['data/a.png', 'data/a.png', 'data/a.png']
    """
    return posixpath.normpath(text)


_OPT_IN = ("pass allow_outside_root=True (on the command line: --allow-outside-root) if you trust "
           "this manifest")


def resolve_manifest_path(root, path, *, allow_outside_root=False, where="manifest", what="path"):
    """The file a manifest path names under ``root``, refusing paths that leave the root.

    Parameters
    ----------
    root : path
        The data root.
    path : str
        The path as written in the manifest (relative to ``root``).
    allow_outside_root : bool, default=False
        Accept absolute paths and paths that resolve (through ``..`` or
        symbolic links) outside ``root``.
    where, what : str
        Used in the error message (the manifest and line; ``"path"`` or ``"mask path"``).

    Returns
    -------
    file : pathlib.Path
        ``root / path`` (or ``path`` when absolute), as the user wrote it.
    real : str
        Its fully resolved form (symbolic links followed), the identity of the file.

    Raises
    ------
    ValueError
        Naming ``where``, the path, what it resolves to and the opt-in.
    """
    root_real = os.path.realpath(root)
    absolute = os.path.isabs(path)
    candidate = Path(path) if absolute else Path(root) / path
    real = os.path.realpath(candidate)
    inside = real == root_real or real.startswith(root_real.rstrip(os.sep) + os.sep)
    if not allow_outside_root:
        if absolute:
            outside = "" if inside else f", outside the data root {root_real!r}"
            raise ValueError(f"{where}: {what} {path!r} is absolute{outside}; manifest paths are relative "
                             f"to the data root; {_OPT_IN}")
        if not inside:
            raise ValueError(f"{where}: {what} {path!r} resolves to {real!r}, outside the data root "
                             f"{root_real!r}; manifest paths must stay inside it; {_OPT_IN}")
    return candidate, os.path.normcase(real)


def resolve_manifest_rows(rows, manifest, root, *, allow_outside_root=False):
    """``[(row, image_path, mask_paths)]`` for parsed rows, checked before any file is opened.

    Every image and mask path goes through :func:`resolve_manifest_path`;
    two rows naming the same file (e.g. through a symbolic link) are an error
    naming both lines.
    """
    resolved = []
    seen = {}
    for row in rows:
        where = f"manifest {str(manifest)!r} line {row.line}"
        path, real = resolve_manifest_path(root, row.path, allow_outside_root=allow_outside_root, where=where)
        if real in seen:
            first = seen[real]
            raise ValueError(f"{where}: {row.path!r} is already listed on line {first.line} as {first.path!r} "
                             "(the same file, through a symbolic link); list each image once")
        seen[real] = row
        masks = [resolve_manifest_path(root, m, allow_outside_root=allow_outside_root, where=where,
                                       what="mask path")[0] for m in row.masks]
        resolved.append((row, path, masks))
    return resolved


def _read_text(manifest):
    """The manifest's text, decoded as UTF-8 (with or without BOM), or a ValueError saying where it is not."""
    data = manifest.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        offset = exc.start + (3 if data.startswith(b"\xef\xbb\xbf") else 0)
        line = data[:offset].count(b"\n") + 1
        raise ValueError(
            f"manifest {str(manifest)!r} is not valid UTF-8: line {line} has the byte 0x{data[offset]:02x} "
            f"({exc.reason}); it looks like another encoding (e.g. Latin-1 or Windows-1252): save it as UTF-8"
        ) from None


def _split_list(text):
    return tuple(part.strip() for part in text.split(_SEP) if part.strip()) if text else ()


def read_manifest(manifest):
    """Parse a manifest CSV into :class:`ManifestRow` objects (no file under the root is touched).

    Paths are normalised with :func:`normalise_manifest_path`.

    Raises
    ------
    FileNotFoundError
        When the manifest does not exist.
    ValueError
        Naming the manifest (and line) for text that is not UTF-8, a missing
        ``path``/``label`` column, no data row at all, a row with the wrong
        number of fields, an empty path or label, a malformed checksum, or a
        path listed twice (under any spelling).
    """
    manifest = Path(os.fspath(manifest))
    if not manifest.is_file():
        raise FileNotFoundError(f"manifest {str(manifest)!r} does not exist or is not a file")
    with io.StringIO(_read_text(manifest), newline="") as fh:
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
            path = normalise_manifest_path(record["path"])
            if path in seen:
                first_line, first_spelling = seen[path]
                spelling = "" if first_spelling == record["path"] else f" as {first_spelling!r}"
                raise ValueError(f"{where}: {record['path']!r} is already listed on line {first_line}{spelling}; "
                                 "list each image once")
            seen[path] = (line, record["path"])
            masks = tuple(normalise_manifest_path(m) for m in masks)
            partner = normalise_manifest_path(record["partner"]) if record.get("partner") else None
            if partner is not None:
                if partner in seen:
                    first_line, first_spelling = seen[partner]
                    raise ValueError(f"{where}: partner {record['partner']!r} is already listed on line {first_line} "
                                     f"as {first_spelling!r}; each image belongs to one row, as its image or as "
                                     "its partner")
                seen[partner] = (line, record["partner"])
            extra = {k: v for k, v in record.items() if k not in (*MANIFEST_COLUMNS, "partner") and v != ""}
            rows.append(ManifestRow(line=line, path=path, label=record["label"],
                                    group=record.get("group") or None, masks=masks, sha256=sha,
                                    mask_sha256=mask_sha, extra=extra, partner=partner))
    if not rows:
        raise ValueError(f"manifest {str(manifest)!r} has a header but no rows: it lists no images")
    return rows


def load_manifest(manifest, root=None, *, mode=None, validate=True, check_sha256=False, n_jobs=None,
                  name=None, allow_outside_root=False, pairs=None):
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
    allow_outside_root : bool, default=False
        Accept absolute paths and paths resolving outside ``root``
        (see "The data root is a boundary" in the module docstring).
    pairs : {None, True, False}, default=None
        Paired images from the ``partner`` column: ``None`` pairs when the
        manifest has that column, ``True`` requires it, ``False`` keeps it
        as plain text in ``meta`` (single images). With pairs, a row with an
        empty ``partner`` is an error naming its line; a missing partner
        file sends the row to ``skipped``.

    Returns
    -------
    Dataset
        Labels and groups as written in the manifest (text); extra columns
        in ``meta``; rows whose files are missing, differ from their
        checksum or do not decode are in ``skipped`` with the reason.

    Raises
    ------
    ValueError
        For the problems listed in :func:`read_manifest`, a path outside the
        root (without ``allow_outside_root``) and two rows naming one file.
    """
    manifest = Path(os.fspath(manifest))
    if pairs not in (None, True, False):
        raise ValueError(f"pairs must be None (pair when the manifest has a 'partner' column), True or False; "
                         f"got {pairs!r}")
    rows = read_manifest(manifest)
    root = manifest.parent if root is None else Path(os.fspath(root))
    if not root.is_dir():
        raise NotADirectoryError(f"data root {str(root)!r} for manifest {str(manifest)!r} is not a folder")
    partners = _resolve_partners(rows, manifest, root, pairs, allow_outside_root)
    if pairs is False:
        rows = [_partner_as_text(row) for row in rows]
    skipped = []
    samples = []
    for row, path, masks in resolve_manifest_rows(rows, manifest, root, allow_outside_root=allow_outside_root):
        where = f"{manifest.name} line {row.line}"
        if not path.exists():
            skipped.append((str(path), f"listed in {where} but not found under {str(root)!r}"))
            continue
        partner = partners.get(row.line)
        if partner is not None and not partner.exists():
            skipped.append((str(path), f"its partner image {str(partner)!r} listed in {where} not found"))
            continue
        lost = [m for m in masks if not m.exists()]
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
        if sample is not None and partner is not None:
            try:
                sample = sample.with_partner(Sample.from_path(partner, mode=mode, label=row.label, group=row.group))
                sample = sample.replace(meta={**sample.meta, "partner_relpath": row.partner})
            except ImageReadError as exc:
                skipped.append((str(path), f"its partner image {str(partner)!r}: {exc.reason}"))
                sample = None
        if sample is not None:
            samples.append(sample)
    if validate:
        samples = validate_samples(samples, skipped, n_jobs=n_jobs)
    info = {"layout": "manifest", "manifest": str(manifest), "mode": mode, "validated": bool(validate),
            "checked_sha256": bool(check_sha256), "ignored": [], "pairs": bool(partners)}
    return Dataset(samples, name=name or manifest.stem, root=str(root), skipped=skipped, info=info)


def _resolve_partners(rows, manifest, root, pairs, allow_outside_root):
    """``{line: partner file}`` of a paired manifest (empty when not paired), checked like the image paths."""
    has_column = any(row.partner is not None for row in rows)
    if pairs is False or (pairs is None and not has_column):
        return {}
    if not has_column:
        raise ValueError(f"manifest {str(manifest)!r}: pairs=True needs a 'partner' column (the second image of "
                         "each row, e.g. the contralateral crop); none of its rows has one")
    reals = {os.path.normcase(os.path.realpath(Path(root) / row.path)): row for row in rows}
    partners = {}
    for row in rows:
        where = f"manifest {str(manifest)!r} line {row.line}"
        if row.partner is None:
            raise ValueError(f"{where}: empty 'partner' for {row.path!r}; in a paired manifest every row names its "
                             "partner image (or load it with pairs=False to read single images)")
        partner, real = resolve_manifest_path(root, row.partner, allow_outside_root=allow_outside_root, where=where,
                                              what="partner path")
        if real in reals:
            other = reals[real]
            raise ValueError(f"{where}: partner {row.partner!r} is the image of line {other.line} ({other.path!r}, "
                             "through a symbolic link or the same spelling); each image belongs to one row")
        reals[real] = row
        partners[row.line] = partner
    return partners


def _partner_as_text(row):
    if row.partner is None:
        return row
    return dataclasses.replace(row, partner=None, extra={**row.extra, "partner": row.partner})


def _checksum_problem(path, sha, masks, mask_sha, where):
    try:
        actual = None if sha is None else file_sha256(path)
        mask_actual = [file_sha256(mask) for mask in masks[:len(mask_sha)]]
    except ImageReadError as exc:  # not a regular file, unreadable
        return exc.reason if os.fspath(exc.path) == os.fspath(path) else f"mask {exc.path!r}: {exc.reason}"
    if sha is not None and actual != sha:
        return f"sha256 mismatch: {where} says {sha}, the file has {actual}"
    for mask, expected, actual in zip(masks, mask_sha, mask_actual):
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
        The written file (with a ``partner`` column when the samples are pairs).
    """
    root = root if root is not None else dataset.root
    if root is None:
        raise ValueError("write_manifest needs a root: the dataset has none, pass root=")
    root = Path(os.fspath(root)).resolve()
    if extra_columns is None:
        extra_columns = list(dataset.info.get("manifest_columns", ()))
    paired = any(sample.partner is not None for sample in dataset.samples)
    standard = list(MANIFEST_COLUMNS) + (["partner"] if paired else [])
    clash = [c for c in extra_columns if c in standard]
    if clash:
        raise ValueError(f"extra_columns {clash} clash with the standard columns {standard}")
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
        if paired:
            if sample.partner is None or sample.partner.path is None:
                raise ValueError(f"sample {sample.name!r} has no partner file but other samples are pairs; a paired "
                                 "manifest gives every row its partner")
            record.append(_relative(sample.partner.path, root))
        record += ["" if sample.meta.get(c) is None else str(sample.meta.get(c)) for c in extra_columns]
        records.append(record)
    out = Path(os.fspath(out))
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(standard + list(extra_columns))
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
