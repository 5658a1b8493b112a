"""``attentive-cutmix cache-attention``: run an extractor once over a training split and store its maps.

The split flags are those of ``train`` (same dataset, folder, validation fraction, image size,
split seed and train subset give the same split, whose fingerprint the cache records), and the extractor is built exactly
as ``train`` builds it, so ``train --attention-cache PATH`` accepts what this writes::

    attentive-cutmix cache-attention --dataset cifar10 --extractor cifar_resnet56 \\
        --extractor-weights cifar10-resnet56.safetensors --out cifar10-r56.safetensors
    attentive-cutmix train --dataset cifar10 --method attentive-cutmix --grid-size 8 \\
        --attention-cache cifar10-r56.safetensors
"""
from __future__ import annotations

import argparse
import shlex
import sys
import time
import warnings
from pathlib import Path

import torch


def add_arguments(parser: argparse.ArgumentParser) -> None:
    data = parser.add_argument_group("data (use the same values as for train)")
    data.add_argument("--dataset", default="synthetic", help="synthetic (default), synthetic64, cifar10, cifar100, imagefolder, imagenet")
    data.add_argument("--data-dir", default=None, help="dataset folder (imagefolder: a tree of class folders)")
    data.add_argument("--val-fraction", type=float, default=0.0, help="fraction of the train set held out by train (default 0)")
    data.add_argument("--image-size", type=int, default=None, help="train image size (default: the dataset's)")
    data.add_argument("--synthetic-size", type=int, nargs="+", default=None, metavar="N",
                      help="synthetic dataset: N training images, or N_TRAIN N_EVAL")
    data.add_argument("--split-seed", type=int, default=0, help="seed of the held-out split (default 0)")
    data.add_argument("--train-subset", type=int, default=None, metavar="N",
                      help="the class-stratified subset of about N images that train --train-subset N uses")
    ext = parser.add_argument_group("extractor")
    ext.add_argument("--extractor", required=True, help="a model name (cifar_resnet56, resnet152, ...) or a checkpoint.pt "
                                                        "written by `attentive-cutmix train`")
    ext.add_argument("--extractor-weights", default=None, help="local weights file for --extractor NAME (.safetensors or .pt)")
    ext.add_argument("--pretrained", action="store_true", help="use the library's pretrained ImageNet weights (downloads them)")
    ext.add_argument("--extractor-input-size", type=int, default=None,
                     help="extractor input size (default: checkpoint's image size, the dataset's for cifar_* models, else 224)")
    out = parser.add_argument_group("output")
    out.add_argument("--out", required=True, help="cache file to write (.safetensors)")
    out.add_argument("--force", action="store_true", help="replace an existing cache (the old one stays until the new one is complete)")
    out.add_argument("--batch-size", type=int, default=256, help="images per extractor batch (default 256)")
    out.add_argument("--workers", type=int, default=2, help="DataLoader worker processes (default 2)")
    out.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda if available, else cpu)")
    out.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def _train_command(args: argparse.Namespace) -> str:
    synthetic = " ".join(map(str, args.synthetic_size)) if args.synthetic_size else None
    flags = [("--dataset", args.dataset), ("--data-dir", args.data_dir), ("--synthetic-size", synthetic),
             ("--val-fraction", args.val_fraction or None), ("--image-size", args.image_size),
             ("--split-seed", args.split_seed or None), ("--train-subset", args.train_subset),
             ("--method", "attentive-cutmix"), ("--attention-cache", args.out), ("--extractor", args.extractor),
             ("--extractor-weights", args.extractor_weights), ("--extractor-input-size", args.extractor_input_size)]
    return "attentive-cutmix train " + " ".join(f"{flag} {value if flag == '--synthetic-size' else shlex.quote(str(value))}"
                                                for flag, value in flags if value is not None)


def _fail(message: str) -> int:
    print(f"attentive-cutmix cache-attention: error: {message}", file=sys.stderr)
    return 1


def run(args: argparse.Namespace) -> int:
    from .cache import build_cache, cache_meta
    from .data import build_datasets
    from .training.components import build_extractor, is_checkpoint_path
    from .training.config import TrainConfig

    out = Path(args.out)
    if out.exists() and not args.force:
        return _fail(f"{out} already exists; pass --force to replace it, or choose another --out")
    if out.is_dir():
        return _fail(f"--out {out} is a directory; give a file path such as {out / 'attention.safetensors'}")
    checkpoint = is_checkpoint_path(args.extractor)
    if checkpoint and (args.pretrained or args.extractor_weights):
        return _fail(f"--extractor {args.extractor} is a checkpoint with its own weights; drop --pretrained/--extractor-weights")
    if not checkpoint and args.pretrained == (args.extractor_weights is not None):
        return _fail(f"--extractor {args.extractor} needs its weights: pass --extractor-weights FILE or --pretrained "
                     "(downloads ImageNet weights), not both and not neither")
    # train reads "no --extractor-weights" as pretrained; build the extractor with train's own code so the caches agree.
    cfg = TrainConfig(dataset=args.dataset, method="attentive-cutmix", extractor=args.extractor,
                      extractor_weights=args.extractor_weights, extractor_input_size=args.extractor_input_size)
    synthetic_size = None if args.synthetic_size is None else (
        args.synthetic_size[0] if len(args.synthetic_size) == 1 else tuple(args.synthetic_size))
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    try:
        # The same call train makes for its split (training/data_setup.py), un-augmented.
        train_ds, _, info = build_datasets(args.dataset, data_dir=args.data_dir, image_size=args.image_size,
                                           val_fraction=args.val_fraction, seed=args.split_seed, augment=False,
                                           synthetic_size=synthetic_size, train_subset=args.train_subset)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*downloading its pretrained")  # asked for with --pretrained
            extractor = build_extractor(cfg, info, device)
        meta = cache_meta(info, extractor, args.extractor)
        start = time.perf_counter()
        cache = build_cache(train_ds, extractor, out, meta=meta, batch_size=args.batch_size, workers=args.workers,
                            device=device, progress=args.progress)
        seconds = time.perf_counter() - start
    except (ValueError, TypeError, OSError) as err:  # CacheError, ConfigError, CheckpointError, bad dataset names/paths
        return _fail(str(err))
    h, w = cache.grid
    size = out.stat().st_size
    print(f"wrote {out}: {len(cache)} maps of {h}x{w} (fp16, {size / 2**20:.1f} MiB)" if size >= 2**20 else
          f"wrote {out}: {len(cache)} maps of {h}x{w} (fp16, {size / 2**10:.1f} KiB)", end="")
    print(f" from {args.extractor} at {meta['input_size']} px over the {info.name} train split, in {seconds:.1f} s on {device} "
          f"({len(cache) / seconds:.0f} images/s)")
    print("train with it (the same split and extractor flags, so train can check the cache fits):\n  " + _train_command(args))
    return 0
