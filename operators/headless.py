"""The batch pipeline: `dualpm reconstruct PHOTO... --out DIR` and `blender -b --python-expr`.

    dualpm reconstruct PHOTO... --out DIR [--mask FILE | --mask-dir DIR] [--all-animals]
                       [--fit photo|points] [--character character|template|points] [--delight auto|on|off]
                       [--bvh FILE] [--server URL --token T]
                       [--device auto|cpu|cuda] [--model FILE]

    blender -b --python-expr "import sys, bl_ext.user_default.dualpm.operators.headless as h; \\
        sys.exit(h.main(['photo.jpg', '--out', 'out']))"

Per photo NAME (the file's stem; a second photo with the same stem gets NAME_2): NAME.blend (the
reconstruction's collection as the panel makes it, the photo packed in, the scene's camera and
render size the photo's), NAME.glb (rig, skinned surface, camera, the action with --bvh),
NAME.png (the photo beside the reconstruction from a novel view, preview.render) and NAME.json
(per-stage timings, points kept, bones fitted, fit residual, model version, the mask it used, or
the reason it failed). Each file is written under a temporary name and renamed when complete;
NAME.json comes last, and a failed photo's stale NAME.blend/.glb/.png from an earlier run are
removed, so what is in DIR always agrees with NAME.json.

Masks, per photo (dualpm_addon/masks.py): `--mask FILE` for a single photo; in a batch each
photo NAME.jpg takes DIR/NAME.mask.png with `--mask-dir DIR`, else NAME.mask.png beside it, else
its own alpha channel, else none (the predictor and the segmenter find the animal). NAME.json's
"mask" says which: {"source": "file" | "mask-dir" | "beside" | "alpha" | "none", "path": ...}.
Inputs that are another input's NAME.mask.png (a glob like photos/*.png) are masks, not photos.
A missing, unreadable or wrongly sized mask fails that photo only, with the reason in its JSON.

Several animals in one photo: by default the largest is reconstructed (NAME.json's
"animals_found" says how many the photo holds). With --all-animals each one is, into its own
file set NAME_animal1.* (the largest), NAME_animal2.*, ... (preprocess.predict_animals: each
connected region of the mask, else the segmenter's regions the predictor agrees with), each
NAME_animalK.json with "animal_index" K and "animals_found"; an animal that fails gets its
NAME_animalK.json with the reason, and older NAME_animalK.* beyond this run's count are removed.
One file set per animal, not one .blend holding all: each is one rigged character, the unit an
artist retargets, exports and drops into another scene, and each animal's fit solves its own
camera (focal length and distance), so the animals do not share one measured 3D space
(docs/extension.md).

--fit photo (default) fits the rig to the photo (Q reprojected onto its pixels, the outline;
fitting.fit_to_photo); --fit points fits the predicted 3D points alone (fitting.fit), the fit
before issue 14.

--character character (default) makes the surface the character: the template subdivided,
UV-mapped and carried onto the fitted rig, with the photo's colours baked into its texture
(Principled BSDF in the .blend, a PBR material with the texture embedded in the .glb;
docs/character.md); --character template gives the template's flat-coloured mesh, --character
points no surface, only the point cloud and the rig. --delight auto (default) takes the photo's
light (sky, sun, cast shadows) out of the character's texture where the photo shows a directional
light, on always, off never (docs/character.md, Colours).

A failing photo does not stop the batch. The exit code is the number of photos that failed
(with --all-animals: of failed animal outputs; capped at 125, batch.MAX_EXIT); 0 means every
photo (every animal) made all four files. Bad arguments exit 2 before any photo.

The same functions as the panel run here (reconstruct.gather / run_inference / build_scene,
retarget.retarget_armature, export.export_collection), synchronously: background Blender has no
timers. The inference server is started once for the whole batch, its process spawned before
bpy is imported so that the two start side by side (dualpm_addon/client.py, InferenceClient.spawn).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time

from ._core import core



def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("photos", nargs="+", metavar="PHOTO", help="photos of four-legged animals")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    parser.add_argument("--mask", metavar="FILE", help="mask image for a single photo (white or opaque = animal, "
                        "the photo's size); for several photos use NAME.mask.png beside each, or --mask-dir")
    parser.add_argument("--mask-dir", metavar="DIR", help="folder of per-photo masks: DIR/NAME.mask.png for "
                        "photo NAME.jpg (a photo without one there uses NAME.mask.png beside it, its alpha, or none)")
    parser.add_argument("--all-animals", action="store_true",
                        help="reconstruct every animal in a photo (NAME_animal1.* the largest, NAME_animal2.* ...); "
                        "default: only the largest, into NAME.*")
    parser.add_argument("--fit", choices=("photo", "points"), default="photo",
                        help="photo: fit the rig to the photo's outline and pixels (default); "
                        "points: to the predicted 3D points alone (the older fit)")
    parser.add_argument("--character", choices=("character", "template", "points"), default="character",
                        help="the surface: character: the photo's colours on the character mesh (default); "
                        "template: the template's flat colours; points: no surface, the point cloud and rig")
    parser.add_argument("--delight", choices=("auto", "on", "off"), default="auto",
                        help="the photo's light out of the character's texture: auto: where the photo shows a "
                        "directional light (default); on: always; off: the photo's colours as they are")
    parser.add_argument("--motion", choices=(*core("idle").MOTIONS, "none"), default=core("idle").DEFAULT,
                        help="animate the result with the template's clip layered on the photo's pose "
                        "(frame 1 is the photo's pose): idle (default), walk, gallop, eating; none: no action. "
                        "--bvh replaces it")
    parser.add_argument("--bvh", metavar="FILE", help="retarget this motion capture onto every result")
    parser.add_argument("--server", metavar="URL", help="use a running inference server (ours or Triton)")
    parser.add_argument("--token", metavar="T", help="bearer token for --server")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--model", metavar="FILE", help="ONNX model (default: assets/dualpm.onnx)")
    parser.add_argument("--in-process", action="store_true",
                        help="run ONNX Runtime in this process instead of a server subprocess")


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _atomic_json(path: str, data: dict) -> None:
    core("atomic").write_json(path, data, indent=2, sort_keys=True)


def _remove(paths) -> None:
    for p in paths:
        for q in (p, f"{p}.partial"):
            try:
                os.remove(q)
            except OSError:
                pass


def make_predictor(args):
    err = core("errors").DualPMError
    if args.model and not os.path.isfile(args.model):
        raise err(f"--model {args.model}: no such file")
    if args.server:
        return core("client").InferenceClient(url=args.server, token=args.token)
    if args.in_process:
        from .session import _LazyRunner

        return _LazyRunner(args.model, args.device)
    return core("client").InferenceClient(python=sys.executable, model=args.model, device=args.device)


def _preview(request, rec, animated=None, moved=None) -> "object":
    """[photo | rig over it | cloud from a novel view], and with a character: it through the
    photo's camera, from the side, from behind, and (`animated`: the surface object, when the
    rig has an action: its motion, or a retargeted BVH) posed at the action's middle frame."""
    import numpy as np

    preview = core("preview")
    fit = rec.fit
    m_inv = np.linalg.inv(fit.model_to_camera)
    pts = np.asarray(rec.points["P"], dtype=np.float64) @ m_inv[:3, :3].T + m_inv[:3, 3]
    colours = rec.points.get("colour")
    if colours is None:
        colours = np.full((len(pts), 3), 200, np.uint8)
    g = fit.rest_skeleton.forward_kinematics(fit.rotations)
    tpl = rec.template
    skinned = np.bincount(tpl.skin_joints[tpl.skin_weights > 0], minlength=tpl.skeleton.num_joints) > 0
    segs = preview.skeleton_segments(g[:, :3, 3], fit.rest_skeleton.parents, skinned[: fit.rest_skeleton.num_joints])
    img = preview.render(request.photo.rgb, pts, colours, segs, overlay_vertices=fit.posed_vertices,
                         overlay_faces=fit.faces, overlay_joints=fit.joints, parents=fit.rest_skeleton.parents,
                         overlay_keep=skinned[: fit.rest_skeleton.num_joints], intrinsics=rec.photo_intrinsics)
    if rec.character is None:
        return img
    if moved is None and animated is not None:
        moved = _middle_frame_vertices(animated)
    panels = core("character.preview").panels(rec.character, request.photo.rgb, rec.photo_intrinsics,
                                              fit.model_to_camera, img.shape[0], moved)
    gap = np.zeros((img.shape[0], 4, 3), np.uint8)
    return np.concatenate([img] + [a for p in panels for a in (gap, p)], axis=1)


