"""Argument groups the subcommands share, defined once, and the one way a subcommand reports an error."""
from __future__ import annotations

import argparse
import sys
from typing import Any

from ..constants import ATTENTIONS
from ..training.run_folder import CHECKPOINT_NAME

SUPPRESS = argparse.SUPPRESS  # train: unset flags stay absent, so the config file and preset are not overridden
DATASET_HELP = ("synthetic (default, embedded, offline), synthetic2 (larger objects, lighter clutter), synthetic64, "
                "cifar10, cifar100, imagefolder, imagenet")


def parse_bool(value: str) -> bool:
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {value!r}")


_ARG_TYPES = {bool: parse_bool, int: int, float: float, str: str}


def add_method_options(group: Any, *, suppress: bool = True) -> None:
    """A flag per option of the registered methods (``num_patches`` -> ``--num-patches``), unset unless given."""
    from .. import registry

    for name in registry.option_names():
        meta = registry.option_field(name).metadata
        group.add_argument(f"--{name.replace('_', '-')}", type=_ARG_TYPES[registry.option_hint(name)],
                           default=SUPPRESS if suppress else None, choices=meta.get("choices"),
                           help=registry.help_text(name))


def _default(value: Any, suppress: bool) -> Any:
    return SUPPRESS if suppress else value


def add_data_arguments(parser: argparse.ArgumentParser, *, suppress: bool = False, title: str = "data") -> None:
    """The dataset and its split: the same values give the same split (and fingerprint) in every subcommand."""
    data = parser.add_argument_group(title)
    data.add_argument("--dataset", default=_default("synthetic", suppress), help=DATASET_HELP)
    data.add_argument("--data-dir", default=_default(None, suppress),
                      help="dataset folder (imagefolder: a tree of class folders)")
    data.add_argument("--val-fraction", type=float, default=_default(0.0, suppress),
                      help="hold out this fraction of the train set for evaluation (deterministic; default 0)")
    data.add_argument("--val-data", default=_default(None, suppress), help="a separate evaluation folder")
    data.add_argument("--image-size", "--img-size", type=int, default=_default(None, suppress),
                      help="image size (default: the dataset's)")
    data.add_argument("--synthetic-size", type=int, nargs="+", default=_default(None, suppress), metavar="N",
                      help="synthetic dataset: N training images, or N_TRAIN N_EVAL")
    data.add_argument("--split-seed", type=int, default=_default(0, suppress),
                      help="seed of the held-out split (default 0; independent of --seed so every training seed "
                           "sees the same split)")
    data.add_argument("--train-subset", type=int, default=_default(None, suppress), metavar="N",
                      help="a class-stratified, deterministic subset of about N training images (reduced-scale runs)")


def add_extractor_arguments(parser: argparse.ArgumentParser, *, suppress: bool = False, required: bool = False,
                            title: str = "extractor") -> None:
    """Where Attentive CutMix's attention comes from: a model name and its weights, or one of our checkpoints."""
    ext = parser.add_argument_group(title)
    ext.add_argument("--extractor", required=required, default=_default(None, suppress),
                     help="a model name (cifar_resnet56, resnet152, vit_small_patch16_224, timm:resnet50, ...) with "
                          f"--extractor-weights FILE (or pretrained weights, downloaded), or a {CHECKPOINT_NAME} "
                          "written by `attentive-cutmix train`")
    ext.add_argument("--extractor-weights", default=_default(None, suppress),
                     help="local weights file for --extractor NAME (.safetensors or .pt)")
    ext.add_argument("--extractor-input-size", type=int, default=_default(None, suppress),
                     help="extractor input size (default: the checkpoint's image size, the dataset's for "
                          "cifar_* models, else 224)")
    ext.add_argument("--extractor-attention", choices=ATTENTIONS, default=_default(None, suppress),
                     help="how cells are scored: the channel mean of the last feature map (default) or, for ViT-style "
                          "extractors, the last block's class-token attention")


def add_device_argument(parser: argparse.ArgumentParser, *, suppress: bool = False,
                        default_help: str = "cuda if available, else cpu") -> None:
    parser.add_argument("--device", default=_default(None, suppress),
                        help=f"cpu, cuda, cuda:N (default: {default_help})")


def data_section(args: argparse.Namespace, **changes: Any) -> Any:
    """The data flags (``add_data_arguments``) as the config's ``DataConfig`` (``changes`` replacing some): the same
    split ``train`` makes from the same values."""
    import dataclasses

    from ..training.sections import DataConfig

    data = DataConfig(dataset=args.dataset, data_dir=args.data_dir, val_fraction=args.val_fraction,
                      val_data=args.val_data, image_size=args.image_size,
                      synthetic_size=synthetic_size(args.synthetic_size), split_seed=args.split_seed,
                      train_subset=args.train_subset)
    return dataclasses.replace(data, **changes)


def extractor_spec(args: argparse.Namespace) -> Any:
    """The extractor flags (``add_extractor_arguments``) as an ``ExtractorSpec``, or None without ``--extractor``."""
    from ..attention.source import ExtractorSpec

    if args.extractor is None:
        return None
    return ExtractorSpec(args.extractor, weights=args.extractor_weights, input_size=args.extractor_input_size,
                         attention=args.extractor_attention)


def synthetic_size(value: list[int] | None) -> int | tuple[int, int] | None:
    """``--synthetic-size N`` or ``N_TRAIN N_EVAL`` as the library takes it."""
    if value is None:
        return None
    return value[0] if len(value) == 1 else tuple(value)


def size_limit_error(args: argparse.Namespace) -> str | None:
    """Why a size flag is beyond ``SIZE_LIMITS`` (a typo would allocate tens of GB), or None: for the commands that
    build no ``TrainConfig``, whose checks would otherwise be skipped."""
    from ..training.config import SIZE_LIMITS, ConfigError, check_size_limits

    try:
        check_size_limits({name: getattr(args, name) for name in SIZE_LIMITS if hasattr(args, name)})
    except ConfigError as err:
        return str(err)
    return None


def fail(command: str, message: Any) -> int:
    """Print ``attentive-cutmix COMMAND: error: MESSAGE`` on stderr; the exit code of a refused command."""
    print(f"attentive-cutmix {command}: error: {message}", file=sys.stderr)
    return 1


__all__ = ["SUPPRESS", "add_data_arguments", "add_extractor_arguments", "add_device_argument", "synthetic_size", "fail",
           "size_limit_error"]
