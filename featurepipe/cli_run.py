"""``featurepipe recipes | benchmark | fit | predict | serve``: compare recipes, train one, save it, classify images.

::

    featurepipe recipes
    featurepipe benchmark [DATASET] [--recipes a,b,c] [--demo] [--splits 5 --repeats 1 --seed 0]
                          [--output DIR] [--backend dask --scheduler ADDR] [--cache DIR | --no-cache]
    featurepipe fit <recipe> <dataset> -o model.skops [--format skops|joblib] [--mode gray|rgb]
                    [--cv N | --from-results DIR] [--cache DIR | --no-cache]
    featurepipe predict model.skops <images or folders ...> -o predictions.csv [--masks '{stem}_mask*.png']
                        [--trust TYPE[,TYPE]] [--unsafe-pickle]
    featurepipe serve model.skops | --demo [--host 127.0.0.1] [--port 8501] [--trust TYPE[,TYPE]]

Saved models
------------
``fit`` writes an :class:`~featurepipe.models.ImageModel` (the fitted
pipeline and its input contract: mask use, channel mode, classes, recipe
options, featurepipe version) with :mod:`skops.io` by default; ``--format
joblib`` writes a pickle instead. ``predict`` loads model files safely
(:func:`featurepipe.models.load_model`): a skops file that needs a type
outside featurepipe's estimators and the enumerated
:data:`~featurepipe.models.TRUSTED_TYPES` is refused with the list of those
types (``--trust TYPE[,TYPE]`` allows them), and a pickle is loaded only with
``--unsafe-pickle``, since unpickling runs whatever code the file contains.
``fit`` also writes the model card beside the model (``m.card.md``,
``m.card.json``; :mod:`featurepipe.card`), with a cross-validated estimate
when ``--cv N`` or ``--from-results DIR`` is given; ``predict`` and ``serve``
say which card they use. ``serve`` runs the web app of :mod:`featurepipe.app`.

This module only parses arguments and prints; the library API is
:mod:`featurepipe.models` (:func:`~featurepipe.models.fit_model`,
:func:`~featurepipe.models.save_model`, :func:`~featurepipe.models.load_model`,
:func:`~featurepipe.models.predict_files`).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from .cli_data import add_allow_outside_root, add_task_options, task_options

__all__ = ["DEMO_RECIPES", "default_cache_dir", "register", "run_benchmark_command", "run_fit", "run_predict",
           "run_recipes", "run_serve", "serve_command"]

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
    add_task_options(bench)
    add_allow_outside_root(bench)
    bench.add_argument("--grid", action="store_true",
                       help="tune each recipe with its default grid by nested CV (slower)")
    bench.add_argument("--splits", type=int, default=5, help="outer CV folds (default 5)")
    bench.add_argument("--repeats", type=int, default=1, help="repetitions of the outer CV (default 1)")
    bench.add_argument("--seed", type=_seed, default=0, help="random seed of the splits and recipes (default 0)")
    bench.add_argument("--rank-by", default="mcc", help="metric that sorts the table (default mcc)")
    bench.add_argument("--output", default=None,
                       help="report folder (default: featurepipe-benchmark-<dataset name> in the current folder)")
    bench.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    bench.add_argument("--duplicates", choices=("near", "exact", "none"), default="near",
                       help="duplicate grouping: near (default), exact (bit-identical pixels) or none")
    bench.add_argument("--duplicate-threshold", type=float, default=None, metavar="CORR",
                       help="verification threshold of near duplicates (with --duplicates near): least correlation "
                            "of the aligned pair's fine detail (default: featurepipe.duplicates.DEFAULT_THRESHOLD; "
                            "see docs/duplicates.md)")
    bench.add_argument("--on-error", choices=("skip", "raise"), default="skip",
                       help="an image that cannot be processed: skip it for every recipe and list it (default), "
                            "or stop")
    bench.add_argument("--overwrite", action="store_true",
                       help="replace the results of another experiment in --output (default: refuse)")
    bench.add_argument("--n-jobs", type=int, default=None, help="folds in parallel (joblib)")
    bench.add_argument("--backend", default=None, help="joblib backend for the folds, e.g. dask")
    bench.add_argument("--scheduler", default=None, help="Dask scheduler address (implies --backend dask)")
    _add_cache_options(bench)
    bench.set_defaults(func=run_benchmark_command)

    fit = subparsers.add_parser(
        "fit", help="train a recipe on a whole dataset and save the model",
        description="Fit a recipe on every sample of a dataset and save the fitted pipeline (skops by default).")
    fit.add_argument("recipe", help="recipe name (see `featurepipe recipes`)")
    fit.add_argument("dataset", help="manifest CSV, class-per-folder tree or known layout folder")
    fit.add_argument("--layout", default="auto", help="dataset layout (default: detected)")
    fit.add_argument("-o", "--output", required=True, help="model file to write (.skops or .joblib)")
    fit.add_argument("--format", choices=_FORMATS, default=None,
                     help="skops (safe, default) or joblib (a pickle: `predict` loads it only with "
                          "--unsafe-pickle). Default: from the file extension, else skops")
    fit.add_argument("--mode", choices=("keep", "gray", "rgb"), default="keep",
                     help="channels to read (default: the layout's default, else what the files store); "
                          "recorded in the model, and `predict` reads images the same way")
    fit.add_argument("--seed", type=_seed, default=0, help="random seed of the recipe (default 0)")
    estimate = fit.add_mutually_exclusive_group()
    estimate.add_argument("--cv", type=_folds, default=None, metavar="N",
                          help="also cross-validate the same pipeline (N stratified folds grouped by patient and "
                               "duplicate cluster) and put the estimate with confidence intervals in the model card")
    estimate.add_argument("--from-results", default=None, metavar="DIR",
                          help="take the model card's estimate from a benchmark results folder (its results.json) "
                               "that ran this recipe with the same options on the same data")
    _add_recipe_options(fit)
    add_task_options(fit)
    add_allow_outside_root(fit)
    _add_cache_options(fit)
    fit.set_defaults(func=run_fit)

    pred = subparsers.add_parser(
        "predict", help="classify image files with a saved model",
        description="Predict the class and per-class probabilities (proba_<class>) of each image with a model "
                    "written by `featurepipe fit`, read the way the model was trained (its recorded channel mode; "
                    "masks when it uses them). Mask files beside their images (x_mask.png next to x.png) in "
                    "folders are skipped and listed. Files that cannot be read or processed are listed on stderr "
                    "and written as rows with an error column; the exit status is 1 when any failed. Model "
                    "files are loaded safely: a skops file that needs types featurepipe does not trust is "
                    "refused (see --trust), a pickle/joblib file needs --unsafe-pickle.")
    pred.add_argument("model", help="model file written by `featurepipe fit`")
    pred.add_argument("inputs", nargs="+", help="image files and/or folders (searched recursively)")
    pred.add_argument("-o", "--output", default=None, help="CSV to write (default: print to stdout)")
    pred.add_argument("--mode", choices=("keep", "gray", "rgb"), default="keep",
                      help="channels to read (default: the model's recorded mode, else what the file stores)")
    pred.add_argument("--masks", default=None, metavar="PATTERN",
                      help="mask file(s) of each image, a glob relative to the image's folder with {stem} for its "
                           "name, e.g. '{stem}_mask*.png'; required when the model uses masks")
    pred.add_argument("--trust", type=_type_list, action="append", default=[], metavar="TYPE[,TYPE]",
                      help="also trust these types of a skops file (listed when one is refused); only for files "
                           "whose author you trust")
    pred.add_argument("--unsafe-pickle", action="store_true",
                      help="allow a pickle/joblib model file: unpickling runs any code the file contains, so only "
                           "use it for files you made")
    _add_verbose_option(pred)
    pred.set_defaults(func=run_predict)

    serve = subparsers.add_parser(
        "serve", help="try a saved model in the browser (local web app)",
        description="Start a local web app (Streamlit) on a model written by `featurepipe fit`: upload images, see "
                    "the predicted class, per-class probabilities (or decision scores), the class activation map "
                    "when the model has one, the model card, and classify a folder into a CSV. The model is "
                    "loaded with the same safe loader as `predict` (pickle files are refused). Needs the app "
                    "extra: pip install 'featurepipe[app]'.")
    serve.add_argument("model", nargs="?", help="model file written by `featurepipe fit` (skops)")
    serve.add_argument("--demo", action="store_true",
                       help="serve a model fitted on the SYNTHETIC demo data (fitted offline on first use, cached)")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default 127.0.0.1: this computer only)")
    serve.add_argument("--port", type=_port, default=8501, help="port (default 8501)")
    serve.add_argument("--trust", type=_type_list, action="append", default=[], metavar="TYPE[,TYPE]",
                       help="also trust these types of a skops file, as for `predict`")
    serve.set_defaults(func=run_serve)


def default_cache_dir():
    """Folder of the command line's feature cache: ``$FEATUREPIPE_CACHE``, else
    ``$XDG_CACHE_HOME/featurepipe/features``, else ``~/.cache/featurepipe/features``."""
    if os.environ.get("FEATUREPIPE_CACHE"):
        return os.environ["FEATUREPIPE_CACHE"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "featurepipe", "features")


def _add_verbose_option(parser):
    # SUPPRESS: an absent sub-command flag keeps the value of `featurepipe --verbose <command>`.
    parser.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="let TensorFlow print its start-up log lines (hidden by default)")


def _add_cache_options(parser):
    cache = parser.add_mutually_exclusive_group()
    cache.add_argument("--cache", metavar="DIR", default=None,
                       help="keep computed features in DIR between runs (default: $FEATUREPIPE_CACHE, else "
                            "$XDG_CACHE_HOME/featurepipe/features or ~/.cache/featurepipe/features); entries are "
                            "keyed by extractor, parameters, version and pixels, and verified by checksum")
    cache.add_argument("--no-cache", action="store_true",
                       help="keep features in memory for this run only (nothing written to disk)")
    _add_verbose_option(parser)


def _feature_cache(args):
    """The ``cache`` value for every feature extractor: ``True`` (memory only) or a directory."""
    return True if args.no_cache else (args.cache or default_cache_dir())


def _seed(text):
    """``--seed`` value: an integer seed in [0, 2**32 - 1] (what NumPy and scikit-learn accept)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer in [0, 4294967295]; got {text!r}") from None
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"must be an integer in [0, 4294967295]; got {text!r}")
    return value


