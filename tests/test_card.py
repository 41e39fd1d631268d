"""Model cards written by ``featurepipe fit``: real counts, contract, and a CV estimate recomputed here."""

import csv
import json

import cv2
import numpy as np
import pytest
from sklearn.base import clone

from featurepipe import recipes
from featurepipe.benchmark import CVSpec, make_splits, merge_groups
from featurepipe.card import card_paths, read_card
from featurepipe.cli import main
from featurepipe.datasets import file_sha256, load_dataset
from featurepipe.duplicates import find_duplicates
from featurepipe.metrics import METRIC_RANGES, compute_metrics
from featurepipe.model_selection import group_labels
from featurepipe.models import load_model
from featurepipe.stats import summarize


def _disc(rng, label, size=32):
    yy, xx = np.mgrid[:size, :size]
    cy, cx = rng.uniform(size * 0.4, size * 0.6, 2)
    disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= rng.uniform(size * 0.25, size * 0.35) ** 2
    img = (0.1 + 0.1 * xx / size).astype(np.float64)
    # Each image has its own faint speckle: two "smooth" discs are different images, not one
    # image shifted and rescaled (which the duplicate detection rightly groups).
    speckle = rng.normal(0, 0.15 if label == "rough" else 0.1, (size, size))
    inside = 0.7 + speckle + (0.0 if label == "rough" else 0.05 * yy / size)
    img[disc] = inside[disc]
    return np.rint(np.clip(img, 0, 1) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    """Manifest with 2 images per patient (10 patients per class), one byte-identical copy under another patient, one broken file."""
    root = tmp_path_factory.mktemp("cards")
    rng = np.random.default_rng(1)
    rows = []
    for label in ("rough", "smooth"):
        for i in range(20):  # 10 patients per class: enough groups for a nested 3-fold grid
            name = f"{label}{i:02d}.png"
            cv2.imwrite(str(root / name), _disc(rng, label))
            rows.append((name, label, f"{label}-p{i // 2}"))
    (root / "copy.png").write_bytes((root / "rough03.png").read_bytes())  # same pixels, other patient
    rows.append(("copy.png", "rough", "rough-p99"))
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    rows.append(("broken.png", "smooth", "smooth-p9"))
    path = root / "manifest.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label", "group"])
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def fitted_with_cv(manifest, tmp_path_factory):
    out = tmp_path_factory.mktemp("model") / "m.skops"
    assert main(["fit", "glcm_svm", str(manifest), "-o", str(out), "--cv", "3", "--seed", "4"]) == 0
    return out


def test_card_paths_sit_beside_the_model(fitted_with_cv):
    md, js = card_paths(fitted_with_cv)
    assert md == fitted_with_cv.with_name("m.card.md") and js == fitted_with_cv.with_name("m.card.json")
    assert md.is_file() and js.is_file()


def test_card_describes_the_training_data_and_contract(manifest, fitted_with_cv):
    card = json.loads(card_paths(fitted_with_cv)[1].read_text())
    dataset = load_dataset(str(manifest))
    data = card["training_data"]
    assert data["n_images"] == len(dataset) == 41
    assert data["class_counts"] == {"rough": 21, "smooth": 20} == {str(k): v for k, v in dataset.class_counts().items()}
    assert data["n_patient_groups"] == len(set(dataset.groups)) == 21  # 10 + 10 patients, plus rough-p99
    assert data["n_images_without_group"] == 0
    assert [s["path"].endswith("broken.png") for s in data["skipped"]] == [True]
    assert data["source"] == str(manifest.resolve()) and data["synthetic"] is False
    report = find_duplicates(dataset.samples)
    assert data["duplicates"]["n_clusters"] == report.n_clusters >= 1
    assert data["duplicates"]["n_exact_pairs"] == report.n_exact_pairs == 1  # copy.png == rough03.png
    assert "merged with its patients into one group" in data["duplicates"]["handled"]

    model = load_model(fitted_with_cv)
    assert card["contract"] == model.contract_
    assert card["contract"]["classes"] == ["rough", "smooth"] and card["contract"]["use_mask"] is False
    assert card["contract"]["mode"] == "gray" and card["contract"]["recipe"] == "glcm_svm"
    assert card["model"]["sha256"] == file_sha256(fitted_with_cv)
    assert card["model"]["parameters"]["classifier__estimator__C"] == model.estimator_.get_params()["classifier__estimator__C"]
    assert "NOT a medical device" in card["intended_use"]
    assert card["versions"]["scikit-learn"] == __import__("sklearn").__version__

    md = card_paths(fitted_with_cv)[0].read_text()
    assert "NOT a medical device" in md and "- images: 41 (rough: 21, smooth: 20)" in md
    assert "- lesion masks needed: no" in md and "- classes: rough, smooth" in md


