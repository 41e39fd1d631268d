"""Start fast, stay quiet: what each command imports, TensorFlow's log lines, the CLI's disk feature cache."""

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from featurepipe.base import set_feature_cache
from featurepipe.cli import main
from featurepipe.cli_run import default_cache_dir
from featurepipe.features import GLCMFeatures

ROOT = Path(__file__).resolve().parents[1]
#: TensorFlow's C++ start-up notices that a default run must not print.
NOISE = ("oneDNN custom operations are on", "absl::InitializeLog()")


def _run_cli(argv, cwd, env=None):
    """Run the command line in a fresh interpreter; returns (exit status, stderr, heavy modules it imported)."""
    script = ("import json, sys\nfrom featurepipe.cli import main\nstatus = main(sys.argv[1:])\n"
              "print(json.dumps({'status': status, 'modules': sorted(m for m in ('tensorflow', 'keras', 'sklearn', "
              "'featurepipe.cnn.extractor') if m in sys.modules)}))")
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    proc = subprocess.run([sys.executable, "-c", script, *argv], cwd=cwd, env=environment,
                          capture_output=True, text=True, timeout=600)
    last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else "{}"
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(last)
    return report["status"], proc.stderr, report["modules"]


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    """Class-per-folder dataset: 8 images of each of two classes, 32x32 8-bit PNGs."""
    root = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(0)
    for label, spread in (("rough", 60), ("smooth", 10)):
        (root / label).mkdir()
        for i in range(8):
            img = np.clip(rng.normal(128, spread, (32, 32)), 0, 255).astype(np.uint8)
            cv2.imwrite(str(root / label / f"{label}{i}.png"), img)
    return root


