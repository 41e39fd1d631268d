"""``featurepipe data``: check a dataset, write a manifest, verify files against a manifest.

::

    featurepipe data check <manifest.csv | folder | known layout>
    featurepipe data manifest <layout> <root> -o out.csv
    featurepipe data verify <manifest.csv> [--root ROOT]
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

__all__ = ["LAYOUT_NAMES", "register"]

#: The built-in layouts of :data:`featurepipe.datasets.LAYOUTS`, spelled out so that building the
#: parser imports no dataset builder (SciPy, OpenCV); tests/test_registry.py keeps them equal.
LAYOUT_NAMES = ("folder", "manifest", "busi", "mias", "breakhis", "dmr-ir")
_MODE_CHOICES = {"keep": None, "gray": "gray", "rgb": "rgb"}
_DEFAULT_JOBS = min(8, os.cpu_count() or 1)


def register(subparsers):
    """Add the ``data`` command and its sub-commands to the top-level ``subparsers``."""
    data = subparsers.add_parser(
        "data", help="check datasets, write and verify manifests",
        description="Inspect datasets: per-class counts, unreadable files, duplicate clusters; "
                    "write manifests of known layouts; verify a data root against a manifest.")
    data.set_defaults(help_parser=data)
    sub = data.add_subparsers(dest="data_command", metavar="<data command>")

    check = sub.add_parser(
        "check", help="counts per class, unreadable files and duplicate clusters of a dataset",
        description="Load a dataset (a manifest CSV, a class-per-folder tree or a known layout), decode every "
                    "image, and report counts per class, files that cannot be used (with the reason) and "
                    "clusters of exact/near-duplicate images, naming those that span several labels. "
                    "Exit status 1 when some files cannot be used.")
    check.add_argument("target", help="manifest CSV, or a dataset folder")
    check.add_argument("--layout", choices=("auto",) + LAYOUT_NAMES, default="auto",
                       help="dataset layout (default: detected from the files)")
    check.add_argument("--root", help="data root of a manifest (default: the manifest's folder)")
    add_allow_outside_root(check)
    _add_common(check)
    check.add_argument("--duplicates", choices=("near", "exact", "none"), default="near",
                       help="duplicate search, the same one `featurepipe benchmark` groups by: near = exact copies "
                            "plus perceptual-hash candidates verified on the pixels (alignment + detail "
                            "correlation); exact = bit-identical decoded pixels; none = skip (default: near)")
    check.add_argument("--duplicate-threshold", type=float, default=None, metavar="CORR",
                       help="verification threshold of near duplicates: least correlation (0 < CORR <= 1) of the "
                            "fine detail of the aligned pair (default: featurepipe.duplicates.DEFAULT_THRESHOLD "
                            "= 0.3; see docs/duplicates.md)")
    check.add_argument("--no-duplicates", action="store_const", const="none", dest="duplicates",
                       help="same as --duplicates none")
    check.add_argument("--n-jobs", type=int, default=_DEFAULT_JOBS,
                       help=f"threads for decoding and hashing (default: {_DEFAULT_JOBS}, the CPU count up to 8)")
    check.add_argument("--max-list", type=int, default=50,
                       help="list at most this many entries per section (default 50)")
    check.set_defaults(func=run_check)

    manifest = sub.add_parser(
        "manifest", help="write a manifest CSV (path,label,group,mask,sha256,...) for a dataset",
        description="Build a dataset from a known layout and write its manifest with file checksums. "
                    "Files that cannot be used are listed on stderr (exit status 1) and left out.")
    manifest.add_argument("layout", choices=tuple(c for c in LAYOUT_NAMES if c != "manifest"),
                          help="layout of the data root")
    manifest.add_argument("root", help="data root")
    manifest.add_argument("-o", "--output", required=True, help="manifest file to write")
    _add_common(manifest)
    manifest.add_argument("--no-checksums", action="store_true", help="leave the sha256 columns empty")
    manifest.add_argument("--no-validate", action="store_true",
                          help="do not decode the images before writing (faster; bad files are not detected)")
    manifest.add_argument("--n-jobs", type=int, default=None, help="threads for decoding")
    manifest.set_defaults(func=run_manifest)

    verify = sub.add_parser(
        "verify", help="check a data root against a manifest (missing, extra, corrupt, checksums)",
        description="Report files listed in the manifest that are missing, differ from their checksum or do "
                    "not decode, and image files under the root that it does not list. Exit status 1 when "
                    "anything is wrong.")
    verify.add_argument("manifest", help="manifest CSV")
    verify.add_argument("--root", help="data root (default: the manifest's folder)")
    add_allow_outside_root(verify)
    verify.add_argument("--no-decode", action="store_true", help="check presence and checksums only")
    verify.add_argument("--n-jobs", type=int, default=None, help="threads for decoding")
    verify.add_argument("--max-list", type=int, default=50, help="list at most this many entries per section")
    verify.set_defaults(func=run_verify)


def add_allow_outside_root(parser):
    """Add ``--allow-outside-root`` (manifest paths outside the data root) to a command's parser."""
    parser.add_argument("--allow-outside-root", action="store_true",
                        help="accept manifest paths that are absolute or lead outside the data root "
                             "(refused by default: a manifest may only name files under its root)")


