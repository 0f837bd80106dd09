"""The character's colours against the true texture, its rig IoU, and what it costs.

Colour error: synthetic renders (training.synthesize, whole animals, several species, no
occluders and no camera effects) whose look is known: the synthesizer draws each sample's look
from its own seed (render.sample_look), so `albedo(material, Q, look)` is the true colour of
every surface point. Each render goes through `dualpm reconstruct`'s bpy-free half
(pipeline.from_pointmap) with its exact dual point map and true mask (a perfect predictor: the
texture's error, not the predictor's), and with the shipped predictor (the whole chain). Every
atlas texel of the character is a canonical point; its true colour is that of the nearest point
of the rendered species' true surface in canonical space, "visible" when that point is one the
camera saw (near a layer-0 Q of the render). The error is the mean absolute difference per
channel in sRGB, as a share of the range (255), over the visible and over the hidden texels;
beside it the same for the template's flat colours (the look before the character), as a ratio.

Two lights: "even" renders with a uniform white sky and no sun (render.sample_light swapped for
the run), so that a photo's colour is the albedo and the error is the bake's alone; "sun" keeps
the synthesizer's sun, sky and cast shadows; there each method's colours are scaled by the one
gain (per image) that fits them best to the truth (the raw figures are in the JSON). The
character's atlas is baked as the pipeline bakes it (delight "auto", the default) and, from the
same fit, with delight "off" (the photo's colours as they are), "first-order" (the earlier fit of
the log luminance by the normal) and "on" (character/light.py's sky, sun and cast shadows, always).

Rig IoU: the character's posed surface through the photo camera against the true mask, beside
the untextured fit's (the template surface), same fits.

Speed: the character step (the shape solve, posing the mesh, the bake) inside from_pointmap,
per render; and
`dualpm reconstruct`'s per-photo work on the example cat (.cache/photos/muybridge_cat.png, the
shipped model in process) with --character character against --character template, alternating
after a warm-up: the difference is what the character adds (main-thread CPU, and wall time).

Gallery (--gallery DIR): real photos (the example cat, scikit-image's chelsea) through
`dualpm reconstruct`'s path with the shipped predictor and segmenter, each as [photo | the
character through the photo's camera | from the side | from behind] into DIR/character_NAME.png.

    python benchmarks/bench_character.py [--quick] [--json FILE] [--gallery DIR]
"""

from __future__ import annotations

try:
    from . import report
except ImportError:  # run as a script: python benchmarks/bench_x.py
    import report  # type: ignore[no-redef]

import contextlib
import json
import os
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

VISIBLE_TARGET = 0.10
HIDDEN_TARGET = 0.20
ADDED_LIMIT_S = 1.5
BAKE_LIMIT_S = 0.8
SPECIES = ("horse", "cow", "wolf", "deer", "husky", "donkey")
DEFAULT_DELIGHT = "auto"  # pipeline.Settings.delight's default: the "baked" rows
OTHER_DELIGHT = ("off", "first-order", "on")  # baked again from the same fits: the other rows


@contextlib.contextmanager
def even_light():
    """render.sample_light returns a uniform white sky without a sun for the block."""
    from training import render

    original = render.sample_light

    def flat(rng):
        original(rng)  # draw as usual, so the other streams are unchanged
        one = np.ones(3)
        return render.Light(sun=np.array([0.0, 0.0, 1.0]), sun_rgb=np.zeros(3), sky_rgb=one, ground_rgb=one)

    render.sample_light = flat
    try:
        yield
    finally:
        render.sample_light = original


def sample_look(synth, sample: dict):
    """The look the synthesizer drew for `sample` (its seed's third stream, as Synthesizer.sample)."""
    from training import render

    sd = synth._species(str(sample["species"]))
    g_look = [np.random.default_rng(s) for s in np.random.SeedSequence(int(sample["seed"])).spawn(6)][2]
    return sd.template, render.sample_look(sd.template, sd.coat, g_look)


