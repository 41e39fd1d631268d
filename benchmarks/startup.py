"""Start-up cost of the command line: ``featurepipe benchmark`` on 100 images with a warm cache, and ``--help``.

Prints, as ratios before/after measured in alternating rounds in this one
script (the machine may be loaded, so absolute seconds mean little):

* ``featurepipe benchmark DATA --recipes convnet_svm_linear,glcm_svm,hog_svm``
  on 100 BUSI images (50 benign, 25 malignant, 25 normal from
  ``../shared/data/busi``, or ``--data``), whole process wall time, after one
  warm-up run has filled the feature cache. Each round writes a fresh report
  folder (a reused one would resume its finished folds).
* ``featurepipe --help``: wall time and the number of modules imported
  (``python -X importtime``).

The reference ("before"):

* default: the same code in the way the command line ran before it had a
  disk cache and lazy imports: ``--no-cache`` (every run recomputes the CNN
  features, so it imports TensorFlow and builds the network, as each run
  did), and for ``--help`` scikit-learn imported first (the package
  ``__init__`` imported it);
* ``--before-ref REF``: the real code of git revision ``REF`` (e.g. the
  commit before this change), exported with ``git archive`` to a temporary
  folder and run with the same arguments (``--cache`` omitted there).

Run: ``python benchmarks/startup.py [--data BUSI_DIR] [--rounds 3] [--before-ref REF]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPES = "convnet_svm_linear,glcm_svm,hog_svm"
COUNTS = {"benign": 50, "malignant": 25, "normal": 25}


def _busi_subset(busi, target):
    """Copy the first images (and their masks) of each class into ``target``; returns it."""
    for label, count in COUNTS.items():
        (target / label).mkdir(parents=True)
        for i in range(1, count + 1):
            for path in (busi / label).glob(f"{label} ({i})*.png"):
                shutil.copy2(path, target / label / path.name)
    return target


def _timed(argv, code_root, env):
    """Wall seconds of ``python -m featurepipe argv`` with ``code_root`` first on the path."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, *argv], cwd=code_root, capture_output=True, text=True,
                          env={**env, "PYTHONPATH": str(code_root)})
    elapsed = time.perf_counter() - start
    if proc.returncode not in (0,):
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(argv)}\n{proc.stderr[-2000:]}")
    return elapsed, proc


def _imports(argv, code_root, env):
    """Number of modules a command imports (lines of ``-X importtime``)."""
    _, proc = _timed(["-X", "importtime", *argv], code_root, env)
    return sum(1 for line in proc.stderr.splitlines() if line.startswith("import time:")) - 1


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "busi"),
                        help="BUSI folder (benign/, malignant/, normal/)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating before/after rounds (default 3)")
    parser.add_argument("--before-ref", default=None,
                        help="git revision whose code is the reference (default: this code with --no-cache)")
    args = parser.parse_args(argv)
    busi = Path(args.data)
    if not (busi / "benign").is_dir():
        raise SystemExit(f"BUSI not found at {busi} (pass --data)")

    with tempfile.TemporaryDirectory(prefix="featurepipe-startup-") as tmp:
        tmp = Path(tmp)
        data = _busi_subset(busi, tmp / "busi100")
        env = {**os.environ, "FEATUREPIPE_CACHE": str(tmp / "cache")}
        after_root = ROOT
        bench = ["-m", "featurepipe", "benchmark", str(data), "--recipes", RECIPES, "--splits", "5", "--no-plots"]
        if args.before_ref:
            before_root = tmp / "before"
            before_root.mkdir()
            archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.before_ref], check=True,
                                     capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", str(before_root)], input=archive, check=True)
            before_bench, before_help = bench, ["-m", "featurepipe", "--help"]
            label = f"git {args.before_ref}"
        else:
            before_root = ROOT
            before_bench = [*bench, "--no-cache"]
            before_help = ["-c", "import sklearn.base, sys; from featurepipe.cli import main; sys.exit(main())",
                           "--help"]
            label = "this code, --no-cache (and scikit-learn imported first for --help)"
        after_help = ["-m", "featurepipe", "--help"]

        print(f"featurepipe benchmark on {sum(COUNTS.values())} BUSI images, recipes {RECIPES}, 5 folds; "
              f"before = {label}; after = this code with a warm disk cache", flush=True)
        _timed([*bench, "--output", str(tmp / "warm-up")], after_root, env)  # fills the cache
        times = {"before": [], "after": [], "help before": [], "help after": []}
        for r in range(args.rounds):
            order = [("before", before_root, before_bench), ("after", after_root, bench)]
            for name, root, cmd in order if r % 2 == 0 else order[::-1]:
                seconds, _ = _timed([*cmd, "--output", str(tmp / f"{name}-{r}")], root, env)
                times[name].append(seconds)
            for name, root, cmd in (("help before", before_root, before_help), ("help after", after_root, after_help)):
                times[name].append(_timed(cmd, root, env)[0])
            print(f"round {r + 1}: benchmark before/after = {times['before'][-1] / times['after'][-1]:.2f}, "
                  f"--help before/after = {times['help before'][-1] / times['help after'][-1]:.2f}", flush=True)
        ratio = statistics.median(b / a for b, a in zip(times["before"], times["after"]))
        help_ratio = statistics.median(b / a for b, a in zip(times["help before"], times["help after"]))
        print(f"\nbenchmark start-up + run, before/after (median of {args.rounds} rounds): {ratio:.2f}x")
        print(f"--help, before/after (median): {help_ratio:.2f}x; modules imported by --help: "
              f"before {_imports(before_help, before_root, env)}, after {_imports(after_help, after_root, env)}")
        tf_check = ("import sys; from featurepipe.cli import main; main(sys.argv[1:]); "
                    "print('tensorflow imported:', 'tensorflow' in sys.modules, file=sys.stderr)")
        _, proc = _timed(["-c", tf_check, *bench[2:], "--output", str(tmp / "tf-check")], after_root, env)
        print(f"after, warm cache: {proc.stderr.strip().splitlines()[-1]}")


if __name__ == "__main__":
    main()
