"""The "Animate from Video" operator in a real bpy process (5.0 or 4.2), with the extension
enabled from the working tree (a local extension repository linking it, as a developer installs
it), ONNX Runtime in process and the shipped model.

    python tests/video_operator_scenario.py OUT.json VIDEO BROKEN_VIDEO [--modal] [--headless OUTDIR]

Background mode runs the operator synchronously (execute); with --modal the modal steps are
driven as the 0.1 s timer would (video.VideoRun: start, tick, cancel); --headless runs
operators/animate_headless.main inside Blender. Writes what it saw as JSON.
"""

import json
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def enable():
    import bpy

    repo_dir = tempfile.mkdtemp(prefix="dualpm-devrepo-")
    os.symlink(ROOT, os.path.join(repo_dir, "dualpm"))
    bpy.ops.preferences.extension_repo_add(name="dev", type="LOCAL", use_custom_directory=True,
                                           custom_directory=repo_dir)
    module = [r.module for r in bpy.context.preferences.extensions.repos if r.directory == repo_dir][0]
    addon = f"bl_ext.{module}.dualpm"
    assert bpy.ops.preferences.addon_enable(module=addon) == {"FINISHED"}
    prefs = bpy.context.preferences.addons[addon].preferences
    prefs.inference = "IN_PROCESS"
    return addon


def collection_info(col):
    import bpy

    import importlib

    roles = {o.get("dualpm_role"): o for o in col.objects}
    arm, cam = roles["armature"], roles["camera"]
    action = arm.animation_data.action
    bg = cam.data.background_images[0] if len(cam.data.background_images) else None
    return {"roles": sorted(roles), "bones": len(arm.data.bones),
            "action_range": [float(v) for v in action.frame_range],
            "scene_range": [bpy.context.scene.frame_start, bpy.context.scene.frame_end],
            "fps": bpy.context.scene.render.fps / bpy.context.scene.render.fps_base,
            "background": None if bg is None else {"source": bg.image.source, "frames": bg.image_user.frame_duration,
                                                   "path": bg.image.filepath},
            "surface_modifiers": [m.type for m in roles["surface"].modifiers],
            "slotted": importlib.import_module(f"{ADDON}.operators.animation").is_slotted(action)}


def scenario_sync(video: str, broken: str) -> dict:
    import bpy

    before = set(bpy.data.collections.keys())
    t = time.perf_counter()
    result = bpy.ops.dualpm.animate_video(filepath=video)
    seconds = time.perf_counter() - t
    new = sorted(set(bpy.data.collections.keys()) - before)
    out = {"result": sorted(result), "seconds": seconds, "collections": new,
           "info": collection_info(bpy.data.collections[new[0]]) if len(new) == 1 else None}
    before = set(bpy.data.collections.keys())
    try:
        bpy.ops.dualpm.animate_video(filepath=broken)
        out["broken"] = {"raised": False}
    except RuntimeError as e:  # bpy.ops turns the operator's ERROR report into this
        out["broken"] = {"raised": True, "text": str(e).strip(),
                         "panel_message": bpy.context.window_manager.dualpm_status.message,
                         "new_collections": sorted(set(bpy.data.collections.keys()) - before)}
    return out


def scenario_modal(video: str) -> dict:
    import importlib

    import bpy

    mod = importlib.import_module(f"{ADDON}.operators.video")
    wm = bpy.context.window_manager
    cols = set(bpy.data.collections.keys())
    run = mod.VideoRun(bpy.context, video)
    run.start(bpy.context)
    poll_while_running = bpy.ops.dualpm.animate_video.poll()
    ticks, worst, stages, progress, texts = 0, 0.0, [], [], []
    changed_early = False
    t0 = time.perf_counter()
    while True:
        t = time.perf_counter()
        state = run.tick(bpy.context)
        dt = time.perf_counter() - t
        ticks += 1
        if state == "FINISHED":
            break
        worst = max(worst, dt)
        stages.append(wm.dualpm_status.stage)
        progress.append(wm.dualpm_status.progress)
        changed_early |= set(bpy.data.collections.keys()) != cols
        if time.perf_counter() - t0 > 240:
            raise SystemExit("the worker never finished")
        time.sleep(0.1)
    new = sorted(set(bpy.data.collections.keys()) - cols)

    # A second run cancelled midway leaves nothing behind.
    cols2 = set(bpy.data.collections.keys())
    run2 = mod.VideoRun(bpy.context, video)
    run2.start(bpy.context)
    while run2.job.progress()[0] in ("queued", "decode"):
        run2.tick(bpy.context)
        time.sleep(0.05)
    t = time.perf_counter()
    run2.cancel(bpy.context)
    ended = run2.job.wait(30.0)
    cancel_s = time.perf_counter() - t
    return {"ticks": ticks, "worst_tick_s": worst, "stages": sorted(set(stages)),
            "progress_sorted": progress == sorted(progress), "changed_before_last_tick": changed_early,
            "poll_while_running": poll_while_running, "collections": new,
            "info": collection_info(bpy.data.collections[new[0]]) if len(new) == 1 else None,
            "cancel_ended": ended, "cancel_s": cancel_s,
            "cancel_error": type(run2.job.error).__name__ if run2.job.error else None,
            "after_cancel_new_collections": sorted(set(bpy.data.collections.keys()) - cols2),
            "running_after_cancel": wm.dualpm_status.running}


ADDON = None


def main(argv):
    global ADDON
    import bpy

    out, video, broken = argv[:3]
    ADDON = enable()
    report = {"blender": bpy.app.version_string, "sync": scenario_sync(video, broken)}
    if "--modal" in argv:
        report["modal"] = scenario_modal(video)
    if "--headless" in argv:  # the command inside Blender, as `blender -b --python-expr` runs it
        import importlib

        out_dir = argv[argv.index("--headless") + 1]
        mod = importlib.import_module(f"{ADDON}.operators.animate_headless")
        report["headless"] = {"exit": mod.main([video, "--out", out_dir, "--no-preview"]),
                              "broken_exit": mod.main([broken, "--out", out_dir])}
    with open(out, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1, default=str)


if __name__ == "__main__":
    main(sys.argv[1:])
