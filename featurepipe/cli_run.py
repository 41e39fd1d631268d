"""``featurepipe recipes | benchmark | fit | predict | serve``: compare recipes, train one, save it, classify images.

::

    featurepipe recipes
    featurepipe benchmark [DATASET] [--recipes a,b,c] [--demo] [--mode gray|rgb] [--splits 5 --repeats 1 --seed 0]
                          [--output DIR] [--backend dask --scheduler ADDR] [--cache DIR | --no-cache]
    featurepipe benchmark --config exp.toml [--set key.path=value ...] [--output DIR]
    featurepipe fit <recipe> <dataset> -o model.skops [--format skops|joblib] [--mode gray|rgb]
                    [--cv N | --from-results DIR] [--cache DIR | --no-cache]
    featurepipe fit --config exp.toml [--pipeline NAME] [--set key.path=value ...] -o model.skops
    featurepipe fit --from-results DIR [--pipeline NAME] -o model.skops
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

Experiments
-----------
``benchmark`` and ``fit`` turn their flags into one
:class:`~featurepipe.experiment.ExperimentSpec` (:func:`benchmark_spec`,
:func:`fit_spec`): from ``--config exp.toml``, or from ``--recipes`` and the
recipe flags, then the explicit flags, then ``--set`` overrides. The run is
:func:`featurepipe.experiment.run` (the Python API), which stores the
resolved spec as ``experiment.toml`` in the results folder; giving that file
back to ``--config`` replays the run. ``fit --config``/``--from-results``
fit a pipeline of an experiment as it was benchmarked
(:func:`featurepipe.experiment.fit`).

This module only parses arguments and prints; the library API is
:mod:`featurepipe.experiment` and :mod:`featurepipe.models`
(:func:`~featurepipe.models.fit_model`, :func:`~featurepipe.models.save_model`,
:func:`~featurepipe.models.load_model`, :func:`~featurepipe.models.predict_files`).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from .cli_data import add_allow_outside_root, add_task_options
from .experiment import DEMO_RECIPES, default_cache_dir

__all__ = ["DEMO_RECIPES", "benchmark_spec", "default_cache_dir", "fit_spec", "register", "run_benchmark_command",
           "run_fit", "run_predict", "run_recipes", "run_serve", "serve_command"]

_FORMATS = ("skops", "joblib")


def register(subparsers):
    """Add the ``recipes``, ``benchmark``, ``fit`` and ``predict`` commands."""
    rec = subparsers.add_parser("recipes", help="list the named pipeline recipes",
                                description="List the named recipes with a one-line description and a citation.")
    rec.add_argument("--citations", action="store_true", help="also print each recipe's citation")
    rec.set_defaults(func=run_recipes)

    bench = subparsers.add_parser(
        "benchmark", help="compare recipes on a dataset with the same leakage-proof splits",
        description="Cross-validate several pipelines on one dataset (stratified, grouped by patient and "
                    "duplicate cluster) and write a report folder (JSON, CSV, Markdown, plots, and the resolved "
                    "experiment.toml that replays the run). Pipelines come from --recipes and the recipe flags, "
                    "or from an experiment file (--config exp.toml) where each pipeline has its own options. "
                    "Without a dataset, or with --demo, runs on the synthetic offline demo set.")
    bench.add_argument("dataset", nargs="?", help="manifest CSV, class-per-folder tree or known layout folder")
    bench.add_argument("--config", default=None, metavar="EXP.toml",
                       help="experiment file (TOML; see featurepipe.experiment): dataset, pipelines with their own "
                            "options, CV, grids, metrics. Flags given with it override its values")
    bench.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE", dest="overrides",
                       help="override one field of the experiment, e.g. cv.splits=3 or "
                            "pipelines.NAME.backbone=vgg16 (a pipeline by name; recipes.RECIPE.OPTION sets it on "
                            "every pipeline of a recipe); VALUE is a TOML value, else a string. Repeatable")
    bench.add_argument("--demo", action="store_true",
                       help="use the synthetic demo dataset (generated offline on first use)")
    bench.add_argument("--layout", default=None, help="dataset layout (default: detected)")
    bench.add_argument("--pairs", action="store_true",
                       help="paired images, one sample per pair: dmr-ir patient folders of exactly two crops (the "
                            "contralateral one named '*contralateral.<ext>'), or a manifest's partner column; "
                            "describe them with --set recipes.NAME.pair_asymmetry=concat_absdiff (docs/pairs.md)")
    bench.add_argument("--mode", choices=("gray", "rgb"), default=None,
                       help="channels to read the images in (default: the layout's default, else what the files "
                            "store)")
    bench.add_argument("--recipes", default=None,
                       help=f"comma-separated recipe names (default: {','.join(DEMO_RECIPES)})")
    _add_recipe_options(bench)
    add_task_options(bench)
    add_allow_outside_root(bench)
    bench.add_argument("--tune", "--grid", action="store_true", dest="tune",
                       help="tune each recipe on its default grid (small, stated in its defaults) by nested CV: "
                            "inner grouped folds on every outer training part, chosen parameters reported per "
                            "fold; the stateless features are computed once, so it costs classifier fits only. "
                            "--grid is an older alias")
    bench.add_argument("--splits", type=int, default=None, help="outer CV folds (default 5)")
    bench.add_argument("--repeats", type=int, default=None, help="repetitions of the outer CV (default 1)")
    bench.add_argument("--seed", type=_seed, default=None, help="random seed of the splits and recipes (default 0)")
    bench.add_argument("--rank-by", default=None, help="metric that sorts the table (default mcc)")
    bench.add_argument("--output", default=None,
                       help="report folder (default: featurepipe-benchmark-<dataset name> in the current folder)")
    bench.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    bench.add_argument("--duplicates", choices=("near", "exact", "none"), default=None,
                       help="duplicate grouping: near (default), exact (bit-identical pixels) or none")
    bench.add_argument("--duplicate-threshold", type=float, default=None, metavar="CORR",
                       help="verification threshold of near duplicates (with --duplicates near): least correlation "
                            "of the aligned pair's fine detail (default: featurepipe.duplicates.DEFAULT_THRESHOLD; "
                            "see docs/duplicates.md)")
    bench.add_argument("--on-error", choices=("skip", "raise"), default=None,
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
        description="Fit a pipeline on every sample of a dataset and save it (skops by default): a recipe and a "
                    "dataset, or a pipeline of an experiment file (--config exp.toml --pipeline NAME), or the best "
                    "pipeline of a benchmark results folder (--from-results DIR), so that the model you "
                    "benchmarked is the model you save. A pipeline with a grid is tuned first, by the "
                    "benchmark's grouped CV on the whole dataset.")
    fit.add_argument("recipe", nargs="?", help="recipe name (see `featurepipe recipes`)")
    fit.add_argument("dataset", nargs="?", help="manifest CSV, class-per-folder tree or known layout folder")
    fit.add_argument("--config", default=None, metavar="EXP.toml",
                     help="experiment file: fit its pipeline --pipeline NAME (with its options, params and grid) "
                          "on its dataset")
    fit.add_argument("--pipeline", default=None, metavar="NAME",
                     help="which pipeline of --config or --from-results (default: the only one; with "
                          "--from-results, the best by the benchmark's rank_by metric)")
    fit.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE", dest="overrides",
                     help="override one field of the experiment (as `featurepipe benchmark --set`)")
    fit.add_argument("--layout", default=None, help="dataset layout (default: detected)")
    fit.add_argument("-o", "--output", required=True, help="model file to write (.skops or .joblib)")
    fit.add_argument("--format", choices=_FORMATS, default=None,
                     help="skops (safe, default) or joblib (a pickle: `predict` loads it only with "
                          "--unsafe-pickle). Default: from the file extension, else skops")
    fit.add_argument("--mode", choices=("keep", "gray", "rgb"), default=None,
                     help="channels to read (default: the layout's default, else what the files store); "
                          "recorded in the model, and `predict` reads images the same way")
    fit.add_argument("--seed", type=_seed, default=None, help="random seed of the recipe (default 0)")
    estimate = fit.add_mutually_exclusive_group()
    estimate.add_argument("--cv", type=_folds, default=None, metavar="N",
                          help="also cross-validate the same pipeline (N stratified folds grouped by patient and "
                               "duplicate cluster) and put the estimate with confidence intervals in the model card")
    estimate.add_argument("--from-results", default=None, metavar="DIR",
                          help="a benchmark results folder: fit its pipeline (--pipeline NAME, default the best) "
                               "as its experiment.toml describes it, and put the benchmark's estimate in the model "
                               "card. With RECIPE DATASET: only the estimate, which must be about that recipe "
                               "with the same options on the same data")
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
    parser.add_argument("--balancing", choices=("none", "random", "smote"), default=None,
                        help="oversampling after feature extraction, inside the pipeline (default none)")
    parser.add_argument("--backbone", default=None, help="CNN backbone (default efficientnet_lite0, offline)")
    parser.add_argument("--use-mask", action="store_true",
                        help="handcrafted features describe the lesion mask (only if images to classify have masks)")


def _recipe_options(args, recipe):
    """The recipe options the flags gave (only those given; ``--backbone`` only for recipes with a CNN)."""
    from . import recipes

    options = {}
    if args.preprocessing is not None:
        options["preprocessing"] = [p.strip() for p in args.preprocessing.split(",") if p.strip()]
    if args.balancing not in (None, "none"):
        options["balancing"] = args.balancing
    if args.backbone is not None and getattr(recipes.get(recipe), "uses_cnn", True):
        options["backbone"] = args.backbone
    if args.use_mask:
        options["use_mask"] = True
    return options


def _refuse_recipe_flags(args, source):
    """With an experiment file each pipeline has its own options: the global recipe flags would be ambiguous."""
    given = [flag for flag, on in (("--recipes", getattr(args, "recipes", None) is not None),
                                   ("--preprocessing", args.preprocessing is not None),
                                   ("--balancing", args.balancing is not None),
                                   ("--backbone", args.backbone is not None),
                                   ("--use-mask", args.use_mask), ("--tune", getattr(args, "tune", False))) if on]
    if given:
        raise ValueError(f"{', '.join(given)} cannot be combined with {source}: each pipeline has its own options "
                         "there; use --set pipelines.NAME.OPTION=VALUE (e.g. --set pipelines.cnn.backbone=vgg16) "
                         "or --set cv.tune=true")


def _apply_common_flags(spec, args):
    """Flags that mean the same in every spec (dataset reading, seed, cache) override the spec's values."""
    d = spec.dataset
    if getattr(args, "dataset", None) is not None:
        d.path, d.demo = os.path.abspath(args.dataset), False
    if getattr(args, "demo", False):
        d.path, d.demo = None, True
    for flag, attribute in (("layout", "layout"), ("task", "task"), ("unit", "unit"),
                            ("patch_context", "patch_context")):
        if getattr(args, flag, None) is not None:
            setattr(d, attribute, getattr(args, flag))
    if getattr(args, "mode", None) is not None:
        d.mode = None if args.mode == "keep" else args.mode
    if args.allow_outside_root:
        d.allow_outside_root = True
    if getattr(args, "pairs", False):
        d.pairs = True
    if args.seed is not None:
        spec.cv.seed = args.seed
    if args.no_cache:
        spec.cache = "memory"
    elif args.cache is not None:
        spec.cache = args.cache
    return spec


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
def benchmark_spec(args):
    """The :class:`~featurepipe.experiment.ExperimentSpec` that ``featurepipe benchmark``'s flags describe.

    ``--config`` loads an experiment file; otherwise ``--recipes`` and the recipe flags make one pipeline per
    recipe. Explicit flags override the file's values, and ``--set`` overrides last.
    """
    from . import experiment
    from .experiment import CrossValidation, DatasetSpec, ExperimentSpec, PipelineSpec

    if args.rank_by is not None:
        from .metrics import METRIC_NAMES

        if args.rank_by not in METRIC_NAMES:
            raise ValueError(f"--rank-by: unknown metric {args.rank_by!r}; choose from {', '.join(METRIC_NAMES)}")
    if args.config is not None:
        _refuse_recipe_flags(args, "--config")
        spec = experiment.load(args.config)
    else:
        if args.recipes is None:
            names = list(DEMO_RECIPES)
        else:
            names = [r.strip() for r in args.recipes.split(",") if r.strip()]
            if not names:
                raise ValueError(f"--recipes: no recipe name in {args.recipes!r}; pass comma-separated names "
                                 "(see `featurepipe recipes`)")
        from . import recipes

        for name in names:
            recipes.get(name)  # unknown names fail before any work
        spec = ExperimentSpec(dataset=DatasetSpec(), cv=CrossValidation(tune=bool(args.tune)),
                              pipelines=[PipelineSpec(name=n, recipe=n, options=_recipe_options(args, n))
                                         for n in names])
    _apply_common_flags(spec, args)
    for flag, section, attribute in (("splits", spec.cv, "splits"), ("repeats", spec.cv, "repeats"),
                                     ("rank_by", spec, "rank_by"), ("output", spec, "output"),
                                     ("duplicates", spec.dataset, "duplicates"),
                                     ("duplicate_threshold", spec.dataset, "duplicate_threshold"),
                                     ("on_error", spec.dataset, "on_error"), ("n_jobs", spec, "n_jobs"),
                                     ("backend", spec, "backend"), ("scheduler", spec, "scheduler")):
        if getattr(args, flag) is not None:
            setattr(section, attribute, getattr(args, flag))
    if args.no_plots:
        spec.plots = False
    return experiment.validate(experiment.apply_overrides(spec, args.overrides))


