"""Leakage: SMOTE before the split inflates scores, the runner's in-fold SMOTE does not;
duplicates and patients never straddle folds; the leakage report sees what it should."""

import numpy as np
import pytest
from imblearn.over_sampling import SMOTE
from imblearn.pipeline import Pipeline as ImbPipeline
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import RepeatedStratifiedKFold, cross_val_score
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline

from featurepipe import FeatureExtractor, Sample
from featurepipe.augment import AugmentingSampler
from featurepipe.benchmark import (
    CVSpec,
    Split,
    find_samplers,
    leakage_report,
    make_splits,
    merge_groups,
    run_benchmark,
)
from featurepipe.benchmark.splits import exact_duplicate_clusters
from featurepipe.dataset import Dataset


class Pixels(FeatureExtractor):
    """The raw pixel values as features."""

    def __init__(self, cache=True, n_jobs=None):
        self.cache = cache
        self.n_jobs = n_jobs

    def _extract(self, image, mask):
        return image.ravel()

    def _feature_names(self):
        return [f"px{i}" for i in range(8)]


def _noise_dataset(X, y):
    samples = [Sample.from_array(row.reshape(2, 4).astype(np.float32), label=int(label), group=f"p{i}")
               for i, (row, label) in enumerate(zip(X, y))]
    return Dataset(samples, name="noise")


def test_smote_before_the_split_inflates_scores_but_the_runner_does_not():
    # Pure noise: 60 majority and 12 minority samples with random features. Nothing is learnable.
    rng = np.random.default_rng(0)
    X = rng.random((72, 8)).astype(np.float32)
    y = np.r_[np.zeros(60, int), np.ones(12, int)]
    cv = RepeatedStratifiedKFold(n_splits=4, n_repeats=3, random_state=0)

    # The leaky protocol: oversample everything, then cross-validate. Synthetic minority points
    # sit between their real parents, which end up in the training folds -> near neighbours.
    X_over, y_over = SMOTE(k_neighbors=3, random_state=0).fit_resample(X, y)
    leaky = cross_val_score(KNeighborsClassifier(3), X_over, y_over, cv=cv, scoring="roc_auc").mean()
    assert leaky > 0.8

    # The runner: SMOTE inside the imblearn pipeline, so it only ever sees training folds.
    pipe = ImbPipeline([("px", Pixels()), ("smote", SMOTE(k_neighbors=3, random_state=0)),
                        ("knn", KNeighborsClassifier(3))])
    res = run_benchmark(_noise_dataset(X, y), {"smote+knn": pipe},
                        cv={"n_splits": 4, "n_repeats": 3, "random_state": 0}, progress=False, rope=None)
    honest = res.summary["smote+knn"]["roc_auc"]
    assert honest["mean"] < 0.7
    assert leaky - honest["mean"] > 0.2
    assert honest["ci_low"] < 0.5 < honest["ci_high"]  # chance is inside the corrected interval
    [sampler] = res.leakage["pipelines"]["smote+knn"]["resampling"]
    assert sampler["step"] == "smote" and sampler["inside_training_folds"] is True
    assert res.leakage["pipelines"]["smote+knn"]["resampling_summary"] == "inside training folds only"

    # What the runner cannot see: data oversampled before they reached it (documented limitation).
    pre = run_benchmark(_noise_dataset(X_over, y_over), {"knn": Pipeline([("px", Pixels()),
                                                                          ("knn", KNeighborsClassifier(3))])},
                        cv={"n_splits": 4, "n_repeats": 3, "random_state": 0}, progress=False, rope=None,
                        # near-duplicate grouping happens to catch some SMOTE copies; "exact" shows the limit
                        duplicates="exact")
    assert pre.summary["knn"]["roc_auc"]["mean"] > 0.8
    assert "cannot be detected" in pre.leakage["undetectable"]


def _images_with_copies(tmp_path, n_unique=30, n_copies=8, seed=0):
    """Unique images plus exact pixel copies filed under other patients (PNG and BMP files, other masks)."""
    rng = np.random.default_rng(seed)
    samples, origin = [], []
    pixels = [rng.integers(0, 256, (6, 6), dtype=np.uint8) for _ in range(n_unique)]
    for i, px in enumerate(pixels):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(px).save(path)
        samples.append(Sample.from_path(path, label=("a", "b")[i % 2], group=f"patient{i}"))
        origin.append(i)
    for k in range(n_copies):
        i = (3 * k) % n_unique
        if k % 2:  # same pixels, another file format: different bytes, same image
            path = tmp_path / f"copy{k}.bmp"
            Image.fromarray(pixels[i]).save(path)
            samples.append(Sample.from_path(path, label=("a", "b")[i % 2], group=f"other{k}"))
        else:  # same pixels in memory, with a mask: a different sample key
            samples.append(Sample.from_array(pixels[i], mask=np.eye(6, dtype=bool), label=("a", "b")[i % 2],
                                             group=f"other{k}"))
        origin.append(i)
    return Dataset(samples, name="copies"), np.array(origin)


class MeanFeature(FeatureExtractor):
    def __init__(self, cache=True, n_jobs=None):
        self.cache = cache
        self.n_jobs = n_jobs

    def _extract(self, image, mask):
        return [image.mean(), image.std()]

    def _feature_names(self):
        return ["mean", "std"]


