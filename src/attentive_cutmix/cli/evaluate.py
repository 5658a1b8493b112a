"""``attentive-cutmix evaluate RUN [RUN ...]``: re-measure trained runs (see experiments/evaluate.py)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..constants import EVAL_SPLITS, EVAL_WEIGHTS
from ..training.run_folder import CHECKPOINT_NAME, RESULTS_NAME, WEIGHTS_NAME
from ._common import add_data_arguments, add_device_argument, fail, size_limit_error, synthetic_size


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", metavar="RUN",
                        help=f"a run folder ({RESULTS_NAME} + {WEIGHTS_NAME}), or a grid folder holding runs/")
    add_data_arguments(parser, suppress=True,
                       title="data (default: each run's own evaluation split, rebuilt from its config; options "
                             "given override the run's, e.g. --data-dir DIR alone when its folder moved; with "
                             "--dataset, only the options given count: --dataset cifar10 --data-dir DIR is the "
                             "CIFAR-10 test set, --dataset imagefolder --data-dir DIR every image in DIR)")
    parser.add_argument("--split", choices=EVAL_SPLITS, default="eval",
                        help="the evaluation split (default), or the un-augmented training split (train accuracy)")
    parser.add_argument("--weights", choices=EVAL_WEIGHTS, default="auto",
                        help=f"final: {WEIGHTS_NAME} (fp16, written when the run finished); checkpoint: "
                             f"{CHECKPOINT_NAME} (fp32, last saved epoch); auto (default): the first that exists")
    parser.add_argument("--batch-size", type=int, default=256, help="evaluation batch size (default 256)")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers (default 0)")
    add_device_argument(parser)
    parser.add_argument("--json", metavar="FILE", default=None, help="also write the rows as JSON")


def run(args: argparse.Namespace) -> int:
    from ..experiments.evaluate import DATA_KEYS, evaluate_runs, rows_markdown
    from ..serialization import CheckpointError, atomic_write
    from ..training.distributed import resolve_device

    if (too_large := size_limit_error(args)) is not None:
        return fail("evaluate", too_large)
    data = {k: getattr(args, k) for k in DATA_KEYS if hasattr(args, k)}  # unset flags are absent (SUPPRESS)
    if "synthetic_size" in data:
        data["synthetic_size"] = synthetic_size(data["synthetic_size"])
    try:
        rows = evaluate_runs(args.runs, data=data, split=args.split, weights=args.weights,
                             device=resolve_device(args.device), batch_size=args.batch_size, workers=args.workers)
    except (ValueError, TypeError, OSError, CheckpointError) as err:
        return fail("evaluate", err)
    print(rows_markdown(rows), end="")
    if args.json:
        try:
            atomic_write(Path(args.json), lambda tmp: Path(tmp).write_text(json.dumps(rows, indent=1) + "\n"))
        except OSError as err:  # the table is printed above: only the file is missing
            return fail("evaluate", f"--json: {err} (the table above is complete)")
        print(f"wrote {args.json}")
    return 0
