"""``attentive-cutmix demo``: the paper's comparison in miniature, offline, on a CPU (see experiments/demo.py)."""
from __future__ import annotations

import argparse

from ..experiments.demo import FULL, QUICK


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output-dir", default="runs/demo", help="where the runs, the attention cache and the table go (default runs/demo)")
    parser.add_argument("--epochs", type=int, default=None, help=f"epochs per method (default {FULL['epochs']}; --quick: {QUICK['epochs']})")
    parser.add_argument("--quick", action="store_true", help="a tiny smoke-test version (seconds, not minutes; accuracies are noise)")
    parser.add_argument("--device", default="cpu", help="default cpu (the demo is sized for a laptop CPU)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads (default 1: a network this small barely gains from a second thread, and "
                             "loses a lot when another process competes for the cores)")


def run(args: argparse.Namespace) -> int:
    from ..experiments.demo import run_demo

    return run_demo(args.output_dir, quick=args.quick, epochs=args.epochs, device=args.device, seed=args.seed,
                    threads=args.threads)
