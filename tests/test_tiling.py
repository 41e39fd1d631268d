"""TiledFeatures: tile geometry by hand, pooled features against the inner extractor on hand-cut tiles."""

from __future__ import annotations

import pickle
import warnings

import cv2
import numpy as np
import pytest
from sklearn.base import clone

from featurepipe import TiledFeatures
from featurepipe.cache import clear_memory_cache, step_token
from featurepipe.features import BagOfVisualWords, FirstOrderFeatures, GLCMFeatures
from featurepipe.sample import Sample
from featurepipe.tiling import cut_tiles, rescale, tile_boxes, tile_starts

RTOL = 1e-10  # the same float64 statistics of the same pixels, summed in the same order


def _image(rng, shape):
    return rng.random(shape).astype(np.float32)


def _inner(**params):
    return FirstOrderFeatures(cache=False, **params)


def _hand_pooled(inner, tiles, pooling):
    features = inner.transform([Sample.from_array(t) if m is None else Sample.from_array(t, m) for t, m in tiles])
    return features.max(axis=0) if pooling == "max" else features.mean(axis=0)


# ----------------------------------------------------------------------------- geometry
def test_tile_starts_snap_the_last_tile_to_the_border():
    # length 13, tile 6, stride 3: 0, 3, 6 and then 7 (= 13 - 6) instead of 9, which would pass the border
    assert tile_starts(13, 6, 3) == [0, 3, 6, 7]
    assert tile_starts(12, 6, 3) == [0, 3, 6]  # divisible: no extra tile
    assert tile_starts(6, 6, 3) == [0]
    assert tile_starts(4, 6, 3) == [0]  # shorter than a tile: one tile
    assert tile_starts(10, 4, 4) == [0, 4, 6]


def test_tile_boxes_cover_the_image_in_raster_order():
    boxes = tile_boxes((13, 10), 6, 0.5)  # stride round(6 * 0.5) = 3
    rows, cols = [0, 3, 6, 7], [0, 3, 4]
    assert boxes == [(r, r + 6, c, c + 6) for r in rows for c in cols]
    covered = np.zeros((13, 10), bool)
    for r0, r1, c0, c1 in boxes:
        covered[r0:r1, c0:c1] = True
    assert covered.all()
    assert tile_boxes((13, 10), (4, 10), 0.0) == [(0, 4, 0, 10), (4, 8, 0, 10), (8, 12, 0, 10), (9, 13, 0, 10)]


def test_undersized_tiles_are_padded_with_zeros_or_kept(rng):
    image = _image(rng, (5, 9))
    mask = np.zeros((5, 9), bool)
    mask[1:3, 2:8] = True
    padded = cut_tiles(image, mask, 8, 0.0, "pad")
    assert [box for _, _, box in padded] == [(0, 5, 0, 8), (0, 5, 1, 9)]
    tile, tile_mask, _ = padded[1]
    assert tile.shape == (8, 8) and tile_mask.shape == (8, 8)
    np.testing.assert_array_equal(tile[:5], image[:, 1:9])  # exact: copied pixels, not computed
    assert not tile[5:].any() and not tile_mask[5:].any()
    np.testing.assert_array_equal(tile_mask[:5], mask[:, 1:9])  # exact: a boolean mask sliced
    kept = cut_tiles(image, mask, 8, 0.0, "keep")
    np.testing.assert_array_equal(kept[0][0], image[:, 0:8])  # exact: a view of the image
    assert kept[0][0].shape == (5, 8)


def test_rescale_matches_opencv_area_and_linear(rng):
    image = _image(rng, (20, 14))
    small, _ = rescale(image, None, 0.5)
    np.testing.assert_allclose(small, cv2.resize(image, (7, 10), interpolation=cv2.INTER_AREA), rtol=1e-6)
    big, _ = rescale(image, None, 1.5)
    np.testing.assert_allclose(big, cv2.resize(image, (21, 30), interpolation=cv2.INTER_LINEAR), rtol=1e-6)
    same, mask = rescale(image, None, 1.0)
    assert same is image and mask is None


