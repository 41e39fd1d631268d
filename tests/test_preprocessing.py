"""Preprocessing steps against OpenCV / scikit-image / SciPy called directly, plus hand-checked cases."""

import pickle

import cv2
import numpy as np
import pytest
import scipy.ndimage as ndi
from PIL import Image
from skimage.filters import threshold_otsu
from skimage.measure import label as sk_label
from skimage.measure import regionprops
from skimage.morphology import disk, opening
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler, scale

from featurepipe import FeatureExtractor, Sample, read_image, step_token
from featurepipe.preprocessing import (
    CLAHE,
    BilateralFilter,
    CropToMask,
    GaussianFilter,
    MedianFilter,
    OtsuROI,
    PreprocessingError,
    Resize,
    Standardize,
    ToGray,
    ToRGB,
    gaussian_kernel_size,
    otsu_roi,
)
from featurepipe.sample import derive_key

U8 = np.float32(255)
U16 = np.float32(65535)


def _u8_image(shape, seed=0):
    """Structured 8-bit test image: smooth gradient + blobs + noise (all 256 levels in play)."""
    rng = np.random.default_rng(seed)
    h, w = shape[:2]
    rr, cc = np.mgrid[:h, :w]
    base = 60 + 120 * (cc / max(w - 1, 1)) + 50 * np.sin(rr / 3.0)
    base += 60 * (((rr - h / 2) ** 2 + (cc - w / 3) ** 2) < (min(h, w) / 4) ** 2)
    if len(shape) == 3:
        base = base[:, :, None] + np.array([0.0, 25.0, -25.0])
    noisy = base + rng.normal(0, 20, base.shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def _out(step, image, mask=None):
    """Run one step on an in-memory image through the public API; return (image, mask)."""
    return step.fit_transform([Sample.from_array(image, mask)])[0].load()


@pytest.fixture(scope="module")
def gray8():
    return _u8_image((29, 37))


@pytest.fixture(scope="module")
def rgb8():
    return _u8_image((26, 33, 3), seed=1)


# ---------------------------------------------------------------------------------- gray / rgb
def test_to_gray_matches_opencv_and_io(tmp_path, rgb8, gray8):
    got, _ = _out(ToGray(), rgb8)
    ref = cv2.cvtColor(rgb8, cv2.COLOR_RGB2GRAY) / U8  # OpenCV rounds BT.601 to 8 bit
    assert got.shape == rgb8.shape[:2] and got.dtype == np.float32
    np.testing.assert_allclose(got, ref, atol=0.5 / 255 + 1e-6)
    # identical to featurepipe.io's gray conversion of the same file
    path = tmp_path / "rgb.png"
    Image.fromarray(rgb8).save(path)
    # exact: the same function on the same input (one code path, one process)
    np.testing.assert_array_equal(_out(ToGray(), read_image(path))[0], read_image(path, "gray"))
    # gray passes through unchanged
    # exact: one correctly rounded division per pixel, identical on every SIMD path
    np.testing.assert_array_equal(_out(ToGray(), gray8)[0], gray8 / U8)


def test_to_rgb_replicates_gray_and_keeps_rgb(gray8, rgb8):
    got, _ = _out(ToRGB(), gray8)
    # exact: one correctly rounded division per pixel, identical on every SIMD path
    np.testing.assert_array_equal(got, np.repeat((gray8 / U8)[:, :, None], 3, axis=2))
    np.testing.assert_array_equal(_out(ToRGB(), rgb8)[0], rgb8 / U8)


# ---------------------------------------------------------------------------------- resize
_CV_INTER = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC,
             "nearest": cv2.INTER_NEAREST_EXACT}


@pytest.mark.parametrize("interpolation", sorted(_CV_INTER))
@pytest.mark.parametrize("size", [(12, 20), (45, 61)])
@pytest.mark.parametrize("which", ["gray", "rgb"])
def test_resize_stretch_matches_opencv(interpolation, size, which, gray8, rgb8):
    u = gray8 if which == "gray" else rgb8
    got, _ = _out(Resize(size=size, interpolation=interpolation), u)
    assert got.shape == size + u.shape[2:]
    # OpenCV on the very same float32 pixels (cubic: clipped to the input range, documented)
    ref_float = cv2.resize(u / U8, (size[1], size[0]), interpolation=_CV_INTER[interpolation])
    if interpolation == "cubic":
        ref_float = np.clip(ref_float, (u / U8).min(), (u / U8).max())
    np.testing.assert_allclose(got, ref_float, atol=1e-6)
    # OpenCV on the 8-bit original: equal up to its rounding to 8 bit (fixed-point for linear)
    ref_u8 = cv2.resize(u, (size[1], size[0]), interpolation=_CV_INTER[interpolation]) / U8
    tol = 1e-6 if interpolation == "nearest" else 1.0 / 255 + 1e-6
    np.testing.assert_allclose(got, ref_u8, atol=tol)


