"""How fast can a study cell train without breaking its seed's pairing? The trainer's own step, side by side.

The recipe is the converged study's cell (configs/results/cifar10-jpeg-converged.yaml): CIFAR ResNet-20 from
scratch, batch 128, 32 px, the device data path, SGD + Nesterov 0.9, lr 0.1, cosine, weight decay 5e-4, and
Attentive CutMix with cached maps (7x7 grid, 6 cells), on one thread; ``--recipe paper`` times the paper-recipe
arm's cell instead (configs/results/cifar10-jpeg-paper-recipe.yaml: batch 32, Adam 1e-3, constant lr). Every
candidate is the trainer's own ``_Run`` for that recipe (``run._step`` over ``run.batches.epoch``, as
``benchmarks/engine.py`` times it), built with the same seed, so the initial weights, the data order, the crops and
flips and the mixer's draws are the same for all; only how the model is executed differs:

- ``eager``: today;
- ``compile``: ``torch.compile`` of the model, what ``train --compile`` does;
- ``channels_last``: the model and its inputs in channels-last memory format (the trainer ignores
  ``--channels-last`` on the CPU, so the benchmark sets it on the ``_Run`` itself);
- ``compile + channels_last``;
- ``eager, non-deterministic``: without the ``use_deterministic_algorithms(True)`` that ``train()`` sets on the CPU.

Each round visits every candidate once, in a fresh random order (a loaded machine slows all alike), and times
``--steps`` training steps and one evaluation pass (the trainer's own, over ``--eval-images`` images). The table
gives medians, the min-max spread and the median of the per-round ratios to eager. A compiled candidate's first
step (tracing and code generation, with an empty compile cache unless ``--warm-compile-cache``) is timed apart,
as a one-time cost per run; the cell estimate is 3,900 steps + 25 evaluations of 9,500 images (held-out split +
training subset, every 4 epochs; paper recipe: 12,480 steps + 20 evaluations) + that cost. Last, every candidate
has taken the same steps over the same batches from the same weights, so the largest weight difference to eager
shows the pairing holds.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/cell_speed.py [--recipe paper] [--rounds 8] [--steps 4]

``--methods`` times each *mixing method's* step instead, on the same recipe (eager, or ``--compile``): every method
in the registry at its defaults (the study's settings), and each other choice of its guidance options
(``guidance=shuffled``, ``attention_source=...``), so methods registered later join the table by themselves.
Attention-reading methods get a cache of the run's own images; the table gives each one's ms per step and the
median of its per-round ratios to CutMix's.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/cell_speed.py --methods [--rounds 5] [--steps 3]
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import random
import statistics
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any, Callable

import torch

from attentive_cutmix import registry
from attentive_cutmix.training import make_config
from attentive_cutmix.training.distributed import DistInfo
from attentive_cutmix.training.trainer import _Run
from engine import _as_train_does, _attention_cache, _Loop, _options

CELL = dict(data_path="device", method="attentive-cutmix", grid_size=7, num_patches=6)
# name -> (the grid's training options, what one cell of it does). Both evaluate the held-out split and the
# un-augmented 5,000-image training subset every 4th epoch.
RECIPES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    # configs/results/cifar10-jpeg-converged.yaml: 100 epochs x 39 steps of 128
    "converged": (dict(epochs=100, optimizer="sgd", lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4,
                       schedule="cosine", **CELL),
                  dict(batch_size=128, steps=3900, eval_images=25 * (4500 + 5000), label="SGD Nesterov, cosine")),
    # configs/results/cifar10-jpeg-paper-recipe.yaml (the paper-cifar10 preset): 80 epochs x 156 steps of 32
    "paper": (dict(epochs=80, optimizer="adam", lr=1e-3, weight_decay=1e-5, init="xavier", **CELL),
              dict(batch_size=32, steps=12480, eval_images=20 * (4500 + 5000), label="Adam 1e-3, constant lr")),
}
CANDIDATES: dict[str, dict[str, Any]] = {
    "eager (today)": {},
    "compile": {"compile": True},
    "channels_last": {"channels_last": True},
    "compile + channels_last": {"compile": True, "channels_last": True},
    "eager, non-deterministic": {"deterministic": False},
}


# Options whose other choices are rows of their own in --methods: the matched control and the maps' source.
VARIANT_OPTIONS = ("guidance", "attention_source")
METHOD_BASE = "cutmix"


def method_rows() -> dict[str, dict[str, Any]]:
    """Row label -> the run's method options: every registered method at its defaults, and each other choice of its
    ``VARIANT_OPTIONS``."""
    rows: dict[str, dict[str, Any]] = {}
    for method in registry.methods():
        defaults = {"method": method.name, **dataclasses.asdict(method.options())}
        rows[method.name] = defaults
        for f in dataclasses.fields(method.options):
            if f.name in VARIANT_OPTIONS:
                for choice in f.metadata.get("choices") or ():
                    if choice != f.default:
                        rows[f"{method.name} ({f.name}={choice})"] = {**defaults, f.name: choice}
    return rows


class _Candidate:
    """The trainer's ``_Run`` for the study's cell recipe, executed one way."""

    def __init__(self, args: argparse.Namespace, tmp: Path, name: str, cache: str, *, compile: bool = False,
                 channels_last: bool = False, deterministic: bool = True,
                 mixing: dict[str, Any] | None = None) -> None:
        recipe = RECIPES[args.recipe][0]
        if mixing is not None:  # another method: the recipe without the cell method's own options
            recipe = {**{k: v for k, v in recipe.items() if k not in ("method", *CELL)}, "data_path": "device",
                      **mixing}
            name = "".join(ch if ch.isalnum() else "_" for ch in name)
        method = registry.get(recipe["method"])
        reads = method.needs_attention(method.options(**{k: v for k, v in recipe.items()
                                                         if k in method.option_names()}))
        opts = _options(args, tmp / name.replace(" ", "_"), dataset="synthetic",
                        synthetic_size=[args.images, args.eval_images], compile=compile,
                        **({"attention_cache": cache} if reads else {}), **recipe)  # a cache only where it is read
        self.run = _Run(make_config(opts), DistInfo(), torch.device("cpu"))
        if channels_last:  # in place: the optimiser keeps the same Parameter objects
            self.run.channels_last = True
            self.run.model.to(memory_format=torch.channels_last)
        self.loop, self.deterministic = _Loop(self.run, torch.device("cpu")), deterministic

    def _flag(self) -> None:
        torch.use_deterministic_algorithms(self.deterministic, warn_only=True)

    def first_step(self) -> float:
        """Seconds of the run's very first step (for a compiled model: tracing and code generation)."""
        self._flag()
        batches, _ = self.run.batches.epoch(1)
        start = time.perf_counter()
        self.run._step(next(iter(batches)))
        return time.perf_counter() - start

    def steps(self, n: int) -> float:
        self._flag()
        return self.loop.block(n)

    def mixer_calls(self, n: int) -> float:
        """Seconds of ``n`` calls of the run's mixer alone (with its maps, as ``_step`` calls it) on one batch."""
        mixer, batch = self.run.mixer, next(iter(self.run.batches.epoch(1)[0]))
        if mixer is None:
            return 0.0
        images, labels, maps = batch[0], batch[1], (batch[2] if len(batch) > 2 else None)
        start = time.perf_counter()
        for _ in range(n):
            if mixer.guidance_source == "model":  # the trainer's extra forward of the model being trained
                maps = mixer.guide(images, labels, model=self.run.model)
            mixer(images, labels, maps, generator=self.run.generator)
        return time.perf_counter() - start

    def evaluation(self) -> float:
        self._flag()
        start = time.perf_counter()
        self.run._evaluate()
        return time.perf_counter() - start


