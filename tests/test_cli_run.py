"""featurepipe recipes / fit / predict / benchmark on tiny generated image folders."""

import csv
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from featurepipe import recipes
from featurepipe.cli import main
from featurepipe.models import load_model, predict_files, save_model
from featurepipe.io import read_image


def _disc(rng, label, size=32):
    yy, xx = np.mgrid[:size, :size]
    cy, cx = rng.uniform(size * 0.4, size * 0.6, 2)
    disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= rng.uniform(size * 0.25, size * 0.35) ** 2
    img = (0.1 + 0.1 * xx / size).astype(np.float64)
    inside = 0.7 + (rng.normal(0, 0.15, (size, size)) if label == "rough" else 0.05 * yy / size)
    img[disc] = inside[disc]
    return np.clip(img, 0, 1)


@pytest.fixture(scope="module")
def folder_dataset(tmp_path_factory):
    """Class-per-folder dataset: 12 smooth and 12 rough 8-bit PNGs."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    for label in ("rough", "smooth"):
        (root / label).mkdir()
        for i in range(12):
            cv2.imwrite(str(root / label / f"{label}{i:02d}.png"), np.rint(_disc(rng, label) * 255).astype(np.uint8))
    return root


@pytest.fixture(scope="module")
def fitted_model(folder_dataset, tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "model.skops"
    assert main(["fit", "glcm_svm", str(folder_dataset), "-o", str(path)]) == 0
    return path


def test_recipes_command_lists_every_recipe(capsys):
    assert main(["recipes", "--citations"]) == 0
    out = capsys.readouterr().out
    for name, description, citation in recipes.list():
        assert f"{name}  " in out and description in out and citation in out


def test_predict_folder_with_corrupt_and_16_bit_files(fitted_model, tmp_path, capsys):
    rng = np.random.default_rng(5)
    folder = tmp_path / "new"
    folder.mkdir()
    smooth, rough = _disc(rng, "smooth"), _disc(rng, "rough")
    cv2.imwrite(str(folder / "a_smooth8.png"), np.rint(smooth * 255).astype(np.uint8))
    cv2.imwrite(str(folder / "b_rough16.png"), np.rint(rough * 65535).astype(np.uint16))
    (folder / "c_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    (folder / "notes.txt").write_text("not an image, not listed")
    out = tmp_path / "predictions.csv"
    status = main(["predict", str(fitted_model), str(folder), "-o", str(out)])
    captured = capsys.readouterr()
    assert status == 1  # some file failed
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [os.path.basename(r["path"]) for r in rows] == ["a_smooth8.png", "b_rough16.png", "c_corrupt.png"]
    good, sixteen, bad = rows
    assert read_image(folder / "b_rough16.png").dtype == np.float32  # 16-bit decodes to [0, 1]
    assert good["prediction"] == "smooth" and good["error"] == ""
    assert sixteen["prediction"] == "rough" and sixteen["error"] == ""
    assert bad["prediction"] == "" and bad["error"]
    assert "c_corrupt.png" in captured.err and "could not classify" in captured.err
    assert "2 of 3 images classified" in captured.err
    # Recipes are calibrated: proba_<class> columns are the model's own predict_proba.
    model = load_model(fitted_model)
    images = np.empty(2, dtype=object)
    images[:] = [read_image(folder / "a_smooth8.png", mode="gray"), read_image(folder / "b_rough16.png", mode="gray")]
    assert list(model.classes_) == ["rough", "smooth"]
    proba = model.predict_proba(images)
    np.testing.assert_allclose([[float(r["proba_rough"]), float(r["proba_smooth"])] for r in (good, sixteen)],
                               proba, rtol=1e-6)
    assert "score_smooth" not in good


def test_saved_model_reloads_in_a_fresh_process_and_predicts_identically(fitted_model, folder_dataset, tmp_path):
    files = sorted(str(p) for p in folder_dataset.rglob("*.png"))
    here = predict_files(load_model(fitted_model), files)
    script = (
        "import json, sys\n"
        "from featurepipe.models import load_model, predict_files\n"
        "rows = predict_files(load_model(sys.argv[1]), sys.argv[2:])\n"
        "print(json.dumps(rows))\n"
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "no_proxy": "*", "HTTP_PROXY": "http://0.0.0.0:9",
           "HTTPS_PROXY": "http://0.0.0.0:9"}  # no network in the fresh process
    done = subprocess.run([sys.executable, "-c", script, str(fitted_model), *files], capture_output=True,
                          text=True, env=env, check=True, timeout=300)
    there = json.loads(done.stdout.strip().splitlines()[-1])
    assert there == here
    # The fitted model learned the task: its training images are classified correctly.
    assert all(os.path.basename(os.path.dirname(r["path"])) == r["prediction"] for r in here)


def test_joblib_format_round_trip_and_clear_errors(fitted_model, folder_dataset, tmp_path):
    model = load_model(fitted_model)
    path = save_model(model, tmp_path / "model.joblib", format="joblib")
    files = sorted(str(p) for p in folder_dataset.rglob("*.png"))[:4]
    with pytest.warns(UserWarning, match="unpickling runs any code"):
        unpickled = load_model(path, unsafe_pickle=True)
    assert predict_files(unpickled, files) == predict_files(model, files)
    with pytest.raises(ValueError, match="is a pickle/joblib file"):
        load_model(path)
    with pytest.raises(ValueError, match="does not exist"):
        load_model(tmp_path / "missing.skops")
    assert main(["fit", "no_such_recipe", str(folder_dataset), "-o", str(tmp_path / "m.skops")]) == 2


def test_benchmark_command_on_a_folder(folder_dataset, tmp_path, capsys):
    out = tmp_path / "report"
    status = main(["benchmark", str(folder_dataset), "--recipes", "glcm_svm,firstorder_glcm_svm", "--splits", "3",
                   "--no-plots", "--output", str(out)])
    assert status == 0
    printed = capsys.readouterr().out
    assert "glcm_svm" in printed and "firstorder_glcm_svm" in printed and str(out) in printed
    result = json.loads((out / "results.json").read_text())
    folds = [f for f in result["folds"] if f["pipeline"] == "glcm_svm"]
    assert len(folds) == 3
    # The summary mean is the mean of the per-fold accuracies recomputed from the stored predictions.
    per_fold = [np.mean(np.asarray(f["y_true"]) == np.asarray(f["y_pred"])) for f in folds]
    assert result["summary"]["glcm_svm"]["accuracy"]["mean"] == pytest.approx(np.mean(per_fold))


def test_benchmark_command_on_a_local_dask_cluster(folder_dataset, tmp_path, capsys):
    distributed = pytest.importorskip("distributed")
    out_local, out_dask = tmp_path / "local", tmp_path / "dask"
    args = [str(folder_dataset), "--recipes", "glcm_svm", "--splits", "3", "--no-plots"]
    assert main(["benchmark", *args, "--output", str(out_local)]) == 0
    # Two workers: with a single worker thread joblib would fall back to running the folds sequentially.
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster:
        assert main(["benchmark", *args, "--output", str(out_dask), "--backend", "dask",
                     "--scheduler", cluster.scheduler_address]) == 0
        # The folds really ran on the cluster's workers.
        assert sum(w.state.executed_count for w in cluster.workers.values()) >= 3
    capsys.readouterr()
    local = json.loads((out_local / "results.json").read_text())
    remote = json.loads((out_dask / "results.json").read_text())
    # Same splits, same predictions whether the folds ran locally or on the cluster.
    assert [f["y_pred"] for f in remote["folds"]] == [f["y_pred"] for f in local["folds"]]
    assert remote["config"]["backend"] == "dask"


# ----------------------------------------------------------------------------- the model's input contract
def _lesion(rng, label, size=48):
    """An image with one disc lesion (rough or smooth inside) and the lesion's mask."""
    yy, xx = np.mgrid[:size, :size]
    cy, cx = rng.uniform(size * 0.4, size * 0.6, 2)
    mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= rng.uniform(size * 0.2, size * 0.3) ** 2
    img = 0.2 + 0.05 * rng.normal(0, 1, (size, size))
    inside = 0.6 + (rng.normal(0, 0.15, (size, size)) if label == "malignant" else 0.02 * yy / size)
    img[mask] = inside[mask]
    return np.rint(np.clip(img, 0, 1) * 255).astype(np.uint8), mask