def test_resize_int_size_means_square(gray8):
    assert _out(Resize(size=16), gray8)[0].shape == (16, 16)


def test_resize_keep_aspect_letterbox_by_hand():
    # 20 x 40 image into 10 x 10: scale 1/4 -> 5 x 10 content at rows 2..6, padding elsewhere
    image = np.zeros((20, 40), np.float32)
    image[:, 20:] = 1.0  # right half white
    mask = np.zeros((20, 40), bool)
    mask[:10, :20] = True  # top-left quadrant
    got, got_mask = _out(Resize(size=10, keep_aspect=True, pad_value=0.25, interpolation="area"), image, mask)
    expected = np.full((10, 10), 0.25, np.float32)
    expected[2:7, 5:] = 1.0
    expected[2:7, :5] = 0.0
    np.testing.assert_allclose(got, expected, atol=1e-6)
    # nearest neighbour at pixel centres: output row i <- input row 4 i + 2, so rows 0, 1 of the 5 content
    # rows come from the top half; columns 0..4 from the left half; shifted down by the 2 padding rows
    exp_mask = np.zeros((10, 10), bool)
    exp_mask[2:4, :5] = True
    # exact: integer, boolean or string values
    np.testing.assert_array_equal(got_mask, exp_mask)


def test_resize_keep_aspect_matches_opencv_border(rgb8):
    # 26 x 33 into 30 x 50: scale 30/26 -> 30 x 38, centred with 6 columns of padding each side
    got, _ = _out(Resize(size=(30, 50), keep_aspect=True, pad_value=0.5, interpolation="linear"), rgb8)
    inner = cv2.resize(rgb8 / U8, (38, 30), interpolation=cv2.INTER_LINEAR)
    ref = cv2.copyMakeBorder(inner, 0, 0, 6, 6, cv2.BORDER_CONSTANT, value=(0.5, 0.5, 0.5))
    np.testing.assert_allclose(got, ref, atol=1e-6)


def test_resize_stretch_mask_nearest():
    mask = np.zeros((8, 8), bool)
    mask[2:6, 4:8] = True
    image = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    _, got = _out(Resize(size=(4, 16), interpolation="cubic"), image, mask)
    expected = np.zeros((4, 16), bool)
    expected[1:3, 8:16] = True  # rows halve, columns double
    # exact: integer, boolean or string values
    np.testing.assert_array_equal(got, expected)


# ---------------------------------------------------------------------------------- filters
@pytest.mark.parametrize("size", [1, 3, 5, 7, 9])
@pytest.mark.parametrize("which", ["gray", "rgb"])
def test_median_equals_opencv_8bit_exactly(size, which, gray8, rgb8):
    u = gray8 if which == "gray" else rgb8
    got, _ = _out(MedianFilter(size=size), u)
    ref = u if size == 1 else cv2.medianBlur(u, size)
    # exact: pixels copied or selected, no arithmetic
    np.testing.assert_array_equal(got, ref / U8)  # a median selects a pixel: no tolerance


def test_median_keeps_16bit_precision():
    rng = np.random.default_rng(3)
    u16 = rng.integers(0, 65536, (21, 23), dtype=np.uint16)
    got, _ = _out(MedianFilter(size=7), u16)
    ref = ndi.median_filter(u16, size=7, mode="nearest")  # replicate border, like cv2.medianBlur
    # exact: pixels copied or selected, no arithmetic
    np.testing.assert_array_equal(got, ref / U16)


@pytest.mark.parametrize("sigma", [0.7, 1.5, 2.5])
@pytest.mark.parametrize("which", ["gray", "rgb"])
def test_gaussian_matches_scipy_and_opencv(sigma, which, gray8, rgb8):
    u = gray8 if which == "gray" else rgb8
    got, _ = _out(GaussianFilter(sigma=sigma), u)
    sigmas = (sigma, sigma) if u.ndim == 2 else (sigma, sigma, 0)
    ref = ndi.gaussian_filter((u / U8).astype(np.float64), sigmas, mode="mirror", truncate=4.0)
    np.testing.assert_allclose(got, ref, atol=2e-6)
    k = gaussian_kernel_size(sigma)
    assert k == 2 * int(4 * sigma + 0.5) + 1
    # OpenCV's 8-bit path uses a fixed-point kernel and rounds: within 1.5 grey levels
    ref8 = cv2.GaussianBlur(u, (k, k), sigma) / U8
    np.testing.assert_allclose(got, ref8, atol=1.5 / 255)


