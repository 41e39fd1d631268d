"""The README's main job, ``featurepipe benchmark --demo``, end to end (issues 10 and 13)."""

import json
import warnings

import pytest

from featurepipe.cli import main
from featurepipe.cli_run import DEMO_RECIPES


@pytest.mark.slow
def test_benchmark_demo_is_complete_and_its_plots_print_the_table(tmp_path, capsys):
    out = tmp_path / "demo"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["benchmark", "--demo", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "SYNTHETIC" in printed
    # The demo must not trigger its own warnings about folds without a class (issue 10, point 3).
    assert not [w for w in caught if "fold" in str(w.message) and "class" in str(w.message)]
    data = json.loads((out / "results.json").read_text())
    assert sorted(data["summary"]) == sorted(DEMO_RECIPES)
    n_folds = data["config"]["cv"]["n_splits"] * data["config"]["cv"]["n_repeats"]
    labels = data["dataset"]["labels"]
    for name in DEMO_RECIPES:
        assert data["summary"][name]["roc_auc"]["n"] == n_folds  # every fold has every class
        for record in (r for r in data["folds"] if r["pipeline"] == name):
            assert sorted(set(record["y_true"])) == sorted(labels)
            # calibrated probabilities: one row per test image, summing to 1
            assert all(abs(sum(row) - 1) < 1e-6 for row in record["y_score"])
    # The CNN recipe with a linear head gets a class-activation-map panel in the report; the ELM does not.
    assert (out / "cam_convnet_svm_linear.png").is_file() and not (out / "cam_convnet_elm.png").exists()
    assert "cam_convnet_svm_linear" in (out / "report.html").read_text()
    # Each ROC panel prints the table's cells: the summary and every class's mean ± std.
    svg = (out / "roc_curves.svg").read_text()
    for name in DEMO_RECIPES:
        cell = data["summary"][name]["roc_auc"]
        assert f"ROC-AUC {cell['mean']:.3f} ± {cell['std']:.3f} ({cell['n']} folds)" in svg
        for label in labels:
            per = data["per_class"][name][label]["roc_auc"]
            assert f"{label}: AUC {per['mean']:.3f} ± {per['std']:.3f} ({per['n']} folds)" in svg
