"""``attentive-cutmix compare GRID.yaml``: run every cell of a grid, then write results, tables and plots.

The grid runner itself is ``experiments/compare.py`` (see its docstring for the output layout and cell ids).
"""
from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from ..training.run_folder import RESULTS_NAME
from ._common import add_device_argument, fail


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("grid", metavar="GRID.yaml",
                        help="grid file (axes, shared settings, paper numbers), or a packaged one: "
                             "examples/synthetic-tiny.yaml, paper/cifar10.yaml, ...")
    parser.add_argument("--output-dir", default=None, help="where runs, caches, results and tables go "
                                                           "(default runs/compare/<grid file name>)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--cell", action="append", default=None, metavar="ID",
                       help="run only this cell (repeatable), e.g. one cluster job per cell; then refresh the report")
    which.add_argument("--list", action="store_true", help="print the cell ids, one per line, and exit")
    parser.add_argument("--dry-run", action="store_true", help="show each cell's status and config; train nothing")
    parser.add_argument("--report-only", action="store_true",
                        help=f"only (re)write {RESULTS_NAME}, the tables and plots")
    add_device_argument(parser, default_help="each cell's own, else cuda if available; not part of the cell id")
    parser.add_argument("--workers", type=int, default=None,
                        help="DataLoader workers for every cell (not part of the cell id)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars or per-epoch lines")


def run(args: argparse.Namespace) -> int:
    from ..experiments.compare import Interrupted, dry_run, run_cell, write_report
    from ..experiments.grid import Cell, GridError, load_grid

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    def report() -> None:
        """Write the report and print its table last, on stdout (progress went to stderr), as timm's runs end."""
        paths = write_report(grid, out, log)
        print("\n" + Path(paths["table_md"]).read_text().rstrip(), flush=True)

    try:
        grid = load_grid(args.grid)
    except (GridError, ValueError) as err:
        return fail("compare", err)
    out = Path(args.output_dir or Path("runs") / "compare" / Path(args.grid).stem)
    cells = grid.cells
    if args.list:
        print("\n".join(c.id for c in cells))
        return 0
    if args.cell:
        known = {c.id: c for c in cells}
        missing = [i for i in args.cell if i not in known]
        if missing:
            return fail("compare", f"unknown cell id(s) {missing}; list them with "
                        f"`attentive-cutmix compare {args.grid} --list`")
        cells = [known[i] for i in args.cell]
    overrides = {k: v for k, v in (("device", args.device), ("workers", args.workers)) if v is not None}
    if args.no_progress:
        overrides["progress"] = False
    if args.dry_run:
        return dry_run(grid, cells, out)
    if args.report_only:
        report()
        return 0
    failed, busy, start = [], [], time.perf_counter()

    def attempt(cell: Cell, wait: bool) -> str:
        try:
            return run_cell(grid, cell, out, overrides=overrides, log=log, wait=wait)
        except Interrupted:
            raise
        except (ValueError, RuntimeError) as err:  # a bad cell (data, non-finite loss ...) must not stop the others
            failed.append(cell.id)
            log(f"{cell.id}: FAILED: {err}")
            return "failed"

    try:
        for i, cell in enumerate(cells, 1):
            log(f"[{i}/{len(cells)}] {cell.id}")
            if attempt(cell, wait=False) == "busy":
                busy.append(cell)
        for cell in busy:  # another job's cells, left to it: now wait for it, then skip them (or resume its work)
            log(f"[waiting] {cell.id}")
            attempt(cell, wait=True)
    except Interrupted as stop:
        log(f"stopped by {stop.result.get('signal')}; rerun the same command to resume")
        report()
        return 128 + int(getattr(signal, str(stop.result.get("signal")), 15))
    report()
    log(f"{len(cells) - len(failed)}/{len(cells)} cell(s) done in {time.perf_counter() - start:.0f} s -> {out}")
    if failed:
        log(f"failed: {', '.join(failed)}")
        return 1
    return 0