def test_gaussian_explicit_size_matches_opencv(gray8):
    got, _ = _out(GaussianFilter(sigma=2.0, size=5), gray8)
    ref = cv2.GaussianBlur(gray8 / U8, (5, 5), 2.0, borderType=cv2.BORDER_REFLECT_101)
    np.testing.assert_allclose(got, ref, atol=1e-7)
    assert not np.allclose(got, _out(GaussianFilter(sigma=2.0), gray8)[0], atol=1e-3)


@pytest.mark.parametrize("which", ["gray", "rgb"])
@pytest.mark.parametrize("diameter, sigma_color, sigma_space", [(5, 0.2, 3.0), (9, 75 / 255, 75.0)])
def test_bilateral_matches_opencv_8bit(which, diameter, sigma_color, sigma_space, gray8, rgb8):
    u = gray8 if which == "gray" else rgb8
    got, _ = _out(BilateralFilter(diameter=diameter, sigma_color=sigma_color, sigma_space=sigma_space), u)
    ref = cv2.bilateralFilter(u, diameter, sigma_color * 255, sigma_space) / U8
    # OpenCV's float path interpolates its exp table, the 8-bit path rounds: <= 1 grey level
    np.testing.assert_allclose(got, ref, atol=1.0 / 255 + 1e-5)
    assert np.mean(np.abs(got - ref)) < 0.5 / 255
    # and it does smooth: bilateral output is closer to the Gaussian-smoothed image than the input
    assert np.abs(got - u / U8).mean() > 1.0 / 255


# ---------------------------------------------------------------------------------- CLAHE
def test_clahe_8bit_equals_opencv(gray8):
    got, _ = _out(CLAHE(clip_limit=3.0, tile_grid_size=(2, 4)), gray8)
    ref = cv2.createCLAHE(clipLimit=3.0, tileGridSize=(4, 2)).apply(gray8)  # OpenCV: (columns, rows)
    # exact: the library computes both sides from identical input (ours calls it)
    np.testing.assert_array_equal(got, ref / U8)
    transposed = cv2.createCLAHE(clipLimit=3.0, tileGridSize=(2, 4)).apply(gray8)
    assert not np.array_equal(got, transposed / U8)  # the (rows, columns) order matters


def test_clahe_16bit_equals_opencv():
    rng = np.random.default_rng(5)
    u16 = (rng.normal(30000, 4000, (40, 48)).clip(0, 65535)).astype(np.uint16)
    got, _ = _out(CLAHE(clip_limit=40.0, tile_grid_size=4, bit_depth=16), u16)
    ref = cv2.createCLAHE(clipLimit=40.0, tileGridSize=(4, 4)).apply(u16)
    # exact: the library computes both sides from identical input (ours calls it)
    np.testing.assert_array_equal(got, ref / U16)


def test_clahe_rgb_on_lab_lightness(rgb8):
    got, _ = _out(CLAHE(clip_limit=2.0, tile_grid_size=3), rgb8)
    lab = cv2.cvtColor(rgb8, cv2.COLOR_RGB2LAB)
    lab[:, :, 0] = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(3, 3)).apply(lab[:, :, 0])
    ref = cv2.cvtColor(lab, cv2.COLOR_LAB2RGB) / U8
    # exact: the library computes both sides from identical input (ours calls it)
    np.testing.assert_array_equal(got, ref)


def test_clahe_refuses_out_of_range_input_naming_sample(gray8):
    standardized = Standardize().fit_transform([Sample.from_array(gray8)])
    out = CLAHE().fit_transform(standardized)[0]
    with pytest.raises(PreprocessingError, match=r"CLAHE on sample key .*needs intensities in \[0, 1\]"):
        out.load()


# ---------------------------------------------------------------------------------- standardize
def test_standardize_matches_sklearn_scale(gray8, rgb8):
    got, _ = _out(Standardize(), gray8)
    ref = scale((gray8 / U8).astype(np.float64).reshape(-1, 1)).reshape(gray8.shape)
    np.testing.assert_allclose(got, ref, atol=1e-5)
    assert abs(got.mean()) < 1e-5 and abs(got.std() - 1) < 1e-5
    got_rgb, _ = _out(Standardize(per_channel=True), rgb8)
    ref_rgb = StandardScaler().fit_transform((rgb8 / U8).reshape(-1, 3).astype(np.float64)).reshape(rgb8.shape)
    np.testing.assert_allclose(got_rgb, ref_rgb, atol=1e-5)
    got_global, _ = _out(Standardize(per_channel=False), rgb8)
    np.testing.assert_allclose(got_global, scale((rgb8 / U8).astype(np.float64).reshape(-1, 1)).reshape(rgb8.shape),
                               atol=1e-5)


