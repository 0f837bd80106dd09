import os

import numpy as np
import pytest

from dualpm_addon.errors import DualPMError
from dualpm_addon.npz import write_npz


def test_same_arrays_same_bytes(tmp_path):
    arrays = {"a": np.arange(10.0), "b": np.array(["x", "y"])}
    write_npz(str(tmp_path / "1.npz"), arrays)
    write_npz(str(tmp_path / "2.npz"), arrays)
    assert (tmp_path / "1.npz").read_bytes() == (tmp_path / "2.npz").read_bytes()
    with np.load(tmp_path / "1.npz", allow_pickle=False) as z:
        assert np.array_equal(z["a"], arrays["a"]) and list(z["b"]) == ["x", "y"]


def test_refuses_objects_and_leaves_nothing(tmp_path):
    path = tmp_path / "o.npz"
    with pytest.raises(ValueError):
        write_npz(str(path), {"o": np.array([object()], dtype=object)})
    assert not os.listdir(tmp_path)


def test_unwritable_is_one_line(tmp_path):
    with pytest.raises(DualPMError, match="cannot write"):
        write_npz(str(tmp_path / "no" / "such" / "dir.npz"), {"a": np.zeros(2)})
    assert not os.listdir(tmp_path)
