"""Shape features of masks: hand-computed shapes, scikit-image regionprops, OpenCV Hu moments, policies."""

import pickle
import re

import cv2
import numpy as np
import pytest
from skimage.draw import disk, ellipse, polygon
from skimage.measure import label, perimeter, perimeter_crofton, regionprops
from skimage.morphology import convex_hull_image
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.ensemble import RandomForestClassifier

from featurepipe import Sample
from featurepipe.features.shape import SHAPE_FEATURE_NAMES, ShapeFeatures, shape_features

NAMES = list(SHAPE_FEATURE_NAMES)


def _as_dict(values):
    return dict(zip(NAMES, values))


def _disk(radius, shape=None, centre=None):
    size = 2 * radius + 11
    shape = shape or (size, size)
    centre = centre or (shape[0] // 2, shape[1] // 2)
    mask = np.zeros(shape, bool)
    rr, cc = disk(centre, radius, shape=shape)
    mask[rr, cc] = True
    return mask


# --------------------------------------------------------------------------- hand-computed shapes
@pytest.mark.parametrize("radius", [10, 20, 40])
def test_disk(radius):
    mask = _disk(radius)
    f = _as_dict(shape_features(mask)[0])
    raw = _as_dict(shape_features(mask, hu_log=False)[0])
    assert f["shape_area"] == mask.sum()
    np.testing.assert_allclose(f["shape_area"], np.pi * radius**2, rtol=0.03)
    # Crofton perimeter of a digital disk of radius >= 10: circularity within 2 % of 1.
    np.testing.assert_allclose(f["shape_circularity"], 1.0, atol=0.02)
    np.testing.assert_allclose(f["shape_perimeter"], 2 * np.pi * radius, rtol=0.02)
    np.testing.assert_allclose(f["shape_compactness"], 4 * np.pi, rtol=0.04)
    # The digital disk is symmetric under 90-degree rotation: equal second moments, no covariance.
    assert f["shape_eccentricity"] == pytest.approx(0.0, abs=1e-9)
    assert f["shape_axis_ratio"] == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(f["shape_major_axis_length"], 2 * radius, rtol=0.02)
    # The pixel hull of a digital disk adds a thin rim (measured 0.974, 0.981, 0.987).
    assert 0.97 < f["shape_solidity"] < 1
    # Hu: h1 of a continuous disk is 1/(2 pi); all others vanish by symmetry.
    np.testing.assert_allclose(raw["shape_hu1"], 1 / (2 * np.pi), rtol=0.01)
    np.testing.assert_allclose([raw[f"shape_hu{i}"] for i in range(2, 8)], 0.0, atol=1e-12)


@pytest.mark.parametrize("w, h", [(30, 12), (7, 19), (25, 25)])
def test_rectangle(w, h):
    mask = np.zeros((h + 20, w + 13), bool)
    mask[7:7 + h, 5:5 + w] = True
    f = _as_dict(shape_features(mask, perimeter="contour")[0])
    raw = _as_dict(shape_features(mask, hu_log=False)[0])
    crofton = _as_dict(shape_features(mask)[0])
    assert f["shape_area"] == w * h
    assert f["shape_extent"] == 1.0  # exact: area / box area of a full rectangle, both integers
    assert f["shape_solidity"] == 1.0  # exact: area / hull area of a rectangle, both integers
    # Contour perimeter runs through the border pixel centres.
    assert f["shape_perimeter"] == pytest.approx(2 * (w - 1) + 2 * (h - 1))
    np.testing.assert_allclose(f["shape_circularity"], 4 * np.pi * w * h / (2 * (w - 1) + 2 * (h - 1)) ** 2)
    np.testing.assert_allclose(f["shape_compactness"], (2 * (w - 1) + 2 * (h - 1)) ** 2 / (w * h))
    # Axes: 4 * sqrt(variance of a discrete uniform on w values) = 4 sqrt((w^2 - 1) / 12).
    big, small = max(w, h), min(w, h)
    major, minor = 4 * np.sqrt((big**2 - 1) / 12), 4 * np.sqrt((small**2 - 1) / 12)
    np.testing.assert_allclose([f["shape_major_axis_length"], f["shape_minor_axis_length"]], [major, minor])
    np.testing.assert_allclose(f["shape_axis_ratio"], minor / major)
    np.testing.assert_allclose(f["shape_eccentricity"], np.sqrt(1 - minor**2 / major**2), atol=1e-12)
    # Hu: eta20 = (w^2-1)/(12 w h), eta02 = (h^2-1)/(12 w h), eta11 = 0, odd orders vanish.
    eta20, eta02 = (w**2 - 1) / (12 * w * h), (h**2 - 1) / (12 * w * h)
    np.testing.assert_allclose(raw["shape_hu1"], eta20 + eta02, rtol=1e-12)
    np.testing.assert_allclose(raw["shape_hu2"], (eta20 - eta02) ** 2, rtol=1e-9, atol=1e-18)
    np.testing.assert_allclose([raw[f"shape_hu{i}"] for i in range(3, 8)], 0.0, atol=1e-15)
    # Log scale: -sign(h) log10|h|, and exact zeros stay 0.
    np.testing.assert_allclose(crofton["shape_hu1"], -np.log10(eta20 + eta02), rtol=1e-12)
    assert [crofton[f"shape_hu{i}"] for i in range(3, 8)] == [0.0] * 5
    if w == h:
        assert crofton["shape_hu2"] == 0.0  # exact: zero by symmetry (cancelling integer moments)


# --------------------------------------------------------------------------- references
def _random_masks():
    rng = np.random.default_rng(0)
    masks = []
    for i in range(60):
        mask = np.zeros((70, 80), bool)
        kind = i % 4
        if kind == 0:
            rr, cc = ellipse(35, 40, rng.uniform(2, 30), rng.uniform(2, 35), shape=mask.shape,
                             rotation=rng.uniform(0, np.pi))
        elif kind == 1:
            n = rng.integers(3, 9)
            rr, cc = polygon(rng.uniform(2, 68, n), rng.uniform(2, 78, n), shape=mask.shape)
        elif kind == 2:  # a blob with a hole and a ragged edge
            rr, cc = disk((35, 40), rng.uniform(10, 30), shape=mask.shape)
        else:  # scattered points and small blobs: many components
            mask = rng.random((70, 80)) < 0.03
            mask[30:36, 30:41] = True
            rr, cc = [], []
        mask[rr, cc] = True
        if kind == 2:
            mask &= rng.random(mask.shape) < 0.97
            mask[33:37, 38:42] = False
        masks.append(mask)
    return masks


def _reference(mask, components, perimeter_method):
    if components == "union":
        props = regionprops(mask.astype(np.uint8))[0]
    else:
        regions = regionprops(label(mask, connectivity=2))
        props = max(regions, key=lambda r: (r.area, -r.label))  # ties: first label (raster order)
    image = props.image
    length = perimeter_crofton(image, 4) if perimeter_method == "crofton" else perimeter(image, 4)
    return {
        "shape_area": props.area,
        "shape_perimeter": length,
        "shape_eccentricity": props.eccentricity,
        "shape_solidity": props.solidity,
        "shape_extent": props.extent,
        "shape_major_axis_length": props.axis_major_length,
        "shape_minor_axis_length": props.axis_minor_length,
        "hu": np.asarray(props.moments_hu),
        "cv_hu": cv2.HuMoments(cv2.moments(image.astype(np.uint8), binaryImage=True)).ravel(),
        "convex": convex_hull_image(image).sum(),
    }


@pytest.mark.parametrize("components", ["largest", "union"])
@pytest.mark.parametrize("perimeter_method", ["crofton", "contour"])
def test_matches_regionprops_and_opencv(components, perimeter_method):
    for i, mask in enumerate(_random_masks()):
        values, _ = shape_features(mask, components=components, perimeter=perimeter_method, hu_log=False)
        f = _as_dict(values)
        ref = _reference(mask, components, perimeter_method)
        for key in ("shape_area", "shape_perimeter", "shape_extent", "shape_solidity"):
            np.testing.assert_allclose(f[key], ref[key], rtol=1e-12, err_msg=f"mask {i}: {key}")
        for key in ("shape_eccentricity", "shape_major_axis_length", "shape_minor_axis_length"):
            np.testing.assert_allclose(f[key], ref[key], rtol=1e-9, atol=1e-9, err_msg=f"mask {i}: {key}")
        hu = values[-7:]
        # Hu moments span many orders of magnitude; the absolute tolerance is relative to h1.
        tol = dict(rtol=1e-7, atol=1e-12 * abs(ref["hu"][0]), err_msg=f"mask {i}")
        np.testing.assert_allclose(hu, ref["cv_hu"], **tol)
        # scikit-image uses (row, col) coordinates, OpenCV and we (x = col, y = row): the
        # axis swap is a reflection, which flips the sign of the skew invariant h7 only.
        np.testing.assert_allclose(hu, ref["hu"] * [1, 1, 1, 1, 1, 1, -1], **tol)
        np.testing.assert_allclose(f["shape_area"] / f["shape_solidity"], ref["convex"], rtol=1e-12)
        logged, _ = shape_features(mask, components=components, perimeter=perimeter_method)
        expected = np.where(hu == 0, 0.0, -np.sign(hu) * np.log10(np.where(hu == 0, 1.0, np.abs(hu))))
        # log10 goes through NumPy's SIMD kernels, which differ per CPU in the last bit: a few ulp.
        np.testing.assert_allclose(logged[-7:], expected, rtol=1e-14, atol=0)


def test_invariance_to_translation_and_90_degree_rotation():
    mask = _random_masks()[1]
    base, _ = shape_features(mask)
    moved, _ = shape_features(np.roll(np.pad(mask, 9), (5, -3), axis=(0, 1)))
    np.testing.assert_allclose(moved, base, rtol=1e-12)
    for k in (1, 2, 3):
        np.testing.assert_allclose(shape_features(np.rot90(mask, k))[0], base, rtol=1e-9, atol=1e-12)
    # A reflection flips the sign of h7 (skew invariant) and keeps the rest.
    mirrored, _ = shape_features(mask[:, ::-1], hu_log=False)
    raw, _ = shape_features(mask, hu_log=False)
    np.testing.assert_allclose(mirrored[:-1], raw[:-1], rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(mirrored[-1], -raw[-1], rtol=1e-7)


# --------------------------------------------------------------------------- policies
def test_components_policy_largest_and_union():
    small, big = _disk(5, shape=(60, 60), centre=(10, 10)), _disk(12, shape=(60, 60), centre=(40, 40))
    both = small | big
    # exact: the same function on the same input (one code path, one process)
    np.testing.assert_array_equal(shape_features(both)[0], shape_features(big)[0])
    union = _as_dict(shape_features(both, components="union")[0])
    assert union["shape_area"] == both.sum()  # exact: pixel counts
    np.testing.assert_allclose(union["shape_perimeter"],
                               perimeter_crofton(small, 4) + perimeter_crofton(big, 4))
    # Two equal squares: "largest" takes the first in raster order.
    squares = np.zeros((40, 40), bool)
    squares[25:31, 2:8] = True  # lower-left
    squares[3:9, 30:36] = True  # upper-right: first in raster order
    only_first = np.zeros_like(squares)
    only_first[3:9, 30:36] = True
    # exact: the same function on the same input (one code path, one process)
    np.testing.assert_array_equal(shape_features(squares)[0], shape_features(only_first)[0])
    # Diagonal neighbours belong to one component (8-connectivity).
    diagonal = np.eye(12, dtype=bool) | np.eye(12, k=1, dtype=bool)
    assert _as_dict(shape_features(diagonal)[0])["shape_area"] == diagonal.sum()  # exact: pixel counts


def test_empty_missing_and_degenerate_masks():
    with pytest.raises(ValueError, match="the mask is empty.*empty_mask='nan'"):
        shape_features(np.zeros((10, 10), bool))
    with pytest.raises(ValueError, match="the image has no mask"):
        shape_features(None)
    one = np.zeros((10, 10), bool)
    one[4, 4] = True
    with pytest.raises(ValueError, match="the region has 1 pixel"):
        shape_features(one)
    for mask in (None, np.zeros((10, 10), bool), one):
        values, names = shape_features(mask, empty_mask="nan")
        assert names == NAMES and values.shape == (17,) and np.all(np.isnan(values))
    with pytest.raises(ValueError, match=r"mask must be a 2-D \(H, W\) array; got shape \(2, 3, 3\)"):
        shape_features(np.ones((2, 3, 3)))
    # A 0/255 uint8 mask is read as != 0.
    u8 = _disk(10).astype(np.uint8) * 255
    # exact: the same function on the same input (one code path, one process)
    np.testing.assert_array_equal(shape_features(u8)[0], shape_features(_disk(10))[0])


@pytest.mark.parametrize(
    "params, match",
    [
        (dict(perimeter="chain"),
         r"'perimeter' parameter of ShapeFeatures must be a str among \{(?=.*'crofton')(?=.*'contour').*\}\. "
         r"Got 'chain'"),
        (dict(components="all"),
         r"'components' parameter of ShapeFeatures must be a str among \{(?=.*'largest')(?=.*'union').*\}\. Got 'all'"),
        (dict(empty_mask=0.0),
         r"'empty_mask' parameter of ShapeFeatures must be a str among \{(?=.*'error')(?=.*'nan').*\}\. Got 0\.0"),
        (dict(hu_log=1), r"'hu_log' parameter of ShapeFeatures must be an instance of 'bool'.*\. Got 1 instead"),
    ],
)
def test_bad_parameters_are_named(params, match):
    X = [Sample.from_array(np.zeros((20, 20), np.float32), mask=_disk(5, shape=(20, 20)))]
    with pytest.raises(ValueError, match=match):
        ShapeFeatures(**params).fit_transform(X)


# --------------------------------------------------------------------------- estimator
def _two_class_masks(n_per_class, rng):
    """Class 0: near-round blobs; class 1: elongated ellipses; images are noise (ignored)."""
    X, y = [], []
    for cls in (0, 1):
        for _ in range(n_per_class):
            mask = np.zeros((64, 64), bool)
            a = rng.uniform(12, 20)
            b = a * (rng.uniform(0.85, 1.0) if cls == 0 else rng.uniform(0.3, 0.5))
            rr, cc = ellipse(32, 32, b, a, shape=mask.shape, rotation=rng.uniform(0, np.pi))
            mask[rr, cc] = True
            image = rng.random((64, 64)).astype(np.float32)
            X.append(Sample.from_array(image, mask=mask, label=cls))
            y.append(cls)
    return np.array(X, dtype=object), np.array(y)


def test_estimator_uses_only_the_mask():
    X, _ = _two_class_masks(3, np.random.default_rng(1))
    est = ShapeFeatures(cache=False)
    out = est.fit_transform(X)
    # exact: the same function on the same input (one code path, one process)
    np.testing.assert_array_equal(out, np.vstack([shape_features(s.mask)[0] for s in X]))
    other = [Sample.from_array(np.zeros((64, 64), np.float32), mask=s.mask) for s in X]
    # exact: the same function on the same input (one code path, one process)
    np.testing.assert_array_equal(ShapeFeatures().fit_transform(other), out)
    assert list(est.get_feature_names_out()) == NAMES
    with pytest.raises(ValueError, match="ShapeFeatures on sample .*the mask is empty"):
        ShapeFeatures().fit_transform([Sample.from_array(np.zeros((8, 8), np.float32),
                                                         mask=np.zeros((8, 8), bool))])


def test_clone_params_pickle_and_grid_search():
    X, y = _two_class_masks(8, np.random.default_rng(2))
    est = ShapeFeatures(perimeter="contour", empty_mask="nan")
    assert est.get_params()["perimeter"] == "contour"
    twin = clone(est).set_params(perimeter="crofton")
    assert (twin.perimeter, est.perimeter, twin.empty_mask) == ("crofton", "contour", "nan")
    restored = pickle.loads(pickle.dumps(est))
    # exact: pickle/clone round trip of the same fitted object
    np.testing.assert_array_equal(restored.fit_transform(X), est.fit_transform(X))

    pipe = make_pipeline(ShapeFeatures(), RandomForestClassifier(n_estimators=25, random_state=0))
    search = GridSearchCV(pipe, {"shapefeatures__perimeter": ["crofton", "contour"]},
                          cv=StratifiedKFold(4, shuffle=True, random_state=0))
    search.fit(X, y)
    assert list(search.cv_results_["param_shapefeatures__perimeter"]) == ["crofton", "contour"]
    # Round vs elongated is separable by eccentricity / axis ratio whatever the perimeter estimator.
    # exact: zero or one by construction
    np.testing.assert_array_equal(search.cv_results_["mean_test_score"], [1.0, 1.0])
    # exact: predicted class labels
    np.testing.assert_array_equal(search.predict(X), y)


# --------------------------------------------------------------------------- real masks
def test_busi_lesion_masks_match_regionprops(shared_data):
    root = shared_data / "busi"
    images = sorted(p for p in (root / "benign").glob("*.png") if "_mask" not in p.name)[:12]
    images += sorted(p for p in (root / "malignant").glob("*.png") if "_mask" not in p.name)[:12]
    # Images with several lesion masks (merged by Sample.from_path) exercise the components policy.
    several = sorted(p for p in (root / "benign").glob("*_mask_1.png"))[:4]
    images += [p.with_name(p.name.replace("_mask_1", "")) for p in several]
    checked = 0
    for path in images:
        masks = sorted(path.parent.glob(path.stem.replace("[", "[[]") + "_mask*.png"))
        sample = Sample.from_path(path, mask=masks)
        mask = sample.mask
        for components in ("largest", "union"):
            f = _as_dict(shape_features(mask, components=components)[0])
            ref = _reference(mask, components, "crofton")
            for key in ("shape_area", "shape_perimeter", "shape_solidity", "shape_extent", "shape_eccentricity",
                        "shape_major_axis_length", "shape_minor_axis_length"):
                np.testing.assert_allclose(f[key], ref[key], rtol=1e-9, err_msg=f"{path.name}: {key}")
            checked += 1
    assert checked == 2 * len(images) >= 40
    # BUSI's normal images have empty masks: an error by default, NaN on request.
    normal = sorted(p for p in (root / "normal").glob("*.png") if "_mask" not in p.name)[0]
    sample = Sample.from_path(normal, mask=normal.with_name(normal.stem + "_mask.png"))
    with pytest.raises(ValueError, match=f"ShapeFeatures on sample .*{re.escape(normal.name)}.*the mask is empty"):
        ShapeFeatures(cache=False).fit_transform([sample])
    assert np.all(np.isnan(ShapeFeatures(empty_mask="nan", cache=False).fit_transform([sample])))