def test_standardize_within_mask(gray8):
    mask = np.zeros(gray8.shape, bool)
    mask[5:15, 3:20] = True
    got, got_mask = _out(Standardize(within_mask=True), gray8, mask)
    x = (gray8 / U8).astype(np.float64)
    np.testing.assert_allclose(got, (x - x[mask].mean()) / x[mask].std(), atol=1e-5)
    # exact: integer, boolean or string values
    np.testing.assert_array_equal(got_mask, mask)
    assert abs(got[mask].mean()) < 1e-5 and abs(got[mask].std() - 1) < 1e-5


def test_standardize_constant_image_policy():
    const = np.full((6, 7), 0.4, np.float32)
    with pytest.raises(PreprocessingError, match="Standardize on sample .*constant.*on_constant='zero'"):
        _out(Standardize(), const)
    # exact: zero or one by construction
    np.testing.assert_array_equal(_out(Standardize(on_constant="zero"), const)[0], np.zeros((6, 7), np.float32))
    with pytest.raises(PreprocessingError, match="within_mask=True but the sample has no mask"):
        _out(Standardize(within_mask=True), const + np.eye(6, 7, dtype=np.float32) * 0.1)


# ---------------------------------------------------------------------------------- Otsu ROI
def _disk_and_label(label_value=0.9):
    """80 x 100 image: dark background, bright disk (r=15 at row 40, col 55), small bright label top-left."""
    rr, cc = np.mgrid[:80, :100]
    image = np.full((80, 100), 0.1, np.float32)
    the_disk = (rr - 40) ** 2 + (cc - 55) ** 2 <= 15**2
    image[the_disk] = 0.8
    image[2:6, 2:8] = label_value  # a 4 x 6 "film label": narrower than the opening disk
    lesion = np.zeros((80, 100), bool)
    lesion[35:45, 50:58] = True
    return image, the_disk, lesion


def test_otsu_roi_crop_keeps_disk_with_margin_and_drops_label():
    image, the_disk, lesion = _disk_and_label()
    margin = 4
    got, got_mask = _out(OtsuROI(opening_radius=3, margin=margin), image, lesion)
    # the disk spans rows 25..55 and columns 40..70 (inclusive): crop = that box + 4 pixels
    r0, r1, c0, c1 = 25 - margin, 56 + margin, 40 - margin, 71 + margin
    # exact: pixels copied or selected, no arithmetic
    np.testing.assert_array_equal(got, image[r0:r1, c0:c1])
    np.testing.assert_array_equal(got_mask, lesion[r0:r1, c0:c1])  # mask carried along
    assert got.shape == (39, 39)
    assert not np.any(got >= 0.85)  # the label (0.9) is not in the crop
    assert np.count_nonzero(got == np.float32(0.8)) == the_disk.sum()  # the whole disk is


def test_otsu_roi_without_opening_keeps_label_component_separate():
    # with no opening, the largest component is still the disk, but a label as large as the disk wins
    image, the_disk, _ = _disk_and_label()
    roi, _ = otsu_roi(image, opening_radius=0)
    # exact: integer, boolean or string values
    np.testing.assert_array_equal(roi, the_disk)
    image[60:80, 0:40] = 0.9  # a 20 x 40 bright artefact (800 px) larger than the disk (709 px)
    roi, _ = otsu_roi(image, opening_radius=3)
    assert roi[70, 20] and not roi[40, 55]


def test_otsu_roi_mask_output_and_clear_outside():
    image, the_disk, lesion = _disk_and_label()
    got, got_mask = _out(OtsuROI(opening_radius=3, output="mask"), image, lesion)
    # exact: pixels copied or selected, no arithmetic
    np.testing.assert_array_equal(got, image)  # full image kept
    # exact: integer, boolean or string values
    np.testing.assert_array_equal(got_mask, the_disk)  # mask replaced by the region
    cleared, _ = _out(OtsuROI(opening_radius=3, output="mask", clear_outside=True), image)
    # exact: pixels copied or selected, no arithmetic
    np.testing.assert_array_equal(cleared, np.where(the_disk, image, 0.0).astype(np.float32))


def test_otsu_roi_dark_foreground():
    image, the_disk, _ = _disk_and_label()
    got, got_mask = _out(OtsuROI(opening_radius=3, output="mask", foreground="dark"), 1.0 - image)
    # exact: integer, boolean or string values
    np.testing.assert_array_equal(got_mask, the_disk)


