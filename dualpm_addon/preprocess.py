"""From a photo to the model's crop and back: find the animal, crop, resize, run, and record the
crop's camera, giving the dual point map of dualpm_addon.pointmap.

Two passes with any predictor that has `predict(image_uint8, mask_uint8 | None) -> dict`
(dualpm_addon.inference.Runner in process, or dualpm_addon.client.InferenceClient):

1. Find: the whole photo, letterboxed into a square (padded with the photo's border colour) and
   resized to the model's size, mask 128 ("unknown"). Layer-0 occupancy > 0.5 marks the animal;
   the largest 8-connected blob is taken. With a user mask, this pass is skipped and the mask's
   bounding box is used instead.
2. Crop: a square box around the blob, MARGIN of its longer side added on each side (it may
   reach past the photo's edges: that part is padded), resampled with Lanczos filtering (Pillow,
   antialiased) to the model's size, and run again (the user's mask cropped the same way, else 128).

"No animal found": in either pass, when the largest blob covers less than MIN_AREA_FRACTION of
the grid (0.5%: 128 of 160 x 160 pixels; in pass 1 an animal narrower than about 1/14 of the
photo's longer side) or when fewer than MIN_CONFIDENT_FRACTION (half) of its pixels reach the
inference confidence threshold (c >= 2, pointmap.CONFIDENCE_THRESHOLD). With the user's mask the
user has said where the animal is, and a quarter is enough (MIN_CONFIDENT_FRACTION_GIVEN): the
model is unsure on poses it saw few of (lying: 3 of 24 held-out lying renders were refused with
their true mask) and the mask, not the model, then carries the fit.

Without a mask, pass 2 is run without one too, and its blob must cover MIN_CROP_AREA_FRACTION
(2.5%) of the crop: the crop is cut around pass 1's blob, so a real animal fills much of it.
When pass 1 has a blob but is unsure of it (a small animal is 20-40 pixels across in its view of
the whole photo), the crop around the blob gets a closer look (closer_look): if pass 2's checks
pass there, pass 1's box stands; else "no animal found" as pass 1 said.

With a segmenter (dualpm_addon.segment) and no user mask, the animal's outline is the
segmenter's largest region (segment.animal_regions) that the predictor agrees with: it gives the
crop box, the predictor's mask input in pass 2, and `photo_mask` for the fit. A salient-object
segmenter finds something in every photo, so whether there is an animal at all stays the
predictor's decision: pass 1 runs without a mask as before, and a region counts only when the
predictor, shown the region's crop without a mask, passes the checks above there and its blobs
touching the region have an IoU of MIN_AGREEMENT with it (region_agrees); the region is then
trimmed to what the predictor sees (trim: a salient occluder touching the animal goes). When the
segmenter's mask is empty (no region of segment.MIN_REGION_FRACTION of the photo), covers more than
MAX_MASK_FRACTION of it, or no region agrees, the predictor's own layer-0 mask is used, as
without a segmenter, and `mask_source` says "predictor". Figures: docs/segmentation.md.

The result holds the map's arrays plus `intrinsics` of the crop's grid (camera.crop_intrinsics
from the photo's intrinsics: the EXIF 35 mm-equivalent focal length when known, else
DEFAULT_FOCAL_MM), `crop_box` (x0, y0, x1, y1 in photo pixels), `rgb` (the crop, for point
colours), `photo_size` (H, W), `focal_mm` and `focal_from_exif`; and `photo_mask` (H, W bool, the
animal's outline in photo pixels that was used: the user's, the segmenter's region, or the
predictor's layer-0 occupancy > 0.5 mapped back bilinearly), `mask_source` ("user", "segmenter"
or "predictor") and `animals_found` (the segmenter's regions the predictor agrees with; 1 for a
user or predictor mask).
"""

from __future__ import annotations

from collections import deque

import numpy as np

from . import camera, pointmap
from .errors import DualPMError
from .inference import UNKNOWN_MASK

