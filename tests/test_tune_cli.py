"""``featurepipe benchmark --tune`` (issue 14 #2): nested CV on each recipe's default grid, the chosen
parameters per fold in the text report as well as the HTML one; ``--grid`` stays an alias."""

import json

import pytest

from featurepipe import experiment, recipes
from featurepipe.cli import build_parser, main


@pytest.fixture(scope="module")
def demo_manifest(tmp_path_factory):
    """The synthetic demo set, small: 3 classes x 12 images (6 patients x 2 views) of 64 px."""
    from featurepipe.demo import generate_demo

    return generate_demo(tmp_path_factory.mktemp("tune") / "demo", n_per_class=12, size=64, n_duplicates=0) \
        / "manifest.csv"


def test_grid_is_an_alias_of_tune(demo_manifest):
    from featurepipe.cli_run import benchmark_spec

    common = ["benchmark", str(demo_manifest), "--recipes", "hog_svm", "--splits", "3"]
    tune, grid = (build_parser().parse_args(common + [flag]) for flag in ("--tune", "--grid"))
    assert tune.tune is grid.tune is True
    assert benchmark_spec(tune) == benchmark_spec(grid)
    assert benchmark_spec(tune).cv.tune is True
    assert build_parser().parse_args(common).tune is False


def test_tune_is_refused_with_an_experiment_file(tmp_path):
    config = tmp_path / "x.toml"
    config.write_text('[dataset]\ndemo = true\n[[pipelines]]\nname = "h"\nrecipe = "hog_svm"\n')
    from featurepipe.cli_run import benchmark_spec

    with pytest.raises(ValueError, match=r"^--tune cannot be combined with --config.*--set cv.tune=true"):
        benchmark_spec(build_parser().parse_args(["benchmark", "--config", str(config), "--tune"]))


def test_tune_reports_the_parameters_chosen_in_every_fold(demo_manifest, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["benchmark", str(demo_manifest), "--recipes", "hog_svm", "--tune", "--splits", "3", "--no-plots",
                 "--no-cache", "--duplicates", "exact", "--output", str(out)]) == 0
    grid = recipes.grid("hog_svm")
    folds = sorted(json.loads((out / "results.json").read_text())["folds"], key=lambda r: r["fold"])
    assert [r["status"] for r in folds] == ["ok"] * 3
    for r in folds:
        assert set(r["best_params"]) == set(grid)
        assert r["best_params"]["classifier__estimator__C"] in grid["classifier__estimator__C"]
        assert 0.0 <= r["inner_best_score"] <= 1.0

    summary = (out / "summary.md").read_text()
    assert summary.count("## Hyper-parameters chosen per fold") == 1
    section = summary.split("## Hyper-parameters chosen per fold")[1].split("\n## ")[0]
    assert "3-fold inner CV scored by 'balanced_accuracy'" in section  # the runner records repr(scoring)
    assert f'hog_svm `{json.dumps(grid)}`' in section
    rows = [line for line in section.splitlines() if line.startswith("| hog_svm |")]
    assert rows == [f"| hog_svm | 1 | {r['fold'] + 1} | `{json.dumps(r['best_params'], sort_keys=True)}` | "
                    f"{r['inner_best_score']:.3f} |" for r in folds]
    assert rows[0] in capsys.readouterr().out  # the summary the command prints
    html = (out / "report.html").read_text()
    for r in folds:
        assert json.dumps(r["best_params"], sort_keys=True).replace('"', "&quot;") in html
    assert experiment.load(out / experiment.EXPERIMENT_TOML).pipelines[0].grid == grid


def test_an_untuned_summary_has_no_tuning_section(demo_manifest, tmp_path):
    out = tmp_path / "out"
    assert main(["benchmark", str(demo_manifest), "--recipes", "hog_svm", "--splits", "3", "--no-plots",
                 "--no-cache", "--duplicates", "exact", "--output", str(out)]) == 0
    assert "Hyper-parameters chosen per fold" not in (out / "summary.md").read_text()
    assert "No pipeline was tuned" in (out / "report.html").read_text()


@pytest.mark.parametrize("name", [name for name, _, _ in recipes.list()])
def test_every_default_grid_is_small_and_explained(name):
    from sklearn.model_selection import ParameterGrid

    recipe = recipes.get(name)
    assert 1 <= len(ParameterGrid(recipes.grid(name))) <= 9, name
    assert "grid:" in recipe.defaults, name  # the defaults text says how the grid was chosen