def test_otsu_roi_matches_scikit_image_reference():
    # random blobs, none touching the border: threshold, opening, largest component and box from skimage
    rng = np.random.default_rng(7)
    smooth = ndi.gaussian_filter(rng.random((90, 110)), 4)
    image = np.zeros((90, 110), np.float32)
    image[10:80, 10:100] = ((smooth[10:80, 10:100] - smooth.min()) / np.ptp(smooth)).astype(np.float32)
    for radius in (0, 2):
        got, _ = otsu_roi(image, opening_radius=radius, fill_holes=False)
        t = threshold_otsu(image)
        fg = image > t
        if radius:
            fg = opening(fg, disk(radius))
        labels = sk_label(fg, connectivity=2)
        largest = max(regionprops(labels), key=lambda r: (r.area, -r.label))
        # exact: integer, boolean or string values
        np.testing.assert_array_equal(got, labels == largest.label)
        crop, _ = _out(OtsuROI(opening_radius=radius, fill_holes=False, margin=2), image)
        r0, c0, r1, c1 = largest.bbox
        # exact: pixels copied or selected, no arithmetic
        np.testing.assert_array_equal(crop, image[max(r0 - 2, 0):r1 + 2, max(c0 - 2, 0):c1 + 2])


def test_otsu_roi_fill_holes():
    image = np.zeros((40, 40), np.float32)
    image[5:35, 5:35] = 1.0
    image[15:25, 15:25] = 0.0  # a hole
    _, filled = _out(OtsuROI(opening_radius=1, output="mask"), image)
    _, holed = _out(OtsuROI(opening_radius=1, output="mask", fill_holes=False), image)
    assert filled[20, 20] and not holed[20, 20]
    # exact: integer, boolean or string values
    np.testing.assert_array_equal(filled, ndi.binary_fill_holes(holed))


def test_otsu_roi_no_foreground_errors_name_the_sample(tmp_path):
    path = tmp_path / "blank.png"
    Image.fromarray(np.full((20, 20), 77, np.uint8)).save(path)
    out = OtsuROI().fit_transform([Sample.from_path(path)])[0]
    with pytest.raises(PreprocessingError, match=r"OtsuROI on sample '.*blank\.png': .*no foreground") as info:
        out.load()
    assert info.value.step == "OtsuROI" and "blank.png" in info.value.sample
    assert pickle.loads(pickle.dumps(info.value)).reason == info.value.reason
    image, _, _ = _disk_and_label()
    with pytest.raises(PreprocessingError, match="vanish in the opening with opening_radius=40"):
        _out(OtsuROI(opening_radius=40), image)


def test_otsu_roi_real_mammograms(shared_data):
    """mini-MIAS: the crop keeps each abnormality centre; film labels are dropped (hand-checked)."""
    root = shared_data / "mias_sample"
    # (image, abnormality x, y from Info.txt with a bottom-left origin)
    abnormal = {"mdb001": (535, 425), "mdb002": (522, 280), "mdb010": (525, 425), "mdb012": (471, 458)}
    step = OtsuROI(opening_radius=15, output="mask")
    samples = [Sample.from_path(root / f"{name}.png", mode="gray") for name in abnormal]
    for sample, out, (x, y) in zip(samples, step.fit_transform(samples), abnormal.values()):
        image, roi = out.load()
        assert image.shape == (1024, 1024)
        assert roi[1024 - y, x], sample.name  # abnormality centre is inside the breast region
        assert 0.15 < roi.mean() < 0.6
    # mdb002: the "R ML" film label (hand-located at columns 722..806, rows 93..233) is cut off
    crop, _ = OtsuROI(opening_radius=15).fit_transform(samples[1:2])[0].load()
    roi2 = step.fit_transform(samples[1:2])[0].mask
    cols = np.flatnonzero(roi2.any(axis=0))
    assert cols[-1] < 722 and crop.shape[1] == cols[-1] + 1 - cols[0]
    # mdb012: the label lies inside the breast's box, clear_outside blanks it (columns 557..655, rows 0..115)
    cleared, _ = OtsuROI(opening_radius=15, clear_outside=True, output="mask").fit_transform(samples[3:4])[0].load()
    original = samples[3].image
    label = original[:116, 557:656] > 200 / 255
    assert label.sum() > 5000 and np.all(cleared[:116, 557:656][label] == 0)