# ----------------------------------------------------------------------------- features against hand-cut tiles
@pytest.mark.parametrize("pooling", ["max", "mean"])
def test_pooled_features_equal_the_inner_extractor_on_hand_cut_tiles(rng, pooling):
    image = _image(rng, (13, 10))  # not divisible by the tile or the stride
    inner = _inner()
    tiled = TiledFeatures(inner, tile=6, overlap=0.5, scales=(1.0, 0.5), pooling=pooling, cache=False)
    got = tiled.transform([image])
    n = len(inner.get_feature_names_out())
    assert got.shape == (1, 2 * n)
    # scale 1: rows 0, 3, 6, 7 x columns 0, 3, 4 (6-px tiles, stride 3)
    full = [(image[r:r + 6, c:c + 6], None) for r in (0, 3, 6, 7) for c in (0, 3, 4)]
    np.testing.assert_allclose(got[0, :n], _hand_pooled(inner, full, pooling), rtol=RTOL)
    # scale 0.5: the image is 6 x 5 (13 * 0.5 = 6.5 rounds half to even: 6), one tile padded to 6 x 6
    half = cv2.resize(image, (5, 6), interpolation=cv2.INTER_AREA)
    padded = np.zeros((6, 6), np.float32)
    padded[:, :5] = half
    np.testing.assert_allclose(got[0, n:], _hand_pooled(inner, [(padded, None)], pooling), rtol=1e-6)


def test_both_poolings_concatenate_and_names_say_scale_and_pooling(rng):
    image = _image(rng, (12, 12))
    inner = _inner()
    both = TiledFeatures(inner, tile=6, overlap=0.0, pooling=("max", "mean"), cache=False)
    got = both.transform([image])
    tiles = [(image[r:r + 6, c:c + 6], None) for r in (0, 6) for c in (0, 6)]
    expected = np.concatenate([_hand_pooled(inner, tiles, "max"), _hand_pooled(inner, tiles, "mean")])
    np.testing.assert_allclose(got[0], expected, rtol=RTOL)
    names = both.get_feature_names_out()
    inner_names = inner.get_feature_names_out()
    assert names[0] == f"tiles_s1_max_{inner_names[0]}"
    assert names[len(inner_names)] == f"tiles_s1_mean_{inner_names[0]}"
    assert TiledFeatures(inner, scales=(0.5,)).get_feature_names_out()[0] == f"tiles_s0p5_max_{inner_names[0]}"


def test_image_smaller_than_a_tile_gives_one_padded_or_whole_tile(rng):
    image = _image(rng, (5, 7))
    inner = _inner()
    padded = np.zeros((8, 8), np.float32)
    padded[:5, :7] = image
    got = TiledFeatures(inner, tile=8, cache=False).transform([image])
    np.testing.assert_allclose(got[0], _hand_pooled(inner, [(padded, None)], "max"), rtol=RTOL)
    kept = TiledFeatures(inner, tile=8, undersized="keep", cache=False).transform([image])
    np.testing.assert_allclose(kept[0], _hand_pooled(inner, [(image, None)], "max"), rtol=RTOL)


def test_masks_are_cut_along_and_min_foreground_drops_background_tiles(rng):
    image = _image(rng, (12, 12))
    mask = np.zeros((12, 12), bool)
    mask[0:6, 0:6] = True  # the top-left tile, fully
    mask[6:9, 6:8] = True  # 6 of the 36 pixels of the bottom-right tile
    inner = _inner(use_mask=True, empty_mask="nan")
    sample = Sample.from_array(image, mask)
    boxes = [(r, c) for r in (0, 6) for c in (0, 6)]
    cut = [(image[r:r + 6, c:c + 6], mask[r:r + 6, c:c + 6]) for r, c in boxes]
    # min_foreground=0: every tile; the two empty-mask tiles give NaN features, which pooling ignores
    every = TiledFeatures(inner, tile=6, overlap=0.0, cache=False).transform([sample])
    with_mask = [cut[0], cut[3]]
    np.testing.assert_allclose(every[0], _hand_pooled(inner, with_mask, "max"), rtol=RTOL)
    # min_foreground=0.5: only the top-left tile (coverage 1, 0, 0, 1/6)
    dense = TiledFeatures(inner, tile=6, overlap=0.0, min_foreground=0.5, cache=False).transform([sample])
    np.testing.assert_allclose(dense[0], _hand_pooled(inner, [cut[0]], "max"), rtol=RTOL)
    # nothing reaches 0.9 once the top-left quarter is gone: the best-covered tile is used
    sparse_mask = mask.copy()
    sparse_mask[0:6, 0:6] = False
    sparse = Sample.from_array(image, sparse_mask)
    fallback = TiledFeatures(inner, tile=6, overlap=0.0, min_foreground=0.9, cache=False).transform([sparse])
    np.testing.assert_allclose(fallback[0], _hand_pooled(inner, [(cut[3][0], sparse_mask[6:, 6:])], "max"),
                               rtol=RTOL)


def test_images_outside_the_unit_range_are_tiled_as_they_are(rng):
    # e.g. after Standardize: tiles are not re-checked against the [0, 1] convention
    image = (_image(rng, (8, 8)) - 0.5) * 4
    inner = FirstOrderFeatures(intensity_range="region", cache=False)
    got = TiledFeatures(inner, tile=4, overlap=0.0, cache=False).transform([_raw_sample(image)])
    tiles = [_raw_sample(np.ascontiguousarray(image[r:r + 4, c:c + 4])) for r in (0, 4) for c in (0, 4)]
    np.testing.assert_allclose(got[0], inner.transform(tiles).max(axis=0), rtol=RTOL)


