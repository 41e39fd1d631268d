"""The command line: ``featurepipe --help``, ``data check``, ``data manifest``, ``data verify``."""

import csv
import subprocess
import sys

import cv2
import numpy as np
import pytest
from PIL import Image
from scipy import ndimage as ndi

from featurepipe import cli
from featurepipe.cli import main


def _texture(seed, size=48):
    smooth = ndi.gaussian_filter(np.random.default_rng(seed).random((size, size)), 2)
    return np.rint(255 * (smooth - smooth.min()) / (smooth.max() - smooth.min())).astype(np.uint8)


def _counts(out):
    """``{label: count}`` from the class table of ``data check``."""
    table = {}
    for line in out.splitlines():
        parts = line.split()
        if line.startswith("  ") and len(parts) == 2 and parts[1].isdigit():
            table[parts[0]] = int(parts[1])
    return table


def _save(path, pixels):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture
def folder(tmp_path):
    """Classes a (3 good) and b (2 good, one an exact copy of a/a0) plus three bad files in b."""
    root = tmp_path / "set"
    for i in range(3):
        _save(root / "a" / f"a{i}.png", _texture(i))
    _save(root / "b" / "b0.png", _texture(10))
    _save(root / "b" / "copy_of_a0.png", _texture(0))
    data = (root / "a" / "a1.png").read_bytes()
    (root / "b" / "truncated.png").write_bytes(data[: len(data) // 2])
    (root / "b" / "empty.png").write_bytes(b"")
    (root / "b" / "letter.png").write_text("Dear reviewer,\n")
    (root / "b" / "notes.txt").write_text("not an image")
    return root


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "usage: featurepipe" in out and "data" in out
    with pytest.raises(SystemExit):
        main(["data", "check", "--help"])
    help_text = capsys.readouterr().out
    assert "--duplicates {near,exact,none}" in help_text and "--duplicate-threshold" in help_text
    assert main([]) == 2 and "usage: featurepipe" in capsys.readouterr().out
    assert main(["data"]) == 2 and "check" in capsys.readouterr().out


def test_command_modules_register_through_the_command_registry():
    assert cli.COMMANDS["data"] == "featurepipe.cli_data"
    parser = cli.build_parser()
    args = parser.parse_args(["data", "manifest", "busi", "root", "-o", "x.csv"])
    assert (args.layout, args.root, args.output) == ("busi", "root", "x.csv")


def test_python_dash_m_runs_the_cli():
    result = subprocess.run([sys.executable, "-m", "featurepipe", "--version"], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0 and result.stdout.startswith("featurepipe ")


def test_data_check_reports_counts_bad_files_and_duplicates(folder, capsys):
    status = main(["data", "check", str(folder), "--n-jobs", "1"])
    out = capsys.readouterr().out
    assert status == 1
    assert "layout  folder" in out
    lines = out.splitlines()
    assert _counts(out) == {"a": 3, "b": 2, "total": 5}
    assert "unusable files: 3" in out
    assert any(line.startswith("  b/truncated.png: truncated") for line in lines)
    assert any(line.startswith("  b/empty.png: the file is empty") for line in lines)
    assert any(line.startswith("  b/letter.png: not an image") for line in lines)
    assert "ignored (not image files): 1" in out and "b/notes.txt" in out
    assert "1 clusters holding 2 images (1 exact pairs, 0 verified near pairs" in out
    assert "1 clusters span two or more labels" in out
    assert "cluster 0 (exact; a + b): a/a0.png, b/copy_of_a0.png" in out


def test_data_check_without_duplicates_still_finds_bad_files(folder, capsys):
    assert main(["data", "check", str(folder), "--no-duplicates"]) == 1
    out = capsys.readouterr().out
    assert "unusable files: 3" in out and "duplicates" not in out


def test_data_check_clean_folder_exits_zero(tmp_path, capsys):
    for i in range(2):
        _save(tmp_path / "c" / "x" / f"{i}.png", _texture(i))
    assert main(["data", "check", str(tmp_path / "c")]) == 0
    assert "unusable files: 0" in capsys.readouterr().out


def test_manifest_then_verify_then_check(folder, tmp_path, capsys):
    out_csv = tmp_path / "m.csv"
    status = main(["data", "manifest", "folder", str(folder), "-o", str(out_csv)])
    captured = capsys.readouterr()
    assert status == 1  # the three bad files are left out, and listed on stderr
    assert "wrote 5 rows (a: 3, b: 2)" in captured.out
    assert "3 files left out" in captured.err and "b/letter.png" in captured.err
    with open(out_csv, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["path"] for r in rows] == ["a/a0.png", "a/a1.png", "a/a2.png", "b/b0.png", "b/copy_of_a0.png"]

    # the root holds the bad files the manifest leaves out: verify calls them extra
    assert main(["data", "verify", str(out_csv), "--root", str(folder)]) == 1
    out = capsys.readouterr().out
    assert "3 extra (image files not in the manifest)" in out
    for name in ("truncated", "empty", "letter"):
        (folder / "b" / f"{name}.png").unlink()
    assert main(["data", "verify", str(out_csv), "--root", str(folder)]) == 0
    assert "OK" in capsys.readouterr().out
    (folder / "a" / "a2.png").unlink()
    assert main(["data", "verify", str(out_csv), "--root", str(folder), "--no-decode"]) == 1
    assert "a/a2.png  (line 4)" in capsys.readouterr().out

    assert main(["data", "check", str(out_csv), "--root", str(folder)]) == 1
    out = capsys.readouterr().out
    assert "layout  manifest" in out and "unusable files: 1" in out and "a/a2.png: listed in m.csv line 4" in out


def test_errors_are_reported_not_raised(tmp_path, capsys):
    assert main(["data", "check", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["data", "check", str(tmp_path), "--layout", "busi", "--task", "x"]) == 2
    assert "--task applies to the mias and breakhis layouts" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError):
        main(["--traceback", "data", "check", str(tmp_path / "missing")])


@pytest.mark.slow
def test_data_check_on_busi(shared_data, capsys):
    """Acceptance: counts 437/210/133 and the duplicate clusters, naming those that span two labels."""
    assert main(["data", "check", str(shared_data / "busi"), "--max-list", "5"]) == 0
    out = capsys.readouterr().out
    assert "layout  busi" in out
    assert _counts(out) == {"benign": 437, "malignant": 210, "normal": 133, "total": 780}
    assert "unusable files: 0" in out
    # verified near duplicates (docs/duplicates.md): before verification 149 clusters, 335 images, 225 near pairs
    assert "147 clusters holding 333 images (1 exact pairs, 226 verified near pairs; 80 candidate pairs rejected" \
        in out
    assert "8 clusters span two or more labels:" in out
    assert ("(near; benign + malignant): benign/benign (333).png, malignant/malignant (77).png, "
            "malignant/malignant (78).png") in out
    assert "(exact; benign + malignant): benign/benign (433).png, malignant/malignant (145).png" in out
    assert "(near; benign + normal): benign/benign (269).png, normal/normal (1).png" in out


def test_data_check_on_mias_sample(shared_data, capsys):
    status = main(["data", "check", str(shared_data / "mias_sample"), "--task", "benign-malignant",
                   "--no-duplicates"])
    out = capsys.readouterr().out
    assert status == 0
    assert "layout  mias  (task benign-malignant)" in out
    assert "groups (patients): 16" in out
    assert "excluded by the task: 43 normal images" in out


def _layout_alikes(tmp_path):
    """A folder with an original, its JPEG-re-encoded copy and a same-layout image of other texture."""
    root = tmp_path / "alike"
    size = 160
    yy, xx = np.mgrid[:size, :size]
    disk = (xx / size) ** 2 + ((yy - size / 2) / (0.45 * size)) ** 2 < 0.8 ** 2
    images = []
    for seed in (1, 4):
        texture = ndi.gaussian_filter(np.random.default_rng(seed).random((size, size)), 2.0)
        texture = (texture - texture.min()) / (texture.max() - texture.min())
        images.append(np.rint(255 * np.where(disk, 0.55 + 0.2 * texture, 0.02)).astype(np.uint8))
    _save(root / "a" / "original.png", images[0])
    ok, encoded = cv2.imencode(".jpg", images[0], [cv2.IMWRITE_JPEG_QUALITY, 75])
    _save(root / "b" / "reencoded.png", cv2.imdecode(encoded, cv2.IMREAD_GRAYSCALE))
    _save(root / "b" / "lookalike.png", images[1])
    return root


def test_data_check_prints_the_clusters_find_duplicates_gives(tmp_path, capsys):
    from featurepipe.datasets import load_folder
    from featurepipe.duplicates import find_duplicates

    root = _layout_alikes(tmp_path)
    assert main(["data", "check", str(root), "--n-jobs", "1"]) == 0
    out = capsys.readouterr().out
    report = find_duplicates(load_folder(root), on_error="report")
    assert report.summary(max_clusters=50) in out  # the same function, the same clusters
    assert "cluster 0 (near; a + b): a/original.png, b/reencoded.png" in out
    assert "2 candidate pairs rejected by verification" in out and "lookalike" not in out.split("rejected")[1]
    # exact: no pixel-identical pair here
    assert main(["data", "check", str(root), "--duplicates", "exact"]) == 0
    out = capsys.readouterr().out
    assert "duplicates (exact: bit-identical decoded pixels)" in out and "0 clusters holding 0 images" in out
    assert main(["data", "check", str(root), "--duplicates", "none"]) == 0
    assert "duplicates" not in capsys.readouterr().out
    # a threshold above the copy's detail correlation rejects it too
    correlation = report.pair_correlation[0]
    assert main(["data", "check", str(root), "--duplicate-threshold", f"{min(1.0, correlation + 0.001):.4f}"]) == 0
    assert "0 clusters holding 0 images" in capsys.readouterr().out


@pytest.mark.parametrize("argv,message", [
    (["--duplicate-threshold", "0"], "--duplicate-threshold must be in (0, 1]"),
    (["--duplicate-threshold", "10"], "--duplicate-threshold must be in (0, 1]"),
    (["--duplicates", "exact", "--duplicate-threshold", "0.6"], "--duplicate-threshold applies to --duplicates near"),
])
def test_data_check_duplicate_option_errors(folder, capsys, argv, message):
    assert main(["data", "check", str(folder)] + argv) == 2
    assert message in capsys.readouterr().err