# ---------------------------------------------------------------------------------- crop to mask
def test_crop_to_mask_by_hand(gray8):
    mask = np.zeros(gray8.shape, bool)
    mask[10:14, 20:25] = True
    got, got_mask = _out(CropToMask(margin=3), gray8, mask)
    # exact: pixels copied or selected, no arithmetic
    np.testing.assert_array_equal(got, gray8[7:17, 17:28] / U8)
    np.testing.assert_array_equal(got_mask, mask[7:17, 17:28])
    mask[0:2, 30:37] = True  # a second region at the corner: box grows, margin clipped at the border
    got, _ = _out(CropToMask(margin=3), gray8, mask)
    # exact: pixels copied or selected, no arithmetic
    np.testing.assert_array_equal(got, gray8[0:17, 17:37] / U8)


def test_crop_to_mask_relative_context_by_hand(gray8):
    # gray8 is 29 x 37; the lesion box is rows 10-13, columns 20-24 (4 x 5): its longer side is 5
    mask = np.zeros(gray8.shape, bool)
    mask[10:14, 20:25] = True
    # context 0.5: ceil(0.5 * 5) = 3 px on every side, as margin=3
    got, got_mask = _out(CropToMask(context=0.5), gray8, mask)
    np.testing.assert_array_equal(got, gray8[7:17, 17:28] / U8)  # exact: pixels copied, no arithmetic
    np.testing.assert_array_equal(got_mask, mask[7:17, 17:28])
    # the larger of margin and context wins: margin 4 > 3; context 1.0 (5 px) > margin 4
    got, _ = _out(CropToMask(margin=4, context=0.5), gray8, mask)
    np.testing.assert_array_equal(got, gray8[6:18, 16:29] / U8)  # exact: pixels copied
    got, _ = _out(CropToMask(margin=4, context=1.0), gray8, mask)
    np.testing.assert_array_equal(got, gray8[5:19, 15:30] / U8)  # exact: pixels copied
    # a lesion twice as large gets twice the context: rows 10-17, columns 20-29 (8 x 10) -> 5 px
    big = np.zeros(gray8.shape, bool)
    big[10:18, 20:30] = True
    got, _ = _out(CropToMask(context=0.5), gray8, big)
    np.testing.assert_array_equal(got, gray8[5:23, 15:35] / U8)  # exact: pixels copied


def test_crop_to_mask_square_crops_by_hand(gray8):
    mask = np.zeros(gray8.shape, bool)
    mask[10:14, 20:25] = True  # 4 x 5: rows grow to 5 around their centre, the extra row at the bottom
    got, got_mask = _out(CropToMask(square=True), gray8, mask)
    np.testing.assert_array_equal(got, gray8[10:15, 20:25] / U8)  # exact: pixels copied
    np.testing.assert_array_equal(got_mask, mask[10:15, 20:25])
    got, _ = _out(CropToMask(square=True, context=0.5), gray8, mask)  # 5 x 5, then 3 px: 11 x 11
    np.testing.assert_array_equal(got, gray8[7:18, 17:28] / U8)  # exact: pixels copied
    # at the border a square box is shifted inside the image, not clipped:
    # rows 0-1, columns 30-36 (2 x 7) -> square rows -2..4 -> +4 px context (ceil(0.5 * 7)) -> rows -6..8,
    # columns 26..40: shifted to rows 0..14 and columns 22..36 (the image is 37 wide)
    corner = np.zeros(gray8.shape, bool)
    corner[0:2, 30:37] = True
    got, _ = _out(CropToMask(square=True, context=0.5), gray8, corner)
    np.testing.assert_array_equal(got, gray8[0:15, 22:37] / U8)  # exact: pixels copied
    # a box larger than the image along an axis is clipped to it: 2 x 7 with context 2.0 -> 7 + 2 * 14 = 35
    # px: rows -16..18 clipped to the 29 rows; columns 16..50 shifted to end at the border, 2..36
    got, _ = _out(CropToMask(square=True, context=2.0), gray8, corner)
    np.testing.assert_array_equal(got, gray8[0:29, 2:37] / U8)  # exact: pixels copied


def test_crop_to_mask_defaults_keep_the_fixed_margin_crop(gray8):
    assert CropToMask().get_params() == {"margin": 0, "context": 0.0, "square": False}
    assert step_token(CropToMask(margin=3)) != step_token(CropToMask(margin=3, context=0.5))
    with pytest.raises(ValueError, match="context"):
        CropToMask(context=-0.1).fit([np.zeros((4, 4), np.float32)])
    with pytest.raises(ValueError, match="square"):
        CropToMask(square="yes").fit([np.zeros((4, 4), np.float32)])


