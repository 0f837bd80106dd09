"""Ground-truth point clouds for the fitting tests and benchmark, straight from baked templates.

A scene: one species posed by one frame of one of its clips, seen by a pinhole camera from a
random side. Points are sampled uniformly on the posed surface (area-weighted triangles, random
barycentrics): P is the posed point in camera space, Q the same barycentrics on the species'
canonical vertices (its points carried into the horse's Q), `pixel` its projection. The result
is what an exact amodal dual point map holds, at any density, without ray casting. Ground truth:
the species' own joint heads in camera space (`joints`, `joint_names`).

Degradations (`degrade`): Gaussian noise on P, a fraction of outliers (half get a random P in the
cloud's box, half a random Q from elsewhere on the body), and one side missing (every point on
the animal's side away from the camera, by the sign of Q's x, is dropped).
"""

from __future__ import annotations

import numpy as np

from dualpm_addon import camera, canonical
from dualpm_addon import template as template_mod


def load_species(templates_dir: str, species: str):
    return template_mod.load(f"{templates_dir}/{species}.npz")


def sample_scene(t, clip: str | None = None, frame: int | None = None, n_points: int = 20000,
                 seed: int = 0, size: int = 160, focal_mm: float = 50.0) -> dict:
    rng = np.random.default_rng([seed, 0x5CE])
    sk = t.skeleton
    if clip is None:
        clip = t.clip_names[rng.integers(len(t.clip_names))]
    c = t.clip(clip)
    f = int(rng.integers(c.num_frames)) if frame is None else int(frame) % c.num_frames
    rot, root, off = c.rotations[f], c.root_translation[f], c.offsets[f]
    g = sk.forward_kinematics(rot, root, offsets=off)
    verts = t.pose_vertices(rot, root, off)
    heads = sk.joint_positions(g)
    ref_names, ref_joints = reference_joints(t, g)
    # Camera: random azimuth, 0-35 degrees elevation, the body filling about 70 % of the view.
    centre = 0.5 * (verts.min(axis=0) + verts.max(axis=0))
    radius = 0.5 * np.linalg.norm(verts.max(axis=0) - verts.min(axis=0))
    az = rng.uniform(0, 2 * np.pi)
    el = np.radians(rng.uniform(0, 35))
    fov = 2 * np.arctan(18.0 / focal_mm)
    dist = radius / np.tan(0.35 * fov) + radius
    eye = centre + dist * np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
    w2c = camera.look_at(eye, centre)
    k = camera.intrinsics_from_focal_mm(focal_mm, size, size)
    faces = t.faces
    tri = verts[faces]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    fi = rng.choice(len(faces), n_points, p=area / area.sum())
    bary = rng.dirichlet([1.0, 1.0, 1.0], n_points)
    world = np.einsum("nk,nkc->nc", bary, tri[fi])
    q = np.einsum("nk,nkc->nc", bary, t.canonical_vertices[faces[fi]])
    p = world @ w2c[:3, :3].T + w2c[:3, 3]
    return {
        "P": p, "Q": q, "pixel": camera.project(p, k), "intrinsics": k,
        "joints": heads @ w2c[:3, :3].T + w2c[:3, 3], "joint_names": tuple(sk.joint_names),
        "ref_joints": ref_joints @ w2c[:3, :3].T + w2c[:3, 3], "ref_joint_names": ref_names,
        "species": t.species, "clip": clip, "frame": f, "body_length": t.body_length,
        "world_to_camera": w2c, "posed_frames": g, "vertices": verts @ w2c[:3, :3].T + w2c[:3, 3],
    }


