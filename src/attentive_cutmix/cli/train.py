"""``attentive-cutmix train``: flags and/or ``--config FILE.yaml`` (flags override the file).

Exit codes: 0 finished, 1 a bad option/file or a non-finite loss (message on stderr), 128+signal
(143 SIGTERM, 130 SIGINT) when stopped by a signal after writing a checkpoint.
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
from ._common import SUPPRESS as _S
from ._common import add_data_arguments, add_device_argument, add_extractor_arguments, fail


def _bool(value: str) -> bool:
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {value!r}")


_ARG_TYPES = {bool: _bool, int: int, float: float, str: str}


def add_method_options(group: Any) -> None:
    """A flag per option of the registered methods (``num_patches`` -> ``--num-patches``), unset unless given."""
    for name in registry.option_names():
        meta = registry.option_field(name).metadata
        group.add_argument(f"--{name.replace('_', '-')}", type=_ARG_TYPES[registry.option_hint(name)], default=_S,
                           choices=meta.get("choices"), help=registry.help_text(name))


# timm train.py's mixing flags: a run here mixes with one --method, so each names what to use instead (a timm user
# typing one must never have it silently ignored). attentive_cutmix.Mix has all of them, for your own loop.
TIMM_MIXING_FLAGS = {
    "--mixup": "use --method mixup --alpha A (a lam per image: timm's --mixup-mode elem)",
    "--cutmix": "use --method cutmix --alpha A",
    "--cutmix-minmax": "CutMix sizes its box from --alpha here; for min-max boxes use attentive_cutmix.Mix("
                       "cutmix_minmax=(MIN, MAX)) in your own loop",
    "--mixup-prob": "use --prob P (the probability of mixing a batch)",
    "--mixup-switch-prob": "a run mixes with one --method; to switch between MixUp and CutMix use attentive_cutmix."
                           "Mix(mixup_alpha=..., cutmix_alpha=..., switch_prob=P) in your own loop",
    "--mixup-mode": "the methods here draw per image (timm's elem); for batch or pair use attentive_cutmix.Mix("
                    "mode=...) in your own loop",
    "--mixup-off-epoch": "use --mix-off-epoch N (mix in epochs 1..N only)",
}


class _RefusedTimmMixing(argparse.Action):
    def __call__(self, parser: Any, namespace: argparse.Namespace, value: Any, option: Any = None) -> None:
        parser.error(f"{option} (timm's train.py) is not a flag here: {TIMM_MIXING_FLAGS[option]}")


def add_timm_mixing_flags(group: Any) -> None:
    for flag in TIMM_MIXING_FLAGS:
        group.add_argument(flag, nargs="*", action=_RefusedTimmMixing, default=_S, help=argparse.SUPPRESS)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None, metavar="FILE.yaml",
                        help="YAML file of options (keys like the flags); flags override it")
    parser.add_argument("--preset", choices=list(PRESETS), default=_S,
                        help="the paper's settings: 80/120/100 epochs (EfficientNet 180 on ImageNet), batch 32 "
                             "(ImageNet 64), lr 1e-3, weight decay 1e-5, Xavier init. The paper does not name its "
                             "optimiser; we use Adam (lr 1e-3 is Adam's usual rate)")
    add_data_arguments(parser, suppress=True)
    data = parser.add_argument_group("data loading")
    data.add_argument("--workers", type=int, default=_S, help="DataLoader worker processes (default 2)")
    data.add_argument("--data-path", choices=DATA_PATHS, default=_S,
                      help="device: the whole split decoded once, on the training device, crop/flip batched there; "
                           "loader: DataLoader workers; auto (default): device for images <= 64 px whose splits take "
                           "at most a quarter of the device's free memory")
    data.add_argument("--image-cache", default=_S, metavar="FILE.safetensors",
                      help="device path, image folders: keep the decoded uint8 images in this file (checked against "
                           "the folder's fingerprint), so later runs skip decoding")
    model = parser.add_argument_group("model")
    model.add_argument("--model", default=_S,
                       help="architecture (default cifar_resnet20); e.g. resnet18, densenet121, efficientnet_b0")
    model.add_argument("--init", choices=INITS, default=_S,
                       help="weight initialisation; xavier = the paper's Xavier-normal")
    mix = parser.add_argument_group("mixing")
    mix.add_argument("--method", choices=registry.names(), default=_S, help="augmentation method (default none)")
    add_method_options(mix)
    add_timm_mixing_flags(mix)
    mix.add_argument("--attention-cache", default=_S,
                     help="precomputed attention maps (`attentive-cutmix cache-attention`)")
    mix.add_argument("--build-cache", action="store_const", const=True, default=_S,
                     help="build a missing --attention-cache with --extractor before training")
    add_extractor_arguments(parser, suppress=True, title="attentive-cutmix: the extractor")
    opt = parser.add_argument_group("optimisation")
    opt.add_argument("--epochs", type=int, default=_S, help="default 10")
    opt.add_argument("--batch-size", type=int, default=_S, help="per process (default 128)")
    opt.add_argument("--optimizer", choices=OPTIMIZERS, default=_S,
                     help="default adam (L2 weight decay); adamw: decoupled weight decay")
    opt.add_argument("--lr", type=float, default=_S, help="default 1e-3")
    opt.add_argument("--momentum", type=float, default=_S, help="sgd (default 0.9)")
    opt.add_argument("--nesterov", type=_bool, nargs="?", const=True, default=_S, help="sgd: Nesterov momentum")
    opt.add_argument("--weight-decay", type=float, default=_S, help="L2 weight decay (default 1e-5)")
    opt.add_argument("--schedule", choices=SCHEDULES, default=_S,
                     help="lr schedule, stepped per epoch (default constant)")
    opt.add_argument("--step-size", type=int, default=_S, help="step: decay every N epochs (default epochs // 3)")
    opt.add_argument("--milestones", type=int, nargs="+", default=_S, help="step: decay at these epochs instead")
    opt.add_argument("--gamma", type=float, default=_S, help="step: decay factor (default 0.1)")
    opt.add_argument("--label-smoothing", type=float, default=_S, help="default 0")
    opt.add_argument("--warmup-epochs", type=int, default=_S, metavar="N",
                     help="raise the lr linearly over the first N epochs, then follow --schedule (default 0)")
    opt.add_argument("--clip-grad", type=float, default=_S, metavar="NORM",
                     help="clip the global gradient norm to NORM (default: no clipping)")
    opt.add_argument("--ema-decay", type=float, default=_S, metavar="D",
                     help="also keep an exponential moving average of the weights (e.g. 0.9998), updated every step, "
                          "evaluated each epoch (ema_top1) and saved as weights_ema.safetensors")
    mix.add_argument("--mix-off-epoch", type=int, default=_S, metavar="N",
                     help="mix in epochs 1..N only, train on plain images after (timm's --mixup-off-epoch)")
    run = parser.add_argument_group("run")
    run.add_argument("--seed", type=int, default=_S,
                     help="default 0; the same seed on the same machine gives identical results on CPU")
    run.add_argument("--output-dir", default=_S,
                     help="where checkpoint.pt, metrics.jsonl, results.json, tb/ go (default runs/train)")
    run.add_argument("--overwrite", action="store_const", const=True, default=_S,
                     help="replace the outputs of an earlier run in --output-dir (checkpoint, results, metrics, "
                          "config, tb/); other files there are kept")
    run.add_argument("--resume", action="store_const", const=True, default=_S,
                     help="continue the run in --output-dir from its checkpoint (exactly, even mid-epoch); no "
                          "checkpoint there is an error")
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


def config_from_args(args: argparse.Namespace) -> Any:
    overrides = {k: v for k, v in vars(args).items() if k not in ("command", "config")}
    if args.config is not None and "output_dir" not in overrides:
        _run_folder_from_config(args.config, overrides)
    if isinstance(overrides.get("synthetic_size"), list) and len(overrides["synthetic_size"]) == 1:
        overrides["synthetic_size"] = overrides["synthetic_size"][0]
    return make_config(overrides, config_file=args.config)


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
    from ..cache import CacheBuildInterrupted
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
    print(f"finished: top-1 {top1:.2f}%, top-5 {result['top5']:.2f}% -> {cfg.output_dir}" if top1 is not None
          else f"finished -> {cfg.output_dir}")
    return 0
