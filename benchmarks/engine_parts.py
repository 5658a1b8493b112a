"""What cached Attentive CutMix adds to a device-path step, part by part (medians, 1 thread, CPU).

Times, on a (128, 3, 32, 32) batch: cutting a batch from a device split with and without its attention maps
(the same crop and flip for both), one ``AttentiveCutMix`` call with those maps, and the bare model step
(CIFAR ResNet-20, fused SGD). The extra cost of cached Attentive CutMix over no mixing is the first difference
plus the mixer call; printed as a share of a ``none`` step::

    OMP_NUM_THREADS=1 python benchmarks/engine_parts.py
"""
from __future__ import annotations

import time

import torch

from attentive_cutmix import AttentiveCutMix
from attentive_cutmix.data.device import DeviceSplit
from attentive_cutmix.models import create_model


def _median_ms(fn, repeats: int = 15) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[repeats // 2] * 1e3


def main() -> None:
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    n, batch = 5000, 128
    images = torch.randint(0, 255, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (n,), generator=g)
    with_maps = DeviceSplit(images, labels, torch.rand(n, 32, 32, generator=g).half())
    without = DeviceSplit(images, labels, None)
    index = torch.arange(batch)
    cut_maps = _median_ms(lambda: with_maps.batch(index, torch.Generator().manual_seed(1)))
    cut_plain = _median_ms(lambda: without.batch(index, torch.Generator().manual_seed(1)))
    x, y, att = with_maps.batch(index, torch.Generator().manual_seed(1))
    mixer = AttentiveCutMix(10, num_patches=6, grid_size=7)
    mix = _median_ms(lambda: mixer(x, y, att, generator=torch.Generator().manual_seed(2)))
    model = create_model("cifar_resnet20", 10, 32)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, fused=True)

    def step() -> None:
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    model_step = _median_ms(step, 7)
    extra = cut_maps - cut_plain + mix
    print(f"batch with maps {cut_maps:.2f} ms, without {cut_plain:.2f} ms; AttentiveCutMix call {mix:.2f} ms; "
          f"model step {model_step:.1f} ms")
    print(f"cached Attentive CutMix adds {extra:.2f} ms per step = {100 * extra / (model_step + cut_plain):.2f}% "
          f"of a none step (ratio {1 + extra / (model_step + cut_plain):.3f})")


if __name__ == "__main__":
    main()
