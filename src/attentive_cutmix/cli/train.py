"""``attentive-cutmix train``: flags and/or ``--config FILE.yaml`` (flags override the file).

Exit codes: 0 finished, 1 a bad option/file or a non-finite loss (message on stderr), 128+signal
(143 SIGTERM, 130 SIGINT, 129 SIGHUP, 138 SIGUSR1) when stopped by a signal after writing a checkpoint.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import Any

from .. import registry
from ..training.config import AMP_MODES, DATA_PATHS, INITS, OPTIMIZERS, PRESETS, SCHEDULES, make_config
from ..training.run_folder import (
    BEST_WEIGHTS_NAME,
    CHECKPOINT_NAME,
    CONFIG_NAME,
    EMA_WEIGHTS_NAME,
    METRICS_NAME,
    RESULTS_NAME,
    TB_NAME,
    RunFolder,
)
from ._common import SUPPRESS as _S
from ._common import add_data_arguments, add_device_argument, add_extractor_arguments, add_method_options, fail
from ._common import parse_bool as _bool


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None, metavar="FILE.yaml",
                        help="YAML file of options (keys like the flags); flags override it")
    parser.add_argument("--preset", choices=list(PRESETS), default=_S,
                        help="the paper's settings: 80/120/100 epochs (EfficientNet 180 on ImageNet), batch 32 "
                             "(ImageNet 64), lr 1e-3, weight decay 1e-5, Xavier init. The paper does not name its "
                             "optimiser; we use Adam (lr 1e-3 is Adam's usual rate)")
    add_data_arguments(parser, suppress=True)
    data = parser.add_argument_group("data loading")
    data.add_argument("--workers", "-j", type=int, default=_S, help="DataLoader worker processes (default 2)")
    data.add_argument("--data-path", choices=DATA_PATHS, default=_S,
                      help="device: the whole split decoded once, on the training device, crop/flip batched there; "
                           "loader: DataLoader workers; auto (default): device for images <= 64 px whose splits take "
                           "at most a quarter of the device's free memory")
    data.add_argument("--image-cache", default=_S, metavar="FILE.safetensors",
                      help="device path, image folders: keep the decoded uint8 images in this file (checked against "
                           "the folder's fingerprint), so later runs skip decoding")
    model = parser.add_argument_group("model")
    model.add_argument("--model", default=_S,
                       help="architecture (default cifar_resnet20); e.g. resnet18, densenet121, efficientnet_b0. "
                            "A name both torchvision and timm define builds torchvision's (with a warning): "
                            "timm:NAME or torchvision:NAME chooses")
    model.add_argument("--init", choices=INITS, default=_S,
                       help="weight initialisation; xavier = the paper's Xavier-normal")
    mix = parser.add_argument_group("mixing")
    mix.add_argument("--method", choices=registry.names(), default=_S, help="augmentation method (default none)")
    add_method_options(mix)
    mix.add_argument("--attention-cache", default=_S,
                     help="precomputed attention maps (`attentive-cutmix cache-attention`)")
    mix.add_argument("--build-cache", action="store_const", const=True, default=_S,
                     help="build a missing --attention-cache with --extractor before training")
    add_extractor_arguments(parser, suppress=True, title="attentive-cutmix: the extractor")
    opt = parser.add_argument_group("optimisation")
    opt.add_argument("--epochs", type=int, default=_S, help="default 10")
    opt.add_argument("--batch-size", "-b", type=int, default=_S, help="per process (default 128)")
    opt.add_argument("--optimizer", choices=OPTIMIZERS, default=_S,
                     help="default adam (L2 weight decay); adamw: decoupled weight decay")
    opt.add_argument("--lr", type=float, default=_S, help="default 1e-3")
    opt.add_argument("--momentum", type=float, default=_S, help="sgd (default 0.9)")
    opt.add_argument("--nesterov", type=_bool, nargs="?", const=True, default=_S, help="sgd: Nesterov momentum")
    opt.add_argument("--weight-decay", type=float, default=_S, help="L2 weight decay (default 1e-5)")
    opt.add_argument("--schedule", "--sched", choices=SCHEDULES, default=_S,
                     help="lr schedule, stepped per epoch (default constant)")
    opt.add_argument("--step-size", type=int, default=_S, help="step: decay every N epochs (default epochs // 3)")
    opt.add_argument("--milestones", type=int, nargs="+", default=_S, help="step: decay at these epochs instead")
    opt.add_argument("--gamma", type=float, default=_S, help="step: decay factor (default 0.1)")
    opt.add_argument("--label-smoothing", "--smoothing", type=float, default=_S, help="default 0 (timm's: 0.1)")
    opt.add_argument("--warmup-epochs", type=int, default=_S, metavar="N",
                     help="raise the lr linearly over the first N epochs, then follow --schedule (default 0)")
    opt.add_argument("--clip-grad", type=float, default=_S, metavar="NORM",
                     help="clip the global gradient norm to NORM (default: no clipping)")
    opt.add_argument("--ema-decay", "--model-ema-decay", type=float, default=_S, metavar="D",
                     help="also keep an exponential moving average of the weights (e.g. 0.9998), updated every step, "
                          f"evaluated each epoch (ema_top1) and saved as {EMA_WEIGHTS_NAME}")
    mix.add_argument("--mix-off-epoch", type=int, default=_S, metavar="N",
                     help="mix in epochs 1..N only, train on plain images after (timm's --mixup-off-epoch)")
    run = parser.add_argument_group("run")
    run.add_argument("--seed", type=int, default=_S,
                     help="default 0; the same seed on the same machine gives identical results on CPU")
    run.add_argument("--output-dir", default=_S,
                     help=f"where {CHECKPOINT_NAME}, {METRICS_NAME}, {RESULTS_NAME}, {TB_NAME}/ go "
                          "(default runs/train)")
    run.add_argument("--overwrite", action="store_const", const=True, default=_S,
                     help="replace the outputs of an earlier run in --output-dir (checkpoint, results, metrics, "
                          "config, tb/); other files there are kept")
    run.add_argument("--resume", action="store_const", const=True, default=_S,
                     help="continue the run in --output-dir from its checkpoint (exactly, even mid-epoch), with the "
                          f"options in its {CONFIG_NAME} (flags given now override them, checked against the "
                          "checkpoint); no checkpoint there is an error")
    run.add_argument("--auto-resume", action="store_const", const=True, default=_S,
                     help="continue the run in --output-dir if it has a checkpoint, else start it there (for job "
                          "scripts that a scheduler may requeue)")
    run.add_argument("--log-every", type=int, default=_S, metavar="N",
                     help="steps between host syncs (and after each epoch's first step): the loss on the progress "
                          "bar, or a log line when stderr is not a terminal, and the non-finite check (default 50)")
    run.add_argument("--compile", action="store_const", const=True, default=_S, help="torch.compile the model")
    run.add_argument("--amp", choices=AMP_MODES, default=_S, help="mixed precision on CUDA (no-op on CPU)")
    run.add_argument("--channels-last", action="store_const", const=True, default=_S,
                     help="channels-last memory format on CUDA")
    add_device_argument(run, suppress=True)
    run.add_argument("--max-steps-per-epoch", type=int, default=_S, help="cap the steps per epoch (tests, benchmarks)")
    run.add_argument("--eval-every", type=int, default=_S, help="evaluate every N epochs (and after the last)")
    run.add_argument("--eval-train", action="store_const", const=True, default=_S,
                     help="at each evaluation also measure the un-augmented training split (train top-1, the gap)")
    run.add_argument("--eval-batch-size", type=int, default=_S, help="default: --batch-size")
    run.add_argument("--no-progress", dest="progress", action="store_const", const=False, default=_S,
                     help="no progress bar or epoch lines")
    add_timm_spellings(parser)


# timm train.py's --opt values, as timm builds them: its "sgd" is SGD with Nesterov momentum.
TIMM_OPTIMIZERS: dict[str, tuple[str, bool | None]] = {
    "sgd": ("sgd", True), "nesterov": ("sgd", True), "momentum": ("sgd", False), "adam": ("adam", None),
    "adamw": ("adamw", None)}
TIMM_EMA_DECAY = 0.9998  # timm's --model-ema-decay default


class _TimmOptimizer(argparse.Action):
    """``--opt NAME``: timm's optimiser name as our ``--optimizer`` (and ``--nesterov`` for timm's SGD flavours)."""

    def __call__(self, parser: Any, namespace: argparse.Namespace, value: Any, option: Any = None) -> None:
        namespace.optimizer, nesterov = TIMM_OPTIMIZERS[value]
        if nesterov is not None:
            namespace.nesterov = nesterov


def _timm_ema(overrides: dict[str, Any], config_file: str | None) -> None:
    """``--model-ema``: timm's switch, with timm's decay unless one is given (on the command line or in the file)."""
    if not overrides.pop("model_ema", False) or "ema_decay" in overrides:
        return
    from ..training.config import load_yaml

    if config_file is None or load_yaml(config_file).get("ema_decay") is None:
        overrides["ema_decay"] = TIMM_EMA_DECAY


class _Refused(argparse.Action):
    """A timm flag we do not take: a usage error that says what to use instead, never silently ignored."""

    def __call__(self, parser: Any, namespace: argparse.Namespace, value: Any, option: Any = None) -> None:
        parser.error(f"{option} (timm's train.py) is not supported here: {TIMM_REFUSED[option][1]}")


# The rest of timm's flags a timm user types, each with what to use instead.
TIMM_REFUSED: dict[str, tuple[int | str, str]] = {
    "--min-lr": ("?", "--schedule cosine decays the lr to 0 (there is no floor)"),
    "--warmup-lr": ("?", "--warmup-epochs N starts at --lr/(N+1) and rises linearly to --lr"),
    "--pretrained": (0, "train starts from --init default|xavier; to fine-tune pretrained weights call "
                        "train(config, model=create_model(NAME, num_classes, pretrained=True)) in Python"),
    "--initial-checkpoint": ("?", "to continue one of our runs use --resume; to start from other weights load them "
                                  "into your model and call train(config, model=...) in Python"),
    "--drop-path": ("?", "build the model with its drop-path rate (timm.create_model(NAME, drop_path_rate=R)) and "
                         "call train(config, model=...) in Python"),
    "--grad-accum-steps": ("?", "there is no gradient accumulation; a larger effective batch: --batch-size, or "
                                "more processes with torchrun"),
    "--checkpoint-hist": ("?", f"a run keeps {CHECKPOINT_NAME} (the latest, for --resume) and {BEST_WEIGHTS_NAME} "
                               "(the epoch with the best held-out top-1, timm's model_best)"),
    # Mixing: a run mixes with one --method; attentive_cutmix.Mix takes all of these, for your own loop.
    "--mixup": ("*", "use --method mixup --alpha A (a lam per image: timm's --mixup-mode elem)"),
    "--cutmix": ("*", "use --method cutmix --alpha A"),
    "--cutmix-minmax": ("*", "CutMix sizes its box from --alpha here; for min-max boxes use attentive_cutmix.Mix("
                             "cutmix_minmax=(MIN, MAX)) in your own loop"),
    "--mixup-prob": ("*", "use --prob P (the probability of mixing a batch)"),
    "--mixup-switch-prob": ("*", "a run mixes with one --method; to switch between MixUp and CutMix use "
                                 "attentive_cutmix.Mix(mixup_alpha=..., cutmix_alpha=..., switch_prob=P) in your "
                                 "own loop"),
    "--mixup-mode": ("*", "the methods here draw per image (timm's elem); for batch or pair use "
                          "attentive_cutmix.Mix(mode=...) in your own loop"),
    "--mixup-off-epoch": ("*", "use --mix-off-epoch N (mix in epochs 1..N only)"),
}


def add_timm_spellings(parser: argparse.ArgumentParser) -> None:
    """timm train.py's spellings: the same-meaning ones work (``-b``, ``-j``, ``--sched``, ``--smoothing``,
    ``--model-ema-decay`` and ``--img-size`` are aliases above; ``--opt`` and ``--model-ema`` here), the others are
    refused with what to use instead."""
    timm = parser.add_argument_group("timm train.py spellings")
    timm.add_argument("--opt", choices=tuple(TIMM_OPTIMIZERS), action=_TimmOptimizer, default=_S,
                      help="timm's optimiser name: sgd/nesterov = --optimizer sgd --nesterov (timm's sgd is "
                           "Nesterov), momentum = --optimizer sgd, adam, adamw")
    timm.add_argument("--model-ema", action="store_const", const=True, default=_S,
                      help=f"keep an EMA of the weights: --ema-decay, {TIMM_EMA_DECAY} unless a decay is given")
    for flag, (nargs, instead) in TIMM_REFUSED.items():
        timm.add_argument(flag, nargs=nargs, action=_Refused, default=_S, metavar="X", help=f"not supported: {instead}")


def config_from_args(args: argparse.Namespace) -> Any:
    overrides = {k: v for k, v in vars(args).items() if k not in ("command", "config")}
    config_file = args.config
    if config_file is not None and "output_dir" not in overrides:
        _run_folder_from_config(config_file, overrides)
    elif config_file is None and overrides.get("resume") and "output_dir" in overrides:
        # `train --output-dir RUN --resume` continues RUN with the options it was started with (its config.yaml),
        # as `--config RUN/config.yaml --resume` does; flags given now override them and are checked against the
        # checkpoint in the same way. Without this, the defaults would stand in for the run's options.
        own = RunFolder(overrides["output_dir"]).config
        if own.is_file():
            config_file = str(own)
    _timm_ema(overrides, config_file)
    if isinstance(overrides.get("synthetic_size"), list) and len(overrides["synthetic_size"]) == 1:
        overrides["synthetic_size"] = overrides["synthetic_size"][0]
    return make_config(overrides, config_file=config_file)


def _run_folder_from_config(config_file: str, overrides: dict[str, Any]) -> None:
    """A run's own ``config.yaml`` continues the folder it lies in, not the ``output_dir`` it records (a copy of
    the folder, or a relative path read from another working directory, would train into another run)."""
    from ..training.config import load_yaml
    from ..training.run_io import run_folder_of

    folder = run_folder_of(config_file)
    if folder is None:
        return
    recorded = load_yaml(config_file).get("output_dir")
    if recorded is not None and Path(recorded).resolve() != folder.resolve():
        print(f"note: {config_file} records output_dir {recorded}, but lies in the run folder {folder}: using "
              f"{folder} (give --output-dir to choose another)", file=sys.stderr)
    overrides["output_dir"] = str(folder)


def run(args: argparse.Namespace) -> int:
    from ..attention.cache import CacheBuildInterrupted
    from ..training.distributed import PeerLostError
    from ..training.trainer import NonFiniteLossError, train

    try:
        cfg = config_from_args(args)
        result = train(cfg)
    # ValueError: ConfigError, CheckpointError, bad names/paths from data/model/cache
    except (ValueError, NonFiniteLossError, PeerLostError) as err:
        return fail("train", err)
    except CacheBuildInterrupted as err:  # --build-cache stopped by a signal, before any training
        fail("train", err)
        return 128 + err.signum
    if result.get("status") == "interrupted":
        return 128 + int(getattr(signal, result["signal"]))
    if os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 alone reports
        return 0
    top1 = result.get("top1")
    print(f"finished: top-1 {top1:.2f}%, top-5 {result['top5']:.2f}% -> {cfg.run.output_dir}" if top1 is not None
          else f"finished -> {cfg.run.output_dir}")
    return 0
