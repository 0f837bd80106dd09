"""dualpm_addon/intake.py: the photo upright by its EXIF orientation and shrunk to the working size."""

import numpy as np
import pytest
from PIL import Image, ImageOps

from dualpm_addon import camera, intake


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orient_turns_the_stored_pixels_as_pillow_does(tmp_path, orientation):
    rng = np.random.default_rng(orientation)
    stored = rng.integers(0, 255, (5, 7, 3), dtype=np.uint8)
    path = tmp_path / "p.png"
    exif = Image.Exif()
    exif[intake.ORIENTATION_TAG] = orientation
    Image.fromarray(stored).save(path, exif=exif.tobytes())
    assert intake.exif_orientation(str(path)) == orientation
    with Image.open(path) as im:
        expect = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    got = intake.orient(stored, orientation)
    assert got.shape == expect.shape and np.array_equal(got, expect)
    assert intake.upright_shape(stored.shape, orientation) == expect.shape[:2]
    mask = stored[..., 0] > 128  # a mask goes the same way as its photo
    assert np.array_equal(intake.orient(mask, orientation), expect[..., 0] > 128)


def test_no_orientation_tag_or_no_image_reads_as_upright(tmp_path):
    plain = tmp_path / "plain.png"
    Image.new("RGB", (4, 3)).save(plain)
    (tmp_path / "junk.jpg").write_bytes(b"not an image")
    assert intake.exif_orientation(str(plain)) == 1
    assert intake.exif_orientation(str(tmp_path / "junk.jpg")) == 1
    assert intake.exif_orientation(str(tmp_path / "missing.jpg")) == 1
    bad = tmp_path / "bad.png"
    exif = Image.Exif()
    exif[intake.ORIENTATION_TAG] = 9  # out of range: treated as upright
    Image.new("RGB", (4, 3)).save(bad, exif=exif.tobytes())
    assert intake.exif_orientation(str(bad)) == 1


def test_work_factor_keeps_every_side_within_the_limit():
    assert intake.work_factor(109, 166) == 1
    assert intake.work_factor(2048, 1000) == 1
    assert intake.work_factor(1000, 2049) == 2
    assert intake.work_factor(4018, 6000) == 3
    assert intake.work_factor(3, 30000) == 3 and intake.work_factor(1, 9000) == 1  # a side never vanishes
    for h, w in ((4018, 6000), (3024, 4032), (8000, 300), (2049, 2049)):
        f = intake.work_factor(h, w)
        assert max(h // f, w // f) <= intake.WORK_MAX_SIDE and (f == 1 or max(h, w) / (f - 1) > intake.WORK_MAX_SIDE)


def test_shrink_is_the_block_mean_and_keeps_the_camera_exact():
    rng = np.random.default_rng(0)
    big = rng.random((31, 47, 4)).astype(np.float32)
    small = intake.shrink(big[::-1], 3)  # Blender's pixels come as a flipped view
    assert small.shape == (10, 15, 4) and small.dtype == np.float32
    expect = big[::-1][:30, :45].reshape(10, 3, 15, 3, 4).mean(axis=(1, 3))
    assert np.allclose(small, expect, atol=1e-6)
    assert intake.shrink(big, 1) is big
    # A point seen at pixel x of the working photo is at f x in the original: the working camera
    # scaled by f projects as the original's.
    k_small = np.array([[40.0, 0, 7.3], [0, 40.0, 5.1], [0, 0, 1]])
    p = np.array([[0.1, -0.05, 2.0], [0.3, 0.2, 3.0]])
    assert np.allclose(camera.project(p, intake.scale_intrinsics(k_small, 3)), 3 * camera.project(p, k_small))
    with pytest.raises(ValueError, match="no 3x3 block"):
        intake.shrink(np.zeros((2, 9)), 3)


def test_shrink_mask_keeps_blocks_at_least_half_covered():
    mask = np.zeros((4, 6), bool)
    mask[0:2, 0:2] = True  # a whole block
    mask[2, 2] = mask[3, 3] = True  # half of one
    mask[0, 4] = True  # a quarter of one
    assert np.array_equal(intake.shrink_mask(mask, 2), [[True, False, False], [False, True, False]])
    assert intake.shrink_mask(mask, 1).dtype == bool


def test_describe_says_what_was_done_and_nothing_otherwise():
    assert intake.describe({}) == ""
    assert intake.describe({"exif_orientation": 1, "upright_size": [166, 109], "work_factor": 1}) == ""
    assert intake.describe({"exif_orientation": 6, "upright_size": [3024, 4032], "work_factor": 2}) == \
        "turned upright (EXIF orientation 6), worked on at 1/2 of its 3024x4032"


def test_shrunk_jpeg_is_the_block_mean_of_a_full_decode(tmp_path):
    rng = np.random.default_rng(1)
    smooth = np.kron(rng.integers(0, 255, (40, 60, 3)), np.ones((30, 30, 1))).astype(np.uint8)  # 1200 x 1800
    path = str(tmp_path / "big.jpg")
    Image.fromarray(smooth).save(path, quality=95)
    rgb, f = intake.shrunk_jpeg(path, 3)  # 3 is not a power of two: libjpeg scales by 4
    assert f == 4 and rgb.shape == (300, 450, 3) and rgb.dtype == np.uint8
    with Image.open(path) as im:
        full = np.asarray(im.convert("RGB"), np.float32)
    assert np.abs(rgb - intake.shrink(full, 4)).mean() < 2.0  # hard colour edges; a shift by a pixel: ~13
    Image.fromarray(smooth).save(tmp_path / "big.png")
    assert intake.shrunk_jpeg(str(tmp_path / "big.png"), 3) is None  # not a JPEG
    assert intake.shrunk_jpeg(path, 1) is None and intake.shrunk_jpeg(path, 9) is None