@pytest.fixture(scope="module")
def busi_like(tmp_path_factory):
    """A BUSI-style tree (``x.png`` + ``x_mask.png``) and a masked model fitted on it."""
    root = tmp_path_factory.mktemp("busi")
    rng = np.random.default_rng(3)
    for label in ("benign", "malignant"):
        (root / label).mkdir()
        for i in range(10):
            img, mask = _lesion(rng, label)
            cv2.imwrite(str(root / label / f"{label} ({i}).png"), img)
            cv2.imwrite(str(root / label / f"{label} ({i})_mask.png"), mask.astype(np.uint8) * 255)
    model = root.parent / f"{root.name}-masked.skops"
    assert main(["fit", "glcm_svm", str(root), "--layout", "busi", "--use-mask", "-o", str(model)]) == 0
    return root, model


def test_saved_model_records_its_input_contract(busi_like, fitted_model):
    from featurepipe import __version__
    from featurepipe.models import MODEL_FORMAT

    masked = load_model(busi_like[1]).contract_
    assert masked == {"format": MODEL_FORMAT, "featurepipe_version": __version__, "use_mask": True, "mode": "gray",
                      "classes": ["benign", "malignant"], "recipe": "glcm_svm",
                      "options": {"preprocessing": None, "balancing": None, "backbone": None, "use_mask": True,
                                  "random_state": 0},
                      "backbone": None, "input_size": None}
    whole = load_model(fitted_model).contract_
    assert whole["use_mask"] is False and whole["mode"] == "gray"  # 8-bit gray PNGs, read as stored
    assert whole["classes"] == ["rough", "smooth"]


