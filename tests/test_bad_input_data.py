"""A generated bad-input corpus for the data edges (issue 11, points 2, 6, 7, 8 and 10).

Each case builds the bad input on the fly and asserts the exact behaviour: refused with a
message naming the file/line/parameter and what was expected, or handled correctly (checked
against the exact values). Nothing here may hang: FIFOs get a guard that unblocks them, and
reads that could run away (``/dev/zero``) run in a subprocess with a memory limit and timeout.
"""

import os
import struct
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from featurepipe import preprocessing as pp
from featurepipe.cli import main
from featurepipe.datasets import load_busi, load_folder, load_manifest, read_manifest, verify_manifest
from featurepipe.io import ImageReadError, read_image, to_float_image
from featurepipe.sample import Sample

REPO = Path(__file__).resolve().parents[1]
posix_only = pytest.mark.skipif(not hasattr(os, "mkfifo") or not os.path.exists("/dev/zero"),
                                reason="needs FIFOs, /dev/zero and symbolic links (POSIX)")


def _save(path, pixels):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(pixels)).save(path)
    return path


def _write(path, text, encoding="utf-8"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


# =============================================================================================
# 2. manifest paths stay inside the data root
# =============================================================================================
@pytest.fixture
def rooted(tmp_path, rng):
    """``root/data/a.png`` inside the root and ``outside/secret.png`` next to it."""
    root = tmp_path / "root"
    inside = rng.integers(0, 256, size=(6, 5), dtype=np.uint8)
    secret = rng.integers(0, 256, size=(4, 7), dtype=np.uint8)
    _save(root / "data" / "a.png", inside)
    _save(tmp_path / "outside" / "secret.png", secret)
    return root, inside, secret


def test_parent_escape_is_refused_before_any_file_is_opened(rooted, monkeypatch):
    root, _, _ = rooted
    manifest = _write(root / "m.csv", "path,label,sha256\ndata/a.png,x,\n../../../../etc/passwd,y," + "0" * 64 + "\n")
    opened = []  # every way the loaders open a listed file, spied on
    import featurepipe.datasets.manifest as manifest_module
    import featurepipe.datasets.verify as verify_module
    import featurepipe.sample as sample_module

    for module, name in ((manifest_module, "file_sha256"), (verify_module, "file_sha256"),
                         (verify_module, "open_regular_file"), (sample_module, "read_file_bytes")):
        monkeypatch.setattr(module, name, lambda p, *a, **k: opened.append(p))
    for call in (lambda: load_manifest(manifest, check_sha256=True), lambda: verify_manifest(manifest)):
        with pytest.raises(ValueError) as info:
            call()
        message = str(info.value)
        assert "m.csv" in message and "line 3" in message and "../../../../etc/passwd" in message
        assert "outside the data root" in message and "allow_outside_root=True" in message
    assert opened == []


def test_escape_through_dotdot_and_absolute_paths_need_the_opt_in(rooted):
    root, inside, secret = rooted
    outside = (root.parent / "outside" / "secret.png").resolve()
    for listed in ("../outside/secret.png", "data/../../outside/secret.png", str(outside)):
        manifest = _write(root / "m.csv", f"path,label\ndata/a.png,x\n{listed},y\n")
        with pytest.raises(ValueError, match=r"line 3: .*outside the data root"):
            load_manifest(manifest)
        ds = load_manifest(manifest, allow_outside_root=True)
        assert ds.skipped == [] and list(ds.y) == ["x", "y"]
        # exact: uint8 / 255 is one correctly rounded float32 division, the reader's own
        np.testing.assert_array_equal(ds[1].image, secret / np.float32(255))
        np.testing.assert_array_equal(ds[0].image, inside / np.float32(255))
        report = verify_manifest(manifest, allow_outside_root=True)
        assert report.missing == [] and report.corrupt == []


def test_absolute_path_needs_the_opt_in_even_inside_the_root(rooted):
    root, inside, _ = rooted
    manifest = _write(root / "m.csv", f"path,label\n{(root / 'data' / 'a.png').resolve()},x\n")
    with pytest.raises(ValueError, match=r"line 2: path '/.*a\.png' is absolute; .*allow_outside_root=True"):
        load_manifest(manifest)
    ds = load_manifest(manifest, allow_outside_root=True)
    # exact: uint8 / 255 is one correctly rounded float32 division, the reader's own
    np.testing.assert_array_equal(ds[0].image, inside / np.float32(255))


def test_symlink_resolving_outside_counts_as_outside(rooted):
    root, _, secret = rooted
    os.symlink(root.parent / "outside", root / "linked")
    (root / "data" / "b.png").symlink_to(root.parent / "outside" / "secret.png")
    for listed in ("linked/secret.png", "data/b.png"):
        manifest = _write(root / "m.csv", f"path,label\n{listed},y\n")
        with pytest.raises(ValueError, match=r"line 2: .*resolves to .*secret\.png.*outside the data root"):
            load_manifest(manifest)
        with pytest.raises(ValueError, match="outside the data root"):
            verify_manifest(manifest)
        ds = load_manifest(manifest, allow_outside_root=True)
        # exact: uint8 / 255 is one correctly rounded float32 division, the reader's own
        np.testing.assert_array_equal(ds[0].image, secret / np.float32(255))


def test_mask_path_outside_the_root_is_refused(rooted):
    root, _, _ = rooted
    manifest = _write(root / "m.csv", "path,label,mask\ndata/a.png,x,data/a.png;../outside/secret.png\n")
    with pytest.raises(ValueError, match=r"line 2: mask path '\.\./outside/secret\.png'.*outside the data root"):
        load_manifest(manifest)


@pytest.mark.parametrize("alias", ["./data/a.png", "data//a.png", "data/./a.png", "data/sub/../a.png"])
def test_the_same_file_under_two_spellings_is_an_error_naming_both_rows(rooted, alias):
    root, _, _ = rooted
    manifest = _write(root / "m.csv", f"path,label\ndata/a.png,benign\n{alias},malignant\n")
    with pytest.raises(ValueError) as info:
        read_manifest(manifest)
    message = str(info.value)
    assert "line 3" in message and "line 2" in message and repr(alias) in message and "'data/a.png'" in message


def test_a_symlink_alias_inside_the_root_is_the_same_file(rooted):
    root, _, _ = rooted
    (root / "data" / "alias.png").symlink_to("a.png")
    manifest = _write(root / "m.csv", "path,label\ndata/a.png,benign\ndata/alias.png,malignant\n")
    for call in (lambda: load_manifest(manifest), lambda: verify_manifest(manifest)):
        with pytest.raises(ValueError, match=r"line 3: 'data/alias\.png' is already listed on line 2 as 'data/a\.png' \(the same file"):
            call()


def test_normalised_paths_are_what_the_samples_carry(rooted):
    root, _, _ = rooted
    manifest = _write(root / "m.csv", "path,label\n./data//a.png,x\n")
    assert read_manifest(manifest)[0].path == "data/a.png"
    assert load_manifest(manifest)[0].meta["relpath"] == "data/a.png"


def test_cli_data_commands_refuse_outside_paths_unless_opted_in(rooted, capsys):
    root, _, _ = rooted
    manifest = _write(root / "m.csv", "path,label\ndata/a.png,x\n../outside/secret.png,y\n")
    for command in (["data", "check", str(manifest), "--no-duplicates"], ["data", "verify", str(manifest)]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert "line 3" in err and "outside the data root" in err and "--allow-outside-root" in err
    assert main(["data", "check", str(manifest), "--no-duplicates", "--allow-outside-root"]) == 0
    out = capsys.readouterr().out
    assert "2 usable images in 2 classes" in out
    assert main(["data", "verify", str(manifest), "--allow-outside-root", "--no-decode"]) == 0


# =============================================================================================
# 8. FIFOs, devices and decompression bombs never hang or exhaust memory
# =============================================================================================
class _FifoGuard:
    """Opens the FIFO for writing after ``delay`` s (then closes it) so that a blocked reader returns."""

    def __init__(self, path, delay=20.0):
        self.path, self.fired = str(path), False
        self._timer = threading.Timer(delay, self._unblock)

    def _unblock(self):
        self.fired = True
        try:
            os.close(os.open(self.path, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass

    def __enter__(self):
        self._timer.start()
        return self

    def __exit__(self, *exc):
        self._timer.cancel()


@pytest.fixture
def fifo(tmp_path):
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this platform")
    path = tmp_path / "pipe.png"
    os.mkfifo(path)
    return path


def test_read_image_refuses_a_fifo_without_blocking(fifo):
    for call in (lambda: read_image(fifo), lambda: Sample.from_path(fifo)):
        with _FifoGuard(fifo) as guard, pytest.raises(ImageReadError) as info:
            call()
        assert not guard.fired, "the reader blocked on the FIFO"
        assert info.value.path == str(fifo) and "not a regular file (a FIFO" in info.value.reason


def test_manifest_listing_a_fifo_reports_it_without_blocking(fifo, rng):
    root = fifo.parent
    _save(root / "ok.png", rng.integers(0, 256, size=(5, 5), dtype=np.uint8))
    manifest = _write(root / "m.csv", "path,label,sha256\nok.png,a,\npipe.png,b," + "0" * 64 + "\n")
    with _FifoGuard(fifo) as guard:
        ds = load_manifest(manifest, check_sha256=True)
        report = verify_manifest(manifest)
    assert not guard.fired, "a reader blocked on the FIFO"
    assert [s.name for s in ds] == ["ok.png"]
    assert ds.skipped == [(str(fifo), "not a regular file (a FIFO, i.e. a named pipe); only regular files are read")]
    assert report.corrupt == [("pipe.png", "not a regular file (a FIFO, i.e. a named pipe); only regular files are read")]


def _run_limited(code, timeout=120):
    """Run ``code`` in a fresh interpreter with 3 GiB of address space and a timeout."""
    import resource

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))

    env = dict(os.environ, PYTHONPATH=str(REPO), OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                          preexec_fn=limit, env=env, cwd=str(REPO))


@posix_only
def test_symlink_to_dev_zero_is_refused_not_read(tmp_path):
    link = tmp_path / "zero.png"
    link.symlink_to("/dev/zero")
    code = ("from featurepipe.io import read_image, ImageReadError\n"
            f"try:\n    read_image({str(link)!r})\nexcept ImageReadError as e:\n    print('REASON', e.reason)\n")
    proc = _run_limited(code)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "REASON not a regular file (a character device" in proc.stdout


@posix_only
def test_data_check_lists_fifo_and_device_and_finishes(tmp_path, rng):
    root = tmp_path / "set"
    for i in range(2):
        _save(root / "a" / f"a{i}.png", rng.integers(0, 256, size=(8, 8), dtype=np.uint8))
        _save(root / "b" / f"b{i}.png", rng.integers(0, 256, size=(8, 8), dtype=np.uint8))
    os.mkfifo(root / "a" / "pipe.png")
    (root / "b" / "zero.png").symlink_to("/dev/zero")
    code = "import sys\nfrom featurepipe.cli import main\nsys.exit(main(['data', 'check', %r, '--n-jobs', '1']))" % str(root)
    proc = _run_limited(code)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "4 usable images in 2 classes" in proc.stdout
    assert "unusable files: 2" in proc.stdout
    assert "a/pipe.png: not a regular file (a FIFO" in proc.stdout
    assert "b/zero.png: not a regular file (a character device" in proc.stdout


def test_file_size_limit_is_checked_before_reading(tmp_path, rng):
    path = _save(tmp_path / "big.png", rng.integers(0, 256, size=(40, 40), dtype=np.uint8))
    size = path.stat().st_size
    with pytest.raises(ImageReadError, match=rf"the file has {size} bytes, more than max_bytes=100"):
        read_image(path, max_bytes=100)
    with pytest.raises(ImageReadError, match="max_bytes=100"):
        Sample.from_path(path, max_bytes=100)
    assert read_image(path, max_bytes=None).shape == (40, 40)


def _png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _write_black_png(path, width, height):
    """A valid 8-bit gray PNG of ``width`` x ``height`` zeros, compressed row by row (tiny on disk)."""
    packer = zlib.compressobj(9)
    row = b"\x00" * (width + 1)  # filter byte + pixels
    body = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", body)
                     + _png_chunk(b"IEND", b""))
    return path


def test_small_png_with_huge_declared_size_is_refused_before_decoding(tmp_path, monkeypatch):
    path = _write_black_png(tmp_path / "bomb.png", 9000, 9000)
    assert path.stat().st_size < 200_000  # ~80 KB on disk, 81 Mpixels decoded
    # A check made after decoding is no guard: fail loudly if anything starts decoding.
    from PIL import ImageFile

    def no_decoding(self):
        raise AssertionError("the image was decoded before its size was checked")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    assert "9000x9000 = 81000000 pixels exceeds max_pixels=" in info.value.reason
    assert "decompression-bomb guard" in info.value.reason


def test_tiny_declared_size_png_still_decodes(tmp_path):
    path = _write_black_png(tmp_path / "ok.png", 30, 20)
    # exact: zeros decode to zeros
    np.testing.assert_array_equal(read_image(path), np.zeros((20, 30), np.float32))


# =============================================================================================
# 6. numbers in the right units
# =============================================================================================
def test_from_array_refuses_float_images_outside_unit_range(rng):
    image = (rng.random((8, 8)) * 255).astype(np.float32)
    with pytest.raises(ValueError, match=r"^image has values in \[0\.\d+, 25\d\.\d+\]; expected float intensities in \[0, 1\] \(divide 8-bit"):
        Sample.from_array(image)
    with pytest.raises(ValueError, match=r"^image \(X\[1\]\) has values in .* expected float intensities in \[0, 1\]"):
        from featurepipe.sample import as_samples

        as_samples([image / 255, image])
    # the same pixels in range, or as uint8, are accepted and equal
    s = Sample.from_array(np.rint(image).astype(np.uint8))
    np.testing.assert_allclose(s.image, np.rint(image) / 255, rtol=0, atol=1e-7)


def test_to_float_image_range_check_is_opt_in_for_processed_images():
    standardized = np.array([[-1.5, 2.0]], np.float32)
    # exact: float32 input is returned without arithmetic
    np.testing.assert_array_equal(to_float_image(standardized), standardized)
    with pytest.raises(ValueError, match=r"expected float intensities in \[0, 1\] \(rescale or clip it\)"):
        to_float_image(standardized, unit_range=True)


_FUNCS = {
    "to_gray": lambda x: pp.to_gray(x),
    "to_rgb": lambda x: pp.to_rgb(x),
    "resize_image": lambda x: pp.resize_image(x, None, (4, 4)),
    "median_filter": lambda x: pp.median_filter(x, 3),
    "gaussian_filter": lambda x: pp.gaussian_filter(x, 1.0),
    "bilateral_filter": lambda x: pp.bilateral_filter(x, 5, 0.1, 5.0),
    "clahe": lambda x: pp.clahe(x),
    "standardize": lambda x: pp.standardize(x),
    "otsu_roi": lambda x: pp.otsu_roi(x, 1),
}


@pytest.mark.parametrize("func", sorted(_FUNCS))
@pytest.mark.parametrize("bad", ["nan", "inf"])
def test_preprocessing_functions_refuse_nan_and_inf(func, bad, rng):
    image = rng.random((16, 16)).astype(np.float32)
    image[3, 4] = np.nan if bad == "nan" else np.inf
    with pytest.raises(ValueError, match=rf"{func}: image contains 1 NaN or infinite value"):
        _FUNCS[func](image)
    with pytest.raises(ValueError, match=rf"{func}: image contains 256 NaN or infinite values"):
        _FUNCS[func](np.full((16, 16), np.nan, np.float32))


@pytest.mark.parametrize("func", sorted(_FUNCS))
def test_preprocessing_functions_refuse_four_channels(func, rng):
    image = rng.random((16, 16, 4)).astype(np.float32)
    with pytest.raises(ValueError, match=rf"{func}: image must have shape \(H, W\) or \(H, W, 3\); got \(16, 16, 4\)"):
        _FUNCS[func](image)


def _deep_rgb(rng, h=9, w=11, channels=3):
    return rng.integers(0, 65536, size=(h, w, channels), dtype=np.uint16)


@pytest.mark.parametrize("ext", ["png", "tif"])
def test_16bit_rgb_keeps_full_precision(tmp_path, rng, ext):
    rgb = _deep_rgb(rng)
    path = tmp_path / f"deep.{ext}"
    assert cv2.imwrite(str(path), rgb[..., ::-1])  # OpenCV writes BGR
    image = read_image(path)
    assert image.dtype == np.float32 and image.shape == (9, 11, 3)
    # every 16-bit value survives: x * 65535 rounds back to the stored integer
    # exact: integers recovered by rounding
    np.testing.assert_array_equal(np.rint(image.astype(np.float64) * 65535).astype(np.uint16), rgb)
    np.testing.assert_allclose(image, rgb / 65535.0, rtol=0, atol=1e-7)
    gray = read_image(path, mode="gray")
    np.testing.assert_allclose(gray, (rgb / 65535.0) @ np.array([0.299, 0.587, 0.114]), rtol=0, atol=1e-6)


@pytest.mark.parametrize("ext", ["png", "tif"])
def test_16bit_rgba_keeps_full_precision_and_composites(tmp_path, rng, ext):
    rgba = _deep_rgb(rng, channels=4)
    path = tmp_path / f"deep.{ext}"
    assert cv2.imwrite(str(path), rgba[..., [2, 1, 0, 3]])
    expected = (rgba[..., :3] / 65535.0) * (rgba[..., 3:] / 65535.0)
    np.testing.assert_allclose(read_image(path), expected, rtol=0, atol=1e-6)


def test_16bit_gray_alpha_png_stays_gray_at_full_precision(tmp_path, rng):
    gray = rng.integers(0, 65536, size=(6, 7), dtype=np.uint16)
    alpha = np.full((6, 7), 65535, np.uint16)
    alpha[0, 0] = 32768
    path = tmp_path / "la16.png"
    # Pillow cannot write 16-bit LA; build it with the PNG chunk writer (colour type 4, 16 bit)
    raw = b"".join(b"\x00" + np.dstack([gray, alpha]).astype(">u2")[r].tobytes() for r in range(6))
    ihdr = struct.pack(">IIBBBBB", 7, 6, 16, 4, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(raw))
                     + _png_chunk(b"IEND", b""))
    image = read_image(path)
    assert image.shape == (6, 7)
    np.testing.assert_allclose(image, gray / 65535.0 * (alpha / 65535.0), rtol=0, atol=1e-6)


