"""``attentive-cutmix demo``: a paired-seed comparison, offline, on a CPU, in about 3.5 minutes on 2 idle cores.

**Regime.** Mixing is a regulariser: it can only help a network that overfits. So the demo trains a CIFAR
ResNet-20 on 100 images (10 per class) of the embedded synthetic dataset at 16 px for 90 epochs (360 Adam
steps), far past the point where the baseline fits its training set; it is evaluated on 1,000 other images.
The regime was chosen with the baseline alone (its train/held-out gap and its rising held-out loss), and the
methods keep the paper's settings (7x7 grid and N=6 for Attentive CutMix and random cells; alpha 1 for MixUp
and CutMix), all run once. Every method trains with the same seeds, and a seed fixes the initial weights, the
data order and the crops, so each method's difference from the baseline is measured seed by seed (paired).
Cutout is left out: its three runs would push the demo past its time budget.

**Extractor.** The paper's extractor was trained on other images (ImageNet). Here it is a ResNet-20 trained
briefly on 1,000 synthetic images disjoint from both the demo's training and evaluation images: the demo draws
its 100 training images as a stratified subset of a 1,100-image pool (``train_subset``), and the extractor
trains on that pool with the *same* stratified split held out (``val_fraction = 100 / 1100``, same split seed),
i.e. exactly on the other 1,000; the evaluation images come from another generator seed. Using the baseline's
own checkpoint instead would give Attentive CutMix a network fitted on the very images it mixes.

**Random cells.** The control with Attentive CutMix's grid and cell count but cells drawn uniformly: Attentive
CutMix minus random cells is the part of its effect due to attention, random cells minus CutMix the part due
to pasting less area.

Runs go to ``<output_dir>/<method>/seed<k>`` and ``<output_dir>/extractor``; two processes train them at once
(one thread each; a run's result does not depend on which process trains it). Re-running in the same folder
reuses finished runs and resumes interrupted ones; a folder holding runs made with other settings is refused.
"""
from __future__ import annotations

import contextlib
import json
import math
import multiprocessing
import os
import signal
import statistics
import sys
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable

from ..serialization import atomic_write
from ..training.config import FIELDS, ConfigError, TrainConfig, make_config
from .stats import t_quantile

METHODS = ("none", "mixup", "cutmix", "random-cells", "attentive-cutmix")
LABELS = {"none": "Baseline (no mixing)", "mixup": "MixUp", "cutmix": "CutMix", "cutout": "Cutout",
          "random-cells": "Random cells", "attentive-cutmix": "Attentive CutMix"}
IMAGE_SIZE = 16  # the 32 px synthetic images, downscaled: 4x cheaper, and the shapes stay recognisable
# pool: seed-0 images the training subset is drawn from (the rest train the extractor); eval: seed-1 images.
FULL = dict(pool=1100, train=100, eval=1000, epochs=90, batch_size=25, eval_every=15, seeds=3, extractor_epochs=8)
QUICK = dict(pool=100, train=20, eval=50, epochs=2, batch_size=10, eval_every=1, seeds=2, extractor_epochs=1)
EXTRACTOR_SEED = 1000  # not one of the demo's seeds: the extractor shares no initial weights with a demo run
FIGURE_NAME = "mixing.png"
IGNORED_WHEN_REUSING = ("resume", "overwrite", "progress")  # how a run is launched, not what it computes
OVERFIT_GAP = 10.0  # points of train top-1 above held-out top-1 that count as overfitting


def _size(quick: bool) -> dict[str, int]:
    return QUICK if quick else FULL


