"""The training engine against its limit: the product's own loop, timed step by step.

Candidates, all measured in one run:

- the limit: the bare model's forward + backward + (fused) optimiser step on one batch already on the device;
- the trainer's loop for ``none``, ``cutmix`` and ``attentive-cutmix`` with cached maps, on the device path and
  on the loader path: steps of the trainer's own ``_Run`` object (``run._step(batch)`` over batches from
  ``run.batches.epoch(epoch)``, batch production included), so what is timed is the product's loop, not a copy.

Each round visits every candidate once, in a fresh random order; a visit starts the epoch's batch stream, takes
one step untimed (loader workers start, first batch), then times ``--steps`` steps. The table gives medians over
rounds: images/s, and the median of the per-round ratios to the limit (load from other jobs largely cancels).
Data: the synthetic set (32 px) with a real attention cache of 8x8 maps (its images average-pooled).

    python benchmarks/engine.py [--rounds 10] [--steps 4] [--device cpu|cuda] [--amp off|fp16|bf16]
                                [--channels-last] [--model cifar_resnet20] [--batch-size 128] [--threads 1]

``--epoch-folder DIR`` instead times one epoch over an image folder split on each path (setup, which on the
device path decodes the split into an image cache once, then the epoch), e.g. the real CIFAR-10 split::

    python benchmarks/engine.py --epoch-folder ../shared/data/cifar10-jpeg/train --val-fraction 0.1
"""
from __future__ import annotations

import argparse
import contextlib
import platform
import random
import statistics
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F

from attentive_cutmix.attention.cache import build_cache
from attentive_cutmix.data import build_datasets
from attentive_cutmix.models import create_model
from attentive_cutmix.training import make_config
from attentive_cutmix.training.components import build_optimizer
from attentive_cutmix.training.distributed import DistInfo
from attentive_cutmix.training.trainer import _autocast, _Run

METHODS = {"none": "none", "cutmix": "cutmix", "attentive-cutmix (cached)": "attentive-cutmix"}
PATHS = ("device", "loader")
LIMIT = "limit (bare model step)"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def _as_train_does(device: torch.device) -> Iterator[None]:
    """The global settings ``train()`` runs ``_Run`` under (deterministic algorithms on the CPU)."""
    before = torch.are_deterministic_algorithms_enabled()
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)


def _options(args: argparse.Namespace, out: Path, **kw: Any) -> dict[str, Any]:
    return dict(model=args.model, batch_size=args.batch_size, workers=args.workers, output_dir=str(out),
                progress=False, amp=args.amp, channels_last=args.channels_last, device=args.device, seed=0, **kw)


class _Loop:
    """One candidate: the trainer's ``_Run`` for a method and a data path."""

    def __init__(self, run: _Run, device: torch.device) -> None:
        self.run, self.device = run, device

    def block(self, steps: int) -> float:
        batches, total = self.run.batches.epoch(1)
        if total < steps + 1:
            raise SystemExit(f"an epoch has {total} steps; give --images >= {(steps + 1) * self.run.cfg.batch_size}")
        batches = iter(batches)
        self.run._step(next(batches))
        _sync(self.device)
        start = time.perf_counter()
        for _ in range(steps):
            self.run._step(next(batches))
        _sync(self.device)
        seconds = time.perf_counter() - start
        del batches  # the loader's workers stop here, not during another candidate's turn
        return seconds


