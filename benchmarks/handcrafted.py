"""Speed of the handcrafted feature families against scikit-image, mahotas and pyradiomics.

Measured in one run, on the same images and masks, on one core:

* real images from ``../shared/data/busi`` (benign and malignant, with their
  lesion masks), resized to ``--size`` (default 224×224; image INTER_AREA,
  mask nearest); generated textures with elliptical masks when the folder
  is absent (or with ``--synthetic``);
* each family is timed over all images, best of ``--repeats`` passes, and
  reported in ms/image with the ratio ``reference / ours`` (> 1: ours is
  faster);
* thread pools are limited to one thread (environment variables set before
  NumPy is imported, OpenCV and SimpleITK told so too), and time is the
  process's CPU time by default (``--clock wall`` for elapsed time): on a
  shared machine elapsed time also counts the time other processes hold the
  cores, while for single-threaded code on an idle machine the two agree.

Goals (issue 3): the default handcrafted bank (first-order, GLCM, LBP, HOG,
curvelet) ≤ 25 ms per 224×224 image;
each family ≥ 3× faster than the equivalent pyradiomics class and no slower
than scikit-image for the same output; GLCM at 256 levels ≥ 3× faster than
``graycomatrix`` + ``graycoprops``.

Run ``python benchmarks/handcrafted.py`` (``--help`` for options).
``--tune-malloc`` sets glibc's mmap/trim thresholds (``mallopt``) before
measuring: on machines where page faults are expensive (some VMs), NumPy
temporaries of a few hundred kB are re-faulted on every call and dominate
the run time of every library alike; the option shows the numbers without
that effect.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
             "VECLIB_MAXIMUM_THREADS", "BLIS_NUM_THREADS"):
    os.environ[_var] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import ctypes  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from featurepipe import Sample  # noqa: E402
from featurepipe.features.bank import DEFAULT_FAMILIES, default_handcrafted_bank  # noqa: E402
from featurepipe.features.firstorder import first_order_features  # noqa: E402
from featurepipe.features.glcm import glcm_features  # noqa: E402
from featurepipe.features.hog import hog_features  # noqa: E402
from featurepipe.features.lbp import lbp_features  # noqa: E402
from featurepipe.io import read_image, read_mask  # noqa: E402

ANGLES = [0.0, np.pi / 4, np.pi / 2, 3 * np.pi / 4]
SK_PROPS = ("contrast", "dissimilarity", "homogeneity", "energy", "correlation", "ASM", "mean", "variance", "entropy")
# the pyradiomics GLCM features that are ours too (the same quantities; MCC, which needs an
# eigen-decomposition per matrix and which we do not compute, is left out)
RADIOMICS_GLCM = ("JointEnergy", "Contrast", "DifferenceAverage", "Idm", "Correlation", "JointAverage", "SumSquares",
                  "JointEntropy", "SumAverage", "ClusterTendency", "SumEntropy", "DifferenceVariance",
                  "DifferenceEntropy", "Imc1", "Imc2")


# ----------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------
def busi_images(root, n, size):
    """(uint8 image, bool mask) pairs: the first n/2 benign and n/2 malignant BUSI images with masks."""
    out = []
    for cls in ("benign", "malignant"):
        folder = root / cls
        paths = sorted(folder.glob(f"{cls} (*).png"), key=lambda p: int(p.stem.split("(")[1].rstrip(")")))
        paths = [p for p in paths if "_mask" not in p.name]
        for path in paths:
            if len([o for o in out if o[2] == cls]) >= (n + 1) // 2:
                break
            mask = read_mask(path.with_name(f"{path.stem}_mask.png"))
            if not mask.any():
                continue
            image = read_image(path, mode="gray")
            out.append((image, mask, cls))
    return [_resize(image, mask, size) for image, mask, _ in out[:n]]


def synthetic_images(n, size, seed=0):
    """Smooth random textures with a brighter elliptical 'lesion' and its mask."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    out = []
    for _ in range(n):
        noise = cv2.GaussianBlur(rng.random((size, size)).astype(np.float32), (0, 0), 2.0)
        cy, cx = rng.uniform(0.3, 0.7, 2) * size
        ry, rx = rng.uniform(0.1, 0.25, 2) * size
        mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        image = np.clip((noise - noise.min()) / (np.ptp(noise) + 1e-9) * 0.7 + 0.25 * mask, 0, 1)
        image = (np.round(image * 255) / 255).astype(np.float32)
        out.append((image, mask))
    return out


