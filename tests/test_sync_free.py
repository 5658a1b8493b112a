"""No host<->device synchronisation in a mixer call or in a training step, proven without a GPU.

A ``meta`` tensor has shapes but no values: ``.item()``, ``bool(t)``, ``int(t)`` and ``.tolist()`` of one raise,
so anything that runs to the end on ``meta`` never reads a device value on the host. The trainer's own
``_Run`` is built on the meta device and its real batch production (the device path's crop and flip) and
``_step`` (mixer, normalise, model, loss, backward, the non-finite check, the fused Adam step with
``found_inf``) run there. The optimiser's list of fused devices leaves out meta, so the tests add it
(``torch._fused_adam_`` itself has a meta implementation), and ``torch.autocast`` refuses meta even when off.
With a GPU, the CUDA-marked tests run the same under ``torch.cuda.set_sync_debug_mode("error")``.
"""
from __future__ import annotations

import collections
import contextlib
import types
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torch.optim.optimizer as optim_mod
from torch.utils._python_dispatch import TorchDispatchMode

from attentive_cutmix import AttentiveCutMix, CutMix, SnapMix, registry
from attentive_cutmix.attention.cache import build_cache
from attentive_cutmix.data import build_datasets
from attentive_cutmix.mixers.check import example_mixer
from attentive_cutmix.training import make_config
from attentive_cutmix.training import trainer as trainer_mod
from attentive_cutmix.training.distributed import DistInfo
from attentive_cutmix.training.trainer import _Run

K = 10


def _mixers():
    """Every registered method's example mixer, and two variants with their own code paths."""
    mixers = {m.name: example_mixer(m, K) for m in registry.methods() if m.build is not None}
    mixers["attentive-cutmix-even"] = AttentiveCutMix(K, num_patches=3, grid_size=2)  # the segment-gather path
    mixers["cutmix-prob"] = CutMix(K, prob=0.5, label_smoothing=0.1)
    mixers["snapmix-shuffled"] = SnapMix(K, guidance="shuffled")
    return mixers


def _batch(device: str, b: int = 8, s: int = 32):
    return (torch.rand(b, 3, s, s, device=device), torch.randint(0, K, (b,), device=device),
            torch.rand(b, 7, 7, device=device))


def test_meta_tensors_refuse_every_host_read():
    # The premise of this file: each way of reading a value on the host fails on meta.
    t = torch.zeros((), device="meta")
    for read in (lambda: t.item(), lambda: bool(t), lambda: int(t.long()), lambda: float(t), lambda: t.tolist()):
        with pytest.raises(RuntimeError, match="meta"):
            read()


def test_mixing_loss_backward_and_skip_check_run_on_meta():
    # The pieces the trainer calls, on a model of its own, for the reader who wants them one by one.
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, K)).to("meta")
    images, labels, attention = _batch("meta")
    mean = torch.full((1, 3, 1, 1), 0.5, device="meta")
    mixed, targets = AttentiveCutMix(K)(images, labels, attention, generator=torch.Generator().manual_seed(0))
    loss = F.cross_entropy(model((mixed - mean) / mean).float(), targets)
    loss.backward()
    found = torch.zeros((), device="meta")
    torch._amp_foreach_non_finite_check_and_unscale_([p.grad for p in model.parameters()], found,
                                                     torch.ones((), device="meta"))
    found = torch.maximum(found, (~torch.isfinite(loss.detach())).float())
    assert found.device.type == "meta" and all(p.grad.device.type == "meta" for p in model.parameters())


@pytest.fixture
def step_on_meta(monkeypatch):
    supported = optim_mod._get_fused_kernels_supported_devices
    monkeypatch.setattr(optim_mod, "_get_fused_kernels_supported_devices", lambda: [*supported(), "meta"])
    # torch.autocast refuses the meta device type even when disabled; amp is off here, so it does nothing.
    real = trainer_mod._autocast
    monkeypatch.setattr(trainer_mod, "_autocast",
                        lambda device, amp: contextlib.nullcontext() if device.type == "meta" else real(device, amp))


