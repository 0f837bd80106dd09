"""Photo decoding: formats, alpha masks, EXIF focal length and orientation, HDR, damaged files."""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest
from PIL import Image

from dualpm_addon import image_io
from dualpm_addon.errors import DualPMError
from tests.server_fixtures import photo


def _pattern(h=48, w=64) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([xx * 255 // (w - 1), yy * 255 // (h - 1), (xx + yy) * 255 // (h + w - 2)], -1).astype(np.uint8)


@pytest.mark.parametrize("ext,lossless", [(".png", True), (".bmp", True), (".tga", True), (".tif", True),
                                          (".webp", False), (".jpg", False)])
def test_formats_decode_to_srgb_uint8(tmp_path, ext, lossless):
    rgb = _pattern()
    path = tmp_path / f"p{ext}"
    Image.fromarray(rgb).save(path, **({"quality": 95} if ext in (".jpg", ".webp") else {}))
    got = image_io.read_photo(path)
    assert got.rgb.shape == (48, 64, 3) and got.rgb.dtype == np.uint8 and got.mask is None
    assert got.size == (48, 64)
    if lossless:
        np.testing.assert_array_equal(got.rgb, rgb)
    else:
        assert np.abs(got.rgb.astype(int) - rgb).mean() < 4


def test_alpha_becomes_the_mask(tmp_path):
    rgba = np.dstack([_pattern(), np.zeros((48, 64), np.uint8)])
    rgba[10:30, 20:50, 3] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    got = image_io.read_photo(tmp_path / "a.png")
    assert got.mask.dtype == bool and got.mask.sum() == 20 * 30 and got.mask[10:30, 20:50].all()
    np.testing.assert_array_equal(got.rgb, rgba[..., :3])


def test_nearly_opaque_alpha_is_no_mask():
    # skimage's horse.png has an alpha channel that is opaque but for 12 anti-aliased pixels
    got = image_io.read_photo(photo("horse.png"))
    assert got.rgb.shape == (328, 400, 3) and got.mask is None


def test_grey_palette_and_16_bit(tmp_path):
    g = (np.arange(64 * 48) % 256).astype(np.uint8).reshape(48, 64)
    Image.fromarray(g, "L").save(tmp_path / "g.png")
    got = image_io.read_photo(tmp_path / "g.png").rgb
    assert got.shape == (48, 64, 3) and np.array_equal(got[..., 0], g) and np.array_equal(got[..., 2], g)
    Image.fromarray(_pattern()).convert("P", palette=Image.Palette.ADAPTIVE).save(tmp_path / "p.png")
    assert image_io.read_photo(tmp_path / "p.png").rgb.shape == (48, 64, 3)
    g16 = (np.arange(64 * 48, dtype=np.uint16) * 20).reshape(48, 64)
    Image.fromarray(g16).save(tmp_path / "g16.png")
    got16 = image_io.read_photo(tmp_path / "g16.png").rgb
    np.testing.assert_allclose(got16[..., 1].astype(float), g16 / 65535 * 255, atol=0.51)


def test_exif_orientation_is_applied(tmp_path):
    rgb = _pattern(40, 80)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.fromarray(rgb).save(tmp_path / "r.jpg", exif=exif, quality=95)
    got = image_io.read_photo(tmp_path / "r.jpg")
    assert got.rgb.shape == (80, 40, 3)
    assert np.abs(got.rgb.astype(int) - np.rot90(rgb, -1)).mean() < 4


def test_exif_focal_length(tmp_path):
    def save(name, tags, size=(60, 40)):
        exif = Image.Exif()
        ifd = exif.get_ifd(0x8769)
        ifd.update(tags)
        Image.new("RGB", size, (90, 90, 90)).save(tmp_path / name, exif=exif)
        return image_io.read_photo(tmp_path / name).focal_mm

    assert save("f35.jpg", {0xA405: 28}) == 28.0
    # 6 mm lens on a sensor 6 mm wide (60 px at 10 px/mm): 36 mm across -> 36 mm equivalent
    assert save("fp.jpg", {0x920A: 6.0, 0xA20E: 10.0, 0xA210: 4}) == pytest.approx(36.0)
    assert save("none.jpg", {}) is None
    assert image_io.read_photo(photo("quokka.jpg")).focal_mm is None


def test_real_photos():
    cat = image_io.read_photo(photo("chelsea.png"))  # has an ICC profile
    assert cat.rgb.shape == (300, 451, 3) and cat.mask is None
    q = image_io.read_photo(photo("quokka.jpg"))
    assert q.rgb.shape == (643, 960, 3) and 40 < q.rgb.mean() < 220


def test_damaged_and_missing_files(tmp_path):
    (tmp_path / "junk.jpg").write_bytes(os.urandom(2000))
    with pytest.raises(DualPMError, match=r"^junk\.jpg: not an image format"):
        image_io.read_photo(tmp_path / "junk.jpg")
    Image.fromarray(_pattern(200, 200)).save(tmp_path / "full.jpg")
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(DualPMError, match=r"^cut\.jpg: damaged or unreadable image \(.*truncated"):
        image_io.read_photo(tmp_path / "cut.jpg")
    with pytest.raises(DualPMError, match="no such file"):
        image_io.read_photo(tmp_path / "none.png")
    (tmp_path / "bad.hdr").write_bytes(b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 10 +X 10\n\x01\x02")
    with pytest.raises(DualPMError, match=r"^bad\.hdr: damaged or unreadable Radiance HDR"):
        image_io.read_photo(tmp_path / "bad.hdr")


def _rgbe(rgb: np.ndarray) -> np.ndarray:
    """Float RGB to RGBE bytes (the reference float2rgbe)."""
    m = rgb.max(axis=-1)
    mant, exp = np.frexp(m)
    scale = np.where(m > 1e-32, mant * 256.0 / np.where(m > 0, m, 1), 0)
    out = np.zeros(rgb.shape[:-1] + (4,), np.uint8)
    out[..., :3] = np.floor(rgb * scale[..., None]).clip(0, 255)
    out[..., 3] = np.where(m > 1e-32, exp + 128, 0)
    return out


def _rle_row(row: np.ndarray) -> bytes:
    out, i, n = bytearray(), 0, len(row)
    while i < n:
        j = i
        while j < n and j - i < 127 and row[j] == row[i]:
            j += 1
        if j - i >= 3:
            out += bytes([128 + j - i, row[i]])
            i = j
            continue
        j = i
        while j < n and j - i < 128 and not (j + 2 < n and row[j] == row[j + 1] == row[j + 2]):
            j += 1
        out += bytes([j - i]) + row[i:j].tobytes()
        i = j
    return bytes(out)


@pytest.mark.parametrize("rle", [False, True])
def test_radiance_hdr(tmp_path, rle):
    h, w = 12, 40
    lin = np.zeros((h, w, 3), np.float32)
    lin[:, :20] = [0.18, 0.18, 0.18]  # mid grey
    lin[:, 20:] = [0.5, 0.25, 0.05]
    lin[0, 0] = [0.0, 0.0, 0.0]
    px = _rgbe(lin)
    head = b"#?RADIANCE\n# made by a test\nFORMAT=32-bit_rle_rgbe\nEXPOSURE=1\n\n" + f"-Y {h} +X {w}\n".encode()
    if rle:
        body = b"".join(bytes([2, 2, w >> 8, w & 255]) + b"".join(_rle_row(px[y, :, c]) for c in range(4))
                        for y in range(h))
    else:
        body = px.tobytes()
    (tmp_path / "x.hdr").write_bytes(head + body)
    got = image_io.read_photo(tmp_path / "x.hdr")
    assert got.rgb.shape == (h, w, 3) and got.focal_mm is None
    np.testing.assert_allclose(image_io._decode_radiance(head + body), lin, rtol=0.02, atol=1e-3)
    assert abs(int(got.rgb[5, 5, 0]) - 118) <= 1  # 0.18 linear is sRGB 118
    assert tuple(got.rgb[0, 0]) == (0, 0, 0)


def test_linear_to_srgb8():
    v = image_io.linear_to_srgb8(np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.5, 0.5, 0.5]], np.float32))
    assert v.tolist() == [[0, 0, 0], [255, 255, 255], [188, 188, 188]]
    bright = image_io.linear_to_srgb8(np.full((10, 10, 3), 8.0, np.float32))  # exposure brings it to 1
    assert bright.min() == 255
    assert image_io.linear_to_srgb8(np.array([[np.nan, -1, np.inf]], np.float32)).tolist() == [[0, 0, 0]]