def reference_joints(t, posed: np.ndarray, reference=None) -> tuple[tuple[str, ...], np.ndarray]:
    """The reference (horse) joints carried into this animal: for each shared bone j, the point
    of the species' rest space that canonical.bone_maps sends onto the reference's head of j
    (inverse of the species' map A_j), moved by the species' posed bone j. Where the species rig
    puts its own joints elsewhere (bone maps align skin boxes, not heads), this is the position
    a fit of the reference rig can reach; `joints` is the species' own rig."""
    reference = reference or template_mod.load_default()
    maps = canonical.bone_maps(t, reference)
    sk, sr = t.skeleton, reference.skeleton
    skin = sk.skinning_matrices(posed)
    names, out = [], []
    for j, name in enumerate(sk.joint_names):
        if name not in sr.joint_names:
            continue
        rest = np.linalg.solve(maps[j], np.append(sr.rest_heads[sr.index(name)], 1.0))
        out.append((skin[j] @ rest)[:3])
        names.append(name)
    return tuple(names), np.array(out)


def rest_scene(t, n_points: int = 20000, seed: int = 0) -> dict:
    """The species in its rest pose seen by the identity camera (P = rest model space): a fit
    of it shows where the method puts the reference rig's joints on this species' body."""
    rng = np.random.default_rng(seed)
    tri = t.vertices[t.faces]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    fi = rng.choice(len(t.faces), n_points, p=area / area.sum())
    bary = rng.dirichlet([1.0, 1.0, 1.0], n_points)
    return {"P": np.einsum("nk,nkc->nc", bary, tri[fi]),
            "Q": np.einsum("nk,nkc->nc", bary, t.canonical_vertices[t.faces[fi]])}


def calibrated_joints(t, rest_joints: np.ndarray, rest_names, scene: dict) -> tuple[tuple[str, ...], np.ndarray]:
    """Rest-calibrated targets: joints a method found on the species' rest pose (`rest_joints`,
    rest model space), each carried by the species' own posed bone of that name into the
    scene's camera. The distance to them measures how well the method recovers the pose, apart
    from where it puts joints on a body that is not the reference's (that part is the same at
    rest and in every pose)."""
    sk = t.skeleton
    skin = sk.skinning_matrices(scene["posed_frames"])
    w2c = scene["world_to_camera"]
    names, out = [], []
    for name, x in zip(rest_names, rest_joints):
        if name in sk.joint_names:
            j = sk.index(name)
            out.append((w2c @ skin[j] @ np.append(x, 1.0))[:3])
            names.append(name)
    return tuple(names), np.array(out)


def synth_scenes(templates_dir: str, species: str, count: int, seed: int = 0) -> list[dict]:
    """Ground-truth dual point maps from training/synthesize.py (exact ray casting, 160x160,
    4 layers), as scene dicts like `sample_scene`'s: the kept points (occupancy alone: a
    ground-truth map's confidence is uniform), their pixel centres, the species' joints."""
    from training.synthesize import SynthConfig, Synthesizer

    from dualpm_addon import pointmap

    # whole animals: a portrait shows the head alone, and the fit is measured on every joint
    synth = Synthesizer(templates_dir, size=160, layers=4, species=[species],
                        config=SynthConfig(closeup_probability=0.0))
    t = template_mod.load(f"{templates_dir}/{species}.npz")
    out = []
    for i in range(count):
        a = synth.sample(seed * 1000 + i)
        pts = pointmap.extract_points(a, confidence_threshold=-np.inf)
        g = t.skeleton.forward_kinematics(a["rotations"], a["root_translation"], offsets=a["offsets"])
        w2c = np.asarray(a["extrinsics"], np.float64) @ np.asarray(a["model_to_world"], np.float64)
        out.append({"P": pts["P"].astype(np.float64), "Q": pts["Q"].astype(np.float64),
                    "pixel": pts["pixel"][:, ::-1].astype(np.float64) + 0.5,
                    "intrinsics": np.asarray(a["intrinsics"], np.float64),
                    "joints": np.asarray(a["joints"], np.float64),
                    "joint_names": tuple(str(n) for n in a["joint_names"]), "species": species,
                    "clip": str(a["pose"]), "body_length": t.body_length, "world_to_camera": w2c,
                    "posed_frames": g})
    return out