def test_float32_rgb_tiff_from_opencv_is_read_exactly(tmp_path, rng):
    rgb = rng.random((7, 5, 3)).astype(np.float32)
    path = tmp_path / "float.tif"
    assert cv2.imwrite(str(path), rgb[..., ::-1])
    # exact: a float32 file already holds the convention's values; nothing is converted
    np.testing.assert_array_equal(read_image(path), rgb)
    np.testing.assert_allclose(read_image(path, mode="gray"), rgb @ np.array([0.299, 0.587, 0.114]),
                               rtol=0, atol=1e-6)
    assert cv2.imwrite(str(tmp_path / "hot.tif"), (rgb * 255)[..., ::-1])
    with pytest.raises(ImageReadError, match=r"floating-point image with values in \[[\d.]+, 25\d[\d.]*\]; featurepipe expects float images in \[0, 1\]"):
        read_image(tmp_path / "hot.tif")


# =============================================================================================
# 7. nothing dropped silently
# =============================================================================================
def test_verify_finds_unlisted_images_under_a_symlinked_subfolder(tmp_path, rng):
    root = tmp_path / "root"
    _save(root / "a" / "x.png", rng.integers(0, 256, size=(5, 5), dtype=np.uint8))
    _save(tmp_path / "elsewhere" / "y.png", rng.integers(0, 256, size=(5, 5), dtype=np.uint8))
    (root / "linked").symlink_to(tmp_path / "elsewhere")
    (root / "loop").symlink_to(root)  # a cycle must not make the walk run forever
    manifest = _write(root / "m.csv", "path,label\na/x.png,p\n")
    report = verify_manifest(manifest)
    assert report.extra == ["linked/y.png"]
    assert not report.ok


