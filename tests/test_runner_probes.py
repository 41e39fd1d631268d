"""Runner probes: single-class predictions and the "was it cropped?" cue of annotation masks."""

import json

import numpy as np
import pytest
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from featurepipe import FeatureExtractor, Sample
from featurepipe.benchmark import run_benchmark
from featurepipe.benchmark.leakage import single_class_predictions
from featurepipe.cache import clear_memory_cache
from featurepipe.dataset import Dataset
from featurepipe.preprocessing import CropToMask


@pytest.fixture(autouse=True)
def _fresh():
    clear_memory_cache()


class Stats(FeatureExtractor):
    def __init__(self, cache=True, n_jobs=None):
        self.cache = cache
        self.n_jobs = n_jobs

    def _extract(self, image, mask):
        return [image.mean(), image.std()]

    def _feature_names(self):
        return ["mean", "std"]


class MaskedStats(Stats):
    """Mean, std and pixel count inside the mask (whole image when the mask is empty or absent)."""

    def _extract(self, image, mask):
        pixels = image[mask] if mask is not None and mask.any() else image.ravel()
        return [pixels.mean(), pixels.std(), pixels.size]

    def _feature_names(self):
        return ["mean", "std", "n_pixels"]


def _dataset(n=30, seed=0):
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(n):
        label = ("benign", "malignant")[i % 2]
        image = (rng.random((8, 8)) * 0.7 + 0.1 * (i % 2)).astype(np.float32)
        samples.append(Sample.from_array(image, label=label, group=f"p{i}"))
    return Dataset(samples, name="tiny")


def test_a_pipeline_that_predicts_one_class_is_flagged(tmp_path):
    pipelines = {
        "constant": Pipeline([("f", Stats()), ("clf", DummyClassifier(strategy="constant", constant="benign"))]),
        "lr": Pipeline([("f", Stats()), ("scale", StandardScaler()), ("lr", LogisticRegression())]),
    }
    with pytest.warns(UserWarning, match=r"'constant' predicts only 'benign' on 3 of 3 folds \(MCC 0, balanced "
                                         r"accuracy 0.5\)"):
        res = run_benchmark(_dataset(), pipelines, cv=3, duplicates="none", output_dir=tmp_path, plots=False,
                            progress=False)
    flag = res.leakage["pipelines"]["constant"]["single_class_predictions"]
    assert flag["n_folds"] == 3 and flag["n_single_class_folds"] == 3
    assert flag["classes"] == {"benign": 3}
    assert flag["pooled"] == "benign"
    assert [f["fold"] for f in flag["folds"]] == [0, 1, 2]
    np.testing.assert_allclose([f["mcc"] for f in flag["folds"]], 0.0, atol=1e-12)
    np.testing.assert_allclose([f["balanced_accuracy"] for f in flag["folds"]], 0.5, atol=1e-12)
    # The logistic regression separates the shifted classes: not flagged.
    assert res.leakage["pipelines"]["lr"]["single_class_predictions"]["n_single_class_folds"] == 0
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["leakage"]["pipelines"]["constant"]["single_class_predictions"]["classes"] == {"benign": 3}
    assert "'constant' predicts only 'benign' on 3 of 3 folds" in (tmp_path / "summary.md").read_text()


def test_single_class_predictions_counts_folds_and_classes():
    def rec(fold, y_true, y_pred, mcc, bacc):
        return {"repeat": 0, "fold": fold, "status": "ok", "y_true": y_true, "y_pred": y_pred,
                "metrics": {"mcc": mcc, "balanced_accuracy": bacc}}

    folds = [rec(0, ["a", "b", "c"], ["a", "a", "a"], 0.0, 1 / 3), rec(1, ["a", "b", "c"], ["a", "b", "a"], 0.5, 0.6),
             rec(2, ["a", "b", "c"], ["c", "c", "c"], 0.0, 1 / 3)]
    flag = single_class_predictions(folds)
    assert flag["n_folds"] == 3 and flag["n_single_class_folds"] == 2
    assert flag["classes"] == {"a": 1, "c": 1}
    assert flag["pooled"] is None  # the pooled predictions hold three classes
    assert flag["message"] == ("predicts a single class on 2 of 3 folds ('a' on 1, 'c' on 1; MCC 0, "
                               "balanced accuracy 0.333)")
    assert single_class_predictions([folds[1]])["message"] is None