def _interleaved(found: dict[str, _Candidate], rounds: int,
                 *measures: Callable[[_Candidate], float]) -> list[dict[str, list[float]]]:
    """Per measure, each candidate's seconds per round; every round visits the candidates in a fresh random order."""
    times: list[dict[str, list[float]]] = [{n: [] for n in found} for _ in measures]
    order = random.Random(0)
    for r in range(rounds):
        for name in order.sample(list(found), len(found)):
            for measure, seconds in zip(measures, times):
                seconds[name].append(measure(found[name]))
        print(f"round {r + 1}/{rounds} done", flush=True)
    return times


def _row(name: str, t: list[float], base: list[float], per: float) -> str:
    ratio = statistics.median(b / c for b, c in zip(base, t))
    return (f"| {name} | {1e3 * statistics.median(t) / per:.0f} | {1e3 * min(t) / per:.0f}-{1e3 * max(t) / per:.0f} "
            f"| {ratio:.2f} |")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", choices=sorted(RECIPES), default="converged",
                   help="the grid whose cell is timed: converged (batch 128, SGD; default) or paper (batch 32, Adam)")
    p.add_argument("--rounds", type=int, default=8, help="interleaved rounds (default 8)")
    p.add_argument("--steps", type=int, default=4, help="timed steps per candidate and round (default 4)")
    p.add_argument("--images", type=int, default=1024, help="synthetic training images (default 1024)")
    p.add_argument("--eval-images", type=int, default=256, help="images per timed evaluation (default 256)")
    p.add_argument("--only", default=None, help="comma-separated candidate names (default: all)")
    p.add_argument("--warm-compile-cache", action="store_true",
                   help="use torch's on-disk compile cache as it is (default: an empty one, as a first cell has)")
    p.add_argument("--methods", action="store_true",
                   help="time every registered method's step (ratio to CutMix) instead of the execution candidates")
    p.add_argument("--compile", action="store_true", help="with --methods: the model compiled, as the study trains")
    p.add_argument("--mixer-calls", type=int, default=10, help="with --methods: timed mixer-only calls per round")
    args = p.parse_args(argv)
    args.model, args.workers, args.amp, args.device = "cifar_resnet20", 1, "off", "cpu"
    per_cell = RECIPES[args.recipe][1]
    args.batch_size = per_cell["batch_size"]
    args.channels_last = False  # the trainer ignores it on the CPU (with a warning); _Candidate sets it itself
    torch.set_num_threads(1)
    if args.methods:
        return method_costs(args)
    names = args.only.split(",") if args.only else list(CANDIDATES)
    print(f"# cell speed, {date.today()}, torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} thread(s)", flush=True)
    with _as_train_does(torch.device("cpu")), tempfile.TemporaryDirectory() as tmp:
        if not args.warm_compile_cache:  # read when compiling: the first compile pays code generation in full
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(Path(tmp) / "inductor")
        cache = _attention_cache(args, Path(tmp) / "attention.safetensors")
        found = {name: _Candidate(args, Path(tmp), name, cache, **CANDIDATES[name]) for name in names}
        first = {name: c.first_step() for name, c in found.items()}  # compile happens here
        print("first steps (s): " + ", ".join(f"{n} {s:.1f}" for n, s in first.items()), flush=True)
        for c in found.values():  # warm-up: allocator, lazy initialisation, the first evaluation
            c.steps(1)
            c.evaluation()
        steps, evals = _interleaved(found, args.rounds, lambda c: c.steps(args.steps), _Candidate.evaluation)
        # Every candidate took the same steps over the same batches from the same weights: what is left between
        # their weights is floating-point reordering (compile's fusions, another memory format), not another draw.
        ref = found[names[0]].run.model.state_dict()
        drift = {n: max((v.float() - ref[k].float()).abs().max().item() for k, v in c.run.model.state_dict().items()
                        if v.is_floating_point()) for n, c in found.items()}
    base = names[0]
    print(f"\n## the study's cell step ({args.recipe} recipe: cifar_resnet20, batch {args.batch_size}, 32 px, device "
          f"path, {per_cell['label']}, cached Attentive CutMix), 1 thread; {args.rounds} rounds x {args.steps} steps, "
          f"medians (ratio: median of per-round ratios to {base})")
    print("| candidate | ms / step | min-max | speed-up |\n|---|---:|---:|---:|")
    for name in found:
        print(_row(name, steps[name], steps[base], args.steps))
    print(f"\n### evaluation (the trainer's, eager model as in train), ms per {args.eval_images} images")
    print("| candidate | ms | min-max | speed-up |\n|---|---:|---:|---:|")
    for name in found:
        print(_row(name, evals[name], evals[base], 1))
    print(f"\n### one cell, estimated: {per_cell['steps']:,} steps + {per_cell['eval_images']:,} evaluated images "
          "+ first-step (compile) overhead")
    print("| candidate | first step s | one-time overhead s | cell min | vs eager |\n|---|---:|---:|---:|---:|")
    step_s = {n: statistics.median(steps[n]) / args.steps for n in found}
    cell: dict[str, float] = {}
    for name in found:
        overhead = max(first[name] - step_s[name], 0.0)
        eval_s = statistics.median(evals[name]) / args.eval_images * per_cell['eval_images']
        cell[name] = per_cell['steps'] * step_s[name] + eval_s + overhead
        print(f"| {name} | {first[name]:.1f} | {overhead:.1f} | {cell[name] / 60:.1f} | "
              f"{cell[base] / cell[name]:.2f} |")
    print(f"\nmax |weight - eager's| after the same {1 + 2 + args.rounds * (1 + args.steps)} steps: "
          + ", ".join(f"{n} {d:.1e}" for n, d in drift.items()))
    best = min(cell, key=cell.get)
    print(f"\nfastest: {best}, {cell[base] / cell[best]:.2f}x eager over a cell "
          f"({'reaches' if cell[base] / cell[best] >= 1.2 else 'below'} the 1.2x bar)")


