"""``attentive-cutmix demo``: a paired-seed comparison, offline, on a CPU, in a few minutes on 2 idle cores.

**Regime.** Mixing is a regulariser: it can only help a network that overfits, and only once the mixed runs have
themselves converged (a mixed run that has not fitted its own training images measures under-training, not
regularisation). So the demo trains a CIFAR ResNet-20 (Adam, cosine schedule, batch 25) on 100 images (10 per class)
of the embedded synthetic dataset's version 2 (``synthetic2``: larger objects on lighter clutter than version 1) at
16 px, and evaluates it on 1,000 other images. The regime was fixed before any mixed run's held-out number was looked
at, by one rule that treats every method alike:

- the data, model and optimiser are chosen by the baseline's curves and the mixed runs' *train* top-1 alone (never
  a held-out number of a mixed run): the baseline must overfit (train top-1 far above held-out, held-out loss rising
  again after its minimum);
- the epoch budget is the smallest on the ladder 90, 120, 150, 180 epochs at which *every* mixed run (every mixing
  method, every seed) ends with train top-1 >= ``FIT_TOP1`` (95%) on its un-mixed training images, within the
  time budget (5 minutes on 2 idle cores).

Outcome (2026-12-06): 180 epochs (720 steps), the ladder's last step. 90 epochs failed the rule (MixUp seed 0 ended
at 92%), 120 (MixUp seed 1: 94%) and 150 (CutMix seed 0: 94%; the other 11 mixed runs 95-100%); at 180 every mixed
run ends at 97-100%. (The 150-epoch demo had been shipped first on a CPU-time estimate from a loaded machine that put
180 past the time budget; 180 epochs measured 3 min 54 s wall, 429 CPU-seconds, on 2 idle cores on a fresh clone.)
RESULTS.md §4 records every regime tried, with the baseline's gap and each method's difference.

The methods keep the paper's settings (7x7 grid and N=6 for Attentive CutMix and random cells; alpha 1 for MixUp and
CutMix), all run once. Every method trains with the same seeds, and a seed fixes the initial weights, the data order
and the crops, so each method's difference from the baseline is measured seed by seed (paired). Cutout is left out:
its three runs would push the demo past its time budget.

**Extractor.** The paper's extractor was trained on other images (ImageNet). Here it is a ResNet-20 trained
briefly on 1,000 synthetic images disjoint from both the demo's training and evaluation images: the demo draws
its 100 training images as a stratified subset of a 1,100-image pool (``train_subset``), and the extractor
trains on that pool with the *same* stratified split held out (``val_fraction = 100 / 1100``, same split seed),
i.e. exactly on the other 1,000; the evaluation images come from another generator seed. Using the baseline's
own checkpoint instead would give Attentive CutMix a network fitted on the very images it mixes. Whether it sees
the demo's images well enough is measured, not assumed: the demo prints, for every method with a region, the
fraction of the pixels it takes from the partner that lie in the partner's ground-truth object box
(``region_hit_rates``), and the closing line says so when Attentive CutMix's cells do no better than the same area
of random cells.

**Time.** The demo prints its wall time and its CPU time (user + system, every process), and each phase's share
of the CPU time: extractor, attention cache, training runs, localisation, figure, report (the phases overlap in
wall time: two processes train at once).

**Random cells.** The control with Attentive CutMix's grid and cell count but cells drawn uniformly: Attentive
CutMix minus random cells is the part of its effect due to attention, random cells minus CutMix the part due
to pasting less area.

**A grid.** The demo is a fixed grid (``demo_grid``: the methods marked ``demo`` in the registry x the paired
seeds, with a shared extractor and attention cache), run cell by cell by the same runner as ``compare``
(``experiments/compare.py``) and summarised by the same statistics and report (``stats.py``, ``report.py``); its
output folder has ``compare``'s layout (``runs/<cell id>``, ``extractors/``, ``caches/``, ``results.json``,
``table.md``, ``paired.md``, plots) plus ``summary.md``, ``summary.json`` and the figure. Two processes train cells
at once (one thread each; a cell's result does not depend on which process trains it). Re-running in the same
folder reuses finished cells and resumes interrupted ones; other settings are other cells, and earlier ones are
kept.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import multiprocessing
import os
import resource
import signal
import statistics
import sys
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable

import torch

from .. import registry
from ..serialization import atomic_write
from ..training.config import ConfigError
from ..training.distributed import DistInfo, resolve_device
from ..training.run_record import RunRecord
from . import compare
from .grid import Cell, Grid, expand_grid
from .localization import region_hit_rates
from .report import MethodSummary, baseline_markdown, baseline_summary, method_label, paired_comparisons
from .visualize import figure_for_dataset

# The data and training modules load torchvision's model zoo or timm, and `demo --help` imports this module
# (for FULL and QUICK): build_data and NonFiniteLossError are imported where they are used; the data sections load
# the datasets on first use.

IMAGE_SIZE = 16  # the 32 px synthetic images, downscaled: 4x cheaper, and the shapes stay recognisable
DATASET = "synthetic2"  # the generator's version 2: larger objects on lighter clutter (data/synthetic.py)
# pool: seed-0 images the training subset is drawn from (the rest train the extractor); eval: seed-1 images.
# epochs: chosen by the rule in the module docstring; every run is evaluated EVALS times (its curve).
FULL = dict(pool=1100, train=100, eval=1000, epochs=180, batch_size=25, seeds=3, extractor_epochs=8)
QUICK = dict(pool=100, train=20, eval=50, epochs=2, batch_size=10, seeds=2, extractor_epochs=1)
EVALS = 6
EXTRACTOR = "extractor"  # the grid's one extractor, trained first
EXTRACTOR_SEED = 1000  # not one of the demo's seeds: the extractor shares no initial weights with a demo run
FIGURE_NAME = "mixing.png"
OVERFIT_GAP = 10.0  # points of train top-1 above held-out top-1 that count as overfitting
FIT_TOP1 = 95.0  # train top-1 (un-mixed training images) at which a mixed run has fitted: the regime's rule


def _size(quick: bool) -> dict[str, int]:
    return QUICK if quick else FULL


def demo_methods() -> list[str]:
    """The methods the registry marks for the demo, in display order."""
    return [m.name for m in registry.methods() if m.demo]


def demo_grid(*, quick: bool = False, epochs: int | None = None, seeds: int | None = None,
              device: str = "cpu") -> Grid:
    """The demo's grid: every demo method on seeds ``0 .. seeds-1``, attention from one extractor trained first."""
    size = _size(quick)
    num_seeds = seeds if seeds is not None else size["seeds"]
    if isinstance(num_seeds, bool) or not isinstance(num_seeds, int) or num_seeds < 2:
        raise ConfigError(f"seeds must be an int >= 2 (a spread needs two paired seeds), got seeds={num_seeds!r}")
    data = dict(dataset=DATASET, synthetic_size=[size["pool"], size["eval"]], image_size=IMAGE_SIZE, split_seed=0)
    optim = dict(model="cifar_resnet20", optimizer="adam", lr=2e-3, weight_decay=1e-5, schedule="cosine", workers=0,
                 device=device, progress=False, data_path="auto")
    methods = demo_methods()
    # The extractor trains on the pool minus the demo's training subset: the same stratified split, held out.
    extractor = {**optim, "train_subset": None, "val_fraction": size["train"] / size["pool"], "method": "none",
                 "epochs": size["extractor_epochs"], "batch_size": 64, "seed": EXTRACTOR_SEED,
                 "eval_every": size["extractor_epochs"]}
    reads_attention = [m for m in methods if registry.get(m).needs_attention(registry.get(m).options())]
    num_epochs = epochs or size["epochs"]
    spec = {"name": "attentive-cutmix demo" + (" (--quick)" if quick else ""),
            "settings": {**data, **optim, "train_subset": size["train"], "epochs": num_epochs,
                         "batch_size": size["batch_size"], "eval_every": max(num_epochs // EVALS, 1),
                         "eval_train": True},
            "method_settings": {m: {"extractor": EXTRACTOR} for m in reads_attention},
            "extractors": {EXTRACTOR: extractor}, "attention_cache": True, "localization": False,
            "axes": {"method": methods, "seed": list(range(num_seeds))}}
    return expand_grid(spec, "the demo grid")


def _quiet(message: str) -> None:
    pass


def _timed(fn: Callable[[], Any]) -> dict[str, Any]:
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        fn()
        status: dict[str, Any] = {"status": "finished"}
    except compare.Interrupted as stop:
        status = {"status": "interrupted", "resume_command": stop.result.get("resume_command")}
    return {**status, "wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}


def run_one(grid: Grid, cell: Cell, out: Path) -> dict[str, Any]:
    """Run (or reuse) one cell with ``compare``'s runner; its status, wall and CPU seconds."""
    return _timed(lambda: compare.run_cell(grid, cell, out, log=_quiet))


def prepare_extractor(grid: Grid, cell: Cell, out: Path) -> dict[str, Any]:
    """Train (or reuse) the grid's extractor, then build the attention cache ``cell`` and its kind share, once.

    Returns the status with the wall and CPU seconds of each phase: ``extractor`` (training it) and ``cache``.
    """
    from ..training.data_setup import build_data

    phases: dict[str, dict[str, float]] = {}

    def prepare() -> None:
        with _phase(phases, "extractor"):
            cfg = compare.resolved_config(grid, cell, out, {}, _quiet)
        with _phase(phases, "cache"):
            # The trainer's own code path (a no-op when the cache exists): every seed then opens one finished file,
            # instead of two processes racing to write it.
            build_data(cfg, DistInfo(), resolve_device(cfg.run.device))

    return {**_timed(prepare), "phases": phases}


@contextlib.contextmanager
def _phase(phases: dict[str, dict[str, float]], name: str):
    """Add the wall and CPU seconds (this process) of the ``with`` body to ``phases[name]``."""
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        yield
    finally:
        spent = phases.setdefault(name, {"wall_s": 0.0, "cpu_s": 0.0})
        spent["wall_s"] += time.perf_counter() - wall
        spent["cpu_s"] += time.process_time() - cpu


def _init_worker() -> None:
    torch.set_num_threads(1)  # two single-threaded runs use 2 cores better than one run on two threads
    # Ctrl-C reaches every process: a worker between runs ignores it, one in a run checkpoints and returns.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class _InProcess:
    """The executor interface, running each task at once in this process (``jobs=1``)."""

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args))
        except BaseException as err:  # noqa: BLE001 - handed to the caller by future.result(), like a pool would
            future.set_exception(err)
        return future

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        pass


