"""dualpm_addon.video.decode on real video files written with PyAV (H.264, VP9, FFV1, MPEG-4,
MJPEG in mp4, mov, webm, mkv, avi) and real image sequences, and every kind of bad input."""

import os
import shutil

import numpy as np
import pytest

from dualpm_addon.errors import DualPMError
from dualpm_addon.video import decode

from . import video_fixtures as vf

pytest.importorskip("av")
pytestmark = pytest.mark.skipif(not os.path.isfile(vf.CAT), reason="run scripts/setup.sh (photos)")


@pytest.fixture(scope="module")
def cat_frames():
    return vf.pan_zoom(vf.read_rgb(vf.CAT), 12, (120, 180))


@pytest.fixture(scope="module")
def cat_mp4(tmp_path_factory, cat_frames):
    return vf.write_video(str(tmp_path_factory.mktemp("video") / "cat.mp4"), cat_frames, 12)


def _one_line(e) -> str:
    text = str(e.value)
    assert "\n" not in text and text
    return text


@pytest.mark.parametrize("ext,codec", [("mp4", "libx264"), ("mov", "libx264"), ("webm", "libvpx-vp9"),
                                       ("mkv", "ffv1"), ("avi", "mpeg4")])
def test_reads_the_formats_users_have(tmp_path, cat_frames, ext, codec):
    path = vf.write_video(str(tmp_path / f"cat.{ext}"), cat_frames, 12, codec)
    clip = decode.read(path)
    assert clip.kind == "video" and len(clip) == len(cat_frames)
    assert clip.frames.shape == cat_frames.shape and clip.frames.dtype == np.uint8
    assert clip.fps == pytest.approx(12.0) and clip.source_fps == pytest.approx(12.0)
    np.testing.assert_allclose(clip.times, np.arange(12) / 12.0, atol=2e-3)
    assert list(clip.numbers) == list(range(1, 13)) and clip.names[0] == "000001"
    # Lossy codecs: a few grey levels of error on average, never a different picture.
    assert np.abs(clip.frames.astype(int) - cat_frames.astype(int)).mean() < 6.0
    assert clip.scale == 1.0


def test_start_end_and_fps_resample_on_the_source_clock(cat_mp4):
    clip = decode.read(cat_mp4, start=0.25, end=0.75)
    np.testing.assert_allclose(clip.times, np.arange(3, 10) / 12.0, atol=2e-3)
    assert list(clip.numbers) == list(range(4, 11))
    half = decode.read(cat_mp4, fps=6)
    assert half.fps == 6.0 and len(half) == 6
    np.testing.assert_allclose(np.diff(half.times), 1 / 6.0, atol=2e-3)  # every other frame
    odd = decode.read(cat_mp4, fps=5)
    ticks = np.arange(len(odd)) / 5.0
    assert np.all(np.abs(odd.times - ticks) <= 0.5 / 12.0 + 1e-6)  # the frame nearest each tick


def test_a_4k_clip_is_decoded_small_not_refused(tmp_path):
    from PIL import Image

    big = np.asarray(Image.fromarray(vf.read_rgb(vf.CAT)).resize((3840, 2160), Image.Resampling.BILINEAR))
    frames = np.stack([big, np.roll(big, 16, axis=1)])
    path = vf.write_video(str(tmp_path / "cat4k.mp4"), frames, 24)
    clip = decode.read(path)
    assert clip.source_size == (2160, 3840) and clip.size == (360, 640) and len(clip) == 2
    assert clip.scale == pytest.approx(1 / 6)
    small = np.asarray(Image.fromarray(big).resize((640, 360), Image.Resampling.BOX)).astype(int)
    assert np.abs(clip.frames[0].astype(int) - small).mean() < 6.0


def test_one_frame_is_a_still(tmp_path, cat_frames):
    clip = decode.read(vf.write_video(str(tmp_path / "one.mp4"), cat_frames[:1], 12))
    assert len(clip) == 1 and clip.frames.shape == (1, 120, 180, 3)
    image = tmp_path / "still.png"
    from PIL import Image

    Image.fromarray(cat_frames[0]).save(image)
    still = decode.read(str(image))
    assert still.kind == "image" and len(still) == 1 and still.names == ["still"]