def test_header_only_manifest_is_an_error(tmp_path, capsys):
    manifest = _write(tmp_path / "m.csv", "path,label,group\n\n")
    for call in (lambda: read_manifest(manifest), lambda: load_manifest(manifest), lambda: verify_manifest(manifest)):
        with pytest.raises(ValueError, match=r"m\.csv' has a header but no rows: it lists no images"):
            call()
    assert main(["data", "check", str(manifest)]) == 2
    assert "has a header but no rows" in capsys.readouterr().err


@posix_only
def test_folder_loader_reports_fifo_dangling_link_and_unscanned_folder(tmp_path, rng):
    root = tmp_path / "busi"
    for label in ("benign", "malignant"):
        _save(root / label / f"{label} (1).png", rng.integers(0, 256, size=(8, 8), dtype=np.uint8))
        _save(root / label / f"{label} (1)_mask.png", np.eye(8, dtype=np.uint8) * 255)
    os.mkfifo(root / "benign" / "benign (2).png")
    (root / "malignant" / "malignant (2).png").symlink_to(root / "gone.png")
    _save(root / "malignant" / "extra" / "malignant (3).png", np.zeros((8, 8), np.uint8))
    ds = load_busi(root, require_mask=False)
    assert sorted(s.name for s in ds) == ["benign (1).png", "malignant (1).png"]
    reasons = {Path(p).name: r for p, r in ds.skipped}
    assert reasons["benign (2).png"].startswith("not a regular file (a FIFO")
    assert reasons["malignant (2).png"] == "no such file (a dangling symbolic link)"
    ignored = {Path(p).name: r for p, r in ds.info["ignored"]}
    assert ignored["extra"] == "a folder; not scanned (recursive=False reads the class folders only)"


