"""``featurepipe recipes | benchmark | fit | predict``: compare recipes, train one, save it, classify images.

::

    featurepipe recipes
    featurepipe benchmark [DATASET] [--recipes a,b,c] [--demo] [--splits 5 --repeats 1 --seed 0]
                          [--output DIR] [--backend dask --scheduler ADDR]
    featurepipe fit <recipe> <dataset> -o model.skops [--format skops|joblib]
    featurepipe predict model.skops <images or folders ...> -o predictions.csv

Saved models
------------
``fit`` writes a scikit-learn pipeline with :mod:`skops.io` by default.
skops never runs arbitrary code on load, but refuses types it does not know
(featurepipe's own estimators among them) unless they are listed as trusted.
``predict`` therefore prints the types a file asks to trust and then trusts
them: only load model files that you (or someone you trust) made.
``--format joblib`` writes a pickle instead; loading a pickle can run any
code, so the same rule applies with more force.

The Python equivalents are :func:`fit_recipe`, :func:`save_model`,
:func:`load_model` and :func:`predict_files`.
"""

from __future__ import annotations

import csv
import os
import sys
import time
from pathlib import Path

__all__ = ["DEMO_RECIPES", "fit_recipe", "load_model", "predict_files", "register", "save_model"]

#: Recipes of ``featurepipe benchmark --demo``: offline CNN + SVM, texture + SVM, HOG + SVM, CNN + ELM.
DEMO_RECIPES = ("convnet_svm_linear", "firstorder_glcm_svm", "hog_svm", "convnet_elm")
_FORMATS = ("skops", "joblib")


def register(subparsers):
    """Add the ``recipes``, ``benchmark``, ``fit`` and ``predict`` commands."""
    rec = subparsers.add_parser("recipes", help="list the named pipeline recipes",
                                description="List the named recipes with a one-line description and a citation.")
    rec.add_argument("--citations", action="store_true", help="also print each recipe's citation")
    rec.set_defaults(func=run_recipes)

    bench = subparsers.add_parser(
        "benchmark", help="compare recipes on a dataset with the same leakage-proof splits",
        description="Cross-validate several recipes on one dataset (stratified, grouped by patient and "
                    "duplicate cluster) and write a report folder (JSON, CSV, Markdown, plots). Without a "
                    "dataset, or with --demo, runs on the synthetic offline demo set.")
    bench.add_argument("dataset", nargs="?", help="manifest CSV, class-per-folder tree or known layout folder")
    bench.add_argument("--demo", action="store_true",
                       help="use the synthetic demo dataset (generated offline on first use)")
    bench.add_argument("--layout", default="auto", help="dataset layout (default: detected)")
    bench.add_argument("--recipes", default=None,
                       help=f"comma-separated recipe names (default: {','.join(DEMO_RECIPES)})")
    _add_recipe_options(bench)
    bench.add_argument("--grid", action="store_true",
                       help="tune each recipe with its default grid by nested CV (slower)")
    bench.add_argument("--splits", type=int, default=5, help="outer CV folds (default 5)")
    bench.add_argument("--repeats", type=int, default=1, help="repetitions of the outer CV (default 1)")
    bench.add_argument("--seed", type=int, default=0, help="random seed of the splits and recipes (default 0)")
    bench.add_argument("--rank-by", default="mcc", help="metric that sorts the table (default mcc)")
    bench.add_argument("--output", default=None,
                       help="report folder (default: featurepipe-benchmark-<dataset name> in the current folder)")
    bench.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    bench.add_argument("--n-jobs", type=int, default=None, help="folds in parallel (joblib)")
    bench.add_argument("--backend", default=None, help="joblib backend for the folds, e.g. dask")
    bench.add_argument("--scheduler", default=None, help="Dask scheduler address (implies --backend dask)")
    bench.set_defaults(func=run_benchmark_command)

    fit = subparsers.add_parser(
        "fit", help="train a recipe on a whole dataset and save the model",
        description="Fit a recipe on every sample of a dataset and save the fitted pipeline (skops by default).")
    fit.add_argument("recipe", help="recipe name (see `featurepipe recipes`)")
    fit.add_argument("dataset", help="manifest CSV, class-per-folder tree or known layout folder")
    fit.add_argument("--layout", default="auto", help="dataset layout (default: detected)")
    fit.add_argument("-o", "--output", required=True, help="model file to write (.skops or .joblib)")
    fit.add_argument("--format", choices=_FORMATS, default=None,
                     help="skops (safe, default) or joblib (pickle; loading runs code). Default: from the "
                          "file extension, else skops")
    fit.add_argument("--seed", type=int, default=0, help="random seed of the recipe (default 0)")
    _add_recipe_options(fit)
    fit.set_defaults(func=run_fit)

    pred = subparsers.add_parser(
        "predict", help="classify image files with a saved model",
        description="Predict the class (and per-class probabilities or decision scores) of each image. "
                    "Files that cannot be read or processed are listed on stderr and written as rows with an "
                    "error column; the exit status is 1 when any failed. Loading a .skops model trusts the "
                    "types it lists (printed on stderr): load only models you made.")
    pred.add_argument("model", help="model file written by `featurepipe fit`")
    pred.add_argument("inputs", nargs="+", help="image files and/or folders (searched recursively)")
    pred.add_argument("-o", "--output", default=None, help="CSV to write (default: print to stdout)")
    pred.add_argument("--mode", choices=("keep", "gray", "rgb"), default="keep",
                      help="channels to read (default: what the file stores)")
    pred.set_defaults(func=run_predict)