# ----------------------------------------------------------------------------------------------- the story
def _eval_curve(entry: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in entry.get("curve") or [] if r.get("top1") is not None]


def overfitting_lines(baseline: list[dict[str, Any]]) -> list[str]:
    """Per seed: the baseline's train vs held-out top-1 and its held-out loss at its minimum and at the end."""
    lines = []
    for entry in baseline:
        curve = _eval_curve(entry)
        best, last = min(curve, key=lambda r: r["eval_loss"]), curve[-1]
        lines.append(f"  seed {entry['labels']['seed']}: train top-1 {last['train_top1']:.1f}% vs held-out "
                     f"{entry['top1']:.1f}%; held-out loss {best['eval_loss']:.2f} at epoch {best['epoch']} (its "
                     f"minimum), {last['eval_loss']:.2f} at epoch {last['epoch']}")
    return lines


def loss_rise(baseline: list[dict[str, Any]]) -> float:
    """How far the held-out loss ended above its minimum, mean over seeds (> 0: it rose again, overfitting)."""
    return statistics.fmean(_eval_curve(e)[-1]["eval_loss"] - min(r["eval_loss"] for r in _eval_curve(e))
                            for e in baseline)


def baseline_overfits(summary: list[MethodSummary], rise: float) -> bool:
    """Train top-1 at least ``OVERFIT_GAP`` points above held-out, and the held-out loss risen past its minimum."""
    base = next(s for s in summary if s.method == registry.BASELINE)
    return base.gap.mean >= OVERFIT_GAP and rise > 0


