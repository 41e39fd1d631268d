"""``--task``, ``--unit`` and ``--patch-context`` on ``data check``, ``benchmark`` and ``fit``."""

import numpy as np
from PIL import Image

from featurepipe.cli import main


def _mias(tmp_path):
    root = tmp_path / "mias"
    root.mkdir()
    yy, xx = np.mgrid[:64, :64]
    for ref in ("mdb001", "mdb002", "mdb003", "mdb004"):
        image = np.where(((yy - 32) / 28.0) ** 2 + ((xx - 20) / 18.0) ** 2 <= 1, 120, 3).astype(np.uint8)
        Image.fromarray(image).save(root / f"{ref}.png")
    (root / "Info.txt").write_text("mdb001 G CIRC B 20 40 5\nmdb002 D CALC M *NOTE 3*\nmdb003 F NORM\n"
                                   "mdb004 F SPIC M 18 30 4\n")
    return root


def test_data_check_reads_task_and_unit(tmp_path, capsys):
    root = _mias(tmp_path)
    assert main(["data", "check", str(root), "--no-duplicates", "--task", "benign-malignant"]) == 0
    out = capsys.readouterr().out
    assert "layout  mias  (task benign-malignant)  (unit image)" in out
    assert "total" in out and "unusable files: 0" in out  # mdb002 (no coordinates) is a valid whole image
    assert main(["data", "check", str(root), "--no-duplicates", "--task", "benign-malignant", "--unit",
                 "patch"]) == 1
    out = capsys.readouterr().out
    assert "(unit patch)" in out and "has no coordinates" in out


def test_benchmark_and_fit_refuse_task_options_a_layout_does_not_have(tmp_path, capsys):
    folder = tmp_path / "folder"
    for label in ("a", "b"):
        (folder / label).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(folder / label / f"{i}.png")
    assert main(["benchmark", str(folder), "--unit", "patch", "--recipes", "firstorder_glcm_svm",
                 "--output", str(tmp_path / "out")]) == 2
    assert "--unit applies to the mias layout, not to 'folder'" in capsys.readouterr().err
    assert main(["fit", "firstorder_glcm_svm", str(folder), "--task", "binary", "-o", str(tmp_path / "m.skops")]) == 2
    assert "--task applies to the mias and breakhis layouts, not to 'folder'" in capsys.readouterr().err
    assert main(["benchmark", "--demo", "--task", "normal-abnormal"]) == 2
    assert "--task/--unit apply to a dataset's layout, not to the demo set" in capsys.readouterr().err


def test_patch_context_sizes_mias_patches_from_the_radius(tmp_path, capsys):
    from argparse import Namespace

    import pytest

    from featurepipe.cli_data import task_options
    from featurepipe.experiment import DatasetSpec, SpecError, from_dict, load_data

    args = Namespace(task=None, unit="patch", patch_context=0.5)
    assert task_options(args, "mias") == {"unit": "patch", "fit_radius": True, "context": 0.5}
    with pytest.raises(ValueError, match="--patch-context sizes the patches of the mias layout with --unit patch"):
        task_options(Namespace(task=None, unit=None, patch_context=0.5), "mias")
    with pytest.raises(ValueError, match="got layout 'busi'"):
        task_options(Namespace(task=None, unit=None, patch_context=0.5), "busi")
    root = _mias(tmp_path)
    # mdb001: radius 5 -> diameter 11, context ceil(6 * 11) = 66 px per side -> 143 px (over the 128-px floor)
    dataset = load_data(DatasetSpec(path=str(root), unit="patch", patch_context=6.0))
    patch = next(s for s in dataset if s.meta.get("ref") == "mdb001")
    assert patch.image.shape == (143, 143) and dataset.info["context"] == 6.0
    with pytest.raises(SpecError, match="dataset.patch_context must be a number >= 0"):
        from_dict({"dataset": {"path": str(root), "patch_context": -1}})
    assert main(["benchmark", "--demo", "--patch-context", "0.5"]) == 2
    assert "apply to a dataset's layout, not to the demo set" in capsys.readouterr().err
