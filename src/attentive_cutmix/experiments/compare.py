"""``attentive-cutmix compare GRID.yaml``: run every cell of a grid, then write results, tables and plots.

Layout of ``--output-dir`` (default ``runs/compare/<grid file name>``)::

    runs/<cell-id>/        one trainer output folder per cell (checkpoint.pt, metrics.jsonl, results.json, cell.json)
    extractors/<id>/       extractors the grid trains first (``extractors:``)
    caches/<name>.safetensors  attention caches, one per (data split, extractor), shared by cells
    results.json, table.md, table.csv, curves-*.png, bars-*.png, ablation-*.png

A cell id is ``<dataset>-<model>-<method>-s<seed>[-<axis><value>...]-<hash>``, the hash over the cell's whole
resolved config (minus where it runs: output folder, device, workers), so a changed setting is a new cell and
results of different configs never mix. A finished cell is skipped; a cell with a checkpoint and no results is
resumed. ``--cell ID`` runs one cell (e.g. one cluster job per cell); ``--list`` prints the ids.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

from .. import registry, training
from ..serialization import atomic_write
from ..training.components import amp_dtype, build_mixer
from ..training.config import validate
from ..training.distributed import resolve_device
from ..training.run_folder import RESULTS_NAME, RunFolder
from ..training.run_io import RunLockedError, existing_outputs, wait_for_run
from ..training.run_record import RunRecord
from .grid import RUN_FIELDS, Cell, Grid, GridError, _short_hash, _slug
from .localization import region_hit_rates
from .report import build_table, paired_markdown, table_csv, table_markdown, write_plots

CELL_FILE = "cell.json"


class CellConflictError(GridError):
    """A run folder holds a different config than the cell that maps to it."""


# ------------------------------------------------------------------------------------------ state
def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _results(run_dir: Path) -> RunRecord | None:
    """The cell's checked record; None when missing or damaged (the cell then resumes from its checkpoint,
    which writes the file again, instead of a traceback in the tables)."""
    try:
        return RunRecord.read(run_dir)
    except (OSError, ValueError):
        return None


def cell_status(run_dir: Path, identity: dict[str, Any]) -> str:
    """``finished`` / ``resumable`` / ``pending``; ``CellConflictError`` if the folder belongs to another config."""
    saved = _read_json(run_dir / CELL_FILE)
    if saved is not None and saved.get("identity") != json.loads(json.dumps(identity, default=str)):
        raise CellConflictError(f"{run_dir} holds a run of a different config than this grid's cell of the same id "
                                f"(see {run_dir / CELL_FILE}); nothing was changed. Use another --output-dir, or move "
                                "that folder away")
    results = _results(run_dir)
    if saved is not None and results is not None and results.finished:
        return "finished"
    if RunFolder(run_dir).checkpoint.exists():
        if saved is None:
            raise CellConflictError(f"{run_dir} holds a checkpoint not written by `compare` (no {CELL_FILE}); nothing "
                                    "was changed. Use another --output-dir, or move that folder away")
        return "resumable"
    return "pending"


def _write_cell_file(run_dir: Path, cell: Cell) -> None:
    payload = {"id": cell.id, "axes": cell.axes, "identity": cell.identity}
    atomic_write(run_dir / CELL_FILE, lambda tmp: Path(tmp).write_text(json.dumps(payload, indent=2, default=str)))


def _cache_path(out: Path, cfg: Any, extractor_identity: dict[str, Any] | None, label: Any = None) -> Path:
    # Keyed on what the train split's images are (the data section: split_seed, not the training seed, so every
    # seed of a cell shares one cache) and on what makes the maps (the extractor run's config, or the spec).
    extractor = extractor_identity or cfg.mixing.extractor_spec.identity()
    name = (f"{_slug(label or cfg.data.dataset)}-{_slug(Path(str(cfg.mixing.extractor)).stem)}-"
            f"{_short_hash([cfg.data_identity(), extractor], 10)}")
    return out / "caches" / f"{name}.safetensors"


# ------------------------------------------------------------------------------------------ running
def _train(cfg: Any, run_dir: Path, overrides: dict[str, Any], log: Callable[[str], None]) -> dict[str, Any]:
    # The folder is this cell's (cell_status checked cell.json): continue whatever an earlier attempt left,
    # a checkpoint or only the first epoch's metrics of a run killed before its first checkpoint.
    resume = bool(existing_outputs(run_dir))
    cfg = validate(cfg.replace(output_dir=str(run_dir), auto_resume=resume, **overrides))
    return training.train(cfg)  # looked up at call time: tests replace the training call


def _ensure_extractor(grid: Grid, name: str, out: Path, overrides: dict[str, Any], log: Callable[[str], None]) -> Path:
    """Train the shared extractor ``name`` unless it is finished; if another job is training it, wait and reuse it."""
    cell = grid.extractors[name]
    run_dir = out / "extractors" / cell.id
    while (status := cell_status(run_dir, cell.identity)) != "finished":
        log(f"extractor {name}: {'resuming' if status == 'resumable' else 'training'} {cell.id}")
        _write_cell_file(run_dir, cell)
        try:
            result = _train(cell.config, run_dir, overrides, log)
        except RunLockedError as err:  # another `compare --cell` job trains it right now
            log(f"extractor {name}: waiting for the job training it: {err}")
            wait_for_run(run_dir)  # then loop: finished -> reuse it; the other job died -> resume its work
            continue
        if result.get("status") == "interrupted":
            raise Interrupted(result)
    return RunFolder(run_dir).checkpoint


class Interrupted(Exception):
    def __init__(self, result: dict[str, Any]) -> None:
        super().__init__(result.get("signal"))
        self.result = result


def resolved_config(grid: Grid, cell: Cell, out: Path, overrides: dict[str, Any],
                    log: Callable[[str], None] = print) -> Any:
    """The cell's TrainConfig with its extractor checkpoint and shared attention cache filled in."""
    cfg = cell.config
    changes: dict[str, Any] = {}
    if cell.extractor_run is not None:
        changes["extractor"] = str(_ensure_extractor(grid, cell.extractor_run, out, overrides, log))
    if cell.identity.get("attention_cached"):
        extractor_identity = grid.extractors[cell.extractor_run].identity if cell.extractor_run else None
        cache = _cache_path(out, cfg, extractor_identity, cell.axes.get("dataset"))
        changes.update(attention_cache=str(cache), build_cache=True)
    if cfg.run.image_cache is None and cfg.data.dataset in ("imagefolder", "imagenet"):
        # The device path decodes a folder once; every cell of the same data shares the decoded file.
        label = _slug(cell.axes.get("dataset") or cfg.data.dataset)
        changes["image_cache"] = str(out / "caches" / f"{label}-images-{_short_hash(cfg.data_identity(), 10)}"
                                                      ".safetensors")
    return cfg.replace(**changes)


