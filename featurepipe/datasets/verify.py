"""Check a data root against a manifest: missing, extra and corrupt files, checksum mismatches."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from joblib import Parallel, delayed

from ..io import ImageReadError, open_regular_file, read_image
from ._common import is_image_file, natural_key, walk_tree
from .manifest import file_sha256, read_manifest, resolve_manifest_path, resolve_manifest_rows

__all__ = ["verify_manifest", "ManifestReport"]


@dataclass
class ManifestReport:
    """What :func:`verify_manifest` found. Paths are as written in the manifest (relative to ``root``).

    Attributes
    ----------
    missing : list of (path, line)
        Listed files (images or masks) that do not exist.
    extra : list of str
        Image files under the root that the manifest does not list.
    corrupt : list of (path, reason)
        Listed files that exist but are not regular files (FIFO, device) or
        do not decode.
    checksum_mismatch : list of (path, expected, actual)
        Listed files whose SHA-256 differs from the manifest.
    no_checksum : list of str
        Listed files the manifest gives no checksum for (not verified by content).
    """

    manifest: str
    root: str
    n_rows: int = 0
    n_files: int = 0
    decoded: bool = True
    missing: list = field(default_factory=list)
    extra: list = field(default_factory=list)
    corrupt: list = field(default_factory=list)
    checksum_mismatch: list = field(default_factory=list)
    no_checksum: list = field(default_factory=list)

    @property
    def ok(self):
        """No missing, extra or corrupt file and no checksum mismatch."""
        return not (self.missing or self.extra or self.corrupt or self.checksum_mismatch)

    @property
    def n_problems(self):
        return len(self.missing) + len(self.extra) + len(self.corrupt) + len(self.checksum_mismatch)

    def summary(self, max_items=20):
        """A readable multi-line report (at most ``max_items`` entries per kind)."""
        lines = [f"manifest {self.manifest}", f"root     {self.root}",
                 f"{self.n_rows} rows, {self.n_files} listed files (images and masks)"]
        if self.ok:
            how = "checksums" + (" and decoding" if self.decoded else "")
            lines.append(f"OK: every listed file is present and matches ({how}); no extra image files")
        sections = [
            ("missing (listed but not found)", [f"{p}  (line {line})" for p, line in self.missing]),
            ("checksum mismatch", [f"{p}  manifest {exp[:16]}..., file {act[:16]}..."
                                   for p, exp, act in self.checksum_mismatch]),
            ("corrupt (does not decode)", [f"{p}  {reason}" for p, reason in self.corrupt]),
            ("extra (image files not in the manifest)", list(self.extra)),
        ]
        for title, items in sections:
            if items:
                lines.append(f"{len(items)} {title}:")
                lines.extend(f"  {item}" for item in items[:max_items])
                if len(items) > max_items:
                    lines.append(f"  ... and {len(items) - max_items} more")
        if self.no_checksum:
            lines.append(f"note: {len(self.no_checksum)} listed files have no checksum in the manifest")
        if not self.decoded:
            lines.append("note: files were not decoded (decode=False); only presence and checksums were checked")
        return "\n".join(lines)

    def __str__(self):
        return self.summary()


def _decode_error(path, is_mask):
    try:
        read_image(path, mode="gray" if is_mask else None)
    except ImageReadError as exc:
        return exc.reason
    return None


def _not_regular_reason(path):
    try:
        fh, _ = open_regular_file(path)
    except ImageReadError as exc:
        return exc.reason
    fh.close()
    return None


def verify_manifest(manifest, root=None, *, decode=True, n_jobs=None, allow_outside_root=False):
    """Check the files under ``root`` against a manifest.

    Parameters
    ----------
    manifest : path
        Manifest CSV (see :mod:`featurepipe.datasets.manifest`).
    root : path, optional
        Data root (default: the manifest's folder).
    decode : bool, default=True
        Also decode every listed file to find corrupt ones (a file can be
        corrupt and still match a checksum taken from a corrupt copy).
    n_jobs : int, optional
        Threads for decoding.
    allow_outside_root : bool, default=False
        Accept manifest paths that are absolute or resolve outside ``root``;
        without it such a manifest raises ``ValueError`` before any file is
        opened (see :mod:`featurepipe.datasets.manifest`).

    Returns
    -------
    ManifestReport
        ``report.ok`` is ``True`` when nothing is wrong; ``print(report)``
        lists every problem with its path. Extra files are image files
        (by extension, hidden files excepted) anywhere under the root,
        symbolically linked sub-folders included, that the manifest lists
        neither as an image, a mask nor a partner image (a file reached
        through two names counts once).

    Raises
    ------
    ValueError
        For the manifest problems of :func:`~featurepipe.datasets.read_manifest`,
        paths outside the root and rows naming one file twice.
    """
    manifest = Path(os.fspath(manifest))
    rows = read_manifest(manifest)
    root = manifest.parent if root is None else Path(os.fspath(root))
    if not root.is_dir():
        raise NotADirectoryError(f"data root {str(root)!r} is not a folder")
    resolved = resolve_manifest_rows(rows, manifest, root, allow_outside_root=allow_outside_root)
    report = ManifestReport(manifest=str(manifest), root=str(root), n_rows=len(rows), decoded=bool(decode))
    listed = []  # (path as written, file, line, expected sha or None, is_mask)
    for row, path, masks in resolved:
        listed.append((row.path, path, row.line, row.sha256, False))
        shas = row.mask_sha256 or (None,) * len(row.masks)
        listed.extend((rel, mask, row.line, sha, True) for rel, mask, sha in zip(row.masks, masks, shas))
        if row.partner is not None:  # a paired manifest's second image (no checksum column)
            partner, _ = resolve_manifest_path(root, row.partner, allow_outside_root=allow_outside_root,
                                               where=f"manifest {str(manifest)!r} line {row.line}", what="partner path")
            listed.append((row.partner, partner, row.line, None, False))
    report.n_files = len(listed)
    present = []
    for rel, path, line, sha, is_mask in listed:
        if not path.exists():
            report.missing.append((rel, line))
            continue
        reason = _not_regular_reason(path)
        if reason is not None:
            report.corrupt.append((rel, reason))
            continue
        present.append((rel, path, is_mask))
        if sha is None:
            report.no_checksum.append(rel)
            continue
        actual = file_sha256(path)
        if actual != sha:
            report.checksum_mismatch.append((rel, sha, actual))
    if decode and present:
        if n_jobs in (None, 1):
            reasons = [_decode_error(path, is_mask) for _, path, is_mask in present]
        else:
            reasons = Parallel(n_jobs=n_jobs, prefer="threads")(
                delayed(_decode_error)(path, is_mask) for _, path, is_mask in present)
        report.corrupt += [(rel, reason) for (rel, _, _), reason in zip(present, reasons) if reason is not None]
    known = {os.path.normcase(os.path.realpath(path)) for _, path, _, _, _ in listed}
    extra = []
    for full in walk_tree(root):
        if is_image_file(full) and os.path.normcase(os.path.realpath(full)) not in known:
            extra.append(full.relative_to(root).as_posix())
    report.extra = sorted(extra, key=natural_key)
    return report
