"""``featurepipe serve``: the app's logic (plain functions) and the page in a real headless browser.

The browser test drives Debian's ``chromium`` through Playwright for Python (Playwright's own browser
download does not work here). It is skipped, with the reason, only when Playwright, Streamlit or the
chromium binary is missing; ``.ci/run`` installs all three.
"""

import csv
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
import skops.io

from featurepipe import recipes
from featurepipe.app import core
from featurepipe.cli import main
from featurepipe.demo import load_demo
from featurepipe.models import ImageModel, load_model, predict_files, save_model

REPO = Path(__file__).resolve().parents[1]
CORRUPT = b"\x89PNG\r\n\x1a\n this is not really a PNG"


@pytest.fixture(scope="module")
def demo_files(tmp_path_factory):
    """A class-per-folder copy of 4 SYNTHETIC demo images per class (128x128 gray PNGs)."""
    dataset = load_demo()
    root = tmp_path_factory.mktemp("serve-data")
    taken = {}
    for sample in dataset.samples:
        label = str(sample.label)
        if taken.get(label, 0) < 4:
            (root / label).mkdir(exist_ok=True)
            shutil.copy(sample.meta["path"], root / label)
            taken[label] = taken.get(label, 0) + 1
    return root


@pytest.fixture(scope="module")
def tiny_model(demo_files, tmp_path_factory):
    """hog_svm fitted on the 12 images by ``featurepipe fit`` (calibrated probabilities)."""
    path = tmp_path_factory.mktemp("serve-model") / "tiny.skops"
    assert main(["fit", "hog_svm", str(demo_files), "-o", str(path)]) == 0
    return path


@pytest.fixture(scope="module")
def query_image(demo_files):
    dataset = load_demo()
    used = {p.name for p in demo_files.rglob("*.png")}
    sample = next(s for s in dataset.samples if Path(_source(s)).name not in used and s.label == "malignant")
    return Path(_source(sample))


def _source(sample):
    return sample.meta["path"]


# ----------------------------------------------------------------------------- the logic
def test_uploads_get_the_rows_of_predict_files(tiny_model, query_image, tmp_path):
    model = load_model(tiny_model)
    results = core.classify_uploads(model, [("my scan.png", query_image.read_bytes()), ("bad.png", CORRUPT),
                                            ("notes.txt", b"hello")], tmp_path / "work")
    expected = predict_files(model, [query_image])[0]
    assert results[0].row == {**expected, "path": "my scan.png"}  # exact: the same function on the same bytes
    assert results[0].image.shape == (128, 128)
    assert results[1].row["prediction"] == "" and results[1].image is None
    assert results[1].row["error"].startswith("ImageReadError") and "bad.png" in results[1].row["error"]
    assert str(tmp_path) not in results[1].row["error"]  # the page names the upload, not the temp file
    assert results[2].row["error"] == ("notes.txt: not an image type this app reads (expected png, jpg, jpeg, "
                                       "gif, tif, tiff, bmp, pgm)")