def test_card_cv_estimate_equals_a_recomputation(manifest, fitted_with_cv):
    """The card's numbers equal fitting the recipe on the grouped splits by hand (no prefix cache)."""
    est = json.loads(card_paths(fitted_with_cv)[1].read_text())["estimate"]
    assert est["source"] == "cv" and est["cv"] == {"n_splits": 3, "n_repeats": 1, "random_state": 4}
    dataset = load_dataset(str(manifest))
    samples, y = dataset.samples, np.asarray(dataset.y)
    # the runner's grouping: patients joined through duplicate clusters, named after their smallest patient
    groups = group_labels(dataset.groups, merge_groups(dataset.groups, find_duplicates(samples).cluster_ids))
    splits = make_splits(y, groups, CVSpec(n_splits=3, n_repeats=1, random_state=4))
    pipe = recipes.make("glcm_svm", random_state=4)
    per_fold = {"accuracy": [], "mcc": [], "roc_auc": []}
    for split in splits:
        model = clone(pipe).fit(samples[split.train], y[split.train])
        scores = model.predict_proba(samples[split.test])  # the recipe is calibrated
        result = compute_metrics(y[split.test], model.predict(samples[split.test]), scores,
                                 labels=["rough", "smooth"])
        for m in per_fold:
            per_fold[m].append(result[m])
    ratio = np.mean([len(s.test) / len(s.train) for s in splits])  # the real per-fold sizes
    assert est["n_folds_ok"] == 3 and est["n_folds_failed"] == 0
    for m, values in per_fold.items():
        expected = summarize(values, test_train_ratio=ratio, bounds=METRIC_RANGES[m])
        for key in ("mean", "std", "ci_low", "ci_high"):
            # tolerance: the runner's cached-prefix path and this direct fit differ only in float rounding
            np.testing.assert_allclose(est["metrics"][m][key], expected[key], rtol=1e-9, atol=1e-12)
    md = card_paths(fitted_with_cv)[0].read_text()
    acc = est["metrics"]["accuracy"]
    assert f"| accuracy | {acc['mean']:.3f} | {acc['std']:.3f} | {acc['ci_low']:.3f} | {acc['ci_high']:.3f} |" in md


def test_predict_prints_which_card_it_uses(fitted_with_cv, manifest, tmp_path, capsys):
    image = manifest.parent / "rough00.png"
    assert main(["predict", str(fitted_with_cv), str(image)]) == 0
    assert f"featurepipe predict: model card: {card_paths(fitted_with_cv)[1]}" in capsys.readouterr().err
    alone = tmp_path / "alone.skops"
    alone.write_bytes(fitted_with_cv.read_bytes())
    assert main(["predict", str(alone), str(image)]) == 0
    assert "featurepipe predict: no model card found beside" in capsys.readouterr().err
    # a card that belongs to another file is not used
    card_paths(alone)[1].write_text(card_paths(fitted_with_cv)[1].read_text())
    alone.write_bytes(alone.read_bytes() + b"")  # same bytes: the card matches
    assert read_card(alone)[0] is not None
    with open(alone, "ab") as fh:
        fh.write(b"x")
    card, _, note = read_card(alone)
    assert card is None and "describes another model file" in note


def test_fit_from_results_takes_the_benchmark_estimate(manifest, tmp_path, capsys):
    results = tmp_path / "bench"
    assert main(["benchmark", str(manifest), "--recipes", "glcm_svm", "--splits", "3", "--no-plots",
                 "--output", str(results)]) == 0
    out = tmp_path / "m.skops"
    assert main(["fit", "glcm_svm", str(manifest), "-o", str(out), "--from-results", str(results)]) == 0
    est = json.loads(card_paths(out)[1].read_text())["estimate"]
    bench = json.loads((results / "results.json").read_text())
    assert est["source"] == "benchmark results" and est["results_path"] == str(results.resolve())
    # exact: the same JSON numbers copied from results.json
    assert est["metrics"]["mcc"] == bench["summary"]["glcm_svm"]["mcc"]
    capsys.readouterr()
    # another recipe option -> refused: the benchmark's numbers do not describe this model
    assert main(["fit", "glcm_svm", str(manifest), "-o", str(tmp_path / "n.skops"), "--from-results",
                 str(results), "--preprocessing", "median"]) == 2
    err = capsys.readouterr().err
    assert "was benchmarked with other parameters than this model" in err
    assert not (tmp_path / "n.skops").exists()
    assert main(["fit", "glcm_svm", str(manifest), "-o", str(tmp_path / "n.skops"), "--from-results",
                 str(tmp_path / "nowhere")]) == 2
    assert "no benchmark results at" in capsys.readouterr().err
    tuned = tmp_path / "tuned"
    assert main(["benchmark", str(manifest), "--recipes", "glcm_svm", "--splits", "3", "--no-plots", "--grid",
                 "--output", str(tuned)]) == 0
    capsys.readouterr()
    assert main(["fit", "glcm_svm", str(manifest), "-o", str(tmp_path / "n.skops"), "--from-results",
                 str(tuned)]) == 2
    assert "was tuned by nested CV over a parameter grid" in capsys.readouterr().err


def test_docstring_examples():
    import doctest

    import featurepipe.card

    assert doctest.testmod(featurepipe.card).failed == 0
