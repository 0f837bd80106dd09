import json
import os

import pytest

from dualpm_addon.atomic import atomic_open, write_bytes, write_json
from dualpm_addon.errors import DualPMError


def test_file_appears_only_when_complete(tmp_path):
    path = tmp_path / "out.bin"
    with atomic_open(path, "wb") as f:
        f.write(b"abc")
        assert not path.exists() and (tmp_path / "out.bin.partial").exists()
    assert path.read_bytes() == b"abc" and os.listdir(tmp_path) == ["out.bin"]


def test_failure_inside_the_block_leaves_nothing(tmp_path):
    with pytest.raises(ValueError):
        with atomic_open(tmp_path / "x.json", "w") as f:
            f.write("{")
            raise ValueError("bad value")
    assert not os.listdir(tmp_path)


def test_unwritable_is_one_line_naming_the_file(tmp_path):
    with pytest.raises(DualPMError, match=r"nope/a.glb: cannot write glTF file \("):
        write_bytes(tmp_path / "nope" / "a.glb", b"x", "glTF file")


def test_write_json(tmp_path):
    write_json(tmp_path / "s.json", {"b": 1, "a": [1.5]}, indent=2, sort_keys=True)
    assert json.loads((tmp_path / "s.json").read_text()) == {"a": [1.5], "b": 1}
