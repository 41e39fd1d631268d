"""The README's command-line block runs as written (issue 10, point 6).

Each line of the ``## Command line`` block is run in order through
``featurepipe.cli.main``, in a scratch folder. The README points at the real
BUSI data beside the repository (``../shared/data/busi``); here that path is
a generated tree with BUSI's layout (three class folders, ``x.png`` with
``x_mask.png``), small enough for CI, and ``new_images/`` is generated too.
Every other word of each command is the README's.
"""

import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from featurepipe.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"
BUSI_PATH = "../shared/data/busi"


def _command_lines():
    text = README.read_text()
    section = text[text.index("## Command line"):]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S).group(1)
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


def _lesion_image(rng, label, size=64):
    """A speckled image with a dark blob (rough outline for 'malignant'), and its mask."""
    yy, xx = np.mgrid[:size, :size]
    image = rng.normal(150, 20, (size, size))
    mask = np.zeros((size, size), bool)
    if label != "normal":
        radius = 12 + 6 * np.sin(7 * np.arctan2(yy - 32, xx - 32)) * (label == "malignant")
        mask = (yy - 32) ** 2 + (xx - 32) ** 2 < radius ** 2
        image[mask] -= 90
    return np.clip(image, 0, 255).astype(np.uint8), mask


def _busi_like_tree(root, rng, per_class=6):
    for label in ("benign", "malignant", "normal"):
        folder = root / label
        folder.mkdir(parents=True)
        for k in range(per_class):
            image, mask = _lesion_image(rng, label)
            Image.fromarray(image).save(folder / f"{label} ({k + 1}).png")
            Image.fromarray(mask.astype(np.uint8) * 255).save(folder / f"{label} ({k + 1})_mask.png")


@pytest.mark.slow
def test_readme_command_line_block_runs(tmp_path, monkeypatch, capsys):
    lines = _command_lines()
    assert lines and all(line.startswith("featurepipe") for line in lines)
    rng = np.random.default_rng(0)
    work = tmp_path / "work"
    work.mkdir()
    _busi_like_tree(tmp_path / "busi", rng)
    _busi_like_tree(work / "new_images", np.random.default_rng(1), per_class=1)
    monkeypatch.chdir(work)
    for line in lines:
        argv = [str(tmp_path / "busi") if word == BUSI_PATH else word for word in shlex.split(line)[1:]]
        try:
            status = main(argv)
        except SystemExit as done:  # --help exits through argparse
            status = done.code
        out = capsys.readouterr()
        assert status == 0, f"README command failed: {line}\n{out.out[-2000:]}\n{out.err[-2000:]}"
        if argv[:2] == ["data", "check"]:
            assert "18 usable images in 3 classes" in out.out
        if argv[:1] == ["predict"]:
            rows = Path(argv[argv.index("-o") + 1]).read_text().splitlines() if "-o" in argv else out.out.splitlines()
            assert any("proba_benign" in row for row in rows[:1])
            assert sum(1 for row in rows[1:] if row.strip()) == 3  # 3 images; their masks skipped
