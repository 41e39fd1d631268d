"""One registration pattern (issue 12 #3): recipes, backbones, layouts, feature families and commands."""

import importlib
import importlib.util

import pytest

from featurepipe import recipes
from featurepipe.registry import Registry, all_registries

#: Kind -> (module, attribute) of every built-in registry, and names each must hold.
KINDS = {
    "recipe": ("featurepipe.recipes", "RECIPES", {"hog_svm", "convnet_svm_linear", "fusion_stack"}),
    "backbone": ("featurepipe.cnn.specs", "BACKBONES", {"efficientnet_lite0", "mobilenet_v2", "resnet50"}),
    "layout": ("featurepipe.datasets", "LAYOUTS", {"folder", "manifest", "busi", "mias", "breakhis", "dmr-ir"}),
    "feature family": ("featurepipe.features.bank", "FAMILIES",
                       {"firstorder", "glcm", "lbp", "hog", "curvelet", "shape"}),
    "command": ("featurepipe.cli", "COMMANDS", {"data", "recipes", "benchmark", "fit", "predict"}),
}


def _registry(kind):
    module, attribute, _ = KINDS[kind]
    if kind == "backbone" and importlib.util.find_spec(module) is None:
        pytest.skip("featurepipe.cnn.specs (the backbone registry, issue 12 #5) is not in this branch yet")
    return getattr(importlib.import_module(module), attribute)


def test_all_registries_lists_every_kind():
    if importlib.util.find_spec("featurepipe.cnn.specs") is None:
        pytest.skip("featurepipe.cnn.specs (the backbone registry, issue 12 #5) is not in this branch yet")
    found = all_registries()
    assert set(found) == set(KINDS)
    for kind, registry in found.items():
        assert registry is _registry(kind) and registry.kind == kind


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_each_registry_is_filled_lists_its_names_and_protects_its_built_ins(kind):
    registry = _registry(kind)
    assert isinstance(registry, Registry) and registry.kind == kind
    names = registry.names()
    assert KINDS[kind][2] <= set(names), kind
    assert sorted(registry) == sorted(names) and len(registry) == len(names)
    for name in KINDS[kind][2]:
        assert registry.is_built_in(name) and name in registry
        with pytest.raises(ValueError, match=f"{kind} '{name}' is built in and cannot be replaced"):
            registry.register(name, registry[name], overwrite=True)
        with pytest.raises(ValueError, match="is built in and cannot be removed"):
            registry.unregister(name)
    with pytest.raises(KeyError) as error:
        registry.get("no-such-name")
    message = error.value.args[0]
    assert message.startswith(f"unknown {kind} 'no-such-name'; known: ")
    assert all(repr(name) in message for name in names)


@pytest.mark.parametrize("kind", ["recipe", "layout", "feature family", "command"])
def test_a_user_entry_registers_once_and_can_be_removed(kind):
    registry = _registry(kind)
    entry = registry[registry.names()[0]]
    registry.register("test-user-entry", entry)
    try:
        assert registry.names()[-1] == "test-user-entry" and not registry.is_built_in("test-user-entry")
        with pytest.raises(ValueError, match=f"{kind} 'test-user-entry' is already registered; pass overwrite=True"):
            registry.register("test-user-entry", entry)
        assert registry.register("test-user-entry", entry, overwrite=True) is entry
    finally:
        registry.unregister("test-user-entry")
    assert "test-user-entry" not in registry


# ----------------------------------------------------------------------------- recipes
def _build_glcm_logistic(*, use_mask, class_weight, random_state, C=1.0):
    from sklearn.linear_model import LogisticRegression

    from featurepipe.features import GLCMFeatures

    return GLCMFeatures(levels=16, use_mask=use_mask), LogisticRegression(C=C, class_weight=class_weight,
                                                                         random_state=random_state)


@pytest.fixture
def user_recipe():
    recipe = recipes.register_recipe(recipes.Recipe(
        "test_glcm_logistic", "GLCM texture + logistic regression (a user recipe)", "Haralick et al. (1973)",
        _build_glcm_logistic, {"classifier__C": [0.1, 1.0, 10.0]},
        defaults="C=1, scikit-learn's default; grid: C on decades"))
    yield recipe
    recipes.RECIPES.unregister("test_glcm_logistic")


def test_a_user_recipe_appears_in_the_recipes_command_and_is_made(user_recipe, capsys):
    from sklearn.linear_model import LogisticRegression

    from featurepipe.cli import main

    assert main(["recipes", "--citations"]) == 0
    lines = capsys.readouterr().out.splitlines()
    row = next(i for i, line in enumerate(lines) if line.startswith("test_glcm_logistic "))
    assert lines[row].split(None, 1)[1] == "GLCM texture + logistic regression (a user recipe)"
    assert lines[row + 1].strip() == "[Haralick et al. (1973)]"
    assert len([line for line in lines if not line.startswith(" ")]) == len(recipes.RECIPES)
    pipe = recipes.make("test_glcm_logistic", C=0.5, use_mask=True, random_state=3)
    assert [name for name, _ in pipe.steps] == ["features", "scale", "classifier"]
    classifier = pipe.named_steps["classifier"]
    assert isinstance(classifier, LogisticRegression)
    assert (classifier.C, classifier.class_weight, classifier.random_state) == (0.5, "balanced", 3)
    assert pipe.named_steps["features"].use_mask is True and pipe.named_steps["features"].levels == 16
    with pytest.raises(ValueError, match="recipe 'test_glcm_logistic' does not accept the option backbone='vgg16'"):
        recipes.make("test_glcm_logistic", backbone="vgg16")


