"""Images/s of one training step per mixing method, side by side.

A step is what the trainer does per batch: mix the [0, 1] images, normalise on the device, forward,
cross-entropy on the soft targets, backward, optimiser step. Attentive CutMix is measured twice:
with attention maps given (as from an attention cache) and with an online extractor (a frozen copy
of the same architecture at the same input size). Methods are interleaved over the repetitions so
a noisy machine slows them all alike; the table shows the median and the spread.

    python benchmarks/train_step.py                                   # CPU: cifar_resnet20, batch 128, 32 px
    python benchmarks/train_step.py --device cuda --model resnet18    # GPU
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from attentive_cutmix import AttentiveCutMix, CutMix, Cutout, FeatureExtractor, MixUp
from attentive_cutmix.models import create_model

AMP = {"off": None, "fp16": torch.float16, "bf16": torch.bfloat16}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_methods(args: argparse.Namespace, device: torch.device, num_classes: int) -> dict:
    extractor = FeatureExtractor(
        create_model(args.model, num_classes, args.image_size), input_size=args.image_size,
        amp_dtype=AMP[args.amp] or (torch.bfloat16 if device.type == "cuda" else None)).to(device)
    return {
        "none": (None, False),
        "mixup": (MixUp(num_classes), False),
        "cutmix": (CutMix(num_classes), False),
        "cutout": (Cutout(num_classes, size=args.image_size // 2), False),
        "attentive-cutmix (cached maps)": (AttentiveCutMix(num_classes), True),
        "attentive-cutmix (online extractor)": (AttentiveCutMix(num_classes, extractor), False),
    }


def time_method(model, optimizer, mixer, with_maps: bool, batch, args, device) -> float:
    images, labels, maps = batch
    mean = torch.tensor([0.5, 0.5, 0.5], device=device).view(1, 3, 1, 1)
    std = torch.tensor([0.25, 0.25, 0.25], device=device).view(1, 3, 1, 1)
    gen = torch.Generator().manual_seed(0)
    amp = AMP[args.amp] if device.type == "cuda" else None
    scaler = torch.amp.GradScaler("cuda", enabled=args.amp == "fp16" and device.type == "cuda")

    def step() -> None:
        x, y = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        if mixer is None:
            targets = F.one_hot(y, args.num_classes).float()
        else:
            x, targets = mixer(x, y, maps.to(device) if with_maps else None, generator=gen)
        x = (x - mean) / std
        if args.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), targets)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    for _ in range(args.warmup):
        step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    _sync(device)
    return args.steps * args.batch_size / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--model", default="cifar_resnet20")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--steps", type=int, default=5, help="timed steps per repetition")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--amp", choices=list(AMP), default="off")
    p.add_argument("--channels-last", action="store_true")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    batch = (torch.rand(args.batch_size, 3, args.image_size, args.image_size),
             torch.randint(0, args.num_classes, (args.batch_size,)), torch.rand(args.batch_size, 7, 7))
    if device.type == "cuda":
        batch = tuple(t.pin_memory() for t in batch)
    methods = make_methods(args, device, args.num_classes)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    model = create_model(args.model, args.num_classes, args.image_size).to(device, memory_format=fmt)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    rates: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(args.repeats):
        for name, (mixer, with_maps) in methods.items():
            rates[name].append(time_method(model, optimizer, mixer, with_maps, batch, args, device))
    base = statistics.median(rates["none"])
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"\n{args.model}, batch {args.batch_size}, {args.image_size} px, {where}, amp {args.amp}, "
          f"{args.repeats} x {args.steps} steps, torch {torch.__version__}")
    print(f"| {'method':<36} | {'images/s (median)':>17} | {'min-max':>15} | {'vs none':>7} |")
    print(f"|{'-' * 38}|{'-' * 19}|{'-' * 17}|{'-' * 9}|")
    for name, r in rates.items():
        med = statistics.median(r)
        print(f"| {name:<36} | {med:>17.0f} | {min(r):>6.0f}-{max(r):<8.0f} | {med / base:>7.2f} |")


if __name__ == "__main__":
    main()
