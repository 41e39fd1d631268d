"""Clear command-line errors instead of tracebacks or misleading text (issue 11, point 10, CLI part).

Each case asserts the exit status and the message: it names the option as typed on the
command line (``--seed``, ``--rank-by``), the bad value and what is expected.
"""

import pickle

import cv2
import numpy as np
import pytest

import featurepipe.benchmark
from featurepipe.cli import main
from featurepipe.metrics import METRIC_NAMES


def _argparse_error(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    return info.value.code, capsys.readouterr().err


def test_empty_recipe_list_is_a_clear_error(capsys):
    assert main(["benchmark", "--demo", "--recipes", ",,"]) == 2
    err = capsys.readouterr().err
    assert err == ("featurepipe: error: --recipes: no recipe name in ',,'; pass comma-separated names "
                   "(see `featurepipe recipes`)\n")


@pytest.mark.parametrize("command", [["benchmark", "--demo"], ["fit", "glcm_svm", ".", "-o", "m.skops"]])
@pytest.mark.parametrize("seed", ["-1", "4294967296", "abc"])
def test_bad_seed_names_the_flag(command, seed, capsys):
    code, err = _argparse_error([*command, "--seed", seed], capsys)
    assert code == 2
    assert f"argument --seed: must be an integer in [0, 4294967295]; got '{seed}'" in err


def test_unknown_rank_by_names_the_flag(capsys, tmp_path):
    assert main(["benchmark", "--demo", "--rank-by", "auc", "--output", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err == (f"featurepipe: error: --rank-by: unknown metric 'auc'; choose from {', '.join(METRIC_NAMES)}\n")
    assert "rank_by" not in err
    assert not (tmp_path / "r").exists()  # refused before any work


def test_ctrl_c_prints_one_line_and_the_resume_hint(monkeypatch, capsys, tmp_path):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(featurepipe.benchmark, "run_benchmark", interrupted)
    out = tmp_path / "report"
    status = main(["benchmark", "--demo", "--recipes", "hog_svm", "--no-plots", "--output", str(out)])
    err = capsys.readouterr().err
    assert status == 130  # 128 + SIGINT, as shells report an interrupted command
    assert err.splitlines()[-2:] == [
        "featurepipe: interrupted",
        f"featurepipe: finished folds are kept in {out}: run the same command again to resume",
    ]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err


def test_ctrl_c_in_fit_has_no_resume_hint(monkeypatch, capsys, tmp_path):
    import featurepipe.models

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(featurepipe.models, "fit_estimator", interrupted)
    for label in ("a", "b"):
        (tmp_path / "data" / label).mkdir(parents=True)
        cv2.imwrite(str(tmp_path / "data" / label / "x.png"), np.zeros((8, 8), np.uint8))
    status = main(["fit", "glcm_svm", str(tmp_path / "data"), "-o", str(tmp_path / "m.skops")])
    assert status == 130
    assert capsys.readouterr().err.splitlines()[-1] == "featurepipe: interrupted"


def test_a_pickle_named_skops_is_named_as_a_pickle(tmp_path, capsys):
    model = tmp_path / "model.skops"
    model.write_bytes(pickle.dumps({"not": "a model"}, protocol=4))
    assert main(["predict", str(model), str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"featurepipe: error: model file {str(model)!r} is a pickle/joblib file despite its "
                          ".skops name.")
    assert "--unsafe-pickle" in err and "--format" not in err


def test_a_folder_passed_as_the_model(tmp_path, capsys):
    assert main(["predict", str(tmp_path), str(tmp_path / "x.png")]) == 2
    assert capsys.readouterr().err == (
        f"featurepipe: error: model path {str(tmp_path)!r} is a folder, not a model file (pass the .skops file "
        "written by `featurepipe fit`)\n")