def test_image_folder_and_printf_pattern(tmp_path, cat_frames):
    from PIL import Image

    folder = tmp_path / "shots"
    folder.mkdir()
    for i, img in enumerate(cat_frames[:10]):
        Image.fromarray(img).save(folder / f"frame{i + 1}.png")  # frame10 after frame9 (natural order)
    Image.fromarray(np.zeros((120, 180), np.uint8)).save(folder / "frame1.mask.png")  # a mask, not a frame
    clip = decode.read(str(folder))
    assert clip.kind == "sequence" and len(clip) == 10 and clip.fps == decode.SEQUENCE_FPS
    assert clip.names == [f"frame{i}" for i in range(1, 11)]
    np.testing.assert_array_equal(clip.frames[9], cat_frames[9])
    pattern = decode.read(str(folder / "frame%d.png"), start=0.5, fps=10)
    assert pattern.fps == 10 and pattern.names == ["frame6", "frame7", "frame8", "frame9", "frame10"]
    padded = tmp_path / "padded"
    padded.mkdir()
    for i in range(3):
        Image.fromarray(cat_frames[i]).save(padded / f"cat_{i:04d}.jpg", quality=95)
    assert len(decode.read(str(padded / "cat_%04d.jpg"))) == 3


def test_masks_by_frame_name(tmp_path, cat_mp4):
    from PIL import Image

    clip = decode.read(cat_mp4, start=0.25, end=0.5, max_side=90)  # source frames 4..7, decoded 90x60
    assert clip.size == (60, 90)
    masks_dir = tmp_path / "masks"
    masks_dir.mkdir()
    m = np.zeros((120, 180), np.uint8)
    m[30:90, 40:150] = 255
    Image.fromarray(m).save(masks_dir / "000005.mask.png")  # the source's size
    Image.fromarray(np.asarray(Image.fromarray(m).resize((90, 60)))).save(masks_dir / "000006.mask.png")  # decoded
    masks, paths = decode.frame_masks(clip, str(masks_dir))
    assert [p is not None for p in paths] == [False, True, True, False]
    for k in (1, 2):
        assert masks[k].shape == (60, 90) and masks[k].dtype == bool and masks[k][30, 50] and not masks[k][2, 2]
        assert abs(int(masks[k].sum()) - 30 * 55) <= 60
    with pytest.raises(DualPMError) as e:
        decode.frame_masks(clip, str(tmp_path / "nowhere"))
    assert "no such folder" in _one_line(e)
    Image.fromarray(np.full((50, 50), 255, np.uint8)).save(masks_dir / "000004.mask.png")
    with pytest.raises(DualPMError) as e:
        decode.frame_masks(clip, str(masks_dir))
    assert "000004.mask.png is 50x50" in _one_line(e)


# -- bad input: one line each --------------------------------------------------------------------


def test_corrupt_and_truncated_videos(tmp_path, cat_frames, cat_mp4):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    with pytest.raises(DualPMError) as e:
        decode.read(str(garbage))
    assert "garbage.mp4" in _one_line(e) and "corrupt" in str(e.value)
    cut_mp4 = tmp_path / "cut.mp4"  # the index (moov) is at the end: the cut file cannot be opened
    shutil.copy(cat_mp4, cut_mp4)
    vf.truncate(str(cut_mp4), 0.5)
    with pytest.raises(DualPMError) as e:
        decode.read(str(cut_mp4))
    assert "truncated" in _one_line(e)
    cut_mkv = vf.truncate(vf.write_video(str(tmp_path / "cut.mkv"), cat_frames, 12, "ffv1"), 0.5)
    with pytest.raises(DualPMError) as e:  # opens, and its frames stop half-way
        decode.read(cut_mkv)
    assert "truncated video: frames stop at" in _one_line(e)


def test_no_video_stream(tmp_path):
    path = vf.write_audio_only(str(tmp_path / "song.m4a"))
    with pytest.raises(DualPMError) as e:
        decode.read(path)
    assert "has no video stream (streams: audio)" in _one_line(e)


def test_zero_frames(tmp_path, cat_mp4):
    with pytest.raises(DualPMError) as e:
        decode.read(vf.write_empty_video(str(tmp_path / "empty.mp4")))
    assert "no frames" in _one_line(e)
    with pytest.raises(DualPMError) as e:
        decode.read(cat_mp4, start=5.0)
    assert "no frames between 5 s and the end (the video is 1.000 s long)" in _one_line(e)
    (tmp_path / "nothing").mkdir()
    with pytest.raises(DualPMError) as e:
        decode.read(str(tmp_path / "nothing"))
    assert "no images" in _one_line(e)
    with pytest.raises(DualPMError) as e:
        decode.read(str(tmp_path / "nothing" / "f_%04d.png"))
    assert "no files match" in _one_line(e)


@pytest.mark.parametrize("rate,shown", [(100000, "100000 fps"), (0.001, "0.001 fps")])
def test_absurd_frame_rates(tmp_path, cat_frames, rate, shown):
    path = vf.write_video(str(tmp_path / "rate.mp4"), cat_frames[:3], rate)
    with pytest.raises(DualPMError) as e:
        decode.read(path)
    assert f"frame rate {shown} is absurd" in _one_line(e)


