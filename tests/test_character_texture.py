"""The bake (dualpm_addon/character/texture.py) on the real character mesh: a photo rendered from a
known texture (character/preview.py) bakes back into that texture; bad photos give a usable
texture or a one-line reason."""

import numpy as np
import pytest

from dualpm_addon import camera, pipeline
from dualpm_addon.character import light, load_character, raster, texture
from dualpm_addon.character import preview as cpreview
from dualpm_addon.errors import DualPMError

RED = (255, 0, 0)


@pytest.fixture(scope="module")
def scene(horse):
    """The character seen side-on from its left, a known texture, and the photo it makes."""
    mesh = load_character(horse)
    tm = texture.texel_map(mesh.uv, mesh.faces, 256)
    c = tm.points(mesh.canonical, mesh.faces)
    # Symmetric in x, smooth, never pure red: the background's colour cannot pass for it.
    lin = np.stack([0.5 + 0.4 * np.sin(3 * c[:, 1]), 0.5 + 0.4 * np.cos(4 * c[:, 2]), 0.3 + 1.5 * np.abs(c[:, 0])], 1)
    img = np.zeros((256 * 256, 3), np.uint8)
    img[tm.pixel] = texture.linear_to_srgb8(np.clip(lin, 0, 1))
    filled = np.zeros(256 * 256, bool)
    filled[tm.pixel] = True
    truth = texture._gutter(img.reshape(256, 256, 3), filled.reshape(256, 256))
    centre = 0.5 * (mesh.vertices.min(0) + mesh.vertices.max(0))
    w2c = camera.look_at(centre + np.array([4.5, -0.8, 0.5]), centre)
    v = mesh.vertices @ w2c[:3, :3].T + w2c[:3, 3]
    k = camera.intrinsics_from_focal_mm(50.0, 320, 240)
    photo, mask = cpreview.render(v, mesh.faces, mesh.uv, truth, k, (240, 320), background=np.array(RED), shade=False)
    return dict(mesh=mesh, tm=tm, truth=truth, v=v, k=k, photo=photo, mask=mask)


def _error(tex, truth, tm, source):
    sel = tex.source.reshape(-1)[tm.pixel] == source
    a = tex.image.reshape(-1, 3)[tm.pixel][sel].astype(float)
    b = truth.reshape(-1, 3)[tm.pixel][sel].astype(float)
    return float(np.abs(a - b).mean() / 255), int(sel.sum())


def _bake(s, photo=None, mask="same", k=None, **kw):
    m = s["mesh"]
    return texture.bake(s["v"], m.faces, m.uv, m.canonical, s["photo"] if photo is None else photo,
                        s["k"] if k is None else k, s["mask"] if isinstance(mask, str) else mask, texels=s["tm"],
                        mirrored_atlas=True, **kw)


def test_texel_map_covers_a_full_square_once():
    uv = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], float)
    tm = texture.texel_map(uv, np.array([[0, 1, 2], [0, 2, 3]]), 16)
    assert len(tm.pixel) == 256 and len(np.unique(tm.pixel)) == 256
    assert np.allclose(tm.bary.sum(1), 1.0) and tm.bary.min() >= -1e-6


def test_zbuffer_depth_of_a_plane_facing_the_camera():
    v = np.array([[-1, -1, 2.0], [1, -1, 2.0], [1, 1, 2.0], [-1, 1, 2.0], [-1, -1, 3.0], [1, -1, 3.0], [1, 1, 3.0]])
    k = camera.intrinsics_from_focal_mm(50.0, 64, 64)
    depth, face, bary = raster.zbuffer(v, np.array([[4, 5, 6], [0, 1, 2], [0, 2, 3]]), k, (64, 64))
    hit = face >= 0
    assert hit.mean() > 0.3
    assert np.allclose(depth[hit], 2.0)  # the near plane hides the far triangle
    assert set(np.unique(face[hit])) <= {1, 2}
    assert np.allclose(bary[hit].sum(-1), 1.0)