def _synthetic_cache(path: Path, synthetic_size: list[int]) -> str:
    """A cache of ``synthetic_size``'s training split: it must be the run's own, or the run refuses it."""
    raw, _, info = build_datasets("synthetic", synthetic_size=synthetic_size, augment=False)
    build_cache(raw, lambda x: F.adaptive_avg_pool2d(x, 8), path, meta={"fingerprint": info.train_fingerprint},
                batch_size=32, progress=False)
    return str(path)


@pytest.mark.parametrize("method", registry.names())
def test_the_trainers_step_runs_on_meta(method, tmp_path, step_on_meta):
    reads = registry.reads_attention(method)  # an extractor's maps: from a cache here
    extra = {"attention_cache": _synthetic_cache(tmp_path / "att.safetensors", [32, 8])} if reads else {}
    cfg = make_config(dict(dataset="synthetic", synthetic_size=[32, 8], model="cifar_resnet20", method=method,
                           batch_size=16, workers=0, output_dir=str(tmp_path / "run"), progress=False,
                           data_path="device", **extra))
    run = _Run(cfg, DistInfo(), torch.device("meta"))
    assert run.fused and run.batches.train.images.device.type == "meta"
    batches, steps = run.batches.epoch(1)
    assert steps == 2
    for batch in batches:  # the device path's real batches: index, crop, flip (and maps) on meta
        assert all(t.device.type == "meta" for t in batch)
        assert len(batch) == (3 if reads else 2)
        run._step(batch)
    params = list(run.model.parameters())
    # The fused step ran (it creates the state) and consumed the on-device skip flag.
    assert all(run.optimizer.state[p]["step"].device.type == "meta" for p in params)
    assert run.optimizer.found_inf is run._found_inf
    assert run._loss_acc.device.type == "meta" and run._first_bad.device.type == "meta"
    assert run.partial["images"] == 32


# --------------------------------------------------------------------------------------- with a GPU
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
SYNC_FREE_RUNS = pytest.mark.parametrize("amp,method", [(amp, method) for amp in ("off", "bf16")
                                                         for method in ("none", "cutmix", "attentive-cutmix",
                                                                        "snapmix")])


def _sync_free_run(method: str, amp: str, tmp_path: Path, device: torch.device) -> _Run:
    """The CUDA test's run (config, data, cache, model) built on ``device``: the CPU suite builds it too."""
    size = [64, 8]
    extra = ({"attention_cache": _synthetic_cache(tmp_path / "att.safetensors", size)}
             if method == "attentive-cutmix" else {})
    cfg = make_config(dict(dataset="synthetic", synthetic_size=size, model="cifar_resnet20", method=method,
                           batch_size=16, workers=0, output_dir=str(tmp_path / "run"), progress=False,
                           data_path="device", amp=amp, channels_last=True, device="cuda", **extra))
    with warnings.catch_warnings():  # on the CPU: "--amp/--channels-last only apply on CUDA"
        warnings.filterwarnings("ignore", message="--(amp|channels-last)")
        return _Run(cfg, DistInfo(), device)


@SYNC_FREE_RUNS
def test_the_cuda_training_tests_set_up_on_the_cpu(method, amp, tmp_path):
    # Everything the CUDA test does but the device and the sync check, so a broken set-up fails here, not on a GPU.
    run = _sync_free_run(method, amp, tmp_path, torch.device("cpu"))
    assert run.fused
    batches, steps = run.batches.epoch(1)
    assert steps == 4  # the warm-up step and three checked ones
    run._step(next(batches))
    assert run._loss_acc.item() > 0 and run._first_bad.item() == -1


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize("name", list(_mixers()))
def test_every_mixer_is_sync_free_on_cuda(name):
    mixer = _mixers()[name]
    images, labels, attention = _batch("cuda")
    gen = torch.Generator().manual_seed(0)  # the trainer's: a CPU generator, draws moved non-blocking
    mixer(images, labels, attention, generator=gen)  # first call: per-shape tables are built (once)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            mixed, targets = mixer(images, labels, attention, generator=gen)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert mixed.is_cuda and targets.is_cuda


