"""The predictor network: the contract's shapes and ranges, P on the pixel rays, P fed only detached Q."""

import numpy as np
import torch

from training.network import DualPMNet, NetworkConfig, tiny_config

SIZE = 64


def _net(**kw):
    cfg = tiny_config()
    cfg.size = SIZE
    for k, v in kw.items():
        setattr(cfg, k, v)
    return DualPMNet(cfg).eval()


def _inputs(n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    image = torch.randint(0, 256, (n, SIZE, SIZE, 3), dtype=torch.uint8, generator=g)
    mask = torch.full((n, SIZE, SIZE), 128, dtype=torch.uint8)
    return image, mask


def test_outputs_have_the_contract_shapes_and_ranges():
    net = _net()
    with torch.no_grad():
        out = net(*_inputs(3))
    assert out["P"].shape == (3, 4, SIZE, SIZE, 3) and out["Q"].shape == (3, 4, SIZE, SIZE, 3)
    assert out["occupancy"].shape == (3, 4, SIZE, SIZE) and out["confidence"].shape == (3, 4, SIZE, SIZE)
    assert float(out["occupancy"].min()) >= 0 and float(out["occupancy"].max()) <= 1
    assert float(out["confidence"].min()) >= 1
    z = out["P"][..., 2]
    assert float(z.min()) > 0
    assert bool((z[:, 1:] > z[:, :-1]).all())  # layers near to far by construction


def test_every_layer_lies_on_its_pixel_ray():
    net = _net()
    with torch.no_grad():
        out = net(*_inputs(1))
    P = out["P"][0].numpy()
    f = float(out["focal"][0])
    c = np.arange(SIZE) + 0.5 - SIZE / 2
    x_over_z = P[..., 0] / P[..., 2]
    y_over_z = P[..., 1] / P[..., 2]
    np.testing.assert_allclose(x_over_z, np.broadcast_to(c[None, None, :] / f, x_over_z.shape), atol=1e-5)
    np.testing.assert_allclose(y_over_z, np.broadcast_to(c[None, :, None] / f, y_over_z.shape), atol=1e-5)


def test_p_decoder_sees_no_image_features_and_q_is_detached():
    net = _net()
    net.train()
    image, mask = _inputs(2)
    out = net(image, mask)
    # P's gradient must not reach the Q decoder: P depends on the image only through detached Q
    out["P"].sum().backward()
    assert all(p.grad is None or float(p.grad.abs().sum()) == 0 for p in net.qdec.parameters())
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in net.pdec.parameters())


def test_backbone_is_frozen_and_stays_in_eval_mode():
    net = _net()
    net.train()
    assert not net.backbone.training
    assert all(not p.requires_grad for p in net.backbone.parameters())
    assert all(not n.startswith("backbone.") for n in net.trainable_state_dict())


def test_pretrained_backbone_loads_offline_and_mask_input_matters():
    cfg = NetworkConfig()  # the shipped configuration: ImageNet weights from the installed package
    cfg.size = SIZE
    net = DualPMNet(cfg).eval()
    w = net.backbone.stem.weight
    assert float(w.abs().sum()) > 0 and w.shape == (32, 3, 3, 3)
    image, _ = _inputs(1)
    with torch.no_grad():
        a = net(image, torch.full((1, SIZE, SIZE), 128, dtype=torch.uint8))["occupancy"]
        b = net(image, torch.full((1, SIZE, SIZE), 255, dtype=torch.uint8))["occupancy"]
    assert not torch.allclose(a, b)


def test_config_round_trips():
    cfg = tiny_config()
    assert NetworkConfig.from_dict(cfg.to_dict()) == cfg