def test_crop_to_mask_missing_or_empty_mask_names_sample(tmp_path, gray8):
    path = tmp_path / "nomask.png"
    Image.fromarray(gray8).save(path)
    with pytest.raises(PreprocessingError, match=r"CropToMask on sample '.*nomask\.png': the sample has no mask"):
        CropToMask().fit_transform([Sample.from_path(path)])[0].load()
    mask_path = tmp_path / "empty_mask.png"
    Image.fromarray(np.zeros_like(gray8)).save(mask_path)
    with pytest.raises(PreprocessingError, match=r"CropToMask on sample '.*nomask\.png': the sample's mask is empty"):
        CropToMask().fit_transform([Sample.from_path(path, mask=mask_path)])[0].load()


# ---------------------------------------------------------------------------------- parameters
@pytest.mark.parametrize(
    "step, message",
    [
        # scikit-learn's _parameter_constraints wording: "The 'p' parameter of Step must be <allowed>. Got <v> instead."
        (Resize(size=0), r"'size' parameter of Resize must be an int in the range \[1, inf\).*Got 0 instead"),
        # featurepipe's _validate_param_rules wording: "Step: p must be <allowed>; got <v>"
        (Resize(size=(10, 5.5)), r"Resize: size must be an integer >= 1 or a pair \(height, width\).*got \(10, 5.5\)"),
        (Resize(interpolation="bicubic"),
         r"'interpolation' parameter of Resize must be a str among \{(?=.*'area')(?=.*'linear').*\}\. Got 'bicubic'"),
        (Resize(keep_aspect="yes"), r"'keep_aspect' parameter of Resize must be an instance of 'bool'.*Got 'yes'"),
        (Resize(pad_value=float("nan")), r"'pad_value' parameter of Resize must be a float in the range "
                                         r"\(-inf, inf\)\. Got nan"),
        (MedianFilter(size=4), r"MedianFilter: size must be an odd integer >= 1; got 4"),
        (MedianFilter(size=3.0), r"'size' parameter of MedianFilter must be an int in the range \[1, inf\)\. Got 3\.0"),
        (GaussianFilter(sigma=0), r"'sigma' parameter of GaussianFilter must be a float in the range \(0\.0, inf\)\. "
                                  "Got 0 instead"),
        (GaussianFilter(size=6), r"GaussianFilter: size must be an odd integer >= 1; got 6"),
        (BilateralFilter(diameter=0), r"'diameter' parameter of BilateralFilter must be an int in the range "
                                      r"\[1, inf\)\. Got 0 instead"),
        (BilateralFilter(sigma_color=-1), r"'sigma_color' parameter of BilateralFilter must be a float in the range "
                                          r"\(0\.0, inf\)\. Got -1 instead"),
        (CLAHE(clip_limit=0), r"'clip_limit' parameter of CLAHE must be a float in the range \(0\.0, inf\)\. Got 0"),
        (CLAHE(tile_grid_size=(0, 2)), r"CLAHE: tile_grid_size must be an integer >= 1 or a pair.*got \(0, 2\)"),
        (CLAHE(bit_depth=12), r"'bit_depth' parameter of CLAHE must be a int among \{(?=.*8)(?=.*16).*\}\. Got 12"),
        (CLAHE(bit_depth=True), r"'bit_depth' parameter of CLAHE must be a int among \{(?=.*8)(?=.*16).*\}\. Got True"),
        (Standardize(on_constant="ignore"), r"'on_constant' parameter of Standardize must be a str among "
                                            r"\{(?=.*'error')(?=.*'zero').*\}\. Got 'ignore'"),
        (OtsuROI(opening_radius=-1), r"'opening_radius' parameter of OtsuROI must be an int in the range "
                                     r"\[0, inf\)\. Got -1 instead"),
        (OtsuROI(output="box"), r"'output' parameter of OtsuROI must be a str among "
                                r"\{(?=.*'crop')(?=.*'mask').*\}\. Got 'box'"),
        (OtsuROI(foreground="white"), r"'foreground' parameter of OtsuROI must be a str among "
                                      r"\{(?=.*'bright')(?=.*'dark').*\}\. Got 'white'"),
        (OtsuROI(nbins=1), r"'nbins' parameter of OtsuROI must be an int in the range \[2, inf\)\. Got 1 instead"),
        (CropToMask(margin=-2), r"'margin' parameter of CropToMask must be an int in the range \[0, inf\)\. "
                                "Got -2 instead"),
    ],
)
def test_bad_parameters_are_named(step, message, gray8):
    with pytest.raises(ValueError, match=message):
        step.transform([gray8])
    with pytest.raises(ValueError, match=message):
        step.fit([gray8])


ALL_STEPS = [
    ToGray(), ToRGB(), Resize(size=(9, 11), keep_aspect=True), MedianFilter(5), GaussianFilter(1.2),
    BilateralFilter(5, 0.1, 2.0), CLAHE(2.0, (2, 3)), Standardize(), OtsuROI(opening_radius=1, margin=2),
    CropToMask(margin=1),
]


