"""The bake (dualpm_addon/character/texture.py) on the real character mesh: a photo rendered from a
known texture (character/preview.py) bakes back into that texture; bad photos give a usable
texture or a one-line reason."""

import numpy as np
import pytest

from dualpm_addon import camera, pipeline
from dualpm_addon.character import load_character, raster, texture
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
