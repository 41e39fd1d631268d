"""Manifests: writing, reading, loading, and verifying a data root against one."""

import csv
import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from featurepipe.datasets import (
    file_sha256,
    load_busi,
    load_folder,
    load_manifest,
    read_manifest,
    verify_manifest,
    write_manifest,
)

MANIFESTS = Path(__file__).resolve().parents[1] / "data_manifests"


def _save(path, pixels):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(pixels)).save(path)
    return path


@pytest.fixture
def tree(tmp_path, rng):
    """A class-per-folder tree with masks; names with spaces and commas."""
    root = tmp_path / "data"
    for label in ("benign", "malignant"):
        for i in range(2):
            name = f"{label}, case ({i})"
            _save(root / label / f"{name}.png", rng.integers(0, 256, size=(9, 7), dtype=np.uint8))
            mask = np.zeros((9, 7), np.uint8)
            mask[i:i + 3, 2:5] = 255
            _save(root / label / f"{name}_mask.png", mask)
    _save(root / "benign" / "benign, case (0)_mask_1.png", np.eye(9, 7, dtype=np.uint8) * 255)
    return root


def test_write_then_load_roundtrip(tree, tmp_path):
    ds = load_folder(tree, mask_suffix="_mask")
    out = write_manifest(ds, tmp_path / "out" / "m.csv")
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["path"] for r in rows] == [s.meta["relpath"] for s in ds]
    first = rows[0]
    assert first["path"] == "benign/benign, case (0).png"
    assert first["mask"] == "benign/benign, case (0)_mask.png;benign/benign, case (0)_mask_1.png"
    assert first["sha256"] == hashlib.sha256((tree / first["path"]).read_bytes()).hexdigest()
    assert first["mask_sha256"].split(";")[1] == file_sha256(tree / "benign" / "benign, case (0)_mask_1.png")
    back = load_manifest(out, root=tree, check_sha256=True)
    assert [s.key for s in back] == [s.key for s in ds]
    assert list(back.y) == list(ds.y) and back.skipped == []
    # exact: integer, boolean or string values
    np.testing.assert_array_equal(back[0].mask, ds[0].mask)
    assert back[0].meta["manifest_line"] == 2


