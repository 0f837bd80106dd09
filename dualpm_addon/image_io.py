"""Decode photos of any size and aspect to H x W x 3 uint8 sRGB, with alpha as a mask when present.

- JPEG, PNG, WebP, TIFF, BMP, TGA (and whatever else Pillow reads): Pillow, turned upright by the
  EXIF orientation, converted to sRGB through the embedded ICC profile when Pillow has LittleCMS.
  16-bit and float images are scaled down to 8 bits (float images are taken as linear light).
- Radiance .hdr: read here with numpy (RGBE, flat or run-length encoded scanlines).
- OpenEXR .exr: through the `OpenEXR` package when it is importable; otherwise a one-line error
  saying so. Inside Blender the operators decode with bpy and pass arrays instead
  (`linear_to_srgb8` turns Blender's float pixels into this module's uint8 sRGB).
- Linear (HDR) pixels are tone-mapped the way Blender's "Standard" view shows them (sRGB curve,
  clipped), after an exposure that brings the 99.5th percentile of luminance to 1 when the image
  is brighter than that.

Alpha becomes the mask only when it marks something out: at least ALPHA_MIN_FRACTION of the
pixels transparent (alpha < 128) and as many opaque; nearly opaque alpha channels (anti-aliasing
specks on a flat image) are ignored.

The EXIF focal length is returned as a 35 mm equivalent (36 mm across the longer image side, the
convention of dualpm_addon.camera): FocalLengthIn35mmFilm when present, else FocalLength scaled by
the sensor size from FocalPlaneXResolution, else None.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .errors import DualPMError
from .intake import ORIENTATION_TAG, upright_shape

ALPHA_MIN_FRACTION = 0.01
NEEDS_BLENDER = (".exr",)  # without the OpenEXR package
HDR_SUFFIXES = (".hdr", ".pic", ".rgbe")

_EXIF_IFD = 0x8769
_FOCAL_35 = 0xA405
_FOCAL = 0x920A
_FP_XRES = 0xA20E
_FP_UNIT = 0xA210
_UNIT_MM = {2: 25.4, 3: 10.0, 4: 1.0, 5: 0.001}


@dataclass
class Photo:
    rgb: np.ndarray  # (H, W, 3) uint8 sRGB, row 0 at the top
    mask: np.ndarray | None  # (H, W) bool from alpha, or None
    focal_mm: float | None  # 35 mm-equivalent focal length from EXIF, or None
    path: str
    full_size: tuple | None = None  # (H, W) of the upright image in the file, where rgb is smaller

    @property
    def size(self) -> tuple[int, int]:
        """(height, width)"""
        return self.rgb.shape[0], self.rgb.shape[1]


def read_photo(path, at_least: int | None = None) -> Photo:
    """Decode `path`; one-line DualPMError naming the file on any failure.

    at_least: a caller that shrinks the image to at most this many pixels on its longer side
    anyway lets a JPEG be decoded small by libjpeg (DCT scaling by 2, 4 or 8, never below that
    side; 12 MP in ~0.02 s instead of ~0.15 s); `full_size` then gives the file's size."""
    path = os.fspath(path)
    name = os.path.basename(path)
    if not os.path.isfile(path):
        raise DualPMError(f"{path}: no such file")
    suffix = os.path.splitext(path)[1].lower()
    if suffix in HDR_SUFFIXES:
        rgba = _read_radiance(path)
        return _from_linear(rgba, path)
    if suffix == ".exr":
        return _from_linear(_read_exr(path), path)
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            w, h = im.size
            if at_least and im.format == "JPEG" and im.mode in ("RGB", "L") and max(w, h) > 2 * at_least:
                f = max(w, h) // int(at_least)  # the draft's scale: the largest power of two <= f
                im.draft(im.mode, (max(1, w // f), max(1, h // f)))
            im.load()
            focal = exif_focal_35mm(im)
            full = None if im.size == (w, h) else upright_shape((h, w), int(im.getexif().get(ORIENTATION_TAG, 1)))
            im = ImageOps.exif_transpose(im)
            rgb, alpha = _pil_to_arrays(im)
    except UnidentifiedImageError:
        raise DualPMError(f"{name}: not an image format this build can read "
                          f"(JPEG, PNG, WebP, TIFF, BMP, TGA, HDR; EXR needs the OpenEXR package)") from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:  # Pillow's errors for damaged files
        raise DualPMError(f"{name}: damaged or unreadable image ({_first_line(e)})") from None
    except Image.DecompressionBombError as e:
        raise DualPMError(f"{name}: too large to decode safely ({_first_line(e)})") from None
    return Photo(rgb, _alpha_mask(alpha), focal, path, full)


def read_mask(path, shape: tuple[int, int] | None = None) -> np.ndarray:
    """A mask file (H, W) bool: its alpha where it has transparency, else its grey level > 127.
    With `shape` (H, W), the mask must have that size (the photo's)."""
    path = os.fspath(path)
    name = os.path.basename(path)
    photo = read_photo(path)
    if photo.mask is not None:
        mask = photo.mask
    else:
        grey = photo.rgb.astype(np.float32) @ np.array([0.2126, 0.7152, 0.0722], np.float32)
        mask = grey > 127.5
    if shape is not None and mask.shape != tuple(shape):
        raise DualPMError(f"mask {name} is {mask.shape[1]}x{mask.shape[0]}, the photo is {shape[1]}x{shape[0]}")
    if not mask.any():
        raise DualPMError(f"mask {name} is empty (no pixel marks the animal)")
    return mask


def exif_focal_35mm(im) -> float | None:
    """35 mm-equivalent focal length from a Pillow image's EXIF, or None."""
    try:
        exif = im.getexif()
        ifd = exif.get_ifd(_EXIF_IFD)
    except Exception:  # broken EXIF must not make the photo unreadable
        return None
    f35 = _num(ifd.get(_FOCAL_35))
    if f35 and f35 > 0:
        return f35
    focal, xres, unit = _num(ifd.get(_FOCAL)), _num(ifd.get(_FP_XRES)), ifd.get(_FP_UNIT, 2)
    if focal and focal > 0 and xres and xres > 0 and unit in _UNIT_MM:
        long_side_mm = max(im.size) / xres * _UNIT_MM[unit]
        if long_side_mm > 0:
            return focal * 36.0 / long_side_mm
    return None


def linear_to_srgb8(linear: np.ndarray) -> np.ndarray:
    """Linear-light float RGB (..., 3) to uint8 sRGB: exposure (see module doc), then sRGB curve."""
    rgb = np.nan_to_num(np.asarray(linear, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    rgb = np.maximum(rgb, 0.0)
    lum = rgb @ np.array([0.2126, 0.7152, 0.0722], np.float32)
    top = float(np.percentile(lum, 99.5)) if lum.size else 0.0
    if top > 1.0:
        rgb = rgb / top
    rgb = np.clip(rgb, 0.0, 1.0)
    srgb = np.where(rgb <= 0.0031308, 12.92 * rgb, 1.055 * np.power(rgb, 1 / 2.4) - 0.055)
    return np.round(srgb * 255.0).astype(np.uint8)


def _from_linear(rgba: np.ndarray, path: str) -> Photo:
    rgb = linear_to_srgb8(rgba[..., :3])
    alpha = None
    if rgba.shape[-1] == 4:
        alpha = np.round(np.clip(rgba[..., 3], 0, 1) * 255).astype(np.uint8)
    return Photo(rgb, _alpha_mask(alpha), None, path)


def _pil_to_arrays(im) -> tuple[np.ndarray, np.ndarray | None]:
    alpha = None
    mode = im.mode
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        a = np.asarray(im, dtype=np.float64)
        scale = 65535.0 if mode != "I" or a.max() > 255 else 255.0
        g = np.clip(np.round(a / scale * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(g[..., None], 3, axis=-1), None
    elif mode == "F":
        return linear_to_srgb8(np.repeat(np.asarray(im, np.float32)[..., None], 3, axis=-1)), None
    elif mode == "1":
        im = im.convert("L")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        alpha = np.asarray(im.getchannel("A"))
    im = _to_srgb(im)
    rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
    return np.ascontiguousarray(rgb), alpha


def _to_srgb(im):
    """Convert through the embedded ICC profile (Adobe RGB, Display P3 photos) when possible."""
    icc = im.info.get("icc_profile")
    if not icc or im.mode not in ("RGB", "RGBA", "CMYK"):
        return im
    try:
        import io

        from PIL import ImageCms

        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        mode = "RGBA" if im.mode == "RGBA" else "RGB"
        return ImageCms.profileToProfile(im, src, ImageCms.createProfile("sRGB"), outputMode=mode)
    except Exception:  # no LittleCMS or a broken profile: the pixels as stored are the best guess
        return im


def _alpha_mask(alpha: np.ndarray | None) -> np.ndarray | None:
    if alpha is None:
        return None
    mask = alpha >= 128
    frac = float(mask.mean())
    if frac < ALPHA_MIN_FRACTION or frac > 1.0 - ALPHA_MIN_FRACTION:
        return None
    return mask


def _read_exr(path: str) -> np.ndarray:
    name = os.path.basename(path)
    try:
        import OpenEXR
    except ImportError:
        raise DualPMError(f"{name}: reading EXR needs the OpenEXR package (pip install OpenEXR) or Blender "
                          f"(open the photo in Blender and use Reconstruct from photo)") from None
    try:
        if hasattr(OpenEXR, "File"):  # OpenEXR >= 3.3
            with OpenEXR.File(path, separate_channels=True) as f:
                chans = {k: np.asarray(v.pixels, dtype=np.float32) for k, v in f.parts[0].channels.items()}
        else:  # the 1.x API
            import Imath

            f = OpenEXR.InputFile(path)
            dw = f.header()["dataWindow"]
            w, h = dw.max.x - dw.min.x + 1, dw.max.y - dw.min.y + 1
            pt = Imath.PixelType(Imath.PixelType.FLOAT)
            chans = {k: np.frombuffer(f.channel(k, pt), np.float32).reshape(h, w) for k in f.header()["channels"]}
    except DualPMError:
        raise
    except Exception as e:
        raise DualPMError(f"{name}: damaged or unreadable EXR ({_first_line(e)})") from None
    if all(c in chans for c in "RGB"):
        rgb = [chans["R"], chans["G"], chans["B"]]
    elif "Y" in chans:
        rgb = [chans["Y"]] * 3
    else:
        raise DualPMError(f"{name}: EXR has no R, G, B or Y channels (it has {', '.join(sorted(chans)) or 'none'})")
    if "A" in chans:
        rgb.append(chans["A"])
    return np.stack(rgb, axis=-1)


def _read_radiance(path: str) -> np.ndarray:
    """Radiance RGBE (.hdr) to linear float32 (H, W, 3)."""
    name = os.path.basename(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise DualPMError(f"{name}: cannot read ({e.strerror or e})") from None
    try:
        return _decode_radiance(data)
    except (ValueError, IndexError) as e:
        raise DualPMError(f"{name}: damaged or unreadable Radiance HDR ({_first_line(e)})") from None


def _decode_radiance(data: bytes) -> np.ndarray:
    if not (data.startswith(b"#?RADIANCE") or data.startswith(b"#?RGBE")):
        raise ValueError("no #?RADIANCE header")
    pos = 0
    while True:  # header lines up to an empty line
        end = data.index(b"\n", pos)
        line = data[pos:end].strip()
        pos = end + 1
        if line.startswith(b"FORMAT=") and line != b"FORMAT=32-bit_rle_rgbe":
            raise ValueError(f"unsupported {line.decode(errors='replace')}")
        if not line:
            break
    end = data.index(b"\n", pos)
    res = data[pos:end].split()
    pos = end + 1
    if len(res) != 4 or res[2] != b"+X" or res[0] not in (b"-Y", b"+Y"):
        raise ValueError(f"unsupported orientation {b' '.join(res).decode(errors='replace')}")
    h, w = int(res[1]), int(res[3])
    if h <= 0 or w <= 0 or h * w > 200_000_000:
        raise ValueError(f"bad size {w}x{h}")
    buf = np.frombuffer(data, np.uint8)
    out = np.empty((h, w, 4), np.uint8)
    for y in range(h):
        if 8 <= w < 32768 and buf[pos] == 2 and buf[pos + 1] == 2 and (int(buf[pos + 2]) << 8 | int(buf[pos + 3])) == w:
            pos += 4
            for c in range(4):  # each component run-length encoded on its own
                x = 0
                while x < w:
                    n = int(buf[pos])
                    if n > 128:
                        n -= 128
                        if x + n > w:
                            raise ValueError("run past the end of a scanline")
                        out[y, x:x + n, c] = buf[pos + 1]
                        pos += 2
                    else:
                        if n == 0 or x + n > w:
                            raise ValueError("bad run length")
                        out[y, x:x + n, c] = buf[pos + 1:pos + 1 + n]
                        pos += 1 + n
                    x += n
        else:  # flat scanline
            if pos + 4 * w > len(buf):
                raise ValueError("file ends early")
            out[y] = buf[pos:pos + 4 * w].reshape(w, 4)
            pos += 4 * w
    if res[0] == b"+Y":
        out = out[::-1]
    e = out[..., 3].astype(np.int32)
    scale = np.where(e > 0, np.ldexp(1.0, e - 136), 0.0).astype(np.float32)  # 2^(e-128) / 256
    return (out[..., :3].astype(np.float32) + 0.5) * scale[..., None] * (e[..., None] > 0)


def _num(v) -> float | None:
    try:
        return float(v) if v is not None else None
    except (TypeError, ValueError, ZeroDivisionError):
        return None


def _first_line(e: BaseException) -> str:
    s = str(e).strip()
    return s.splitlines()[0] if s else type(e).__name__