def test_frames_of_changing_size(tmp_path, cat_frames):
    with pytest.raises(DualPMError) as e:
        decode.read(vf.write_changing_size(str(tmp_path / "spliced.mkv")))
    assert "frames change size at 0.250 s (120x80 to 144x96)" in _one_line(e)
    from PIL import Image

    folder = tmp_path / "mixed"
    folder.mkdir()
    Image.fromarray(cat_frames[0]).save(folder / "a1.png")
    Image.fromarray(cat_frames[1][:100]).save(folder / "a2.png")
    with pytest.raises(DualPMError) as e:
        decode.read(str(folder))
    assert "frames change size at a2.png (180x120 to 180x100)" in _one_line(e)


def test_bad_arguments(cat_mp4, tmp_path):
    for kwargs, text in (({"start": -1}, "--start -1"), ({"start": 2, "end": 1}, "--end 1 is not after"),
                         ({"fps": 0}, "--fps 0"), ({"fps": 1e6}, "--fps 1000000.0"),
                         ({"fps": 30}, "--fps 30 is above the video's 12 fps")):
        with pytest.raises(DualPMError) as e:
            decode.read(cat_mp4, **kwargs)
        assert text in _one_line(e)
    with pytest.raises(DualPMError) as e:
        decode.read(str(tmp_path / "missing.mp4"))
    assert "no such file" in _one_line(e)
    with pytest.raises(DualPMError) as e:
        decode.read(cat_mp4, max_frames=5)
    assert "more than 5 frames" in _one_line(e)


def test_reduced_size_keeps_aspect_and_even_sizes():
    assert decode.reduced_size(2160, 3840) == (360, 640)
    assert decode.reduced_size(1080, 1920, 640) == (360, 640)
    assert decode.reduced_size(1001, 3001) == (214, 640)
    assert decode.reduced_size(120, 181) == (120, 181)  # small enough: untouched


@pytest.mark.parametrize("display_deg,turns", [(-90, 3), (90, 1), (180, 2)])
def test_a_phone_video_is_read_upright_by_its_display_matrix(tmp_path, cat_frames, display_deg, turns):
    """A phone stores a portrait clip landscape with a display matrix that players turn it by
    (-90: a quarter turn clockwise); the clip is the frames as a player shows them."""
    import av

    upright = cat_frames[:4]
    stored = np.stack([np.ascontiguousarray(np.rot90(f, -turns)) for f in upright])  # as the phone wrote it
    path = str(tmp_path / "phone.mp4")
    with av.open(path, mode="w") as out:
        stream = out.add_stream("libx264", rate=12)
        stream.width, stream.height = stored.shape[2], stored.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.set_display_rotation(display_deg)
        for f in stored:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    clip = decode.read(path)
    assert clip.rotation == 90 * turns and clip.summary()["rotation_deg"] == 90 * turns
    assert clip.frames.shape == upright.shape and clip.size == upright.shape[1:3] == clip.source_size
    assert np.abs(clip.frames.astype(int) - upright.astype(int)).mean() < 6.0


def test_quarter_turns_from_a_display_rotation():
    assert [decode.quarter_turns(r) for r in (0, -90, 90, 180, -180, 89.6, -271, None, float("nan"))] == \
        [0, 3, 1, 2, 2, 1, 1, 0, 0]


def test_a_sequence_of_large_jpegs_decodes_small_as_a_full_decode_would(tmp_path):
    """Phone photos as frames: libjpeg decodes them at a power-of-two fraction (never below the
    640-pixel frame), and the frames are what a full decode shrunk gives, within a grey level."""
    from PIL import Image

    big = np.asarray(Image.fromarray(vf.read_rgb(vf.CAT)).resize((2000, 1400), Image.Resampling.BILINEAR))
    folder = tmp_path / "burst"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.roll(big, 40 * i, axis=1)).save(folder / f"IMG_{i:04d}.jpg", quality=95)
    exif = Image.Exif()
    exif[0x0112] = 6  # the last one stored turned, as a phone stores a portrait photo
    Image.fromarray(np.rot90(np.roll(big, 120, axis=1), 1)).save(folder / "IMG_0003.jpg", quality=95,
                                                                 exif=exif.tobytes())
    clip = decode.read(str(folder))
    assert clip.source_size == (1400, 2000) and clip.size == (448, 640) and len(clip) == 4
    full = [np.asarray(Image.open(folder / f"IMG_{i:04d}.jpg").convert("RGB")) for i in range(3)]
    for got, f in zip(clip.frames, full):
        small = np.asarray(Image.fromarray(f).resize((640, 448), Image.Resampling.BOX)).astype(int)
        assert np.abs(got.astype(int) - small).mean() < 1.5
    upright = np.asarray(Image.fromarray(np.roll(big, 120, axis=1)).resize((640, 448), Image.Resampling.BOX))
    assert np.abs(clip.frames[3].astype(int) - upright.astype(int)).mean() < 3  # turned upright, then shrunk
