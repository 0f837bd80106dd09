"""One exception type for every user-facing failure.

Each message is a single line that names the input and the reason, so the command line, the
server and the Blender operators can show it as-is.
"""


class DualPMError(Exception):
    """A bad input or an unavailable resource, described in one line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
