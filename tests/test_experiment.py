"""Experiments as files (issue 12): one spec for the CLI flags, TOML files and the Python API; replays exactly.

The CNN pipelines use three tiny random-weight Keras backbones registered in this process (32x32 inputs),
so the "three backbones plus hog_svm in one command" acceptance runs in seconds; the commands run in-process
through ``featurepipe.cli.main`` (the registry is per process). The replay of handcrafted recipes also runs in
a fresh process, as a user replays a stored spec.
"""

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from featurepipe import experiment
from featurepipe.cli import build_parser, main
from featurepipe.experiment import CrossValidation, DatasetSpec, ExperimentSpec, PipelineSpec, SpecError

ROOT = Path(__file__).resolve().parents[1]
BACKBONES = ("tiny_exp_conv", "tiny_exp_deep", "tiny_exp_sep")


def preprocess_unit(batch):
    """[0, 255] -> [-1, 1] (module level: registered backbones need a named preprocessing function)."""
    return batch / np.float32(127.5) - np.float32(1.0)


@pytest.fixture(scope="module")
def tiny_backbones():
    """Three different random-weight CNNs (fixed seeds) registered as backbones with 32x32 inputs."""
    keras = pytest.importorskip("keras")
    from featurepipe.cnn import register_backbone, unregister_backbone

    def init(seed):
        return keras.initializers.GlorotUniform(seed=seed)

    inputs = keras.Input((32, 32, 3))
    conv = keras.layers.Conv2D(8, 3, strides=2, activation="relu", kernel_initializer=init(0))(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu", kernel_initializer=init(1))(inputs)
    deep = keras.layers.Conv2D(12, 3, strides=2, activation="relu", kernel_initializer=init(2))(x)
    sep = keras.layers.SeparableConv2D(6, 5, strides=2, activation="relu", depthwise_initializer=init(3),
                                       pointwise_initializer=init(4))(inputs)
    for name, output in zip(BACKBONES, (conv, deep, sep), strict=True):
        register_backbone(name, keras.Model(inputs, output), preprocess=preprocess_unit, overwrite=True)
    yield BACKBONES
    for name in BACKBONES:
        unregister_backbone(name)


@pytest.fixture(scope="module")
def data_folder(tmp_path_factory):
    """Class-per-folder 8-bit PNGs, 32x32: 10 noisy ("rough") and 10 blurred ("smooth") images."""
    root = tmp_path_factory.mktemp("exp") / "data"
    rng = np.random.default_rng(0)
    for label, sigma in (("rough", 0.0), ("smooth", 2.0)):
        (root / label).mkdir(parents=True)
        for i in range(10):
            image = rng.random((32, 32))
            if sigma:
                image = cv2.GaussianBlur(image, (0, 0), sigma)
            cv2.imwrite(str(root / label / f"{label}{i:02d}.png"), np.rint(image * 255).astype(np.uint8))
    return root


SPEC = """\
output = "results/backbones"
plots = false
cache = "memory"

[dataset]
path = "data"
duplicates = "exact"

[cv]
splits = 3
seed = 0

[[pipelines]]
name = "cnn_conv"
recipe = "convnet_svm_linear"
backbone = "tiny_exp_conv"

[[pipelines]]
name = "cnn_deep"
recipe = "convnet_svm_linear"
backbone = "tiny_exp_deep"

[[pipelines]]
name = "cnn_sep"
recipe = "convnet_svm_linear"
backbone = "tiny_exp_sep"

[[pipelines]]
name = "hog_clahe"
recipe = "hog_svm"
preprocessing = ["clahe"]
"""


def _folds(folder):
    """Per (pipeline, repeat, fold): its metrics, predictions and test indices, from the stored results."""
    data = json.loads((Path(folder) / "results.json").read_text())
    return {(f["pipeline"], f["repeat"], f["fold"]): (f["metrics"], f["y_pred"], f["test_index"])
            for f in data["folds"]}


def _clear_memory_cache():
    from featurepipe.cache import clear_memory_cache

    clear_memory_cache()


def test_three_backbones_and_hog_in_one_command_and_the_stored_spec_replays(tiny_backbones, data_folder, capsys):
    spec_file = data_folder.parent / "exp.toml"
    spec_file.write_text(SPEC)
    assert main(["benchmark", "--config", str(spec_file)]) == 0
    out = data_folder.parent / "results" / "backbones"  # relative paths: against the spec file's folder
    assert f"replay: featurepipe benchmark --config {out / 'experiment.toml'}" in capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    assert list(results["pipelines"]) == ["cnn_conv", "cnn_deep", "cnn_sep", "hog_clahe"]
    # each pipeline ran with its own options: three backbones in one table, hog_svm with CLAHE
    for name, backbone in zip(["cnn_conv", "cnn_deep", "cnn_sep"], tiny_backbones, strict=True):
        assert results["pipelines"][name]["params"]["features__backbone"] == backbone
    assert results["pipelines"]["hog_clahe"]["stateless_prefix"] == ["clahe", "features"]
    assert "features__backbone" not in results["pipelines"]["hog_clahe"]["params"]
    folds = _folds(out)
    assert len(folds) == 4 * 3
    assert all(0.0 <= m["balanced_accuracy"] <= 1.0 for m, _, _ in folds.values())

    # The stored spec is the resolved one: absolute dataset path, and it loads back to an equal spec.
    stored = experiment.load(out / "experiment.toml")
    assert stored.dataset.path == str(data_folder)
    assert [p.options for p in stored.pipelines] == [{"backbone": b} for b in tiny_backbones] + [
        {"preprocessing": ["clahe"]}]

    # Replay into a new folder, recomputing every feature: every metric and prediction is the same.
    _clear_memory_cache()
    again = data_folder.parent / "replayed"
    assert main(["benchmark", "--config", str(out / "experiment.toml"), "--output", str(again)]) == 0
    replayed = _folds(again)
    assert replayed.keys() == folds.keys()
    for key, (metrics, y_pred, test_index) in folds.items():
        # exact: the same pipelines on the same images and splits in the same process (one random_state)
        assert replayed[key] == (metrics, y_pred, test_index), key
    first = json.loads((out / "experiment.json").read_text())
    second = json.loads((again / "experiment.json").read_text())
    assert first["pipelines"] == second["pipelines"] and first["splits"] == second["splits"]


def test_set_addresses_a_pipeline_by_name_and_every_pipeline_of_a_recipe(tiny_backbones, data_folder):
    spec = experiment.loads(SPEC, base=data_folder.parent)
    changed = experiment.apply_overrides(spec, ["pipelines.cnn_conv.backbone=tiny_exp_sep", "cv.splits=4",
                                                "recipes.hog_svm.balancing=smote",
                                                "pipelines.cnn_deep.params.classifier__estimator__C=0.5",
                                                "output=elsewhere"])
    assert changed.pipeline("cnn_conv").options == {"backbone": "tiny_exp_sep"}
    assert changed.pipeline("hog_clahe").options == {"preprocessing": ["clahe"], "balancing": "smote"}
    assert changed.pipeline("cnn_deep").params == {"classifier__estimator__C": 0.5}  # a TOML float
    assert changed.cv.splits == 4 and changed.output == "elsewhere"  # a string: not TOML, kept as text
    assert spec.cv.splits == 3 and spec.pipeline("cnn_conv").options == {"backbone": "tiny_exp_conv"}  # a copy
    built = experiment.build_pipeline(changed, changed.pipeline("cnn_deep"))
    assert built.get_params()["classifier__estimator__C"] == 0.5
    assert built.get_params()["features__backbone"] == "tiny_exp_deep"


def test_spec_round_trips_through_toml(tmp_path):
    spec = ExperimentSpec(
        dataset=DatasetSpec(path=str(tmp_path / "d"), mode="rgb", duplicates="none", duplicate_threshold=0.5),
        cv=CrossValidation(splits=4, repeats=2, seed=7, inner_splits=2),
        pipelines=[PipelineSpec("a", recipe="hog_svm", options={"class_weight": None, "balancing": "random"},
                                params={"classifier__estimator__C": 0.25},
                                grid={"classifier__estimator__C": [0.1, 1.0]})],
        metrics=["mcc", "roc_auc"], rank_by="roc_auc", plots=False, cache="memory", n_jobs=2)
    text = experiment.dumps(spec)
    assert 'class_weight = "none"' in text  # TOML has no null
    assert experiment.loads(text) == spec
    experiment.dump(spec, tmp_path / "x.toml")
    assert experiment.load(tmp_path / "x.toml") == spec


def test_benchmark_flags_build_the_same_spec_as_a_file(data_folder):
    args = build_parser().parse_args(
        ["benchmark", str(data_folder), "--recipes", "hog_svm,convnet_svm_linear", "--backbone", "efficientnet_lite2",
         "--preprocessing", "median,clahe", "--balancing", "smote", "--mode", "gray", "--splits", "4", "--repeats",
         "2", "--seed", "3", "--grid", "--rank-by", "f1", "--no-plots", "--no-cache", "--duplicates", "exact"])
    from featurepipe.cli_run import benchmark_spec

    expected = experiment.loads(f"""
        plots = false
        cache = "memory"
        rank_by = "f1"
        [dataset]
        path = "{data_folder}"
        mode = "gray"
        duplicates = "exact"
        [cv]
        splits = 4
        repeats = 2
        seed = 3
        tune = true
        [[pipelines]]
        name = "hog_svm"
        recipe = "hog_svm"
        preprocessing = ["median", "clahe"]
        balancing = "smote"
        [[pipelines]]
        name = "convnet_svm_linear"
        recipe = "convnet_svm_linear"
        preprocessing = ["median", "clahe"]
        balancing = "smote"
        backbone = "efficientnet_lite2"   # --backbone applies to the recipes that have a CNN
    """)
    assert benchmark_spec(args) == expected


def test_flags_run_and_their_stored_spec_replays_in_a_fresh_process(data_folder, tmp_path):
    first = tmp_path / "flags"
    assert main(["benchmark", str(data_folder), "--recipes", "hog_svm,firstorder_glcm_svm", "--preprocessing",
                 "clahe", "--splits", "3", "--duplicates", "exact", "--no-plots", "--no-cache",
                 "--output", str(first)]) == 0
    again = tmp_path / "replay"
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run([sys.executable, "-m", "featurepipe", "benchmark", "--config",
                           str(first / "experiment.toml"), "--set", f"output={json.dumps(str(again))}"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    folds, replayed = _folds(first), _folds(again)
    assert len(folds) == 2 * 3 and replayed.keys() == folds.keys()
    for key, value in folds.items():
        # exact: the same code on the same images and splits (one random_state): identical results
        assert replayed[key] == value, key


def test_fit_takes_a_pipeline_of_the_spec_or_the_best_of_a_results_folder(data_folder, tmp_path, capsys):
    from featurepipe.models import fit_estimator, load_model

    spec_file = tmp_path / "exp.toml"
    spec_file.write_text(f"""
        output = "results"
        plots = false
        cache = "memory"
        [dataset]
        path = "{data_folder}"
        duplicates = "exact"
        [cv]
        splits = 3
        [[pipelines]]
        name = "hog_clahe"
        recipe = "hog_svm"
        preprocessing = ["clahe"]
        params = {{ classifier__estimator__C = 0.5 }}
        [[pipelines]]
        name = "texture"
        recipe = "firstorder_glcm_svm"
        grid = {{ classifier__estimator__C = [0.01, 100.0] }}
    """)
    model_path = tmp_path / "hog.skops"
    assert main(["fit", "--config", str(spec_file), "--pipeline", "hog_clahe", "-o", str(model_path)]) == 0
    model = load_model(model_path)
    spec = experiment.load(spec_file)
    reference = fit_estimator(experiment.build_pipeline(spec, spec.pipeline("hog_clahe")),
                              experiment.load_data(spec.dataset))
    assert model.estimator_.get_params()["classifier__estimator__C"] == 0.5
    assert [n for n, _ in model.estimator_.steps] == ["clahe", "features", "scale", "classifier"]
    samples = experiment.load_data(spec.dataset).samples
    np.testing.assert_allclose(model.predict_proba(samples), reference.predict_proba(samples), rtol=1e-12)

    # a pipeline with a grid is tuned the way each outer fold was: the benchmark's grouped folds
    from sklearn.model_selection import GridSearchCV

    from featurepipe.model_selection import RepeatedStratifiedGroupKFold

    assert main(["fit", "--config", str(spec_file), "--pipeline", "texture", "-o", str(tmp_path / "t.skops")]) == 0
    tuned = load_model(tmp_path / "t.skops")
    dataset = experiment.load_data(spec.dataset)
    search = GridSearchCV(experiment.build_pipeline(spec, spec.pipeline("texture")),
                          {"classifier__estimator__C": [0.01, 100.0]}, scoring="balanced_accuracy",
                          cv=RepeatedStratifiedGroupKFold(n_splits=3, n_repeats=1, random_state=0),
                          refit=False).fit(dataset.samples, dataset.y, groups=np.arange(len(dataset)))
    assert tuned.contract_["options"]["tuned"] == search.best_params_  # every image its own group here
    assert tuned.estimator_.get_params()["classifier__estimator__C"] == search.best_params_[
        "classifier__estimator__C"]

    # several pipelines and no --pipeline: refused, naming them
    capsys.readouterr()
    assert main(["fit", "--config", str(spec_file), "-o", str(tmp_path / "x.skops")]) == 2
    assert "choose one with --pipeline NAME" in capsys.readouterr().err

    # --from-results DIR: the best pipeline of the benchmark, as its experiment.toml describes it
    untuned = tmp_path / "untuned.toml"
    untuned.write_text(spec_file.read_text().replace("grid = {", "params = {").replace("[0.01, 100.0]", "100.0"))
    assert main(["benchmark", "--config", str(untuned)]) == 0
    from featurepipe.benchmark import BenchmarkResult

    best = BenchmarkResult.load(tmp_path / "results").ranking("mcc")[0]
    best_path = tmp_path / "best.skops"
    assert main(["fit", "--from-results", str(tmp_path / "results"), "-o", str(best_path)]) == 0
    fitted = load_model(best_path)
    expected = {"hog_clahe": ("hog_svm", 0.5), "texture": ("firstorder_glcm_svm", 100.0)}[best]
    assert (fitted.contract_["recipe"], fitted.estimator_.get_params()["classifier__estimator__C"]) == expected
    card = json.loads(best_path.with_suffix(".card.json").read_text())
    assert card["estimate"]["source"] == "benchmark results"
    # and any other pipeline of it by name
    assert main(["fit", "--from-results", str(tmp_path / "results"), "--pipeline", "texture", "-o",
                 str(tmp_path / "texture.skops")]) == 0
    assert load_model(tmp_path / "texture.skops").contract_["recipe"] == "firstorder_glcm_svm"


def _error(argv, capsys):
    status = main(argv)
    err = capsys.readouterr().err
    assert status == 2, err
    assert err.count("\n") == 1 and err.startswith("featurepipe: error: "), err  # one line
    return err


@pytest.mark.parametrize(("edit", "key", "words"), [
    ("[cv]\nsplitz = 3\n", "cv.splitz", "unknown key"),
    ("[cv]\nsplits = \"three\"\n", "cv.splits", "must be an integer >= 2; got 'three'"),
    ("[dataset]\nmode = \"cmyk\"\n", "dataset.mode", "must be one of 'gray', 'rgb'; got 'cmyk'"),
    ("[[pipelines]]\nname = \"x\"\nrecipe = \"no_such_recipe\"\n", "pipelines[1].recipe", "'hog_svm'"),
    ("[[pipelines]]\nname = \"x\"\nrecipe = \"hog_svm\"\nepochs = 3\n", "pipelines[1].epochs", "epochs"),
    ("[[pipelines]]\nname = \"hog\"\nrecipe = \"glcm_svm\"\n", "pipelines[1].name", "must be unique"),
    ("[[pipelines]]\nname = \"x\"\nrecipe = \"hog_svm\"\nparams = { classifier__C = 1.0 }\n",
     "pipelines[1].params.classifier__C", "has no parameter"),
    ("[[pipelines]]\nname = \"x\"\npipeline = \"os.system\"\n", "pipelines[1].pipeline", "package.module:callable"),
    ("rank_by = 3\n", "rank_by", "must be one of"),
])
def test_malformed_specs_give_one_line_naming_the_key(edit, key, words, data_folder, tmp_path, capsys):
    base = '[[pipelines]]\nname = "hog"\nrecipe = "hog_svm"\n'
    spec_file = tmp_path / "bad.toml"
    spec_file.write_text(base + edit if edit.startswith("[") else edit + base)  # top-level keys before tables
    err = _error(["benchmark", str(data_folder), "--config", str(spec_file), "--output", str(tmp_path / "r")],
                 capsys)
    assert key in err and words in err and str(spec_file) in err
    assert not (tmp_path / "r").exists()  # refused before any work


@pytest.mark.parametrize(("assignment", "words"), [
    ("pipelines.nope.backbone=vgg16", "no pipeline named 'nope'; the experiment has ['hog']"),
    ("recipes.glcm_svm.balancing=smote", "no pipeline uses the recipe 'glcm_svm'"),
    ("cv.splits.x=1", "cv.splits is a value, not a table"),
    ("cv.folds=3", "cv.folds: unknown key"),
    ("pipelines.hog=1", "address a pipeline option as pipelines.<name>.<option>"),
    ("cv.splits", "expected key.path=value"),
])
def test_bad_set_paths_name_the_assignment(assignment, words, data_folder, tmp_path, capsys):
    spec_file = tmp_path / "ok.toml"
    spec_file.write_text('[[pipelines]]\nname = "hog"\nrecipe = "hog_svm"\n')
    err = _error(["benchmark", str(data_folder), "--config", str(spec_file), "--set", assignment], capsys)
    assert f"--set {assignment}" in err and words in err


def test_global_recipe_flags_are_refused_with_a_config(data_folder, tmp_path, capsys):
    spec_file = tmp_path / "ok.toml"
    spec_file.write_text('[[pipelines]]\nname = "hog"\nrecipe = "hog_svm"\n')
    err = _error(["benchmark", "--config", str(spec_file), "--backbone", "vgg16"], capsys)
    assert "--backbone cannot be combined with --config" in err and "--set pipelines.NAME.OPTION=VALUE" in err


def test_a_user_pipeline_by_import_path(data_folder, tmp_path, monkeypatch):
    (tmp_path / "my_pipes.py").write_text(
        "from sklearn.pipeline import make_pipeline\n"
        "from sklearn.linear_model import LogisticRegression\n"
        "from featurepipe.features import FirstOrderFeatures\n"
        "def texture(C=1.0):\n"
        "    return make_pipeline(FirstOrderFeatures(), LogisticRegression(C=C))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = experiment.loads(f"""
        plots = false
        cache = "memory"
        output = "{tmp_path / 'r'}"
        [dataset]
        path = "{data_folder}"
        duplicates = "exact"
        [cv]
        splits = 3
        [[pipelines]]
        name = "mine"
        pipeline = "my_pipes:texture"
        C = 0.5
    """)
    result = experiment.run(spec, progress=False)
    assert result.pipelines["mine"]["params"]["logisticregression__C"] == 0.5
    assert experiment.load(tmp_path / "r" / "experiment.toml").pipeline("mine").pipeline == "my_pipes:texture"
    with pytest.raises(SpecError, match=r"pipelines\[0\] \(pipeline 'mine'\): my_pipes:texture\(\*\*options\)"):
        experiment.validate(experiment.apply_overrides(spec, ["pipelines.mine.gamma=1"]))


def _readme_experiment():
    """The README's "Experiment files" section: its TOML file and its command lines."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Experiment files"):]
    section = section[:section.index("\n## ", 1)]
    spec = re.search(r"```toml\n(.*?)```", section, flags=re.S).group(1)
    block = re.search(r"```text\n(.*?)```", section, flags=re.S).group(1)
    return spec, [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


@pytest.mark.slow
def test_readme_experiment_file_and_commands_run(tiny_backbones, tmp_path, monkeypatch, capsys):
    """The README's experiment file and its commands, as written, on a generated BUSI-like tree at the file's
    ``../shared/data/busi``; the three EfficientNet-Lite backbones (and MobileNetV3, which needs a download) are
    swapped for the tiny registered ones with ``--set``, the outer CV made 3-fold without repeats
    and the plots left out, for speed."""
    from test_readme_cli import _busi_like_tree

    spec_text, lines = _readme_experiment()
    spec = experiment.loads(spec_text)
    assert [(p.name, p.options.get("backbone")) for p in spec.pipelines] == [
        ("lite0", "efficientnet_lite0"), ("lite1", "efficientnet_lite1"), ("lite2", "efficientnet_lite2"),
        ("hog_clahe", None)]
    assert spec.pipeline("hog_clahe").grid == {"classifier__estimator__C": [0.1, 1.0, 10.0]}
    work = tmp_path / "work"
    work.mkdir()
    (work / "busi-backbones.toml").write_text(spec_text)
    _busi_like_tree(tmp_path / "shared" / "data" / "busi", np.random.default_rng(0), per_class=10)
    monkeypatch.chdir(work)
    swap = [f"--set=pipelines.{name}.backbone={tiny}" for name, tiny in zip(("lite0", "lite1", "lite2"),
                                                                          tiny_backbones, strict=True)]
    for line in lines:
        argv = shlex.split(line)[1:]
        if "busi-backbones.toml" in argv:
            argv += [*swap, "--set=cv.splits=3", "--set=cv.repeats=1", "--set=plots=false", "--no-cache"]
        status = main(argv)
        out = capsys.readouterr()
        assert status == 0, f"README command failed: {line}\n{out.err[-2000:]}"
    first, replay = _folds(work / "results" / "busi-backbones"), _folds(work / "results" / "replay")
    assert len(first) == 4 * 3 and replay == first  # exact: replayed in the same process
    assert experiment.load(work / "results" / "mobilenet" / "experiment.toml").cv.splits == 3
    from featurepipe.models import load_model

    assert load_model(work / "hog.skops").contract_["recipe"] == "hog_svm"
    assert "estimate" in json.loads((work / "best.card.json").read_text())