def add_task_options(parser):
    """Add ``--task`` and ``--unit`` (what a layout's samples and labels are) to a command's parser."""
    parser.add_argument("--task", default=None,
                        help="labels for layouts that offer several: mias (normal-benign-malignant, "
                             "normal-abnormal, benign-malignant), breakhis (binary, subtype)")
    parser.add_argument("--unit", choices=("image", "patch"), default=None,
                        help="mias: whole mammograms (image, default) or a patch around each annotated "
                             "abnormality plus one inside each normal breast (patch)")
    parser.add_argument("--patch-context", type=float, default=None, metavar="FRACTION",
                        help="mias --unit patch: size each abnormality patch from its annotated radius, with "
                             "FRACTION of the circle's diameter as context on every side (e.g. 0.5; the patch "
                             "size stays the floor)")


def task_options(args, layout):
    """Builder options from ``--task``/``--unit`` for ``layout``; a clear error where the layout has none."""
    options = {}
    if getattr(args, "task", None) is not None:
        if layout not in ("mias", "breakhis"):
            raise ValueError(f"--task applies to the mias and breakhis layouts, not to {layout!r}")
        options["task"] = args.task
    if getattr(args, "unit", None) is not None:
        if layout != "mias":
            raise ValueError(f"--unit applies to the mias layout, not to {layout!r}")
        options["unit"] = args.unit
    context = getattr(args, "patch_context", None)
    if context is not None:
        if layout != "mias" or getattr(args, "unit", None) != "patch":
            raise ValueError(f"--patch-context sizes the patches of the mias layout with --unit patch; got layout "
                             f"{layout!r}, unit {getattr(args, 'unit', None)!r}")
        options.update(fit_radius=True, context=context)
    return options


def _add_common(parser):
    parser.add_argument("--mode", choices=tuple(_MODE_CHOICES), default=None,
                        help="channels to read: keep what the file stores, gray or rgb "
                             "(default: the layout's own default, e.g. gray for BUSI and MIAS)")
    add_task_options(parser)


def _builder_options(args, layout):
    options = {}
    if args.mode is not None:
        options["mode"] = _MODE_CHOICES[args.mode]
    options.update(task_options(args, layout))
    return options


def _short(path, root):
    if root is None:
        return str(path)
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _print_list(title, items, max_list, out):
    print(f"{title}: {len(items)}", file=out)
    for item in items[:max_list]:
        print(f"  {item}", file=out)
    if len(items) > max_list:
        print(f"  ... and {len(items) - max_list} more", file=out)


