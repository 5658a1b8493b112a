"""``attentive-cutmix demo``: paired seeds, disjoint extractor images, honest statistics, reuse on re-run, --quick."""
from __future__ import annotations

import json
import math

import pytest

from attentive_cutmix.cli import main
from attentive_cutmix.experiments import demo

# What a seed fixes for every method alike: the data, the initial weights, the order and the crops, the budget.
SHARED = ("dataset", "synthetic_size", "train_subset", "split_seed", "image_size", "val_fraction", "model",
          "init", "epochs", "batch_size", "optimizer", "lr", "weight_decay", "schedule", "data_path", "eval_every",
          "eval_train", "device", "seed")


def test_demo_configs_pair_seeds_across_methods_with_the_papers_settings(tmp_path):
    extractor, runs = demo.demo_configs(tmp_path)
    assert list(runs) == ["none", "mixup", "cutmix", "random-cells", "attentive-cutmix"]
    assert all(len(cfgs) == demo.FULL["seeds"] for cfgs in runs.values())
    for seed in range(demo.FULL["seeds"]):
        row = [cfgs[seed] for cfgs in runs.values()]
        assert [c.seed for c in row] == [seed] * len(row)
        for name in SHARED:
            assert len({json.dumps(getattr(c, name)) for c in row}) == 1, name
    dirs = [c.output_dir for cfgs in runs.values() for c in cfgs] + [extractor.output_dir]
    assert len(set(dirs)) == len(dirs)
    att, cells = runs["attentive-cutmix"][0], runs["random-cells"][0]
    assert (att.num_patches, att.grid_size, cells.num_patches, cells.grid_size) == (6, 7, 6, 7)
    assert runs["mixup"][0].alpha == runs["cutmix"][0].alpha == 1.0
    assert att.extractor == str(tmp_path / "extractor" / "checkpoint.pt")
    assert extractor.seed not in range(demo.FULL["seeds"])
    assert not any(c.resume for cfgs in runs.values() for c in cfgs) and not extractor.resume


def test_the_extractor_trains_on_images_disjoint_from_the_demos(tmp_path):
    from attentive_cutmix.data import build_datasets

    extractor, runs = demo.demo_configs(tmp_path)

    def splits(cfg):
        return build_datasets(cfg.dataset, image_size=cfg.image_size, val_fraction=cfg.val_fraction,
                              seed=cfg.split_seed, synthetic_size=tuple(cfg.synthetic_size),
                              train_subset=cfg.train_subset)

    ext_train, ext_eval, _ = splits(extractor)
    demo_train, demo_eval, _ = splits(runs["none"][0])
    assert len(demo_train) == demo.FULL["train"] and len(ext_train) == demo.FULL["pool"] - demo.FULL["train"]
    assert ext_train.source.seed == demo_train.source.seed == 0 and demo_eval.source.seed == 1
    assert set(ext_train.indices).isdisjoint(demo_train.indices)
    # The extractor is scored on the demo's training images, never trained on them.
    assert sorted(ext_eval.indices) == sorted(demo_train.indices)
    assert sorted(demo_train.source.targets[i] for i in demo_train.indices) == sorted(list(range(10)) * 10)


def test_paired_difference_gives_mean_std_n_and_a_t_interval():
    d = demo.paired_difference([60.0, 62.0, 64.0], [50.0, 51.0, 52.0])  # differences 10, 11, 12
    assert d["diffs"] == [10.0, 11.0, 12.0] and (d["diff_mean"], d["diff_std"], d["diff_n"]) == (11.0, 1.0, 3)
    assert d["ci95"] == pytest.approx([11 - 4.302653 / math.sqrt(3), 11 + 4.302653 / math.sqrt(3)])  # t(0.975, 2)
    assert d["verdict"] == "better"
    assert demo.paired_difference([50.0, 58.0, 52.0], [52.0, 50.0, 53.0])["verdict"] == "tie"
    assert demo.paired_difference([40.0, 41.0, 43.0], [50.0, 50.0, 51.0])["verdict"] == "worse"


def _run(top1: float, train: float, losses: tuple[float, ...] = (2.0, 1.5, 1.8)) -> dict:
    curve = [{"epoch": 10 * (i + 1), "top1": top1, "eval_loss": loss, "train_top1": train}
             for i, loss in enumerate(losses)]
    return {"top1": top1, "train_top1": train, "eval_loss": losses[-1], "eval_curve": curve}


def _results(gains: dict[str, list[float]], base: list[float]) -> dict:
    out = {"none": [_run(b, 99.0) for b in base]}
    out.update({m: [_run(b + g, 80.0) for b, g in zip(base, gs)] for m, gs in gains.items()})
    return out