def _names(labels: list[str]) -> str:
    return labels[0] if len(labels) == 1 else f"{', '.join(labels[:-1])} and {labels[-1]}"


def closing_line(summary: list[MethodSummary], *, rise: float, num_train: int, steps: int, extractor_top1: float,
                 hits: dict[str, Any] | None = None, mixed_train: list[float] | None = None,
                 quick: bool = False) -> str:
    """What this budget can and cannot show, with the methods that beat the baseline (or that none does), and where
    the real-data evidence is. ``mixed_train``: every mixed run's final train top-1 (the regime's rule is per run;
    without it, the methods' means stand in)."""
    if quick:
        return ("--quick is a smoke test: a few steps on a few images check that every method runs end to end; its "
                "numbers are noise and show nothing about the methods (run without --quick).")
    base = next(s for s in summary if s.method == registry.BASELINE)
    others = [s for s in summary if s.vs_baseline is not None]
    better = [method_label(s.method) for s in others if s.vs_baseline.verdict == "better"]
    worse = [method_label(s.method) for s in others if s.vs_baseline.verdict == "worse"]
    widest = max((s.vs_baseline.high - s.vs_baseline.low for s in others if s.vs_baseline.low is not None),
                 default=0.0) / 2
    if baseline_overfits(summary, rise):
        regime = (f"with {num_train} training images the baseline overfits (train {base.train.mean:.0f}% vs "
                  f"held-out {base.held_out.mean:.0f}%, held-out loss rising), so a regulariser has room to act")
    else:
        regime = (f"with {num_train} training images the baseline does not clearly overfit (train "
                  f"{base.train.mean:.0f}% vs held-out {base.held_out.mean:.0f}%), so a regulariser has little room")
    mixers = list(mixed_train) if mixed_train is not None else [s.train.mean for s in others]
    fitted = bool(mixers) and min(mixers) >= FIT_TOP1
    if fitted:
        regime += (f"; every mixed run fits its own training images (train top-1 {min(mixers):.0f}-"
                   f"{max(mixers):.0f}%), so a difference is regularisation, not under-training")
    found = (f"{_names(better)} beat{'s' if len(better) == 1 else ''} the baseline beyond the seed-to-seed spread"
             if better else "no method beats the baseline beyond the seed-to-seed spread (nor did one in any regime "
                            "tried within the time budget: RESULTS.md §4)")
    if worse:
        found += f", and {_names(worse)} {'is' if len(worse) == 1 else 'are'} below it"
    cannot = []
    if mixers and not fitted:  # some still underfit their own training images
        short = sum(t < FIT_TOP1 for t in mixers)
        cannot.append(f"in {steps} steps not every mixed run fits its training images ({short} of {len(mixers)} "
                      f"below {FIT_TOP1:.0f}% train top-1; {min(mixers):.0f}-{max(mixers):.0f}%), so part of a "
                      "loss can be under-training, not regularisation")
    if extractor_top1 < 80:
        cannot.append(f"the extractor, trained briefly, reaches {extractor_top1:.0f}% on unseen images: a weak test "
                      "of attention")
    if hits:
        cannot += missed_objects(hits)
    cannot.append(f"differences inside the intervals (up to ±{widest:.1f} points here) are not rankings")
    cannot.append(f"{num_train} synthetic images say nothing definite about real photos or full-size datasets: the "
                  "real-data evidence is RESULTS.md §0-§0c (CIFAR-10, converged budgets, paired seeds), whose "
                  "committed weights `attentive-cutmix evaluate results/cifar10-jpeg-converged` re-measures")
    return (f"What this budget can show: {regime}; {found} (95% intervals over {base.held_out.n} paired seeds). "
            f"What it cannot show: {'; '.join(cannot)}.")