class _RawSource:
    """Arbitrary float pixels (bypassing from_array's [0, 1] check), as an image step can produce."""

    def __init__(self, image):
        self.image = image

    def load(self):
        return self.image, None

    def load_image(self):
        return self.image

    def describe(self):
        return "<raw>"


def _raw_sample(image):
    return Sample(f"raw-{image.shape}-{image.tobytes().hex()[:64]}-{float(image.sum())!r}", _RawSource(image))


# ----------------------------------------------------------------------------- contract: cache, clone, pickle
def test_cached_per_sample_and_key_holds_the_inner_parameters(rng, monkeypatch):
    clear_memory_cache()
    images = [_image(rng, (8, 8)) for _ in range(3)]
    tiled = TiledFeatures(GLCMFeatures(levels=8), tile=4, overlap=0.0)
    first = tiled.transform(images)
    calls = []
    original = TiledFeatures._extract_many
    monkeypatch.setattr(TiledFeatures, "_extract_many", lambda self, s: calls.append(len(s)) or original(self, s))
    again = clone(tiled).transform(images + [_image(rng, (8, 8))])
    assert calls == [1]  # only the new image was computed
    np.testing.assert_array_equal(again[:3], first)  # exact: the cache returns the stored bytes
    other = clone(tiled).set_params(extractor__levels=16)
    assert step_token(other) != step_token(tiled)
    assert "levels=16" in step_token(other)
    restored = pickle.loads(pickle.dumps(tiled))
    np.testing.assert_allclose(restored.set_params(cache=False).transform(images), first, rtol=RTOL)
    assert tiled.get_params()["extractor__levels"] == 8


def test_tiles_of_several_images_go_to_the_inner_extractor_in_one_call(rng, monkeypatch):
    inner = _inner()
    calls = []
    original = FirstOrderFeatures._extract_many
    monkeypatch.setattr(FirstOrderFeatures, "_extract_many", lambda self, s: calls.append(len(s)) or original(self, s))
    images = [_image(rng, (8, 8)) for _ in range(5)]
    TiledFeatures(inner, tile=4, overlap=0.0, cache=False).transform(images)
    assert calls == [20]  # 5 images x 4 tiles, one call
    calls.clear()
    TiledFeatures(inner, tile=4, overlap=0.0, batch_size=8, cache=False).transform(images)
    assert calls == [8, 8, 4]  # whole images, at least batch_size tiles per call


def test_cnn_inner_extractor_on_native_size_tiles(rng):
    pytest.importorskip("tensorflow")
    from featurepipe.cnn import CNNFeatures

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"CNNFeatures\(.*weights=None", category=UserWarning)
        inner = CNNFeatures("efficientnet_lite0", weights=None, input_size=32, cache=False)
        images = [_image(rng, (48, 40)), _image(rng, (32, 32))]
        got = TiledFeatures(inner, tile=32, overlap=0.5, cache=False).transform(images)
        # image 0: rows 0, 16 x columns 0, 8 (stride 16, last snapped to 40 - 32); image 1: one tile
        first = [images[0][r:r + 32, c:c + 32] for r in (0, 16) for c in (0, 8)]
        expected0 = inner.transform(first).max(axis=0)
        expected1 = inner.transform([images[1]])[0]
    scale = float(np.abs(expected0).max())
    np.testing.assert_allclose(got[0], expected0, rtol=1e-5, atol=1e-5 * scale)
    np.testing.assert_allclose(got[1], expected1, rtol=1e-5, atol=1e-5 * scale)


# ----------------------------------------------------------------------------- validation
@pytest.mark.parametrize("params, message", [
    ({"tile": 0}, "tile"),
    ({"tile": (4, 0)}, "tile"),
    ({"overlap": 1.0}, "overlap"),
    ({"scales": ()}, "scales"),
    ({"scales": (1.0, 1.0)}, "scales"),
    ({"scales": (0.0,)}, "scales"),
    ({"pooling": "median"}, "pooling"),
    ({"pooling": ("max", "max")}, "pooling"),
    ({"min_foreground": 1.5}, "min_foreground"),
    ({"undersized": "crop"}, "undersized"),
])
def test_bad_parameters_are_refused_by_name(params, message):
    with pytest.raises(ValueError, match=message):
        TiledFeatures(_inner(), **params).transform([np.zeros((8, 8), np.float32)])