def test_bake_returns_the_texture_the_photo_was_rendered_from(scene):
    tex = _bake(scene)
    assert tex.image.shape == (256, 256, 3) and tex.image.dtype == np.uint8
    on = tex.source.reshape(-1)[scene["tm"].pixel]
    assert not np.any(on == texture.NONE)
    photo_err, n_photo = _error(tex, scene["truth"], scene["tm"], texture.PHOTO)
    mirror_err, n_mirror = _error(tex, scene["truth"], scene["tm"], texture.MIRROR)
    assert n_photo > 0.2 * len(on) and n_mirror > 0.2 * len(on)
    assert photo_err < 0.04, photo_err
    assert mirror_err < 0.06, mirror_err
    # No background: nothing in the atlas is the photo's red.
    img = tex.image.reshape(-1, 3).astype(int)
    assert not np.any((img[:, 0] > 200) & (img[:, 1] < 60) & (img[:, 2] < 60))
    assert 0 < tex.figures["seconds"] < 30


def test_without_a_mask_the_mesh_outline_keeps_the_background_out(scene):
    tex = _bake(scene, mask=None)
    img = tex.image.reshape(-1, 3).astype(int)
    assert not np.any((img[:, 0] > 200) & (img[:, 1] < 60) & (img[:, 2] < 60))


def test_a_greyscale_photo_bakes_a_grey_texture(scene):
    grey = scene["photo"].mean(axis=2).astype(np.uint8)
    tex = _bake(scene, photo=grey)
    assert np.abs(tex.image.astype(int) - tex.image[..., :1].astype(int)).max() <= 1
    assert tex.figures["photo"] > 0.2


def test_an_animal_cut_by_the_frame_edge_still_bakes(scene):
    k = scene["k"].copy()
    k[0, 2] -= 110  # the animal's front runs off the left edge
    uv = camera.project(scene["v"], k)
    assert (uv[:, 0] < 0).mean() > 0.2
    photo, mask = cpreview.render(scene["v"], scene["mesh"].faces, scene["mesh"].uv, scene["truth"], k, (240, 320),
                                  background=np.array(RED), shade=False)
    tex = _bake(scene, photo=photo, mask=mask, k=k)
    full = _bake(scene)
    assert 0 < tex.figures["photo"] < full.figures["photo"]
    err, _ = _error(tex, scene["truth"], scene["tm"], texture.PHOTO)
    assert err < 0.04
    assert not np.any(tex.source.reshape(-1)[scene["tm"].pixel] == texture.NONE)


def test_a_mask_covering_almost_nothing_gives_the_template_colours_and_says_why(scene):
    tiny = np.zeros_like(scene["mask"])
    ys, xs = np.nonzero(scene["mask"])
    tiny[ys[0], xs[0]] = True
    m = scene["mesh"]
    flat = np.asarray(m.material_colors)[m.face_material]
    tex = _bake(scene, mask=tiny, fallback_colours=flat)
    assert "template's colours" in tex.figures["note"]
    assert np.all(tex.source.reshape(-1)[scene["tm"].pixel] == texture.FLAT)
    with pytest.raises(DualPMError) as e:
        _bake(scene, mask=tiny)
    assert "\n" not in str(e.value) and "mask" in str(e.value)


def test_bad_arrays_are_one_line_errors(scene):
    m = scene["mesh"]
    with pytest.raises(DualPMError, match="photo has shape"):
        texture.bake(scene["v"], m.faces, m.uv, m.canonical, np.zeros((4, 4, 3), np.float32), scene["k"])
    with pytest.raises(DualPMError, match="mask is"):
        texture.bake(scene["v"], m.faces, m.uv, m.canonical, scene["photo"], scene["k"], np.ones((3, 3), bool))


