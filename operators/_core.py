"""Where the core package lives, seen from operators/.

Inside Blender the repository root is the extension package (`bl_ext.<repo>.dualpm`), so the core
is the sibling subpackage `..dualpm_addon`; the development checkout and the `dualpm` command line
import `operators` as a top-level package next to a top-level `dualpm_addon`. Every module here
reaches the core through `core("name")`, so both layouts use one copy of it (and one DualPMError
class, which matters for `except`).
"""

from __future__ import annotations

import importlib

_parent = __package__.rpartition(".")[0]  # "" when operators is top-level
CORE_PACKAGE = f"{_parent}.dualpm_addon" if _parent else "dualpm_addon"


def core(name: str):
    """The core module `name` (e.g. "template"), imported on first use."""
    return importlib.import_module(f"{CORE_PACKAGE}.{name}")


def package():
    return importlib.import_module(CORE_PACKAGE)


def error_type():
    return core("errors").DualPMError
