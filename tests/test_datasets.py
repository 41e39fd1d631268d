"""Dataset builders: class-per-folder, BUSI, mini-MIAS, BreakHis, DMR-IR, layout detection."""

import pickle

import numpy as np
import pytest
from PIL import Image
from skimage.filters import threshold_otsu

from featurepipe.dataset import Dataset
from featurepipe.datasets import (
    background_patch_centre,
    detect_layout,
    load_breakhis,
    load_busi,
    load_dataset,
    load_dmr_ir,
    load_folder,
    load_mias,
    mias_group,
    parse_breakhis_name,
    parse_mias_info,
)
from featurepipe.datasets.mias import radius_patch_side
from featurepipe.io import ImageReadError
from featurepipe.preprocessing import mask_crop_box


def _save(path, pixels):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(pixels)).save(path)
    return path


def _bad_files(folder):
    """Truncated PNG, empty file and a text file named .png; returns {name: expected reason fragment}."""
    folder.mkdir(parents=True, exist_ok=True)
    good = folder / "_tmp_full.png"
    Image.fromarray(np.arange(64 * 64, dtype=np.uint32).reshape(64, 64).astype(np.uint8)).save(good)
    data = good.read_bytes()
    good.unlink()
    (folder / "truncated.png").write_bytes(data[: len(data) // 2])
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.png").write_text("this is not an image\n")
    return {"truncated.png": "truncated", "empty.png": "empty", "notes.png": "not an image"}


@pytest.fixture
def messy_tree(tmp_path, rng):
    """Two classes of good images plus bad files, a non-image file, a hidden file and a stray root image."""
    root = tmp_path / "messy"
    good = {}
    for label, n in (("cats", 3), ("dogs", 2)):
        for i in range(n):
            pixels = rng.integers(0, 256, size=(12, 10), dtype=np.uint8)
            good[str(_save(root / label / f"{label}{i}.png", pixels))] = (label, pixels)
    rgb = rng.integers(0, 256, size=(8, 9, 3), dtype=np.uint8)
    good[str(_save(root / "dogs" / "sub" / "deep.png", rgb))] = ("dogs", rgb)
    bad = {str(root / "cats" / name): reason for name, reason in _bad_files(root / "cats").items()}
    (root / "dogs" / "README.txt").write_text("notes")
    (root / "dogs" / ".DS_Store").write_bytes(b"\0\0")
    stray = _save(root / "stray.png", np.zeros((4, 4), np.uint8))
    return root, good, bad, str(stray)


def test_load_folder_reports_every_bad_file_and_keeps_every_good_one(messy_tree):
    root, good, bad, stray = messy_tree
    ds = load_folder(root)
    assert {s.path for s in ds} == set(good)
    assert ds.class_counts() == {"cats": 3, "dogs": 3}
    for sample in ds:
        label, pixels = good[sample.path]
        assert sample.label == label
        # exact: one correctly rounded division per pixel, identical on every SIMD path
        np.testing.assert_array_equal(sample.image, pixels.astype(np.float32) / 255)
    skipped = dict(ds.skipped)
    assert set(skipped) == set(bad) | {stray}
    for path, fragment in bad.items():
        assert fragment in skipped[path]
    assert "<root>/<class>/<image>" in skipped[stray]
    assert [p for p, _ in ds.info["ignored"]] == [str(root / "dogs" / "README.txt")]


def test_load_folder_without_validation_defers_errors_to_first_use(messy_tree):
    root, good, bad, stray = messy_tree
    ds = load_folder(root, validate=False)
    assert {s.path for s in ds} == set(good) | set(bad)
    assert dict(ds.skipped) == {stray: dict(ds.skipped)[stray]}
    truncated = next(s for s in ds if s.path.endswith("truncated.png"))
    with pytest.raises(ImageReadError, match="truncated.png"):
        truncated.load()


def test_load_folder_parallel_validation_matches_serial(messy_tree):
    root = messy_tree[0]
    serial, threaded = load_folder(root), load_folder(root, n_jobs=2)
    assert [s.key for s in serial] == [s.key for s in threaded]
    assert serial.skipped == threaded.skipped


def test_load_folder_not_recursive_and_class_filter(messy_tree):
    root, good, bad, stray = messy_tree
    ds = load_folder(root, recursive=False, classes=["dogs"])
    assert sorted(s.name for s in ds) == ["dogs0.png", "dogs1.png"]
    skipped = dict(ds.skipped)
    for name in ("cats0.png", "cats1.png", "cats2.png"):
        assert "not one of the classes" in skipped[str(root / "cats" / name)]


def test_load_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_folder(tmp_path / "nope")
    (tmp_path / "flat").mkdir()
    _save(tmp_path / "flat" / "a.png", np.zeros((3, 3), np.uint8))
    with pytest.raises(ValueError, match="no class folders"):
        load_folder(tmp_path / "flat")
    with pytest.raises(ValueError, match="mode"):
        load_folder(tmp_path, mode="grey")


def test_masks_are_paired_merged_and_orphans_reported(tmp_path):
    root = tmp_path / "d"
    image = np.full((6, 8), 100, np.uint8)
    m0 = np.zeros((6, 8), np.uint8)
    m0[1:3, 1:3] = 255
    m1 = np.zeros((6, 8), np.uint8)
    m1[4:6, 5:8] = 255
    _save(root / "a" / "x (1).png", image)
    _save(root / "a" / "x (1)_mask.png", m0)
    _save(root / "a" / "x (1)_mask_1.png", m1)
    _save(root / "a" / "x (2).png", image)
    _save(root / "a" / "ghost_mask.png", m0)
    ds = load_folder(root, mask_suffix="_mask", require_mask=True)
    assert [s.name for s in ds] == ["x (1).png"]
    # exact: integer, boolean or string values
    np.testing.assert_array_equal(ds[0].mask, (m0 > 0) | (m1 > 0))
    skipped = dict(ds.skipped)
    assert "no mask file" in skipped[str(root / "a" / "x (2).png")]
    assert "without an image" in skipped[str(root / "a" / "ghost_mask.png")]


def test_mask_of_wrong_size_is_reported(tmp_path):
    root = tmp_path / "d"
    _save(root / "a" / "x.png", np.zeros((6, 8), np.uint8))
    _save(root / "a" / "x_mask.png", np.zeros((5, 8), np.uint8))
    ds = load_folder(root, mask_suffix="_mask")
    assert len(ds) == 0
    (path, reason), = ds.skipped
    assert path == str(root / "a" / "x.png") and "x_mask.png" in reason and "8x5" in reason


# -- BUSI ---------------------------------------------------------------------------------------------


def test_load_busi_generated(tmp_path, rng):
    root = tmp_path / "busi"
    rgb = rng.integers(0, 256, size=(10, 12, 3), dtype=np.uint8)
    _save(root / "benign" / "benign (1).png", rgb)
    lesion = np.zeros((10, 12), np.uint8)
    lesion[2:5, 3:6] = 255
    other = np.zeros((10, 12), np.uint8)
    other[7:9, 8:11] = 255
    _save(root / "benign" / "benign (1)_mask.png", lesion)
    _save(root / "benign" / "benign (1)_mask_1.png", other)
    _save(root / "normal" / "normal (1).png", np.full((10, 12), 9, np.uint8))
    _save(root / "normal" / "normal (1)_mask.png", np.zeros((10, 12), np.uint8))
    _save(root / "malignant" / "malignant (1).png", np.full((10, 12), 7, np.uint8))
    assert detect_layout(root) == "busi"
    ds = load_busi(root)
    assert ds.class_counts() == {"benign": 1, "normal": 1}
    assert "no mask file" in dict(ds.skipped)[str(root / "malignant" / "malignant (1).png")]
    benign = ds[0]
    # exact: integer, boolean or string values
    np.testing.assert_array_equal(benign.mask, (lesion > 0) | (other > 0))
    # mode="gray": ITU-R BT.601 luma of the RGB file (as Pillow's "L" conversion, before rounding)
    luma = (rgb.astype(np.float64) @ [0.299, 0.587, 0.114]) / 255
    np.testing.assert_allclose(benign.image, luma, atol=1e-6)
    assert not ds[1].mask.any()


def test_busi_real_counts_and_multi_masks(shared_data):
    ds = load_busi(shared_data / "busi", validate=False)
    assert ds.class_counts() == {"benign": 437, "malignant": 210, "normal": 133}
    assert ds.skipped == []
    multi = {s.name: s for s in ds if len(s.meta["mask_paths"]) > 1}
    # 16 benign + 1 malignant images have several lesion masks
    assert len(multi) == 17 and sum(s.label == "benign" for s in multi.values()) == 16
    sample = multi["benign (4).png"]
    folder = shared_data / "busi" / "benign"
    expected = np.zeros_like(sample.mask)
    for name in ("benign (4)_mask.png", "benign (4)_mask_1.png"):
        expected |= np.asarray(Image.open(folder / name).convert("L")) > 0
    # exact: integer, boolean or string values
    np.testing.assert_array_equal(sample.mask, expected)


# -- mini-MIAS ----------------------------------------------------------------------------------------

_INFO_HEADER = """MAMMOGRAPHIC IMAGE ANALYSIS SOCIETY
1st column: MIAS database reference number.
mdb is the prefix of every reference.
=================================================================

"""


def _mammogram(size, centre_rc=None, radius=0, value=250):
    """A dark image with an elliptical 'breast' and optionally a bright disk (the abnormality)."""
    yy, xx = np.mgrid[:size, :size]
    image = np.where(((yy - size / 2) / (0.45 * size)) ** 2 + ((xx - size * 0.3) / (0.3 * size)) ** 2 <= 1,
                     120, 3).astype(np.uint8)
    if centre_rc is not None:
        image[(yy - centre_rc[0]) ** 2 + (xx - centre_rc[1]) ** 2 <= radius ** 2] = value
    return image


@pytest.fixture
def mias_tree(tmp_path):
    root = tmp_path / "mias"
    size = 200
    # mdb001: lesion at x=60, y=150 (from the bottom) -> row 50, column 60
    _save(root / "mdb001.png", _mammogram(size, (50, 60), 8))
    # mdb002: two lesions; the second one close to the left border
    img2 = _mammogram(size, (120, 70), 6)
    img2[(np.mgrid[:size, :size][0] - 100) ** 2 + (np.mgrid[:size, :size][1] - 5) ** 2 <= 16] = 240
    _save(root / "mdb002.png", img2)
    _save(root / "mdb003.png", _mammogram(size))
    _save(root / "mdb004.png", _mammogram(size))
    _save(root / "mdb005.png", _mammogram(size))
    _save(root / "mdb099.png", _mammogram(size))  # not listed in Info.txt
    info = _INFO_HEADER + "\n".join([
        "mdb001 G CIRC B 60 150 8",
        "mdb002 F SPIC M 70 80 6",
        "mdb002 F CALC B 5 100 4",
        "mdb003 D NORM ",
        "mdb004 D CALC M",            # abnormal, no coordinates
        "mdb005 F CIRC X 1 2 3",      # bad severity
        "mdb006 G NORM",              # no image file
    ]) + "\n\n=================================================================\n"
    (root / "Info.txt").write_text(info)
    return root


def test_parse_mias_info(mias_tree):
    records, problems = parse_mias_info(mias_tree / "Info.txt")
    assert [(r.ref, r.abnormality, r.severity, r.x, r.y, r.radius) for r in records] == [
        ("mdb001", "CIRC", "B", 60, 150, 8),
        ("mdb002", "SPIC", "M", 70, 80, 6),
        ("mdb002", "CALC", "B", 5, 100, 4),
        ("mdb003", "NORM", None, None, None, None),
        ("mdb004", "CALC", "M", None, None, None),
        ("mdb006", "NORM", None, None, None, None),
    ]
    (line, text, reason), = problems
    assert text.startswith("mdb005") and "severity" in reason and line == 11


def test_mias_groups_pair_left_and_right():
    assert [mias_group(f"mdb{n:03d}") for n in (1, 2, 3, 4, 321, 322)] == [
        "mias-001", "mias-001", "mias-002", "mias-002", "mias-161", "mias-161"]


def test_mias_whole_images(mias_tree):
    assert detect_layout(mias_tree) == "mias"
    ds = load_mias(mias_tree)
    assert [(s.meta["ref"], s.label, s.group) for s in ds] == [
        ("mdb001", "benign", "mias-001"), ("mdb002", "malignant", "mias-001"),
        ("mdb003", "normal", "mias-002"), ("mdb004", "malignant", "mias-002")]
    assert ds[1].meta["abnormality"] == "SPIC;CALC"
    skipped = dict(ds.skipped)
    assert "cannot be parsed" in skipped[str(mias_tree / "mdb005.png")]
    assert "no row in Info.txt" in skipped[str(mias_tree / "mdb099.png")]
    assert "no image file" in skipped[str(mias_tree / "mdb006.png")]
    tasks = {t: [s.label for s in load_mias(mias_tree, task=t, validate=False)]
             for t in ("normal-abnormal", "benign-malignant")}
    assert tasks == {"normal-abnormal": ["abnormal", "abnormal", "normal", "abnormal"],
                     "benign-malignant": ["benign", "malignant", "malignant"]}
    excluded = load_mias(mias_tree, task="benign-malignant", validate=False).info["excluded"]
    assert list(excluded.values()) == [1]


def test_mias_patches_centred_with_border_policies(mias_tree):
    ds = load_mias(mias_tree, unit="patch", patch_size=16)
    by_patch = {s.meta["patch"]: s for s in ds}
    p1 = by_patch["mdb001 row 1: CIRC B at x=60 y=150"]
    full = np.asarray(Image.open(mias_tree / "mdb001.png"), dtype=np.float32) / 255
    assert (p1.meta["centre_row"], p1.meta["centre_col"]) == (50, 60)
    # exact: pixels copied or selected, no arithmetic
    np.testing.assert_array_equal(p1.image, full[42:58, 52:68])
    assert p1.image[8, 8] == pytest.approx(250 / 255) and p1.label == "benign" and p1.group == "mias-001"
    # near the left border (column 5): padded with zeros so the centre stays at (8, 8)
    edge = by_patch["mdb002 row 2: CALC B at x=5 y=100"]
    img2 = np.asarray(Image.open(mias_tree / "mdb002.png"), dtype=np.float32) / 255
    expected = np.zeros((16, 16), np.float32)
    expected[:, 3:] = img2[92:108, 0:13]
    # exact: pixels copied or selected, no arithmetic
    np.testing.assert_array_equal(edge.image, expected)
    assert edge.meta["placement"] == "padded" and edge.meta["centre_in_patch"] == (8, 8)
    assert by_patch["mdb002 row 1: SPIC M at x=70 y=80"].label == "malignant"
    # the abnormal image without coordinates gives no patch, and says so
    assert "has no coordinates" in dict(ds.skipped)[str(mias_tree / "mdb004.png")]
    background = by_patch["mdb003 background"]
    assert background.label == "normal" and background.image.shape == (16, 16)
    assert background.image.min() == pytest.approx(120 / 255)  # fully inside the breast

    shifted = {s.meta["patch"]: s for s in load_mias(mias_tree, unit="patch", patch_size=16, border="shift")}
    edge = shifted["mdb002 row 2: CALC B at x=5 y=100"]
    # exact: pixels copied or selected, no arithmetic
    np.testing.assert_array_equal(edge.image, img2[92:108, 0:16])
    assert edge.meta["centre_in_patch"] == (8, 5) and edge.meta["placement"] == "shifted"
    skipping = load_mias(mias_tree, unit="patch", patch_size=16, border="skip")
    assert "border='skip'" in dict(skipping.skipped)[str(mias_tree / "mdb002.png")]
    assert len(skipping) == len(ds) - 1


def test_mias_patches_are_lazy_keyed_and_picklable(mias_tree):
    a = load_mias(mias_tree, unit="patch", patch_size=16, validate=False)
    b = load_mias(mias_tree, unit="patch", patch_size=16, validate=False)
    assert [s.key for s in a] == [s.key for s in b]
    assert len({s.key for s in a}) == len(a)
    c = load_mias(mias_tree, unit="patch", patch_size=24, validate=False)
    assert not {s.key for s in a} & {s.key for s in c}
    clone = pickle.loads(pickle.dumps(a[0]))
    # exact: the same function on the same input (one code path, one process)
    np.testing.assert_array_equal(clone.image, a[0].image)


def test_mias_fit_radius_enlarges_patch(mias_tree):
    ds = load_mias(mias_tree, unit="patch", patch_size=8, fit_radius=True)
    p1 = next(s for s in ds if s.meta["ref"] == "mdb001")
    assert p1.image.shape == (17, 17) and p1.meta["centre_in_patch"] == (8, 8)


def test_mias_patch_side_from_radius_with_context_by_hand(mias_tree):
    ds = load_mias(mias_tree, unit="patch", patch_size=8, fit_radius=True, context=0.5)
    by_ref = {s.meta["patch"].split(":")[0]: s for s in ds}
    full = np.asarray(Image.open(mias_tree / "mdb001.png"), dtype=np.float32) / 255
    # mdb001: radius 8 -> diameter 17, context ceil(0.5 * 17) = 9 px per side -> 35 px, centre (row 50, col 60)
    p1 = by_ref["mdb001 row 1"]
    assert p1.meta["patch_box"] == (33, 43, 68, 78) and p1.meta["centre_in_patch"] == (17, 17)
    np.testing.assert_array_equal(p1.image, full[33:68, 43:78])  # exact: pixels copied, no arithmetic
    # the same box CropToMask(context=0.5, square=True) cuts around a disk mask of radius 8 there
    yy, xx = np.mgrid[:200, :200]
    disk_mask = (yy - 50) ** 2 + (xx - 60) ** 2 <= 8 ** 2
    assert mask_crop_box(disk_mask, context=0.5, square=True) == (33, 68, 43, 78)
    # mdb002: radius 6 -> 13 + 2 * 7 = 27 px; radius 4 -> 9 + 2 * 5 = 19 px
    assert by_ref["mdb002 row 1"].image.shape == (27, 27)
    assert by_ref["mdb002 row 2"].image.shape == (19, 19)
    assert radius_patch_side(6, 0.5) == 27 and radius_patch_side(4, 0.5) == 19 and radius_patch_side(8) == 17
    # patch_size is the floor: 20 px keeps the 19-px patch at 20, the 27-px one grows
    floored = {s.meta["patch"].split(":")[0]: s for s in
               load_mias(mias_tree, unit="patch", patch_size=20, fit_radius=True, context=0.5)}
    assert floored["mdb002 row 2"].image.shape == (20, 20) and floored["mdb002 row 1"].image.shape == (27, 27)
    assert ds.info["context"] == 0.5 and ds.info["fit_radius"] is True
    # the context is part of the patch key (a different crop)
    plain = load_mias(mias_tree, unit="patch", patch_size=8, fit_radius=True)
    assert not {s.key for s in plain if "row" in s.meta["patch"]} & {s.key for s in ds if "row" in s.meta["patch"]}


def test_mias_context_needs_fit_radius_and_a_non_negative_number(mias_tree):
    with pytest.raises(ValueError, match="context=0.5 .* needs fit_radius=True"):
        load_mias(mias_tree, unit="patch", context=0.5)
    for bad in (-0.1, "0.5", True, float("nan")):
        with pytest.raises(ValueError, match="context must be a number >= 0"):
            load_mias(mias_tree, unit="patch", fit_radius=True, context=bad)


def test_mias_parameter_errors(mias_tree):
    for kwargs, name in [({"task": "tumour"}, "task"), ({"unit": "roi"}, "unit"), ({"patch_size": 4}, "patch_size"),
                         ({"border": "wrap"}, "border"), ({"fit_radius": "yes"}, "fit_radius")]:
        with pytest.raises(ValueError, match=name):
            load_mias(mias_tree, **kwargs)


def test_background_patch_centre_is_deep_inside_tissue():
    yy, xx = np.mgrid[:300, :200]
    image = np.zeros((300, 200), np.float32)
    image[(yy - 150) ** 2 + (xx - 70) ** 2 <= 60 ** 2] = 0.6  # tissue disk: deepest at (150, 70)
    image[5:15, 160:190] = 1.0  # a bright label, smaller than the breast
    row, col = background_patch_centre(image)
    assert abs(row - 150) <= 1 and abs(col - 70) <= 1
    assert background_patch_centre(np.zeros((40, 30), np.float32)) == (20, 15)


# hand-checked against the images: (ref, X, Y, RADIUS) from Info.txt -> centre row 1024 - Y, column X
_MIAS_HAND_CHECKED = {
    "mdb005 row 1: CIRC B at x=477 y=133": (891, 477, 30),
    "mdb005 row 2: CIRC B at x=500 y=168": (856, 500, 26),
    "mdb023 row 1: CIRC M at x=538 y=681": (343, 538, 29),
    "mdb028 row 1: CIRC M at x=338 y=314": (710, 338, 56),
    "mdb058 row 1: MISC M at x=318 y=359": (665, 318, 27),
}


def test_mias_real_patches_centred_on_documented_abnormalities(shared_data):
    root = shared_data / "mias_sample"
    ds = load_mias(root, unit="patch", patch_size=301, task="normal-benign-malignant")
    by_patch = {s.meta["patch"]: s for s in ds}
    yy, xx = np.mgrid[:301, :301]
    distance = np.hypot(yy - 150, xx - 150)
    for name, (row, col, radius) in _MIAS_HAND_CHECKED.items():
        patch = by_patch[name]
        ref = name.split()[0]
        full = np.asarray(Image.open(root / f"{ref}.png"), dtype=np.float32) / 255
        assert (patch.meta["centre_row"], patch.meta["centre_col"]) == (row, col)
        padded = np.pad(full, 150)  # border="pad": zeros outside the image
        # exact: pixels copied or selected, no arithmetic
        np.testing.assert_array_equal(patch.image, padded[row:row + 301, col:col + 301])
        # the documented masses are brighter than the tissue around them
        inner = patch.image[distance <= radius / 2].mean()
        ring = patch.image[(distance > 1.5 * radius) & (distance <= 2.5 * radius)].mean()
        assert inner - ring > 0.1, name
    assert {by_patch[n].label for n in _MIAS_HAND_CHECKED} == {"benign", "malignant"}
    assert by_patch["mdb005 row 1: CIRC B at x=477 y=133"].group == "mias-003"
    assert "has no coordinates" in dict(ds.skipped)[str(root / "mdb059.png")]
    assert len(ds.skipped) == 1


def test_mias_real_whole_images_and_background(shared_data):
    root = shared_data / "mias_sample"
    ds = load_mias(root, validate=False)
    assert ds.class_counts() == {"benign": 14, "malignant": 3, "normal": 43}
    assert len(set(ds.groups)) == 30 and ds.skipped == []
    normal = load_mias(root, unit="patch", task="normal-abnormal", validate=False)
    patch = next(s for s in normal if s.meta["patch"] == "mdb003 background")
    full = np.asarray(Image.open(root / "mdb003.png"), dtype=np.float32) / 255
    # the background patch lies in breast tissue: (almost) every pixel above the Otsu threshold
    assert (patch.image > threshold_otsu(full)).mean() > 0.95


# -- BreakHis -----------------------------------------------------------------------------------------


def test_parse_breakhis_name():
    parsed = parse_breakhis_name("some/dir/SOB_M_DC-14-2523-40-010.png")
    assert (parsed.label, parsed.subtype, parsed.patient, parsed.magnification, parsed.seq) == (
        "malignant", "ductal_carcinoma", "14-2523", 40, 10)
    assert parse_breakhis_name("SOB_B_PT-14-21998AB-100-001").subtype_code == "PT"
    for name, fragment in [("SOB_B_DC-14-2523-40-010.png", "is malignant"), ("SOB_X_A-14-1-40-1.png", "B or M"),
                           ("SOB_B_ZZ-14-1-40-1.png", "subtype"), ("SOB_B_A-14-1-50-1.png", "magnification"),
                           ("benign (1).png", "does not match")]:
        with pytest.raises(ValueError, match=fragment):
            parse_breakhis_name(name)


def test_load_breakhis_generated(tmp_path):
    root = tmp_path / "BreaKHis_v1"
    names = ["SOB_B_A-14-22549AB-40-001.png", "SOB_B_A-14-22549AB-100-001.png", "SOB_M_LC-14-12204-40-001.png"]
    for i, name in enumerate(names):
        _save(root / "benign" / "SOB" / "adenosis" / f"p{i}" / name, np.full((4, 5, 3), 10 * i, np.uint8))
    _save(root / "misc" / "not_breakhis.png", np.zeros((4, 5), np.uint8))
    (root / "misc" / "list.txt").write_text("x")
    ds = load_breakhis(root)
    assert [s.name for s in ds] == names
    assert sorted(zip(ds.y, ds.groups)) == [("benign", "14-22549AB"), ("benign", "14-22549AB"),
                                            ("malignant", "14-12204")]
    assert "does not match" in dict(ds.skipped)[str(root / "misc" / "not_breakhis.png")]
    assert [p for p, _ in ds.info["ignored"]] == [str(root / "misc" / "list.txt")]
    only40 = load_breakhis(root, magnification=40, task="subtype", validate=False)
    assert sorted(only40.y) == ["adenosis", "lobular_carcinoma"]
    assert list(only40.info["excluded"].values()) == [1]
    with pytest.raises(ValueError, match="magnification"):
        load_breakhis(root, magnification=41)
    with pytest.raises(ValueError, match="task"):
        load_breakhis(root, task="grade")


def test_breakhis_real_sample(shared_data):
    ds = load_breakhis(shared_data / "breakhis_sample")
    assert ds.class_counts() == {"benign": 8, "malignant": 4} and ds.skipped == []
    patient = [s for s in ds if s.group == "14-25197"]
    assert sorted(s.meta["magnification"] for s in patient) == [40, 100, 200, 400]
    assert {s.meta["subtype"] for s in patient} == {"fibroadenoma"}
    assert all(s.image.shape == (460, 700, 3) for s in ds[:2])


# -- DMR-IR -------------------------------------------------------------------------------------------


def test_load_dmr_ir_generated(tmp_path, rng):
    root = tmp_path / "dmr"
    def img():
        return rng.integers(0, 256, size=(6, 8), dtype=np.uint8)
    _save(root / "healthy" / "P001" / "static" / "front.png", img())
    _save(root / "healthy" / "P001" / "dynamic" / "0001.png", img())
    _save(root / "sick" / "P002" / "front.png", img())
    _save(root / "sick" / "stray.png", img())
    (root / "healthy" / "P001" / "static" / "front.txt").write_text("36.1 36.2\n")
    (root / "sick" / "P003").mkdir(parents=True)
    (root / "sick" / "P003" / "broken.png").write_bytes(b"")
    assert detect_layout(root) == "dmr-ir"
    ds = load_dmr_ir(root)
    assert [(s.meta["relpath"], s.label, s.group, s.meta["view"]) for s in ds] == [
        ("healthy/P001/dynamic/0001.png", "healthy", "P001", "dynamic"),
        ("healthy/P001/static/front.png", "healthy", "P001", "static"),
        ("sick/P002/front.png", "sick", "P002", ""),
    ]
    skipped = dict(ds.skipped)
    assert "directly inside class folder 'sick'" in skipped[str(root / "sick" / "stray.png")]
    assert "empty" in skipped[str(root / "sick" / "P003" / "broken.png")]
    assert [p for p, _ in ds.info["ignored"]] == [str(root / "healthy" / "P001" / "static" / "front.txt")]


def test_dmr_ir_patient_under_two_classes_is_warned(tmp_path):
    root = tmp_path / "dmr"
    _save(root / "healthy" / "P9" / "a.png", np.zeros((3, 3), np.uint8))
    _save(root / "sick" / "P9" / "b.png", np.ones((3, 3), np.uint8))
    ds = load_dmr_ir(root)
    assert list(ds.groups) == ["P9", "P9"]
    assert "P9" in ds.info["warnings"][0]


# -- layouts ------------------------------------------------------------------------------------------


def test_detect_layout_and_load_dataset(tmp_path, messy_tree):
    root = messy_tree[0]
    assert detect_layout(root) == "folder"
    assert isinstance(load_dataset(root), Dataset)
    csv = tmp_path / "m.csv"
    csv.write_text("path,label\n")
    assert detect_layout(csv) == "manifest"
    flat = tmp_path / "bh"
    _save(flat / "SOB_B_F-14-9133-40-001.png", np.zeros((3, 3), np.uint8))
    assert detect_layout(flat) == "breakhis"
    with pytest.raises(FileNotFoundError):
        detect_layout(tmp_path / "missing")
    with pytest.raises(ValueError, match="layout"):
        load_dataset(root, layout="kaggle")


def test_mias_full_database_rows_with_notes_are_kept_for_whole_image_tasks(tmp_path):
    """The full Info.txt has rows such as ``mdb216 D CALC M *NOTE 3*`` (abnormal, no coordinates, a note)."""
    root = tmp_path / "mias-full"
    size = 200
    for ref in ("mdb215", "mdb216", "mdb217", "mdb218"):
        _save(root / f"{ref}.png", _mammogram(size, (50, 60), 8) if ref == "mdb217" else _mammogram(size))
    (root / "Info.txt").write_text(_INFO_HEADER + "\n".join([
        "mdb215 D NORM",
        "mdb216 D CALC M *NOTE 3*",      # widely distributed calcifications: no coordinates, a note
        "mdb217 G CIRC B 60 150 8",
        "mdb218 G CALC B *NOTE 3*",
    ]) + "\n")
    records, problems = parse_mias_info(root / "Info.txt")
    assert problems == []
    assert [(r.ref, r.abnormality, r.severity, r.x, r.note) for r in records] == [
        ("mdb215", "NORM", None, None, None), ("mdb216", "CALC", "M", None, "*NOTE 3*"),
        ("mdb217", "CIRC", "B", 60, None), ("mdb218", "CALC", "B", None, "*NOTE 3*")]
    for task, labels in (("normal-benign-malignant", ["normal", "malignant", "benign", "benign"]),
                         ("normal-abnormal", ["normal", "abnormal", "abnormal", "abnormal"]),
                         ("benign-malignant", ["malignant", "benign", "benign"])):
        ds = load_mias(root, task=task)
        assert [s.label for s in ds] == labels, task
        assert ds.skipped == [], task  # every image is valid for a whole-image task
        assert (ds.info["task"], ds.info["unit"]) == (task, "image")
    patches = load_mias(root, unit="patch", patch_size=16, task="benign-malignant")
    assert [s.meta["ref"] for s in patches] == ["mdb217"]
    assert (patches.info["task"], patches.info["unit"]) == ("benign-malignant", "patch")
    skipped = dict(patches.skipped)
    assert set(skipped) == {str(root / "mdb216.png"), str(root / "mdb218.png")}
    assert "has no coordinates" in skipped[str(root / "mdb216.png")]