def test_an_unknown_look_is_refused_before_any_work():
    with pytest.raises(DualPMError, match="unknown look 'shiny'"):
        pipeline.from_pointmap({}, pipeline.PhotoInput(np.zeros((4, 4, 3), np.uint8), None, None, "x.png"),
                               settings=pipeline.Settings(character="shiny"))


def test_the_shading_fit_takes_the_light_out_and_leaves_the_coat():
    rng = np.random.default_rng(0)
    n = rng.normal(size=(5000, 3))
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    n = np.where(n[:, 2:3] > 0, -n, n)  # the seen side faces the camera, which looks along +z
    ray = np.broadcast_to([0.0, 0.0, 1.0], n.shape)
    light = np.exp(0.6 * n[:, 0] - 0.3 * n[:, 1])
    light /= light.mean()
    albedo = rng.uniform(0.1, 0.6, (5000, 1)) * np.array([1.0, 0.8, 0.6])
    s = texture._shading(albedo * light[:, None], n, ray, np.ones(5000))
    ratio = s / light
    assert np.std(np.log(ratio)) < 0.05  # the shading is recovered up to one overall factor
    flat = texture._shading(albedo, n, ray, np.ones(5000))
    assert np.abs(np.log(flat)).max() < 0.1  # no light, no correction


def test_delight_is_an_option_and_keeps_the_texture_complete(scene):
    tex = _bake(scene, delight=True)
    assert not np.any(tex.source.reshape(-1)[scene["tm"].pixel] == texture.NONE)
    err, _ = _error(tex, scene["truth"], scene["tm"], texture.PHOTO)
    assert err < 0.08  # the known texture carries no light; its colour/normal correlation costs a little


def test_the_preview_z_buffers_only_the_faces_that_look_at_the_camera(scene):
    mesh, v, k = scene["mesh"], scene["v"], scene["k"]
    front = cpreview.facing(v, mesh.faces)
    assert 0.3 * len(mesh.faces) < len(front) < 0.7 * len(mesh.faces)
    _, every, _ = raster.zbuffer(v, mesh.faces, k, (240, 320))
    _, culled, _ = raster.zbuffer(v, mesh.faces[front], k, (240, 320))
    assert np.array_equal(every >= 0, culled >= 0)  # the same pixels covered
    culled = np.where(culled >= 0, front[np.maximum(culled, 0)], -1)
    assert (culled != every).mean() < 1e-3  # by the same faces, but for ties on shared edges
    assert np.array_equal(cpreview.render(v, mesh.faces, mesh.uv, scene["truth"], k, (240, 320))[1], every >= 0)
    sheet = np.array([[0, 0, 1.0], [1, 0, 1], [0, 1, 1]])  # open: either side is seen
    for f in ([[0, 1, 2]], [[0, 2, 1]]):
        assert list(cpreview.facing(sheet, np.array(f))) == [0]


ALBEDO = np.array([0.55, 0.45, 0.35])


@pytest.fixture(scope="module")
def sunlit(scene):
    """The side-on character with one flat albedo, photographed under a sun (Lambert, a dim
    sky, cast shadows found by Embree ray casts towards the sun, not by the bake's own shadow
    map) and under even light."""
    import trimesh

    mesh, v, k = scene["mesh"], scene["v"], scene["k"]
    depth, face, bary = raster.zbuffer(v, mesh.faces, k, (240, 320))
    hit = face >= 0
    f = mesh.faces[face[hit]]
    n = np.einsum("nk,nkd->nd", bary[hit], texture._vertex_normals(v, mesh.faces)[f])
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    p = np.einsum("nk,nkd->nd", bary[hit], v[f])
    n = np.where((np.sum(n * p, axis=1) > 0)[:, None], -n, n)
    sun = np.array([-0.444, -0.761, -0.472])  # above, in front and to the side of the camera
    sun /= np.linalg.norm(sun)
    caster = trimesh.Trimesh(v, mesh.faces, process=False)

    def shadowed(points, normals):
        return caster.ray.intersects_any(points + 2e-3 * normals, np.broadcast_to(sun, points.shape))

    ndl = np.maximum(n @ sun, 0.0)
    out = {"sun": sun, "shadowed": shadowed, "mask": hit}
    for name, shade in (("sun", 0.25 + ndl * ~shadowed(p, n)), ("even", np.ones(len(n)))):
        lin = np.zeros((240, 320, 3))
        lin[:] = [1.0, 0.0, 0.0]
        lin[hit] = ALBEDO * (0.9 * shade / shade.max())[:, None]
        out[f"{name}_photo"] = texture.linear_to_srgb8(lin)
    return out


