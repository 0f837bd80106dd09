import numpy as np
import pytest

from dualpm_addon import template
from dualpm_addon.errors import DualPMError


def test_save_load_roundtrip(horse, tmp_path):
    path = str(tmp_path / "h.npz")
    horse.save(path)
    back = template.load(path)
    assert back.skeleton.joint_names == horse.skeleton.joint_names
    assert np.allclose(back.vertices, horse.vertices, atol=1e-6)
    assert back.clip_names == horse.clip_names
    c0, c1 = horse.clip("Walk"), back.clip("Walk")
    assert np.allclose(c0.rotations, c1.rotations) and np.allclose(c0.offsets, c1.offsets)


def test_clips_are_consistent(horse):
    assert len(horse.clip_names) == 13
    for clip in horse.clips:
        assert clip.rotations.shape == (clip.num_frames, horse.skeleton.num_joints, 4)
        assert np.allclose(np.linalg.norm(clip.rotations, axis=-1), 1, atol=1e-5)
    with pytest.raises(DualPMError, match="has no clip 'Moonwalk'"):
        horse.clip("Moonwalk")


def test_bad_files_are_one_line_errors(tmp_path):
    missing = tmp_path / "nope.npz"
    with pytest.raises(DualPMError, match="nope.npz: no such template file"):
        template.load(str(missing))
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(DualPMError, match="junk.npz: not a readable template"):
        template.load(str(junk))
    other = tmp_path / "other.npz"
    np.savez(other, format_version=np.array(1), x=np.zeros(3))
    with pytest.raises(DualPMError, match="other.npz: not a baked template"):
        template.load(str(other))


def test_object_arrays_are_never_unpickled(tmp_path):
    evil = tmp_path / "evil.npz"
    np.savez(evil, format_version=np.array(1), species=np.array([object()], dtype=object))
    with pytest.raises(DualPMError):
        template.load(str(evil))
