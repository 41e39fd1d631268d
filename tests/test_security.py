"""Loading a model file never runs code the user did not explicitly trust (issue 11, point 1).

Malicious files are generated here: a skops file whose schema makes the loader *call*
``builtins.exec`` / ``os.system`` / ``featurepipe.cli.main`` (skops' ConstructorFromReduceNode
calls ``module.Name(*args)``), and a pickle whose ``__reduce__`` runs ``exec``. Each would create a
marker file if anything ran; the tests prove the marker is absent, the exit status is non-zero and
the message lists the untrusted types and the opt-in.
"""

import importlib
import io
import json
import pickle
import zipfile

import numpy as np
import pytest
import skops.io
from sklearn.base import BaseEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from featurepipe import recipes
from featurepipe.cli import main
from featurepipe.features import FirstOrderFeatures
from featurepipe.models import (TRUSTED_TYPES, ImageModel, UntrustedModelError, is_trusted_type, load_model,
                                save_model)
from featurepipe.sample import Sample


def _crafted_skops(path, module, name, args):
    """A skops file whose root node calls ``module.name(*args)`` when loaded with that type trusted."""
    schema = json.loads(zipfile.ZipFile(io.BytesIO(skops.io.dumps(tuple(args)))).read("schema.json"))
    crafted = {"__class__": name, "__module__": module, "__loader__": "ConstructorFromReduceNode",
               "content": {k: v for k, v in schema.items() if k not in ("protocol", "_skops_version")},
               "__id__": 1, "protocol": schema["protocol"], "_skops_version": schema["_skops_version"]}
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("schema.json", json.dumps(crafted))
    return path


class _Exploit:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').close()",))


