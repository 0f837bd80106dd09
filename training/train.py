"""`dualpm train`: train the DualPM predictor on synthesised samples (files or on the fly).

    dualpm train --data .cache/synth --out .cache/train/run1 --steps 20000 --batch 8
    dualpm train --synth --templates .cache/templates --out DIR ...   (samples made on the fly)

CPU or CUDA (`--device`), mixed precision on CUDA (bf16 where supported, else fp16 with a grad
scaler). Resumable: `DIR/last.safetensors` holds the trainable weights and BatchNorm statistics,
`DIR/last.optim.safetensors` the optimizer's tensors and `DIR/last.json` the step, the network
config and the optimizer's hyper-parameters; a run started on a DIR that has them continues.
Nothing is pickled. `DIR/best.safetensors` keeps the checkpoint with the lowest validation loss.
`DIR/log.jsonl`: one JSON line per logged step (losses, learning rate, samples/s) and per
validation (loss, PCK@0.1, mask IoU on held-out clips). Progress goes to stderr.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader

from dualpm_addon.errors import DualPMError
from training import dataset as ds
from training.loss import dualpm_loss
from training.network import DualPMNet, NetworkConfig, tiny_config


def add_arguments(p):
    p.add_argument("--data", help="folder of .npz samples (dualpm synth); held-out species/clips are excluded")
    p.add_argument("--synth", action="store_true", help="synthesise training samples on the fly")
    p.add_argument("--templates", default=".cache/templates", help="baked templates (with --synth)")
    p.add_argument("--val-data", help="validation .npz folder (default: the held-out clips found in --data)")
    p.add_argument("--out", required=True, help="run folder: checkpoints and log.jsonl")
    p.add_argument("--steps", type=int, default=20000)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mask-prob", type=float, default=0.5, help="chance the true mask is given as input")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--config", default="default", choices=["default", "tiny"])
    p.add_argument("--log-every", type=int, default=20)
    p.add_argument("--val-every", type=int, default=500)
    p.add_argument("--val-samples", type=int, default=32)
    p.add_argument("--ckpt-minutes", type=float, default=3.0, help="save a checkpoint at least this often")
    p.add_argument("--time-limit", type=float, default=0.0, help="stop (with a checkpoint) after this many minutes")
    p.add_argument("--size", type=int, default=160, help="input size (160 is the shipped contract; smaller for tests)")
    p.add_argument("--no-pretrained", action="store_true", help="random backbone (tests)")


# -- checkpoints --------------------------------------------------------------------------------

def save_checkpoint(out_dir: str, name: str, net: DualPMNet, opt: torch.optim.Optimizer | None, meta: dict) -> None:
    os.makedirs(out_dir, exist_ok=True)
    weights = {k: v.detach().cpu().contiguous() for k, v in net.trainable_state_dict().items()}
    tmp = os.path.join(out_dir, f".{name}.tmp")
    save_file(weights, tmp + ".safetensors", metadata={"config": json.dumps(net.cfg.to_dict())})
    os.replace(tmp + ".safetensors", os.path.join(out_dir, f"{name}.safetensors"))
    meta = dict(meta, config=net.cfg.to_dict())
    if opt is not None:
        sd = opt.state_dict()
        tensors = {}
        for idx, st in sd["state"].items():
            for key, val in st.items():
                tensors[f"{idx}.{key}"] = torch.as_tensor(val).detach().cpu().contiguous()
        save_file(tensors, tmp + ".optim.safetensors")
        os.replace(tmp + ".optim.safetensors", os.path.join(out_dir, f"{name}.optim.safetensors"))
        meta["param_groups"] = sd["param_groups"]
    with open(tmp + ".json", "w") as f:
        json.dump(meta, f, indent=1)
    os.replace(tmp + ".json", os.path.join(out_dir, f"{name}.json"))


def load_network(path: str, pretrained: bool = True) -> DualPMNet:
    """A network from a checkpoint's .safetensors (its config is in the file's metadata)."""
    if not os.path.isfile(path):
        raise DualPMError(f"{path}: no such checkpoint")
    from safetensors import safe_open

    with safe_open(path, "pt") as f:
        meta = f.metadata() or {}
    if "config" not in meta:
        raise DualPMError(f"{path}: not a DualPM checkpoint (no config in its metadata)")
    cfg = NetworkConfig.from_dict(json.loads(meta["config"]))
    if not pretrained:
        cfg.pretrained = False
    net = DualPMNet(cfg)
    missing, unexpected = net.load_state_dict(load_file(path), strict=False)
    missing = [m for m in missing if not m.startswith("backbone.")]
    if missing or unexpected:
        raise DualPMError(f"{path}: checkpoint does not match the network (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return net


def load_optimizer(out_dir: str, name: str, opt: torch.optim.Optimizer, meta: dict) -> None:
    tensors = load_file(os.path.join(out_dir, f"{name}.optim.safetensors"))
    state = {}
    for key, val in tensors.items():
        idx, field = key.split(".", 1)
        state.setdefault(int(idx), {})[field] = val
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


# -- training -----------------------------------------------------------------------------------

def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise DualPMError("--device cuda: no CUDA device here")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def lr_at(step: int, base: float, warmup: int, total: int) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * t)))


def to_device(batch: dict, device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def validate(net: DualPMNet, loader, device, max_samples: int) -> dict:
    from dualpm_addon import metrics

    net.eval()
    losses, pck, iou, n = [], [], [], 0
    with torch.no_grad():
        for batch in loader:
            batch = to_device(batch, device)
            out = net(batch["image"], batch["mask_in"])
            losses.append(float(dualpm_loss(out, batch)["total"]))
            for i in range(batch["image"].shape[0]):
                pred = {k: out[k][i].float().cpu().numpy() for k in ("P", "Q", "occupancy", "confidence")}
                true = {k: batch[k][i].float().cpu().numpy() for k in ("P", "Q", "occupancy")}
                pck.append(metrics.pck(pred, true))
                iou.append(metrics.mask_iou(pred["occupancy"][0] > 0.5, true["occupancy"][0] > 0.5))
            n += batch["image"].shape[0]
            if n >= max_samples:
                break
    net.train()
    return {"loss": float(np.mean(losses)), "pck": float(np.nanmean(pck)), "mask_iou": float(np.mean(iou)), "samples": n}


def make_loaders(args, meta_cache: dict | None = None):
    """Training and validation loaders. With --data the folder is listed again at every epoch
    (see run), so training can start while `dualpm synth` is still writing; `meta_cache` keeps
    each file's species and clip so a re-listing opens only new files."""
    val_files = []
    if args.data:
        files = ds.list_samples(args.data)
        meta_cache = {} if meta_cache is None else meta_cache
        parts = {"train": [], "heldout_clips": [], "unseen_species": []}
        for f in files:
            if f not in meta_cache:
                meta_cache[f] = ds.split_of(ds.sample_meta(f))
            parts[meta_cache[f]].append(f)
        train_files = parts["train"]
        val_files = parts["heldout_clips"] or parts["unseen_species"]
        if not train_files:
            raise DualPMError(f"{args.data}: no training samples (all are held out)")
        train_set = ds.NpzFolder(train_files, mask_prob=args.mask_prob, seed=args.seed)
    elif args.synth:
        train_set = ds.SynthStream(args.templates, seed=args.seed, mask_prob=args.mask_prob)
    else:
        raise DualPMError("give --data DIR or --synth")
    if args.val_data:
        val_files = ds.list_samples(args.val_data)
    val_files = val_files[: args.val_samples]
    kw = dict(batch_size=args.batch, num_workers=args.workers, drop_last=True, persistent_workers=args.workers > 0)
    if isinstance(train_set, ds.NpzFolder):
        if len(train_set) < args.batch:
            raise DualPMError(f"--batch {args.batch}: only {len(train_set)} training samples")
        g = torch.Generator().manual_seed(args.seed)
        train = DataLoader(train_set, shuffle=True, generator=g, **kw)
    else:
        train = DataLoader(train_set, **kw)
    val = None
    if val_files:
        # validation always gives half its samples a mask: mask_prob=0.5 with a fixed seed
        val = DataLoader(ds.NpzFolder(val_files, mask_prob=0.5, seed=12345, train=True),
                         batch_size=min(args.batch, len(val_files)), num_workers=0)
    return train, val