def demo_configs(output_dir: str | Path, *, quick: bool = False, epochs: int | None = None,
                 seeds: int | None = None, device: str = "cpu") -> tuple[TrainConfig, dict[str, list[TrainConfig]]]:
    """``(extractor_config, {method: [config per seed]})``: every method runs with seeds ``0 .. seeds-1``."""
    out, size = Path(output_dir), _size(quick)
    num_seeds = seeds if seeds is not None else size["seeds"]
    if isinstance(num_seeds, bool) or not isinstance(num_seeds, int) or num_seeds < 2:
        raise ConfigError(f"seeds must be an int >= 2 (a spread needs two paired seeds), got seeds={num_seeds!r}")
    data = dict(dataset="synthetic", synthetic_size=[size["pool"], size["eval"]], image_size=IMAGE_SIZE, split_seed=0)
    optim = dict(model="cifar_resnet20", optimizer="adam", lr=2e-3, weight_decay=1e-5, schedule="cosine", workers=0,
                 device=device, progress=False, data_path="auto")
    extractor_dir = out / "extractor"
    extractor = _config(extractor_dir, {**data, **optim, "val_fraction": size["train"] / size["pool"],
                                        "epochs": size["extractor_epochs"], "batch_size": 64, "seed": EXTRACTOR_SEED,
                                        "eval_every": size["extractor_epochs"], "method": "none"})
    common = {**data, **optim, "train_subset": size["train"], "epochs": epochs or size["epochs"],
              "batch_size": size["batch_size"], "eval_every": size["eval_every"], "eval_train": True}
    extra: dict[str, dict[str, Any]] = {
        "none": {}, "mixup": dict(alpha=1.0), "cutmix": dict(alpha=1.0), "cutout": dict(cutout_size=IMAGE_SIZE // 2),
        "random-cells": dict(num_patches=6, grid_size=7),
        "attentive-cutmix": dict(num_patches=6, grid_size=7, extractor=str(extractor_dir / "checkpoint.pt"),
                                 attention_cache=str(extractor_dir / "attention.cache"), build_cache=True),
    }
    runs = {method: [_config(out / method / f"seed{seed}", {**common, **extra[method], "method": method, "seed": seed})
                     for seed in range(num_seeds)] for method in METHODS}
    return extractor, runs


def _config(run_dir: Path, options: dict[str, Any]) -> TrainConfig:
    from ..training.run_io import existing_outputs

    # Continue or reuse an earlier demo run, never overwrite it: an unfinished run resumes from its checkpoint.
    return make_config({**options, "output_dir": str(run_dir), "resume": bool(existing_outputs(run_dir))})


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
    return {k: config.get(k) for k in FIELDS if k not in IGNORED_WHEN_REUSING}


def check_same_settings(cfg: TrainConfig) -> None:
    """Refuse a run folder whose earlier run had other settings (it would be continued with a changed recipe)."""
    saved_path = Path(cfg.output_dir) / "config.yaml"
    if not saved_path.is_file():
        return
    from ..training.config import yaml_load

    saved, planned = _comparable(yaml_load(saved_path.read_text()) or {}), _comparable(cfg.to_dict())
    changed = [f"{k}: {saved[k]!r} there, {planned[k]!r} now" for k in planned if saved[k] != planned[k]]
    if changed:
        raise ConfigError(f"{cfg.output_dir} holds a run made with other settings ({'; '.join(changed)}); nothing was "
                          "changed. Use another --output-dir for these settings, or the earlier ones to reuse it")


def finished_result(cfg: TrainConfig) -> dict[str, Any] | None:
    """The results of a finished run of exactly ``cfg`` in its folder, or ``None`` if it still has to train."""
    try:
        results = json.loads((Path(cfg.output_dir) / "results.json").read_text())
    except (OSError, ValueError):
        return None
    if results.get("status") != "finished" or _comparable(results.get("config", {})) != _comparable(cfg.to_dict()):
        return None
    return results


def train_run(cfg: TrainConfig) -> dict[str, Any]:
    """Train one run (or read its finished results); returns what the table needs, with its CPU time."""
    from ..training.trainer import train

    check_same_settings(cfg)
    reused = finished_result(cfg)
    wall, cpu = time.perf_counter(), time.process_time()
    results = reused if reused is not None else train(cfg)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if results.get("status") != "finished":
        return {"status": results.get("status"), "resume_command": results.get("resume_command")}
    last = results["curve"][-1]
    return {"status": "finished", "reused": reused is not None, "top1": results["top1"], "top5": results["top5"],
            "train_top1": last.get("train_top1"), "train_loss": last["train_loss"], "eval_loss": last["eval_loss"],
            "eval_curve": [{k: r.get(k) for k in ("epoch", "top1", "eval_loss", "train_top1", "train_loss")}
                           for r in results["curve"] if r.get("top1") is not None],
            "train_time_s": results["wall_time_s"], "wall_s": wall, "cpu_s": cpu, "output_dir": cfg.output_dir}


def prepare_extractor(extractor_cfg: TrainConfig, attentive_cfg: TrainConfig) -> dict[str, Any]:
    """Train (or reuse) the extractor, then build the attention cache the Attentive CutMix runs share, once."""
    from ..training.data_setup import build_data
    from ..training.distributed import DistInfo, resolve_device

    result = train_run(extractor_cfg)
    if result["status"] == "finished":
        cpu = time.process_time()
        # The trainer's own code path (a no-op when the cache exists): every seed then opens one finished file,
        # instead of two processes racing to write it.
        build_data(attentive_cfg, DistInfo(), resolve_device(attentive_cfg.device))
        result["cpu_s"] += time.process_time() - cpu
    return result


def _init_worker() -> None:
    import torch

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


# ----------------------------------------------------------------------------------------------- statistics
def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else float("nan"))


