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
from featurepipe.cli_run import load_model, predict_files, save_model
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
    model = load_model(fitted_model, verbose=False)
    images = np.empty(2, dtype=object)
    images[:] = [read_image(folder / "a_smooth8.png"), read_image(folder / "b_rough16.png")]
    proba = model.predict_proba(images)
    assert list(model.classes_) == ["rough", "smooth"]
    np.testing.assert_allclose([float(good["proba_smooth"]), float(sixteen["proba_smooth"])], proba[:, 1], rtol=1e-6)
    np.testing.assert_allclose([float(good["proba_rough"]), float(sixteen["proba_rough"])], proba[:, 0], rtol=1e-6)


def test_saved_model_reloads_in_a_fresh_process_and_predicts_identically(fitted_model, folder_dataset, tmp_path):
    files = sorted(str(p) for p in folder_dataset.rglob("*.png"))
    here = predict_files(load_model(fitted_model, verbose=False), files)
    script = (
        "import json, sys\n"
        "from featurepipe.cli_run import load_model, predict_files\n"
        "rows = predict_files(load_model(sys.argv[1], verbose=False), sys.argv[2:])\n"
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
    model = load_model(fitted_model, verbose=False)
    path = save_model(model, tmp_path / "model.joblib")
    files = sorted(str(p) for p in folder_dataset.rglob("*.png"))[:4]
    assert predict_files(load_model(path), files) == predict_files(model, files)
    with pytest.raises(ValueError, match="is not a skops file"):
        load_model(path, format="skops")
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