def run_benchmark_command(args):
    """``featurepipe benchmark``: run the experiment, print the table and the report folder."""
    from . import experiment
    from .sample import decode_once

    spec = benchmark_spec(args)
    with decode_once():  # the dataset's validation decodes each image once for the whole command
        prepared = experiment.prepare(spec)
        dataset = prepared.dataset
        if prepared.spec.dataset.path is None:
            print(f"dataset: {dataset.name}: {len(dataset)} images, SYNTHETIC demo data "
                  f"({dataset.info.get('note', '')})", file=sys.stderr)
        output = prepared.output
        # Printed by featurepipe.cli.main if the run is interrupted (Ctrl-C): finished folds are stored.
        args.interrupt_hint = f"finished folds are kept in {output}: run the same command again to resume"
        start = time.perf_counter()
        result = experiment.run(prepared, overwrite=args.overwrite)
    elapsed = time.perf_counter() - start
    print(result.to_markdown(prepared.spec.rank_by))
    print(f"\nreport: {Path(output).resolve()} ({len(result.files)} files; wall time {elapsed:.1f} s)")
    print(f"open in a browser (offline): {(Path(output) / 'report.html').resolve()}")
    print(f"replay: featurepipe benchmark --config {Path(output) / experiment.EXPERIMENT_TOML} --output NEW_FOLDER")
    return 0