def part_lines(runs: list[dict[str, Any]], metric: str = "top1") -> list[str]:
    """The methods' own paired comparisons (e.g. the attention part, Attentive CutMix minus random cells)."""
    lines = []
    for compared in paired_comparisons(runs, metric).values():
        for _, b, what, d in compared:
            if b == registry.BASELINE or d is None or d.low is None:
                continue
            lines.append(f"{what[0].upper()}{what[1:]}: {d.mean:+.1f} ± {d.std:.1f} pts (n={d.n}, 95% CI "
                         f"[{d.low:+.1f}, {d.high:+.1f}])")
    return lines


# ----------------------------------------------------------------------------------------------- the job
def run_demo(output_dir: str | Path = "runs/demo", *, quick: bool = False, epochs: int | None = None,
             seeds: int | None = None, device: str = "cpu", jobs: int = 2) -> int:
    """Train every demo method on every paired seed, print and write the report; the exit code of ``demo``."""
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        print(f"attentive-cutmix demo: error: jobs must be an int >= 1, got jobs={jobs!r}", file=sys.stderr)
        return 1
    threads_before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with _sigterm_as_interrupt():
            return _run(Path(output_dir), quick=quick, epochs=epochs, seeds=seeds, device=device, jobs=jobs)
    finally:
        torch.set_num_threads(threads_before)


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM to the demo (a scheduler, `kill PID`) stops it like Ctrl-C: its default action ended this process at
    once and left the training workers running, holding their run folders' locks."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _status(cell: Cell, out: Path, folder: str = "runs") -> str:
    return compare.cell_status(out / folder / cell.id, cell.identity)