def true_surface(tpl, look, count: int, rng):
    """(canonical points (N, 3), sRGB uint8 true colours (N, 3)) spread over the species' surface."""
    from dualpm_addon.character.texture import linear_to_srgb8
    from training import render

    v, f = tpl.canonical_vertices, np.asarray(tpl.faces)
    area = 0.5 * np.linalg.norm(np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]), axis=1)
    face = rng.choice(len(f), size=count, p=area / area.sum())
    r = rng.uniform(size=(count, 2))
    flip = r.sum(1) > 1
    r[flip] = 1 - r[flip]
    bary = np.stack([1 - r.sum(1), r[:, 0], r[:, 1]], 1)
    q = np.einsum("nk,nkd->nd", bary, v[f[face]])
    return q, linear_to_srgb8(render.albedo(np.asarray(tpl.face_material)[face], q, look))


def colour_errors(character, tpl, look, sample: dict, rng, atlases: dict | None = None) -> dict:
    """Mean |sRGB error| / 255 of the visible and hidden texels of the character's own atlas
    ("baked") and the template's flat colours, and of each of `atlases` (name: an atlas of the
    same texels, e.g. baked with another delight mode), each also with its best gain per image
    (`*_gain`)."""
    from scipy.spatial import cKDTree

    from dualpm_addon.character import instance, texture

    mesh = character.mesh
    tm = instance.texels(mesh, character.texture.size)
    c = tm.points(mesh.canonical, mesh.faces)
    q_true, rgb_true = true_surface(tpl, look, 60000, rng)
    _, nearest = cKDTree(q_true).query(c)
    truth = rgb_true[nearest].astype(np.float64)
    occ = np.asarray(sample["occupancy"])[0] > 0
    q0 = np.asarray(sample["Q"])[0][occ]
    tree0 = cKDTree(q0)
    spacing = float(np.median(tree0.query(q0, k=2)[0][:, 1]))
    d0, _ = tree0.query(q_true[nearest])
    visible = d0 <= 2.0 * spacing
    baked = character.texture.image.reshape(-1, 3)[tm.pixel].astype(np.float64)
    flat = texture.flat(mesh.faces, mesh.uv, np.asarray(mesh.material_colors)[mesh.face_material],
                        texels=tm).image.reshape(-1, 3)[tm.pixel].astype(np.float64)
    out = {"visible_share": float(visible.mean())}
    lin_t = texture.srgb_to_linear(truth / 255)
    methods = [("baked", baked), ("template", flat)]
    for name, atlas in (atlases or {}).items():
        methods.append((name, atlas.reshape(-1, 3)[tm.pixel].astype(np.float64)))
    for name, pred in methods:
        err = np.abs(pred - truth).mean(1) / 255
        lin_p = texture.srgb_to_linear(pred / 255)
        gain = float(np.sum(lin_p * lin_t) / max(np.sum(lin_p * lin_p), 1e-12))
        err_g = np.abs(texture.linear_to_srgb8(lin_p * gain).astype(np.float64) - truth).mean(1) / 255
        for side, m in (("visible", visible), ("hidden", ~visible)):
            out[f"{name}_{side}"] = float(err[m].mean()) if m.any() else float("nan")
            out[f"{name}_{side}_gain"] = float(err_g[m].mean()) if m.any() else float("nan")
    return out


def reconstruct(sample: dict, runner=None):
    from dualpm_addon import pipeline, preprocess
    from training.evaluate import true_map

    mask = np.asarray(sample["mask"], bool)
    photo = pipeline.PhotoInput(np.asarray(sample["rgb"]), mask, None, "render.png")
    if runner is None:
        pm = true_map(sample)
        pm["photo_mask"] = mask
        settings = pipeline.Settings(confidence_threshold=-np.inf)
    else:
        pm = preprocess.predict_photo(runner, photo.rgb, mask, None, "render.png")
        settings = pipeline.Settings()
    timings: dict = {}
    rec = pipeline.from_pointmap(pm, photo, settings=settings, timings=timings)
    return rec, timings


