"""dualpm train: a tiny model overfits 8 samples; checkpoints resume; the log is JSON lines."""

import json
import os

import numpy as np
import pytest
import torch

from dualpm_addon import cli
from dualpm_addon.errors import DualPMError
from training import dataset as ds
from training import train
from training.loss import dualpm_loss
from training.network import DualPMNet, tiny_config

SIZE = 64
OVERFIT_SIZE = 32  # the smallest input the stride-32 backbone takes: keeps the overfit test fast


def _fit_error(parts):
    # the calibrated loss can go negative (its -log c term): judge the fit by its non-negative parts
    return float(parts["P_rmse"]) ** 2 + float(parts["Q_rmse"]) ** 2 + float(parts["occ"])


def test_tiny_model_overfits_eight_samples():
    torch.manual_seed(0)
    cfg = tiny_config()
    cfg.size = OVERFIT_SIZE
    net = DualPMNet(cfg).train()
    samples = [ds.to_item(ds.toy_sample(i, OVERFIT_SIZE), np.random.default_rng(i), 0.5) for i in range(8)]
    batch = {k: torch.stack([s[k] for s in samples]) for k in samples[0]}
    opt = torch.optim.AdamW(net.trainable_parameters(), lr=1e-2)
    first = None
    for step in range(150):
        for g in opt.param_groups:
            g["lr"] = 1e-2 if step < 105 else 2e-3
        parts = dualpm_loss(net(batch["image"], batch["mask_in"]), batch)
        opt.zero_grad()
        parts["total"].backward()
        opt.step()
        if first is None:
            first = _fit_error(parts)
    net.eval()
    with torch.no_grad():
        last = _fit_error(dualpm_loss(net(batch["image"], batch["mask_in"]), batch))
    assert last < first / 10, (first, last)


def test_train_command_writes_log_checkpoints_and_resumes(tmp_path):
    data = tmp_path / "data"
    ds.write_toy_folder(str(data), 6, SIZE)
    ds.write_toy_folder(str(data), 2, SIZE, start=100, clip="Gallop_Jump")  # held out: validation
    out = tmp_path / "run"
    argv = ["train", "--data", str(data), "--out", str(out), "--steps", "4", "--batch", "2", "--config", "tiny",
            "--no-pretrained", "--size", str(SIZE), "--workers", "0", "--val-every", "2", "--log-every", "1"]
    assert cli.main(argv) == 0
    for name in ("last.safetensors", "last.optim.safetensors", "last.json", "best.safetensors", "log.jsonl"):
        assert (out / name).is_file(), name
    meta = json.loads((out / "last.json").read_text())
    assert meta["step"] == 4
    lines = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert any("val" in x for x in lines) and any("total" in x for x in lines)
    # resume: continues from step 4 to 6 with the saved weights and optimizer state
    before = train.load_network(str(out / "last.safetensors"), pretrained=False).trainable_state_dict()
    assert cli.main(argv[:6] + ["6"] + argv[7:]) == 0
    assert json.loads((out / "last.json").read_text())["step"] == 6
    after = train.load_network(str(out / "last.safetensors"), pretrained=False).trainable_state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_checkpoint_holds_no_pickle(tmp_path):
    cfg = tiny_config()
    cfg.size = SIZE
    net = DualPMNet(cfg)
    opt = torch.optim.AdamW(net.trainable_parameters(), lr=1e-3)
    batch = ds.random_batch(2, SIZE)
    dualpm_loss(net(batch["image"], batch["mask_in"]), batch)["total"].backward()
    opt.step()
    train.save_checkpoint(str(tmp_path), "c", net, opt, {"step": 1})
    opt2 = torch.optim.AdamW(net.trainable_parameters(), lr=1e-3)
    train.load_optimizer(str(tmp_path), "c", opt2, json.loads((tmp_path / "c.json").read_text()))
    a, b = opt.state_dict()["state"], opt2.state_dict()["state"]
    assert a.keys() == b.keys() and all(torch.equal(a[i]["exp_avg"], b[i]["exp_avg"]) for i in a)
    with open(tmp_path / "c.safetensors", "rb") as f:
        assert b"pickle" not in f.read(4096)


def test_bad_inputs_are_one_line_errors(tmp_path):
    with pytest.raises(DualPMError, match="no such data folder"):
        ds.list_samples(str(tmp_path / "missing"))
    with pytest.raises(DualPMError, match="no such checkpoint"):
        train.load_network(str(tmp_path / "none.safetensors"))
    assert cli.main(["train", "--out", str(tmp_path / "r"), "--config", "tiny", "--no-pretrained"]) == 2


def test_held_out_split():
    assert ds.split_of({"species": "deer", "clip": "Walk"}) == "unseen_species"
    assert ds.split_of({"species": "horse", "clip": "Gallop_Jump"}) == "heldout_clips"
    assert ds.split_of({"species": "horse", "clip": "Walk"}) == "train"
    assert not set(ds.HELD_OUT_SPECIES) & set(ds.TRAIN_SPECIES)