def _run(out: Path, *, quick: bool, epochs: int | None, seeds: int | None, device: str, jobs: int) -> int:
    from ..training.trainer import NonFiniteLossError

    start, cpu_start = time.perf_counter(), _cpu_seconds()
    try:
        grid = demo_grid(quick=quick, epochs=epochs, seeds=seeds, device=device)
        before = {c.id: _status(c, out) for c in grid.cells}
        before[EXTRACTOR] = _status(grid.extractors[EXTRACTOR], out, "extractors")
    except ValueError as err:
        print(f"attentive-cutmix demo: error: {err}", file=sys.stderr)
        return 1
    size, cells = _size(quick), grid.cells
    base, methods = cells[0].config, grid.axes["method"]
    num_seeds = len(grid.axes["seed"])
    steps = base.epochs * max(size["train"] // base.batch_size, 1)  # the trainer drops a ragged last batch
    extractor_cfg = grid.extractors[EXTRACTOR].config
    print(f"Attentive CutMix demo: CIFAR ResNet-20 on {size['train']} images of the embedded synthetic dataset "
          f"({base.dataset}: version 2, {IMAGE_SIZE} px, 10 classes), {base.epochs} epochs ({steps} Adam steps), "
          f"evaluated on {size['eval']} other images; {len(methods)} methods x {num_seeds} paired seeds "
          f"on {device}, {jobs} process(es). Attentive CutMix's extractor is a ResNet-20 trained for "
          f"{extractor_cfg.epochs} epochs on {size['pool'] - size['train']} other images.\nOutputs: {out.resolve()}\n",
          flush=True)
    pool = (ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                                initializer=_init_worker) if jobs > 1 else _InProcess())
    attentive = [c for c in cells if c.extractor_run is not None]
    timings: dict[str, dict[str, Any]] = {}
    phases: dict[str, dict[str, float]] = {}  # wall and CPU seconds of each phase, for the time line
    try:
        extractor_future = pool.submit(prepare_extractor, grid, attentive[0], out) if attentive else None
        futures = {c.id: pool.submit(run_one, grid, c, out) for c in cells if c.extractor_run is None}
        look: dict[str, Any] = {}
        if extractor_future is not None:
            timings[EXTRACTOR] = extractor_future.result()
            if timings[EXTRACTOR]["status"] != "finished":
                return _stopped(pool, timings[EXTRACTOR])
            top1 = _extractor_top1(grid, out)
            how = "reused" if before[EXTRACTOR] == "finished" else f"{timings[EXTRACTOR]['wall_s']:.0f} s"
            print(f"  {'Extractor':<20}        : top-1 {top1:5.1f}% on the demo's training images, which it "
                  f"never saw ({how})", flush=True)
            futures.update({c.id: pool.submit(run_one, grid, c, out) for c in attentive})
            look = _look_at_attention(compare.resolved_config(grid, attentive[0], out, {}, _quiet), out / FIGURE_NAME,
                                      phases)
            print(f"  {localisation_line(look['localisation'])}", flush=True)
        for cell in sorted(cells, key=lambda c: methods.index(c.axes["method"])):
            timings[cell.id] = futures[cell.id].result()
            if timings[cell.id]["status"] != "finished":
                return _stopped(pool, timings[cell.id])
            finals = RunRecord.read(out / "runs" / cell.id).finals
            how = "reused" if before[cell.id] == "finished" else f"{timings[cell.id]['wall_s']:.0f} s"
            print(f"  {method_label(cell.axes['method']):<20} seed {cell.axes['seed']}: held-out top-1 "
                  f"{finals.top1:5.1f}%  train top-1 {finals.train_top1:5.1f}%  ({how})",
                  flush=True)
    except KeyboardInterrupt as err:
        return _stopped(pool, {}, signal.SIGTERM if str(err) == "SIGTERM" else signal.SIGINT)
    except (ValueError, NonFiniteLossError) as err:
        pool.shutdown(wait=True, cancel_futures=True)
        print(f"attentive-cutmix demo: error: {err}", file=sys.stderr)
        return 1
    pool.shutdown(wait=True)
    trained = [t for key, t in timings.items() if before.get(key) != "finished"]
    for timing in trained:  # the extractor's and the cache's CPU seconds were spent in a worker
        for name, spent in timing.get("phases", {}).items():
            phases[name] = {k: phases.get(name, {}).get(k, 0.0) + v for k, v in spent.items()}
    runs = [t for key, t in timings.items() if key != EXTRACTOR and before.get(key) != "finished"]
    phases["training runs"] = {"wall_s": sum(t["wall_s"] for t in runs), "cpu_s": sum(t["cpu_s"] for t in runs)}
    return _report(grid, out, trained, look, phases, size=size, steps=steps, start=start, cpu_start=cpu_start)