def _port(text):
    """``--port`` value: an integer in [1, 65535]."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer in [1, 65535]; got {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be an integer in [1, 65535]; got {text!r}")
    return value


def _folds(text):
    """``--cv`` value: an integer number of folds >= 2."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 2 (folds); got {text!r}") from None
    if value < 2:
        raise argparse.ArgumentTypeError(f"must be an integer >= 2 (folds); got {text!r}")
    return value


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
def _load(target, layout, allow_outside_root=False, args=None, **options):
    from .datasets import detect_layout, load_dataset

    if not os.path.exists(target):
        raise ValueError(f"dataset {target!r} does not exist (pass a manifest CSV or a dataset folder)")
    layout = detect_layout(target) if layout == "auto" else layout
    if args is not None:
        options.update(task_options(args, layout))
    if allow_outside_root:
        if layout != "manifest":
            raise ValueError("--allow-outside-root applies to manifests only")
        options["allow_outside_root"] = True
    return load_dataset(target, layout, **options)


def run_benchmark_command(args):
    """``featurepipe benchmark``: run the recipes, print the table and the report folder."""
    from .sample import decode_once

    with decode_once():  # the dataset's validation decodes each image once for the whole command
        return _benchmark_command(args)


def _benchmark_command(args):
    from . import recipes
    from .benchmark import run_benchmark

    from .metrics import METRIC_NAMES

    if args.recipes is None:
        names = list(DEMO_RECIPES)
    else:
        names = [r.strip() for r in args.recipes.split(",") if r.strip()]
        if not names:
            raise ValueError(f"--recipes: no recipe name in {args.recipes!r}; pass comma-separated names "
                             "(see `featurepipe recipes`)")
    for name in names:
        recipes.get(name)  # unknown names fail before any work
    if args.rank_by not in METRIC_NAMES:
        raise ValueError(f"--rank-by: unknown metric {args.rank_by!r}; choose from {', '.join(METRIC_NAMES)}")
    if args.demo or args.dataset is None:
        if args.task is not None or args.unit is not None:
            raise ValueError("--task/--unit apply to a dataset's layout, not to the demo set")
        from .demo import load_demo

        dataset = load_demo()
        print(f"dataset: {dataset.name}: {len(dataset)} images, SYNTHETIC demo data "
              f"({dataset.info.get('note', '')})", file=sys.stderr)
    else:
        dataset = _load(args.dataset, args.layout, args.allow_outside_root, args)
    options = _recipe_options(args)
    from .base import set_feature_cache

    cache = _feature_cache(args)
    pipelines = {name: set_feature_cache(recipes.make(name, random_state=args.seed, **options), cache)
                 for name in names}
    grids = {name: recipes.grid(name) for name in names} if args.grid else None
    output = args.output or f"featurepipe-benchmark-{_slug(dataset.name)}"
    # Printed by featurepipe.cli.main if the run is interrupted (Ctrl-C): finished folds are stored.
    args.interrupt_hint = f"finished folds are kept in {output}: run the same command again to resume"
    start = time.perf_counter()
    result = run_benchmark(
        dataset, pipelines, cv={"n_splits": args.splits, "n_repeats": args.repeats, "random_state": args.seed},
        param_grids=grids, rank_by=args.rank_by, output_dir=output, plots=not args.no_plots,
        n_jobs=args.n_jobs, backend=args.backend, scheduler=args.scheduler, duplicates=args.duplicates,
        duplicate_threshold=args.duplicate_threshold, overwrite=args.overwrite, on_error=args.on_error)
    elapsed = time.perf_counter() - start
    print(result.to_markdown(args.rank_by))
    print(f"\nreport: {Path(output).resolve()} ({len(result.files)} files; wall time {elapsed:.1f} s)")
    print(f"open in a browser (offline): {(Path(output) / 'report.html').resolve()}")
    return 0