def test_manifest_groups_and_extra_columns(tree, tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text('path,label,group,site\n'
                        '"benign/benign, case (0).png",b,P1,cairo\n'
                        '"malignant/malignant, case (1).png",m,,\n')
    ds = load_manifest(manifest, root=tree)
    assert list(ds.y) == ["b", "m"]
    assert [s.group for s in ds] == ["P1", None]
    assert ds[0].meta["site"] == "cairo" and "site" not in ds[1].meta


def test_read_manifest_errors_name_the_line(tmp_path):
    cases = {
        "path,group\na.png,1\n": "lacks the required column",
        "path,label\na.png,x,extra\n": "line 2: 3 fields",
        "path,label\na.png,\n": "line 2: empty 'label'",
        "path,label\n,x\n": "line 2: empty 'path'",
        "path,label,sha256\na.png,x,abc\n": "64 hex digits",
        "path,label\na.png,x\nb.png,y\na.png,z\n": "line 4: 'a.png' is already listed on line 2",
        "path,label,mask,mask_sha256\na.png,x,m1.png;m2.png," + "0" * 64 + "\n": "1 'mask_sha256' values for 2",
        "": "is empty",
    }
    for i, (text, fragment) in enumerate(cases.items()):
        path = tmp_path / f"m{i}.csv"
        path.write_text(text)
        with pytest.raises(ValueError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
            read_manifest(path)
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        read_manifest(tmp_path / "nope.csv")


def test_load_manifest_reports_missing_mismatched_and_corrupt(tree, tmp_path):
    ds = load_folder(tree, mask_suffix="_mask")
    manifest = write_manifest(ds, tmp_path / "m.csv")
    (tree / "benign" / "benign, case (1).png").unlink()
    changed = tree / "malignant" / "malignant, case (0).png"
    _save(changed, np.zeros((9, 7), np.uint8))  # valid image, different bytes
    broken = tree / "malignant" / "malignant, case (1).png"
    broken.write_bytes(broken.read_bytes()[:40])
    loose = load_manifest(manifest, root=tree)
    skipped = dict(loose.skipped)
    assert "line 3 but not found" in skipped[str(tree / "benign" / "benign, case (1).png")]
    assert "truncated" in skipped[str(broken)] or "corrupt" in skipped[str(broken)]
    assert sorted(s.name for s in loose) == ["benign, case (0).png", "malignant, case (0).png"]
    strict = load_manifest(manifest, root=tree, check_sha256=True)
    assert "sha256 mismatch: m.csv line 4" in dict(strict.skipped)[str(changed)]
    assert [s.name for s in strict] == ["benign, case (0).png"]


def test_write_manifest_refuses_patches_and_outside_paths(tree, tmp_path):
    ds = load_folder(tree)
    with pytest.raises(ValueError, match="not under the manifest root"):
        write_manifest(ds, tmp_path / "m.csv", root=tree / "benign")
    with pytest.raises(ValueError, match="clash"):
        write_manifest(ds, tmp_path / "m.csv", extra_columns=["label"])


def test_verify_manifest_reports_precisely(tree, tmp_path):
    ds = load_folder(tree, mask_suffix="_mask")
    manifest = write_manifest(ds, tmp_path / "m.csv")
    report = verify_manifest(manifest, tree)
    assert report.ok and report.n_rows == 4 and report.n_files == 9
    assert "OK" in report.summary()

    (tree / "benign" / "benign, case (1)_mask.png").unlink()
    _save(tree / "benign" / "new.png", np.zeros((3, 3), np.uint8))
    (tree / "malignant" / ".hidden.png").write_bytes(b"")
    (tree / "malignant" / "notes.txt").write_text("not an image")
    changed = tree / "malignant" / "malignant, case (0).png"
    _save(changed, np.full((9, 7), 3, np.uint8))
    broken = tree / "malignant" / "malignant, case (1).png"
    original = file_sha256(broken)
    broken.write_bytes(broken.read_bytes()[:60])
    report = verify_manifest(manifest, tree)
    assert not report.ok
    assert report.missing == [("benign/benign, case (1)_mask.png", 3)]
    assert report.extra == ["benign/new.png"]
    mismatched = {p: (e, a) for p, e, a in report.checksum_mismatch}
    assert set(mismatched) == {"malignant/malignant, case (0).png", "malignant/malignant, case (1).png"}
    assert mismatched["malignant/malignant, case (1).png"] == (original, file_sha256(broken))
    assert [p for p, _ in report.corrupt] == ["malignant/malignant, case (1).png"]
    text = str(report)
    for fragment in ("1 missing", "(line 3)", "2 checksum mismatch", "1 corrupt", "1 extra", "benign/new.png"):
        assert fragment in text
    quick = verify_manifest(manifest, tree, decode=False)
    assert quick.corrupt == [] and "not decoded" in quick.summary()


def test_verify_manifest_without_checksums_notes_it(tree, tmp_path):
    manifest = write_manifest(load_folder(tree), tmp_path / "m.csv", checksums=False)
    report = verify_manifest(manifest, tree, n_jobs=2)
    # without mask_suffix every file (masks too) is an image row; none has a checksum
    assert report.ok and report.n_rows == 9 and len(report.no_checksum) == 9
    assert "have no checksum" in report.summary()


@pytest.mark.parametrize("name,folder,files,counts", [
    ("busi.csv", "busi", 1578, {"benign": 437, "malignant": 210, "normal": 133}),
    ("mini_mias_sample.csv", "mias_sample", 60, {"benign": 14, "malignant": 3, "normal": 43}),
    ("breakhis_sample.csv", "breakhis_sample", 12, {"benign": 8, "malignant": 4}),
])
def test_shipped_manifests_match_the_shared_data(shared_data, name, folder, files, counts):
    report = verify_manifest(MANIFESTS / name, shared_data / folder, decode=False)
    assert report.ok, report.summary()
    assert report.n_files == files and report.no_checksum == []
    ds = load_manifest(MANIFESTS / name, shared_data / folder, validate=False)
    assert ds.class_counts() == counts


def test_busi_manifest_equals_the_busi_builder(shared_data):
    from_manifest = load_manifest(MANIFESTS / "busi.csv", shared_data / "busi", mode="gray", validate=False)
    from_layout = load_busi(shared_data / "busi", validate=False)
    assert [s.key for s in from_manifest] == [s.key for s in from_layout]