def _extractor_top1(grid: Grid, out: Path) -> float:
    return float(RunRecord.read(out / "extractors" / grid.extractors[EXTRACTOR].id).finals.top1)


def _stopped(pool: Any, result: dict[str, Any], signum: int = signal.SIGINT) -> int:
    pool.shutdown(wait=signum == signal.SIGINT, cancel_futures=True)  # Ctrl-C reached the workers themselves
    if signum != signal.SIGINT:
        _end_workers()
    print("\ndemo stopped; run the same command again to continue where it stopped (finished runs are reused"
          + (f"; {result['resume_command']})" if result.get("resume_command") else ")"), file=sys.stderr)
    return 128 + signum


WORKER_STOP_S = 120  # a training worker finishes its step and checkpoints within this; then it is killed


def _end_workers() -> None:
    """Pass a SIGTERM on to the training workers, until they are gone: one in a run finishes its step, checkpoints
    and returns (a task the pool had already queued then starts and is stopped the same way); an idle one exits."""
    deadline = time.monotonic() + WORKER_STOP_S
    while (children := multiprocessing.active_children()) and time.monotonic() < deadline:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGTERM)
        time.sleep(0.5)
    for child in multiprocessing.active_children():
        child.kill()
        child.join()


def _look_at_attention(attentive_cfg: Any, path: Path, phases: dict[str, dict[str, float]]) -> dict[str, Any]:
    """Where each demo method's region lands on the demo's training images, and the figure of each method on a batch.

    ``localisation``: per method with a region (by name), the mean fraction of the pixels it takes from the partner
    that lie inside the partner's ground-truth box, with its standard error over images (``region_hit_rates``); the
    grid methods use the demo's grid. ``figure``: ``None`` (with a note) where matplotlib is not installed.
    """
    device = resolve_device(attentive_cfg.run.device)
    dataset, _, info = attentive_cfg.data.datasets(augment=False)
    extractor = attentive_cfg.mixing.extractor_spec.build(image_size=info.image_size, device=device)
    settings = dataclasses.asdict(attentive_cfg.mixing.options)  # the demo's grid, for every method that has one
    rates: dict[str, Any] = {}
    with _phase(phases, "localisation"):
        for name in demo_methods():
            method = registry.get(name)
            if method.build is None or not getattr(method.mixer, "has_region", False):
                continue
            options = method.options(**{k: v for k, v in settings.items() if k in method.option_names()})
            reads = method.needs_attention(options)
            mixer = method.make_mixer(options, num_classes=info.num_classes, extractor=extractor if reads else None)
            if mixer.guidance_source != "model":
                rates[name] = region_hit_rates(mixer, dataset, extractor=extractor if reads else None, seed=0,
                                               device=device)
    figure = None
    try:
        import matplotlib  # noqa: F401  (the figure's only need beyond the training)
    except ImportError:
        print("note: no figure, matplotlib is not installed (pip install matplotlib)", flush=True)
    else:
        with _phase(phases, "figure"):
            figure = figure_for_dataset(dataset, info, str(path), methods=[m for m in demo_methods()
                                                                          if registry.get(m).build is not None],
                                        options=settings, extractor=extractor, num_images=4, seed=0, device=device,
                                        title="demo training images; attention of the extractor (trained on other "
                                              "images); each method's region outlined")
    return {"figure": figure, "localisation": rates}