def test_exact_duplicates_never_straddle_folds(tmp_path):
    ds, origin = _images_with_copies(tmp_path)
    clusters = exact_duplicate_clusters(ds.samples)
    # clusters are exactly the "same pixels" relation
    assert all((clusters[i] == clusters[j]) == (origin[i] == origin[j])
               for i in range(len(origin)) for j in range(len(origin)))
    pipe = Pipeline([("f", MeanFeature()), ("lr", LogisticRegression())])
    cv = {"n_splits": 4, "n_repeats": 2, "random_state": 0}
    res = run_benchmark(ds, {"lr": pipe}, cv=cv, progress=False)
    for split in res.splits:
        train_origins = set(origin[split["train"]])
        test_origins = set(origin[split["test"]])
        assert not train_origins & test_origins
    dup = res.leakage["duplicates"]
    assert dup["status"] == "ok" and dup["straddling"] == 0
    assert dup["n_clusters_with_copies"] == len(set(origin[30:])) and dup["n_samples_in_such_clusters"] == 8 + len(
        set(origin[30:]))

    # Without duplicate grouping the same seeds do split copies: the test above is not vacuous,
    # and the report warns when duplicates are not checked.
    patients = [s.group for s in ds.samples]
    naive = make_splits(ds.y, merge_groups(patients), CVSpec(**cv))
    assert any(set(origin[s.train]) & set(origin[s.test]) for s in naive)
    with pytest.warns(UserWarning, match="duplicate images were not checked"):
        unchecked = run_benchmark(ds, {"lr": pipe}, cv=cv, progress=False, duplicates=None)
    assert unchecked.leakage["duplicates"]["status"] == "not checked"
    # user-supplied clusters are honoured and verified
    given = run_benchmark(ds, {"lr": pipe}, cv=cv, progress=False, duplicates=[f"c{o}" for o in origin])
    assert given.leakage["duplicates"]["straddling"] == 0
    assert given.config["split_fingerprint"] == res.config["split_fingerprint"]


def test_merge_groups_connects_patients_through_duplicates():
    patients = ["p1", "p1", "p2", "p3", "p4", None]
    clusters = [0, 1, 1, 2, 3, 3]  # p1's second image is a copy of p2's; p4 shares with an unknown
    # exact: integer, boolean or string values
    np.testing.assert_array_equal(merge_groups(patients, clusters), [0, 0, 0, 1, 2, 2])
    np.testing.assert_array_equal(merge_groups(["a", "b", "a"]), [0, 1, 0])
    with pytest.raises(ValueError, match=r"groupings\[1\] has 3 entries"):
        merge_groups([1, 2], [1, 2, 3])


def test_leakage_report_counts_straddlers_in_given_splits():
    splits = [Split(0, 0, np.array([0, 1, 2]), np.array([3, 4])), Split(0, 1, np.array([3, 4]), np.array([0, 1, 2]))]
    with_leak = leakage_report(splits, patient_groups=["p", "q", "r", "r", "s"], duplicate_clusters=[0, 1, 2, 3, 1],
                               duplicates_method="test", pipelines={}, prefixes={}, tuned={})
    assert with_leak["groups"]["straddling"] == 2  # group r in both folds' train/test sides
    assert with_leak["duplicates"]["straddling"] == 2  # cluster 1 (samples 1 and 4)
    assert with_leak["status"] == "warnings" and len(with_leak["warnings"]) == 2


def test_find_samplers_sees_imblearn_and_augmenting_samplers():
    pipe = ImbPipeline([("aug", AugmentingSampler(n_copies=1)), ("px", Pixels()),
                        ("smote", SMOTE()), ("lr", LogisticRegression())])
    found = find_samplers(pipe)
    assert [(f["step"], f["class"], f["inside_training_folds"]) for f in found] == [
        ("aug", "AugmentingSampler", True), ("smote", "SMOTE", True)]
    # a bare sampler outside any imblearn pipeline is flagged
    [bare] = find_samplers(SMOTE())
    assert bare["inside_training_folds"] is False
    assert find_samplers(Pipeline([("px", Pixels()), ("lr", LogisticRegression())])) == []


class MaskedMean(FeatureExtractor):
    """Mean and std inside the mask (whole image without one)."""

    def __init__(self, cache=True, n_jobs=None):
        self.cache = cache
        self.n_jobs = n_jobs

    def _extract(self, image, mask):
        pixels = image[mask] if mask is not None and mask.any() else image
        return [pixels.mean(), pixels.std()]

    def _feature_names(self):
        return ["mean", "std"]


def test_report_flags_pipelines_that_read_test_masks():
    rng = np.random.default_rng(1)
    samples = []
    for i in range(24):
        image = rng.random((8, 8)).astype(np.float32)
        mask = np.zeros((8, 8), bool)
        mask[2:2 + i % 4 + 2, 2:6] = True
        samples.append(Sample.from_array(image, mask, label=i % 2, group=f"p{i}"))
    ds = Dataset(samples, name="masked")
    pipelines = {"masked": Pipeline([("f", MaskedMean()), ("lr", LogisticRegression())]),
                 "whole": Pipeline([("f", MeanFeature()), ("lr", LogisticRegression())])}
    with pytest.warns(UserWarning, match="pipeline 'masked' reads the annotation masks of test images"):
        res = run_benchmark(ds, pipelines, cv=3, progress=False)
    assert res.leakage["pipelines"]["masked"]["uses_annotation_masks"] is True
    assert res.leakage["pipelines"]["whole"]["uses_annotation_masks"] is False
    plain = Dataset([Sample.from_array(s.image, label=s.label, group=s.group) for s in samples], name="plain")
    res = run_benchmark(plain, pipelines, cv=3, progress=False)
    assert res.leakage["pipelines"]["masked"]["uses_annotation_masks"] == "no masks in the data"
    assert res.leakage["status"] == "ok"