def colour_rows(count: int, runner=None) -> list[dict]:
    from dualpm_addon import metrics
    from training.synthesize import SynthConfig, Synthesizer

    cfg = SynthConfig(closeup_probability=0.0, occluder_probability=0.0, effects_probability=0.0,
                      cut_probability=0.0)
    synth = Synthesizer(os.path.join(ROOT, ".cache", "templates"), size=160, layers=4, species=list(SPECIES),
                        config=cfg)
    rows = []
    label = "exact maps" if runner is None else "shipped predictor"
    for light in ("even", "sun"):
        figs, ious, seconds, cpu, light_s, applied = [], [], [], [], [], []
        for i in range(count):
            with even_light() if light == "even" else contextlib.nullcontext():
                sample = synth.sample(7000 + i)
            tpl, look = sample_look(synth, sample)
            try:
                rec, timings = reconstruct(sample, runner)
            except Exception as e:  # noqa: BLE001 - a failed fit is a row's note, not the run's end
                print(f"sample {i}: {e}", file=sys.stderr)
                continue
            mask = np.asarray(sample["mask"], bool)
            ious.append((metrics.rig_iou(rec.character.posed_vertices, rec.character.mesh.faces,
                                         rec.photo_intrinsics, mask),
                         metrics.rig_iou(rec.fit.posed_vertices, rec.fit.faces, rec.photo_intrinsics, mask)))
            seconds.append(timings["character"])
            # CPU time of the same step again: on a shared machine wall time grows with the load.
            from dualpm_addon.character import instance, shape

            fit = rec.fit
            c0 = time.process_time()
            rest = shape(fit, rec.template, rec.points, fit.point_skin_joints, fit.point_skin_weights,
                         fit.point_valid, rec.photo_mask, rec.photo_intrinsics).vertices
            instance.make(fit, rec.template, np.asarray(sample["rgb"]), rec.photo_mask, rec.photo_intrinsics,
                          rest=rest)
            cpu.append(time.process_time() - c0)
            from dualpm_addon.character import texture

            m = rec.character.mesh
            tf = rec.character.figures["texture"]
            light_s.append(float(tf["timings_s"].get("light", 0.0)))
            applied.append(bool(tf.get("light", {}).get("applied", False)))
            # The same fit and posed character baked with the other delight modes.
            atlases = {mode: texture.bake(rec.character.posed_vertices, m.faces, m.uv, m.canonical,
                                          np.asarray(sample["rgb"]), rec.photo_intrinsics, rec.photo_mask,
                                          texels=instance.texels(m), mirrored_atlas=True, delight=mode).image
                       for mode in OTHER_DELIGHT}
            figs.append(colour_errors(rec.character, tpl, look, sample, np.random.default_rng(i), atlases))
        if not figs:
            continue
        mean = {k: float(np.nanmean([f[k] for f in figs])) for k in figs[0]}
        suffix = "" if light == "even" else "_gain"
        for side, target in (("visible", VISIBLE_TARGET), ("hidden", HIDDEN_TARGET)):
            b, t = mean[f"baked_{side}{suffix}"], mean[f"template_{side}{suffix}"]
            rows.append({"name": f"colour error {side}, {light} light, {label}", "value": round(100 * b, 2),
                         "unit": "% range", "peer": "template flat", "peer_value": round(100 * t, 2),
                         "ratio": round(b / t, 3), "target_pct": 100 * target,
                         "meets_target": bool(b <= target), "samples": len(figs),
                         "raw_pct": round(100 * mean[f"baked_{side}"], 2),
                         "raw_template_pct": round(100 * mean[f"template_{side}"], 2),
                         "delight": DEFAULT_DELIGHT, "delight_applied": int(sum(applied))})
        for mode in OTHER_DELIGHT:
            for side, target in (("visible", VISIBLE_TARGET), ("hidden", HIDDEN_TARGET)):
                b, t = mean[f"{mode}_{side}{suffix}"], mean[f"template_{side}{suffix}"]
                rows.append({"name": f"colour error {side}, {light} light, {label}, delight {mode}",
                             "value": round(100 * b, 2), "unit": "% range", "peer": "template flat",
                             "peer_value": round(100 * t, 2), "ratio": round(b / t, 3), "target_pct": 100 * target,
                             "meets_target": bool(b <= target), "samples": len(figs), "delight": mode,
                             "raw_pct": round(100 * mean[f"{mode}_{side}"], 2)})
        iou = np.asarray(ious)
        rows.append({"name": f"rig IoU, character, {light} light, {label}", "value": round(float(iou[:, 0].mean()), 4),
                     "unit": "IoU", "peer": "untextured fit", "peer_value": round(float(iou[:, 1].mean()), 4),
                     "ratio": round(float(iou[:, 0].mean() / iou[:, 1].mean()), 4), "samples": len(figs)})
        rows.append({"name": f"character step per render (shape + bake, CPU), {light} light, {label}",
                     "value": round(float(np.median(cpu)), 3), "unit": "s", "limit": ADDED_LIMIT_S,
                     "pass": bool(np.median(cpu) <= ADDED_LIMIT_S), "wall_s": round(float(np.median(seconds)), 3)})
        rows.append({"name": f"the bake's light step (delight {DEFAULT_DELIGHT}, wall), {light} light, {label}",
                     "value": round(float(np.median(light_s)), 3), "unit": "s", "max_s": round(float(max(light_s)), 3),
                     "applied": int(sum(applied)), "samples": len(figs)})
    return rows