def localisation_line(rates: dict[str, Any]) -> str:
    """Each method's hit rate on the ground-truth boxes, with its standard error."""
    images = next(iter(rates.values()))["images"]
    parts = [f"{method_label(m)} {100 * r['hit']:.0f}% ± {100 * r['hit_se']:.0f}" for m, r in rates.items()]
    return (f"Where the regions land ({images} demo training images, ground-truth boxes), the share of the pixels each "
            f"method takes from the partner that lie on the partner's object: {', '.join(parts)} (mean ± standard "
            "error over images).")


def missed_objects(hits: dict[str, Any]) -> list[str]:
    """For each method that reads attention and each method it is compared with that takes the same area (the
    registry's comparisons): a note where its region lands on the objects no more often than the other's."""
    notes = []
    for name, r in hits.items():
        method = registry.get(name)
        if not method.needs_attention(method.options()):
            continue
        for other, _ in method.comparisons:
            o = hits.get(other)
            if o is None or abs(o["area"] - r["area"]) > 0.1 * r["area"]:
                continue  # another area: its hit rate is no control for this one
            if not r["hit"] > o["hit"] + 2 * max(r["hit_se"], o["hit_se"]):
                notes.append(f"{method_label(name)}'s cells land on the objects no more often than "
                             f"{method_label(other).lower()}' ({100 * r['hit']:.0f}% vs {100 * o['hit']:.0f}% of their "
                             f"pixels), so its row does not test attention")
    return notes


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process and of its finished (joined) children, the training workers."""
    return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                  resource.getrusage(resource.RUSAGE_CHILDREN)))


PHASES = ("extractor", "cache", "training runs", "localisation", "figure", "report")  # in the order they start


def time_line(wall: float, cpu: float, phases: dict[str, dict[str, float]], trained: int) -> str:
    """The demo's wall and CPU time, and each phase's share of the CPU time (phases overlap in wall time)."""
    shares = [(name, phases[name]["cpu_s"]) for name in PHASES if name in phases]
    shares.append(("other (start-up, imports, data)", max(cpu - sum(c for _, c in shares), 0.0)))
    parts = ", ".join(f"{name} {c:.0f} s ({100 * c / max(cpu, 1e-9):.0f}%)" for name, c in shares)
    return (f"Time: {wall:.0f} s wall, {cpu:.0f} s CPU (user + system, all processes) for {trained} run(s) "
            f"trained now, i.e. about {cpu / 2:.0f} s on 2 idle cores. CPU by phase: {parts}.")


def _report(grid: Grid, out: Path, trained: list[dict[str, Any]], look: dict[str, Any],
            phases: dict[str, dict[str, float]], *, size: dict[str, Any], steps: int, start: float,
            cpu_start: float) -> int:
    with _phase(phases, "report"):
        compare.write_report(grid, out, _quiet)  # results.json, table.md, paired.md, plots: as `compare` writes them
        entries = compare.collect(grid, out)
        summary = next(iter(baseline_summary(entries).values()))
        table = baseline_markdown(summary)
    baseline = [e for e in entries if e["labels"]["method"] == registry.BASELINE]
    rise = loss_rise(baseline)
    extractor_top1 = _extractor_top1(grid, out) if grid.extractors else float("nan")
    rates = look.get("localisation")
    mixed_train = [_eval_curve(e)[-1]["train_top1"] for e in entries if e["labels"]["method"] != registry.BASELINE]
    closing = closing_line(summary, rise=rise, num_train=size["train"], steps=steps, extractor_top1=extractor_top1,
                           hits=rates, mixed_train=mixed_train, quick=size is QUICK)
    parts = part_lines(entries, grid.metric)
    wall, cpu = time.perf_counter() - start, _cpu_seconds() - cpu_start
    figure = look.get("figure")
    timing = time_line(wall, cpu, phases, len(trained))
    payload = {"grid": grid.name, "regime": dict(size),
               "methods": {s.method: {"top1_mean": s.held_out.mean, "top1_std": s.held_out.std,
                                      "train_top1_mean": s.train.mean, "gap_mean": s.gap.mean,
                                      "vs_baseline": None if s.vs_baseline is None else vars(s.vs_baseline)}
                           for s in summary},
               "runs": {e["id"]: {k: e.get(k) for k in ("labels", "status", "top1", "top5")} for e in entries},
               "extractor_top1": extractor_top1, "localisation": rates, "parts": parts, "closing": closing,
               "figure": None if figure is None else str(figure), "wall_time_s": wall, "cpu_time_s": cpu,
               "phases": phases, "runs_trained": len(trained)}
    lines = ["", "Baseline overfitting (train vs held-out top-1, held-out cross-entropy):",
             *overfitting_lines(baseline), "", table, "", *parts,
             *([localisation_line(rates)] if rates else []),
             "Δ: held-out top-1 minus the baseline's, seed by seed (same initial weights, data order and crops), "
             f"mean ± std over seeds. Figure of each method on a batch: {figure}",
             timing, f"Runs, tables and summary.json are in {out}/.", "", closing]
    atomic_write(out / "summary.md", lambda tmp: Path(tmp).write_text("\n".join(lines[1:]) + "\n"))
    atomic_write(out / "summary.json", lambda tmp: Path(tmp).write_text(json.dumps(payload, indent=2)))
    print("\n".join(lines))
    return 0


__all__ = ["FULL", "QUICK", "IMAGE_SIZE", "demo_methods", "demo_grid", "run_one", "prepare_extractor",
           "overfitting_lines", "loss_rise", "baseline_overfits", "closing_line", "part_lines", "run_demo"]
