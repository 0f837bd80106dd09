"""What every batch command shares: one output name per input, and the exit code.

`dualpm predict`, `dualpm fit` and `dualpm reconstruct` (and `blender -b`) take several inputs,
keep going past a failing one, and exit with the number that failed.
"""

from __future__ import annotations

import os

# Shells give 126 and above their own meanings (not executable, not found, killed by a signal).
MAX_EXIT = 125


def output_names(paths: list[str], fallback: str = "input") -> list[str]:
    """NAME per input: its file stem, with _2, _3... where two inputs share one."""
    seen: dict[str, int] = {}
    out = []
    for p in paths:
        stem = os.path.splitext(os.path.basename(p))[0] or fallback
        seen[stem] = seen.get(stem, 0) + 1
        out.append(stem if seen[stem] == 1 else f"{stem}_{seen[stem]}")
    return out


def exit_code(failed: int) -> int:
    """The number of failed inputs, capped where the shell's reserved codes begin."""
    return min(failed, MAX_EXIT)
