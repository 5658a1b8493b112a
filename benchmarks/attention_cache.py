"""Benchmark: what Attentive CutMix costs with an attention cache, next to CutMix and online attention.

Prints four tables, each measured side by side in one run (interleaved repetitions; ratios are the
median of per-round ratios, so load from other jobs on a shared machine largely cancels):

1. train-step time (mix + forward + backward + Adam step) for ``none``, ``cutmix``, ``attentive-cutmix``
   with cached maps (taken from a real cache and upsampled to the image size, as the data loader
   delivers them) and ``attentive-cutmix`` online (the extractor runs on every batch), as ratios to
   ``cutmix``. Target: cached <= 1.05x cutmix. Then the two mixers alone, the only part of the step
   that differs between them (small, so measured many more times).
2. cache-build throughput (``build_cache`` over N images) as a ratio to the extractor's bare eval
   throughput on the same images and batch size. Target: >= 0.9x.
3. (at <= 64 px) the data pipeline's cost per train item with and without a cached map: work done in
   the DataLoader workers, beside the train step.

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
from torch import nn
from torch.utils.data import TensorDataset

from attentive_cutmix import AttentiveCutMix, CutMix
from attentive_cutmix.attention import FeatureExtractor, load_extractor
from attentive_cutmix.attention.cache import build_cache
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


def _interleaved(cases: dict[str, Callable[[], object]], *, rounds: int, warmup: int,
                 device: torch.device) -> dict[str, list[float]]:
    """Seconds of each case per round; a round runs every case once, in a rotating order (none always goes first)."""
    names = list(cases)
    for _ in range(warmup):
        for name in names:
            cases[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            times[name].append(_timed(cases[name], device))
    return times


def _summary(times: dict[str, list[float]], reference: str) -> dict[str, tuple[float, float]]:
    """name -> (median seconds, median over rounds of the ratio to ``reference`` in the same round).

    Ratios within a round compare runs seconds apart, so load from other jobs on a shared machine
    cancels out far better than in a ratio of overall medians.
    """
    ref = times[reference]
    return {name: (statistics.median(t), statistics.median(a / b for a, b in zip(t, ref))) for name, t in times.items()}


def zero_init_residual_(net: nn.Module) -> int:
    """Zero the last norm of every residual branch (torchvision's ``zero_init_residual``, timm's ``zero_init_last``).

    Each block then starts as the identity. With plain random weights a ResNet-152's activations grow block by
    block (5.7e8 at ``layer4``): past float16, so ``build_cache`` refuses the maps and fp16 autocast overflows.
    Returns the number of blocks changed.
    """
    from torchvision.models.resnet import BasicBlock, Bottleneck

    from attentive_cutmix.models.cifar_resnet import BasicBlock as CifarBasicBlock

    blocks = 0
    for m in net.modules():
        if isinstance(m, Bottleneck):
            nn.init.zeros_(m.bn3.weight)
        elif isinstance(m, (BasicBlock, CifarBasicBlock)):
            nn.init.zeros_(m.bn2.weight)
        elif callable(getattr(m, "zero_init_last", None)):  # timm's residual blocks
            m.zero_init_last()
        else:
            continue
        blocks += 1
    return blocks


def _extractor(args: argparse.Namespace, device: torch.device) -> tuple[FeatureExtractor, str]:
    weights = args.extractor_weights
    if weights is None and args.extractor == "cifar_resnet56" and SHARED_WEIGHTS.is_file():
        weights = str(SHARED_WEIGHTS)
    input_size = args.image_size if args.extractor.startswith("cifar_") else 224
    torch.manual_seed(0)
    ext = load_extractor(args.extractor, weights=weights, input_size=input_size,
                         amp_dtype=torch.float16 if device.type == "cuda" else None)
    if weights:
        return ext.to(device), "weights " + Path(weights).name
    blocks = zero_init_residual_(ext.model)
    return ext.to(device), f"random weights, {blocks} residual blocks zero-initialised"


def check_maps_fit_float16(extractor: FeatureExtractor, images: torch.Tensor) -> float:
    """The largest |value| of the extractor's maps of ``images``; a clear error unless it fits float16.

    The cache stores float16 and CUDA runs the extractor under fp16 autocast, so a larger value (caught here on
    any device) would stop ``build_cache``, or trip an on-device assert in the online mixer that leaves the CUDA
    context unusable for the rest of the process. Checked once, before any timing.
    """
    with torch.no_grad():
        largest = float(extractor(images).float().abs().amax())
    if not largest <= torch.finfo(torch.float16).max:  # NaN fails too
        raise SystemExit(f"the extractor {extractor.name!r} gives maps up to {largest:.3g} on random images, beyond "
                         f"float16 (65504); give trained weights (--extractor-weights) or a network whose residual "
                         "blocks zero_init_residual_ can reach")
    return largest


def train_steps(args: argparse.Namespace, device: torch.device, extractor: FeatureExtractor,
                tmp: Path) -> tuple[dict[str, tuple[float, float]], dict[str, tuple[float, float]]]:
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
    steps = _summary(_interleaved(cases, rounds=args.rounds, warmup=2, device=device), "cutmix")
    # The mixers alone: the only part of the step that differs between the cached path and CutMix,
    # measured many times because it is small next to the step's noise on a shared machine.
    mixers = {"cutmix": lambda: cutmix(images, labels),
              "attentive-cutmix (cache)": lambda: cached(images, labels, attention=attention)}
    alone = _summary(_interleaved(mixers, rounds=10 * args.rounds, warmup=3, device=device), "cutmix")
    return steps, alone


def build_throughput(args: argparse.Namespace, device: torch.device, extractor: FeatureExtractor,
                     tmp: Path) -> dict[str, tuple[float, float]]:
    n, bs, s = args.build_images, args.build_batch_size, args.image_size
    images = torch.rand(n, 3, s, s, generator=torch.Generator().manual_seed(1))
    dataset = TensorDataset(images)

    def bare() -> None:
        for i in range(0, n, bs):
            extractor(images[i:i + bs].to(device)).float().mean(dim=1)

    def build() -> None:
        build_cache(dataset, extractor, tmp / "build.safetensors", meta={"dataset": "bench"}, batch_size=bs,
                    device=device, progress=False)

    times = _interleaved({"bare extractor": bare, "build_cache": build}, rounds=args.build_rounds, warmup=1,
                         device=device)
    # Throughput ratio = bare time / build time, per round.
    return {name: (n / sec, 1.0 / ratio) for name, (sec, ratio) in _summary(times, "bare extractor").items()}


def item_cost(args: argparse.Namespace, tmp: Path) -> dict[str, tuple[float, float]] | None:
    """Seconds per train item from the data pipeline with and without a cache (work done in loader workers)."""
    if args.image_size > 64:
        return None
    from attentive_cutmix.data import build_datasets

    raw, _, info = build_datasets("synthetic", synthetic_size=args.batch_size, image_size=args.image_size,
                                  augment=False)
    cache = build_cache(raw, lambda x: F.adaptive_avg_pool2d(x, 8), tmp / "items.safetensors",
                        meta={"dataset": info.name}, progress=False)
    plain, _, _ = build_datasets("synthetic", synthetic_size=args.batch_size, image_size=args.image_size)
    cached, _, _ = build_datasets("synthetic", synthetic_size=args.batch_size, image_size=args.image_size,
                                  attention_cache=cache)
    n = len(plain)

    def fetch(ds) -> Callable[[], None]:
        return lambda: [ds[i] for i in range(n)]

    times = _interleaved({"image": fetch(plain), "image + cached map": fetch(cached)}, rounds=5, warmup=1,
                         device=torch.device("cpu"))
    return {name: (sec / n, ratio) for name, (sec, ratio) in _summary(times, "image").items()}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--model", default="cifar_resnet20")
    p.add_argument("--extractor", default="cifar_resnet56")
    p.add_argument("--extractor-weights", default=None,
                   help="default: ../shared/models/cifar10-resnet56.safetensors if present")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--rounds", type=int, default=13, help="interleaved train-step repetitions per method")
    p.add_argument("--build-images", type=int, default=512)
    p.add_argument("--build-batch-size", type=int, default=256)
    p.add_argument("--build-rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads (default 1 on CPU: ratios stay stable when other jobs share the cores)")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if args.threads or device.type == "cpu":
        torch.set_num_threads(args.threads or 1)
    extractor, source = _extractor(args, device)
    probe = torch.rand(min(args.batch_size, 8), 3, args.image_size, args.image_size,
                       generator=torch.Generator().manual_seed(2)).to(device)
    largest = check_maps_fit_float16(extractor, probe)
    print(f"# device {device} ({torch.get_num_threads()} threads), torch {torch.__version__}; model {args.model}, "
          f"batch {args.batch_size}, {args.image_size} px; extractor {args.extractor} ({source}) "
          f"at {extractor.input_size} px, largest map value {largest:.3g}")

    with tempfile.TemporaryDirectory() as tmp:
        steps, mixers = train_steps(args, device, extractor, Path(tmp))
        print(f"\n## train step, medians of {args.rounds} interleaved rounds (ratio: median of per-round ratios)")
        print("| method | ms / step | ratio to cutmix |\n|---|---:|---:|")
        for name, (sec, ratio) in steps.items():
            print(f"| {name} | {sec * 1e3:.1f} | {ratio:.3f} |")
        print(f"\n## the mixer alone (same batch), medians of {10 * args.rounds} interleaved rounds")
        print("| mixer | ms / batch | ratio to cutmix |\n|---|---:|---:|")
        for name, (sec, ratio) in mixers.items():
            print(f"| {name} | {sec * 1e3:.2f} | {ratio:.3f} |")
        rates = build_throughput(args, device, extractor, Path(tmp))
        print(f"\n## cache build, {args.build_images} images, batch {args.build_batch_size}, "
              f"median of {args.build_rounds} rounds")
        print("| path | images / s | ratio to bare extractor |\n|---|---:|---:|")
        for name, (rate, ratio) in rates.items():
            print(f"| {name} | {rate:.0f} | {ratio:.3f} |")
        items = item_cost(args, Path(tmp))
        if items is not None:
            print("\n## data item (synthetic set, train transform; runs in DataLoader workers, beside the step)")
            print("| item | us / item | ratio |\n|---|---:|---:|")
            for name, (sec, ratio) in items.items():
                print(f"| {name} | {sec * 1e6:.0f} | {ratio:.2f} |")
    cached, build = steps["attentive-cutmix (cache)"][1], rates["build_cache"][1]
    print(f"\ntargets: cached <= 1.05x cutmix: {cached:.3f} ({'met' if cached <= 1.05 else 'MISSED'}); "
          f"cache build >= 0.9x bare extractor: {build:.3f} ({'met' if build >= 0.9 else 'MISSED'})")


if __name__ == "__main__":
    main()