def test_the_table_states_differences_with_their_spread_and_the_gap():
    stats = demo.summarize(_results({"mixup": [3.0, 4.0, 5.0], "cutmix": [1.0, -2.0, 4.0], "random-cells": [0.0] * 3,
                                     "attentive-cutmix": [-1.0, 0.0, 1.0]}, [50.0, 52.0, 54.0]))
    table = demo.format_table(stats)
    assert "| Baseline (no mixing) | 52.0 ± 2.0 | — | — | 99.0 | +47.0 |" in table
    assert "| MixUp | 56.0 ± 3.0 | +4.0 ± 1.0 (n=3) | [+1.5, +6.5] | 80.0 | +24.0 |" in table
    assert "| CutMix | 53.0 ± 4.4 | +1.0 ± 3.0 (n=3) | [-6.5, +8.5] |" in table
    assert stats["none"]["eval_loss_rise_mean"] == pytest.approx(0.3) and demo.baseline_overfits(stats)


def test_the_closing_line_names_the_winners_or_says_none_beats_the_baseline():
    base = [50.0, 52.0, 54.0]
    winner = demo.summarize(_results({"mixup": [3.0, 4.0, 5.0], "attentive-cutmix": [-1.0, 0.0, 1.0]}, base))
    line = demo.closing_line(winner, num_train=100, steps=360, extractor_top1=90.0)
    assert line.startswith("What this budget can show: with 100 training images the baseline overfits")
    assert "MixUp beats the baseline" in line and "3 paired seeds" in line and "What it cannot show" in line
    # The mixers' train top-1 (80) is far below the baseline's (99): they have not converged, and the line says so.
    assert "in 360 steps the mixing methods do not fit even their training images (train top-1 80-80%" in line
    assert "extractor" not in line
    nobody = demo.summarize(_results({"mixup": [-1.0, 2.0, 0.0], "cutmix": [-6.0, -5.0, -7.0]}, base))
    line = demo.closing_line(nobody, num_train=100, steps=360, extractor_top1=39.0)
    assert "no method beats the baseline" in line and "and CutMix is below it" in line
    assert "the extractor, trained briefly, reaches 39% on unseen images" in line
    flat = {"none": [_run(b, b + 3.0, (2.0, 1.5, 1.4)) for b in base], "mixup": [_run(b, b + 3.0) for b in base]}
    line = demo.closing_line(demo.summarize(flat), num_train=100, steps=360, extractor_top1=90.0)
    assert "does not clearly overfit" in line and "do not fit even their training images" not in line
    assert "smoke test" in demo.closing_line(winner, num_train=100, steps=360, extractor_top1=90.0, quick=True)


@pytest.mark.slow
def test_quick_runs_end_to_end_a_rerun_reuses_every_run_and_two_processes_agree(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--output-dir", str(out), "--jobs", "1"]) == 0
    first = capsys.readouterr().out
    for name in ("table.md", "summary.json", demo.FIGURE_NAME):
        assert (out / name).stat().st_size > 0
    assert "Δ vs baseline, paired" in (out / "table.md").read_text() and "(n=2)" in first
    assert "Attention part, Attentive CutMix − random cells" in first
    assert first.rstrip().splitlines()[-1].startswith("--quick is a smoke test")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["runs_trained"] == 1 + len(demo.METHODS) * demo.QUICK["seeds"]
    assert all(len(summary["runs"][m]) == demo.QUICK["seeds"] for m in demo.METHODS)

    results = sorted(out.glob("*/seed*/results.json")) + [out / "extractor" / "results.json"]
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in results}
    extractor, runs = demo.demo_configs(out, quick=True)
    assert extractor.resume and all(c.resume for cfgs in runs.values() for c in cfgs)

    assert main(["demo", "--quick", "--output-dir", str(out), "--jobs", "1"]) == 0
    second = capsys.readouterr().out
    assert second.count("(reused)") == len(before)
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in results} == before
    again = json.loads((out / "summary.json").read_text())
    assert again["runs_trained"] == 0 and again["methods"] == summary["methods"]

    assert main(["demo", "--quick", "--output-dir", str(out), "--jobs", "1", "--epochs", "3"]) == 1
    assert "epochs: 2 there, 3 now" in capsys.readouterr().err
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in results} == before

    # Each run is a function of its config alone (seeded, single-threaded), whichever process trains it.
    assert main(["demo", "--quick", "--output-dir", str(tmp_path / "two"), "--jobs", "2"]) == 0
    capsys.readouterr()
    two = json.loads((tmp_path / "two" / "summary.json").read_text())
    keys = ("top1", "train_top1", "eval_loss", "train_loss")
    assert {m: [[r[k] for k in keys] for r in runs] for m, runs in summary["runs"].items()} == \
        {m: [[r[k] for k in keys] for r in runs] for m, runs in two["runs"].items()}
    assert two["extractor"]["top1"] == summary["extractor"]["top1"]