def _photo_luminance(tex, tm):
    sel = tex.source.reshape(-1)[tm.pixel] == texture.PHOTO
    lin = texture.srgb_to_linear(tex.image.reshape(-1, 3)[tm.pixel] / 255.0)
    return lin @ light.LUMA, sel


def test_delight_takes_out_a_sun_and_its_cast_shadows(scene, sunlit):
    tm, m = scene["tm"], scene["mesh"]
    raw = _bake(scene, photo=sunlit["sun_photo"], mask=sunlit["mask"])
    first = _bake(scene, photo=sunlit["sun_photo"], mask=sunlit["mask"], delight="first-order")
    tex = _bake(scene, photo=sunlit["sun_photo"], mask=sunlit["mask"], delight="on")
    fitted = tex.figures["light"]
    assert fitted["applied"] and np.dot(fitted["sun_direction"], sunlit["sun"]) > 0.95
    # The albedo is one colour: its log luminance over the photo's texels should be flat.
    spread = {}
    for name, t in (("raw", raw), ("first", first), ("on", tex)):
        y, sel = _photo_luminance(t, tm)
        spread[name] = float(np.percentile(np.log(y[sel]), 95) - np.percentile(np.log(y[sel]), 5))
    assert spread["raw"] > 1.0 and spread["on"] < 0.25 and spread["on"] < 0.5 * spread["first"], spread
    # Texels facing the sun but in a cast shadow (by ray casts) come back as bright as the lit ones.
    y_raw, sel = _photo_luminance(raw, tm)
    y_on, _ = _photo_luminance(tex, tm)
    p = tm.points(scene["v"], m.faces)[sel]
    n = tm.points(texture._vertex_normals(scene["v"], m.faces), m.faces)[sel]
    n = np.where((np.sum(n * p, axis=1) > 0)[:, None], -n, n)
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    facing = (n @ sunlit["sun"]) > 0.3
    cast = facing & sunlit["shadowed"](p, n)
    lit = facing & ~cast
    assert cast.sum() > 200
    before = np.median(y_raw[sel][cast]) / np.median(y_raw[sel][lit])
    after = np.median(y_on[sel][cast]) / np.median(y_on[sel][lit])
    assert before < 0.4 and 0.8 < after < 1.25, (before, after)
    assert fitted["shadowed"] > 0.02


def test_auto_leaves_an_evenly_lit_photo_as_it_is_and_takes_out_the_sun(scene, sunlit):
    off = _bake(scene, photo=sunlit["even_photo"], mask=sunlit["mask"])
    auto = _bake(scene, photo=sunlit["even_photo"], mask=sunlit["mask"], delight="auto")
    assert auto.figures["light"]["applied"] is False and "light" not in off.figures
    assert np.abs(auto.image.astype(int) - off.image.astype(int)).max() <= 1
    sunny = _bake(scene, photo=sunlit["sun_photo"], mask=sunlit["mask"], delight="auto")
    assert sunny.figures["light"]["applied"] is True
    assert sunny.figures["light"]["first_spread"] >= texture.AUTO_SPREAD > auto.figures["light"]["first_spread"]


