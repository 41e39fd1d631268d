"""Image reading: every supported format into one convention, one clear error per bad file."""

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from featurepipe.io import ImageReadError, read_image, read_mask, to_float_image


def _gray8(rng, h=13, w=17):
    return rng.integers(0, 256, size=(h, w), dtype=np.uint8)


def _rgb8(rng, h=13, w=17):
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("ext,fmt", [("png", "PNG"), ("bmp", "BMP"), ("tif", "TIFF"), ("pgm", "PPM"), ("gif", "GIF")])
def test_lossless_gray_8bit_roundtrip(tmp_path, rng, ext, fmt):
    pixels = _gray8(rng)
    path = tmp_path / f"img.{ext}"
    Image.fromarray(pixels).save(path, fmt)
    image = read_image(path)
    assert image.dtype == np.float32 and image.shape == pixels.shape
    if fmt == "GIF":  # GIF stores a palette; gray values survive a gray palette exactly
        np.testing.assert_allclose(read_image(path, mode="gray") * 255, pixels, atol=0.5)
    else:
        # exact: one correctly rounded division per pixel, identical on every SIMD path
        np.testing.assert_array_equal(image, pixels.astype(np.float32) / 255)


@pytest.mark.parametrize("ext,fmt", [("png", "PNG"), ("bmp", "BMP"), ("tif", "TIFF"), ("ppm", "PPM")])
def test_lossless_rgb_8bit_roundtrip(tmp_path, rng, ext, fmt):
    pixels = _rgb8(rng)
    path = tmp_path / f"img.{ext}"
    Image.fromarray(pixels).save(path, fmt)
    image = read_image(path)
    assert image.shape == (13, 17, 3)
    # exact: one correctly rounded division per pixel, identical on every SIMD path
    np.testing.assert_array_equal(image, pixels.astype(np.float32) / 255)


def test_jpeg_matches_opencv_decoder(tmp_path, rng):
    pixels = _rgb8(rng, 32, 40)
    path = tmp_path / "img.jpg"
    Image.fromarray(pixels).save(path, quality=90)
    ours = read_image(path)
    reference = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    # two JPEG decoders may differ by an IDCT rounding step
    assert np.abs(ours * 255 - reference.astype(np.float32)).max() <= 2.0


@pytest.mark.parametrize("fmt,ext", [("PNG", "png"), ("TIFF", "tif"), ("PPM", "pgm")])
def test_16bit_keeps_full_precision(tmp_path, rng, fmt, ext):
    pixels = rng.integers(0, 65536, size=(9, 11), dtype=np.uint16)
    path = tmp_path / f"deep.{ext}"
    if fmt == "PPM":
        header = f"P5\n11 9\n65535\n".encode()
        path.write_bytes(header + pixels.astype(">u2").tobytes())
    else:
        cv2.imwrite(str(path), pixels)
    image = read_image(path)
    np.testing.assert_allclose(image, pixels / 65535.0, rtol=0, atol=1e-7)


def test_rgba_composited_onto_black(tmp_path):
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[..., :3] = 200
    rgba[..., 3] = [[255, 0], [51, 255]]
    path = tmp_path / "alpha.png"
    Image.fromarray(rgba, "RGBA").save(path)
    image = read_image(path)
    expected = 200 / 255 * np.array([[1.0, 0.0], [0.2, 1.0]])
    assert image.shape == (2, 2, 3)
    np.testing.assert_allclose(image[..., 0], expected, atol=1e-6)


def test_palette_expanded_through_palette(tmp_path):
    im = Image.new("P", (3, 1))
    im.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    im.putdata([0, 1, 1])
    path = tmp_path / "pal.png"
    im.save(path)
    image = read_image(path)
    np.testing.assert_allclose(image[0] * 255, [[10, 20, 30], [200, 100, 50], [200, 100, 50]], atol=1e-4)


def test_cmyk_converted_like_pillow(tmp_path, rng):
    cmyk = Image.fromarray(rng.integers(0, 256, size=(5, 6, 4), dtype=np.uint8), "CMYK")
    path = tmp_path / "cmyk.tif"
    cmyk.save(path)
    expected = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255
    # exact: one correctly rounded division per pixel, identical on every SIMD path
    np.testing.assert_array_equal(read_image(path), expected)


