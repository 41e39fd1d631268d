"""Decode once: a benchmark decodes each image file at most ~once (issue 15, point 3)."""

import collections

import numpy as np
import pytest
from PIL import Image

import featurepipe.io as fio
import featurepipe.sample as fsample
from featurepipe.cache import clear_memory_cache
from featurepipe.cli import main
from featurepipe.sample import Sample, decode_once


@pytest.fixture(autouse=True)
def _fresh():
    clear_memory_cache()


def _busi_layout(root, n_per_class=8, size=40, seed=0):
    """A BUSI-like tree: <class>/<class> (n).png with <class> (n)_mask.png (empty for normal)."""
    rng = np.random.default_rng(seed)
    for k, label in enumerate(("benign", "malignant", "normal")):
        (root / label).mkdir(parents=True)
        for i in range(1, n_per_class + 1):
            image = (rng.random((size, size + 4 * (i % 3))) * 120 + 60 * k).astype(np.uint8)
            mask = np.zeros(image.shape, np.uint8)
            if label != "normal":
                mask[8:8 + 4 + i, 10:24] = 255
            Image.fromarray(image).save(root / label / f"{label} ({i}).png")
            Image.fromarray(mask).save(root / label / f"{label} ({i})_mask.png")
    return 3 * n_per_class


def _count_decodes(monkeypatch):
    calls = collections.Counter()
    read_image, read_mask = fio.read_image, fio.read_mask

    def counting_image(*args, **kwargs):
        calls["image"] += 1
        return read_image(*args, **kwargs)

    def counting_mask(*args, **kwargs):
        calls["mask"] += 1
        return read_mask(*args, **kwargs)

    # read_mask decodes through io.read_image: count images as the calls minus the masks.
    monkeypatch.setattr(fio, "read_image", counting_image)
    monkeypatch.setattr(fio, "read_mask", counting_mask)
    monkeypatch.setattr(fsample, "read_image", counting_image)
    monkeypatch.setattr(fsample, "read_mask", counting_mask)
    import featurepipe.datasets.verify as verify

    monkeypatch.setattr(verify, "read_image", counting_image)
    return calls


def test_a_benchmark_decodes_each_image_at_most_once_and_a_half(tmp_path, monkeypatch, capsys):
    n_images = _busi_layout(tmp_path / "busi")
    calls = _count_decodes(monkeypatch)
    status = main(["benchmark", str(tmp_path / "busi"), "--recipes", "firstorder_glcm_svm,hog_svm,lbp_svm",
                   "--splits", "3", "--output", str(tmp_path / "out")])
    assert status == 0, capsys.readouterr().err
    assert (tmp_path / "out" / "results.json").is_file()
    image_decodes = calls["image"] - calls["mask"]
    assert image_decodes / n_images <= 1.5, dict(calls)
    assert calls["mask"] / n_images <= 1.5, dict(calls)


def test_decode_once_returns_equal_independent_pixels_and_respects_its_byte_limit(tmp_path, monkeypatch):
    paths = []
    for i in range(3):
        path = tmp_path / f"im{i}.png"
        Image.fromarray(np.full((10, 10), 50 * i, np.uint8)).save(path)
        paths.append(path)
    samples = [Sample.from_path(p) for p in paths]
    plain = [s.image for s in samples]
    calls = _count_decodes(monkeypatch)
    # Room for two 10x10 float32 images (400 bytes each): the third is decoded every time.
    with decode_once(max_bytes=800) as cache:
        first = [s.image for s in samples]
        first[0][:] = 1.0  # the caller's copy: the cached pixels stay as decoded
        second = [s.image for s in samples]
        assert cache.nbytes == 800
    assert calls["image"] == 3 + 1
    for a, b in zip(plain, second):
        np.testing.assert_array_equal(a, b)  # exact: the same decoder on the same bytes
    with decode_once():
        samples[0].image
    assert calls["image"] == 5  # a new run starts empty: nothing is kept between runs
    with pytest.raises(ValueError, match="max_bytes must be a non-negative integer"):
        with decode_once(max_bytes=-1):
            pass


def test_feature_steps_and_duplicate_search_leave_unread_masks_undecoded(tmp_path, monkeypatch):
    """Masks are decoded only by steps that read them (issue 15 #3: never decode masks nobody reads)."""
    from featurepipe.duplicates import find_duplicates
    from featurepipe.features import FirstOrderFeatures, ShapeFeatures

    n_images = _busi_layout(tmp_path / "busi", n_per_class=2)
    paths = sorted((tmp_path / "busi").glob("*/*).png"))
    samples = [Sample.from_path(p, mask=p.with_name(p.stem + "_mask.png")) for p in paths]
    calls = _count_decodes(monkeypatch)
    whole = FirstOrderFeatures(use_mask=False, cache=False).fit_transform(samples)
    find_duplicates(samples, method="exact")
    assert calls["mask"] == 0, dict(calls)
    # The same extractor told to read the lesion mask does decode it, and its features differ.
    lesion = FirstOrderFeatures(use_mask=True, empty_mask="nan", cache=False).fit_transform(samples)
    assert calls["mask"] == n_images, dict(calls)
    assert not np.allclose(whole[:2], lesion[:2], equal_nan=True)
    ShapeFeatures(empty_mask="nan", cache=False).fit_transform(samples)  # shape reads only the mask
    assert calls["mask"] == 2 * n_images, dict(calls)
