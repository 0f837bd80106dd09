"""Pickle-free .npz files whose bytes depend only on their arrays, written atomically.

np.savez stamps every zip entry with the current time, so the same arrays give different bytes;
here each entry has a fixed date and the order is the dict's. The file appears under its name
only once complete (a `.partial` name until then), so an interrupted write never leaves a file
that looks complete.
"""

from __future__ import annotations

import io
import os
import zipfile

import numpy as np

from .errors import DualPMError

ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def write_npz(path: str, arrays: dict, compress: bool = True) -> None:
    tmp = f"{path}.partial"
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    try:
        with zipfile.ZipFile(tmp, "w", compression=method, allowZip64=True) as zf:
            for key, value in arrays.items():
                info = zipfile.ZipInfo(f"{key}.npy", date_time=ZIP_DATE)
                info.create_system = 3
                info.external_attr = 0o644 << 16
                buf = io.BytesIO()
                np.lib.format.write_array(buf, np.asanyarray(value), allow_pickle=False)
                # Level 1: dual point maps are mostly zeros; speed matters more than the last bytes.
                zf.writestr(info, buf.getvalue(), compress_type=method, compresslevel=1 if compress else None)
        os.replace(tmp, path)
    except BaseException as e:
        # Whatever stopped the write (a full disk, an object array, Ctrl-C), leave nothing behind.
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(e, OSError):
            raise DualPMError(f"{path}: cannot write ({e.strerror or e})") from None
        raise
