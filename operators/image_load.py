"""Photos decoded by Blender itself, so every format Blender reads works (JPEG, PNG, WebP, TIFF,
EXR, HDR, ...), into the core's arrays: rgb (H, W, 3) uint8 sRGB with row 0 at the top.

Blender stores rows bottom-up and gives byte images as their stored values / 255 and float images
as scene-linear floats; the latter are tone-mapped by image_io.linear_to_srgb8, as the command line
does. Blender ignores EXIF orientation; the operators turn the pixels upright themselves
(dualpm_addon/intake.py) and give the camera an upright copy (`new_image`). The EXIF focal length
and orientation, which bpy does not expose, are read with Pillow when Pillow is there.
"""

from __future__ import annotations

import os

import bpy
import numpy as np

from ._core import core

ALPHA_MIN_FRACTION = 0.01  # as image_io: alpha is a mask only where it marks something out


def load(path: str):
    """(image, created): the image datablock for `path` (an existing one is reused untouched)."""
    err = core("errors").DualPMError
    path = bpy.path.abspath(path) if path.startswith("//") else path
    name = os.path.basename(path) or path
    if not path or not os.path.isfile(path):
        raise err(f"{path or 'no photo chosen'}: no such file")
    hint = UNREADABLE_HINTS.get(os.path.splitext(path)[1].lower())
    before = set(bpy.data.images)
    try:
        image = bpy.data.images.load(path, check_existing=True)
    except RuntimeError as e:
        image = None
        why = f"{name}: Blender cannot read it ({str(e).splitlines()[0]})"
    else:
        why = f"{name}: not an image Blender can read (unknown format or damaged file)"
    created = image is not None and image not in before
    if image is None or image.size[0] * image.size[1] == 0 or not image.has_data:
        if created:
            bpy.data.images.remove(image)
        if hint:
            raise err(f"{name}: {hint}")
        # A format Pillow reads and Blender does not (AVIF): its stored pixels in a packed image.
        fallback = _pillow_image(path, name)
        if fallback is None:
            raise err(why)
        return fallback, True
    if truncated_jpeg(path):
        if created:
            bpy.data.images.remove(image)
        raise err(f"{name}: damaged image: the JPEG file is cut short (an interrupted copy or download?)")
    return image, created


# Formats phones and cameras write that neither Blender nor this build's Pillow reads.
_HEIF = ("HEIC/HEIF (an iPhone's default format) is not a format Blender reads: export the photo as JPEG, "
         "or set the iPhone's Settings > Camera > Formats to Most Compatible")
_RAW = "a camera RAW file is not a format Blender reads: develop it to JPEG or TIFF first"
UNREADABLE_HINTS = {".heic": _HEIF, ".heif": _HEIF, ".hif": _HEIF,
                    **{ext: _RAW for ext in (".cr2", ".cr3", ".nef", ".arw", ".dng", ".raf", ".orf", ".rw2", ".pef",
                                             ".srw")}}


def _pillow_image(path: str, name: str):
    """A packed image datablock of the file's stored pixels decoded by Pillow (row 0 at the top,
    EXIF orientation not applied: gather applies it as for any photo), or None when Pillow cannot
    read it either."""
    try:
        from PIL import Image
    except ImportError:
        return None
    try:
        with Image.open(path) as im:
            rgba = np.asarray(im.convert("RGBA"))
    except Exception:  # noqa: BLE001 - neither reads it: the caller reports Blender's reason
        return None
    return new_image(name, rgba[..., :3], alpha=rgba[..., 3])