@pytest.mark.parametrize("argv", [["--help"], ["recipes"], ["benchmark", "--help"], ["data", "check", "--help"]])
def test_help_and_recipes_import_neither_scikit_learn_nor_tensorflow(argv, tmp_path):
    script = ("import sys\nfrom featurepipe.cli import main\ntry:\n    main(sys.argv[1:])\n"
              "except SystemExit:\n    pass\n"
              "print([m for m in ('sklearn', 'tensorflow', 'keras', 'scipy') if m in sys.modules])")
    proc = subprocess.run([sys.executable, "-c", script, *argv], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_a_handcrafted_benchmark_never_imports_tensorflow(tiny_folder, tmp_path):
    status, _, modules = _run_cli(["benchmark", str(tiny_folder), "--recipes", "hog_svm,glcm_svm", "--splits", "2",
                                   "--no-plots", "--output", str(tmp_path / "report")], cwd=tmp_path)
    assert status == 0
    assert "sklearn" in modules  # the command did run its pipelines
    assert "tensorflow" not in modules and "keras" not in modules
    assert "featurepipe.cnn.extractor" not in modules


def test_set_feature_cache_reaches_every_extractor_of_a_fusion_recipe(tmp_path):
    from featurepipe import FeatureExtractor, recipes

    pipe = set_feature_cache(recipes.make("fusion_soft_vote"), str(tmp_path))
    caches = [v.cache for v in pipe.get_params(deep=True).values() if isinstance(v, FeatureExtractor)]
    assert len(caches) == 4  # CNN, HOG, first-order, GLCM
    assert caches == [str(tmp_path)] * 4
    assert set_feature_cache(GLCMFeatures(), False).cache is False


def test_default_cache_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("FEATUREPIPE_CACHE", str(tmp_path / "explicit"))
    assert default_cache_dir() == str(tmp_path / "explicit")
    monkeypatch.delenv("FEATUREPIPE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == os.path.join(str(tmp_path / "xdg"), "featurepipe", "features")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == os.path.join(str(tmp_path / "home"), ".cache", "featurepipe", "features")


def _count_extracted(monkeypatch):
    """Patch GLCMFeatures so that every image it really computes is counted; empties the memory cache."""
    from featurepipe.cache import clear_memory_cache

    clear_memory_cache()  # features of earlier tests on the same images would answer instead
    calls = []
    original = GLCMFeatures._extract_many

    def counting(self, samples):
        calls.extend(s.key for s in samples)
        return original(self, samples)

    monkeypatch.setattr(GLCMFeatures, "_extract_many", counting)
    return calls


def test_a_second_benchmark_with_another_classifier_reads_every_feature_from_the_disk_cache(
        tiny_folder, tmp_path, monkeypatch, capsys):
    cache = tmp_path / "cache"
    calls = _count_extracted(monkeypatch)
    assert main(["benchmark", str(tiny_folder), "--recipes", "firstorder_glcm_svm", "--splits", "2", "--no-plots",
                 "--output", str(tmp_path / "a"), "--cache", str(cache)]) == 0
    assert len(calls) == 16  # every image once
    entries = sorted(p.relative_to(cache) for p in cache.rglob("*.npz"))
    assert len(entries) == 32  # 16 images x (first-order, GLCM)

    from featurepipe.cache import clear_memory_cache

    clear_memory_cache()  # as in a new process: only the disk can answer
    calls.clear()
    assert main(["benchmark", str(tiny_folder), "--recipes", "glcm_svm", "--splits", "2", "--no-plots",
                 "--output", str(tmp_path / "b"), "--cache", str(cache)]) == 0
    assert calls == []
    assert sorted(p.relative_to(cache) for p in cache.rglob("*.npz")) == entries

    # The default folder is $FEATUREPIPE_CACHE; --no-cache writes nothing there and recomputes.
    clear_memory_cache()
    assert main(["benchmark", str(tiny_folder), "--recipes", "glcm_svm", "--splits", "2", "--no-plots",
                 "--output", str(tmp_path / "c"), "--no-cache"]) == 0
    assert len(calls) == 16
    assert not list(Path(os.environ["FEATUREPIPE_CACHE"]).rglob("*.npz"))
    capsys.readouterr()


def test_fit_uses_the_cache_but_the_saved_model_names_no_folder(tiny_folder, tmp_path, monkeypatch, capsys):
    from featurepipe import FeatureExtractor
    from featurepipe.cache import clear_memory_cache
    from featurepipe.models import load_model

    calls = _count_extracted(monkeypatch)
    assert main(["benchmark", str(tiny_folder), "--recipes", "glcm_svm", "--splits", "2", "--no-plots",
                 "--output", str(tmp_path / "a")]) == 0
    assert len(calls) == 16
    assert len(list(Path(os.environ["FEATUREPIPE_CACHE"]).rglob("*.npz"))) == 16  # on by default
    clear_memory_cache()
    calls.clear()
    assert main(["fit", "glcm_svm", str(tiny_folder), "-o", str(tmp_path / "m.skops")]) == 0
    assert calls == []
    model = load_model(tmp_path / "m.skops")
    caches = {v.cache for est in (model.estimator, model.estimator_)
              for v in est.get_params(deep=True).values() if isinstance(v, FeatureExtractor)}
    assert caches == {True}
    capsys.readouterr()


@pytest.mark.slow
def test_cnn_commands_print_no_tensorflow_log_lines_unless_verbose(tiny_folder, tmp_path):
    args = ["benchmark", str(tiny_folder), "--recipes", "convnet_svm_linear", "--splits", "2", "--no-plots"]
    cache = str(tmp_path / "cache")
    status, stderr, modules = _run_cli([*args, "--output", str(tmp_path / "a"), "--cache", cache], cwd=tmp_path)
    assert status == 0 and "tensorflow" in modules
    assert not [line for line in stderr.splitlines() if any(n in line for n in NOISE)], stderr

    # Same features, another classifier, warm disk cache: TensorFlow is not even imported.
    status, stderr, modules = _run_cli(["benchmark", str(tiny_folder), "--recipes", "convnet_rf", "--splits", "2",
                                        "--no-plots", "--output", str(tmp_path / "b"), "--cache", cache],
                                       cwd=tmp_path)
    assert status == 0 and "tensorflow" not in modules and "keras" not in modules

    status, stderr, modules = _run_cli([*args, "--output", str(tmp_path / "c"), "--no-cache", "--verbose"],
                                       cwd=tmp_path)
    assert status == 0 and "tensorflow" in modules
    assert any("oneDNN custom operations are on" in line for line in stderr.splitlines()), stderr