def _add_recipe_options(parser):
    parser.add_argument("--preprocessing", default=None,
                        help="comma-separated image steps before the features: median, clahe, otsu_roi")
    parser.add_argument("--balancing", choices=("none", "random", "smote"), default="none",
                        help="oversampling after feature extraction, inside the pipeline (default none)")
    parser.add_argument("--backbone", default=None, help="CNN backbone (default efficientnet_lite0, offline)")
    parser.add_argument("--use-mask", action="store_true",
                        help="handcrafted features describe the lesion mask (only if images to classify have masks)")


def _recipe_options(args):
    pre = None if not args.preprocessing else [p.strip() for p in args.preprocessing.split(",") if p.strip()]
    return {"preprocessing": pre, "balancing": None if args.balancing == "none" else args.balancing,
            "backbone": args.backbone, "use_mask": bool(args.use_mask)}


# ----------------------------------------------------------------------------- recipes
def run_recipes(args):
    """Print the recipe table."""
    from . import recipes

    rows = recipes.list()
    width = max(len(name) for name, _, _ in rows)
    for name, description, citation in rows:
        print(f"{name:<{width}}  {description}")
        if args.citations:
            print(f"{'':<{width}}  [{citation}]")
    return 0


# ----------------------------------------------------------------------------- benchmark
def _load(target, layout):
    from .datasets import load_dataset

    if not os.path.exists(target):
        raise ValueError(f"dataset {target!r} does not exist (pass a manifest CSV or a dataset folder)")
    return load_dataset(target, layout)


def run_benchmark_command(args):
    """``featurepipe benchmark``: run the recipes, print the table and the report folder."""
    from . import recipes
    from .benchmark import run_benchmark

    names = list(DEMO_RECIPES) if not args.recipes else [r.strip() for r in args.recipes.split(",") if r.strip()]
    for name in names:
        recipes.get(name)  # unknown names fail before any work
    if args.demo or args.dataset is None:
        from .demo import load_demo

        dataset = load_demo()
        print(f"dataset: {dataset.name}: {len(dataset)} images, SYNTHETIC demo data "
              f"({dataset.info.get('note', '')})", file=sys.stderr)
    else:
        dataset = _load(args.dataset, args.layout)
    options = _recipe_options(args)
    pipelines = {name: recipes.make(name, random_state=args.seed, **options) for name in names}
    grids = {name: recipes.grid(name) for name in names} if args.grid else None
    output = args.output or f"featurepipe-benchmark-{_slug(dataset.name)}"
    start = time.perf_counter()
    result = run_benchmark(
        dataset, pipelines, cv={"n_splits": args.splits, "n_repeats": args.repeats, "random_state": args.seed},
        param_grids=grids, rank_by=args.rank_by, output_dir=output, plots=not args.no_plots,
        n_jobs=args.n_jobs, backend=args.backend, scheduler=args.scheduler)
    elapsed = time.perf_counter() - start
    print(result.to_markdown(args.rank_by))
    print(f"\nreport: {Path(output).resolve()} ({len(result.files)} files; wall time {elapsed:.1f} s)")
    return 0


def _slug(name):
    keep = "".join(c if c.isalnum() or c in "-_" else "-" for c in str(name).lower())
    return "-".join(part for part in keep.split("-") if part) or "dataset"


# ----------------------------------------------------------------------------- fit / save / load
def fit_recipe(name, dataset, *, random_state=0, **options):
    """Fit recipe ``name`` (options as :func:`featurepipe.recipes.make`) on every sample of ``dataset``."""
    from . import recipes

    pipe = recipes.make(name, random_state=random_state, **options)
    return pipe.fit(dataset.samples, dataset.y)


def _format_of(path, fmt):
    if fmt is None:
        return "joblib" if Path(path).suffix.lower() in (".joblib", ".pkl", ".pickle") else "skops"
    if fmt not in _FORMATS:
        raise ValueError(f"format must be one of {list(_FORMATS)}; got {fmt!r}")
    return fmt


def save_model(model, path, format=None):
    """Write a fitted model with skops (default) or joblib (``.joblib``/``.pkl`` or ``format="joblib"``)."""
    fmt = _format_of(path, format)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if fmt == "skops":
        import skops.io

        skops.io.dump(model, path)
    else:
        import joblib

        joblib.dump(model, path)
    return Path(path)