def test_a_fusion_of_user_recipes_takes_the_options_its_members_accept(user_recipe):
    fusion = recipes.register_recipe(recipes.Recipe(
        "test_fusion", "GLCM logistic + HOG SVM, averaged", "Kittler et al. (1998)", None,
        {"classifier__glcm__classifier__C": [0.1, 1.0]}, members=(("glcm", "test_glcm_logistic"), ("hog", "hog_svm"))))
    try:
        # No member runs a CNN: the fusion has no backbone option.
        assert fusion.options == ("preprocessing", "balancing", "use_mask", "class_weight", "random_state")
        vote = recipes.make("test_fusion", class_weight=None, preprocessing="median")
        assert [name for name, _ in vote.steps] == ["median", "classifier"]
        members = dict(vote.named_steps["classifier"].estimators)
        assert members["glcm"].named_steps["classifier"].class_weight is None
        assert members["hog"].named_steps["classifier"].estimator.class_weight is None
        with pytest.raises(ValueError, match="unknown recipe 'nope'"):
            recipes.register_recipe(recipes.Recipe("test_bad_fusion", "x", "y", members=(("a", "nope"),)))
    finally:
        recipes.RECIPES.unregister("test_fusion")


# ----------------------------------------------------------------------------- feature families
def test_the_default_bank_and_the_recipes_build_families_from_the_same_factories():
    from featurepipe.features import default_handcrafted_bank
    from featurepipe.features.bank import FAMILIES

    bank = dict(default_handcrafted_bank(families=("firstorder", "glcm", "lbp", "hog", "curvelet", "shape"),
                                         use_mask=False).transformer_list)
    for family in FAMILIES.names():
        assert repr(bank[family].get_params()) == repr(FAMILIES[family]().get_params()), family
    # The bank's documented default describes the masked region, except curvelet (whole image).
    masked = dict(default_handcrafted_bank().transformer_list)
    assert all(masked[f].use_mask for f in ("firstorder", "glcm", "lbp", "hog")) and masked["curvelet"].roi == "image"
    # The recipes: the same factories at their published settings, the family default (whole image).
    hog_glcm = recipes.make("firstorder_glcm_svm").named_steps["features"]
    assert repr(hog_glcm.named_transformers["glcm"].get_params()) == \
        repr(FAMILIES["glcm"](distances=(1, 2, 4)).get_params())
    assert repr(recipes.make("curvelet_svm", use_mask=True).named_steps["features"].get_params()) == \
        repr(FAMILIES["curvelet"](use_mask=True).get_params())


# ----------------------------------------------------------------------------- layouts
def test_the_command_line_offers_exactly_the_built_in_layouts():
    from featurepipe.cli_data import LAYOUT_NAMES
    from featurepipe.datasets import LAYOUTS

    assert sorted(LAYOUT_NAMES) == sorted(name for name in LAYOUTS if LAYOUTS.is_built_in(name))


def test_a_registered_layout_is_used_by_load_dataset(tmp_path):
    import cv2
    import numpy as np

    from featurepipe.dataset import Dataset
    from featurepipe.datasets import LAYOUTS, load_dataset, load_folder

    for label in ("a", "b"):
        (tmp_path / label).mkdir()
        cv2.imwrite(str(tmp_path / label / "x.png"), np.full((8, 8), 40 if label == "a" else 200, np.uint8))
    calls = []

    def reversed_labels(root, **options):
        calls.append(options)
        dataset = load_folder(root, **options)
        return Dataset([s.replace(label={"a": "b", "b": "a"}[s.label]) for s in dataset.samples], name="reversed")

    LAYOUTS.register("test_reversed", reversed_labels)
    try:
        dataset = load_dataset(tmp_path, layout="test_reversed", validate=False)
        assert calls == [{"validate": False}]
        # The dark image (40/255) sat in folder "a": the layout's labels, not the folder's, came back.
        brightness = {label: float(s.image.mean()) for s, label in zip(dataset.samples, dataset.y)}
        assert brightness.keys() == {"a", "b"}
        np.testing.assert_allclose([brightness["b"], brightness["a"]], [40 / 255, 200 / 255], rtol=1e-6)
        with pytest.raises(ValueError, match=r"layout must be 'auto' or one of \['breakhis', .*'test_reversed'\]; "
                                             r"got 'nope'"):
            load_dataset(tmp_path, layout="nope")
    finally:
        LAYOUTS.unregister("test_reversed")


# ----------------------------------------------------------------------------- commands
def test_the_parser_has_exactly_the_registered_commands():
    from featurepipe.cli import COMMANDS, build_parser

    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command")
    assert list(subparsers.choices) == COMMANDS.names()


def test_a_registered_command_module_adds_its_command(tmp_path, monkeypatch, capsys):
    from featurepipe.cli import COMMANDS, main

    (tmp_path / "test_user_cli.py").write_text(
        "def register(subparsers):\n"
        "    hello = subparsers.add_parser('hello', help='greet')\n"
        "    hello.add_argument('name')\n"
        "    hello.set_defaults(func=lambda args: print(f'hello {args.name}') or 3)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    COMMANDS.register("hello", "test_user_cli")
    try:
        assert main(["hello", "world"]) == 3
        assert capsys.readouterr().out == "hello world\n"
        COMMANDS.register("goodbye", "test_user_cli")
        with pytest.raises(RuntimeError, match="command 'goodbye' is registered .* but its module 'test_user_cli' "
                                               "did not add it"):
            main(["hello", "world"])
    finally:
        for name in ("hello", "goodbye"):
            if name in COMMANDS:
                COMMANDS.unregister(name)


def test_the_python_blocks_of_docs_registries_md_run():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "registries.md").read_text()
    blocks = text.split("```python\n")[1:]
    assert blocks
    for block in blocks:
        exec(compile(block.split("```")[0], "docs/registries.md", "exec"), {})
    assert "lbp_logistic" not in recipes.RECIPES  # the example cleans up after itself