def degrade(scene: dict, noise: float = 0.0, outliers: float = 0.0, drop_side: bool = False,
            seed: int = 0) -> dict:
    """A copy of `scene` with noise (metres, std per axis), an outlier fraction and/or the far
    side missing; `pixel` is re-projected from the noisy P."""
    # A seed stream of its own: a bare default_rng(seed) would draw the same indices as a
    # fit's subsampling with the same seed, and pick exactly the outliers.
    rng = np.random.default_rng([seed, 0xDE6])
    p, q = scene["P"].copy(), scene["Q"].copy()
    if drop_side:
        # The animal's left is +x in Q; its side facing the camera has normals toward it. The
        # far side is the sign of x whose points are on average farther away.
        left = q[:, 0] > 0
        far_left = p[left, 2].mean() > p[~left, 2].mean()
        keep = ~left if far_left else left
        p, q = p[keep], q[keep]
    if noise > 0:
        p = p + rng.normal(0, noise, p.shape)
    if outliers > 0:
        n = len(p)
        bad = rng.choice(n, int(round(outliers * n)), replace=False)
        half = len(bad) // 2
        lo, hi = p.min(axis=0), p.max(axis=0)
        p[bad[:half]] = rng.uniform(lo, hi, (half, 3))
        q[bad[half:]] = q[rng.choice(n, len(bad) - half)]
    out = dict(scene)
    out.update(P=p, Q=q, pixel=camera.project(p, scene["intrinsics"]))
    return out


def joint_error(fit_joints: np.ndarray, fit_names, scene: dict, names=None,
                target: str = "joints") -> tuple[float, dict]:
    """Mean distance (m) between fitted and true joints over shared names (or `names`);
    target "joints" (the species' own rig), "ref_joints" (reference_joints) or any key K with
    names in K_names."""
    gt = dict(zip(scene["joint_names" if target == "joints" else target[:-1] + "_names"], scene[target]))
    fj = dict(zip(fit_names, fit_joints))
    shared = [n for n in (names or fit_names) if n in gt and n in fj]
    d = {n: float(np.linalg.norm(fj[n] - gt[n])) for n in shared}
    return float(np.mean(list(d.values()))), d


def to_point_map(scene: dict, size: int = 64, layers: int = 4) -> dict:
    """A dual point map (pointmap.py arrays) of a scene's points: each point goes to the pixel
    it projects into, the nearest `layers` per pixel are kept, near to far. The grid's camera
    is the scene's intrinsics scaled to `size` (a 160-pixel scene camera becomes a `size` one)."""
    k = np.asarray(scene["intrinsics"], dtype=np.float64).copy()
    k[:2] *= size / (2 * k[0, 2])  # the scenes' principal point is the image centre
    uv = camera.project(scene["P"], k)
    col, row = np.floor(uv[:, 0]).astype(int), np.floor(uv[:, 1]).astype(int)
    inside = (col >= 0) & (col < size) & (row >= 0) & (row < size)
    pix = row[inside] * size + col[inside]
    p, q = scene["P"][inside], scene["Q"][inside]
    order = np.lexsort((p[:, 2], pix))
    pix, p, q = pix[order], p[order], q[order]
    first = np.searchsorted(pix, pix, side="left")
    layer = np.arange(len(pix)) - first
    keep = layer < layers
    shape = (layers, size, size)
    out = {"P": np.zeros(shape + (3,), np.float32), "Q": np.zeros(shape + (3,), np.float32),
           "occupancy": np.zeros(shape, np.float32), "confidence": np.ones(shape, np.float32),
           "intrinsics": k.astype(np.float32)}
    li, pi = layer[keep], pix[keep]
    out["P"][li, pi // size, pi % size] = p[keep]
    out["Q"][li, pi // size, pi % size] = q[keep]
    out["occupancy"][li, pi // size, pi % size] = 1.0
    return out


def horse_render(templates_dir: str, seed: int = 3) -> dict:
    """One whole-animal synthetic render of the horse (training.synthesize), every clip allowed."""
    from training.synthesize import SynthConfig, Synthesizer

    synth = Synthesizer(templates_dir, size=160, layers=4, species=["horse"],
                        config=SynthConfig(closeup_probability=0.0), exclude_clips=[])
    return synth.sample(seed)
