"""Synthetic samples end to end (training/synthesize.py) and the `dualpm synth` command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from dualpm_addon import camera, cli, pointmap
from dualpm_addon.errors import DualPMError
from training import raycast
from training.synthesize import Synthesizer, SynthConfig, sample_camera, sample_name, sample_seed, save_sample

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 64


@pytest.fixture(scope="module")
def synth(templates_dir):
    return Synthesizer(templates_dir, size=SIZE, layers=4)


@pytest.fixture(scope="module")
def samples(synth):
    return [synth.sample(sample_seed(42, i)) for i in range(6)]


def test_sample_holds_the_design_arrays(samples):
    s = samples[0]
    k = 4
    assert s["P"].shape == s["Q"].shape == (k, SIZE, SIZE, 3) and s["P"].dtype == np.float32
    assert s["occupancy"].shape == s["confidence"].shape == (k, SIZE, SIZE)
    assert set(np.unique(s["occupancy"])) <= {0.0, 1.0} and np.all(s["confidence"] == 1)
    assert s["rgb"].shape == (SIZE, SIZE, 3) and s["rgb"].dtype == np.uint8
    assert s["mask"].dtype == bool and np.array_equal(s["mask"], s["occupancy"][0] > 0)
    j = len(s["joint_names"])
    assert s["joints"].shape == (j, 3) and s["rotations"].shape == (j, 4) and s["offsets"].shape == (j, 3)
    np.testing.assert_allclose(np.linalg.norm(s["rotations"], axis=1), 1, atol=1e-5)
    for m in (s["extrinsics"], s["model_to_world"]):
        np.testing.assert_allclose(m[:3, :3] @ m[:3, :3].T, np.eye(3), atol=1e-5)
    assert str(s["species"]) and str(s["clip"]) and str(s["pose"]) and int(s["seed"]) == sample_seed(42, 0)
    pointmap.validate(s)
    assert 24 <= float(s["focal_mm"]) <= 85


def test_every_p_reprojects_and_layers_are_ordered_and_alternate(samples):
    for s in samples:
        occ = s["occupancy"] > 0
        uv = camera.project(s["P"][occ].astype(np.float64), s["intrinsics"].astype(np.float64))
        centres = camera.pixel_centers(SIZE, SIZE)[np.nonzero(occ)[1:]]
        assert np.abs(uv - centres).max() <= 1e-3
        z = np.where(occ, s["P"][..., 2], 1e30)
        assert np.all((np.diff(z, axis=0) > 0) | ~occ[1:])  # strictly near to far
        assert np.all(occ[:-1] | ~occ[1:])  # no empty layer before a full one
        # Entries and exits alternate, so a ray with fewer than K layers has an even number.
        n = occ.sum(axis=0)
        assert np.all(n[n < 4] % 2 == 0)
        assert np.all(s["P"][~occ] == 0) and np.all(s["Q"][~occ] == 0)


def test_stored_pose_and_camera_reproduce_the_maps(synth, samples):
    """The pose and camera in a sample are complete: re-posing the template gives the same P, Q."""
    for s in samples[:3]:
        sp = synth._species(str(s["species"]))
        t, topo = sp.template, sp.topo
        v = t.pose_vertices(s["rotations"].astype(np.float64), s["root_translation"].astype(np.float64),
                            s["offsets"].astype(np.float64))
        m = s["extrinsics"].astype(np.float64) @ s["model_to_world"].astype(np.float64)
        vc = v @ m[:3, :3].T + m[:3, 3]
        again = raycast.point_maps(vc, sp.q_ext, topo, s["intrinsics"], SIZE, SIZE, 4)
        same = (again["occupancy"] == s["occupancy"]).mean()
        assert same > 0.999  # float32 storage of the pose may flip a grazing pixel
        both = (again["occupancy"] > 0) & (s["occupancy"] > 0)
        np.testing.assert_allclose(again["Q"][both], s["Q"][both], atol=2e-3)
        np.testing.assert_allclose(again["P"][both], s["P"][both], atol=2e-3)
        g = t.skeleton.forward_kinematics(s["rotations"].astype(np.float64), s["root_translation"],
                                          offsets=s["offsets"])
        joints = t.skeleton.joint_positions(g) @ m[:3, :3].T + m[:3, 3]
        np.testing.assert_allclose(joints, s["joints"], atol=1e-4)


def test_q_stays_on_the_canonical_body(synth, samples):
    # (Q invariance under pose and camera for one surface point: tests/test_raycast.py.)
    for s in samples:
        sp = synth._species(str(s["species"]))
        lo, hi = sp.q_ext.min(axis=0) - 1e-5, sp.q_ext.max(axis=0) + 1e-5
        q = s["Q"][s["occupancy"] > 0]
        assert np.all((q >= lo) & (q <= hi))


def test_camera_framing_fills_the_frame_and_cuts_only_when_asked(horse):
    pts = horse.vertices
    cfg = SynthConfig(cut_probability=0.0, closeup_probability=0.0)
    for seed in range(20):
        rng = np.random.default_rng(seed)
        w2c, k, info = sample_camera(rng, pts, 160, cfg)
        uv = camera.project(pts @ w2c[:3, :3].T + w2c[:3, 3], k)
        side = max(np.ptp(uv[:, 0]), np.ptp(uv[:, 1]))
        assert 0.38 * 160 <= side <= 0.93 * 160, (seed, side)
        assert uv.min() >= -1 and uv.max() <= 161, seed
        el = np.degrees(info["elevation"])
        assert -10 <= el <= 50 and 24 <= info["focal_mm"] <= 85
        assert (-w2c[:3, :3].T @ w2c[:3, 3])[2] >= cfg.min_camera_height - 1e-9
    cut = [sample_camera(np.random.default_rng(s), pts, 160, SynthConfig(cut_probability=1.0)) for s in range(10)]
    outside = [np.any((camera.project(pts @ w[:3, :3].T + w[:3, 3], k) < 0) |
                      (camera.project(pts @ w[:3, :3].T + w[:3, 3], k) > 160)) for w, k, _ in cut]
    assert np.mean(outside) >= 0.5


def test_portraits_frame_the_head_from_the_front(horse):
    from training.synthesize import _head_vertices

    pts = horse.vertices
    head = pts[_head_vertices(horse)]
    cfg = SynthConfig(closeup_probability=1.0)
    body_out = 0
    for seed in range(12):
        w2c, k, info = sample_camera(np.random.default_rng(seed), pts, 160, cfg, head_points=head)
        assert info["closeup"] and not info["cut"]
        uv = camera.project(head @ w2c[:3, :3].T + w2c[:3, 3], k)
        side = max(np.ptp(uv[:, 0]), np.ptp(uv[:, 1]))
        assert 0.53 * 160 <= side <= 1.03 * 160, (seed, side)
        # the camera is on the animal's front half: the horse faces -Y
        eye = -w2c[:3, :3].T @ w2c[:3, 3]
        assert eye[1] - head[:, 1].mean() < 0.2 * np.linalg.norm(eye - head.mean(axis=0)), seed
        whole = camera.project(pts @ w2c[:3, :3].T + w2c[:3, 3], k)
        body_out += bool(np.any((whole < 0) | (whole > 160)))
    assert body_out >= 6  # most portraits cut the body
    # Without head points, or at probability 0, the draws of whole-body framing are unchanged.
    a = sample_camera(np.random.default_rng(5), pts, 160, SynthConfig(closeup_probability=0.0), head_points=head)
    b = sample_camera(np.random.default_rng(5), pts, 160, SynthConfig())
    assert np.array_equal(a[0], b[0])


def test_same_seed_same_bytes(tmp_path, templates_dir):
    a = Synthesizer(templates_dir, size=32, layers=2).sample(1234)
    b = Synthesizer(templates_dir, size=32, layers=2).sample(1234)
    c = Synthesizer(templates_dir, size=32, layers=2).sample(1235)
    save_sample(str(tmp_path / "a.npz"), a)
    time.sleep(1.1)  # zip entries carry a time: a later write must still give the same bytes
    save_sample(str(tmp_path / "b.npz"), b)
    save_sample(str(tmp_path / "c.npz"), c)
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    assert (tmp_path / "a.npz").read_bytes() != (tmp_path / "c.npz").read_bytes()
    back = pointmap.load(str(tmp_path / "a.npz"))
    np.testing.assert_array_equal(back["P"], a["P"])
    assert str(back["species"]) == str(a["species"])
    assert not list(tmp_path.glob("*.partial"))


def test_species_and_clip_hold_out(templates_dir):
    s = Synthesizer(templates_dir, size=24, layers=1, species=["fox", "wolf"], exclude_clips=["Gallop", "fox:Walk"])
    seen = [s.sample(sample_seed(5, i)) for i in range(12)]
    assert {str(x["species"]) for x in seen} <= {"fox", "wolf"}
    for x in seen:
        assert str(x["clip"]) != "Gallop" and str(x["clip_b"]) != "Gallop"
        if str(x["species"]) == "fox":
            assert "Walk" not in (str(x["clip"]), str(x["clip_b"]))
    with pytest.raises(DualPMError, match="unknown clip"):
        Synthesizer(templates_dir, species=["fox"], exclude_clips=["Gallopp"])
    with pytest.raises(DualPMError, match="unknown species 'unicorn'"):
        Synthesizer(templates_dir, species=["unicorn"])


def test_stream_is_the_cli_sequence(templates_dir):
    s = Synthesizer(templates_dir, size=16, layers=1, backgrounds_dir=None)
    streamed = list(s.stream(9, start=2, stop=4))
    assert [int(x["seed"]) for x in streamed] == [sample_seed(9, 2), sample_seed(9, 3)]
    assert len({sample_seed(9, i) for i in range(1000)}) == 1000


@pytest.mark.parametrize("args, message", [
    (["--size", "0"], "--size"),
    (["--layers", "0"], "--layers"),
    (["--count", "0"], "--count"),
    (["--species", "unicorn"], "unknown species 'unicorn'"),
    (["--exclude-clips", "Gallopp"], "unknown clip"),
    (["--templates", "/nonexistent/templates"], "no templates folder"),
    (["--closeup-probability", "1.5"], "--closeup-probability must be between 0 and 1"),
])
def test_bad_parameters_are_one_line_errors(tmp_path, capsys, args, message):
    base = {"--out": str(tmp_path / "out"), "--count": "2", "--seed": "0"}
    for i in range(0, len(args), 2):
        base[args[i]] = args[i + 1]
    argv = ["synth"] + [x for kv in base.items() for x in kv]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and err.startswith("dualpm synth: error:")
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_unwritable_output_is_a_one_line_error(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    assert cli.main(["synth", "--out", str(blocker / "sub"), "--count", "1", "--seed", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert "not writable" in err and "\n" not in err


def _run(out, *extra, count=3, size=24):
    return cli.main(["synth", "--out", str(out), "--count", str(count), "--seed", "7", "--size", str(size),
                     "--layers", "2", "--backgrounds", "", *extra])


def test_cli_output_is_independent_of_workers_and_resumable(tmp_path, capsys):
    assert _run(tmp_path / "a", "--workers", "1") == 0
    assert _run(tmp_path / "b", "--workers", "2", "--contact-sheet") == 0
    names = [sample_name(i) for i in range(3)]
    for n in names + ["manifest.json"]:
        assert (tmp_path / "a" / n).read_bytes() == (tmp_path / "b" / n).read_bytes(), n
    assert (tmp_path / "b" / "contact_sheet.png").stat().st_size > 0
    m = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert m["seed"] == 7 and m["count"] == 3 and m["files"] == names and m["parameters"]["layers"] == 2
    # A run that was interrupted: a half-written sample and an unfinished manifest.
    (tmp_path / "a" / names[2]).unlink()
    (tmp_path / "a" / (names[2] + ".partial")).write_bytes(b"half")
    os.replace(tmp_path / "a" / "manifest.json", tmp_path / "a" / "manifest.json.partial")
    assert _run(tmp_path / "a", "--workers", "1") == 0
    assert (tmp_path / "a" / names[2]).read_bytes() == (tmp_path / "b" / names[2]).read_bytes()
    assert not list((tmp_path / "a").glob("*.partial"))
    assert (tmp_path / "a" / "manifest.json").exists()
    # Other settings in the same folder are refused.
    capsys.readouterr()
    assert cli.main(["synth", "--out", str(tmp_path / "a"), "--count", "3", "--seed", "8", "--size", "24",
                     "--layers", "2", "--backgrounds", ""]) == 2
    assert "other settings" in capsys.readouterr().err


def test_killed_run_leaves_nothing_that_looks_complete(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "dualpm_addon.cli", "synth", "--out", str(out), "--count", "400", "--seed", "3",
           "--size", "32", "--layers", "2", "--workers", "1", "--backgrounds", ""]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list(out.glob("sample_*.npz"))) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "manifest.json").exists()  # the run is not marked complete
    finished = sorted(out.glob("sample_*.npz"))
    assert 3 <= len(finished) < 400
    for f in finished:  # whatever carries a final name is a whole sample
        pointmap.load(str(f))
    assert all(p.name.endswith(".partial") for p in out.iterdir()
               if not (p.name.startswith("sample_") and p.name.endswith(".npz")))