def test_gif_first_frame_only(tmp_path):
    frames = [Image.fromarray(np.full((4, 4), v, np.uint8)).convert("P") for v in (30, 220)]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    np.testing.assert_allclose(read_image(path, mode="gray") * 255, 30, atol=0.5)


def test_mode_conversions(tmp_path, rng):
    pixels = _rgb8(rng)
    path = tmp_path / "c.png"
    Image.fromarray(pixels).save(path)
    gray = read_image(path, mode="gray")
    expected = (pixels.astype(np.float64) @ [0.299, 0.587, 0.114]) / 255
    np.testing.assert_allclose(gray, expected, atol=1e-6)
    # OpenCV's BT.601 conversion agrees up to its 8-bit rounding
    assert np.abs(gray * 255 - cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY)).max() <= 0.5 + 1e-4
    g = tmp_path / "g.png"
    Image.fromarray(pixels[..., 0]).save(g)
    rgb = read_image(g, mode="rgb")
    assert rgb.shape == (13, 17, 3)
    # exact: pixels copied or selected, no arithmetic
    np.testing.assert_array_equal(rgb[..., 0], rgb[..., 2])
    with pytest.raises(ValueError, match="mode must be"):
        read_image(g, mode="grey")


def test_read_mask_is_boolean_nonzero(tmp_path):
    m = np.array([[0, 255], [1, 0]], dtype=np.uint8)
    path = tmp_path / "m.png"
    Image.fromarray(m).save(path)
    # exact: integer, boolean or string values
    np.testing.assert_array_equal(read_mask(path), m > 0)


# -- the bad-file corpus: each failure mode gives one clear error naming the file -------------


def _png_bytes(rng):
    buf = io.BytesIO()
    Image.fromarray(_gray8(rng, 64, 64)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def bad_files(tmp_path, rng):
    good = _png_bytes(rng)
    files = {
        "missing": (tmp_path / "missing.png", None, "no such file"),
        "empty": (tmp_path / "empty.png", b"", "empty"),
        "truncated": (tmp_path / "truncated.png", good[: len(good) // 2], "truncated or corrupt"),
        "text": (tmp_path / "notes.png", b"this is not an image\n" * 10, "not an image"),
        "bomb": (tmp_path / "bomb.pgm", b"P5\n12000 12000\n255\n", "decompression-bomb"),
        "directory": (tmp_path / "folder.png", "dir", "directory"),
    }
    for path, content, _ in files.values():
        if content == "dir":
            path.mkdir()
        elif content is not None:
            path.write_bytes(content)
    return files


@pytest.mark.parametrize("kind", ["missing", "empty", "truncated", "text", "bomb", "directory"])
def test_bad_file_gives_one_clear_error(bad_files, kind):
    path, _, reason = bad_files[kind]
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    message = str(info.value)
    assert str(path) in message and reason in message
    assert info.value.path == str(path)


def test_max_pixels_guard_is_configurable(tmp_path, rng):
    path = tmp_path / "ok.png"
    Image.fromarray(_gray8(rng, 30, 40)).save(path)
    with pytest.raises(ImageReadError, match="1200 pixels exceeds max_pixels=1000"):
        read_image(path, max_pixels=1000)
    assert read_image(path, max_pixels=None).shape == (30, 40)


def test_error_is_picklable_for_parallel_workers():
    import pickle

    err = pickle.loads(pickle.dumps(ImageReadError("a.png", "empty")))
    assert err.path == "a.png" and err.reason == "empty"


def test_to_float_image_dtypes_and_errors():
    # exact: one correctly rounded division per pixel, identical on every SIMD path
    np.testing.assert_array_equal(to_float_image(np.array([[0, 255]], np.uint8)), [[0.0, 1.0]])
    np.testing.assert_array_equal(to_float_image(np.array([[0, 65535]], np.uint16)), [[0.0, 1.0]])
    assert to_float_image(np.zeros((3, 4, 1), np.uint8)).shape == (3, 4)
    with pytest.raises(ValueError, match="zero area"):
        to_float_image(np.zeros((0, 4), np.uint8))
    with pytest.raises(ValueError, match="NaN"):
        to_float_image(np.array([[np.nan, 0.0]]))
    with pytest.raises(ValueError, match="unsupported dtype int64"):
        to_float_image(np.zeros((2, 2), np.int64))
    with pytest.raises(ValueError, match=r"shape \(2, 2, 5\)"):
        to_float_image(np.zeros((2, 2, 5), np.uint8))
