"""dualpm_addon.silhouette: coverage of projected triangles, mask outlines."""

import numpy as np
import pytest

from dualpm_addon import camera, metrics, silhouette
from dualpm_addon.errors import DualPMError

K = np.array([[100.0, 0.0, 50.0], [0.0, 100.0, 50.0], [0.0, 0.0, 1.0]])


def _square(corners_uv, z=2.0, k=K):
    """Two triangles whose corners project to corners_uv (4, 2), at depth z."""
    uv = np.asarray(corners_uv, np.float64)
    x = (uv[:, 0] - k[0, 2]) / k[0, 0] * z
    y = (uv[:, 1] - k[1, 2]) / k[1, 1] * z
    v = np.stack([x, y, np.full(4, z)], axis=1)
    return v, np.array([[0, 1, 2], [0, 2, 3]])


def _inside_convex(uv, corners):
    """Signed distances of points uv (N, 2) to the edges of a counter-clockwise (in u, v) polygon."""
    c = np.asarray(corners, np.float64)
    d = []
    for a, b in zip(c, np.roll(c, -1, axis=0)):
        e = b - a
        n = np.array([e[1], -e[0]]) / np.linalg.norm(e)
        d.append((uv - a) @ n)
    return np.stack(d, 1)


@pytest.mark.parametrize("corners", [
    [(20.3, 30.7), (20.3, 71.2), (61.9, 71.2), (61.9, 30.7)],  # axis-aligned, off the pixel grid
    [(50.0, 12.3), (13.1, 49.0), (50.0, 85.7), (86.9, 49.0)],  # rotated 45 degrees
])
def test_a_square_covers_its_area_and_exactly_the_centres_inside_it(corners):
    v, f = _square(corners)
    m = silhouette.rasterize(v, f, K, (100, 100))
    c = np.asarray(corners)
    area = 0.5 * abs(np.dot(c[:, 0], np.roll(c[:, 1], 1)) - np.dot(c[:, 1], np.roll(c[:, 0], 1)))
    perimeter = np.linalg.norm(c - np.roll(c, 1, axis=0), axis=1).sum()
    assert abs(m.sum() - area) < 0.25 * perimeter  # grid error along the edges only
    # Pixel by pixel: every centre inside by more than a hair is covered, none outside is.
    d = _inside_convex(camera.pixel_centers(100, 100).reshape(-1, 2), c).reshape(100, 100, 4)
    sign = np.sign(d[..., 0].sum())  # the corners' orientation
    inside, outside = np.all(sign * d > 1e-6, -1), np.any(sign * d < -1e-6, -1)
    assert np.all(m[inside]) and not np.any(m[outside])


def test_depth_scales_the_silhouette_and_the_image_clips_it():
    v, f = _square([(40, 40), (40, 60), (60, 60), (60, 40)])
    near = silhouette.rasterize(v * [1, 1, 0.5], f, K, (100, 100))  # half as far: twice as wide
    assert near.sum() == 40 * 40 and silhouette.rasterize(v, f, K, (100, 100)).sum() == 20 * 20
    # The same square shifted half out of the image keeps only the pixels inside it.
    shifted = v + np.array([-0.4, 0.0, 0.0])  # 40 px left at half the depth: u -10..30
    m = silhouette.rasterize(shifted * [1, 1, 0.5], f, K, (100, 100))
    assert m.sum() == 40 * 30 and m[:, :30].all(axis=1).sum() == 40 and not m[:, 30:].any()


def test_triangles_behind_the_camera_are_skipped():
    v, f = _square([(40, 40), (40, 60), (60, 60), (60, 40)])
    assert not silhouette.rasterize(v * [1, 1, -1], f, K, (100, 100)).any()
    whole = silhouette.rasterize(v, f, K, (100, 100))
    bent = v.copy()
    bent[1, 2] = 0.0  # a corner on the camera plane drops its triangle; the other stays
    m = silhouette.rasterize(bent, f, K, (100, 100))
    assert 0.4 * whole.sum() < m.sum() < 0.6 * whole.sum() and not np.any(m & ~whole)
    nan = v.copy()
    nan[3] = np.nan  # a non-finite corner: the same for the other triangle
    other = silhouette.rasterize(nan, f, K, (100, 100))
    assert 0.4 * whole.sum() < other.sum() < 0.6 * whole.sum() and np.all((m | other)[whole])
    assert not silhouette.rasterize(v, np.zeros((0, 3), np.int64), K, (100, 100)).any()


def _splat(points, k, size):
    uv = np.floor(camera.project(points, k)).astype(np.int64)
    ok = (uv[:, 0] >= 0) & (uv[:, 0] < size[1]) & (uv[:, 1] >= 0) & (uv[:, 1] < size[0])
    m = np.zeros(size, bool)
    m[uv[ok, 1], uv[ok, 0]] = True
    return m