MIN_AREA_FRACTION = 0.005
# Pass 2 without a mask crops to the pass-1 blob, so an animal fills much of the crop: the smallest
# blob of 120 renders, the quokka and chelsea was 4.6% of it, a yellow flower's (a false animal
# of pass 1) 1.3%.
MIN_CROP_AREA_FRACTION = 0.025
MIN_CONFIDENT_FRACTION = 0.5
MIN_CONFIDENT_FRACTION_GIVEN = 0.25
MARGIN = 0.15
MIN_BOX_PIXELS = 16.0  # smallest crop side in photo pixels: less is upsampling noise
DEFAULT_FOCAL_MM = 50.0
# A segmenter mask covering more than this is the whole frame, not an outline: no box to crop to.
MAX_MASK_FRACTION = 0.95
# A segmenter region is the animal when the predictor, shown its crop without a mask, sees an
# animal there whose blobs touching the region have this IoU with it (a flower or the sky more
# salient than the animal scores near 0; the quokka 0.66, chelsea 0.52; docs/segmentation.md).
MIN_AGREEMENT = 0.3
TRIM_REACH = 0.3  # segmenter pixels this far from the predictor's blobs (times their box side) are cut
MASK_SOURCES = ("user", "segmenter", "predictor")
MAX_REGIONS = 10  # segmenter regions checked with the predictor (one predictor run each)


def letterbox_box(height: int, width: int) -> tuple[float, float, float, float]:
    """The square box (x0, y0, x1, y1) centred on the photo that just contains it."""
    side = float(max(height, width))
    x0 = (width - side) / 2.0
    y0 = (height - side) / 2.0
    return x0, y0, x0 + side, y0 + side


def border_colour(rgb: np.ndarray) -> np.ndarray:
    """Median colour of the photo's outermost pixels: the padding for boxes past its edges."""
    edge = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
    return np.median(edge, axis=0).astype(np.uint8)


def _padded_region(a: np.ndarray, box, fill):
    """The integer region covering `box`, padded with `fill` where it leaves `a`; and the box
    relative to that region."""
    x0, y0, x1, y1 = box
    h, w = a.shape[:2]
    X0, Y0 = int(np.floor(x0)), int(np.floor(y0))
    X1, Y1 = int(np.ceil(x1)), int(np.ceil(y1))
    if X0 >= 0 and Y0 >= 0 and X1 <= w and Y1 <= h:
        region = a[Y0:Y1, X0:X1]
    else:
        region = np.empty((Y1 - Y0, X1 - X0) + a.shape[2:], a.dtype)
        region[...] = fill
        sx0, sy0, sx1, sy1 = max(X0, 0), max(Y0, 0), min(X1, w), min(Y1, h)
        if sx1 > sx0 and sy1 > sy0:
            region[sy0 - Y0:sy1 - Y0, sx0 - X0:sx1 - X0] = a[sy0:sy1, sx0:sx1]
    return np.ascontiguousarray(region), (x0 - X0, y0 - Y0, x1 - X0, y1 - Y0)


def crop_resize(rgb: np.ndarray, box, size: int, fill=None) -> np.ndarray:
    """(size, size, 3) uint8: the photo inside `box` (may reach past its edges), Lanczos-resampled."""
    from PIL import Image

    fill = border_colour(rgb) if fill is None else np.asarray(fill, np.uint8)
    region, rbox = _padded_region(rgb, box, fill)
    out = Image.fromarray(region, "RGB").resize((size, size), Image.Resampling.LANCZOS, box=rbox)
    return np.asarray(out, dtype=np.uint8)


def crop_resize_mask(mask: np.ndarray, box, size: int) -> np.ndarray:
    """(size, size) uint8 0/255 model mask from a bool photo mask (outside the photo: background)."""
    from PIL import Image

    region, rbox = _padded_region(mask.astype(np.uint8) * 255, box, 0)
    out = Image.fromarray(region, "L").resize((size, size), Image.Resampling.BOX, box=rbox)
    return np.where(np.asarray(out) >= 128, 255, 0).astype(np.uint8)


