"""Training data for the predictor: synthesised on the fly or read from a folder of .npz samples.

A sample (DESIGN.md, `dualpm synth`): rgb (H,W,3) uint8, mask (H,W) bool, P, Q (K,H,W,3) float32,
occupancy (K,H,W), intrinsics (3,3), species, and where the synthesizer records it the clip.

Hold-out (the evaluation's "never seen" data): two whole species, deer (a slim cervid) and wolf
(a canid), one from each of the two body families among the 12 animals; their relatives stag and
husky/shibainu/fox stay in training, as a user's new animal would have relatives in the set. Also two clips of every
other species, Gallop_Jump and Idle_HitReact2 (motions whose neighbours Gallop and Idle_HitReact1
stay in training, so the test is on new poses, not new behaviours). `split()` applies it.

The network's mask input is trained with and without a mask: with probability `mask_prob` the
true mask (255/0) is given, otherwise 128 everywhere ("no mask").
"""

from __future__ import annotations

import glob
import os
import zipfile

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from dualpm_addon.errors import DualPMError

HELD_OUT_SPECIES = ("deer", "wolf")
HELD_OUT_CLIPS = ("Gallop_Jump", "Idle_HitReact2")
TRAIN_SPECIES = ("alpaca", "bull", "cow", "donkey", "fox", "horse", "horse_white", "husky", "shibainu", "stag")
MASK_NONE = 128


def _text(v) -> str:
    a = np.asarray(v)
    return str(a.item() if a.ndim == 0 else a.reshape(-1)[0]) if a.size else ""


def sample_meta(path: str) -> dict:
    """species and clip of an .npz sample without loading its big arrays."""
    try:
        with np.load(path, allow_pickle=False) as z:
            names = set(z.files)
            return {"species": _text(z["species"]) if "species" in names else "",
                    "clip": _text(z["clip"]) if "clip" in names else ""}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise DualPMError(f"{path}: not a readable sample ({e})") from None


def split_of(meta: dict) -> str:
    """'unseen_species', 'heldout_clips' or 'train'."""
    if meta["species"] in HELD_OUT_SPECIES:
        return "unseen_species"
    if meta["clip"] in HELD_OUT_CLIPS:
        return "heldout_clips"
    return "train"


def list_samples(folder: str) -> list[str]:
    if not os.path.isdir(folder):
        raise DualPMError(f"{folder}: no such data folder")
    files = sorted(glob.glob(os.path.join(folder, "**", "*.npz"), recursive=True))
    if not files:
        raise DualPMError(f"{folder}: holds no .npz samples")
    return files


def split(files: list[str]) -> dict[str, list[str]]:
    out = {"train": [], "heldout_clips": [], "unseen_species": []}
    for f in files:
        out[split_of(sample_meta(f))].append(f)
    return out


def mask_input(mask: np.ndarray, given: bool) -> np.ndarray:
    """The network's uint8 mask input: 255 animal / 0 background, or 128 everywhere (no mask)."""
    if not given:
        return np.full(mask.shape, MASK_NONE, np.uint8)
    return np.where(mask, 255, 0).astype(np.uint8)


def to_item(s: dict, rng: np.random.Generator | None, mask_prob: float) -> dict:
    """A synthesised or loaded sample -> the tensors training uses."""
    mask = np.asarray(s["mask"]).astype(bool)
    given = rng is not None and rng.random() < mask_prob
    return {
        "image": torch.from_numpy(np.ascontiguousarray(s["rgb"], dtype=np.uint8)),
        "mask_in": torch.from_numpy(mask_input(mask, given)),
        "mask": torch.from_numpy(mask),
        "P": torch.from_numpy(np.nan_to_num(np.asarray(s["P"], np.float32))),
        "Q": torch.from_numpy(np.nan_to_num(np.asarray(s["Q"], np.float32))),
        "occupancy": torch.from_numpy(np.asarray(s["occupancy"], np.float32)),
        "intrinsics": torch.from_numpy(np.asarray(s["intrinsics"], np.float32)),
    }


def load_sample(path: str) -> dict:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in ("rgb", "mask", "P", "Q", "occupancy", "intrinsics") if k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise DualPMError(f"{path}: not a readable sample ({e})") from None


class NpzFolder(Dataset):
    """Samples from .npz files. `mask_prob`: chance the true mask is given as input (training);
    with `seed` the choice is a deterministic function of (seed, index, epoch)."""

    def __init__(self, files: list[str], mask_prob: float = 0.5, seed: int = 0, train: bool = True):
        self.files = list(files)
        self.mask_prob = mask_prob
        self.seed = seed
        self.train = train
        self.epoch = 0

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        s = load_sample(self.files[i])
        rng = np.random.default_rng([self.seed, i, self.epoch]) if self.train else None
        return to_item(s, rng, self.mask_prob)


