"""Fixed and per-image cost of a 3-recipe ``featurepipe benchmark`` on BUSI, before/after.

Issue 15 point 3 ("Cost today: ~16 s fixed + 79 ms per image"). For two
dataset sizes (default 100 and 400 BUSI images, the classes in BUSI's
proportions, copied with their mask files into a temporary BUSI-layout
folder) the whole command

    featurepipe benchmark DATA --recipes convnet_svm_linear,firstorder_glcm_svm,hog_svm

is timed as a fresh process (start-up, dataset loading, duplicate search,
features computed, 5-fold CV, report and plots), for this
checkout ("after") and for the code of git revision ``--before-ref``
("before", exported with ``git archive``), alternating before/after within
each round. "after" runs with ``--no-cache`` (no feature is read from a
cache) but keeps its converted CNN models (ONNX) between runs, as a user's
second dataset would: the one-time conversion is timed apart, in a warm-up
run. From the medians at the two sizes: per-image cost = slope,
fixed cost = intercept. The ratio before/after is printed for both and for
each size.

Run: ``python benchmarks/per_image_cost.py [--before-ref d6169e0] [--sizes 100 400] [--rounds 2]``.
A round at 400 images takes a few minutes on 2 cores.
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
RECIPES = "convnet_svm_linear,firstorder_glcm_svm,hog_svm"


def busi_subset(busi, folder, n_images):
    """Copy ``n_images`` BUSI images (with their masks), classes in BUSI's proportions, into ``folder``."""
    classes = sorted(p.name for p in busi.iterdir() if p.is_dir())
    per_class = {c: sorted((busi / c).glob(f"{c} (*).png"), key=lambda p: int(p.stem.split("(")[1].rstrip(")")))
                 for c in classes}
    total = sum(len(v) for v in per_class.values())
    for c, images in per_class.items():
        (folder / c).mkdir(parents=True)
        for image in images[: max(1, round(n_images * len(images) / total))]:
            shutil.copy2(image, folder / c / image.name)
            for mask in (busi / c).glob(f"{image.stem}_mask*.png"):
                shutil.copy2(mask, folder / c / mask.name)
    return sum(1 for _ in folder.glob("*/* (*).png"))


def timed_run(code_root, data, out, cache, extra):
    env = dict(os.environ, PYTHONPATH=str(code_root), FEATUREPIPE_CACHE=str(cache), TF_CPP_MIN_LOG_LEVEL="2")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "featurepipe", "benchmark", str(data), "--recipes", RECIPES,
                           "--output", str(out), *extra], env=env, capture_output=True, text=True,
                          cwd=tempfile.gettempdir())
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{code_root}: featurepipe benchmark failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "busi"), help="the BUSI folder")
    parser.add_argument("--before-ref", default="d6169e0", help="git revision of the 'before' code (default: 0.1.0)")
    parser.add_argument("--sizes", type=int, nargs=2, default=(100, 400), help="the two dataset sizes")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per size (median)")
    args = parser.parse_args(argv)
    busi = Path(args.data)
    if not busi.is_dir():
        raise SystemExit(f"BUSI folder not found: {busi} (pass --data)")
    with tempfile.TemporaryDirectory(prefix="featurepipe-cost-") as tmp:
        tmp = Path(tmp)
        before_root = tmp / "before"
        before_root.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.before_ref], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(before_root)], input=archive, check=True)
        codes = {"before": (before_root, []), "after": (ROOT, ["--no-cache"])}
        walls = {(name, n): [] for name in codes for n in args.sizes}
        counts = {}
        for n in args.sizes:
            counts[n] = busi_subset(busi, tmp / f"busi{n}", n)
        warm = timed_run(ROOT, tmp / f"busi{args.sizes[0]}", tmp / "out-warm-up", tmp / "cache-after", ["--no-cache"])
        print(f"  warm-up (after, converts the CNN once): {warm:.1f} s", flush=True)
        for r in range(args.rounds):
            for n in args.sizes:
                order = list(codes) if r % 2 == 0 else list(reversed(codes))
                for name in order:
                    code_root, extra = codes[name]
                    # before (0.1) has no disk cache; after keeps only its converted models here (--no-cache)
                    cache = tmp / f"cache-{name}"
                    seconds = timed_run(code_root, tmp / f"busi{n}", tmp / f"out-{name}-{n}-{r}", cache, extra)
                    walls[(name, n)].append(seconds)
                    print(f"  round {r + 1}: {name:6s} {counts[n]:4d} images {seconds:7.1f} s", flush=True)
    small, large = args.sizes
    print(f"\nfeaturepipe benchmark --recipes {RECIPES} (fresh process, features computed; after: --no-cache), "
          f"medians of {args.rounds} alternating rounds; before = {args.before_ref}, after = this checkout")
    print("| code | " + " | ".join(f"{counts[n]} images s" for n in args.sizes)
          + " | fixed s | per image ms |")
    print("|---|" + "---|" * (len(args.sizes) + 2))
    fits = {}
    for name in codes:
        med = {n: statistics.median(walls[(name, n)]) for n in args.sizes}
        slope = (med[large] - med[small]) / (counts[large] - counts[small])
        fixed = med[small] - slope * counts[small]
        fits[name] = (fixed, slope, med)
        print(f"| {name} | " + " | ".join(f"{med[n]:.1f}" for n in args.sizes)
              + f" | {fixed:.1f} | {1000 * slope:.1f} |")
    (bf, bs, bm), (af, as_, am) = fits["before"], fits["after"]
    print(f"ratios before/after: {small} images {bm[small] / am[small]:.2f}x, {large} images "
          f"{bm[large] / am[large]:.2f}x, per image {bs / as_:.2f}x, fixed {bf / af:.2f}x")


if __name__ == "__main__":
    main()