@pytest.mark.skipif(importlib.util.find_spec("OpenEXR") is not None, reason="OpenEXR is installed here")
def test_exr_without_openexr_says_what_to_do(tmp_path):
    (tmp_path / "render.exr").write_bytes(b"v/1\x01" + bytes(100))
    with pytest.raises(DualPMError, match=r"^render\.exr: reading EXR needs the OpenEXR package .* or Blender"):
        image_io.read_photo(tmp_path / "render.exr")


def test_exr_with_openexr(tmp_path):
    OpenEXR = pytest.importorskip("OpenEXR")
    if not hasattr(OpenEXR, "File"):
        pytest.skip("OpenEXR older than 3.3")
    rgb = np.full((20, 30, 3), 0.18, np.float32)
    a = np.ones((20, 30), np.float32)
    a[:, :10] = 0
    OpenEXR.File({"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage},
                 {"R": rgb[..., 0], "G": rgb[..., 1], "B": rgb[..., 2], "A": a}).write(str(tmp_path / "x.exr"))
    got = image_io.read_photo(tmp_path / "x.exr")
    assert got.rgb.shape == (20, 30, 3) and abs(int(got.rgb[0, 0, 0]) - 118) <= 1
    assert got.mask.sum() == 20 * 20


def test_read_mask(tmp_path):
    m = np.zeros((48, 64), np.uint8)
    m[5:20, 10:30] = 255
    Image.fromarray(m).save(tmp_path / "m.png")
    got = image_io.read_mask(tmp_path / "m.png", (48, 64))
    assert got.dtype == bool and got.sum() == 15 * 20
    with pytest.raises(DualPMError, match=r"mask m\.png is 64x48, the photo is 100x50"):
        image_io.read_mask(tmp_path / "m.png", (50, 100))
    Image.fromarray(np.zeros((48, 64), np.uint8)).save(tmp_path / "empty.png")
    with pytest.raises(DualPMError, match="mask empty.png is empty"):
        image_io.read_mask(tmp_path / "empty.png")


def test_a_large_jpeg_decodes_small_when_the_caller_shrinks_it_anyway(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    img = (rng.random((1200, 1800, 3)) * 255).astype(np.uint8)
    path = str(tmp_path / "big.jpg")
    exif = Image.Exif()
    exif[0x0112] = 8
    Image.fromarray(img).save(path, quality=90, exif=exif.tobytes())
    whole = image_io.read_photo(path)
    assert whole.full_size is None and whole.rgb.shape == (1800, 1200, 3)  # upright: turned
    small = image_io.read_photo(path, at_least=400)
    assert small.full_size == (1800, 1200)
    assert small.rgb.shape == (450, 300, 3) and min(small.rgb.shape[:2]) * 4 >= 1200  # scaled by 4, upright
    assert image_io.read_photo(path, at_least=1000).rgb.shape == whole.rgb.shape  # not more than 2x: whole