def _resize(image, mask, size):
    if image.shape == (size, size):
        return image, mask
    small = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    small = (np.round(small * 255) / 255).astype(np.float32)  # stay on the 8-bit grid of the source
    small_mask = cv2.resize(mask.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST).astype(bool)
    return small, small_mask


# ----------------------------------------------------------------------------------------------
# timing
# ----------------------------------------------------------------------------------------------
CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}
CLOCK = CLOCKS["cpu"]


def ms_per_image(func, items, repeats):
    """Best-of-``repeats`` time of one pass of ``func`` over ``items``, in ms per item."""
    for item in items[:2]:  # warm-up (imports, caches, lazy initialisation)
        func(item)
    best = np.inf
    for _ in range(repeats):
        start = CLOCK()
        for item in items:
            func(item)
        best = min(best, CLOCK() - start)
    return best / len(items) * 1e3


def tune_malloc():
    """Keep freed memory in the process (glibc): no page faults for recycled temporaries."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    ok = libc.mallopt(m_mmap_threshold, 256 * 1024 * 1024) == 1
    ok &= libc.mallopt(m_trim_threshold, 1024 * 1024 * 1024) == 1
    return bool(ok)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "busi")
    parser.add_argument("-n", "--images", type=int, default=20, help="number of images (default 20)")
    parser.add_argument("--size", type=int, default=224, help="square image side in pixels (default 224)")
    parser.add_argument("--repeats", type=int, default=3, help="passes per measurement, best kept (default 3)")
    parser.add_argument("--synthetic", action="store_true", help="use generated images even if BUSI is present")
    parser.add_argument("--tune-malloc", action="store_true", help="set glibc mallopt thresholds first")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="cpu",
                        help="cpu: CPU time of this process (default; robust on a shared machine, and equal to wall "
                             "time on an idle one since everything runs on one thread); wall: elapsed time")
    parser.add_argument("--skip", default="", help="comma-separated references to skip: skimage,mahotas,pyradiomics")
    args = parser.parse_args(argv)

    global CLOCK
    CLOCK = CLOCKS[args.clock]
    cv2.setNumThreads(1)
    warnings.filterwarnings("ignore")
    tuned = tune_malloc() if args.tune_malloc else False
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}

    if not args.synthetic and args.data.is_dir():
        data = busi_images(args.data, args.images, args.size)
        source = f"BUSI ({args.data}), benign+malignant with lesion masks"
    else:
        data = synthetic_images(args.images, args.size)
        source = "generated textures with elliptical masks"
    print(f"images: {len(data)} x {args.size}x{args.size} from {source}")
    print(f"single thread; {args.clock} clock; best of {args.repeats} passes; malloc tuned: {tuned}")
    mask_frac = np.mean([m.mean() for _, m in data])
    print(f"mean mask area: {100 * mask_frac:.1f}% of the image\n")

    images8 = [np.round(img * 255).astype(np.uint8) for img, _ in data]
    rows = []  # (family, what ours computes, ours ms, reference name, reference ms, goal ratio)

    def add(family, ours_desc, ours_ms, ref_name, ref_ms, goal):
        rows.append((family, ours_desc, ours_ms, ref_name, ref_ms, goal))

    # -- ours ---------------------------------------------------------------------------------
    t_fo_mask = ms_per_image(lambda d: first_order_features(d[0], d[1]), data, args.repeats)
    t_glcm256 = ms_per_image(lambda d: glcm_features(d[0], levels=256, aggregate="none", log_base=np.e), data,
                             args.repeats)
    t_glcm64 = ms_per_image(lambda d: glcm_features(d[0], levels=64, aggregate="none", log_base=np.e), data,
                            args.repeats)
    t_glcm64_mask = ms_per_image(lambda d: glcm_features(d[0], d[1], levels=64, aggregate="mean"), data, args.repeats)
    t_glcm256_mr = ms_per_image(lambda d: glcm_features(d[0], levels=256), data, args.repeats)
    t_glcm64_mr = ms_per_image(lambda d: glcm_features(d[0], levels=64), data, args.repeats)
    t_lbp8 = ms_per_image(lambda d: lbp_features(d[0], scales=((8, 1),)), data, args.repeats)
    t_lbp16 = ms_per_image(lambda d: lbp_features(d[0], scales=((16, 2),)), data, args.repeats)
    t_hog = ms_per_image(lambda d: hog_features(d[0]), data, args.repeats)

    # -- scikit-image ---------------------------------------------------------------------------
    if "skimage" not in skip:
        from skimage.feature import graycomatrix, graycoprops, hog, local_binary_pattern
        from skimage.transform import resize

        def sk_glcm(img8, levels):
            q = img8 if levels == 256 else img8 >> int(8 - np.log2(levels))
            P = graycomatrix(q, [1], ANGLES, levels=levels, symmetric=True, normed=True)
            return [graycoprops(P, prop) for prop in SK_PROPS]

        def sk_lbp(img8, P, R):
            codes = local_binary_pattern(img8, P, R, "uniform")
            return np.histogram(codes, bins=P + 2, range=(0, P + 2))[0] / codes.size

        def sk_hog(img):
            return hog(resize(img, (128, 128), anti_aliasing=True), orientations=9, pixels_per_cell=(16, 16),
                       cells_per_block=(2, 2), block_norm="L2-Hys")

        add("GLCM 256 levels", "16 features x 4 angles", t_glcm256, "skimage graycomatrix+graycoprops (9 props)",
            ms_per_image(lambda im: sk_glcm(im, 256), images8, args.repeats), 3.0)
        add("GLCM 64 levels", "16 features x 4 angles", t_glcm64, "skimage graycomatrix+graycoprops (9 props)",
            ms_per_image(lambda im: sk_glcm(im, 64), images8, args.repeats), 1.0)
        add("LBP P=8 R=1 uniform", "normalised histogram", t_lbp8, "skimage local_binary_pattern + histogram",
            ms_per_image(lambda im: sk_lbp(im, 8, 1), images8, args.repeats), 1.0)
        add("LBP P=16 R=2 uniform", "normalised histogram", t_lbp16, "skimage local_binary_pattern + histogram",
            ms_per_image(lambda im: sk_lbp(im, 16, 2), images8, args.repeats), 1.0)
        add("HOG 128x128", "resize + hog (1764 values)", t_hog, "skimage resize(anti_aliasing) + hog",
            ms_per_image(lambda d: sk_hog(d[0]), data, args.repeats), 1.0)

    # -- mahotas ------------------------------------------------------------------------------------
    if "mahotas" not in skip:
        try:
            import mahotas
        except ImportError:
            print("mahotas not installed: skipped")
        else:
            add("GLCM 256 levels, mean+range", "16 features, mean+range", t_glcm256_mr,
                "mahotas haralick (13, mean+ptp)",
                ms_per_image(lambda im: mahotas.features.haralick(im, return_mean_ptp=True), images8, args.repeats),
                None)
            add("GLCM 64 levels, mean+range", "16 features, mean+range", t_glcm64_mr,
                "mahotas haralick (13, mean+ptp)",
                ms_per_image(lambda im: mahotas.features.haralick(im >> 2, return_mean_ptp=True), images8,
                             args.repeats), None)

    # -- pyradiomics ------------------------------------------------------------------------------
    if "pyradiomics" not in skip:
        try:
            import radiomics
            import SimpleITK as sitk
            from radiomics import firstorder as rfo
            from radiomics import glcm as rglcm
        except ImportError:
            print("pyradiomics (pyradiomics-bhklab) / SimpleITK not installed: skipped")
        else:
            radiomics.setVerbosity(logging.ERROR)
            sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
            itk = [(sitk.GetImageFromArray(img.astype(np.float64)), sitk.GetImageFromArray(mask.astype(np.uint8)))
                   for img, mask in data]

            def py_firstorder(pair):
                ext = rfo.RadiomicsFirstOrder(pair[0], pair[1], binCount=64)
                ext.enableAllFeatures()
                return ext.execute()

            def py_glcm(pair):
                ext = rglcm.RadiomicsGLCM(pair[0], pair[1], binCount=64, symmetricalGLCM=True, distances=[1])
                for name in RADIOMICS_GLCM:
                    ext.enableFeatureByName(name)
                return ext.execute()

            add("first-order, masked", "27 statistics", t_fo_mask, "pyradiomics RadiomicsFirstOrder (19)",
                ms_per_image(py_firstorder, itk, args.repeats), 3.0)
            add("GLCM 64 levels, masked", "16 features, mean over 4 angles", t_glcm64_mask,
                "pyradiomics RadiomicsGLCM (15 same features)", ms_per_image(py_glcm, itk, args.repeats), 3.0)

    # -- the default bank ---------------------------------------------------------------------------
    samples = [Sample.from_array(img, mask=mask) for img, mask in data]
    banks = [
        ("default bank, masked", default_handcrafted_bank(cache=False)),
        ("default bank, whole image (use_mask=False)", default_handcrafted_bank(use_mask=False, cache=False)),
        ("default bank + shape, masked",
         default_handcrafted_bank(families=DEFAULT_FAMILIES + ("shape",), cache=False)),
    ]
    bank_rows = []
    for label, bank in banks:
        t_bank = ms_per_image(lambda s, bank=bank: bank.transform([s]), samples, args.repeats)
        bank_rows.append((label, len(bank.get_feature_names_out()), t_bank))
    members = {}
    for name, est in banks[0][1].transformer_list:
        members[name] = ms_per_image(lambda s, est=est: est.transform([s]), samples, args.repeats)
    members["hog, whole image"] = ms_per_image(lambda s: banks[1][1].named_transformers["hog"].transform([s]),
                                               samples, args.repeats)
    members["lbp, whole image"] = ms_per_image(lambda s: banks[1][1].named_transformers["lbp"].transform([s]),
                                               samples, args.repeats)

    print(f"{'family':30s} {'ours ms':>8s}  {'reference':45s} {'ref ms':>8s} {'ref/ours':>8s}  goal")
    for family, _, ours, ref_name, ref, goal in rows:
        ratio = ref / ours
        verdict = "" if goal is None else (f">= {goal:g}x: " + ("met" if ratio >= goal else "MISSED"))
        print(f"{family:30s} {ours:8.2f}  {ref_name:45s} {ref:8.2f} {ratio:7.1f}x  {verdict}")
    print()
    print(f"{'bank (FeatureBank.transform, one image per call, no cache)':62s} {'features':>8s} {'ms/image':>9s}  "
          "goal <= 25 ms")
    for label, n_features, t_bank in bank_rows:
        print(f"{label:62s} {n_features:8d} {t_bank:9.2f}  {'met' if t_bank <= 25 else 'MISSED'}")
    print("members of the masked default bank (ms/image): "
          + ", ".join(f"{k} {v:.2f}" for k, v in members.items()))


if __name__ == "__main__":
    main()
