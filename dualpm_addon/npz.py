"""Pickle-free .npz files whose bytes depend only on their arrays, written atomically.

np.savez stamps every zip entry with the current time, so the same arrays give different bytes;
here each entry has a fixed date and the order is the dict's. The file appears under its name
only once complete (atomic.atomic_open).
"""

from __future__ import annotations

import io
import zipfile

import numpy as np

from .atomic import atomic_open

ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def write_npz(path: str, arrays: dict, compress: bool = True) -> None:
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with atomic_open(path, "wb") as f, zipfile.ZipFile(f, "w", compression=method, allowZip64=True) as zf:
        for key, value in arrays.items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=ZIP_DATE)
            info.create_system = 3
            info.external_attr = 0o644 << 16
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asanyarray(value), allow_pickle=False)
            # Level 1: dual point maps are mostly zeros; speed matters more than the last bytes.
            zf.writestr(info, buf.getvalue(), compress_type=method, compresslevel=1 if compress else None)
