"""Recipes build exactly the pipelines they built before they became registry entries (issue 12).

``tests/data/recipe_pipelines.json`` was recorded from the code before the redesign: for every
built-in recipe and each applicable option set of :data:`OPTION_SETS`, scikit-learn's repr of
``recipes.make(name, **options)`` and its ``get_params(deep=True)`` (full for the default options,
as a SHA-256 digest otherwise). Regenerate it only for a deliberate change of a recipe.

Deliberate changes recorded since:

* issue 15 #3 (working resolution): first-order, GLCM and LBP members get ``max_side=512``
  from their ``FAMILIES`` factory (``FirstOrderFeatures(max_side=512, ...)`` in the reprs and
  ``...__max_side: 512`` in the parameters), and ``BagOfVisualWords`` has the new parameter
  ``max_side`` (default ``None``, so only its parameter table changed). Nothing else changed:
  the re-recording was checked to add exactly these ``max_side`` entries.
* issue 14 #1 (test-time augmentation): ``CNNFeatures`` has the new parameter ``tta`` (default
  ``None``: one view, today's features), so every pipeline with a CNN lists ``...__tta: None`` in
  its parameters. The re-recording was checked entry by entry: every repr is unchanged, and the
  parameter tables without these ``tta`` entries have the recorded digests.
* issue 14 #5 (lesion-size-adaptive crops, tiles): ``CropToMask`` has the new parameters
  ``context`` (default ``0.0``) and ``square`` (default ``False``), so the parameter tables (not
  the reprs) of every ``use_mask`` pipeline gained ``roi__context: 0.0`` and ``roi__square:
  False``; the new recipe ``convnet_tiles_svm`` was recorded. The
  re-recording was checked to change nothing else (digests without the two entries equal the old).
* issue 14 (named recipe): ``convnet_ensemble_svm`` was recorded (new entries only).
"""

import hashlib
import json
from pathlib import Path

import pytest
from sklearn.base import BaseEstimator

from featurepipe import recipes

RECORDED = json.loads((Path(__file__).parent / "data" / "recipe_pipelines.json").read_text())

#: The option combinations recorded: default options, and those the recipe tests use.
OPTION_SETS = {
    "default": {},
    "use_mask": {"use_mask": True},
    "unweighted": {"class_weight": None},
    "seed4": {"random_state": 4},
    "smote": {"balancing": "smote"},
    "random_oversampling": {"balancing": "random"},
    "preprocessing": {"preprocessing": ["median", "clahe", "otsu_roi"], "balancing": "smote"},
    "clahe": {"preprocessing": "clahe"},
    "mobilenet_v2": {"backbone": "mobilenet_v2"},
    "resnet50_random": {"backbone": "resnet50", "balancing": "random"},
    "resnet50_mask": {"backbone": "resnet50", "use_mask": True},
}


def applicable(recipe, options):
    """Whether ``options`` apply to ``recipe``: a backbone only to CNN recipes, oversampling not in
    front of an end-to-end network."""
    if "backbone" in options and not recipe.uses_cnn:
        return False
    return not (options.get("balancing") is not None and recipe.end_to_end)


def _value(value):
    if isinstance(value, BaseEstimator):
        return f"<{type(value).__module__}.{type(value).__qualname__}>"  # its parameters are listed apart
    if isinstance(value, (list, tuple)):
        return f"{type(value).__name__}[" + ", ".join(_value(v) for v in value) + "]"
    return repr(value)


def describe(pipe):
    """``{"repr": ..., "params": ...}`` of a pipeline, free of memory addresses.

    ``repr`` is scikit-learn's repr with its line breaks and indentation collapsed to single
    spaces; ``params`` maps every ``get_params(deep=True)`` name to its value's repr, a nested
    estimator shown as its class path (its own parameters appear under their ``a__b`` names).
    """
    params = {k: _value(v) for k, v in sorted(pipe.get_params(deep=True).items())}
    return {"repr": " ".join(repr(pipe).split()), "params": params}


def digest(params):
    """SHA-256 of the ``params`` description (recorded in place of the full table for most option sets)."""
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()


def _cases():
    for name in sorted({key.split("/")[0] for key in RECORDED}):
        for label in OPTION_SETS:
            if f"{name}/{label}" in RECORDED:
                yield name, label


def test_the_record_covers_every_built_in_recipe_and_option_set():
    built_in = {name for name in recipes.RECIPES if recipes.RECIPES.is_built_in(name)}
    assert {key.split("/")[0] for key in RECORDED} == built_in
    for name in built_in:
        expected = {label for label, options in OPTION_SETS.items() if applicable(recipes.get(name), options)}
        assert {key.split("/")[1] for key in RECORDED if key.split("/")[0] == name} == expected, name


@pytest.mark.parametrize(("name", "label"), list(_cases()))
def test_recipe_builds_the_recorded_pipeline(name, label):
    recorded = RECORDED[f"{name}/{label}"]
    now = describe(recipes.make(name, **OPTION_SETS[label]))
    # exact: string forms of parameters, recorded from the same deterministic construction
    assert now["repr"] == recorded["repr"]
    if "params" in recorded:
        assert now["params"] == recorded["params"]
    assert digest(now["params"]) == recorded["params_sha256"]