def test_an_unknown_delight_is_refused_before_any_work():
    with pytest.raises(DualPMError, match="unknown delight 'sideways'"):
        pipeline.from_pointmap({}, pipeline.PhotoInput(np.zeros((4, 4, 3), np.uint8), None, None, "x.png"),
                               settings=pipeline.Settings(delight="sideways"))
    with pytest.raises(DualPMError, match="unknown delight"):
        texture.bake(np.zeros((3, 3)), np.array([[0, 1, 2]]), np.zeros((3, 2)), np.zeros((3, 3)),
                     np.zeros((4, 4, 3), np.uint8), np.eye(3), delight="sideways")


def test_the_shadow_map_finds_what_a_box_shades_below_it():
    # A floor (two triangles at z = 0) and a small box above its middle; light straight down.
    floor = np.array([[-2, -2, 0], [2, -2, 0], [2, 2, 0], [-2, 2, 0.0]])
    box = np.array([[x, y, z] for z in (1.0, 1.5) for y in (-0.5, 0.5) for x in (-0.5, 0.5)])
    v = np.concatenate([floor, box])
    f = [[0, 1, 2], [0, 2, 3]]
    b = 4  # the box's faces, outward: bottom, top and the four sides
    quads = [(0, 2, 3, 1), (4, 5, 7, 6), (0, 1, 5, 4), (2, 6, 7, 3), (0, 4, 6, 2), (1, 3, 7, 5)]
    for q in quads:
        q = [b + i for i in q]
        f += [[q[0], q[1], q[2]], [q[0], q[2], q[3]]]
    f = np.array(f)
    pts = np.array([[0.0, 0.0, 0.0], [0.3, -0.2, 0.0], [1.5, 1.5, 0.0], [-1.2, 0.0, 0.0], [0.0, 0.0, 1.5]])
    got = light.lit(pts, v, f, np.array([0.0, 0.0, 1.0]))
    assert got.tolist() == [False, False, True, True, True]
    # A sun from (1, 0, 1) moves the shadow to x in [-2, -0.5] and frees the floor below the box.
    slanted = light.lit(np.array([[-1.2, 0.0, 0.0], [0.0, 0.0, 0.0], [1.25, 0.0, 0.0]]), v, f,
                        np.array([1.0, 0.0, 1.0]) / 2 ** 0.5)
    assert slanted.tolist() == [False, True, True]


def test_the_delight_setting_reaches_the_bake(horse):
    from tests import fit_fixtures as fx

    pm = fx.to_point_map(fx.sample_scene(horse, clip="Eating", frame=20, seed=8, size=64), size=64, layers=4)
    pm["confidence"] = np.where(pm["occupancy"] > 0, 3.0, 1.0).astype(np.float32)
    pm["crop_box"] = np.array([0, 0, 64, 64], np.float32)
    rgb = np.full((64, 64, 3), 128, np.uint8)
    photo = pipeline.PhotoInput(rgb, None, None, "horse.png")
    rec = pipeline.from_pointmap(pm, photo, template=horse, settings=pipeline.Settings(shape=False))
    assert rec.settings["delight"] == "auto"
    assert rec.character.figures["texture"]["light"]["mode"] == "auto"
    assert rec.character.figures["texture"]["light"]["applied"] is False  # a flat grey photo has no light
    rec = pipeline.from_pointmap(pm, photo, template=horse, settings=pipeline.Settings(shape=False, delight="off"))
    assert "light" not in rec.character.figures["texture"]


def test_dualpm_reconstruct_takes_delight_auto_on_off():
    import argparse

    from operators import headless

    parser = argparse.ArgumentParser()
    headless.add_arguments(parser)
    assert parser.parse_args(["a.png", "--out", "o"]).delight == "auto"
    assert parser.parse_args(["a.png", "--out", "o", "--delight", "off"]).delight == "off"
    with pytest.raises(SystemExit) as e:
        parser.parse_args(["a.png", "--out", "o", "--delight", "sideways"])
    assert e.value.code == 2