def test_scores_are_shown_as_scores_and_probabilities_as_percentages(score_model, query_image, demo_files):
    model = load_model(score_model)
    row = predict_files(model, [query_image])[0]
    bars, kind = core.score_bars(row, ["benign", "malignant", "normal"])
    assert kind == "score" and not hasattr(model, "predict_proba")
    values = np.array([row[f"score_{c}"] for c in ("benign", "malignant", "normal")])
    assert [b.text for b in bars] == [f"{v:+.3f}" for v in values]
    np.testing.assert_allclose([b.fraction for b in bars], np.abs(values) / np.abs(values).max(), rtol=1e-12)
    assert [b.predicted for b in bars] == [c == row["prediction"] for c in ("benign", "malignant", "normal")]
    page = core.bars_html(bars, kind)
    assert "not a probability" in page and not any(b.text.endswith("%") for b in bars)
    assert page.count("fp-bar-value") == 3

    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.svm import SVC

    from featurepipe.datasets import load_dataset

    data = load_dataset(str(demo_files))
    pipe = recipes.make("hog_svm").set_params(classifier=CalibratedClassifierCV(SVC(), cv=2))
    calibrated = ImageModel(pipe, mode="gray").fit(data.samples, data.y)
    row = predict_files(calibrated, [query_image])[0]
    bars, kind = core.score_bars(row, calibrated.contract_["classes"])
    proba = calibrated.predict_proba(np.array([data.samples[0].__class__.from_path(query_image, mode="gray")]))[0]
    assert kind == "proba"
    np.testing.assert_allclose([b.value for b in bars], proba, rtol=1e-9)
    assert [b.text for b in bars] == [f"{100 * p:.1f}%" for p in proba]
    np.testing.assert_allclose([b.fraction for b in bars], proba, rtol=1e-12)
    assert "probability (calibrated)" in core.bars_html(bars, kind)
    assert core.is_calibrated(calibrated) and not core.is_calibrated(model)

    # predict_proba without calibration (random-forest vote shares): numbers in [0, 1], never percentages
    from sklearn.ensemble import RandomForestClassifier

    forest = ImageModel(recipes.make("hog_svm").set_params(classifier=RandomForestClassifier(20, random_state=0)),
                        mode="gray").fit(data.samples, data.y)
    row = predict_files(forest, [query_image])[0]
    bars, kind = core.score_bars(row, forest.contract_["classes"], calibrated=core.is_calibrated(forest))
    assert kind == "estimate" and not core.is_calibrated(forest)
    assert [b.text for b in bars] == [f"{row[f'proba_{c}']:.3f}" for c in forest.contract_["classes"]]
    assert "NOT calibrated" in core.bars_html(bars, kind)


def test_folder_csv_equals_featurepipe_predict(score_model, demo_files, capsys):
    capsys.readouterr()
    assert main(["predict", str(score_model), str(demo_files)]) == 0
    expected = capsys.readouterr().out
    rows, notes = core.classify_folder(load_model(score_model), demo_files)
    assert core.predictions_csv(rows) == expected  # exact: the same rows through the same CSV writer
    assert len(list(csv.DictReader(io.StringIO(expected)))) == 12
    assert any("decision values" in n for n in notes)
    with pytest.raises(ValueError, match="is not a folder on this computer"):
        core.classify_folder(load_model(score_model), demo_files / "nowhere")


def test_models_load_only_through_the_safe_loader(tiny_model, tmp_path):
    loaded = core.open_model(tiny_model)
    assert loaded.error is None and loaded.classes == ["benign", "malignant", "normal"]
    assert loaded.card["training_data"]["class_counts"] == {"benign": 4, "malignant": 4, "normal": 4}
    assert loaded.synthetic is False and "- images: 12 (benign: 4, malignant: 4, normal: 4)" in loaded.card_markdown
    # a skops file whose root calls os.system: refused, named, nothing run
    schema = json.loads(zipfile.ZipFile(io.BytesIO(skops.io.dumps(("touch x",)))).read("schema.json"))
    crafted = {"__class__": "system", "__module__": "os", "__loader__": "ConstructorFromReduceNode",
               "content": {k: v for k, v in schema.items() if k not in ("protocol", "_skops_version")},
               "__id__": 1, "protocol": schema["protocol"], "_skops_version": schema["_skops_version"]}
    evil = tmp_path / "evil.skops"
    with zipfile.ZipFile(evil, "w") as archive:
        archive.writestr("schema.json", json.dumps(crafted))
    refused = core.open_model(evil)
    assert refused.model is None and refused.error.startswith("UntrustedModelError")
    assert "os.system" in refused.error and "Nothing was loaded or run" in refused.error
    pickled = tmp_path / "m.joblib"
    save_model(load_model(tiny_model), pickled, format="joblib")
    assert "--unsafe-pickle" in core.open_model(pickled).error and core.open_model(pickled).model is None


def test_a_model_that_needs_masks_is_refused_with_a_reason(demo_files):
    from featurepipe.datasets import load_dataset

    data = load_dataset(str(demo_files))
    masked = ImageModel(recipes.make("hog_svm"), use_mask=True, mode="gray").fit(data.samples, data.y)
    assert "needs its mask" in core.serving_problem(masked) and "--masks" in core.serving_problem(masked)
    assert core.activation_overlay(masked, next(demo_files.rglob("*.png")))[0] is None