def _middle_frame_vertices(obj):
    """(V, 3) world (= model space) positions of `obj`'s deformed mesh at the middle frame of its
    armature's action, or None without one; the scene's frame is put back."""
    import bpy
    import numpy as np

    arm = next((m.object for m in obj.modifiers if m.type == "ARMATURE" and m.object is not None), None)
    action = arm.animation_data.action if arm is not None and arm.animation_data else None
    if action is None:
        return None
    scene = bpy.context.scene
    before = scene.frame_current
    start, end = action.frame_range
    try:
        scene.frame_set(int(round(0.5 * (start + end))))
        ev = obj.evaluated_get(bpy.context.evaluated_depsgraph_get())
        mesh = ev.to_mesh()
        co = np.empty(len(mesh.vertices) * 3, np.float32)
        mesh.vertices.foreach_get("co", co)
        ev.to_mesh_clear()
        m = np.array(obj.matrix_world)
        return co.reshape(-1, 3).astype(np.float64) @ m[:3, :3].T + m[:3, 3]
    finally:
        scene.frame_set(before)


def reconstruct_one(context, photo: str, name: str, out_dir: str, predictor, mask: str | None = None,
                    bvh: str | None = None, mask_record: dict | None = None, fit: str = "photo",
                    character: str = "character", delight: str = "auto", motion: str = "idle") -> dict:
    """One photo to its four files; returns the summary written to NAME.json (raises on failure).

    `mask` is the photo's mask file, `mask_record` masks.record of how it was found; without a
    file the photo's alpha is used where it marks something out, and the record (updated in
    place, so a failure's JSON says it too) becomes "alpha" or "none"."""
    from . import reconstruct

    masks = core("masks")
    mask_record = masks.record("file" if mask else "none", mask) if mask_record is None else mask_record
    timings: dict = {}
    motion = "none" if bvh else motion  # the retargeted capture replaces it
    request = _gather(photo, mask, timings, mask_record, fit, character, delight, motion)
    rec = reconstruct.run_inference(request, timings=timings, predictor=predictor)
    return write_outputs(photo, request, rec, name, out_dir, bvh, mask_record)