def test_folder_loader_follows_symlinked_subfolders(tmp_path, rng):
    root = tmp_path / "set"
    pixels = rng.integers(0, 256, size=(6, 6), dtype=np.uint8)
    _save(root / "a" / "a0.png", pixels)
    _save(root / "b" / "b0.png", pixels[::-1])
    _save(tmp_path / "more" / "a1.png", pixels.T)
    (root / "a" / "more").symlink_to(tmp_path / "more")
    (root / "a" / "loop").symlink_to(root / "a")
    ds = load_folder(root)
    assert [s.meta["relpath"] for s in ds] == ["a/a0.png", "a/more/a1.png", "b/b0.png"]
    # exact: uint8 / 255 is one correctly rounded float32 division, the reader's own
    np.testing.assert_array_equal(ds[1].image, pixels.T / np.float32(255))


# =============================================================================================
# 10. clear errors
# =============================================================================================
def test_latin1_manifest_names_the_file_line_and_encoding(tmp_path, capsys):
    manifest = _write(tmp_path / "m.csv", "path,label\na.png,benign\nb.png,bénin\n", encoding="latin-1")
    with pytest.raises(ValueError) as info:
        read_manifest(manifest)
    message = str(info.value)
    assert str(manifest) in message and "is not valid UTF-8" in message and "line 3" in message
    assert "byte 0xe9" in message and "save it as UTF-8" in message
    assert main(["data", "check", str(manifest)]) == 2
    assert "is not valid UTF-8" in capsys.readouterr().err


