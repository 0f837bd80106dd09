"""Training curves (training/curves.py) from run folders' log.jsonl."""

import json

import numpy as np
import pytest
from PIL import Image

from dualpm_addon.errors import DualPMError
from training import curves


def _run(folder, steps, batch=8, cut=False):
    folder.mkdir()
    lines = []
    for s in steps:
        lines.append(json.dumps({"step": s, "total": 1.0 / s}))
        if s % 100 == 0:
            lines.append(json.dumps({"step": s, "val": {"pck": s / 1000, "mask_iou": 0.9, "loss": 0.1, "samples": 4}}))
    text = "\n".join(lines) + "\n" + ('{"step": 99' if cut else "")
    (folder / "log.jsonl").write_text(text)
    (folder / "last.json").write_text(json.dumps({"batch": batch, "step": steps[-1]}))


def test_resumed_runs_make_one_curve_and_a_picture(tmp_path):
    _run(tmp_path / "a", range(20, 420, 20))
    _run(tmp_path / "b", range(420, 820, 20), cut=True)  # a killed run leaves a half line
    runs = curves.read_runs([str(tmp_path / "a"), str(tmp_path / "b")])
    assert runs["starts"] == [160, 3360]
    seen = [v[0] for v in runs["val"]]
    assert seen == sorted(seen) and seen[-1] == 800 * 8
    assert np.isclose(runs["val"][-1][1], 0.8)
    out = tmp_path / "c.png"
    curves.draw_curves(runs, str(out))
    img = np.asarray(Image.open(out))
    assert img.shape == (curves.H, 2 * curves.W, 3)
    assert (np.abs(img.astype(int) - curves.COLOURS["pck"]).sum(-1) < 10).sum() > 50  # the PCK line is drawn


def test_a_folder_without_a_log_is_one_line(tmp_path):
    with pytest.raises(DualPMError, match="no log.jsonl"):
        curves.read_runs([str(tmp_path)])
    assert curves.main([str(tmp_path), "--out", str(tmp_path / "x.png")]) == 2
    assert not (tmp_path / "x.png").exists()
