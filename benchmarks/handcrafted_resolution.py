"""Per-image cost of the handcrafted features against image size (issue 15, section 3).

What is timed, with the parameters the package itself uses (nothing re-stated
here): each family of :data:`featurepipe.features.bank.FAMILIES` at its family
defaults, :func:`featurepipe.features.default_handcrafted_bank` (whole image),
and the feature step of the handcrafted recipes built by
:func:`featurepipe.recipes.make` (``firstorder_glcm_svm``, ``lbp_svm``, and the
handcrafted members of ``hybrid_svm``: its CNN member is dropped, the CNN is
not built).

Images: synthetic gray textures (smoothed noise plus Gaussian blobs, float32 in
[0, 1]; the mask, read by shape features only, is the brighter part) generated
at the largest size and shrunk to the others with ``INTER_AREA``, so every size
shows the same scene. Each step is timed on
``--images`` images per size with the feature cache off, in ``--rounds`` rounds
that alternate the sizes (a load spike on a shared machine then hits every
size alike); the table shows the median over rounds of elapsed milliseconds
per image, and the ratio of the largest to the smallest size's cost.

Run ``python benchmarks/handcrafted_resolution.py`` (about 1–2 minutes on
2 cores; ``--help`` for options). Run it with ``PYTHONPATH`` on an older
checkout to measure that code: the script sets no parameter of its own.
"""

from __future__ import annotations

import argparse
import time

import cv2
import numpy as np

from featurepipe import recipes
from featurepipe.base import set_feature_cache
from featurepipe.features import default_handcrafted_bank
from featurepipe.features.bank import FAMILIES
from featurepipe.sample import Sample


def synthetic_images(n, side, seed=0):
    """``n`` gray float32 images ``(side, side)`` in [0, 1]: smoothed noise plus a few Gaussian blobs."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:side, 0:side].astype(np.float32) / side
    images = []
    for _ in range(n):
        noise = cv2.GaussianBlur(rng.random((side, side), dtype=np.float32), (0, 0), side / 256)
        image = 0.5 * (noise - noise.min()) / max(float(np.ptp(noise)), 1e-6)
        for _ in range(4):
            r0, c0, width = rng.random(), rng.random(), 0.03 + 0.1 * rng.random()
            image += 0.4 * rng.random() * np.exp(-((rows - r0) ** 2 + (cols - c0) ** 2) / (2 * width**2))
        images.append(np.clip(image, 0.0, 1.0).astype(np.float32))
    return images


def steps():
    """``{label: feature step}`` with the package's own parameters, feature cache off."""
    found = {f"family {name}": FAMILIES[name]() for name in FAMILIES.names()}
    found["default_handcrafted_bank"] = default_handcrafted_bank(use_mask=False)
    for name in ("firstorder_glcm_svm", "lbp_svm"):
        found[f"recipe {name}"] = recipes.make(name).named_steps["features"]
    hybrid = recipes.make("hybrid_svm").named_steps["features"].set_params(cnn="drop")
    found["recipe hybrid_svm (handcrafted part)"] = hybrid
    return {label: set_feature_cache(step, False) for label, step in found.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 512, 1024], help="image sides in pixels")
    parser.add_argument("--images", type=int, default=2, help="images per size and round (default 2)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    args = parser.parse_args(argv)

    sizes = sorted(args.sizes)
    largest = synthetic_images(args.images, sizes[-1])
    images = {}
    for side in sizes:
        shrunk = [cv2.resize(im, (side, side), interpolation=cv2.INTER_AREA) for im in largest]
        # the mask (read only by shape features: every other step runs on the whole image) is the
        # brighter part of the image, as an Otsu region would be
        images[side] = [Sample.from_array(im, im > np.median(im) + 0.5 * im.std()) for im in shrunk]
    timed = steps()
    for step in timed.values():  # warm-up: imports, lookup tables, name caches
        step.fit_transform(images[sizes[0]][:1])
    times = {(label, side): [] for label in timed for side in sizes}
    for round_ in range(args.rounds):
        order = sizes if round_ % 2 == 0 else sizes[::-1]
        for label, step in timed.items():
            for side in order:
                start = time.perf_counter()
                step.transform(images[side])
                times[label, side].append((time.perf_counter() - start) / len(images[side]) * 1e3)

    header = "| step | " + " | ".join(f"{s}² ms/image" for s in sizes) + f" | {sizes[-1]}/{sizes[0]} |"
    print(header)
    print("|" + "---|" * (len(sizes) + 2))
    for label in timed:
        medians = [float(np.median(times[label, side])) for side in sizes]
        cells = " | ".join(f"{m:.1f}" for m in medians)
        print(f"| {label} | {cells} | {medians[-1] / medians[0]:.1f}× |")


if __name__ == "__main__":
    main()