def _cube():
    v = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], np.float64) * 0.5
    faces = []
    for axis in range(3):
        for side in (0, 1):
            quad = [i for i in range(8) if (i >> (2 - axis)) & 1 == side]
            a, b, c, d = quad[0], quad[1], quad[3], quad[2]  # around the face
            faces += [[a, b, c], [a, c, d]]
    return v, np.array(faces)


@pytest.mark.parametrize("mesh", ["cube", "template"])
def test_a_closed_mesh_matches_a_dense_point_splat_of_its_surface(mesh, horse):
    if mesh == "cube":
        v, f = _cube()
        eye, target = np.array([2.0, -2.5, 1.5]), np.zeros(3)
    else:
        v, f = horse.vertices.astype(np.float64), np.asarray(horse.faces)
        target = 0.5 * (v.min(0) + v.max(0))
        eye = target + np.array([5.0, -3.0, 1.0])
    w2c = camera.look_at(eye, target)
    cam = v @ w2c[:3, :3].T + w2c[:3, 3]
    size = (240, 320)
    k = camera.intrinsics_from_focal_mm(50.0, size[1], size[0])
    m = silhouette.rasterize(cam, f, k, size)
    splat = _splat(metrics.surface_samples(cam, f, 600_000), k, size)
    assert m.sum() > 2000
    # The splat marks every pixel the surface touches, the raster those whose centre it covers:
    # they differ along the one-pixel edge ring, and where a part (an ear tip) is thinner than a
    # pixel, or the splat left a pixel empty.
    assert silhouette.iou(m, splat) > 0.9
    assert (m & ~splat).sum() <= 0.002 * m.sum()
    p = np.pad(m, 1)
    grown = p[1:-1, 1:-1] | p[:-2, 1:-1] | p[2:, 1:-1] | p[1:-1, :-2] | p[1:-1, 2:]
    assert (splat & ~grown).sum() <= 0.002 * m.sum()  # misses lie next to the silhouette


def test_skew_is_honoured():
    v, f = _square([(40, 40), (40, 60), (60, 60), (60, 40)])
    skew = K.copy()
    skew[0, 1] = 100.0  # u += v': the square becomes a parallelogram leaning right with depth y
    m = silhouette.rasterize(v, f, skew, (100, 100))
    rows = np.nonzero(m.any(axis=1))[0]
    first = [np.nonzero(m[r])[0][0] for r in rows]
    assert first[-1] - first[0] > 15 and abs(m.sum() - 400) < 40


def test_bad_input_is_a_one_line_error():
    v, f = _square([(40, 40), (40, 60), (60, 60), (60, 40)])
    for args, word in [((v[:, :2], f, K, (9, 9)), "vertices"), ((v, f[:, :2], K, (9, 9)), "faces"),
                       ((v, f + 4, K, (9, 9)), "index"), ((v, f, K[:2], (9, 9)), "intrinsics"),
                       ((v, f, K, (0, 9)), "empty"), ((v, f, K, 9), "size"),
                       ((v, f.astype(float), K, (9, 9)), "faces")]:
        with pytest.raises(DualPMError, match=word):
            silhouette.rasterize(*args)
    with pytest.raises(DualPMError, match="outline"):
        silhouette.outline(np.zeros((2, 2, 2), bool))


def test_outline_is_a_thin_ring_inside_the_mask():
    yy, xx = np.mgrid[:100, :100]
    disc = (xx - 50) ** 2 + (yy - 50) ** 2 < 30 ** 2
    ring = silhouette.outline(disc)
    assert np.all(disc[ring])  # inside the mask
    inner = disc & ~ring
    # every ring pixel touches the outside, no interior pixel does
    p = np.pad(disc, 1)
    touches = ~(p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:])
    assert np.all(touches[ring]) and not np.any(touches[inner])
    assert 4 * 30 < ring.sum() < 8 * 30  # one pixel wide: about the perimeter, far below the area
    wide = silhouette.outline(disc, 2)
    assert np.all(wide[ring]) and 1.7 < wide.sum() / ring.sum() < 2.1
    full = silhouette.outline(np.ones((10, 12), bool))  # the image border closes the mask
    assert full.sum() == 2 * 10 + 2 * 12 - 4 and not full[1:-1, 1:-1].any()
    assert not silhouette.outline(np.zeros((5, 5), bool)).any()


def test_iou_is_metrics_mask_iou():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    a[:2], b[1:3] = True, True
    assert abs(silhouette.iou(a, b) - 4 / 12) < 1e-12
