"""``featurepipe benchmark`` flags of the runner: --duplicates, --duplicate-threshold, --on-error, --overwrite."""

import json

import cv2
import numpy as np
import pytest

from featurepipe.cli import main


@pytest.fixture(scope="module")
def folder_with_a_tiny_image(tmp_path_factory):
    """Class-per-folder PNGs (9 per class) plus one 1x1 image, which GLCM cannot describe."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    for label, sigma in (("rough", 0.0), ("smooth", 2.0)):
        (root / label).mkdir()
        for i in range(9):
            image = rng.random((24, 24))
            if sigma:
                image = cv2.GaussianBlur(image, (0, 0), sigma)
            cv2.imwrite(str(root / label / f"{label}{i:02d}.png"), np.rint(image * 255).astype(np.uint8))
    cv2.imwrite(str(root / "rough" / "tiny.png"), np.full((1, 1), 128, dtype=np.uint8))
    return root


def test_benchmark_flags(folder_with_a_tiny_image, tmp_path, capsys):
    out = tmp_path / "report"
    args = ["benchmark", str(folder_with_a_tiny_image), "--recipes", "glcm_svm", "--splits", "3", "--no-plots",
            "--output", str(out)]
    with pytest.warns(UserWarning, match=r"1 image\(s\) excluded for every pipeline"):
        assert main(args + ["--duplicates", "exact"]) == 0
    data = json.loads((out / "results.json").read_text())
    assert [e["name"] for e in data["dataset"]["excluded"]] == ["tiny.png"]
    assert data["dataset"]["n_samples"] == 18 and data["config"]["duplicates"].startswith("exact")
    assert "**Excluded images**: 1" in (out / "summary.md").read_text()
    capsys.readouterr()
    # --on-error raise: the tiny image stops the run, with a message naming it
    assert main(args + ["--duplicates", "exact", "--on-error", "raise", "--output", str(tmp_path / "r2")]) != 0
    assert "no pixel pair" in capsys.readouterr().err
    # another configuration in the same folder is refused; --overwrite replaces it
    with pytest.warns(UserWarning, match="excluded"):
        assert main(args + ["--duplicates", "near", "--duplicate-threshold", "0.5"]) != 0
    err = capsys.readouterr().err
    assert "holds another experiment" in err and "--overwrite" in err
    with pytest.warns(UserWarning, match="excluded"):
        assert main(args + ["--duplicates", "none", "--overwrite"]) == 0
    data = json.loads((out / "results.json").read_text())
    assert data["config"]["duplicates"] == "none"
    # the same configuration again resumes and says so
    capsys.readouterr()
    with pytest.warns(UserWarning):
        assert main(args + ["--duplicates", "none"]) == 0
    assert "resuming: 3 of 3 folds done" in capsys.readouterr().err
