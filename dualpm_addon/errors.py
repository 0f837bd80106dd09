"""One exception type for every user-facing failure.

Each message is a single line that names the input and the reason, so the command line, the
server and the Blender operators can show it as-is.
"""


class DualPMError(Exception):
    """A bad input or an unavailable resource, described in one line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


def clip(text, n: int = 80, tail: bool = False) -> str:
    """`text` cut to at most `n` characters with an ellipsis, so a hostile name or line cannot
    make a message long; `tail=True` keeps the end (a path's file name) instead of the start."""
    text = str(text)
    if len(text) <= n:
        return text
    return "…" + text[len(text) - n + 1:] if tail else text[: n - 1] + "…"