def reconstruct_animals(photo: str, name: str, out_dir: str, predictor, mask: str | None = None,
                        bvh: str | None = None, mask_record: dict | None = None, fit: str = "photo",
                        character: str = "character", delight: str = "auto", motion: str = "idle") -> list[dict]:
    """--all-animals: every animal of one photo into NAME_animalK.* (K = 1 the largest); returns
    each animal's summary as written to its JSON, failed animals included. Raises when the photo
    itself fails (no animal at all, a bad mask)."""
    from . import reconstruct

    masks = core("masks")
    mask_record = masks.record("file" if mask else "none", mask) if mask_record is None else mask_record
    timings: dict = {}
    motion = "none" if bvh else motion  # the retargeted capture replaces it
    request = _gather(photo, mask, timings, mask_record, fit, character, delight, motion)
    recs = reconstruct.run_inference_all(request, timings=timings, predictor=predictor)
    found = recs[0].animals_found
    out = []
    for rec in recs:
        if out:  # a fresh scene per animal: each file set holds one character
            request = _gather(photo, mask, {}, mask_record, fit, character, delight, motion)
        out.append(write_outputs(photo, request, rec, animal_name(name, rec.animal_index), out_dir, bvh, mask_record))
    for index, e in sorted(request.animal_errors):
        summary = failure(photo, str(e), 0.0, mask_record)
        summary.update(animal_index=index, animals_found=found)
        path = os.path.join(out_dir, f"{animal_name(name, index)}.json")
        _remove([os.path.join(out_dir, f"{animal_name(name, index)}.{ext}") for ext in ("blend", "glb", "png")])
        _atomic_json(path, summary)
        out.append(summary)
    remove_stale_animals(out_dir, name, keep=found)
    return sorted(out, key=lambda s: s["animal_index"])


def animal_name(name: str, index: int) -> str:
    """NAME_animalK: the K-th largest animal's outputs (not NAME_K, which a second photo NAME gets)."""
    return f"{name}_animal{int(index)}"


def remove_stale_animals(out_dir: str, name: str, keep: int) -> None:
    """NAME_animalK.* with K > keep, left by an earlier run that found more animals."""
    import re

    pattern = re.compile(re.escape(name) + r"_animal(\d+)\.(blend|glb|png|json)$")
    for f in os.listdir(out_dir):
        m = pattern.match(f)
        if m and int(m.group(1)) > keep:
            _remove([os.path.join(out_dir, f)])