class SynthStream(IterableDataset):
    """Endless samples synthesised on the fly (training.synthesize.Synthesizer), one seed stream
    per worker; held-out species never appear."""

    def __init__(self, templates_dir: str, seed: int = 0, mask_prob: float = 0.5, size: int = 160,
                 layers: int = 4, species: tuple = TRAIN_SPECIES):
        self.templates_dir = templates_dir
        self.seed = seed
        self.mask_prob = mask_prob
        self.size = size
        self.layers = layers
        self.species = tuple(species)

    def __iter__(self):
        from training.synthesize import Synthesizer, sample_seed

        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        synth = Synthesizer(self.templates_dir, size=self.size, layers=self.layers, species=list(self.species),
                            exclude_clips=HELD_OUT_CLIPS)
        rng = np.random.default_rng([self.seed, wid, 7])
        k = wid
        while True:
            yield to_item(synth.sample(sample_seed(self.seed, k)), rng, self.mask_prob)
            k += nw


def random_batch(n: int, size: int = 160, layers: int = 4, seed: int = 0) -> dict:
    """Random tensors with the shapes of real samples (tests and development)."""
    g = torch.Generator().manual_seed(seed)
    occ = (torch.rand(n, layers, size, size, generator=g) > 0.5).float()
    return {
        "image": torch.randint(0, 256, (n, size, size, 3), dtype=torch.uint8, generator=g),
        "mask_in": torch.full((n, size, size), MASK_NONE, dtype=torch.uint8),
        "mask": occ[:, 0] > 0,
        "P": torch.randn(n, layers, size, size, 3, generator=g) * 0.3 + torch.tensor([0.0, 0.0, 5.0]),
        "Q": torch.randn(n, layers, size, size, 3, generator=g) * 0.5,
        "occupancy": occ,
        "intrinsics": torch.eye(3).expand(n, 3, 3).clone(),
    }


def toy_sample(seed: int, size: int = 160, layers: int = 4, species: str = "horse", clip: str = "Walk") -> dict:
    """A small, self-consistent stand-in for a synthesised sample (tests): an ellipsoid-like blob
    whose K layers lie on the pixel rays of a 50 mm camera, whose depth follows its apparent size
    and whose Q is a smooth function of the blob's own coordinates, so a network can learn it."""
    from dualpm_addon import camera

    r = np.random.default_rng(seed)
    v, u = np.mgrid[0:size, 0:size] + 0.5
    cx, cy = r.uniform(0.35, 0.65, 2) * size
    a, b = r.uniform(0.15, 0.28, 2) * size
    e = ((u - cx) / a) ** 2 + ((v - cy) / b) ** 2
    occ = np.stack([e < t for t in (1.0, 0.8, 0.5, 0.2, 0.1, 0.05)[:layers]]).astype(np.float32)
    k = camera.intrinsics_from_focal_mm(50.0, size, size).astype(np.float32)
    rays = camera.pixel_rays(k, size, size)
    depth = 0.4 * size / a  # larger on screen: nearer
    z = depth + 0.25 * np.arange(layers)[:, None, None] + 0.3 * np.minimum(e, 1.0)[None]
    P = (z[..., None] * rays[None]).astype(np.float32)
    q = np.stack([(u - cx) / a * 0.3, (v - cy) / b * 1.2, 1.0 - np.minimum(e, 1.0)], -1)
    Q = np.stack([q * (1.0 if i % 2 == 0 else -1.0) for i in range(layers)]).astype(np.float32)
    colour = r.integers(40, 255, 3)
    rgb = np.where((e < 1)[..., None], colour * (0.6 + 0.4 * np.minimum(e, 1.0))[..., None], 90).astype(np.uint8)
    return {"rgb": rgb, "mask": e < 1, "P": P, "Q": Q, "occupancy": occ, "intrinsics": k,
            "species": np.array(species), "clip": np.array(clip)}


def write_toy_folder(folder: str, n: int, size: int = 160, layers: int = 4, start: int = 0,
                     species: str = "horse", clip: str = "Walk") -> list[str]:
    os.makedirs(folder, exist_ok=True)
    out = []
    for i in range(n):
        path = os.path.join(folder, f"toy_{species}_{clip}_{start + i:05d}.npz")
        np.savez(path, **toy_sample(start + i, size, layers, species, clip))
        out.append(path)
    return out