def load_model(path, format=None, *, verbose=True):
    """Load a model written by :func:`save_model`.

    For skops files, the types the file needs beyond skops' defaults are
    printed (``verbose``) and then trusted: load only files you made.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"model file {str(path)!r} does not exist")
    fmt = _format_of(path, format)
    if fmt == "joblib":
        import joblib

        return joblib.load(path)
    import skops.io

    try:
        untrusted = skops.io.get_untrusted_types(file=path)
    except Exception as exc:  # a non-skops file: say which and what was expected
        raise ValueError(f"model file {str(path)!r} is not a skops file ({exc}); "
                         "use --format joblib for joblib files") from exc
    if verbose and untrusted:
        print(f"loading {path}: trusting the types it lists (load only models you made): "
              + ", ".join(untrusted), file=sys.stderr)
    return skops.io.load(path, trusted=untrusted)


# ----------------------------------------------------------------------------- predict
def _collect(inputs):
    """Files named explicitly (always kept, even if missing) and image files found under folders."""
    from .io import IMAGE_EXTENSIONS

    files = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files += sorted(f for f in p.rglob("*")
                            if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in IMAGE_EXTENSIONS)
        else:
            files.append(p)  # missing or odd files are reported per file, never dropped
    return files


def _scores(model, X):
    if hasattr(model, "predict_proba"):
        try:
            return "proba", model.predict_proba(X)
        except AttributeError:  # e.g. SVC without probability estimates
            pass
    if hasattr(model, "decision_function"):
        scores = model.decision_function(X)
        if scores.ndim == 1:  # binary: one score for the second class
            import numpy as np

            scores = np.column_stack([-scores, scores])
        return "score", scores
    return None, None


def predict_files(model, inputs, *, mode=None):
    """Classify image files; every file gets a row, failures with an ``error`` reason.

    Parameters
    ----------
    model : fitted classifier taking images as ``X``
    inputs : sequence of paths (files or folders; folders are searched recursively
        for files with an image extension)
    mode : {None, "gray", "rgb"}
        Channels to read.

    Returns
    -------
    rows : list of dict
        ``path``, ``prediction``, ``proba_<class>`` (or ``score_<class>``
        decision values when the model has no probabilities) and ``error``
        (empty when the file was classified).
    """
    from .io import read_image

    files = _collect(inputs)
    if not files:
        raise ValueError(f"no image files found in {list(map(str, inputs))}")
    classes = [str(c) for c in getattr(model, "classes_", [])]
    rows, good, images = [], [], []
    for f in files:
        row = {"path": str(f), "prediction": "", "error": ""}
        rows.append(row)
        try:
            images.append(read_image(f, mode=mode))
            good.append(row)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is reported, not dropped
            row["error"] = _reason(exc)
    if good:
        try:
            _fill(model, good, images, classes)
        except Exception:  # noqa: BLE001 - isolate the failing image below
            # One bad image fails the batch: redo one by one to name it.
            for row, image in zip(good, images, strict=True):
                try:
                    _fill(model, [row], [image], classes)
                except Exception as exc:  # noqa: BLE001 - reported in the row
                    row["error"] = _reason(exc)
    return rows


def _reason(exc):
    return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"


def _fill(model, rows, images, classes):
    import numpy as np

    X = np.empty(len(images), dtype=object)
    X[:] = images
    predictions = model.predict(X)
    kind, scores = _scores(model, X)
    for i, row in enumerate(rows):
        row["prediction"] = str(predictions[i])
        if kind is not None:
            for j, c in enumerate(classes):
                row[f"{kind}_{c}"] = float(scores[i, j])


def run_fit(args):
    """``featurepipe fit``."""
    from . import recipes

    recipes.get(args.recipe)
    dataset = _load(args.dataset, args.layout)
    start = time.perf_counter()
    model = fit_recipe(args.recipe, dataset, random_state=args.seed, **_recipe_options(args))
    path = save_model(model, args.output, args.format)
    print(f"fitted {args.recipe} on {len(dataset)} images ({', '.join(map(str, dataset.classes))}) in "
          f"{time.perf_counter() - start:.1f} s; saved to {path} ({_format_of(path, args.format)})")
    return 0


def run_predict(args):
    """``featurepipe predict``: exit status 1 when some files failed."""
    model = load_model(args.model)
    rows = predict_files(model, args.inputs, mode=None if args.mode == "keep" else args.mode)
    fields = ["path", "prediction"]
    for row in rows:
        fields += [k for k in row if k not in fields and k != "error"]
    fields.append("error")
    out = open(args.output, "w", newline="", encoding="utf-8") if args.output else sys.stdout  # noqa: SIM115
    try:
        writer = csv.DictWriter(out, fieldnames=fields, restval="")
        writer.writeheader()
        writer.writerows(rows)
    finally:
        if args.output:
            out.close()
    failed = [r for r in rows if r["error"]]
    for row in failed:
        print(f"featurepipe predict: could not classify {row['path']}: {row['error']}", file=sys.stderr)
    done = len(rows) - len(failed)
    print(f"{done} of {len(rows)} images classified" + (f"; {len(failed)} failed (listed above)" if failed else "")
          + (f"; written to {args.output}" if args.output else ""), file=sys.stderr)
    return 1 if failed else 0