def test_predict_requires_masks_for_a_masked_model(busi_like, tmp_path, capsys):
    root, model = busi_like
    new = tmp_path / "new"
    new.mkdir()
    rng = np.random.default_rng(11)
    for name, label in (("a", "benign"), ("b", "malignant")):
        img, mask = _lesion(rng, label)
        cv2.imwrite(str(new / f"{name}.png"), img)
        cv2.imwrite(str(new / f"{name}_mask.png"), mask.astype(np.uint8) * 255)
    capsys.readouterr()
    assert main(["predict", str(model), str(new)]) == 2
    err = capsys.readouterr().err
    assert "fitted with use_mask=True" in err and "--masks '{stem}_mask*.png'" in err
    out = tmp_path / "p.csv"
    assert main(["predict", str(model), str(new), "--masks", "{stem}_mask*.png", "-o", str(out)]) == 0
    err = capsys.readouterr().err
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    # The masks are the images' masks, not images to classify: skipped and said so.
    assert [os.path.basename(r["path"]) for r in rows] == ["a.png", "b.png"]
    assert "skipped 2 mask files beside their images" in err and "a_mask.png" in err
    # The rows are what the model gives for the images *with* their masks, read in gray.
    from featurepipe.sample import Sample

    fitted = load_model(model)
    X = np.empty(2, dtype=object)
    X[:] = [Sample.from_path(new / f"{n}.png", new / f"{n}_mask.png", mode="gray") for n in "ab"]
    assert [r["prediction"] for r in rows] == fitted.predict(X).tolist() == ["benign", "malignant"]
    kind = "proba" if hasattr(fitted, "predict_proba") else "score"
    expected = fitted.predict_proba(X) if kind == "proba" else fitted.decision_function(X)
    got = [float(r[f"{kind}_malignant"]) for r in rows]
    np.testing.assert_allclose(got, expected[:, 1] if expected.ndim == 2 else expected, rtol=1e-6)
    # A pattern that finds no mask names the image in its row instead of classifying it whole.
    assert main(["predict", str(model), str(new / "a.png"), "--masks", "{stem}_lesion.png"]) == 1
    assert "no mask file matches '{stem}_lesion.png'" in capsys.readouterr().err
    assert main(["predict", str(model), str(new / "a.png"), "--masks", "{name}_mask.png"]) == 2
    assert "masks pattern '{name}_mask.png' may use only {stem}" in capsys.readouterr().err


def test_predict_skips_busi_mask_files_for_a_whole_image_model(fitted_model, busi_like, capsys):
    root, _ = busi_like
    assert main(["predict", str(fitted_model), str(root / "benign")]) == 0
    captured = capsys.readouterr()
    rows = list(csv.DictReader(captured.out.splitlines()))
    assert len(rows) == 10 and not any("_mask" in r["path"] for r in rows)
    assert "skipped 10 mask files beside their images (not classified)" in captured.err


def test_predict_reads_images_in_the_trained_mode(fitted_model, folder_dataset, tmp_path, capsys):
    gray = folder_dataset / "rough" / "rough00.png"
    rgb = tmp_path / "rough00_rgb.png"
    cv2.imwrite(str(rgb), cv2.cvtColor(cv2.imread(str(gray), cv2.IMREAD_GRAYSCALE), cv2.COLOR_GRAY2BGR))
    model = load_model(fitted_model)
    rows = predict_files(model, [gray, rgb])
    assert rows[0]["error"] == rows[1]["error"] == ""
    kind = "proba" if hasattr(model, "predict_proba") else "score"
    # The RGB copy is read as gray, as the model was trained: same numbers as the gray file.
    np.testing.assert_allclose(float(rows[1][f"{kind}_rough"]), float(rows[0][f"{kind}_rough"]), rtol=1e-9)
    assert main(["predict", str(fitted_model), str(rgb), "--mode", "rgb"]) == 2
    assert "mode='rgb' contradicts the model, which was trained on gray images" in capsys.readouterr().err