_HEADLESS = """
import json, sys, tempfile, time
sys.path.insert(0, sys.argv[1])
import bpy  # noqa: F401
from operators import headless
from operators.session import _LazyRunner
predictor = _LazyRunner(sys.argv[3], "cpu")
out = {"template": [], "character": []}
for i in range(int(sys.argv[4]) + 1):
    for look in ("template", "character"):
        with tempfile.TemporaryDirectory() as d:
            t0, w0 = time.thread_time(), time.perf_counter()
            headless.reconstruct_one(None, sys.argv[2], "photo", d, predictor, character=look)
            if i:  # the first round warms the caches (template index, character mesh, bpy)
                out[look].append((time.thread_time() - t0, time.perf_counter() - w0))
print(json.dumps(out))
"""


def headless_rows(repeats: int) -> list[dict]:
    """`dualpm reconstruct`'s per-photo work (operators/headless.reconstruct_one, the shipped model
    in process) on the example cat with each look, alternating, after a warm-up round: what the
    character adds in main-thread CPU time (ONNX Runtime's worker threads and their spinning,
    the same for both looks, left out) and in wall time."""
    photo = os.path.join(ROOT, ".cache", "photos", "muybridge_cat.png")
    proc = subprocess.run([sys.executable, "-c", _HEADLESS, ROOT, photo, os.path.join(ROOT, "assets", "dualpm.onnx"),
                           str(repeats)], capture_output=True, text=True, cwd=ROOT, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"reconstruct_one failed: {proc.stderr[-800:]}")
    t = json.loads(proc.stdout.strip().splitlines()[-1])
    cpu = {k: float(np.median([a for a, _ in v])) for k, v in t.items()}
    wall = {k: float(np.median([b for _, b in v])) for k, v in t.items()}
    added = cpu["character"] - cpu["template"]
    return [{"name": "dualpm reconstruct: added by the character, main-thread CPU (muybridge_cat)",
             "value": round(added, 3), "unit": "s", "limit": ADDED_LIMIT_S, "pass": bool(added <= ADDED_LIMIT_S),
             "wall_added_s": round(wall["character"] - wall["template"], 3),
             "character_cpu_s": round(cpu["character"], 3), "template_cpu_s": round(cpu["template"], 3),
             "character_wall_s": round(wall["character"], 3), "template_wall_s": round(wall["template"], 3),
             "repeats": repeats}]