# ----------------------------------------------------------------------------- fit
def fit_spec(args):
    """``featurepipe fit``'s experiment and the name of the pipeline to fit.

    From ``RECIPE DATASET`` and the recipe flags, from ``--config`` (``--pipeline NAME``), or from a
    results folder's ``experiment.toml`` (``--from-results DIR`` without RECIPE: ``--pipeline NAME``,
    default the benchmark's best pipeline).
    """
    from . import experiment
    from .experiment import DatasetSpec, ExperimentSpec, PipelineSpec

    positional = args.recipe is not None or args.dataset is not None
    from_folder = args.from_results is not None and not positional
    if args.config is not None or from_folder:
        source = "--config" if args.config is not None else "--from-results"
        if positional:
            raise ValueError(f"give RECIPE DATASET or {source}, not both (the experiment names its dataset and "
                             "pipelines; override them with --set)")
        _refuse_recipe_flags(args, source)
        if args.config is not None:
            spec = experiment.load(args.config)
        else:
            stored = Path(args.from_results) / experiment.EXPERIMENT_TOML
            if not stored.is_file():
                raise ValueError(f"--from-results {args.from_results!r}: no {experiment.EXPERIMENT_TOML} in that "
                                 "folder (is it a `featurepipe benchmark` results folder?); give RECIPE DATASET to "
                                 "take only its estimate")
            spec = experiment.load(stored)
    else:
        if args.recipe is None or args.dataset is None:
            raise ValueError("featurepipe fit needs RECIPE DATASET, --config EXP.toml or --from-results DIR")
        if args.pipeline is not None:
            raise ValueError("--pipeline chooses a pipeline of --config or --from-results; with RECIPE DATASET the "
                             "pipeline is the recipe")
        from . import recipes

        recipes.get(args.recipe)
        spec = ExperimentSpec(dataset=DatasetSpec(), pipelines=[
            PipelineSpec(name=args.recipe, recipe=args.recipe, options=_recipe_options(args, args.recipe))])
    _apply_common_flags(spec, args)
    spec = experiment.validate(experiment.apply_overrides(spec, args.overrides))
    if args.pipeline is not None:
        name = spec.pipeline(args.pipeline).name
    elif len(spec.pipelines) == 1:
        name = spec.pipelines[0].name
    elif from_folder:
        from .benchmark import BenchmarkResult

        result = BenchmarkResult.load(args.from_results)
        name = result.ranking(spec.rank_by)[0]
    else:
        raise ValueError(f"the experiment has {len(spec.pipelines)} pipelines "
                         f"({', '.join(p.name for p in spec.pipelines)}): choose one with --pipeline NAME")
    return spec, name