def run(args) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    device = pick_device(args.device)
    cfg = tiny_config() if args.config == "tiny" else NetworkConfig()
    if args.no_pretrained:
        cfg.pretrained = False
    cfg.size = args.size
    last = os.path.join(args.out, "last.safetensors")
    resume = os.path.isfile(last)
    net = load_network(last, pretrained=cfg.pretrained) if resume else DualPMNet(cfg)
    net.to(device).train()
    opt = torch.optim.AdamW(net.trainable_parameters(), lr=args.lr, weight_decay=args.weight_decay)
    step, best = 0, float("inf")
    if resume:
        with open(os.path.join(args.out, "last.json")) as f:
            meta = json.load(f)
        load_optimizer(args.out, "last", opt, meta)
        step, best = int(meta["step"]), float(meta.get("best_val", best))
        print(f"dualpm train: resuming {args.out} at step {step}", file=sys.stderr)
    meta_cache: dict = {}
    train_loader, val_loader = make_loaders(args, meta_cache)
    amp = device.type == "cuda"
    amp_dtype = torch.bfloat16 if amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=amp and amp_dtype == torch.float16)
    os.makedirs(args.out, exist_ok=True)
    log = open(os.path.join(args.out, "log.jsonl"), "a")
    t_start = time.time()
    t_ckpt = t_start
    seen, t_log = 0, t_start
    meta = {"seed": args.seed, "batch": args.batch, "lr": args.lr, "steps": args.steps, "data": args.data,
            "synth": args.synth, "device": str(device)}
    epoch = 0
    start_step = step
    done = step >= args.steps
    while not done:
        if isinstance(train_loader.dataset, ds.NpzFolder):
            if epoch > 0 and len(ds.list_samples(args.data)) != len(meta_cache):
                train_loader, val_loader = make_loaders(args, meta_cache)
                print(f"dualpm train: {len(train_loader.dataset)} training samples now", file=sys.stderr)
            train_loader.dataset.epoch = epoch
        for batch in train_loader:
            batch = to_device(batch, device)
            # cosine decay over whichever budget runs out first, the steps or --time-limit (a
            # resumed run starts a new schedule: warm-up, then decay over its own budget)
            frac = (step - start_step) / max(1, args.steps - start_step)
            if args.time_limit:
                frac = max(frac, (time.time() - t_start) / (60.0 * args.time_limit))
            lr = lr_at(step - start_step, args.lr, args.warmup, 1 << 40) if step - start_step < args.warmup else \
                args.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))
            for g in opt.param_groups:
                g["lr"] = lr
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp):
                out = net(batch["image"], batch["mask_in"])
            parts = dualpm_loss(out, batch)
            if not torch.isfinite(parts["total"]):
                print(f"dualpm train: non-finite loss at step {step}; batch skipped", file=sys.stderr)
                opt.zero_grad(set_to_none=True)
                continue
            opt.zero_grad(set_to_none=True)
            scaler.scale(parts["total"]).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(net.trainable_parameters(), 5.0)
            scaler.step(opt)
            scaler.update()
            step += 1
            seen += batch["image"].shape[0]
            now = time.time()
            if step % args.log_every == 0 or step == 1:
                rate = seen / max(1e-9, now - t_log)
                seen, t_log = 0, now
                rec = {"step": step, "time_s": round(now - t_start, 1), "lr": opt.param_groups[0]["lr"],
                       "samples_per_s": round(rate, 2), **{k: round(float(v.detach()), 5) for k, v in parts.items()}}
                log.write(json.dumps(rec) + "\n")
                log.flush()
                print(f"step {step}/{args.steps} loss {rec['total']:.4f} P_rmse {rec['P_rmse']:.3f} "
                      f"Q_rmse {rec['Q_rmse']:.3f} occ {rec['occ']:.4f} {rate:.1f} samples/s", file=sys.stderr)
            over_time = args.time_limit and (now - t_start) / 60.0 >= args.time_limit
            done = step >= args.steps or bool(over_time)
            if val_loader is not None and (step % args.val_every == 0 or done):
                v = validate(net, val_loader, device, args.val_samples)
                log.write(json.dumps({"step": step, "time_s": round(now - t_start, 1), "val": v}) + "\n")
                log.flush()
                print(f"validation at step {step}: {v}", file=sys.stderr)
                if v["loss"] < best:
                    best = v["loss"]
                    save_checkpoint(args.out, "best", net, None, dict(meta, step=step, val=v))
            if done or now - t_ckpt >= args.ckpt_minutes * 60:
                save_checkpoint(args.out, "last", net, opt, dict(meta, step=step, best_val=best,
                                                                 elapsed_s=round(now - t_start, 1)))
                t_ckpt = now
            if done:
                break
        epoch += 1
    log.close()
    print(f"dualpm train: stopped at step {step}; checkpoints in {args.out}", file=sys.stderr)
    return 0