def _busi_like(n_per_class=10, seed=0):
    """Three classes; 'normal' images have empty masks, the others a lesion mask (BUSI's layout)."""
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(3 * n_per_class):
        label = ("benign", "malignant", "normal")[i % 3]
        image = rng.random((16, 16)).astype(np.float32)  # no class signal in the pixels
        mask = np.zeros((16, 16), bool)
        if label != "normal":
            side = int(rng.integers(3, 9))
            mask[4:4 + side, 4:4 + side] = True
        samples.append(Sample.from_array(image, mask, label=label, group=f"p{i}"))
    return Dataset(samples, name="busi-like")


def test_mask_presence_that_gives_the_label_away_is_warned():
    pipelines = {"masked": Pipeline([("f", MaskedStats()), ("scale", StandardScaler()), ("lr", LogisticRegression())]),
                 "whole": Pipeline([("f", Stats()), ("scale", StandardScaler()), ("lr", LogisticRegression())])}
    with pytest.warns(UserWarning, match="annotation masks predict the label"):
        res = run_benchmark(_busi_like(), pipelines, cv=3, duplicates="none", progress=False)
    probe = res.leakage["mask_cue"]
    # Mask presence alone separates 'normal' from the rest: in-fold balanced accuracy 2/3 (normal always right,
    # benign/malignant a coin toss between the two) against a chance level of 1/3.
    assert probe["chance"] == pytest.approx(1 / 3)
    assert probe["balanced_accuracy"] == pytest.approx(2 / 3, abs=0.05)
    assert probe["balanced_accuracy_with_area"] >= 0.6
    assert probe["classes_without_mask"] == ["normal"]
    assert probe["pipelines_reading_masks"] == ["masked"]
    assert any("masked" in w and "annotation masks predict the label" in w for w in res.leakage["warnings"])


def test_no_mask_cue_warning_when_masks_do_not_follow_the_label():
    ds = _busi_like()
    rng = np.random.default_rng(3)
    shuffled = []
    for s in ds.samples:  # every image gets a lesion mask of random size, whatever its class
        mask = np.zeros((16, 16), bool)
        side = int(rng.integers(3, 9))
        mask[4:4 + side, 4:4 + side] = True
        shuffled.append(Sample.from_array(s.image, mask, label=s.label, group=s.group))
    pipelines = {"masked": Pipeline([("f", MaskedStats()), ("scale", StandardScaler()), ("lr", LogisticRegression())])}
    with pytest.warns(UserWarning) as record:
        res = run_benchmark(Dataset(shuffled, name="random masks"), pipelines, cv=3, duplicates="none", progress=False)
    assert not any("annotation masks predict the label" in str(w.message) for w in record)
    # Every image has a mask: presence carries nothing (the constant cue predicts one class: chance).
    assert res.leakage["mask_cue"]["balanced_accuracy"] == pytest.approx(1 / 3)
    assert res.leakage["mask_cue"]["predicts_label"] is False


def test_a_prefix_that_refuses_images_without_masks_reads_masks():
    ds = _busi_like()
    lesions = Dataset([s for s in ds.samples if s.label != "normal"], name="lesions")
    pipelines = {"roi": Pipeline([("roi", CropToMask(margin=1)), ("f", Stats()), ("lr", LogisticRegression())])}
    with pytest.warns(UserWarning, match="pipeline 'roi' reads the annotation masks"):
        res = run_benchmark(lesions, pipelines, cv=3, duplicates="none", progress=False)
    assert res.leakage["pipelines"]["roi"]["uses_annotation_masks"] is True
    # Benign vs malignant, every image with a lesion mask: no "was it cropped?" cue to warn about.
    assert res.leakage["mask_cue"]["predicts_label"] is False
    assert not any("annotation masks predict the label" in w for w in res.leakage["warnings"])
