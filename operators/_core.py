"""Where the core package lives, seen from operators/.

Inside Blender the repository root is the extension package (`bl_ext.<repo>.dualpm`), so the core
is the sibling subpackage `..dualpm_addon`; the development checkout and the `dualpm` command line
import `operators` as a top-level package next to a top-level `dualpm_addon`. Every module here
reaches the core through `core("name")`, so both layouts use one copy of it (and one DualPMError
class, which matters for `except`).
"""

from __future__ import annotations

import importlib
import traceback

_parent = __package__.rpartition(".")[0]  # "" when operators is top-level
CORE_PACKAGE = f"{_parent}.dualpm_addon" if _parent else "dualpm_addon"


def core(name: str):
    """The core module `name` (e.g. "template"), imported on first use."""
    return importlib.import_module(f"{CORE_PACKAGE}.{name}")


def package():
    return importlib.import_module(CORE_PACKAGE)


def error_type():
    return core("errors").DualPMError


def one_line(e: BaseException) -> str:
    """What the UI shows for a failure: DualPMErrors as they are, anything else marked unexpected."""
    if isinstance(e, error_type()):
        return str(e)
    text = " ".join(str(e).split()) or "no details"
    return f"unexpected {type(e).__name__}: {text} (details in the system console)"


def report_error(op, e: BaseException, doing: str) -> str:
    """One line in Blender's UI, the traceback in the console (never a traceback dialog).

    Returns the line, for callers that also show it in the panel."""
    if not isinstance(e, error_type()):
        print(f"DualPM: unexpected error {doing}")
        traceback.print_exception(type(e), e, e.__traceback__)
    message = one_line(e)
    op.report({"ERROR"}, message)
    return message