@pytest.mark.parametrize("step", ALL_STEPS, ids=lambda s: type(s).__name__)
def test_sklearn_contract_and_keys(step, gray8):
    mask = np.zeros(gray8.shape, bool)
    mask[8:20, 10:30] = True
    sample = Sample.from_array(gray8, mask)
    params = step.get_params()
    twin = clone(step)
    assert twin.get_params() == params and twin is not step
    restored = pickle.loads(pickle.dumps(step))
    assert restored.get_params() == params
    # equal parameters -> equal keys (transform twice, clones, pickled copies), = hash(parent, token)
    first, second = step.transform([sample])[0], step.transform([sample])[0]
    assert first.key == second.key == twin.transform([sample])[0].key == restored.transform([sample])[0].key
    assert first.key == derive_key(sample.key, step_token(step)) != sample.key
    image, out_mask = first.load()
    again, again_mask = pickle.loads(pickle.dumps(first)).load()  # a derived sample pickles
    # exact: pickle/clone round trip of the same fitted object
    np.testing.assert_array_equal(image, again)
    np.testing.assert_array_equal(out_mask, again_mask)
    assert image.dtype == np.float32 and out_mask.shape == image.shape[:2]
    assert first.label == sample.label and first.meta == sample.meta
    # a different parameter value -> a different key
    if params:
        changed = {"size": 7, "keep_aspect": False, "clip_limit": 3.0, "diameter": 7, "sigma": 2.0,
                   "margin": 5, "clear_outside": True, "within_mask": True, "bit_depth": 16}
        name = next(n for n in params if n in changed)
        other = clone(step).set_params(**{name: changed[name]})
        assert other.get_params()[name] == changed[name]
        assert other.transform([sample])[0].key != first.key
    # different inputs -> different keys
    assert step.transform([Sample.from_array(gray8[::-1].copy(), mask)])[0].key != first.key


def test_init_stores_parameters_unchanged():
    size = [10, 12]
    step = Resize(size=size, interpolation="nope")  # invalid values are stored, validated later
    assert step.size is size and step.interpolation == "nope"


# ---------------------------------------------------------------------------------- pipelines
class _MeanStd(FeatureExtractor):
    """Tiny extractor for tests: mean, std and left-minus-right mean of the image."""

    def __init__(self, cache=False, n_jobs=None):
        self.cache = cache
        self.n_jobs = n_jobs

    def _extract(self, image, mask):
        half = image.shape[1] // 2
        return [image.mean(), image.std(), image[:, :half].mean() - image[:, half:].mean()]

    def _feature_names(self):
        return ["mean", "std", "left_minus_right"]


def _toy_dataset(n=16):
    rng = np.random.default_rng(11)
    X, y = [], []
    for i in range(n):
        label = i % 2
        image = rng.random((30, 24, 3)) * 0.3
        image[:, :12] += 0.5 * label  # class 1 is brighter on the left
        X.append(Sample.from_array(image.astype(np.float32), label=label))
        y.append(label)
    return np.array(X, dtype=object), np.array(y)


def test_steps_inside_sklearn_pipeline_and_grid_search():
    X, y = _toy_dataset()
    pipe = Pipeline([
        ("gray", ToGray()),
        ("resize", Resize(size=(16, 16), interpolation="area")),
        ("median", MedianFilter(size=3)),
        ("features", _MeanStd()),
        ("clf", LogisticRegression()),
    ])
    pipe.fit(X, y)
    features = pipe[:-1].transform(X)
    for row, sample in zip(features, X):
        img = cv2.medianBlur(cv2.resize(cv2.cvtColor(sample.image, cv2.COLOR_RGB2GRAY), (16, 16),
                                        interpolation=cv2.INTER_AREA), 3)
        np.testing.assert_allclose(row, [img.mean(), img.std(), img[:, :8].mean() - img[:, 8:].mean()], atol=1e-5)
    # exact: predicted class labels
    np.testing.assert_array_equal(pipe.predict(X), y)
    search = GridSearchCV(pipe, {"median__size": [1, 5], "resize__size": [8, (12, 10)]}, cv=2).fit(X, y)
    assert sorted(map(str, search.cv_results_["params"])) == sorted(map(str, [
        {"median__size": m, "resize__size": s} for m in (1, 5) for s in (8, (12, 10))]))
    assert search.best_score_ == 1.0  # exact: mean of accuracies that are all 1
    assert clone(search.best_estimator_).get_params()["median__size"] in (1, 5)
