"""Shared command-line handling of the example scripts (data path, output, recipes)."""

import argparse
import os
import sys
from pathlib import Path


def parse_args(description, env_var, default_recipes):
    """Arguments: the data root (argument or environment variable), recipes, folds, output folder."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("root", nargs="?", default=os.environ.get(env_var),
                        help=f"data root (default: ${env_var})")
    parser.add_argument("--recipes", default=",".join(default_recipes),
                        help="comma-separated recipe names (see `featurepipe recipes`)")
    parser.add_argument("--splits", type=int, default=5, help="outer folds")
    parser.add_argument("--repeats", type=int, default=1, help="repeats of the outer K-fold")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None, help="results folder (default: results/<script name>)")
    args = parser.parse_args()
    if not args.root or not Path(args.root).is_dir():
        sys.exit(f"error: give the data root as an argument or in ${env_var} (got {args.root!r})")
    args.recipes = [r.strip() for r in args.recipes.split(",") if r.strip()]
    args.output = args.output or str(Path("results") / Path(sys.argv[0]).stem)
    return args


def run(dataset, args, **make_options):
    """Benchmark ``args.recipes`` on ``dataset`` and print the summary table."""
    from featurepipe import recipes
    from featurepipe.benchmark import run_benchmark

    print(dataset)
    if dataset.skipped:
        print(f"{len(dataset.skipped)} files skipped:")
        for path, reason in dataset.skipped:
            print(f"  {path}: {reason}")
    pipelines = {name: recipes.make(name, random_state=args.seed, **make_options) for name in args.recipes}
    result = run_benchmark(dataset, pipelines,
                           cv={"n_splits": args.splits, "n_repeats": args.repeats, "random_state": args.seed},
                           output_dir=args.output)
    print((Path(args.output) / "summary.md").read_text())
    print(f"report: {args.output}")
    return result
