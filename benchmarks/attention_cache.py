"""Benchmark: what Attentive CutMix costs with an attention cache, next to CutMix and online attention.

Prints two tables, each measured side by side in one run (interleaved repetitions, medians):

1. train-step time (mix + forward + backward + Adam step) for ``none``, ``cutmix``, ``attentive-cutmix``
   with cached maps (taken from a real cache and upsampled to the image size, as the data loader
   delivers them) and ``attentive-cutmix`` online (the extractor runs on every batch), as ratios to
   ``cutmix``. Target: cached <= 1.05x cutmix.
2. cache-build throughput (``build_cache`` over N images) as a ratio to the extractor's bare eval
   throughput on the same images and batch size. Target: >= 0.9x.

CPU default (CIFAR ResNet-20, batch 128, 32 px, ResNet-56 extractor)::

    python benchmarks/attention_cache.py
    python benchmarks/attention_cache.py --device cuda --model resnet18 --extractor resnet152 --image-size 224
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from attentive_cutmix.attention import FeatureExtractor
from attentive_cutmix.cache import build_cache
from attentive_cutmix.mixing import AttentiveCutMix, CutMix
from attentive_cutmix.models import create_model

SHARED_WEIGHTS = Path(__file__).resolve().parents[2] / "shared" / "models" / "cifar10-resnet56.safetensors"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], object], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def _interleaved(cases: dict[str, Callable[[], object]], *, rounds: int, warmup: int, device: torch.device) -> dict[str, float]:
    """Median seconds per case; each round runs every case once, in a rotating order (no case always goes first)."""
    names = list(cases)
    for _ in range(warmup):
        for name in names:
            cases[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            times[name].append(_timed(cases[name], device))
    return {name: statistics.median(t) for name, t in times.items()}


def _extractor(args: argparse.Namespace, device: torch.device) -> tuple[FeatureExtractor, str]:
    weights = args.extractor_weights
    if weights is None and args.extractor == "cifar_resnet56" and SHARED_WEIGHTS.is_file():
        weights = str(SHARED_WEIGHTS)
    input_size = args.image_size if args.extractor.startswith("cifar_") else 224
    torch.manual_seed(0)
    ext = FeatureExtractor(args.extractor, weights=weights, input_size=input_size,
                           amp_dtype=torch.float16 if device.type == "cuda" else None).to(device)
    return ext, ("weights " + Path(weights).name if weights else "random weights")


def train_steps(args: argparse.Namespace, device: torch.device, extractor: FeatureExtractor, tmp: Path) -> dict[str, float]:
    gen = torch.Generator().manual_seed(0)
    b, s = args.batch_size, args.image_size
    images = torch.rand(b, 3, s, s, generator=gen).to(device)
    labels = torch.randint(0, 10, (b,), generator=gen).to(device)
    model = create_model(args.model, num_classes=10, image_size=s).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    # The cached maps come from a real cache of these images, upsampled to the image frame as the data
    # pipeline does per item (in its workers, outside the step).
    cache = build_cache(TensorDataset(images.cpu()), extractor, tmp / "step.safetensors", meta={"dataset": "bench"},
                        batch_size=args.build_batch_size, device=device, progress=False)
    maps = torch.from_numpy(np.array(cache.maps)).float().unsqueeze(1)
    attention = F.interpolate(maps, size=(s, s), mode="bilinear", align_corners=False).squeeze(1).to(device)

    cutmix = CutMix(10)
    cached = AttentiveCutMix(10)
    online = AttentiveCutMix(10, extractor)

    def step(mix: Callable[[], tuple[torch.Tensor, torch.Tensor]] | None) -> None:
        x, y = (images, labels) if mix is None else mix()
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    cases = {
        "none": lambda: step(None),
        "cutmix": lambda: step(lambda: cutmix(images, labels)),
        "attentive-cutmix (cache)": lambda: step(lambda: cached(images, labels, attention=attention)),
        "attentive-cutmix (online)": lambda: step(lambda: online(images, labels)),
    }
    return _interleaved(cases, rounds=args.rounds, warmup=2, device=device)


def build_throughput(args: argparse.Namespace, device: torch.device, extractor: FeatureExtractor, tmp: Path) -> dict[str, float]:
    n, bs, s = args.build_images, args.build_batch_size, args.image_size
    images = torch.rand(n, 3, s, s, generator=torch.Generator().manual_seed(1))
    dataset = TensorDataset(images)

    def bare() -> None:
        for i in range(0, n, bs):
            extractor(images[i:i + bs].to(device)).float().mean(dim=1)

    def build() -> None:
        build_cache(dataset, extractor, tmp / "build.safetensors", meta={"dataset": "bench"}, batch_size=bs,
                    device=device, progress=False)

    seconds = _interleaved({"bare extractor": bare, "build_cache": build}, rounds=args.build_rounds, warmup=1, device=device)
    return {name: n / sec for name, sec in seconds.items()}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--model", default="cifar_resnet20")
    p.add_argument("--extractor", default="cifar_resnet56")
    p.add_argument("--extractor-weights", default=None, help="default: ../shared/models/cifar10-resnet56.safetensors if present")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--rounds", type=int, default=9, help="interleaved train-step repetitions per method")
    p.add_argument("--build-images", type=int, default=512)
    p.add_argument("--build-batch-size", type=int, default=256)
    p.add_argument("--build-rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads (default 1 on CPU: ratios stay stable when other jobs share the cores)")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if args.threads or device.type == "cpu":
        torch.set_num_threads(args.threads or 1)
    extractor, source = _extractor(args, device)
    print(f"# device {device} ({torch.get_num_threads()} threads), torch {torch.__version__}; model {args.model}, "
          f"batch {args.batch_size}, {args.image_size} px; extractor {args.extractor} ({source}) at {extractor.input_size} px")

    with tempfile.TemporaryDirectory() as tmp:
        steps = train_steps(args, device, extractor, Path(tmp))
        print(f"\n## train step, median of {args.rounds} interleaved rounds")
        print("| method | ms / step | ratio to cutmix |\n|---|---:|---:|")
        for name, sec in steps.items():
            print(f"| {name} | {sec * 1e3:.1f} | {sec / steps['cutmix']:.3f} |")
        rates = build_throughput(args, device, extractor, Path(tmp))
        print(f"\n## cache build, {args.build_images} images, batch {args.build_batch_size}, median of {args.build_rounds} rounds")
        print("| path | images / s | ratio to bare extractor |\n|---|---:|---:|")
        for name, rate in rates.items():
            print(f"| {name} | {rate:.0f} | {rate / rates['bare extractor']:.3f} |")
    cached, build = steps["attentive-cutmix (cache)"] / steps["cutmix"], rates["build_cache"] / rates["bare extractor"]
    print(f"\ntargets: cached <= 1.05x cutmix: {cached:.3f} ({'met' if cached <= 1.05 else 'MISSED'}); "
          f"cache build >= 0.9x bare extractor: {build:.3f} ({'met' if build >= 0.9 else 'MISSED'})")


if __name__ == "__main__":
    main()