@posix_only
def test_mias_reports_what_it_does_not_read(tmp_path):
    from featurepipe.datasets import load_mias

    root = tmp_path / "mias"
    _save(root / "mdb001.png", np.full((40, 40), 120, np.uint8))
    os.mkfifo(root / "mdb002.png")  # listed, but a FIFO
    (root / "mdb003.png").symlink_to(root / "gone.png")  # not listed, dangling
    _save(root / "extra" / "mdb004.png", np.zeros((40, 40), np.uint8))
    (root / "notes.txt").write_text("x")
    (root / "Info.txt").write_text("mdb001 G NORM\nmdb002 G NORM\n")
    ds = load_mias(root, unit="image")
    assert [s.name for s in ds] == ["mdb001.png"]
    skipped = {Path(p).name: r for p, r in ds.skipped}
    assert skipped["mdb002.png"].startswith("not a regular file (a FIFO")
    assert skipped["mdb003.png"] == "image has no row in Info.txt, so it has no label"
    ignored = {Path(p).name: r for p, r in ds.info["ignored"]}
    assert ignored == {"extra": "a folder; the mias layout reads the image files directly under the root",
                       "notes.txt": "not an image file extension"}


def test_breakhis_follows_symlinked_folders(tmp_path):
    from featurepipe.datasets import load_breakhis

    root = tmp_path / "BreaKHis_v1"
    name = "SOB_B_A-14-22549AB-40-001.png"
    _save(root / "benign" / name, np.full((4, 5, 3), 10, np.uint8))
    _save(tmp_path / "more" / "SOB_M_LC-14-12204-40-001.png", np.full((4, 5, 3), 20, np.uint8))
    (root / "malignant").symlink_to(tmp_path / "more")
    ds = load_breakhis(root)
    assert sorted(zip(ds.y, (s.meta["relpath"] for s in ds))) == [
        ("benign", "benign/" + name), ("malignant", "malignant/SOB_M_LC-14-12204-40-001.png")]