def _localize(cfg: Any, run_dir: Path) -> dict[str, Any] | None:
    """The hit rate of the cell's mixer's region on the synthetic data's object boxes (cached in
    ``localization.json``), whatever the method; ``None`` for a method without a region (MixUp)."""
    path = run_dir / "localization.json"
    saved = _read_json(path)
    if saved is not None:
        return saved
    device = resolve_device(cfg.run.device)
    _, eval_ds, info = cfg.data.datasets()
    spec = cfg.mixing.extractor_spec
    extractor = spec.build(image_size=info.image_size, device=device, amp_dtype=amp_dtype(cfg)) if spec else None
    mixer = build_mixer(cfg, info.num_classes, extractor)
    if mixer is None or mixer.guidance_source == "model":  # the model's own maps: not measured from a finished run
        return None
    rates = region_hit_rates(mixer, eval_ds, extractor=extractor, seed=cfg.run.seed, device=device)
    if rates is not None:
        atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(rates, indent=2)))
    return rates


def wants_localization(grid: Grid, cell: Cell) -> bool:
    """Whether the grid measures localisation and the cell's data has object boxes (the synthetic data)."""
    cfg = cell.config
    method = registry.get(cfg.mixing.method)
    return (grid.localization and method.build is not None and getattr(method.mixer, "has_region", False)
            and (cfg.mixing.extractor is not None or not cfg.mixing.reads_attention)
            and str(cfg.data.dataset).startswith("synthetic"))