def summarize(results: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Per method: mean/std of top-1 over seeds, the paired difference from the baseline (mean, std, n, 95% CI),
    train top-1 and the train - held-out gap; ``verdict`` is better/worse when the CI excludes 0, else ``tie``."""
    base = [r["top1"] for r in results["none"]]
    stats: dict[str, dict[str, Any]] = {}
    for method, runs in results.items():
        top1 = [r["top1"] for r in runs]
        train = [r["train_top1"] for r in runs]
        mean, std = _mean_std(top1)
        row: dict[str, Any] = {"top1": top1, "top1_mean": mean, "top1_std": std,
                               "train_top1_mean": statistics.fmean(train),
                               "gap_mean": statistics.fmean(t - h for t, h in zip(train, top1)), "seeds": len(runs)}
        if method != "none":
            row.update(paired_difference(top1, base))
        else:  # overfitting shows as a held-out loss that rose again after its minimum
            row["eval_loss_rise_mean"] = statistics.fmean(
                r["eval_loss"] - min(c["eval_loss"] for c in r["eval_curve"]) for r in runs)
        stats[method] = row
    return stats


def paired_difference(values: list[float], reference: list[float]) -> dict[str, Any]:
    """``values - reference`` seed by seed: mean, std, n, the 95% t interval and a verdict."""
    diffs = [v - r for v, r in zip(values, reference, strict=True)]
    mean, std = _mean_std(diffs)
    half = t_quantile(0.975, len(diffs) - 1) * std / math.sqrt(len(diffs))
    verdict = "better" if mean - half > 0 else "worse" if mean + half < 0 else "tie"
    return {"diffs": diffs, "diff_mean": mean, "diff_std": std, "diff_n": len(diffs),
            "ci95": [mean - half, mean + half],
            "verdict": verdict}


def format_table(stats: dict[str, dict[str, Any]]) -> str:
    """A Markdown table: held-out top-1 (mean ± std over seeds), paired Δ vs the baseline, train top-1 and gap."""
    lines = ["| Method | Held-out top-1 (%) | Δ vs baseline, paired (pts) | 95% CI of Δ | Train top-1 (%) "
             "| Train − held-out |",
             "|---|---:|---:|---:|---:|---:|"]
    for method, s in stats.items():
        delta = ci = "—"
        if method != "none":
            delta = f"{s['diff_mean']:+.1f} ± {s['diff_std']:.1f} (n={s['diff_n']})"
            ci = f"[{s['ci95'][0]:+.1f}, {s['ci95'][1]:+.1f}]"
        lines.append(f"| {LABELS[method]} | {s['top1_mean']:.1f} ± {s['top1_std']:.1f} | {delta} | {ci} | "
                     f"{s['train_top1_mean']:.1f} | {s['gap_mean']:+.1f} |")
    return "\n".join(lines)


def overfitting_lines(baseline: list[dict[str, Any]]) -> list[str]:
    """Per seed: the baseline's train vs held-out top-1 and its held-out loss at its minimum and at the end."""
    lines = []
    for seed, run in enumerate(baseline):
        curve = run["eval_curve"]
        best = min(curve, key=lambda r: r["eval_loss"])
        lines.append(f"  seed {seed}: train top-1 {run['train_top1']:.1f}% vs held-out {run['top1']:.1f}%; held-out "
                     f"loss {best['eval_loss']:.2f} at epoch {best['epoch']} (its minimum), {run['eval_loss']:.2f} at "
                     f"epoch {curve[-1]['epoch']}")
    return lines


def baseline_overfits(stats: dict[str, dict[str, Any]]) -> bool:
    """Train top-1 at least ``OVERFIT_GAP`` points above held-out, and the held-out loss risen past its minimum."""
    base = stats["none"]
    return base["gap_mean"] >= OVERFIT_GAP and base["eval_loss_rise_mean"] > 0


def _names(labels: list[str]) -> str:
    return labels[0] if len(labels) == 1 else f"{', '.join(labels[:-1])} and {labels[-1]}"


def closing_line(stats: dict[str, dict[str, Any]], *, num_train: int, steps: int, extractor_top1: float,
                 quick: bool = False) -> str:
    """What this budget can and cannot show, with the methods that beat the baseline (or that none does)."""
    if quick:
        return ("--quick is a smoke test: a few steps on a few images check that every method runs end to end; its "
                "numbers are noise and show nothing about the methods (run without --quick).")
    base, n = stats["none"], stats["none"]["seeds"]
    better = [LABELS[m] for m, s in stats.items() if s.get("verdict") == "better"]
    worse = [LABELS[m] for m, s in stats.items() if s.get("verdict") == "worse"]
    widest = max(s["ci95"][1] - s["ci95"][0] for s in stats.values() if "ci95" in s) / 2
    if baseline_overfits(stats):
        regime = (f"with {num_train} training images the baseline overfits (train {base['train_top1_mean']:.0f}% vs "
                  f"held-out {base['top1_mean']:.0f}%, held-out loss rising), so a regulariser has room to act")
    else:
        regime = (f"with {num_train} training images the baseline does not clearly overfit (train "
                  f"{base['train_top1_mean']:.0f}% vs held-out {base['top1_mean']:.0f}%), so a regulariser has "
                  "little room")
    found = (f"{_names(better)} beat{'s' if len(better) == 1 else ''} the baseline beyond the seed-to-seed spread"
             if better else "no method beats the baseline beyond the seed-to-seed spread")
    if worse:
        found += f", and {_names(worse)} {'is' if len(worse) == 1 else 'are'} below it"
    cannot = []
    mixers = [s["train_top1_mean"] for m, s in stats.items() if m != "none"]
    if min(mixers) < base["train_top1_mean"] - OVERFIT_GAP:  # they still underfit their own training images
        cannot.append(f"in {steps} steps the mixing methods do not fit even their training images (train top-1 "
                      f"{min(mixers):.0f}-{max(mixers):.0f}% vs the baseline's {base['train_top1_mean']:.0f}%), so it "
                      "says nothing about mixing at convergence (the paper trains 80+ epochs on 50,000 images)")
    if extractor_top1 < 80:
        cannot.append(f"the extractor, trained briefly, reaches {extractor_top1:.0f}% on unseen images: a weak test "
                      "of attention")
    cannot.append(f"differences inside the intervals (up to ±{widest:.1f} points here) are not rankings")
    cannot.append("a 16 px synthetic task says nothing definite about real photos or full-size datasets (see "
                  "RESULTS.md for CIFAR-10)")
    return (f"What this budget can show: {regime}; {found} (95% intervals over {n} paired seeds). "
            f"What it cannot show: {'; '.join(cannot)}.")


# ----------------------------------------------------------------------------------------------- the job
def run_demo(output_dir: str | Path = "runs/demo", *, quick: bool = False, epochs: int | None = None,
             seeds: int | None = None, device: str = "cpu", jobs: int = 2) -> int:
    """Train every method on every paired seed, print and write the table; the exit code of ``demo``."""
    import torch

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


def _run(out: Path, *, quick: bool, epochs: int | None, seeds: int | None, device: str, jobs: int) -> int:
    from ..training.trainer import NonFiniteLossError

    start, cpu_start = time.perf_counter(), time.process_time()
    try:
        extractor_cfg, runs = demo_configs(out, quick=quick, epochs=epochs, seeds=seeds, device=device)
        for cfg in [extractor_cfg, *(c for cfgs in runs.values() for c in cfgs)]:
            check_same_settings(cfg)
    except ValueError as err:
        print(f"attentive-cutmix demo: error: {err}", file=sys.stderr)
        return 1
    base, size, num_seeds = runs["none"][0], _size(quick), len(runs["none"])
    steps = base.epochs * max(size["train"] // base.batch_size, 1)  # the trainer drops a ragged last batch
    print(f"Attentive CutMix demo: CIFAR ResNet-20 on {size['train']} images of the embedded synthetic dataset "
          f"({IMAGE_SIZE} px, 10 classes), {base.epochs} epochs ({steps} Adam steps), evaluated on {size['eval']} "
          f"other images; {len(METHODS)} methods x {num_seeds} paired seeds "
          f"on {device}, {jobs} process(es). Attentive CutMix's extractor is a ResNet-20 trained for "
          f"{extractor_cfg.epochs} epochs on {size['pool'] - size['train']} other images.\nOutputs: {out.resolve()}\n",
          flush=True)
    pool = (ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                                initializer=_init_worker) if jobs > 1 else _InProcess())
    order = [(m, s) for m in METHODS for s in range(num_seeds)]
    results: dict[str, list[dict[str, Any]]] = {m: [] for m in METHODS}
    try:
        extractor_future = pool.submit(prepare_extractor, extractor_cfg, runs["attentive-cutmix"][0])
        futures = {key: pool.submit(train_run, runs[key[0]][key[1]]) for key in order if key[0] != "attentive-cutmix"}
        extractor = extractor_future.result()
        if extractor["status"] != "finished":
            return _stopped(pool, extractor)
        how = "reused" if extractor["reused"] else f"{extractor['wall_s']:.0f} s"
        print(f"  {'Extractor':<20}        : top-1 {extractor['top1']:5.1f}% on the demo's training images, which it "
              f"never saw ({how})", flush=True)
        futures.update({key: pool.submit(train_run, runs[key[0]][key[1]])
                        for key in order if key[0] == "attentive-cutmix"})
        figure = _figure(runs["attentive-cutmix"][0], out / FIGURE_NAME)  # here, while the workers train
        for method, seed in order:
            result = futures[method, seed].result()
            if result["status"] != "finished":
                return _stopped(pool, result)
            results[method].append(result)
            how = "reused" if result["reused"] else f"{result['wall_s']:.0f} s"
            print(f"  {LABELS[method]:<20} seed {seed}: held-out top-1 {result['top1']:5.1f}%  train top-1 "
                  f"{result['train_top1']:5.1f}%  ({how})", flush=True)
    except KeyboardInterrupt as err:
        return _stopped(pool, {}, signal.SIGTERM if str(err) == "SIGTERM" else signal.SIGINT)
    except (ValueError, NonFiniteLossError) as err:
        pool.shutdown(wait=True, cancel_futures=True)
        print(f"attentive-cutmix demo: error: {err}", file=sys.stderr)
        return 1
    pool.shutdown(wait=True)
    return _report(out, results, extractor, figure, size=size, steps=steps, start=start, cpu_start=cpu_start)


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


def _figure(attentive_cfg: TrainConfig, path: Path) -> Path:
    """What each method does to a batch of the demo's training images, with the extractor's attention."""
    from ..data import build_datasets
    from ..training.components import build_extractor
    from ..training.distributed import resolve_device
    from .visualize import figure_for_dataset

    device = resolve_device(attentive_cfg.device)
    dataset, _, info = build_datasets("synthetic", image_size=IMAGE_SIZE, augment=False, seed=attentive_cfg.split_seed,
                                      synthetic_size=tuple(attentive_cfg.synthetic_size),
                                      train_subset=attentive_cfg.train_subset)
    extractor = build_extractor(attentive_cfg, info, device)
    figure_for_dataset(dataset, extractor, info, str(path), num_images=4, num_patches=attentive_cfg.num_patches,
                       grid_size=attentive_cfg.grid_size, seed=0, device=device,
                       title=f"demo training images; attention of the extractor (trained on other images), top "
                             f"{attentive_cfg.num_patches} of {attentive_cfg.grid_size}x{attentive_cfg.grid_size} "
                             "cells")
    return path


def _report(out: Path, results: dict[str, list[dict[str, Any]]], extractor: dict[str, Any], figure: Path, *,
            size: dict[str, int], steps: int, start: float, cpu_start: float) -> int:
    stats = summarize(results)
    table = format_table(stats)
    attention = paired_difference(stats["attentive-cutmix"]["top1"], stats["random-cells"]["top1"])
    area = paired_difference(stats["random-cells"]["top1"], stats["cutmix"]["top1"])
    closing = closing_line(stats, num_train=size["train"], steps=steps, extractor_top1=extractor["top1"],
                           quick=size is QUICK)
    trained = [r for runs in results.values() for r in runs if not r["reused"]]
    trained += [] if extractor["reused"] else [extractor]
    wall = time.perf_counter() - start
    cpu = sum(r["cpu_s"] for r in trained) + time.process_time() - cpu_start  # workers' runs + this process
    summary = {"methods": stats, "runs": results, "extractor": extractor,
               "attention_part": attention, "area_part": area, "closing": closing, "figure": str(figure),
               "wall_time_s": wall, "cpu_time_s": cpu, "runs_trained": len(trained)}
    atomic_write(out / "table.md", lambda tmp: Path(tmp).write_text(table + "\n"))
    atomic_write(out / "summary.json", lambda tmp: Path(tmp).write_text(json.dumps(summary, indent=2)))
    print("\nBaseline overfitting (train vs held-out top-1, held-out cross-entropy):")
    print("\n".join(overfitting_lines(results["none"])))
    print(f"\n{table}\n")
    print(f"Attention part, Attentive CutMix − random cells: {attention['diff_mean']:+.1f} ± "
          f"{attention['diff_std']:.1f} "
          f"pts (n={attention['diff_n']}, 95% CI [{attention['ci95'][0]:+.1f}, {attention['ci95'][1]:+.1f}]); "
          f"area part, random cells − CutMix: {area['diff_mean']:+.1f} ± {area['diff_std']:.1f} pts "
          f"(95% CI [{area['ci95'][0]:+.1f}, {area['ci95'][1]:+.1f}]).")
    print(f"Δ: held-out top-1 minus the baseline's, seed by seed (same initial weights, data order and crops), "
          f"mean ± std over seeds. Figure of each method on a batch: {figure}")
    print(f"Total {wall:.0f} s wall, {cpu:.0f} s CPU for {len(trained)} run(s) trained now "
          f"(about {cpu / 2:.0f} s on 2 idle cores). Runs, table.md and summary.json are in {out}/.\n")
    print(closing)
    return 0


__all__ = ["METHODS", "LABELS", "FULL", "QUICK", "IMAGE_SIZE", "demo_configs", "check_same_settings", "finished_result",
           "train_run", "prepare_extractor", "summarize", "paired_difference", "format_table", "overfitting_lines",
           "baseline_overfits", "closing_line", "run_demo"]