class _Limit:
    """The bare model: forward + backward + the trainer's optimiser on a batch already on the device."""

    def __init__(self, args: argparse.Namespace, run: _Run, device: torch.device) -> None:
        cfg, info = run.cfg, run.info
        fmt = torch.channels_last if run.channels_last else torch.contiguous_format
        torch.manual_seed(cfg.seed)
        self.model = create_model(cfg.model.name, num_classes=info.num_classes, image_size=info.image_size).to(
            device, memory_format=fmt)
        self.optimizer = build_optimizer(cfg.optim, self.model)
        gen = torch.Generator().manual_seed(0)
        self.x = torch.rand(cfg.batch_size, 3, info.image_size, info.image_size, generator=gen).to(
            device, memory_format=fmt)
        self.y = torch.randint(0, info.num_classes, (cfg.batch_size,), generator=gen).to(device)
        self.device, self.amp = device, cfg.amp

    def step(self) -> None:
        with _autocast(self.device, self.amp):
            logits = self.model(self.x)
        loss = F.cross_entropy(logits.float(), self.y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def block(self, steps: int) -> float:
        self.step()
        _sync(self.device)
        start = time.perf_counter()
        for _ in range(steps):
            self.step()
        _sync(self.device)
        return time.perf_counter() - start


def _attention_cache(args: argparse.Namespace, path: Path) -> str:
    raw, _, info = build_datasets("synthetic", synthetic_size=[args.images, 8], augment=False)
    build_cache(raw, lambda x: F.adaptive_avg_pool2d(x, 8), path, meta={"fingerprint": info.train_fingerprint},
                batch_size=256, progress=False)
    return str(path)


def _candidates(args: argparse.Namespace, tmp: Path, device: torch.device) -> dict[str, Callable[[int], float]]:
    cache = _attention_cache(args, tmp / "attention.safetensors")
    found: dict[str, Callable[[int], float]] = {}
    first = None
    for path in PATHS:
        for label, method in METHODS.items():
            extra = {"attention_cache": cache} if method == "attentive-cutmix" else {}
            cfg = make_config(_options(args, tmp / f"{path}-{method}", dataset="synthetic",
                                       synthetic_size=[args.images, 8], method=method, data_path=path, **extra))
            run = _Run(cfg, DistInfo(), device)
            if run.batches.path != path:
                raise SystemExit(f"{label}: the trainer chose the {run.batches.path} path, not {path}")
            first = first or run
            found[f"{label} | {path}"] = _Loop(run, device).block
    return {LIMIT: _Limit(args, first, device).block, **found}


def loop_table(args: argparse.Namespace, device: torch.device) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        candidates = _candidates(args, Path(tmp), device)
        for block in candidates.values():  # warm-up: allocator, lazy initialisation, loader start-up paths
            block(1)
        times: dict[str, list[float]] = {name: [] for name in candidates}
        order = random.Random(0)
        for _ in range(args.rounds):
            for name in order.sample(list(candidates), len(candidates)):
                times[name].append(candidates[name](args.steps))
    images = args.steps * args.batch_size
    limit = times[LIMIT]
    print(f"\n## training loop vs the limit: {args.model}, batch {args.batch_size}, 32 px, amp {args.amp}, "
          f"channels_last {args.channels_last}, loader workers {args.workers}; {args.rounds} rounds x {args.steps} "
          "steps, medians (ratio: median of per-round ratios)")
    print("| candidate | data path | images/s | ratio to limit |\n|---|---|---:|---:|")
    for name, t in times.items():
        label, path = name.split(" | ") if " | " in name else (name, "(batch on the device)")
        ratio = statistics.median(lt / ct for lt, ct in zip(limit, t))
        print(f"| {label} | {path} | {images / statistics.median(t):.0f} | {ratio:.3f} |")
    print("\n| data path | cached attentive-cutmix time / none time |\n|---|---:|")
    summary = []
    for path in PATHS:
        acm, none = times[f"attentive-cutmix (cached) | {path}"], times[f"none | {path}"]
        cost = statistics.median(a / b for a, b in zip(acm, none))
        print(f"| {path} | {cost:.3f} |")
        summary.append((path, cost))
    worst = min(statistics.median(lt / ct for lt, ct in zip(limit, times[f"{label} | device"])) for label in METHODS)
    device_cost = dict(summary)["device"]
    print(f"\ntargets (issue 11): device-path loop >= 0.90x the limit for every method: worst {worst:.3f} "
          f"({'met' if worst >= 0.90 else 'MISSED'}); cached attentive-cutmix <= 1.03x none on the device path: "
          f"{device_cost:.3f} ({'met' if device_cost <= 1.03 else 'MISSED'})")


def epoch_table(args: argparse.Namespace, device: torch.device) -> None:
    """Setup and one epoch over an image folder's training split on each data path (real files, real decoding)."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for path in args.paths.split(","):
            cache = args.image_cache or str(Path(tmp) / "images.safetensors")
            extra = {"image_cache": cache} if path == "device" else {}
            cfg = make_config(_options(args, Path(tmp) / path, dataset="imagefolder", data_dir=args.epoch_folder,
                                       val_fraction=args.val_fraction, method=args.method, data_path=path, epochs=1,
                                       max_steps_per_epoch=args.max_steps, **extra))
            start = time.perf_counter()
            run = _Run(cfg, DistInfo(), device)
            setup = time.perf_counter() - start
            run.run()
            total = time.perf_counter() - start
            row = run.curve[0]
            rows.append((path, len(run.batches), setup,
                         total - setup, row["images_per_s"]))
    print(f"\n## one epoch over {args.epoch_folder} (val fraction {args.val_fraction}), method {args.method}, "
          f"{args.model}, batch {args.batch_size}, loader workers {args.workers}")
    print("| data path | train images | setup s (decode, cache) | epoch + eval + checkpoint s | train images/s |")
    print("|---|---:|---:|---:|---:|")
    for path, n, setup, epoch, rate in rows:
        print(f"| {path} | {n} | {setup:.1f} | {epoch:.1f} | {rate:.0f} |")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--model", default="cifar_resnet20")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--amp", default="off", choices=["off", "fp16", "bf16"])
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: stable on a shared machine)")
    p.add_argument("--workers", type=int, default=1, help="loader-path DataLoader workers (default 1)")
    p.add_argument("--rounds", type=int, default=10, help="interleaved rounds (default 10)")
    p.add_argument("--steps", type=int, default=4, help="timed steps per candidate and round (default 4)")
    p.add_argument("--images", type=int, default=1024, help="synthetic training images (default 1024)")
    p.add_argument("--epoch-folder", default=None, help="time one epoch over this image folder instead")
    p.add_argument("--val-fraction", type=float, default=0.1, help="with --epoch-folder: held out (default 0.1)")
    p.add_argument("--paths", default="device,loader", help="with --epoch-folder: data paths, in this order")
    p.add_argument("--method", default="none", help="with --epoch-folder: the method (default none)")
    p.add_argument("--image-cache", default=None,
                   help="with --epoch-folder: keep the device path's decoded images in this file")
    p.add_argument("--max-steps", type=int, default=None, help="with --epoch-folder: stop the epoch after N steps")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    print(f"# engine benchmark, {date.today()}, torch {torch.__version__}, device {device}"
          f"{' (' + torch.cuda.get_device_name(device) + ')' if device.type == 'cuda' else ''}, "
          f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads")
    with _as_train_does(device):
        if args.epoch_folder:
            epoch_table(args, device)
        else:
            loop_table(args, device)


if __name__ == "__main__":
    main()
