"""Time of each mixer against timm's CutMix, torchvision v2 CutMix and a plain clone.

All candidates run interleaved, round after round, on the same batch. Each round visits the
candidates in a fresh random order and calls each one ``--calls`` times back to back, keeping the
median call: a candidate's time then does not depend on which candidate ran just before it (on CPU,
the allocator's state left by the previous candidate moved single-call times by up to 2x). The table
reports median times and, for ratios, the median of the per-round ratios, so load from other jobs on
a shared machine largely cancels. Usage::

    python benchmarks/mixers.py [--device cpu|cuda] [--rounds 30] [--calls 5] [--threads N]
"""
from __future__ import annotations

import argparse
import platform
import random
import statistics
import time
from datetime import date

import torch
from timm.data.mixup import Mixup
from torchvision.transforms import v2

from attentive_cutmix import registry


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _candidates(images: torch.Tensor, labels: torch.Tensor, k: int) -> dict:
    attention = torch.rand(images.shape[0], 7, 7, device=images.device)
    g = torch.Generator().manual_seed(0)
    # Every registered method at its defaults (the paper's settings), given maps where it reads them.
    ours = {f"{m.label} (ours)": m.make_mixer(m.options(), num_classes=k) for m in registry.methods()
            if m.build is not None}
    timm_cutmix = Mixup(mixup_alpha=0.0, cutmix_alpha=1.0, mode="batch", correct_lam=True, label_smoothing=0.0,
                        num_classes=k)
    tv_cutmix = v2.CutMix(num_classes=k, alpha=1.0)
    fns = {name: (lambda m=m: m(images, labels, attention=attention, generator=g)) for name, m in ours.items()}
    # timm's batch mode writes the box into the caller's tensor (no copy of its own to return); repeated
    # in-place mixing of the same batch does not change its cost.
    fns["timm Mixup (CutMix mode, in place)"] = lambda: timm_cutmix(images, labels)
    fns["torchvision v2 CutMix"] = lambda: tv_cutmix(images, labels)
    fns["images.clone()"] = lambda: images.clone()
    return fns


def _time_block(fn, device: torch.device, calls: int) -> float:
    times = []
    for _ in range(calls):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench(shape: tuple[int, int, int, int], device: torch.device, rounds: int, calls: int = 5,
          k: int = 10) -> dict[str, list[float]]:
    """Per-round times of every candidate, interleaved in a random order each round."""
    images = torch.rand(shape, device=device)
    labels = torch.randint(0, k, (shape[0],), device=device)
    fns = _candidates(images, labels, k)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(3):  # warm-up
        for fn in fns.values():
            fn()
    order = random.Random(0)
    for _ in range(rounds):
        for name in order.sample(list(fns), len(fns)):
            times[name].append(_time_block(fns[name], device, calls))
    return times


def _ratio(times: list[float], ref: list[float]) -> float:
    return statistics.median(t / r for t, r in zip(times, ref))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--calls", type=int, default=5, help="back-to-back calls per candidate and round (median kept)")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"# mixers benchmark, {date.today()}, torch {torch.__version__}, device {device}, "
          f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"{args.rounds} rounds x {args.calls} calls, medians")
    for shape in [(256, 3, 32, 32), (64, 3, 224, 224)]:
        times = bench(shape, device, args.rounds, args.calls)
        ref_timm = times["timm Mixup (CutMix mode, in place)"]
        ref_clone = times["images.clone()"]
        print(f"\nbatch {shape}")
        print("| mixer | median ms | / timm CutMix | / clone |")
        print("|---|---:|---:|---:|")
        for name, ts in times.items():
            print(f"| {name} | {statistics.median(ts) * 1e3:.3f} | {_ratio(ts, ref_timm):.2f}x "
                  f"| {_ratio(ts, ref_clone):.2f}x |")

if __name__ == "__main__":
    main()