def run_check(args):
    """``featurepipe data check``: print the report; exit status 1 when some files cannot be used."""
    from .datasets import detect_layout, load_dataset
    from .duplicates import DEFAULT_THRESHOLD, find_duplicates

    start = time.perf_counter()
    if args.duplicate_threshold is not None and args.duplicates != "near":
        raise ValueError(f"--duplicate-threshold applies to --duplicates near, not to --duplicates {args.duplicates}")
    threshold = DEFAULT_THRESHOLD if args.duplicate_threshold is None else args.duplicate_threshold
    if not 0 < threshold <= 1:
        raise ValueError(f"--duplicate-threshold must be in (0, 1] (a correlation); got {threshold:g}")
    layout = detect_layout(args.target) if args.layout == "auto" else args.layout
    options = _builder_options(args, layout)
    if layout == "manifest" and args.root is not None:
        options["root"] = args.root
    elif args.root is not None:
        raise ValueError("--root applies to manifests only")
    if args.allow_outside_root:
        if layout != "manifest":
            raise ValueError("--allow-outside-root applies to manifests only")
        options["allow_outside_root"] = True
    # With the duplicate search on, that single pass decodes every image (and mask) and finds
    # the unreadable ones, so the builder does not decode them a second time.
    searching = args.duplicates != "none"
    options["validate"] = not searching
    options["n_jobs"] = args.n_jobs
    dataset = load_dataset(args.target, layout, **options)
    root = dataset.root

    unusable = [(path, reason) for path, reason in dataset.skipped]
    report = None
    keep = list(range(len(dataset)))
    if searching:
        report = find_duplicates(dataset, method=args.duplicates, threshold=threshold, n_jobs=args.n_jobs,
                                 on_error="report")
        bad = {index for index, _, _ in report.unreadable}
        unusable += [(path, reason) for _, path, reason in report.unreadable]
        keep = [i for i in range(len(dataset)) if i not in bad]

    out = sys.stdout
    print(f"dataset {args.target}", file=out)
    print(f"layout  {layout}" + (f"  (task {dataset.info['task']})" if dataset.info.get("task") else "")
          + (f"  (unit {dataset.info['unit']})" if dataset.info.get("unit") else ""), file=out)
    labels = [dataset.samples[i].label for i in keep]
    counts = {}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    print(f"{len(keep)} usable images in {len(counts)} classes:", file=out)
    width = max([len(str(k)) for k in counts] + [5])
    for label in sorted(counts, key=str):
        print(f"  {str(label):<{width}}  {counts[label]:>6}", file=out)
    print(f"  {'total':<{width}}  {len(keep):>6}", file=out)
    groups = {dataset.samples[i].group for i in keep} - {None}
    if groups:
        print(f"groups (patients): {len(groups)}", file=out)
    for reason, count in dataset.info.get("excluded", {}).items():
        print(f"excluded by the task: {count} {reason}", file=out)
    for warning in dataset.info.get("warnings", []):
        print(f"warning: {warning}", file=out)
    _print_list("unusable files", [f"{_short(p, root)}: {r}" for p, r in unusable], args.max_list, out)
    ignored = dataset.info.get("ignored", [])
    if ignored:
        _print_list("ignored (not image files)", [f"{_short(p, root)}" for p, _ in ignored], args.max_list, out)
    if report is not None:
        print(report.summary(max_clusters=args.max_list), file=out)
    print(f"checked in {time.perf_counter() - start:.1f} s", file=out)
    return 1 if unusable else 0


def run_manifest(args):
    """``featurepipe data manifest``: write the CSV; exit status 1 when some files were left out."""
    from .datasets import LAYOUTS, write_manifest

    options = _builder_options(args, args.layout)
    options["validate"] = not args.no_validate
    options["n_jobs"] = args.n_jobs
    dataset = LAYOUTS[args.layout](args.root, **options)
    out = write_manifest(dataset, args.output, checksums=not args.no_checksums)
    counts = ", ".join(f"{k}: {v}" for k, v in dataset.class_counts().items())
    print(f"wrote {len(dataset)} rows ({counts}) to {os.fspath(out)}")
    if dataset.skipped:
        print(f"{len(dataset.skipped)} files left out of the manifest:", file=sys.stderr)
        for path, reason in dataset.skipped:
            print(f"  {_short(path, dataset.root)}: {reason}", file=sys.stderr)
        return 1
    return 0


def run_verify(args):
    """``featurepipe data verify``: print the report; exit status 1 when anything is wrong."""
    from .datasets import verify_manifest

    report = verify_manifest(args.manifest, args.root, decode=not args.no_decode, n_jobs=args.n_jobs,
                             allow_outside_root=args.allow_outside_root)
    print(report.summary(max_items=args.max_list))
    return 0 if report.ok else 1