def test_cam_overlay_is_the_cnn_head_map(tmp_path, demo_files):
    """A linear head on CNN features gets its CAM overlay; the same numbers as calling cnn.cam directly."""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC, LinearSVC

    from featurepipe.cnn import CNNFeatures
    from featurepipe.cnn.cam import cam_overlay, class_activation_map
    from featurepipe.datasets import load_dataset
    from featurepipe.sample import Sample

    data = load_dataset(str(demo_files))
    pipe = make_pipeline(CNNFeatures(backbone="mobilenet_v2", weights=None, input_size=32), StandardScaler(),
                         LinearSVC(random_state=0))
    model = ImageModel(pipe, mode="gray").fit(data.samples, data.y)
    image = next(demo_files.rglob("*.png"))
    row = predict_files(model, [image])[0]
    overlay, note = core.activation_overlay(model, image, row)  # one-vs-rest LinearSVC: CAM explains it
    assert overlay is not None, note
    sample = Sample.from_path(image, mode="gray")
    cam = class_activation_map(model.estimator_, sample)
    np.testing.assert_array_equal(overlay, cam_overlay(sample.load()[0], cam.heatmap))  # exact: same calls, same process
    assert note.startswith(f"Class activation map for '{cam.target}'")
    none, why = core.activation_overlay(_fit_hog(data), image)
    assert none is None and "no CNN features" in why
    # SVC(kernel="linear") is one-vs-one: its coef_ rows are class pairs, so a map cannot reproduce its
    # decision scores; the app shows none (whether cnn.cam refuses the head itself or the check here does)
    ovo = ImageModel(pipe.set_params(linearsvc=SVC(kernel="linear")), mode="gray").fit(data.samples, data.y)
    none, why = core.activation_overlay(ovo, image, predict_files(ovo, [image])[0])
    assert none is None and why.startswith("No class activation map"), why


def test_cam_overlay_after_a_cropping_image_step_is_drawn_on_the_crop(demo_files):
    """A crop before the CNN (Otsu region) changes the size: the map is overlaid on what the network saw.

    Before, the app refused such a model ("image steps change the image size").
    """
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    from featurepipe.cnn import CNNFeatures
    from featurepipe.cnn.cam import cam_overlay, class_activation_map
    from featurepipe.datasets import load_dataset
    from featurepipe.preprocessing import OtsuROI
    from featurepipe.sample import Sample

    data = load_dataset(str(demo_files))
    pipe = make_pipeline(OtsuROI(), CNNFeatures(backbone="mobilenet_v2", weights=None, input_size=32),
                         StandardScaler(), LinearSVC(random_state=0))
    model = ImageModel(pipe, mode="gray").fit(data.samples, data.y)
    image = next(demo_files.rglob("*.png"))
    sample = Sample.from_path(image, mode="gray")
    cam = class_activation_map(model.estimator_, sample)
    assert cam.heatmap.shape != sample.image.shape[:2]  # the crop really changed the size
    overlay, note = core.activation_overlay(model, image, predict_files(model, [image])[0])
    assert overlay is not None, note
    assert overlay.shape[:2] == cam.image.shape[:2] == cam.heatmap.shape
    np.testing.assert_array_equal(overlay, cam_overlay(cam.image, cam.heatmap))  # exact: same calls, same process
    assert "after the model's image steps" in note


def _fit_hog(data):
    return ImageModel(recipes.make("hog_svm"), mode="gray").fit(data.samples, data.y)


# ----------------------------------------------------------------------------- the page without a browser
def _app_test(monkeypatch, model_path):
    testing = pytest.importorskip("streamlit.testing.v1", reason="the app needs Streamlit (featurepipe[app])")
    monkeypatch.setattr(sys, "argv", ["streamlit_app.py", "--model", str(model_path)])
    app = testing.AppTest.from_file(str(REPO / "featurepipe" / "app" / "streamlit_app.py"), default_timeout=60)
    return app.run()


def test_page_shows_a_refused_model_file(monkeypatch, tmp_path, tiny_model):
    pickled = save_model(load_model(tiny_model), tmp_path / "m.joblib", format="joblib")
    app = _app_test(monkeypatch, pickled)
    assert len(app.error) == 1 and "This model file was not loaded" in app.error[0].value
    assert "--unsafe-pickle" in app.error[0].value and not app.tabs  # the page stops there