def method_costs(args: argparse.Namespace) -> None:
    """``--methods``: each registered method's training step on the recipe, as a ratio to CutMix's."""
    rows = method_rows()
    names = args.only.split(",") if args.only else list(rows)
    unknown = sorted(set(names) - set(rows))
    if unknown or METHOD_BASE not in names:
        raise SystemExit(f"--only with --methods takes rows of {sorted(rows)}, {METHOD_BASE!r} among them; "
                         f"got unknown {unknown}")
    print(f"# method step cost, {date.today()}, torch {torch.__version__}, "
          f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} thread(s)", flush=True)
    with _as_train_does(torch.device("cpu")), tempfile.TemporaryDirectory() as tmp:
        if not args.warm_compile_cache:
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(Path(tmp) / "inductor")
        cache = _attention_cache(args, Path(tmp) / "attention.safetensors")
        found = {n: _Candidate(args, Path(tmp), n, cache, compile=args.compile, mixing=rows[n]) for n in names}
        for c in found.values():  # warm-up (and, compiled, tracing): not timed
            c.first_step()
            c.steps(1)
        steps, calls = _interleaved(found, args.rounds, lambda c: c.steps(args.steps),
                                    lambda c: c.mixer_calls(args.mixer_calls))
    print(f"\n## each method's training step ({args.recipe} recipe: cifar_resnet20, batch {args.batch_size}, 32 px, "
          f"device path, {'compiled' if args.compile else 'eager'}), 1 thread; {args.rounds} interleaved rounds x "
          f"{args.steps} steps, medians (ratio: median of per-round ratios to {METHOD_BASE})")
    print(f"| method | ms / step | min-max | step vs {METHOD_BASE} | mixer alone, ms / call | mixer's share of the "
          f"step |\n|---|---:|---:|---:|---:|---:|")
    for name in found:
        t, base = steps[name], steps[METHOD_BASE]
        ratio = statistics.median(c / b for b, c in zip(base, t))
        mixer_ms = 1e3 * statistics.median(calls[name]) / args.mixer_calls
        print(f"| {name} | {1e3 * statistics.median(t) / args.steps:.0f} | {1e3 * min(t) / args.steps:.0f}-"
              f"{1e3 * max(t) / args.steps:.0f} | {ratio:.2f} | {mixer_ms:.1f} | "
              f"{100 * mixer_ms / (1e3 * statistics.median(t) / args.steps):.1f}% |")


if __name__ == "__main__":
    main()