def largest_blob(binary: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of a bool image (all False when there is none)."""
    if not binary.any():
        return np.zeros_like(binary, dtype=bool)
    try:
        from scipy import ndimage

        labels, n = ndimage.label(binary, structure=np.ones((3, 3), bool))
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        return labels == int(np.argmax(sizes))
    except ImportError:
        return _largest_blob_bfs(binary)


def _largest_blob_bfs(binary: np.ndarray) -> np.ndarray:
    h, w = binary.shape
    seen = np.zeros_like(binary, dtype=bool)
    best: list = []
    for start in zip(*np.nonzero(binary)):
        if seen[start]:
            continue
        seen[start] = True
        comp, todo = [start], deque([start])
        while todo:
            i, j = todo.popleft()
            for di in (-1, 0, 1):
                for dj in (-1, 0, 1):
                    a, b = i + di, j + dj
                    if 0 <= a < h and 0 <= b < w and binary[a, b] and not seen[a, b]:
                        seen[a, b] = True
                        comp.append((a, b))
                        todo.append((a, b))
        if len(comp) > len(best):
            best = comp
    out = np.zeros_like(binary, dtype=bool)
    rows, cols = zip(*best)
    out[list(rows), list(cols)] = True
    return out


class Unsure(DualPMError):
    """No animal found because the model is unsure of the blob it sees (not because it sees none);
    `confident`: the share of the blob that is confident; `blob`: the blob (the view's grid);
    `box`: its crop box in photo pixels, where find_animal raised it (pass 1), else None."""

    def __init__(self, message: str, confident: float = 0.0, blob: np.ndarray | None = None):
        super().__init__(message)
        self.confident = float(confident)
        self.blob = blob
        self.box = None


def animal_blob(result: dict, source: str, min_area: float = MIN_AREA_FRACTION,
                min_confident: float = MIN_CONFIDENT_FRACTION) -> np.ndarray:
    """Layer-0 occupancy's largest blob, or DualPMError("no animal found in SOURCE")."""
    occ0 = np.asarray(result["occupancy"])[0]
    blob = largest_blob(occ0 > pointmap.OCCUPANCY_THRESHOLD)
    area = float(blob.mean())
    if area < min_area:
        raise DualPMError(f"no animal found in {source} (the largest animal-like region covers "
                          f"{area * 100:.2f}% of the view, below {min_area * 100:.1f}%)")
    confident = float((np.asarray(result["confidence"])[0][blob] >= pointmap.CONFIDENCE_THRESHOLD).mean())
    if confident < min_confident:
        raise Unsure(f"no animal found in {source} (the model is unsure: {confident * 100:.0f}% of the "
                     f"animal-like region is confident, below {min_confident * 100:.0f}%)", confident, blob)
    return blob


def closer_look(predictor, rgb: np.ndarray, source: str, unsure: "Unsure"):
    """Pass 1 unsure (find_animal's Unsure): (the crop box around its blob, _unmasked's result
    there) if the predictor, shown that crop without a mask, passes pass 2's own checks there
    (half its blob confident, covering 2.5 % of the crop); else `unsure` is raised. A small animal
    is 20-40 pixels across in pass 1's 160-pixel view of the whole photo, where the model is
    seldom sure of it; cropped, it fills the view."""
    try:
        return unsure.box, _unmasked(predictor, rgb, unsure.box, source)
    except DualPMError:
        raise unsure from None


def square_box(bbox, margin: float = MARGIN, min_side: float = MIN_BOX_PIXELS):
    """A square (x0, y0, x1, y1) around bbox with `margin` of its longer side on each side."""
    x0, y0, x1, y1 = (float(v) for v in bbox)
    side = max(x1 - x0, y1 - y0, 1e-6) * (1.0 + 2.0 * margin)
    side = max(side, min_side)
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    return cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2


def grid_bbox_to_photo(blob: np.ndarray, box) -> tuple[float, float, float, float]:
    """Bounding box (x0, y0, x1, y1) in photo pixels of a blob on the grid that covers `box`."""
    rows, cols = np.nonzero(blob)
    n = blob.shape[0]
    x0, y0, x1, y1 = box
    sx, sy = (x1 - x0) / blob.shape[1], (y1 - y0) / n
    return (x0 + cols.min() * sx, y0 + rows.min() * sy, x0 + (cols.max() + 1) * sx, y0 + (rows.max() + 1) * sy)


def mask_bbox(mask: np.ndarray) -> tuple[float, float, float, float]:
    rows, cols = np.nonzero(mask)
    return float(cols.min()), float(rows.min()), float(cols.max() + 1), float(rows.max() + 1)


def model_size(predictor) -> int:
    return int(getattr(predictor, "input_size", 160) or 160)


def find_box(predictor, rgb: np.ndarray, mask: np.ndarray | None = None, source: str = "the photo"):
    """Pass 1: the square crop box (x0, y0, x1, y1) around the animal, in photo pixels."""
    if mask is not None:
        if not mask.any():
            raise DualPMError(f"no animal found in {source} (the mask is empty)")
        return square_box(mask_bbox(mask))
    return find_animal(predictor, rgb, source)[0]


def find_animal(predictor, rgb: np.ndarray, source: str = "the photo", min_confident: float = MIN_CONFIDENT_FRACTION):
    """Pass 1 without a mask: the crop box around the largest blob (or "no animal found"), and
    the predictor's layer-0 mask in photo pixels, every blob (H, W bool): what it takes for animal."""
    size = model_size(predictor)
    h, w = rgb.shape[:2]
    lb = letterbox_box(h, w)
    view = crop_resize(rgb, lb, size)
    result = predictor.predict(view, np.full((size, size), UNKNOWN_MASK, np.uint8))
    try:
        blob = animal_blob(result, source, min_confident=min_confident)
    except Unsure as unsure:
        unsure.box = square_box(grid_bbox_to_photo(unsure.blob, lb))
        raise
    seen = grid_to_photo(np.asarray(result["occupancy"])[0], lb, (h, w)) > pointmap.OCCUPANCY_THRESHOLD
    return square_box(grid_bbox_to_photo(blob, lb)), seen


def _interp_weights(n_out: int, start: float, step: float, n_in: int):
    """Linear interpolation along one axis, as (lo, hi, w_lo, w_hi): output pixel i's centre lies
    at input coordinate (i + 0.5 - start) / step, and its value is w_lo[i] v[lo[i]] + w_hi[i]
    v[hi[i]]; both weights are zero outside the input's extent."""
    u = (np.arange(n_out) + 0.5 - start) / step - 0.5
    inside = (u >= -0.5) & (u <= n_in - 0.5)
    u = np.clip(u, 0.0, n_in - 1.0)
    lo = np.floor(u).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = u - lo
    return lo, hi, (1.0 - frac) * inside, frac * inside


def grid_to_photo(values: np.ndarray, box, photo_size) -> np.ndarray:
    """(H, W) float: a map on the grid that covers `box`, interpolated bilinearly onto the photo's
    pixels (0 where the box does not reach). Separable, two taps per axis: a dense interpolation
    matrix product cost a video's inference more CPU than the predictor did (docs/video.md)."""
    h, w = (int(v) for v in photo_size)
    values = np.asarray(values, np.float64)
    x0, y0, x1, y1 = (float(v) for v in box)
    lo, hi, wl, wh = _interp_weights(h, y0, (y1 - y0) / values.shape[0], values.shape[0])
    rows = values[lo] * wl[:, None] + values[hi] * wh[:, None]
    lo, hi, wl, wh = _interp_weights(w, x0, (x1 - x0) / values.shape[1], values.shape[1])
    return rows[:, lo] * wl + rows[:, hi] * wh


def _unmasked(predictor, rgb: np.ndarray, box, source: str):
    """Pass 2 without a mask on `box`: the result, its layer-0 occupancy and its largest blob,
    checked ("no animal found" below MIN_CROP_AREA_FRACTION)."""
    size = model_size(predictor)
    result = predictor.predict(crop_resize(rgb, box, size), np.full((size, size), UNKNOWN_MASK, np.uint8))
    blob = animal_blob(result, source, MIN_CROP_AREA_FRACTION)
    return result, np.asarray(result["occupancy"], np.float64)[0], blob


def region_agrees(predictor, rgb: np.ndarray, region: np.ndarray, source: str = "the photo") -> bool:
    """Does the predictor, shown the crop around a segmenter region without a mask, see an animal
    there (its own checks) of about that outline (agreement >= MIN_AGREEMENT)?"""
    return agreeing_region(predictor, rgb, region, source) is not None


def agreeing_region(predictor, rgb: np.ndarray, region: np.ndarray, source: str = "the photo") -> np.ndarray | None:
    """The segmenter region as the animal's mask when the predictor agrees with it
    (region_agrees), trimmed to the part near what the predictor sees (trim); None otherwise."""
    box = square_box(mask_bbox(region))
    try:
        _, occ0, _ = _unmasked(predictor, rgb, box, source)
    except DualPMError:
        return None
    seen = grid_to_photo(occ0, box, rgb.shape[:2]) > pointmap.OCCUPANCY_THRESHOLD
    blobs = touching_blobs(region, seen)
    # The agreement: is this salient thing the animal the predictor sees, and about its size?
    if _iou(region, blobs) < MIN_AGREEMENT:
        return None
    return trim(region, blobs)


def touching_blobs(region: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """The 8-connected blobs of `seen` that touch `region`."""
    from scipy import ndimage

    labels, _ = ndimage.label(seen, structure=np.ones((3, 3), bool))
    touching = np.unique(labels[region & seen])
    return np.isin(labels, touching[touching > 0])


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 0.0


def trim(region: np.ndarray, blobs: np.ndarray, reach: float | None = None) -> np.ndarray:
    """The region less what lies farther than `reach` (TRIM_REACH) times the side of the
    predictor's blobs' box from those blobs: a salient segmenter takes an occluder that touches
    the animal (a rope, a post, a branch) into its region, the predictor does not. Its largest
    8-connected part; the region itself where nothing would be left."""
    from scipy import ndimage

    reach = TRIM_REACH if reach is None else reach
    if reach is None or not blobs.any():
        return region
    rows, cols = np.nonzero(blobs)
    side = max(np.ptp(rows), np.ptp(cols)) + 1
    near = region & (ndimage.distance_transform_edt(~blobs) <= reach * side)
    return largest_blob(near) if near.any() else region


def segmenter_regions(segmenter, rgb: np.ndarray, min_fraction: float | None = None) -> list[np.ndarray]:
    """The segmenter's own regions, largest first (segment.animal_regions), at most MAX_REGIONS;
    [] when its mask is empty or covers more than MAX_MASK_FRACTION of the photo."""
    from . import segment

    mask = segmenter.mask(rgb)
    if mask.mean() > MAX_MASK_FRACTION:
        return []
    regions = segment.animal_regions(mask, segment.MIN_REGION_FRACTION if min_fraction is None else min_fraction)
    return regions[:MAX_REGIONS]


def animal_masks(segmenter, rgb: np.ndarray, predictor, source: str = "the photo",
                 min_fraction: float | None = None) -> list[np.ndarray]:
    """One mask per animal (H, W bool each, largest first): the segmenter's regions that the
    predictor agrees with (region_agrees), after pass 1 has checked that the photo holds an
    animal at all ("no animal found" otherwise). [] when none agrees, or the segmenter's mask is
    empty or the whole frame: then the predictor's own mask is the fallback (predict_photo).

    For --all-animals: `masks = animal_masks(seg, rgb, predictor, name)`, then for each mask
    `predict_photo(predictor, rgb, m, focal_mm, name, mask_source="segmenter", animals_found=len(masks))`,
    or `predict_photo(predictor, rgb, None, focal_mm, name, segmenter=seg)` once when `masks` is []."""
    rgb = np.asarray(rgb)
    find_animal(predictor, rgb, source)
    return _agreeing(segmenter, predictor, rgb, source, min_fraction)


def _agreeing(segmenter, predictor, rgb, source, min_fraction=None) -> list[np.ndarray]:
    regions = (agreeing_region(predictor, rgb, r, source) for r in segmenter_regions(segmenter, rgb, min_fraction))
    return [r for r in regions if r is not None]


def predict_photo(predictor, rgb: np.ndarray, mask: np.ndarray | None = None,
                  focal_mm: float | None = None, source: str = "the photo", segmenter=None,
                  mask_source: str | None = None, animals_found: int | None = None) -> dict:
    """Both passes on one decoded photo (H, W, 3 uint8; mask H x W bool or None): the dual point
    map dict (pointmap.validate passes), with `crop_box`, the crop's `intrinsics`, `photo_mask`,
    `mask_source` and `animals_found` (module docstring).

    `segmenter` (segment.Segmenter) gives the mask when `mask` is None. A caller that has already
    found the animals (animal_masks, one call per animal) passes each as `mask` with
    mask_source="segmenter" and animals_found=len(masks): the predictor's checks still run, as
    for a region found here."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8 or min(rgb.shape[:2]) < 1:
        raise DualPMError(f"{source}: expected an (H, W, 3) uint8 image, got {rgb.shape} {rgb.dtype}")
    h, w = rgb.shape[:2]
    if mask is not None:
        mask = np.asarray(mask).astype(bool)
        if mask.shape != (h, w):
            raise DualPMError(f"{source}: mask is {mask.shape[1]}x{mask.shape[0]}, the photo is {w}x{h}")
    label = mask_source or ("user" if mask is not None else "predictor")
    if label not in MASK_SOURCES or (label == "predictor" and mask is not None):
        raise DualPMError(f"{source}: mask_source {label!r} does not fit a "
                          f"{'given' if mask is not None else 'missing'} mask")
    found = 1
    result = photo_mask = None
    second_opinion = False
    regions = looked = None  # the segmenter's agreeing regions, the closer look's pass 2, once sought
    if label == "user":
        box = find_box(predictor, rgb, mask, source)  # the user says where the animal is: one pass
    else:
        try:
            box = find_animal(predictor, rgb, source)[0]  # pass 1: the predictor decides whether there is one
        except Unsure as unsure:
            if mask is not None:
                raise
            # Unsure, not blind: with a segmenter, a region it agrees with is a second opinion
            # (a lying animal, which the model saw few of), taken at the user-mask threshold;
            # else a closer look at what pass 1 half saw (a small animal, zoomed).
            if segmenter is not None and unsure.confident >= MIN_CONFIDENT_FRACTION_GIVEN:
                box = unsure.box
                regions = _agreeing(segmenter, predictor, rgb, source)
            if regions:
                mask, label, found, second_opinion = regions[0], "segmenter", len(regions), True
            else:
                box, looked = closer_look(predictor, rgb, source, unsure)
        if mask is not None and not second_opinion:  # a segmenter region from animal_masks
            if not mask.any() or not region_agrees(predictor, rgb, mask, source):
                raise DualPMError(f"no animal found in {source} "
                                  "(the predictor sees no animal in the segmenter's region)")
        elif segmenter is not None and not second_opinion and regions is None:
            regions = _agreeing(segmenter, predictor, rgb, source)
            if regions:
                mask, label, found = regions[0], "segmenter", len(regions)
        if mask is not None:
            box = find_box(predictor, rgb, mask, source)
        else:  # the predictor's own mask: the crop without a mask input, checked more strictly
            result, occ0, blob = looked if looked is not None else _unmasked(predictor, rgb, box, source)
            photo_mask = grid_to_photo(occ0 * blob, box, (h, w)) > pointmap.OCCUPANCY_THRESHOLD
    if animals_found is not None:
        found = int(animals_found)
    size = model_size(predictor)
    crop = crop_resize(rgb, box, size)
    if result is None:
        result = predictor.predict(crop, crop_resize_mask(mask, box, size))
        animal_blob(result, source, min_confident=MIN_CONFIDENT_FRACTION_GIVEN if label == "user" or second_opinion
                    else MIN_CONFIDENT_FRACTION)
        photo_mask = mask
    focal_from_exif = focal_mm is not None and focal_mm > 0
    focal = float(focal_mm) if focal_from_exif else DEFAULT_FOCAL_MM
    k_photo = camera.intrinsics_from_focal_mm(focal, w, h)
    out = {name: np.asarray(result[name], dtype=np.float32) for name in ("P", "Q", "occupancy", "confidence")}
    out.update({
        "intrinsics": camera.crop_intrinsics(k_photo, box, (size, size)).astype(np.float32),
        "crop_box": np.asarray(box, dtype=np.float32),
        "rgb": crop,
        "photo_size": np.array([h, w], dtype=np.int32),
        "focal_mm": np.float32(focal),
        "focal_from_exif": np.bool_(focal_from_exif),
        "photo_mask": np.asarray(photo_mask, bool),
        "mask_source": np.str_(label),
        "animals_found": np.int32(found),
    })
    return pointmap.validate(out, source)


def predict_animals(predictor, rgb: np.ndarray, mask: np.ndarray | None = None,
                    focal_mm: float | None = None, source: str = "the photo", segmenter=None) -> list[dict]:
    """--all-animals: one dual point map per animal, largest first, each as predict_photo gives it
    plus `animal_index` (1 = the largest) and `animals_found` (how many maps there are).

    The animals: each connected region of the user's mask (segment.animal_regions: 8-connected,
    at least segment.MIN_REGION_FRACTION of the photo; a mask of two horses is two animals), else
    the segmenter's regions that the predictor agrees with (animal_masks), else the predictor's
    own mask, one animal. Regions were already checked (or are the user's word), so each takes
    one more predictor run, on its crop with the region as the mask input; a region whose crop
    the predictor then refuses is dropped and counted in `animals_refused`. "No animal found"
    when none is left."""
    from . import segment

    rgb = np.asarray(rgb)
    if mask is not None:
        mask = np.asarray(mask).astype(bool)
        if mask.shape != rgb.shape[:2]:  # predict_photo's one-line message
            return [dict(predict_photo(predictor, rgb, mask, focal_mm, source), animal_index=np.int32(1))]
        regions, label = segment.animal_regions(mask) or [mask], "user"
    else:
        unsure = None
        try:
            regions = animal_masks(segmenter, rgb, predictor, source) if segmenter is not None else []
        except Unsure as e:  # pass 1 unsure: predict_photo's second opinion and closer look decide
            regions, unsure = [], e
        label = "segmenter"
        if not regions:  # no segmenter, or none of its regions agrees: the predictor's mask
            seg = segmenter if unsure is not None else None
            one = predict_photo(predictor, rgb, None, focal_mm, source, segmenter=seg)
            return [dict(one, animal_index=np.int32(1))]
    maps, errors = [], []
    for region in regions:
        try:
            maps.append(predict_photo(predictor, rgb, region, focal_mm, source, mask_source="user"))
        except DualPMError as e:
            errors.append(e)
    if not maps:
        raise errors[0]
    for i, m in enumerate(maps, 1):
        m.update(mask_source=np.str_(label), animals_found=np.int32(len(maps)), animal_index=np.int32(i),
                 animals_refused=np.int32(len(errors)))
    return maps


def predict_file(predictor, path, mask_path=None, segmenter=None) -> dict:
    """Decode `path` (and a mask file, else the photo's own alpha) and run predict_photo."""
    import os

    from . import image_io

    photo = image_io.read_photo(path)
    mask = image_io.read_mask(mask_path, photo.size) if mask_path else photo.mask
    return predict_photo(predictor, photo.rgb, mask, photo.focal_mm, os.path.basename(os.fspath(path)),
                         segmenter=segmenter)