def test_extractors_that_learn_or_are_not_feature_extractors_are_refused():
    with pytest.raises(ValueError, match="stateless feature extractor"):
        TiledFeatures(BagOfVisualWords()).get_feature_names_out()
    with pytest.raises(ValueError, match="extractor"):
        TiledFeatures("cnn").get_feature_names_out()
    with pytest.raises(ValueError, match="levels"):  # the inner extractor's own rules
        TiledFeatures(GLCMFeatures(levels=1)).get_feature_names_out()


def test_a_failing_sample_is_named(rng):
    mask = np.zeros((8, 8), bool)  # empty mask: the inner extractor refuses it (empty_mask="error")
    sample = Sample.from_array(_image(rng, (8, 8)), mask)
    with pytest.raises(ValueError, match="empty"):
        TiledFeatures(_inner(use_mask=True), tile=4, cache=False).transform([sample])


# ----------------------------------------------------------------------------- the recipe
def test_convnet_tiles_svm_recipe_tiles_at_the_backbone_native_size():
    from featurepipe import recipes
    from featurepipe.cnn import get_backbone

    pipe = recipes.make("convnet_tiles_svm")
    assert [name for name, _ in pipe.steps] == ["breast", "breast_crop", "features", "scale", "classifier"]
    breast = pipe.named_steps["breast"]
    assert breast.output == "mask" and breast.clear_outside
    features = pipe.named_steps["features"]
    spec = get_backbone("efficientnet_lite0")
    assert features.tile == spec.default_input_size == 224 and features.extractor.input_size is None
    assert (features.overlap, tuple(features.scales), features.pooling, features.min_foreground) == (
        0.5, (1.0, 0.5), "max", 0.1)
    # SVMlight's C = 1 / n_features: one block of 1280 features per scale
    assert pipe.named_steps["classifier"].estimator.C == pytest.approx(1 / (2 * spec.output_dim))
    one_scale = recipes.make("convnet_tiles_svm", scales=(1.0,))
    assert one_scale.named_steps["classifier"].estimator.C == pytest.approx(1 / spec.output_dim)
    assert "tile" in recipes.get("convnet_tiles_svm").defaults


# ----------------------------------------------------------------------------- multi-context lesion crops
def test_multi_context_features_equal_crop_to_mask_then_the_extractor(rng):
    from sklearn.pipeline import FeatureUnion, make_pipeline

    from featurepipe import MultiContextFeatures
    from featurepipe.preprocessing import CropToMask

    samples = []
    for k in range(3):
        mask = np.zeros((40, 48), bool)
        mask[8 + k:20 + 2 * k, 10:18 + 3 * k] = True  # lesions of different sizes and shapes
        samples.append(Sample.from_array(_image(rng, (40, 48)), mask))
    inner = _inner(use_mask=True)
    got = MultiContextFeatures(inner, contexts=(0.25, 1.0), margin=2, cache=False).transform(samples)
    union = FeatureUnion([(f"c{c}", make_pipeline(CropToMask(margin=2, context=c, square=True), inner))
                          for c in (0.25, 1.0)])
    np.testing.assert_allclose(got, union.fit_transform(samples), rtol=RTOL)
    names = MultiContextFeatures(inner, contexts=(0.25, 1.0)).get_feature_names_out()
    n = len(inner.get_feature_names_out())
    assert names[0] == f"context_c0p25_{inner.get_feature_names_out()[0]}" and names[n].startswith("context_c1_")
    assert step_token(MultiContextFeatures(inner, contexts=(0.25,))) != step_token(MultiContextFeatures(inner))


def test_multi_context_features_refuse_samples_without_a_region(rng):
    from featurepipe import MultiContextFeatures

    image = _image(rng, (16, 16))
    with pytest.raises(ValueError, match="has no mask"):
        MultiContextFeatures(_inner(), cache=False).transform([Sample.from_array(image)])
    with pytest.raises(ValueError, match="mask is empty"):
        MultiContextFeatures(_inner(), cache=False).transform([Sample.from_array(image, np.zeros((16, 16), bool))])
    for bad in [(), (0.5, 0.5), (-1.0,), ("wide",)]:
        with pytest.raises(ValueError, match="contexts"):
            MultiContextFeatures(_inner(), contexts=bad).get_feature_names_out()


def test_convnet_tiles_svm_with_use_mask_tiles_the_lesion_crop_instead_of_the_breast():
    from featurepipe import recipes

    region = recipes.make("convnet_tiles_svm", use_mask=True)
    assert [name for name, _ in region.steps] == ["roi", "features", "scale", "classifier"]
    assert region.named_steps["roi"].margin == recipes.ROI_MARGIN
    # the same tiles and pooling as on the breast region
    assert repr(region.named_steps["features"]) == repr(recipes.make("convnet_tiles_svm").named_steps["features"])
