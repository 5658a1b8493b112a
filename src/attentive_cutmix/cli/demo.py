"""``attentive-cutmix demo``: a paired-seed comparison of the methods, offline, on a CPU: a fixed grid run like
``compare`` (see experiments/demo.py)."""
from __future__ import annotations

import argparse

from ..experiments.demo import FULL, QUICK, run_demo


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output-dir", default="runs/demo",
                        help="where the runs (as `compare` lays them out), the figure, the tables and summary.json go "
                             "(default runs/demo); running again there reuses finished runs and resumes interrupted "
                             "ones")
    parser.add_argument("--epochs", type=int, default=None,
                        help=f"epochs per run (default {FULL['epochs']}; --quick: {QUICK['epochs']}); runs with other "
                             "settings are other cells, kept beside the earlier ones")
    parser.add_argument("--seeds", type=int, default=None,
                        help=f"paired seeds per method, at least 2 (default {FULL['seeds']}; "
                             f"--quick: {QUICK['seeds']})")
    parser.add_argument("--quick", action="store_true",
                        help="a tiny smoke-test version (seconds, not minutes; accuracies are noise)")
    parser.add_argument("--device", default="cpu", help="default cpu (the demo is sized for a laptop CPU)")
    parser.add_argument("--jobs", type=int, default=2,
                        help="training processes at once, one thread each (default 2: a network this small gains "
                             "little from a second thread, and two runs side by side use two cores fully)")


def run(args: argparse.Namespace) -> int:
    return run_demo(args.output_dir, quick=args.quick, epochs=args.epochs, seeds=args.seeds, device=args.device,
                    jobs=args.jobs)
