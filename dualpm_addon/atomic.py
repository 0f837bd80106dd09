"""Atomic file writes: a file appears under its name only once it is complete.

Every output of the project goes through here (dual point maps, templates, BVH, glTF, PNG
previews, JSON summaries), so an interrupted or failed write never leaves a file that a user or
a later run would take for a finished one.
"""

from __future__ import annotations

import contextlib
import json
import os

from .errors import DualPMError


@contextlib.contextmanager
def atomic_open(path, mode: str = "wb", what: str = "", **kwargs):
    """open() on `PATH.partial`, renamed to PATH when the block ends without error.

    Whatever stops the block (a full disk, a bad value, Ctrl-C), the partial file is removed;
    an OSError becomes a one-line DualPMError naming the file (`what` says what kind).
    """
    path = os.fspath(path)
    tmp = f"{path}.partial"
    try:
        with open(tmp, mode, **kwargs) as f:
            yield f
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        if isinstance(e, OSError):
            kind = f" {what}" if what else ""
            raise DualPMError(f"{path}: cannot write{kind} ({e.strerror or e})") from None
        raise


def write_bytes(path, data: bytes, what: str = "") -> None:
    with atomic_open(path, "wb", what) as f:
        f.write(data)


def write_json(path, data, indent: int = 1, **kwargs) -> None:
    with atomic_open(path, "w", "JSON file", encoding="utf-8") as f:
        json.dump(data, f, indent=indent, **kwargs)
        f.write("\n")