def test_page_refuses_uploads_for_a_model_that_needs_masks(monkeypatch, tmp_path, demo_files):
    from featurepipe.datasets import load_dataset

    data = load_dataset(str(demo_files))
    path = save_model(ImageModel(recipes.make("hog_svm"), use_mask=True, mode="gray").fit(data.samples, data.y),
                      tmp_path / "masked.skops")
    app = _app_test(monkeypatch, path)
    assert [e.value for e in app.error] == [core.serving_problem(load_model(path))] * 2  # both tabs say why
    assert len(app.tabs) == 3 and not app.get("file_uploader")


def test_page_folder_mode_classifies_every_image(monkeypatch, tiny_model, demo_files, tmp_path):
    folder = tmp_path / "folder"
    shutil.copytree(demo_files, folder)
    (folder / "benign" / "broken.png").write_bytes(CORRUPT)
    app = _app_test(monkeypatch, tiny_model)
    app.text_input[0].input(str(folder)).run()
    texts = [m.value for m in app.markdown]
    assert "12 of 13 images classified; 1 failed (see the error column)" in texts
    rows, _ = core.classify_folder(load_model(tiny_model), folder)
    assert [r["error"] != "" for r in rows].count(True) == 1
    app.text_input[0].input(str(folder / "nowhere")).run()
    assert [e.value for e in app.error] == [f"{str(folder / 'nowhere')!r} is not a folder on this computer"]


def test_page_labels_a_synthetic_model(monkeypatch, tmp_path):
    from featurepipe.card import build_card, write_card
    from featurepipe.dataset import Dataset
    from featurepipe.models import fit_model

    demo = load_demo()
    subset = Dataset(demo.samples[::15], name=demo.name, root=demo.root, info=demo.info)
    path = save_model(fit_model("hog_svm", subset), tmp_path / "demo.skops")
    write_card(build_card(fit_model("hog_svm", subset), subset, model_path=path), path)
    app = _app_test(monkeypatch, path)
    assert [w.value for w in app.warning] == [
        "SYNTHETIC: this model was trained on generated demo images, not real medical data."]
    assert not app.error and any("SYNTHETIC training data" in m.value for m in app.markdown)


# ----------------------------------------------------------------------------- the browser
def _chromium():
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_healthy(url, server, timeout=90.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"featurepipe serve exited early with status {server.returncode}")
        try:
            with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"featurepipe serve did not answer on {url} within {timeout:.0f} s")


@pytest.fixture(scope="module")
def score_model(demo_files, tmp_path_factory):
    """hog + a plain SVC (decision values, no predict_proba), saved with its card: the recipes are
    calibrated, so this is how a user's own pipeline without probabilities reaches the app."""
    from sklearn.svm import SVC

    from featurepipe.card import build_card, write_card
    from featurepipe.datasets import load_dataset

    data = load_dataset(str(demo_files))
    pipe = recipes.make("hog_svm").set_params(classifier=SVC())
    model = ImageModel(pipe, mode="gray").fit(data.samples, data.y)
    path = save_model(model, tmp_path_factory.mktemp("serve-scores") / "scores.skops")
    write_card(build_card(model, data, model_path=path, source=demo_files), path)
    return path