def _slug(name):
    keep = "".join(c if c.isalnum() or c in "-_" else "-" for c in str(name).lower())
    return "-".join(part for part in keep.split("-") if part) or "dataset"


def run_fit(args):
    """``featurepipe fit``: fit, save, and list the dataset files that were left out."""
    from . import recipes
    from .card import build_card, cv_estimate, estimate_from_results, write_card
    from .models import fit_model, save_model

    recipes.get(args.recipe)
    mode = None if args.mode == "keep" else args.mode
    dataset = _load(args.dataset, args.layout, args.allow_outside_root, args, **({"mode": mode} if mode else {}))
    if dataset.skipped:
        print(f"featurepipe fit: {len(dataset.skipped)} files left out of the training set:", file=sys.stderr)
        for path, reason in dataset.skipped:
            print(f"  {path}: {reason}", file=sys.stderr)
    start = time.perf_counter()
    options = _recipe_options(args)
    estimate = None
    if args.from_results is not None:  # checked before the fit: a mismatch fails fast
        estimate = estimate_from_results(args.from_results, args.recipe, dataset=dataset,
                                         estimator=recipes.make(args.recipe, random_state=args.seed, **options))
    model = fit_model(args.recipe, dataset, mode=mode, random_state=args.seed, cache=_feature_cache(args),
                      **options)
    if args.cv is not None:
        print(f"featurepipe fit: cross-validating {args.recipe} ({args.cv} grouped folds) for the model card",
              file=sys.stderr)
        estimate = cv_estimate(recipes.make(args.recipe, random_state=args.seed, **options), dataset,
                               n_splits=args.cv, random_state=args.seed, name=args.recipe)
    fmt = _format_of(args.output, args.format)
    path = save_model(model, args.output, fmt)
    card_md, _ = write_card(build_card(model, dataset, model_path=path, source=args.dataset, estimate=estimate),
                            path)
    contract = model.contract_
    print(f"fitted {args.recipe} on {len(dataset)} images ({', '.join(map(str, dataset.classes))}) in "
          f"{time.perf_counter() - start:.1f} s; saved to {path} ({fmt}); it expects "
          f"{contract['mode'] or 'unchanged'} images" + (" with lesion masks" if contract["use_mask"] else "")
          + (f"; {len(dataset.skipped)} files left out (listed above)" if dataset.skipped else ""))
    print(f"model card: {card_md} (and {card_md.with_suffix('.json').name})")
    return 0