@pytest.mark.cuda
@cuda
@SYNC_FREE_RUNS
def test_training_steps_are_sync_free_on_cuda(method, amp, tmp_path):
    run = _sync_free_run(method, amp, tmp_path, torch.device("cuda"))
    assert run.fused
    batches, _ = run.batches.epoch(1)
    run._step(next(batches))  # warm-up: lazy CUDA/cuDNN initialisation and the optimiser's state
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for batch in batches:  # batch production (device path) and the step, three times
            run._step(batch)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    loss_sum, first_bad = run._loss_acc.item(), run._first_bad.item()
    assert loss_sum > 0 and first_bad == -1


# --------------------------------------------------------------------------------------- host reads, counted
class _Ops(TorchDispatchMode):
    """Counts the aten ops run inside it (CPU tensors dispatch them as device tensors would)."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[str(func)] += 1
        return func(*args, **(kwargs or {}))


HOST_READ = "aten._local_scalar_dense.default"  # what bool(t), t.item() and int(t) run: each waits for a device
HOST_TENSOR = "aten.lift_fresh.default"  # torch.tensor(python value): on a GPU, a blocking host-to-device copy


def test_the_end_of_an_epoch_reads_the_weights_once(tmp_path):
    run = _sync_free_run("none", "off", tmp_path, torch.device("cpu"))
    floats = sum(t.is_floating_point() for t in run.model.state_dict().values())
    with _Ops() as ops:
        run._check_weights_finite(1)
    assert floats > 60 and ops.counts[HOST_READ] == 1  # was one read per floating tensor


def test_evaluation_makes_no_host_tensor_per_batch():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                torch.nn.Linear(4, K))
    info = types.SimpleNamespace(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    images, labels, _ = _batch("cpu")
    counts = []
    for batches in (1, 3):
        with _Ops() as ops:
            sums = trainer_mod.evaluation_sums(model, [(images, labels)] * batches, info, torch.device("cpu"))
        assert sums[3] == 8 * batches
        counts.append(ops.counts[HOST_TENSOR])
    assert counts[0] == counts[1]  # the normalisation statistics only: none per batch (the count was one)


class _CudaGeneratorStandIn:
    """What ``draw_applies`` may read of a CUDA generator (its seed and offset, kept on the host), without CUDA."""

    device = torch.device("cuda")

    def __init__(self, seed: int) -> None:
        self.seed, self.offset = seed, 0

    def initial_seed(self) -> int:
        return self.seed

    def get_offset(self) -> int:
        return self.offset

    def set_offset(self, offset: int) -> None:
        self.offset = offset


def test_prob_with_a_cuda_generator_is_decided_on_the_host():
    # Before: torch.rand on the generator's GPU, then bool() of it, a wait for the GPU on every call.
    mixer = CutMix(K, prob=0.3)
    gen = _CudaGeneratorStandIn(seed=7)
    draws = [mixer.draw_applies(gen) for _ in range(2000)]
    assert all(type(d) is bool for d in draws) and gen.offset == 4 * 2000
    assert abs(sum(draws) / 2000 - 0.3) < 0.05  # 5 standard deviations
    again = _CudaGeneratorStandIn(seed=7)
    assert [mixer.draw_applies(again) for _ in range(2000)] == draws  # a function of (seed, offset)
    other = _CudaGeneratorStandIn(seed=8)
    assert [mixer.draw_applies(other) for _ in range(2000)] != draws


@pytest.mark.cuda
@cuda
def test_prob_with_a_cuda_generator_is_sync_free_on_cuda():
    mixer = CutMix(K, prob=0.5)
    gen = torch.Generator(device="cuda").manual_seed(0)
    before = gen.get_offset()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        draws = [mixer.draw_applies(gen) for _ in range(64)]
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert gen.get_offset() == before + 4 * 64 and 0 < sum(draws) < 64