def bake_speed(repeats: int) -> list[dict]:
    """The bake alone on the horse character through a side-on camera, 512 and 1024 texels."""
    from dualpm_addon import camera, template
    from dualpm_addon.character import load_character, texture

    mesh = load_character(template.load_default())
    centre = 0.5 * (mesh.vertices.min(0) + mesh.vertices.max(0))
    w2c = camera.look_at(centre + np.array([4.5, -1.0, 0.6]), centre)
    v = mesh.vertices @ w2c[:3, :3].T + w2c[:3, 3]
    k = camera.intrinsics_from_focal_mm(50.0, 640, 480)
    rgb = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    rows = []
    for size, delight in ((512, "off"), (512, "auto"), (512, "on"), (1024, "off")):
        tm = texture.texel_map(mesh.uv, mesh.faces, size)
        wall, cpu = [], []
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            texture.bake(v, mesh.faces, mesh.uv, mesh.canonical, rgb, k, None, texels=tm, delight=delight)
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        row = {"name": f"bake {size}x{size} atlas ({len(tm.pixel)} texels), 640x480 photo, delight {delight} (CPU)",
               "value": round(float(np.median(cpu)), 3), "unit": "s", "wall_s": round(float(np.median(wall)), 3)}
        if size == texture.SIZE:  # the limit is the default atlas's; a larger one is the user's choice
            row.update({"limit": BAKE_LIMIT_S, "pass": bool(np.median(cpu) <= BAKE_LIMIT_S)})
        rows.append(row)
    return rows


GALLERY = ("muybridge_cat.png", "chelsea.png")


def gallery(folder: str, height: int = 240) -> list[dict]:
    from dualpm_addon import image_io, pipeline, preview
    from dualpm_addon.character import preview as cpreview
    from dualpm_addon.inference import Runner

    runner = Runner(os.path.join(ROOT, "assets", "dualpm.onnx"), device="cpu")
    rows = []
    for name in GALLERY:
        photo = image_io.read_photo(os.path.join(ROOT, ".cache", "photos", name))
        rec = pipeline.reconstruct(runner, pipeline.PhotoInput(photo.rgb, photo.mask, photo.focal_mm, name))
        ch = rec.character
        panels = [preview.resize_nearest(photo.rgb, height)] + cpreview.panels(
            ch, photo.rgb, rec.photo_intrinsics, rec.fit.model_to_camera, height)
        gap = np.zeros((height, 3, 3), np.uint8)
        img = np.concatenate([a for p in panels for a in (p, gap)][:-1], axis=1)
        out = os.path.join(folder, f"character_{os.path.splitext(name)[0]}.png")
        preview.write_png(out, img)
        t = ch.figures["texture"]
        rows.append({"name": f"gallery {name}: photo / mirror / fill share", "value": t["photo"], "unit": "share",
                     "mirror": t["mirror"], "fill": t["fill"], "rig_iou": ch.figures.get("rig_iou"), "picture": out,
                     "mask_source": rec.mask_source or "none"})
    return rows


def run(quick: bool = False, gallery_dir: str | None = None) -> list[dict]:
    from dualpm_addon.inference import Runner

    count = 3 if quick else 8
    rows = colour_rows(count)
    rows += colour_rows(max(2, count // 2), Runner(os.path.join(ROOT, "assets", "dualpm.onnx"), device="cpu"))
    rows += bake_speed(3 if quick else 10)
    rows += headless_rows(1 if quick else 3)
    if gallery_dir:
        rows += gallery(gallery_dir)
    rows[0]["machine"] = report.machine()
    return rows


if __name__ == "__main__":
    sys.exit(report.main(run, __doc__.splitlines()[0],
                         options={"gallery-dir": {"default": None, "metavar": "DIR",
                                                  "help": "write the gallery's pictures into DIR"}}))