def _images(n=8, size=24):
    rng = np.random.default_rng(0)
    X = np.empty(n, dtype=object)
    X[:] = [Sample.from_array(rng.uniform(0, 0.3 + 0.6 * (i % 2), (size, size))) for i in range(n)]
    return X, np.array(["low", "high"] * (n // 2))


def test_the_crafted_skops_file_really_runs_code_when_its_types_are_trusted(tmp_path):
    # The attack is real: skops itself, told to trust the listed type, runs the payload.
    marker = tmp_path / "ran"
    evil = _crafted_skops(tmp_path / "evil.skops", "builtins", "exec", [f"open({str(marker)!r}, 'w').close()"])
    assert skops.io.get_untrusted_types(file=evil) == ["builtins.exec"]
    skops.io.load(evil, trusted=["builtins.exec"])
    assert marker.exists()


@pytest.mark.parametrize("module, name, payload", [
    ("builtins", "exec", "open({marker!r}, 'w').close()"),
    ("os", "system", "touch {marker}"),
])
def test_predict_refuses_a_malicious_skops_file_and_runs_nothing(tmp_path, capsys, module, name, payload):
    marker = tmp_path / "ran"
    evil = _crafted_skops(tmp_path / "evil.skops", module, name, [payload.format(marker=str(marker))])
    image = tmp_path / "x.png"
    image.write_bytes(b"unused")
    status = main(["predict", str(evil), str(image)])
    err = capsys.readouterr().err
    assert status == 2
    assert not marker.exists()
    assert f"asks to load types that featurepipe does not trust: {module}.{name}." in err
    assert "Nothing was loaded or run" in err and f"--trust {module}.{name}" in err
    assert "Traceback" not in err
    with pytest.raises(UntrustedModelError) as info:
        load_model(evil)
    assert info.value.types == [f"{module}.{name}"]
    assert not marker.exists()


def test_a_featurepipe_function_is_not_trusted_by_its_module_prefix(tmp_path, capsys):
    # featurepipe.cli.main(["recipes"]) would print the recipe table: a prefix check would run it.
    evil = _crafted_skops(tmp_path / "evil.skops", "featurepipe.cli", "main", [["recipes"]])
    status = main(["predict", str(evil), str(tmp_path / "x.png")])
    captured = capsys.readouterr()
    assert status == 2
    assert "convnet_svm_linear" not in captured.out  # the recipe table was not printed
    assert "featurepipe.cli.main" in captured.err
    assert not is_trusted_type("featurepipe.cli.main")
    assert not is_trusted_type("featurepipe.cli_run.os")  # a module imported by a featurepipe module
    assert not is_trusted_type("featurepipe.__main__.main")  # never imported
    assert not is_trusted_type("featurepipe.sample.Sample")  # a featurepipe class, but not an estimator
    assert is_trusted_type("featurepipe.features.firstorder.FirstOrderFeatures")
    assert is_trusted_type("featurepipe.models.ImageModel")


def test_explicit_trust_is_the_only_way_to_load_untrusted_types(tmp_path):
    marker = tmp_path / "ran"
    evil = _crafted_skops(tmp_path / "evil.skops", "builtins", "exec", [f"open({str(marker)!r}, 'w').close()"])
    # Trusting some other type does not help; naming the type does (and then it runs: the user's choice).
    with pytest.raises(UntrustedModelError):
        load_model(evil, trusted=["os.system"])
    assert not marker.exists()
    # Named explicitly, the type is trusted and the file is loaded: the user's informed choice.
    assert load_model(evil, trusted=["builtins.exec"]) is None  # exec(...) returns None
    assert marker.exists()


def test_malicious_pickle_needs_unsafe_pickle_and_runs_nothing_without_it(tmp_path, capsys):
    marker = tmp_path / "ran"
    for name in ("evil.joblib", "evil.pkl", "evil.skops"):
        evil = tmp_path / name
        evil.write_bytes(pickle.dumps(_Exploit(marker), protocol=4))
        status = main(["predict", str(evil), str(tmp_path / "x.png")])
        err = capsys.readouterr().err
        assert status == 2
        assert not marker.exists()
        assert "is a pickle/joblib file" in err and "runs whatever code it contains" in err
        assert "--unsafe-pickle" in err and "--format" not in err
        assert ("despite its .skops name" in err) == name.endswith(".skops")
        with pytest.raises(ValueError, match="unsafe_pickle=True"):
            load_model(evil)
        assert not marker.exists()


def test_unsafe_pickle_loads_a_real_model_with_a_warning(tmp_path):
    X, y = _images()
    model = ImageModel(make_pipeline(FirstOrderFeatures(), LogisticRegression())).fit(X, y)
    path = save_model(model, tmp_path / "model.joblib", format="joblib")
    with pytest.warns(UserWarning, match="unpickling runs any code the file contains"):
        loaded = load_model(path, unsafe_pickle=True)
    np.testing.assert_allclose(loaded.predict_proba(X), model.predict_proba(X), rtol=1e-12)


def test_allow_list_entries_are_data_holding_classes():
    checked = 0
    for name in TRUSTED_TYPES:
        module, _, attr = name.rpartition(".")
        try:
            obj = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError):
            continue  # a type of another library version (e.g. _TemperatureScaling is new in sklearn 1.8)
        checked += 1
        assert isinstance(obj, type), name  # classes only: no function a file could call
        assert obj.__module__ == module, name  # named where it is defined
    assert checked >= len(TRUSTED_TYPES) - 3
    assert "builtins.eval" not in TRUSTED_TYPES and not any(t.startswith(("os.", "subprocess.")) for t in TRUSTED_TYPES)


@pytest.mark.parametrize("name, options", [
    ("glcm_svm", {"balancing": "smote", "preprocessing": ["median", "clahe"]}),
    ("shape_texture_rf", {"use_mask": True}),
    ("bovw_svm", {"balancing": "random"}),
    ("lbp_svm", {}),
    ("fusion_soft_vote", {}),
])
def test_recipe_models_load_with_the_safe_loader_alone(tmp_path, name, options):
    # Every type these fitted recipes hold is trusted by default: no --trust needed, same predictions.
    from featurepipe.models import fit_model
    from featurepipe.dataset import Dataset

    rng = np.random.default_rng(1)
    samples = []
    for i in range(12):
        image = 0.1 * rng.uniform(0, 1, (96, 96))
        image[24:72, 24:72] += 0.3 + 0.5 * (i % 2) + 0.1 * rng.uniform(0, 1, (48, 48))
        mask = np.zeros((96, 96), bool)
        mask[24:72, 24:72] = True
        samples.append(Sample.from_array(image, mask=mask, label=["low", "high"][i % 2]))
    model = fit_model(name, Dataset(samples), **options)
    path = save_model(model, tmp_path / "model.skops")
    assert [t for t in skops.io.get_untrusted_types(file=path) if not is_trusted_type(t)] == []
    loaded = load_model(path)
    X = np.empty(len(samples), dtype=object)
    X[:] = samples
    assert loaded.predict(X).tolist() == model.predict(X).tolist()
    assert loaded.contract_ == model.contract_
    assert isinstance(loaded.estimator_, BaseEstimator)
    assert recipes.get(name).name == loaded.contract_["recipe"]


def test_a_file_that_is_neither_format_is_named(tmp_path, capsys):
    odd = tmp_path / "model.skops"
    odd.write_bytes(b"hello, not a model")
    assert main(["predict", str(odd), str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert f"model file {str(odd)!r} is not a skops file (it starts with b'hell')" in err
    with pytest.raises(ValueError, match="is neither a skops file nor a readable pickle/joblib file"):
        with pytest.warns(UserWarning, match="unpickling runs any code"):
            load_model(odd, unsafe_pickle=True)