def _format_of(path, fmt):
    if fmt is not None:
        return fmt
    return "joblib" if Path(path).suffix.lower() in (".joblib", ".pkl", ".pickle") else "skops"


def _type_list(text):
    """``--trust`` value: comma-separated ``module.Name`` types."""
    types = [t.strip() for t in text.split(",") if t.strip()]
    if not types:
        raise argparse.ArgumentTypeError(f"expected comma-separated types such as os.path.join; got {text!r}")
    return types


def run_predict(args):
    """``featurepipe predict``: exit status 1 when some files failed."""
    import warnings

    from .card import read_card
    from .models import load_model, predict_files, write_predictions_csv

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        model = load_model(args.model, trusted=[t for group in args.trust for t in group],
                           unsafe_pickle=args.unsafe_pickle)
        print(f"featurepipe predict: {read_card(args.model)[2]}", file=sys.stderr)  # once the model loaded
        rows = predict_files(model, args.inputs, mode=None if args.mode == "keep" else args.mode, masks=args.masks)
    for warning in caught:
        if issubclass(warning.category, UserWarning):
            print(f"featurepipe predict: warning: {warning.message}", file=sys.stderr)
        else:
            warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)
    out = open(args.output, "w", newline="", encoding="utf-8") if args.output else sys.stdout  # noqa: SIM115
    try:
        write_predictions_csv(rows, out)
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