def truncated_jpeg(path: str) -> bool:
    """A JPEG whose data stops early. Blender decodes what is there and greys the rest (libjpeg
    warns on the console only), which would be reconstructed as if it were the photo. Pillow,
    decoding at an eighth of the size, finds it in ~0.04 s for a 24 MP photo."""
    if os.path.splitext(path)[1].lower() not in (".jpg", ".jpeg", ".jpe", ".jfif"):
        return False
    try:
        from PIL import Image
    except ImportError:
        return False
    try:
        with Image.open(path) as im:
            im.draft("RGB", (max(1, im.size[0] // 8), max(1, im.size[1] // 8)))
            im.load()
    except OSError as e:
        return "truncated" in str(e)
    except Exception:  # noqa: BLE001 - Blender read it; anything else Pillow dislikes is not ours to judge
        return False
    return False


def pixels(image) -> np.ndarray:
    """(H, W, 4) float32, row 0 at the top, as Blender holds them."""
    w, h = image.size
    if w * h == 0:
        raise core("errors").DualPMError(f"{image.name}: the image has no pixels")
    buf = np.empty(w * h * 4, dtype=np.float32)
    image.pixels.foreach_get(buf)
    return buf.reshape(h, w, 4)[::-1]


def to_rgb8(image, rgba: np.ndarray) -> np.ndarray:
    if image.is_float:
        return core("image_io").linear_to_srgb8(rgba[..., :3])
    return np.clip(np.rint(rgba[..., :3] * 255.0), 0, 255).astype(np.uint8)


def alpha_mask(rgba: np.ndarray | None, required: bool, name: str) -> np.ndarray | None:
    """The alpha channel as a mask where it marks the animal out; with `required`, an error
    when it does not (the user asked for the alpha mask). rgba None: an image without alpha."""
    mask = rgba[..., 3] >= 0.5 if rgba is not None else None
    frac = float(mask.mean()) if mask is not None else 1.0
    if ALPHA_MIN_FRACTION <= frac <= 1.0 - ALPHA_MIN_FRACTION:
        return np.ascontiguousarray(mask)
    if required:
        raise core("errors").DualPMError(f"{name}: its alpha channel marks nothing out "
                                         f"({frac * 100:.1f}% opaque); choose another mask")
    return None


def mask_from_image(image, shape: tuple[int, int], factor: int = 1, orientation: int = 1) -> np.ndarray:
    """A mask image: its alpha where that marks something out, else its grey level > 0.5. It is
    turned upright by its EXIF `orientation`, must then be `shape` (H, W: the upright photo's),
    and is shrunk as the photo was (`factor`, dualpm_addon/intake.py)."""
    err = core("errors").DualPMError
    intake = core("intake")
    rgba = intake.orient(pixels(image), orientation)
    if rgba.shape[:2] != tuple(shape):
        raise err(f"mask {image.name} is {rgba.shape[1]}x{rgba.shape[0]}, the photo is {shape[1]}x{shape[0]}")
    mask = alpha_mask(rgba, False, image.name)
    if mask is None:
        grey = to_rgb8(image, rgba).astype(np.float32) @ np.array([0.2126, 0.7152, 0.0722], np.float32)
        mask = grey > 127.5
    mask = intake.shrink_mask(mask, factor)
    if not mask.any():
        raise err(f"mask {image.name} is empty (no pixel marks the animal)")
    return mask


def new_image(name: str, rgb: np.ndarray, alpha: np.ndarray | None = None):
    """A packed byte image datablock holding rgb (H, W, 3) uint8 sRGB (and alpha (H, W) uint8),
    row 0 at the top: it is saved inside the .blend (it has no file of its own)."""
    h, w = rgb.shape[:2]
    image = bpy.data.images.new(name, int(w), int(h), alpha=alpha is not None)
    try:
        rgba = np.ones((h, w, 4), np.float32)
        rgba[..., :3] = rgb[::-1] / np.float32(255.0)  # Blender's rows run bottom-up
        if alpha is not None:
            rgba[..., 3] = alpha[::-1] / np.float32(255.0)
        image.pixels.foreach_set(rgba.ravel())
        image.pack()
    except BaseException:
        bpy.data.images.remove(image)
        raise
    return image


def exif_focal_mm(path: str) -> float | None:
    try:
        from PIL import Image
    except ImportError:
        return None
    try:
        with Image.open(path) as im:
            return core("image_io").exif_focal_35mm(im)
    except Exception:  # no EXIF, or a format Pillow does not know: use the default focal length
        return None


def image_file_path(image) -> str:
    return bpy.path.abspath(image.filepath, library=image.library) if image.filepath else ""