def test_fit_and_benchmark_refuse_outside_paths(tmp_path, rng, capsys):
    root = tmp_path / "root"
    lines = ["path,label"]
    for i in range(8):
        label = ("a", "b")[i % 2]
        base = root if i < 6 else tmp_path / "outside"
        pixels = np.clip(rng.normal(60 + 120 * (i % 2), 20, size=(24, 24)), 0, 255).astype(np.uint8)
        _save(base / f"{label}{i}.png", pixels)
        lines.append(f"{'' if i < 6 else '../outside/'}{label}{i}.png,{label}")
    manifest = _write(root / "m.csv", "\n".join(lines) + "\n")
    model = tmp_path / "m.skops"
    for command in (["fit", "glcm_svm", str(manifest), "-o", str(model)],
                    ["benchmark", str(manifest), "--recipes", "glcm_svm", "--output", str(tmp_path / "rep")]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert "line 8: path '../outside/a6.png'" in err and "outside the data root" in err
    assert not model.exists() and not (tmp_path / "rep").exists()


def test_fit_and_benchmark_refuse_outside_paths_unless_opted_in(tmp_path, rng, capsys):
    root = tmp_path / "root"
    lines = ["path,label"]
    for k in range(8):
        label = "smooth" if k % 2 else "rough"
        scale = 40 if k % 2 else 255
        _save(root / "data" / f"{k}.png", rng.integers(0, scale, size=(16, 16), dtype=np.uint8))
        lines.append(f"data/{k}.png,{label}")
    _save(tmp_path / "outside" / "extra.png", rng.integers(0, 40, size=(16, 16), dtype=np.uint8))
    lines.append("../outside/extra.png,smooth")
    manifest = _write(root / "m.csv", "\n".join(lines) + "\n")
    model = tmp_path / "m.skops"
    for command in (["fit", "firstorder_glcm_svm", str(manifest), "-o", str(model)],
                    ["benchmark", str(manifest), "--recipes", "firstorder_glcm_svm", "--splits", "2",
                     "--output", str(tmp_path / "report")]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert "line 10" in err and "outside the data root" in err and "--allow-outside-root" in err
    assert not model.exists()
    assert main(["fit", "firstorder_glcm_svm", str(manifest), "-o", str(model), "--allow-outside-root"]) == 0
    assert "fitted firstorder_glcm_svm on 9 images" in capsys.readouterr().out
    assert model.is_file()
