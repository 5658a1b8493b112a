"""`attentive-cutmix compare`: grid expansion and ids, tables and plots, skipping finished cells, resuming
interrupted ones, shared attention caches, and the table arithmetic on hand-made results."""
from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
import yaml

from attentive_cutmix.cli import main
from attentive_cutmix.experiments import compare as compare_mod
from attentive_cutmix.experiments.grid import RUN_FIELDS, GridError, load_grid
from attentive_cutmix.experiments.report import build_table, interval95, mean_std, table_csv, table_markdown

TINY = dict(dataset="synthetic", synthetic_size=48, model="cifar_resnet20", epochs=1, batch_size=16,
            max_steps_per_epoch=2, workers=0, progress=False)


def _grid(tmp_path: Path, name: str = "grid.yaml", **spec) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _mtimes(out: Path) -> dict[str, int]:
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in sorted((out / "runs").rglob("*")) if p.is_file()}


_ROOT = Path(__file__).resolve().parents[1]
# The repository's evidence grids and the grids that ship inside the package.
SHIPPED_GRIDS = sorted([*(_ROOT / "configs").rglob("*.yaml"),
                        *(_ROOT / "src/attentive_cutmix/configs").rglob("*.yaml")])


@pytest.mark.parametrize("path", SHIPPED_GRIDS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_shipped_grid_file_loads(path):
    # A typo in a shipped config must fail here, not hours into someone's run.
    grid = load_grid(path)
    ids = [cell.id for cell in grid.cells]
    assert ids and len(set(ids)) == len(ids)
    assert all(cell.config.epochs > 0 for cell in grid.cells)


def test_the_paper_recipe_arm_differs_from_the_first_arm_only_in_the_recipe():
    first, second = (load_grid(Path(__file__).resolve().parents[1] / "configs" / "results" / name)
                     for name in ("cifar10-jpeg-converged.yaml", "cifar10-jpeg-paper-recipe.yaml"))
    recipe = {"epochs", "batch_size", "optimizer", "lr", "momentum", "nesterov", "weight_decay", "schedule", "init",
              "preset", "explicit"}  # bookkeeping: which preset, which keys were set by hand
    assert [c.axes for c in first.cells] == [c.axes for c in second.cells]
    for a, b in zip(first.cells, second.cells):
        # How a cell runs (RUN_FIELDS: --compile, workers, ...) is not part of what it computes nor of its id.
        before, after = a.config.to_dict(), b.config.to_dict()
        diff = {k for k, v in before.items() if after[k] != v and k not in RUN_FIELDS}
        diff |= {"explicit"} if a.config.explicit != b.config.explicit else set()
        assert diff and diff <= recipe, diff - recipe
        assert (b.config.optimizer, b.config.lr, b.config.weight_decay, b.config.init, b.config.batch_size,
                b.config.epochs) == ("adam", 1e-3, 1e-5, "xavier", 32, 80)


def test_grid_ids_are_stable_and_follow_the_config(tmp_path):
    spec = dict(settings=TINY, axes={"method": ["none", "cutmix"], "seed": [0, 1]})
    ids = [c.id for c in load_grid(_grid(tmp_path, **spec)).cells]
    assert ids == [c.id for c in load_grid(_grid(tmp_path, "again.yaml", **spec)).cells]
    assert len(set(ids)) == 4
    assert ids[0].startswith("synthetic-cifar_resnet20-none-s0-")
    changed = load_grid(_grid(tmp_path, "changed.yaml", settings={**TINY, "epochs": 2}, axes=spec["axes"]))
    assert not set(ids) & {c.id for c in changed.cells}  # another config is another cell: results never mix


def test_method_only_axes_are_dropped_where_they_do_not_apply(tmp_path):
    grid = load_grid(_grid(tmp_path, settings={**TINY, "extractor": "cifar_resnet20"},
                           axes={"method": ["none", "attentive-cutmix"], "num_patches": [1, 4, 6]}))
    by_method = {}
    for cell in grid.cells:
        by_method.setdefault(cell.config.method, []).append(cell)
    assert len(by_method["none"]) == 1 and by_method["none"][0].axes["num_patches"] is None
    assert sorted(c.config.mixing.options.num_patches for c in by_method["attentive-cutmix"]) == [1, 4, 6]
    assert all("num_patches" in c.id for c in by_method["attentive-cutmix"])


def test_bad_grid_files_name_the_problem(tmp_path):
    with pytest.raises(GridError, match="unknown axis 'num_patch'"):
        load_grid(_grid(tmp_path, settings=TINY, axes={"num_patch": [1, 2]}))
    with pytest.raises(GridError, match="unknown key"):
        load_grid(_grid(tmp_path, settings=TINY, epochs=3, axes={"seed": [0]}))
    with pytest.raises(GridError, match="lr"):
        load_grid(_grid(tmp_path, settings={**TINY, "lr": -1.0}, axes={"seed": [0]}))


def test_compare_runs_a_2x2_grid_writes_tables_and_plots_then_skips_finished_cells(tmp_path, monkeypatch, capsys):
    grid = _grid(tmp_path, name="tiny", settings=TINY, axes={"method": ["none", "cutmix"], "seed": [0, 1]},
                 paper_results={"synthetic": {"cifar_resnet20": {"none": 50.0, "cutmix": 60.0}}})
    out = tmp_path / "out"
    assert main(["compare", str(grid), "--output-dir", str(out)]) == 0

    results = json.loads((out / "results.json").read_text())
    assert len(results["runs"]) == 4 and all(r["status"] == "finished" for r in results["runs"])
    run = results["runs"][0]
    assert run["curve"] and run["top1"] is not None and run["wall_time_s"] > 0 and run["config"]["method"] == "none"
    table = (out / "table.md").read_text()
    assert "| synthetic | cifar_resnet20 |" in table and "(n=2)" in table and "cifar_resnet20 (paper)" in table
    printed = capsys.readouterr().out  # the table, at the end, on stdout (it was only written to table.md)
    assert printed.rstrip().endswith(table.rstrip())
    assert "bold: the best of its row, where its 95% interval" in table
    rows = list((out / "table.csv").read_text().splitlines())
    assert rows[0].startswith("dataset,model,source,none_mean,none_std,none_n,cutmix_mean")
    for png in ("curves-synthetic.png", "bars-synthetic.png"):
        data = (out / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000

    before = _mtimes(out)

    def no_training(cfg):
        raise AssertionError(f"finished cell retrained: {cfg.output_dir}")

    monkeypatch.setattr("attentive_cutmix.training.train", no_training)
    assert main(["compare", str(grid), "--output-dir", str(out)]) == 0
    assert _mtimes(out) == before


def test_list_and_single_cell(tmp_path, capsys):
    grid = _grid(tmp_path, settings=TINY, axes={"method": ["none", "cutmix"]})
    out = tmp_path / "out"
    assert main(["compare", str(grid), "--output-dir", str(out), "--list"]) == 0
    ids = capsys.readouterr().out.split()
    assert len(ids) == 2 and not out.exists()
    assert main(["compare", str(grid), "--output-dir", str(out), "--cell", ids[1]]) == 0
    assert (out / "runs" / ids[1] / "results.json").exists() and not (out / "runs" / ids[0]).exists()
    assert json.loads((out / "results.json").read_text())["runs"][0]["status"] == "pending"
    assert main(["compare", str(grid), "--output-dir", str(out), "--cell", "nope"]) == 1


def test_interrupted_cell_resumes_instead_of_restarting(tmp_path):
    grid_path = _grid(tmp_path, settings={**TINY, "epochs": 2}, axes={"seed": [0]})
    grid = load_grid(grid_path)
    (cell,) = grid.cells
    out = tmp_path / "out"
    run_dir = out / "runs" / cell.id
    # Simulate a run stopped after epoch 1 of 2: the cell's folder with an epoch-1 checkpoint and no results.json.
    from attentive_cutmix.training import train

    compare_mod._write_cell_file(run_dir, cell)

    train(cell.config.replace(epochs=1, output_dir=str(run_dir)))
    first = json.loads((run_dir / "results.json").read_text())["curve"][0]
    (run_dir / "results.json").unlink()
    assert compare_mod.cell_status(run_dir, cell.identity) == "resumable"

    assert main(["compare", str(grid_path), "--output-dir", str(out)]) == 0
    curve = json.loads((run_dir / "results.json").read_text())["curve"]
    assert [r["epoch"] for r in curve] == [1, 2]
    assert curve[0] == first  # epoch 1 kept as it was (timings included): continued, not restarted


def test_a_folder_of_another_config_is_refused(tmp_path):
    grid = load_grid(_grid(tmp_path, settings=TINY, axes={"seed": [0]}))
    (cell,) = grid.cells
    run_dir = tmp_path / "runs" / cell.id
    compare_mod._write_cell_file(run_dir, cell)
    saved = json.loads((run_dir / "cell.json").read_text())
    saved["identity"]["lr"] = 0.5
    (run_dir / "cell.json").write_text(json.dumps(saved))
    with pytest.raises(compare_mod.CellConflictError, match="different config"):
        compare_mod.cell_status(run_dir, cell.identity)
    assert json.loads((run_dir / "cell.json").read_text())["identity"]["lr"] == 0.5  # left as it was


def test_attentive_cells_share_one_cache_from_a_trained_extractor_and_report_localization(tmp_path):
    grid = _grid(tmp_path, settings=TINY, extractors={"synth": {"model": "cifar_resnet20", "epochs": 1}},
                 method_settings={"attentive-cutmix": {"extractor": "synth", "grid_size": 4, "num_patches": 4}},
                 axes={"method": ["attentive-cutmix"], "seed": [0, 1]})
    out = tmp_path / "out"
    assert main(["compare", str(grid), "--output-dir", str(out)]) == 0
    assert len(list((out / "extractors").glob("*/checkpoint.pt"))) == 1
    assert len(list((out / "caches").glob("*.safetensors"))) == 1  # seed does not change the synthetic split
    runs = json.loads((out / "results.json").read_text())["runs"]
    for run in runs:
        loc = run["localization"]
        assert 0.0 <= loc["hit"] <= 1.0 and 0.0 <= loc["random"] <= 1.0 and loc["images"] > 0
    table = (out / "table.md").read_text()
    assert "Localisation: fraction of each method's region" in table and "| Attentive CutMix |" in table


# ------------------------------------------------------------------------------------------ tables by hand
def _run(method: str, seed: int, top1: float, model: str = "m") -> dict:
    return {"id": f"{model}-{method}-{seed}", "status": "finished", "top1": top1, "best_top1": top1 + 1,
            "labels": {"dataset": "d", "model": model, "method": method, "seed": seed}, "curve": []}


def test_mean_std_bold_best_and_paper_row_on_hand_made_results():
    runs = [_run("none", 0, 70.0), _run("none", 1, 74.0), _run("none", 2, 72.0),
            _run("cutmix", 0, 75.5), _run("cutmix", 1, 76.5),
            _run("none", 0, 90.0, model="k"), _run("cutmix", 0, 80.0, model="k"),
            {**_run("cutmix", 3, 99.0), "status": "resumable"}]  # unfinished: not counted
    stat = mean_std([70.0, 74.0, 72.0])
    assert (stat.mean == pytest.approx(72.0) and stat.std == pytest.approx(statistics.stdev([70, 74, 72]))
            and stat.n == 3)
    assert mean_std([5.0]).std is None and mean_std([]).n == 0

    table = build_table(runs)
    rows = dict(table.rows)
    assert table.methods == ["none", "cutmix"]
    assert rows[("d", "m")]["cutmix"].n == 2 and rows[("d", "m")]["cutmix"].mean == pytest.approx(76.0)
    md = table_markdown(table, paper={"d": {"m": {"none": 71.25, "cutmix": 77.0}}})
    lines = md.splitlines()
    m_row = next(line for line in lines if line.startswith("| d | m |"))
    # 76.00 is the best mean, but its 95% interval (76 ± 6.35, n=2) overlaps none's (72 ± 4.97): no bold claim.
    assert "72.00 ± 2.00 (n=3)" in m_row and "76.00 ± 0.71 (n=2)" in m_row and "**" not in m_row
    k_row = next(line for line in lines if line.startswith("| d | k |"))
    assert "90.00 (n=1)" in k_row and "**" not in k_row  # one seed each: no interval to tell them apart
    assert "| d | m (paper) | 71.25 | 77.00 |" in md
    assert not any("k (paper)" in line for line in lines)

    best = build_table(runs, "best_top1")
    assert dict(best.rows)[("d", "m")]["none"].mean == pytest.approx(73.0)
    csv_rows = table_csv(table, paper={"d": {"m": {"none": 71.25}}}).splitlines()
    assert csv_rows[1] == "d,m,ours,72.0000,2.0000,3,76.0000,0.7071,2"
    assert csv_rows[2] == "d,m,paper,71.25,,,,,"


def test_tables_show_display_labels_and_grid_labels_and_the_csv_keeps_grid_labels():
    # A method axis entry that is a method name shows the registry's label; one the grid labelled itself (a variant)
    # shows that label; a grid label spelled like another method's display label keeps both columns apart.
    runs = [_run(m, 0, 70.0 + i) for i, m in enumerate(("none", "attentive-cutmix", "attentive-cutmix-mass"))]
    table = build_table(runs)
    assert "| dataset | model | Baseline (no mixing) | Attentive CutMix | attentive-cutmix-mass |" in \
        table_markdown(table)
    assert table_csv(table).splitlines()[0].startswith("dataset,model,source,none_mean,none_std,none_n,"
                                                       "attentive-cutmix_mean,")
    clash = build_table([_run("cutmix", 0, 70.0), _run("CutMix", 0, 71.0), _run("mixup", 0, 72.0)])
    assert "| dataset | model | cutmix | CutMix | MixUp |" in table_markdown(clash)


def test_ablation_plot_when_num_patches_is_an_axis(tmp_path):
    from attentive_cutmix.experiments.report import write_plots

    runs = []
    for n, acc in ((1, 60.0), (4, 64.0), (6, 66.0), (15, 61.0)):
        for seed in (0, 1):
            run = _run("attentive-cutmix", seed, acc + seed)
            run["labels"]["num_patches"] = n
            run["curve"] = [{"epoch": 1, "top1": acc - 5}, {"epoch": 2, "top1": acc + seed}]
            runs.append(run)
    written = {p.name for p in write_plots(runs, tmp_path)}
    assert written == {"curves-d.png", "bars-d.png", "ablation-num_patches.png"}
    assert (tmp_path / "ablation-num_patches.png").stat().st_size > 5000
    table = build_table(runs)
    assert [k for k, _ in table.rows] == [("d", "m", "1"), ("d", "m", "4"), ("d", "m", "6"), ("d", "m", "15")]


def test_the_best_entry_is_bold_only_where_its_95_percent_interval_clears_every_other():
    # The table used to bold the highest mean whatever the spread over seeds.
    runs = [_run("none", s, v) for s, v in enumerate((70.0, 70.5, 71.0))]
    runs += [_run("cutmix", s, v) for s, v in enumerate((75.0, 75.5, 76.0))]  # 75.5 ± 1.24 vs 70.5 ± 1.24
    runs += [_run("mixup", s, v) for s, v in enumerate((60.0, 80.0, 70.0))]   # 70 ± 24.8: overlaps everything
    table = build_table(runs)
    assert interval95(dict(table.rows)[("d", "m")]["cutmix"]) == pytest.approx((75.5 - 1.242, 75.5 + 1.242), abs=1e-3)
    md = table_markdown(table)
    assert "**" not in md.splitlines()[-1]  # mixup's wide interval reaches above cutmix's lower end
    clear = table_markdown(build_table(runs[:6]))
    assert "**75.50 ± 0.50** (n=3)" in clear and "**70.50" not in clear


def test_the_curves_plot_has_one_legend_beside_the_panels_colours_per_method_and_whole_epoch_ticks(tmp_path,
                                                                                                   monkeypatch):
    # Each panel carried its own legend over its curves, the ticks read 1.5, 2.5 epochs, and a method absent from
    # one panel shifted the colours of the others there.
    from attentive_cutmix.experiments import report

    figures = {}
    real_save = report._save
    monkeypatch.setattr(report, "_save", lambda fig, path, plt: figures.setdefault(path.name, fig) and
                        real_save(fig, path, plt))
    runs = [{**_run(method, seed, 70.0 + seed, model),
             "curve": [{"epoch": e, "top1": 60.0 + e + seed, "train_top1": 70.0 + e} for e in (1, 2, 3)]}
            for model in ("m", "k") for method in ("none", "cutmix", "mixup") for seed in (0, 1)
            if not (model == "k" and method == "cutmix")]
    report.write_plots(runs, tmp_path)
    fig = figures["curves-d.png"]
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert len(panels) == 2 and all(ax.get_legend() is None for ax in panels)
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["Baseline (no mixing)", "CutMix", "MixUp", "held-out split",
                                                          "training split (un-augmented)"]
    for ax in panels:
        low, high = ax.get_xlim()
        assert [t for t in ax.get_xticks() if low <= t <= high] == [1, 2, 3]
    mixup_colours = {ax.get_lines()[-2].get_color() for ax in panels}  # mixup's held-out line, the last but its dashed
    assert len(mixup_colours) == 1