def _gather(photo: str, mask: str | None, timings: dict, mask_record: dict, fit: str, character: str = "character",
            delight: str = "auto", motion: str = "idle"):
    """An empty scene, then the photo (and mask) decoded as the panel does; `mask_record` says
    which mask was used (updated in place when the photo's alpha is)."""
    import bpy

    from . import reconstruct

    masks = core("masks")
    bpy.ops.wm.read_homefile(use_empty=True)
    request = reconstruct.gather(bpy.context, photo, mask or "", timings, mask_mode="AUTO")
    request.settings["fit"] = fit
    request.settings["character"] = character
    request.settings["delight"] = delight
    request.settings["motion"] = motion
    if not mask:
        mask_record.update(masks.record(request.mask_source, None))
    return request


def write_outputs(photo: str, request, rec, name: str, out_dir: str, bvh: str | None, mask_record: dict) -> dict:
    """The reconstruction's scene, then NAME.blend, NAME.glb, NAME.png and last NAME.json."""
    import bpy
    import numpy as np

    from . import export, reconstruct, retarget

    context = bpy.context
    objects = reconstruct.build_scene(context, request, rec, set_render_resolution=True)
    summary = rec.summary()
    summary["mask"] = dict(mask_record)
    if request.intake:
        summary["intake"] = dict(request.intake)
    # Where the crop was cut (photo pixels): with a mask, the square around it, so it shows the
    # mask was applied and not only found.
    summary.setdefault("crop_box", [round(float(v), 2) for v in rec.crop_box])
    if rec.photo_mask is not None and rec.photo_mask.any():  # which animal of the photo this is
        ys, xs = np.nonzero(rec.photo_mask)
        summary["animal_box"] = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
    if objects.get("motion"):
        summary["motion"] = objects["motion"]
    if bvh:
        t0 = time.perf_counter()
        summary["retarget"] = retarget.retarget_armature(context, objects["armature"], bvh)
        rec.timings["retarget"] = time.perf_counter() - t0
    paths = {ext: os.path.join(out_dir, f"{name}.{ext}") for ext in ("blend", "glb", "png", "json")}

    t0 = time.perf_counter()
    if request.image is not None and request.image.packed_file is None and request.image.filepath:
        request.image.pack()  # the .blend stands on its own
    tmp = paths["blend"] + ".partial"
    bpy.ops.wm.save_as_mainfile(filepath=tmp, copy=True, check_existing=False)
    os.replace(tmp, paths["blend"])
    rec.timings["write_blend"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    animated = bvh or objects.get("motion")
    surface = objects.get("surface") if animated else None
    moved = _middle_frame_vertices(surface) if surface is not None else None
    preview, forked = core("preview"), core("video.forked")

    def png():  # the preview's PNG bytes, drawn from the reconstruction alone (no bpy)
        return np.frombuffer(preview.encode_png(_preview(request, rec, moved=moved)), np.uint8)

    # The preview is numpy, the glTF exporter Python on bpy: a forked copy draws the one while
    # this process writes the other (0.54 -> 0.37 s for the cat; a thread gained nothing, both
    # hold the interpreter's lock). The copy touches neither bpy nor the server's pipes.
    job = forked.Forked(png, "preview: its forked copy") if forked.allowed(forked.PIPE_READERS) else None
    try:
        export.export_collection(context, objects["collection"], paths["glb"])
    except BaseException:
        if job is not None:
            job.kill()
        raise
    rec.timings["write_glb"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    core("atomic").write_bytes(paths["png"], (job.result() if job is not None else png()).tobytes(), "preview")
    rec.timings["write_png"] = time.perf_counter() - t0

    summary["timings_s"] = {k: round(float(v), 4) for k, v in rec.timings.items()}
    summary["outputs"] = {k: os.path.basename(v) for k, v in paths.items()}
    summary["input_file"] = os.path.abspath(photo)
    _atomic_json(paths["json"], summary)
    return summary


def failure(photo: str, reason: str, seconds: float, mask_record: dict | None) -> dict:
    """A failed output's JSON."""
    return {"photo": os.path.basename(photo), "input_file": os.path.abspath(photo), "status": "failed",
            "reason": reason, "seconds": round(seconds, 3), "mask": mask_record, "dualpm_version": _version()}


NEEDS_BLENDER = ("reconstruct needs Blender: install the bpy module (pip install bpy==5.0.1, Python 3.11) "
                 "or run it inside Blender (blender -b --python-expr ..., see docs/extension.md)")


def run(args) -> int:
    err = core("errors").DualPMError
    if "bpy" not in sys.modules and importlib.util.find_spec("bpy") is None:
        raise err(NEEDS_BLENDER)
    masks = core("masks")
    mask_dir = args.mask_dir
    photos, skipped = masks.split_masks(args.photos)
    # A missing --mask FILE is that photo's error, reported in its JSON (masks.find).
    masks.check_arguments(photos, args.mask, mask_dir)
    if args.bvh and not os.path.isfile(args.bvh):
        raise err(f"{args.bvh}: no such file")
    if args.token and not args.server:
        raise err("--token needs --server")
    os.makedirs(args.out, exist_ok=True)
    for p in skipped:
        _say(f"{p}: a mask ({masks.SUFFIX} of another input), not reconstructed as a photo")
    names = core("batch").output_names(photos, "photo")
    predictor = make_predictor(args)
    failed = outputs = 0  # outputs: file sets (one per photo, or per animal with --all-animals)
    try:
        # The server's process starts (0.4-0.9 s: Python, ONNX Runtime, the model) on the other
        # core while bpy imports (~1 s) here; its handshake waits for the first photo. Nothing
        # runs in a thread meanwhile (dualpm_addon/client.py says why).
        spawn = getattr(predictor, "spawn", None)
        if spawn is not None:
            spawn()
        try:
            import bpy  # noqa: F401
        except ImportError:
            raise err(NEEDS_BLENDER) from None
        for i, (photo, name) in enumerate(zip(photos, names), 1):
            t0 = time.perf_counter()
            _say(f"[{i}/{len(names)}] {photo}")
            source, mask_path = masks.find(photo, mask_dir, args.mask)
            mask_record = masks.record(source, mask_path)
            try:
                if args.all_animals:
                    summaries = reconstruct_animals(photo, name, args.out, predictor, mask_path, args.bvh,
                                                    mask_record=mask_record, fit=args.fit, character=args.character,
                                                    delight=args.delight, motion=args.motion)
                else:
                    summaries = [reconstruct_one(None, photo, name, args.out, predictor, mask_path, args.bvh,
                                                 mask_record=mask_record, fit=args.fit, character=args.character,
                                                 delight=args.delight, motion=args.motion)]
                outputs += len(summaries)
                for summary in summaries:
                    label = animal_name(name, summary["animal_index"]) if args.all_animals else name
                    if summary["status"] != "ok":
                        failed += 1
                        _say(f"[{i}/{len(names)}] {label}: FAILED: {summary['reason']}")
                        continue
                    t = summary["timings_s"]
                    m = summary["mask"]
                    turned = core("intake").describe(summary.get("intake") or {})
                    _say(f"[{i}/{len(names)}] {label}: ok, animal {summary['animal_index']} of "
                         f"{summary['animals_found']}, mask {m['source']}"
                         f"{' ' + os.path.basename(m['path']) if m['path'] else ''}, "
                         f"{turned + ', ' if turned else ''}{summary['points_kept']} points, "
                         f"{summary['bones_fitted']} bones fitted, residual {summary['fit_residual_rms_m'] * 100:.1f} cm; " +
                         ", ".join(f"{k} {t[k]:.2f} s" for k in ("load", "inference", "fit", "import") if k in t))
            except KeyboardInterrupt:
                raise
            except BaseException as e:  # noqa: BLE001 - one photo's failure must not stop the batch
                failed += 1
                outputs += 1
                reason = str(e) if isinstance(e, err) else f"unexpected {type(e).__name__}: {' '.join(str(e).split())}"
                if not isinstance(e, err):
                    import traceback

                    traceback.print_exc()
                summary = failure(photo, reason, time.perf_counter() - t0, mask_record)
                if args.all_animals:  # no animal at all: NAME_animal1.json says why
                    remove_stale_animals(args.out, name, keep=0)
                    name = animal_name(name, 1)
                    summary.update(animal_index=1, animals_found=0)
                paths = [os.path.join(args.out, f"{name}.{ext}") for ext in ("blend", "glb", "png")]
                _remove(paths)
                _atomic_json(os.path.join(args.out, f"{name}.json"), summary)
                _say(f"[{i}/{len(names)}] {name}: FAILED: {reason}")
    finally:
        close = getattr(predictor, "close", None)
        if close is not None:
            close()
    if args.all_animals:
        _say(f"{outputs - failed} of {outputs} animals of {len(names)} photos reconstructed into {args.out}")
    else:
        _say(f"{len(names) - failed} of {len(names)} photos reconstructed into {args.out}")
    return core("batch").exit_code(failed)


def _version() -> str:
    from ._core import package

    return package().__version__


def main(argv=None) -> int:
    """Entry point for `blender -b --python-expr`: parse argv, run, return the exit code."""
    parser = argparse.ArgumentParser(prog="dualpm reconstruct", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except core("errors").DualPMError as e:
        print(f"dualpm reconstruct: error: {e}", file=sys.stderr)
        return 2
