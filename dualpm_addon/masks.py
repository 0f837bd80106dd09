"""Which mask goes with which photo in a batch: NAME.mask.png, found by the photo's name.

For a photo NAME.ext (NAME is the file name without its last extension), in this order:

    1. "file"      an explicit mask file (`dualpm reconstruct --mask FILE`; one photo only)
    2. "mask-dir"  DIR/NAME.mask.png, with `--mask-dir DIR`
    3. "beside"    NAME.mask.png in the photo's own folder
    4. "alpha"     the photo's own alpha channel, where it marks something out
    5. "none"      no mask: the predictor (and the automatic segmenter, where present) find the animal

A photo with no NAME.mask.png in --mask-dir falls through to 3, so a batch may have masks for
some photos only; NAME.json says which one each photo used. Only the name NAME.mask.png is
looked for (no other extensions, no other spellings), so the rule is one sentence. A mask is
white (or opaque) where the animal is, the photo's size; reading it is the decoder's job
(image_io.read_mask, or operators/image_load in Blender). Steps 4 and 5 need the decoded photo,
so the caller takes them when `find` returns no file.

Shared by `dualpm reconstruct` and `blender -b` (operators/headless.py); no bpy here.
"""

from __future__ import annotations

import os

from .errors import DualPMError

SUFFIX = ".mask.png"
SOURCES = ("file", "mask-dir", "beside", "alpha", "none")


def mask_name(photo_path: str) -> str:
    """NAME.mask.png for the photo NAME.ext."""
    stem = os.path.splitext(os.path.basename(os.fspath(photo_path)))[0]
    return stem + SUFFIX


def find(photo_path: str, mask_dir: str | None = None, explicit: str | None = None) -> tuple[str, str | None]:
    """(source, path) of the photo's mask file: ("file", explicit), ("mask-dir", DIR/NAME.mask.png),
    ("beside", NAME.mask.png next to the photo), or ("none", None) when there is no mask file.

    An explicit path is returned whether or not it exists: the user named it, so a missing file is
    that photo's error (the decoder reports it), never a silent fall-through."""
    if explicit:
        return "file", os.fspath(explicit)
    name = mask_name(photo_path)
    if mask_dir:
        candidate = os.path.join(os.fspath(mask_dir), name)
        if os.path.isfile(candidate):
            return "mask-dir", candidate
    candidate = os.path.join(os.path.dirname(os.fspath(photo_path)), name)
    if os.path.isfile(candidate):
        return "beside", candidate
    return "none", None


def find_mask(photo_path: str, mask_dir: str | None = None) -> str | None:
    """The photo's mask file found by name (--mask-dir first, then beside the photo), or None."""
    return find(photo_path, mask_dir)[1]


def record(source: str, path: str | None) -> dict:
    """What NAME.json says about the mask: {"source": ..., "path": absolute path or None}."""
    if source not in SOURCES:
        raise ValueError(f"mask source {source!r}, expected one of {', '.join(SOURCES)}")
    return {"source": source, "path": os.path.abspath(path) if path else None}


def check_arguments(photos: list[str], mask: str | None = None, mask_dir: str | None = None) -> None:
    """One-line errors for arguments that cannot work, before any photo is read."""
    if mask and mask_dir:
        raise DualPMError("--mask FILE and --mask-dir DIR: give one of them")
    if mask and len(photos) > 1:
        raise DualPMError(f"--mask FILE is one photo's mask, and {len(photos)} photos were given: put "
                          f"NAME{SUFFIX} beside each photo NAME.jpg, or in a folder given as --mask-dir DIR")
    if mask_dir and not os.path.isdir(mask_dir):
        raise DualPMError(f"--mask-dir {mask_dir}: no such folder")


def split_masks(paths: list[str]) -> tuple[list[str], list[str]]:
    """(photos, masks): inputs that are another input's NAME.mask.png are masks, not photos (a
    shell glob such as photos/*.png picks up both), so a batch does not reconstruct them."""
    wanted = {os.path.normpath(os.path.join(os.path.dirname(os.fspath(p)), mask_name(p))) for p in paths}
    photos, masks = [], []
    for p in paths:
        is_mask = os.fspath(p).endswith(SUFFIX) and os.path.normpath(os.fspath(p)) in wanted
        (masks if is_mask else photos).append(p)
    return photos, masks
