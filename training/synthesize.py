"""Synthetic training samples: exact amodal dual point maps with photo-like images.

Library (what the training DataLoader calls; no torch here):

    synth = Synthesizer(".cache/templates", size=160, layers=4, species=None,
                        exclude_clips=(), backgrounds_dir="auto")  # None: procedural only
    sample = synth.sample(seed)          # dict of numpy arrays, a pure function of (settings, seed)
    for sample in synth.stream(run_seed, start=0, stop=None): ...
    synth.sample(sample_seed(run_seed, i))   # sample i of run `run_seed`, as `dualpm synth` writes it

Construction only lists files; templates load on first use (per process), so a DataLoader worker
can build its own. Samples hold the arrays of pointmap.py (P, Q, occupancy, confidence,
intrinsics) plus rgb, mask, occluder, joints, joint_names, species, the pose (clip, frame, blend,
perturbation, yaw, rotations, root_translation, offsets), model_to_world, extrinsics
(world -> camera, OpenCV axes), focal_mm, background and seed. See docs/synthesis.md.

Command line:

    dualpm synth --out DIR --count N --seed S [--size 160] [--layers 4] [--species NAME...]
                 [--exclude-clips CLIP...] [--workers N] [--contact-sheet] [--templates DIR]
                 [--backgrounds DIR] [--no-compress]

writes DIR/sample_000000.npz ... and DIR/manifest.json. Sample i uses seed
`sample_seed(S, i)`, so the output does not depend on the number of workers, and the same
command gives the same bytes. Every file is written as NAME.partial and renamed when complete;
the manifest is `manifest.json.partial` until the last sample is written, so an interrupted run
never leaves anything that looks complete, and running the same command again finishes it.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, replace

import numpy as np

from dualpm_addon.npz import write_npz
from dualpm_addon.pipeline import sha256_file  # noqa: F401 - re-exported for callers
from dualpm_addon import camera as cam
from dualpm_addon import pointmap
from dualpm_addon import template as template_io
from dualpm_addon.errors import DualPMError
from dualpm_addon.rotations import quat_to_matrix, rotation_between
from dualpm_addon.skinning import dominant_joints, linear_blend_skinning

from . import poses, raycast, render

FORMAT = "dualpm-synth"
FORMAT_VERSION = 1
AUTO = "auto"  # backgrounds: .cache/backgrounds when it exists (scripts/data/backgrounds.sh), else none


@dataclass(frozen=True)
class SynthConfig:
    """Sampling ranges; every field is recorded in the manifest."""

    focal_mm: tuple[float, float] = (24.0, 85.0)
    elevation_deg: tuple[float, float] = (-10.0, 50.0)
    fill: tuple[float, float] = (0.4, 0.9)  # larger side of the animal's box / image side
    cut_probability: float = 0.15  # the animal's box crosses the frame border
    roll_deg: float = 3.0  # standard deviation
    min_camera_height: float = 0.1  # metres above the ground
    blend_probability: float = 0.3
    perturb_probability: float = 0.8
    perturb_max_scale: float = 1.0
    photo_probability: float = 0.6  # when photos are available, else procedural
    shadow_strength: tuple[float, float] = (0.25, 0.7)
    occluder_probability: float = 0.25
    effects_probability: float = 0.9
    # Portraits: the camera frames the head (from the front half), the body runs out of the frame.
    # Pet photos are often like this, and a network that has only seen whole animals maps a face
    # filling the frame onto a whole body.
    closeup_probability: float = 0.12
    closeup_fill: tuple[float, float] = (0.55, 1.0)  # larger side of the head's box / image side
    authored_probability: float = 0.0  # share of lying/sitting poses authored on the rig (poses.authored_pose)
    frame_range: tuple[float, float] = (0.0, 1.0)  # where in each clip frames are drawn, fractions of its length


def sample_seed(run_seed: int, index: int) -> int:
    """Seed of sample `index` of run `run_seed`: independent streams, 63 bits."""
    ss = np.random.SeedSequence(entropy=int(run_seed), spawn_key=(int(index),))
    return int(ss.generate_state(1, np.uint64)[0] >> np.uint64(1))


def default_templates_dir() -> str:
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".cache", "templates")


def default_backgrounds_dir() -> str:
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".cache", "backgrounds")


@dataclass
class _Species:
    template: object
    topo: raycast.Topology
    space: poses.PoseSpace
    coat: np.ndarray
    q_ext: np.ndarray  # canonical points on the extended table
    material: np.ndarray  # (F',) material of each casting triangle
    rest: np.ndarray  # (U, 3) welded rest vertices and their skin weights, for skinning
    skin_joints: np.ndarray
    skin_weights: np.ndarray
    head: np.ndarray  # (U,) bool: welded vertices the head (and the bones below it) dominate


def _head_vertices(t) -> np.ndarray:
    """(V,) bool: vertices whose strongest bone is the head or one below it (ears, jaw)."""
    sk = t.skeleton
    if "Head" not in sk.joint_names:
        return np.zeros(len(t.vertices), bool)
    head = sk.index("Head")
    return np.isin(dominant_joints(t.skin_joints, t.skin_weights), [head] + sk.descendants(head))


# ------------------------------------------------------------------------------------------------
# Camera

def sample_camera(rng: np.random.Generator, points_world: np.ndarray, size: int, config: SynthConfig,
                  head_points: np.ndarray | None = None):
    """World -> camera 4x4, intrinsics and a description, framing `points_world`.

    Azimuth all round, elevation in the configured range, a focal length, then the distance at
    which the animal's box fills the drawn fraction of the frame; then a shift (a small camera
    rotation) moves it off centre, sometimes across the border. With `head_points` given, a
    `closeup_probability` share are portraits: the head's box fills `closeup_fill` of the frame,
    seen from within 100 degrees of straight ahead."""
    focal = rng.uniform(*config.focal_mm)
    k = cam.intrinsics_from_focal_mm(focal, size, size)
    f = k[0, 0]
    az = rng.uniform(0, 2 * np.pi)
    el = np.radians(rng.uniform(*config.elevation_deg))
    fill = rng.uniform(*config.fill)
    roll = np.radians(rng.normal(0, config.roll_deg))
    cut = rng.uniform() < config.cut_probability
    shift = rng.uniform(-1, 1, 2)
    over = rng.uniform(0.05, 0.35) * np.sign(rng.normal(size=2)) * (rng.uniform(size=2) < 0.7)

    pts = np.asarray(points_world, dtype=np.float64)
    closeup = False
    if head_points is not None and len(head_points) and config.closeup_probability > 0:
        # drawn after the others, so samples that are not portraits stay as they were
        closeup = rng.uniform() < config.closeup_probability
        if closeup:
            head = np.asarray(head_points, dtype=np.float64)
            ahead = head.mean(axis=0) - pts.mean(axis=0)
            az = np.arctan2(ahead[1], ahead[0]) + np.radians(rng.uniform(-100, 100))
            fill = rng.uniform(*config.closeup_fill)
            cut = False
            pts = head
    centre = 0.5 * (pts.min(axis=0) + pts.max(axis=0))
    direction = np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
    rot = cam.look_at(centre + direction, centre)[:3, :3]
    rel = (pts - centre) @ rot.T
    radius = float(np.max(np.linalg.norm(rel, axis=1)))

    hull = rel[::max(1, len(rel) // 512)]  # a subset is plenty for the box size

    def extent(dist):
        z = hull[:, 2] + dist
        return f * max(np.ptp(hull[:, 0] / z), np.ptp(hull[:, 1] / z))

    lo, hi = radius * 1.05 + 0.05, radius * 1.05 + 0.05 + 1e4 * max(radius, 0.1)
    want = fill * size
    if extent(lo) <= want:
        dist = lo
    else:
        for _ in range(40):  # bisection in log distance: the extent falls as the camera backs off
            mid = np.sqrt(lo * hi)
            lo, hi = (mid, hi) if extent(mid) > want else (lo, mid)
        dist = hi
    eye = centre + dist * direction
    if eye[2] < config.min_camera_height:
        eye[2] = config.min_camera_height
    w2c = cam.look_at(eye, centre)
    # Roll about the optical axis, then turn the camera so the animal sits off centre.
    c, s = np.cos(roll), np.sin(roll)
    r = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]]) @ w2c[:3, :3]
    # Where the animal's box lies now, and how far it may move and stay inside the frame.
    cam_pts = (pts - eye) @ r.T
    uv = cam_pts[:, :2] / cam_pts[:, 2:3] * f + size / 2
    lo_uv, hi_uv = uv.min(axis=0), uv.max(axis=0)
    box = hi_uv - lo_uv
    margin = 0.02 * size
    low, high = -lo_uv + margin, size - hi_uv - margin  # allowed content shift per axis
    offset = np.where(low <= high, low + (high - low) * (0.5 + 0.45 * shift), 0.5 * (low + high))
    if cut:
        # Push across one or both borders by 5-35 % of the box.
        beyond = np.where(over > 0, high + over * box, low + over * box)
        offset = np.where(over != 0, beyond, offset)
    # Turning the camera towards the ray now at (centre - offset) moves the content by +offset.
    turn = quat_to_matrix(rotation_between(np.array([-offset[0] / f, -offset[1] / f, 1.0]), np.array([0, 0, 1.0])))
    r = turn @ r
    w2c = np.eye(4)
    w2c[:3, :3] = r
    w2c[:3, 3] = -r @ eye
    info = dict(focal_mm=focal, azimuth=az, elevation=el, fill=fill, distance=dist, cut=bool(cut),
                closeup=bool(closeup))
    return w2c, k, info


# ------------------------------------------------------------------------------------------------
# The synthesizer

class Synthesizer:
    """Deterministic sample generator over a folder of baked templates (module docstring)."""

    def __init__(self, templates_dir: str | None = None, size: int = 160, layers: int = 4,
                 species=None, exclude_clips=(), backgrounds_dir: str | None = AUTO,
                 config: SynthConfig | None = None):
        if not isinstance(size, (int, np.integer)) or size < 8:
            raise DualPMError(f"size must be an integer of at least 8 pixels, got {size}")
        if not isinstance(layers, (int, np.integer)) or layers < 1:
            raise DualPMError(f"layers must be at least 1, got {layers}")
        self.templates_dir = templates_dir or default_templates_dir()
        if not os.path.isdir(self.templates_dir):
            raise DualPMError(f"{self.templates_dir}: no templates folder (run scripts/setup.sh)")
        found = sorted(n[:-4] for n in os.listdir(self.templates_dir) if n.endswith(".npz"))
        if not found:
            raise DualPMError(f"{self.templates_dir}: holds no baked templates (*.npz)")
        species = list(species) if species else found
        unknown = [s for s in species if s not in found]
        if unknown:
            raise DualPMError(f"unknown species {unknown[0]!r}; {self.templates_dir} has {', '.join(found)}")
        if len(set(species)) != len(species):
            raise DualPMError("a species is listed twice")
        self.species = species
        self.size, self.layers = int(size), int(layers)
        self.exclude_clips = tuple(exclude_clips)
        self.config = config or SynthConfig()
        if self.exclude_clips:
            self._check_exclusions()
        if backgrounds_dir == AUTO:
            backgrounds_dir = default_backgrounds_dir() if os.path.isdir(default_backgrounds_dir()) else None
        self.backgrounds = render.Backgrounds(backgrounds_dir or None)
        self._data: dict[str, _Species] = {}
        # Seconds spent per stage since construction (benchmarks/bench_synth.py reads them).
        self.timings = {"pose": 0.0, "camera": 0.0, "targets": 0.0, "image": 0.0, "samples": 0}

    def _check_exclusions(self) -> None:
        # Only the clip names are read (np.load is lazy per array), so construction stays cheap.
        class _Names:
            def __init__(self, sp, names):
                self.species, self.clip_names = sp, names
        names = []
        for sp in self.species:
            with np.load(os.path.join(self.templates_dir, sp + ".npz"), allow_pickle=False) as z:
                names.append(_Names(sp, tuple(str(c) for c in z["clip_names"])))
        poses.check_exclusions(names, self.exclude_clips)
        for n in names:
            if not poses.clip_names(n, self.exclude_clips):
                raise DualPMError(f"{n.species}: every clip is excluded")

    def _species(self, name: str) -> _Species:
        if name not in self._data:
            t = template_io.load(os.path.join(self.templates_dir, name + ".npz"))
            topo = raycast.topology(t.vertices, t.faces)
            self._data[name] = _Species(
                template=t, topo=topo, space=poses.pose_space(t), coat=render.coat_materials(t),
                q_ext=topo.extend(t.canonical_vertices), material=t.face_material[topo.source_face],
                rest=t.vertices[topo.representative], skin_joints=t.skin_joints[topo.representative],
                skin_weights=t.skin_weights[topo.representative], head=_head_vertices(t)[topo.representative])
        return self._data[name]

    def _tick(self, stage: str, since: float) -> float:
        now = time.perf_counter()
        self.timings[stage] += now - since
        return now

    def parameters(self) -> dict:
        return {"size": self.size, "layers": self.layers, "species": list(self.species),
                "exclude_clips": list(self.exclude_clips), "config": asdict(self.config),
                "backgrounds": len(self.backgrounds)}

    # -- sampling --------------------------------------------------------------------------------
    def stream(self, run_seed: int, start: int = 0, stop: int | None = None):
        """Samples start, start+1, ... of run `run_seed` (forever when stop is None)."""
        i = start
        while stop is None or i < stop:
            yield self.sample(sample_seed(run_seed, i))
            i += 1

    def sample(self, seed) -> dict:
        """One sample; `seed` an int (or a numpy Generator, for ad-hoc use)."""
        if isinstance(seed, np.random.Generator):
            seed = int(seed.integers(2**63 - 1))
        seed = int(seed)
        # Independent streams per stage: changing how one stage draws leaves the others alone.
        g_pose, g_cam, g_look, g_light, g_bg, g_fx = (
            np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(6))
        size, cfg = self.size, self.config
        name = self.species[int(g_pose.integers(len(self.species)))]
        sd = self._species(name)
        t, topo = sd.template, sd.topo

        clock = time.perf_counter()
        pose = poses.sample(t, g_pose, sd.space, self.exclude_clips, cfg.blend_probability,
                            cfg.perturb_probability, cfg.perturb_max_scale, cfg.authored_probability,
                            cfg.frame_range)
        frames = t.skeleton.forward_kinematics(pose.rotations, pose.root_translation, offsets=pose.offsets)
        skin = t.skeleton.skinning_matrices(frames)
        model = linear_blend_skinning(sd.rest, sd.skin_joints, sd.skin_weights, skin)  # welded vertices only
        m2w = pose.model_to_world()
        world = topo.add_caps(model @ m2w[:3, :3].T + m2w[:3, 3])
        clock = self._tick("pose", clock)

        rest_world = world[: len(sd.rest)]
        w2c, k, cinfo = sample_camera(g_cam, rest_world, size, cfg, head_points=rest_world[sd.head])
        welded = world @ w2c[:3, :3].T + w2c[:3, 3]
        clock = self._tick("camera", clock)
        scene = raycast.make_scene(welded, topo.faces)
        pm = raycast.point_maps(None, sd.q_ext, topo, k, size, size, self.layers, welded=welded, scene=scene,
                                compact=True)
        hits, pixels = pm.pop("hits"), pm.pop("pixels")
        mask = pm["occupancy"][0] > 0
        clock = self._tick("targets", clock)

        img, occluder, bg_name = self._image(sd, welded, world, w2c, k, scene, hits, pixels, g_look, g_light,
                                             g_bg, g_fx, mask)
        self._tick("image", clock)
        self.timings["samples"] += 1
        joints_world = t.skeleton.joint_positions(frames) @ m2w[:3, :3].T + m2w[:3, 3]
        joints = joints_world @ w2c[:3, :3].T + w2c[:3, 3]
        out = dict(pm)
        out.update({
            "rgb": img,
            "mask": mask,
            "occluder": occluder,
            "joints": joints.astype(np.float32),
            "joint_names": np.array(t.skeleton.joint_names, dtype=np.str_),
            "species": np.array(name, dtype=np.str_),
            "clip": np.array(pose.clip, dtype=np.str_),
            "frame": np.array(pose.frame, dtype=np.int32),
            "clip_b": np.array(pose.clip_b, dtype=np.str_),
            "frame_b": np.array(pose.frame_b, dtype=np.int32),
            "blend": np.array(pose.blend, dtype=np.float32),
            "perturbation": np.array(pose.perturbation, dtype=np.float32),
            "yaw": np.array(pose.yaw, dtype=np.float32),
            "pose": np.array(pose.description(), dtype=np.str_),
            "rotations": np.asarray(pose.rotations, dtype=np.float32),
            "root_translation": np.asarray(pose.root_translation, dtype=np.float32),
            "offsets": np.asarray(pose.offsets, dtype=np.float32),
            "model_to_world": m2w.astype(np.float32),
            "extrinsics": w2c.astype(np.float32),
            "focal_mm": np.array(cinfo["focal_mm"], dtype=np.float32),
            "closeup": np.array(cinfo["closeup"], dtype=np.bool_),
            "background": np.array(bg_name, dtype=np.str_),
            "seed": np.array(seed, dtype=np.int64),
            "internal_surfaces": np.array(hits.internal, dtype=np.int32),
        })
        return out

    # -- image -----------------------------------------------------------------------------------
    def _image(self, sd, welded, world, w2c, k, scene, hits, pixels, g_look, g_light, g_bg, g_fx, mask):
        size, cfg, t, topo = self.size, self.config, sd.template, sd.topo
        look = render.sample_look(t, sd.coat, g_look)
        light = render.sample_light(g_light)
        d_pix = raycast.pixel_rays(k, (0, 0, size, size)).reshape(-1, 3)
        rot = w2c[:3, :3]
        sun_cam, up_cam = rot @ light.sun, rot @ np.array([0.0, 0.0, 1.0])

        # What each pixel shows: inside the silhouette, layer 0 at the pixel centre (the exact
        # hit of the targets); on its edge (a pixel whose 3x3 neighbourhood is partly empty),
        # 2x2 sub-pixel rays, whose hits are shaded and averaged: anti-aliased edges, and
        # coverage = hits / 4 blends the animal over the background.
        occ = mask
        pad = np.pad(occ, 1, mode="edge")
        win = [pad[1 + dy:1 + dy + size, 1 + dx:1 + dx + size] for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
        edge = np.logical_or.reduce(win) & ~np.logical_and.reduce(win)
        inner = occ & ~edge
        s = render.SUPERSAMPLE
        ey, ex = np.nonzero(edge)
        off = (np.arange(s) + 0.5) / s
        su = (ex[:, None, None] + off[None, None, :]).repeat(s, axis=1)  # (E, s, s): sub-pixel u
        sv = (ey[:, None, None] + off[None, :, None]).repeat(s, axis=2)
        yy = (sv - k[1, 2]) / k[1, 1]
        sub_d = np.stack([(su - k[0, 2] - k[0, 1] * yy) / k[0, 0], yy, np.ones_like(yy)], -1).reshape(-1, 3)
        sface, st, sbary = raycast.first_hits(scene, sub_d)
        shit = sface >= 0
        # Inner pixels: their layer-0 hit among the rays cast for the targets.
        lookup = np.full(size * size, -1, dtype=np.int64)
        lookup[pixels] = np.arange(len(pixels))
        iy, ix = np.nonzero(inner)
        ci = lookup[iy * size + ix]
        d_in = d_pix[iy * size + ix]
        f = np.concatenate([hits.face[0][ci], sface[shit]]).astype(np.int64)
        b = np.concatenate([hits.bary[0][ci], sbary[shit]])
        dirs_hit = np.concatenate([d_in, sub_d[shit]])
        pts = np.concatenate([hits.t[0][ci], st[shit]])[:, None] * dirs_hit
        normals = self._vertex_normals(welded, topo.faces)
        tri = topo.faces[f]
        n = b[:, 0:1] * normals[tri[:, 0]] + b[:, 1:2] * normals[tri[:, 1]] + b[:, 2:3] * normals[tri[:, 2]]
        n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
        n = np.where((np.sum(n * dirs_hit, axis=1) > 0)[:, None], -n, n)  # face the camera
        q = raycast.interpolate(sd.q_ext, topo.ext_faces, f, b)
        alb = render.albedo(sd.material[f], q, look)
        # Cast shadows: one more pass from each shaded point towards the sun.
        lit = np.ones(len(f))
        towards = (n @ sun_cam) > 0
        if np.any(towards):
            scale = max(float(np.ptp(welded, axis=0).max()), 1e-3)
            org = pts[towards] + (n[towards] + sun_cam) * 1e-3 * scale
            blocked = scene.run(org.astype(np.float32),
                                np.broadcast_to(sun_cam, org.shape).astype(np.float32)) >= 0
            lit[towards] = np.where(blocked, 0.0, 1.0)
        rgb_hit = render.shade(alb, n, up_cam, sun_cam, light, lit).astype(np.float32)
        fg = np.zeros((size, size, 3), dtype=np.float32)
        coverage = np.zeros((size, size), dtype=np.float32)
        n_in = len(ci)
        fg[iy, ix] = rgb_hit[:n_in]
        coverage[iy, ix] = 1.0
        sub_rgb = np.zeros((len(sub_d), 3), dtype=np.float32)
        sub_rgb[shit] = rgb_hit[n_in:]
        fg[ey, ex] = sub_rgb.reshape(-1, s * s, 3).mean(axis=1)
        coverage[ey, ex] = shit.reshape(-1, s * s).mean(axis=1)

        # Background and the animal's soft shadow on the ground.
        eye = -w2c[:3, :3].T @ w2c[:3, 3]
        dirs = (d_pix @ w2c[:3, :3]).reshape(size, size, 3)  # world directions: R^T d, row-wise
        ground_z = min(0.0, float(world[:, 2].min()))
        if len(self.backgrounds) and g_bg.uniform() < cfg.photo_probability:
            i = int(g_bg.integers(len(self.backgrounds)))
            bg = self.backgrounds.crop(i, size, size, g_bg)
            bg_name = self.backgrounds.name(i)
        else:
            bg = render.procedural_background(g_bg, dirs, eye[2] - ground_z)
            bg_name = "procedural"
        bg = render.srgb_to_linear(bg)
        shadow = render.contact_shadow(dirs, eye, world[: len(topo.representative)], light.sun, ground_z,
                                       softness=g_bg.uniform(0.03, 0.12))
        bg = bg * (1 - g_bg.uniform(*cfg.shadow_strength) * shadow)[..., None]
        lin = fg + (1 - coverage[..., None]) * bg
        img = (render.linear_to_srgb(lin) * 255 + 0.5).astype(np.uint8)

        occluder = np.zeros((size, size), dtype=bool)
        if g_fx.uniform() < cfg.occluder_probability:
            img, occluder = render.occluders(img, g_fx, mask)
        if g_fx.uniform() < cfg.effects_probability:
            img = render.camera_effects(img, g_fx)
        return img, occluder, bg_name

    @staticmethod
    def _vertex_normals(v: np.ndarray, faces: np.ndarray) -> np.ndarray:
        fn = np.cross(v[faces[:, 1]] - v[faces[:, 0]], v[faces[:, 2]] - v[faces[:, 0]])  # area-weighted
        idx = faces.reshape(-1)
        out = np.stack([np.bincount(idx, weights=np.repeat(fn[:, c], 3), minlength=len(v)) for c in range(3)], 1)
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


# ------------------------------------------------------------------------------------------------
# Files

def save_sample(path: str, sample: dict, compress: bool = True) -> None:
    """Validate as a dual point map (pointmap.validate), then write deterministically."""
    write_npz(path, pointmap.validate(sample, source=os.path.basename(path)), compress=compress)


def sample_name(index: int) -> str:
    return f"sample_{index:06d}.npz"


# ------------------------------------------------------------------------------------------------
# Command line

def add_arguments(parser) -> None:
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--count", type=int, required=True, help="number of samples")
    parser.add_argument("--seed", type=int, required=True, help="run seed: the same seed gives the same bytes")
    parser.add_argument("--size", type=int, default=160, help="image and map size in pixels (default 160)")
    parser.add_argument("--layers", type=int, default=4, help="amodal layers K (default 4)")
    parser.add_argument("--species", nargs="+", metavar="NAME", help="species to draw from (default: all)")
    parser.add_argument("--exclude-clips", nargs="+", default=[], metavar="CLIP",
                        help="clips held out: Clip (every species) or species:Clip")
    parser.add_argument("--workers", type=int, default=0, help="processes (default: every core)")
    parser.add_argument("--templates", default=None, help="folder of baked templates (default .cache/templates)")
    parser.add_argument("--backgrounds", default=None,
                        help="folder of background photos (default .cache/backgrounds when present; "
                             "'' for procedural backgrounds only)")
    parser.add_argument("--no-compress", action="store_true", help="store arrays uncompressed")
    parser.add_argument("--closeup-probability", type=float, default=None, metavar="P",
                        help=f"share of portraits framing the head (default {SynthConfig.closeup_probability})")
    parser.add_argument("--authored-probability", type=float, default=None, metavar="P",
                        help="share of samples in an authored lying or sitting pose (default 0)")
    parser.add_argument("--frame-range", type=float, nargs=2, default=None, metavar=("LO", "HI"),
                        help="draw clip frames from this part of each clip, fractions 0..1 (default 0 1)")
    parser.add_argument("--contact-sheet", action="store_true", help="also write DIR/contact_sheet.png")


_WORKER: dict = {}


def _init_worker(kwargs: dict, out: str, compress: bool) -> None:
    _WORKER["synth"] = Synthesizer(**kwargs)
    _WORKER["out"], _WORKER["compress"] = out, compress


def _make(task) -> int:
    index, seed = task
    synth = _WORKER["synth"]
    sample = synth.sample(seed)
    sample["index"] = np.array(index, dtype=np.int64)
    save_sample(os.path.join(_WORKER["out"], sample_name(index)), sample, _WORKER["compress"])
    return index


class _Progress:
    """A one-line progress bar on stderr (plain lines when stderr is not a terminal)."""

    def __init__(self, total: int, done: int = 0):
        self.total, self.done, self.start = total, done, time.monotonic()
        self.first = done
        self.tty = sys.stderr.isatty()
        self.last = 0.0

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last < (0.2 if self.tty else 5.0) and self.done < self.total:
            return
        self.last = now
        rate = (self.done - self.first) / max(now - self.start, 1e-9)
        left = (self.total - self.done) / rate if rate > 0 else float("inf")
        width = 30
        fill = int(width * self.done / max(self.total, 1))
        line = (f"synth [{'#' * fill}{'.' * (width - fill)}] {self.done}/{self.total} "
                f"{rate:.1f} samples/s, {left:.0f} s left")
        print(("\r" + line) if self.tty else line, end="" if self.tty else "\n", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.tty:
            print(file=sys.stderr)


def _check_output(out: str) -> None:
    try:
        os.makedirs(out, exist_ok=True)
        probe = os.path.join(out, ".write_test.partial")
        with open(probe, "wb") as f:
            f.write(b"")
        os.remove(probe)
    except OSError as e:
        raise DualPMError(f"{out}: output folder is not writable ({e.strerror or e})") from None


def run(args) -> int:
    if args.count < 1:
        raise DualPMError(f"--count must be at least 1, got {args.count}")
    if args.size < 8:
        raise DualPMError(f"--size must be at least 8 pixels, got {args.size}")
    if args.layers < 1:
        raise DualPMError(f"--layers must be at least 1, got {args.layers}")
    if args.workers < 0:
        raise DualPMError(f"--workers must be positive, got {args.workers}")
    closeup = getattr(args, "closeup_probability", None)
    if closeup is not None and not 0.0 <= closeup <= 1.0:
        raise DualPMError(f"--closeup-probability must be between 0 and 1, got {closeup}")
    authored = getattr(args, "authored_probability", None)
    if authored is not None and not 0.0 <= authored <= 1.0:
        raise DualPMError(f"--authored-probability must be between 0 and 1, got {authored}")
    frame_range = getattr(args, "frame_range", None)
    if frame_range is not None and not 0.0 <= frame_range[0] <= frame_range[1] <= 1.0:
        raise DualPMError(f"--frame-range must be two fractions 0 <= LO <= HI <= 1, got {frame_range}")
    bgdir = AUTO if args.backgrounds is None else args.backgrounds
    config = SynthConfig() if closeup is None else replace(SynthConfig(), closeup_probability=closeup)
    if authored is not None:
        config = replace(config, authored_probability=float(authored))
    if frame_range is not None:
        config = replace(config, frame_range=(float(frame_range[0]), float(frame_range[1])))
    kwargs = dict(templates_dir=args.templates, size=args.size, layers=args.layers, species=args.species,
                  exclude_clips=args.exclude_clips, backgrounds_dir=bgdir, config=config)
    synth = Synthesizer(**kwargs)  # validates everything before any file is touched
    out = args.out
    _check_output(out)
    compress = not args.no_compress

    manifest = {
        "format": FORMAT, "version": FORMAT_VERSION, "seed": int(args.seed), "count": int(args.count),
        "compressed": compress, "parameters": synth.parameters(),
        "templates": {s: sha256_file(os.path.join(synth.templates_dir, s + ".npz")) for s in synth.species},
        "backgrounds": [synth.backgrounds.name(i) for i in range(len(synth.backgrounds))],
        "sample_seed": "numpy SeedSequence(entropy=seed, spawn_key=(index,)).generate_state(1, uint64) >> 1",
        "files": [sample_name(i) for i in range(args.count)],
    }
    final = os.path.join(out, "manifest.json")
    partial = final + ".partial"
    _check_previous(out, final, partial, manifest)
    for name in os.listdir(out):  # leftovers of an interrupted run: never complete
        if name.endswith(".partial") and name != os.path.basename(partial):
            os.remove(os.path.join(out, name))
    text = json.dumps(manifest, indent=1, sort_keys=True) + "\n"
    with open(partial + ".tmp", "w") as f:
        f.write(text)
    os.replace(partial + ".tmp", partial)
    if os.path.exists(final):
        os.remove(final)

    began = time.monotonic()
    todo = [(i, sample_seed(args.seed, i)) for i in range(args.count)
            if not os.path.exists(os.path.join(out, sample_name(i)))]
    progress = _Progress(args.count, args.count - len(todo))
    workers = args.workers or os.cpu_count() or 1
    workers = max(1, min(workers, len(todo)))
    if todo:
        if workers == 1:
            _init_worker(kwargs, out, compress)
            for task in todo:
                _make(task)
                progress.update()
        else:
            import multiprocessing as mp  # noqa: PLC0415

            ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
            with ctx.Pool(workers, initializer=_init_worker, initargs=(kwargs, out, compress)) as pool:
                for _ in pool.imap_unordered(_make, todo, chunksize=1):
                    progress.update()
    progress.close()
    if args.contact_sheet:
        from . import contact_sheet  # noqa: PLC0415

        paths = [os.path.join(out, sample_name(i)) for i in range(min(args.count, 8))]
        contact_sheet.write(os.path.join(out, "contact_sheet.png"), [pointmap.load(p) for p in paths])
    os.replace(partial, final)
    seconds = time.monotonic() - began
    print(json.dumps({"out": out, "count": args.count, "seed": args.seed, "written": len(todo), "workers": workers,
                      "seconds": round(seconds, 3),
                      "samples_per_second": round(len(todo) / seconds, 3) if todo and seconds > 0 else None}))
    return 0


def _check_previous(out: str, final: str, partial: str, manifest: dict) -> None:
    """A folder may hold only an earlier run of the same settings (then it is continued)."""
    previous = None
    for path in (final, partial):
        if os.path.exists(path):
            try:
                with open(path) as f:
                    previous = json.load(f)
            except (OSError, ValueError):
                raise DualPMError(f"{path}: unreadable manifest; remove it or choose another --out") from None
            break
    if previous is None:
        if any(n.startswith("sample_") and n.endswith(".npz") for n in os.listdir(out)):
            raise DualPMError(f"{out}: holds samples without a manifest; choose an empty --out")
        return
    keys = ("format", "version", "seed", "compressed", "parameters", "templates", "backgrounds")
    manifest = json.loads(json.dumps(manifest))  # tuples become lists, as in the file
    differs = [k for k in keys if previous.get(k) != manifest.get(k)]
    if differs:
        raise DualPMError(f"{out}: holds a run with other settings ({', '.join(differs)} differ); "
                          "choose another --out")
