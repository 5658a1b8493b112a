"""Command line: ``attentive-cutmix {demo,train,cache-attention,compare,visualize,evaluate}``.

Each subcommand is one module of this package exposing ``add_arguments(parser)`` and ``run(args) -> int``; the
argument groups they share live in ``_common.py``. Modules are imported only when their subcommand runs, so
``--help`` stays fast (no torch model zoo, no timm). The libraries they call know nothing of argparse.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from .. import __version__

COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("attentive_cutmix.cli.demo",
             "train a small CNN with each method on the embedded dataset and print a table"),
    "train": ("attentive_cutmix.cli.train", "train one model with one mixing method"),
    "cache-attention": ("attentive_cutmix.cli.cache_attention",
                        "run an extractor once over a dataset and store its attention maps"),
    "compare": ("attentive_cutmix.cli.compare", "run a grid of trainings from a YAML file and render tables and plots"),
    "visualize": ("attentive_cutmix.cli.visualize", "write figures of heat maps, chosen cells and mixed images"),
    "evaluate": ("attentive_cutmix.cli.evaluate",
                 "re-measure trained runs' weights on their own held-out split or on other data"),
}

# Top-level modules of the [train] extra (pyproject.toml): a missing one means the extra is not installed.
TRAIN_EXTRA_MODULES = ("torchvision", "timm", "safetensors", "numpy", "PIL", "yaml", "tqdm", "matplotlib",
                       "tensorboard")
# What [train-light] leaves out: the commands run without them (no TensorBoard logs, no plots) except where a figure
# is the product (visualize).
HEAVY_EXTRA_MODULES = ("matplotlib", "tensorboard")


def _missing_extra(command: str, err: ModuleNotFoundError) -> int | None:
    """Exit code 2 and one line naming what to install, if ``err`` is a module of the [train] extra; else None."""
    top = (err.name or "").split(".")[0]
    if top not in TRAIN_EXTRA_MODULES:
        return None
    how = (f"pip install {top} (the [train] extra has it; [train-light] leaves it out)" if top in HEAVY_EXTRA_MODULES
           else "pip install 'attentive-cutmix[train]'")
    # The library needs torch alone; the subcommands need the harness's dependencies.
    print(f"attentive-cutmix {command}: needs {err.name!r}, which is not installed; install the harness with "
          f"{how}", file=sys.stderr)
    return 2


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    parser = argparse.ArgumentParser(prog="attentive-cutmix",
                                     description="Attention-guided mix augmentation for PyTorch.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers = {name: sub.add_parser(name, help=help_, description=help_) for name, (_, help_) in COMMANDS.items()}
    return parser, subparsers


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser, subparsers = build_parser()
    if not argv or argv[0] not in COMMANDS:
        if argv and not argv[0].startswith("-"):
            parser.error(f"unknown command {argv[0]!r}; valid commands: {', '.join(COMMANDS)}")
        parser.parse_args(argv)  # prints help / usage
        parser.print_help()
        return 2
    name = argv[0]
    try:
        module = importlib.import_module(COMMANDS[name][0])
    except ModuleNotFoundError as err:
        code = _missing_extra(name, err)
        if code is None:
            raise
        return code
    module.add_arguments(subparsers[name])
    args = parser.parse_args(argv)
    try:
        return int(module.run(args) or 0)
    except ModuleNotFoundError as err:  # imported where it is used (matplotlib for a figure, ...)
        code = _missing_extra(name, err)
        if code is None:
            raise
        return code
    except BrokenPipeError:
        # The reader left early (`compare --list | head`): as for any Unix tool, that is not an error worth a
        # traceback. Point stdout at /dev/null so the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a tool killed by a closed pipe


if __name__ == "__main__":
    raise SystemExit(main())