@pytest.mark.parametrize("which", ["fitted_by_cli", "scores"])
def test_the_page_in_a_real_browser_matches_featurepipe_predict(which, tiny_model, score_model, query_image,
                                                                 tmp_path, capsys):
    """Probabilities show as percentages, decision scores as signed scores: both equal `featurepipe predict`."""
    model_path = tiny_model if which == "fitted_by_cli" else score_model
    pytest.importorskip("streamlit", reason="the app needs Streamlit (pip install 'featurepipe[app]')")
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs Playwright for Python (test extra)")
    browser_path = _chromium()
    if browser_path is None:
        pytest.skip("no chromium binary on PATH (Debian: apt-get install -y chromium; .ci/run installs it)")

    capsys.readouterr()
    assert main(["predict", str(model_path), str(query_image)]) == 0
    expected = next(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    classes = ["benign", "malignant", "normal"]
    upload = tmp_path / "upload.png"
    upload.write_bytes(query_image.read_bytes())
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(CORRUPT)

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false"}
    log = open(tmp_path / "server.log", "w")  # noqa: SIM115 - closed in finally
    server = subprocess.Popen([sys.executable, "-m", "featurepipe", "serve", str(model_path), "--host", "127.0.0.1",
                               "--port", str(port)], stdout=log, stderr=subprocess.STDOUT, env=env,
                              start_new_session=True)
    screenshot, card_screenshot = tmp_path / f"serve-page-{which}.png", tmp_path / f"serve-card-{which}.png"
    try:
        _wait_healthy(url, server)
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=browser_path, headless=True,
                                         args=["--no-sandbox", "--disable-dev-shm-usage"])
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 1500})
                page.goto(url, timeout=60_000)
                page.get_by_text("Classes: benign, malignant, normal", exact=True).wait_for(timeout=60_000)
                page.locator("input[type=file]").set_input_files([str(upload), str(corrupt)])
                page.get_by_text("Predicted class:").first.wait_for(timeout=60_000)
                page.get_by_text("Could not classify corrupt.png").wait_for(timeout=60_000)
                page.locator(".fp-bar").first.wait_for(timeout=30_000)
                shown_class = page.locator("p", has_text="Predicted class:").first.inner_text()
                labels = page.locator(".fp-bar-label").all_inner_texts()
                values = page.locator(".fp-bar-value").all_inner_texts()
                error = page.locator("[data-testid=stAlert]", has_text="corrupt.png").first.inner_text()
                note = page.get_by_text("No class activation map").first.inner_text()
                page.screenshot(path=str(screenshot), full_page=True)
                page.get_by_role("tab", name="Model card").click()
                page.get_by_text("Intended use", exact=True).wait_for(timeout=30_000)
                card_text = page.locator("[data-testid=stMarkdownContainer]", has_text="Training data").inner_text()
                page.screenshot(path=str(card_screenshot), full_page=True)
            finally:
                browser.close()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=20)
        log.close()
    print(f"\nscreenshots of the page: {screenshot} (classify tab), {card_screenshot} (model card tab)")
    assert shown_class.strip() == f"Predicted class: {expected['prediction']}"
    assert labels == classes
    if "proba_benign" in expected and core.is_calibrated(load_model(model_path)):
        # calibrated probabilities: percentages, as featurepipe predict's values
        assert values == [f"{100 * float(expected[f'proba_{c}']):.1f}%" for c in classes]
    elif "proba_benign" in expected:  # uncalibrated probability estimates: plain numbers, no percentages
        assert values == [f"{float(expected[f'proba_{c}']):.3f}" for c in classes]
    else:  # no probabilities (a plain SVC): signed decision scores, never percentages
        assert values == [f"{float(expected[f'score_{c}']):+.3f}" for c in classes]
    # the CLI-fitted recipe is calibrated: percentages; the plain SVC: signed scores
    assert values[0].endswith("%") == (which == "fitted_by_cli")
    assert "Could not classify corrupt.png: ImageReadError" in error
    assert "no CNN features" in note
    assert "NOT a medical device" in card_text and "images: 12 (benign: 4, malignant: 4, normal: 4)" in card_text
    assert screenshot.stat().st_size > 10_000 and card_screenshot.stat().st_size > 10_000


def test_serve_command_line(tiny_model, capsys):
    from featurepipe.cli_run import serve_command

    command = serve_command(tiny_model, port=8765)
    at = command.index("--server.address")
    assert command[at:at + 4] == ["--server.address", "127.0.0.1", "--server.port", "8765"]
    assert command[-2:] == ["--model", str(tiny_model)] and command[1:4] == ["-m", "streamlit", "run"]
    assert main(["serve"]) == 2
    assert "give a MODEL file or --demo (not both)" in capsys.readouterr().err
    assert main(["serve", str(tiny_model), "--demo"]) == 2
    assert main(["serve", str(tiny_model) + ".missing"]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["serve", str(tiny_model), "--port", "70000"])
    assert "--port: must be an integer in [1, 65535]; got '70000'" in capsys.readouterr().err


def test_docstring_examples():
    import doctest

    result = doctest.testmod(core)
    assert result.attempted >= 1 and result.failed == 0