@pytest.mark.parametrize("change, message", [
    ({"format": 2}, "has model format 2"),
    ({"featurepipe_version": "9.1.0"}, "was written by featurepipe 9.1.0, newer than this featurepipe"),
])
def test_predict_refuses_a_model_it_cannot_honour(fitted_model, folder_dataset, tmp_path, capsys, change, message):
    model = load_model(fitted_model)
    model.contract_ = {**model.contract_, **change}
    path = save_model(model, tmp_path / "future.skops")
    assert main(["predict", str(path), str(folder_dataset / "rough" / "rough00.png")]) == 2
    err = capsys.readouterr().err
    assert message in err and "upgrade featurepipe" in err


# ----------------------------------------------------------------------------- nothing dropped silently
def test_fit_lists_the_files_it_left_out(folder_dataset, tmp_path, capsys):
    data = tmp_path / "data"
    for label in ("rough", "smooth"):
        (data / label).mkdir(parents=True)
        for f in sorted((folder_dataset / label).glob("*.png"))[:6]:
            (data / label / f.name).write_bytes(f.read_bytes())
    (data / "rough" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (data / "smooth" / "empty.png").write_bytes(b"")
    assert main(["fit", "glcm_svm", str(data), "-o", str(tmp_path / "m.skops")]) == 0
    captured = capsys.readouterr()
    assert "featurepipe fit: 2 files left out of the training set:" in captured.err
    assert "broken.png" in captured.err and "empty.png" in captured.err
    assert "fitted glcm_svm on 12 images" in captured.out and "2 files left out (listed above)" in captured.out


def test_predict_reports_a_dangling_symlink_in_a_folder(fitted_model, folder_dataset, tmp_path, capsys):
    folder = tmp_path / "new"
    folder.mkdir()
    (folder / "a.png").write_bytes((folder_dataset / "rough" / "rough00.png").read_bytes())
    (folder / "b.png").symlink_to(tmp_path / "gone.png")
    assert main(["predict", str(fitted_model), str(folder)]) == 1
    captured = capsys.readouterr()
    rows = list(csv.DictReader(captured.out.splitlines()))
    assert [os.path.basename(r["path"]) for r in rows] == ["a.png", "b.png"]
    assert rows[0]["error"] == "" and rows[1]["prediction"] == ""
    assert rows[1]["error"] == f"dangling symbolic link (its target {str(tmp_path / 'gone.png')!r} does not exist)"
    assert "could not classify" in captured.err and "b.png" in captured.err


def test_predict_writes_probabilities_of_a_calibrated_model(folder_dataset, tmp_path, capsys):
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.svm import SVC

    from featurepipe.datasets import load_dataset
    from featurepipe.models import ImageModel

    dataset = load_dataset(str(folder_dataset))
    pipe = recipes.make("glcm_svm").set_params(classifier=CalibratedClassifierCV(SVC(), cv=3))
    model = ImageModel(pipe, mode="gray").fit(dataset.samples, dataset.y)
    path = save_model(model, tmp_path / "calibrated.skops")
    files = [folder_dataset / "rough" / "rough01.png", folder_dataset / "smooth" / "smooth01.png"]
    assert main(["predict", str(path), *map(str, files)]) == 0
    captured = capsys.readouterr()
    rows = list(csv.DictReader(captured.out.splitlines()))
    assert list(rows[0]) == ["path", "prediction", "proba_rough", "proba_smooth", "error"]
    proba = np.array([[float(r["proba_rough"]), float(r["proba_smooth"])] for r in rows])
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-9)
    X = np.empty(2, dtype=object)
    X[:] = [read_image(f, mode="gray") for f in files]
    np.testing.assert_allclose(proba, load_model(path).predict_proba(X), rtol=1e-6)
    assert "decision values" not in captured.err


def test_a_model_without_probabilities_writes_scores_and_says_so(folder_dataset, tmp_path):
    """A user's pipeline without predict_proba: decision values, never labelled as probabilities."""
    from sklearn.pipeline import make_pipeline
    from sklearn.svm import SVC

    from featurepipe.features import FirstOrderFeatures
    from featurepipe.models import ImageModel

    files = sorted(str(p) for p in folder_dataset.rglob("*.png"))
    images = np.empty(len(files), dtype=object)
    images[:] = [read_image(f, mode="gray") for f in files]
    labels = [os.path.basename(os.path.dirname(f)) for f in files]
    model = ImageModel(make_pipeline(FirstOrderFeatures(), SVC()), mode="gray").fit(images, labels)
    path = save_model(model, tmp_path / "plain.skops")
    with pytest.warns(UserWarning, match="score_<class> columns are decision values, not probabilities"):
        rows = predict_files(load_model(path), files)
    assert not any(key.startswith("proba_") for key in rows[0])
    decision = model.decision_function(images)  # binary: one column, positive = classes_[1]
    np.testing.assert_allclose([float(r[f"score_{model.classes_[1]}"]) for r in rows], decision, rtol=1e-6)