def run_fit(args):
    """``featurepipe fit``: fit, save, and list the dataset files that were left out."""
    from . import experiment
    from .card import build_card, cv_estimate, estimate_from_results, write_card
    from .models import save_model

    spec, name = fit_spec(args)
    dataset = experiment.load_data(spec.dataset)
    if dataset.skipped:
        print(f"featurepipe fit: {len(dataset.skipped)} files left out of the training set:", file=sys.stderr)
        for path, reason in dataset.skipped:
            print(f"  {path}: {reason}", file=sys.stderr)
    start = time.perf_counter()
    estimate = None
    if args.from_results is not None:  # checked before the fit: a mismatch fails fast
        chosen = spec.pipeline(name)
        estimate = estimate_from_results(args.from_results, name, dataset=dataset,
                                         estimator=experiment.build_pipeline(spec, chosen),
                                         tuned=experiment.pipeline_grid(spec, chosen) is not None)
    model = experiment.fit(spec, name, dataset=dataset,
                           progress=lambda text: print(f"featurepipe fit: {text}", file=sys.stderr))
    if args.cv is not None:
        print(f"featurepipe fit: cross-validating {name} ({args.cv} grouped folds) for the model card",
              file=sys.stderr)
        estimate = cv_estimate(model.estimator, dataset, n_splits=args.cv, random_state=spec.cv.seed, name=name)
    fmt = _format_of(args.output, args.format)
    path = save_model(model, args.output, fmt)
    card_md, _ = write_card(build_card(model, dataset, model_path=path, source=spec.dataset.path or "demo",
                                       estimate=estimate), path)
    contract = model.contract_
    print(f"fitted {name} on {len(dataset)} images ({', '.join(map(str, dataset.classes))}) in "
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