def run_cell(grid: Grid, cell: Cell, out: Path, *, overrides: dict[str, Any] | None = None,
             log: Callable[[str], None] = print, wait: bool = False) -> str:
    """Run (or skip, or resume) one cell; returns its status afterwards: ``finished``, or ``busy`` when another job
    trains it right now and ``wait`` is false (with ``wait``, wait for that job, then skip or resume its cell)."""
    overrides = dict(overrides or {})
    run_dir = out / "runs" / cell.id
    while True:
        status = cell_status(run_dir, cell.identity)
        cfg = (resolved_config(grid, cell, out, overrides, log)
               if status != "finished" or wants_localization(grid, cell) else None)
        if status == "finished":
            log(f"{cell.id}: finished, skipped")
            break
        log(f"{cell.id}: {'resuming' if status == 'resumable' else 'training'}")
        _write_cell_file(run_dir, cell)
        try:
            result = _train(cfg, run_dir, overrides, log)
        except RunLockedError as err:  # another `compare` job on this folder: its cell, not a failure
            if not wait:
                log(f"{cell.id}: another job is training it ({err}); left to that job for now")
                return "busy"
            log(f"{cell.id}: waiting for the job training it")
            wait_for_run(run_dir)  # then loop: finished -> skipped; the other job died -> resume its work
            continue
        if result.get("status") == "interrupted":
            raise Interrupted(result)
        break
    if wants_localization(grid, cell):
        _localize(cfg.replace(**{k: v for k, v in overrides.items() if k == "device"}), run_dir)
    return "finished"


# ------------------------------------------------------------------------------------------ results
def collect(grid: Grid, out: Path) -> list[dict[str, Any]]:
    """One entry per cell of the grid (runs of other configs in ``out`` are ignored)."""
    entries = []
    for cell in grid.cells:
        run_dir = out / "runs" / cell.id
        cfg = cell.config
        labels = {"dataset": cfg.data.dataset, "model": cfg.model.name, "method": cfg.mixing.method,
                  "seed": cfg.run.seed, **{k: v for k, v in cell.axes.items()}}
        config = {k: v for k, v in cfg.to_dict().items() if k not in RUN_FIELDS}
        entry: dict[str, Any] = {"id": cell.id, "labels": labels, "axes": cell.axes, "config": config,
                                 "status": "pending"}
        try:
            status = cell_status(run_dir, cell.identity)
        except CellConflictError:
            status = "conflict"
        results = _results(run_dir) if status == "finished" else None
        if results:
            entry.update(results.summary())
            entry["status"] = "finished"
            entry["localization"] = _read_json(run_dir / "localization.json")
        else:
            entry["status"] = status
        entries.append(entry)
    return entries


def write_report(grid: Grid, out: Path, log: Callable[[str], None] = print) -> dict[str, Path]:
    """``results.json``, ``table.md``, ``table.csv`` and the plots, from whatever cells have finished."""
    entries = collect(grid, out)
    payload = {"grid": grid.name, "source": grid.source, "metric": grid.metric, "runs": entries,
               "paper_results": grid.paper_results or None}
    # Named as a run's record: `evaluate` tells a grid from a run by its runs/ folder.
    paths = {"results": atomic_write(out / RESULTS_NAME,
                                     lambda t: Path(t).write_text(json.dumps(payload, indent=2, default=str)))}
    table = build_table(entries, grid.metric)
    done = sum(e["status"] == "finished" for e in entries)
    title = f"{grid.name} ({done}/{len(entries)} runs finished)"
    md = table_markdown(table, paper=grid.paper_results, metric=grid.metric, title=title)
    paths["table_md"] = atomic_write(out / "table.md", lambda t: Path(t).write_text(md))
    paths["table_csv"] = atomic_write(out / "table.csv",
                                      lambda t: Path(t).write_text(table_csv(table, paper=grid.paper_results)))
    paired = f"# {title}: paired differences and the train/held-out gap\n\n" + paired_markdown(entries, grid.metric)
    paths["paired_md"] = atomic_write(out / "paired.md", lambda t: Path(t).write_text(paired))
    for i, p in enumerate(write_plots(entries, out, metric=grid.metric, paper=grid.paper_results)):
        paths[f"plot{i}"] = p
    log(f"wrote {paths['results']}, {out / 'table.md'}, {out / 'table.csv'}, {out / 'paired.md'} and "
        f"{len(paths) - 4} plot(s)")
    return paths


def dry_run(grid: Grid, cells: list[Cell], out: Path) -> int:
    for cell in cells:
        try:
            status = cell_status(out / "runs" / cell.id, cell.identity)
        except CellConflictError as err:
            status = f"CONFLICT ({err})"
        settings = {k: v for k, v in cell.identity.items() if v is not None}
        print(f"{cell.id}  [{status}]\n    {json.dumps(settings, default=str)}")
    print(f"{len(cells)} cell(s); output dir {out}{os.sep}")
    return 0


__all__ = ["run_cell", "cell_status", "collect", "write_report", "resolved_config", "dry_run", "CellConflictError",
           "Interrupted"]
