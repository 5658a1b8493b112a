"""Dense soft targets against index pairs (``target_format="pair"``) for a large label space.

One step's label work: the mixer's call, then the loss and its backward to the logits, for CutMix with dense (B, K)
targets and ``F.cross_entropy`` against CutMix with ``target_format="pair"`` and ``mixed_cross_entropy``. Both
candidates run interleaved, in a fresh random order each round; the table gives median times and the median of the
per-round ratios. Usage::

    python benchmarks/targets.py [--classes 1000] [--batch-size 256] [--size 32] [--rounds 30] [--threads N]
"""
from __future__ import annotations

import argparse
import platform
import random
import statistics
import time

import torch
import torch.nn.functional as F

from attentive_cutmix import CutMix, mixed_cross_entropy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--smoothing", type=float, default=0.1)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    k, b, s = args.classes, args.batch_size, args.size
    g = torch.Generator().manual_seed(0)
    images, labels = torch.rand(b, 3, s, s, generator=g), torch.randint(0, k, (b,), generator=g)
    logits = torch.randn(b, k, generator=g, requires_grad=True)
    dense, pair = CutMix(k, label_smoothing=args.smoothing), CutMix(k, target_format="pair")

    def step_dense() -> None:
        _, targets = dense(images, labels, generator=g)
        F.cross_entropy(logits, targets).backward()

    def step_pair() -> None:
        _, pairs = pair(images, labels, generator=g)
        mixed_cross_entropy(logits, pairs, label_smoothing=args.smoothing).backward()

    _, fixed_dense = dense(images, labels, generator=g)
    _, fixed_pairs = pair(images, labels, generator=g)

    def loss_dense() -> None:
        F.cross_entropy(logits, fixed_dense).backward()

    def loss_pair() -> None:
        mixed_cross_entropy(logits, fixed_pairs, label_smoothing=args.smoothing).backward()

    fns = {"dense targets + F.cross_entropy": step_dense, "pair targets + mixed_cross_entropy": step_pair,
           "loss only: F.cross_entropy on dense": loss_dense, "loss only: mixed_cross_entropy on pairs": loss_pair}
    for fn in fns.values():  # warm up
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(args.rounds):
        for name in random.sample(list(fns), len(fns)):
            calls = []
            for _ in range(args.calls):
                t0 = time.perf_counter()
                fns[name]()
                calls.append(time.perf_counter() - t0)
            times[name].append(statistics.median(calls))
    base = times["dense targets + F.cross_entropy"]
    print(f"CutMix step (mixer + loss + backward to logits), batch ({b}, 3, {s}, {s}), {k} classes, "
          f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads\n")
    print("| targets | median ms | / dense step |\n|---|---:|---:|")
    for name, ts in times.items():
        ratio = statistics.median(t / d for t, d in zip(ts, base))
        print(f"| {name} | {statistics.median(ts) * 1e3:.3f} | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