# ----------------------------------------------------------------------------- serve
def serve_command(model, *, host="127.0.0.1", port=8501, trusted=()):
    """The command line that runs the Streamlit app on ``model`` (a list for :func:`subprocess.run`)."""
    script = Path(__file__).resolve().parent / "app" / "streamlit_app.py"
    command = [sys.executable, "-m", "streamlit", "run", str(script),
               "--server.address", host, "--server.port", str(port), "--server.headless", "true",
               "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
               "--global.developmentMode", "false", "--client.toolbarMode", "viewer", "--", "--model", str(model)]
    for name in trusted:
        command += ["--trust", name]
    return command


def run_serve(args):
    """``featurepipe serve``: check the model, then run the Streamlit app until interrupted."""
    import importlib.util
    import subprocess

    if args.demo == (args.model is not None):
        raise ValueError("featurepipe serve: give a MODEL file or --demo (not both)")
    if args.model is not None and not Path(args.model).is_file():
        raise ValueError(f"model file {args.model!r} does not exist (or is not a file)")
    if importlib.util.find_spec("streamlit") is None:
        raise ValueError("featurepipe serve needs Streamlit: pip install 'featurepipe[app]'")
    if args.demo:
        from .app.core import demo_model

        model = demo_model(progress=lambda text: print(f"featurepipe serve: {text}", file=sys.stderr))
    else:
        model = Path(args.model)
    trusted = [t for group in args.trust for t in group]
    from .app.core import open_model

    loaded = open_model(model, trusted=trusted)  # same check as the page: say it here too
    if loaded.error:
        print(f"featurepipe serve: warning: the page will show that this model cannot be loaded: {loaded.error}",
              file=sys.stderr)
    else:
        print(f"featurepipe serve: {loaded.card_note}", file=sys.stderr)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"featurepipe serve: warning: listening on {args.host}: other computers that reach this address can "
              "use the app and read files through its folder mode", file=sys.stderr)
    print(f"featurepipe serve: open http://{'[' + args.host + ']' if ':' in args.host else args.host}:{args.port} "
          "(Ctrl-C stops)", file=sys.stderr)
    return subprocess.call(serve_command(model, host=args.host, port=args.port, trusted=trusted))
