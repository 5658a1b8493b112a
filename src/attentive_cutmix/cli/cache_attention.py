"""``attentive-cutmix cache-attention``: run an extractor once over a training split and store its maps.

The split flags are those of ``train`` (same dataset, folder, validation fraction, image size,
split seed and train subset give the same split, whose fingerprint the cache records), and the extractor
is built exactly as ``train`` builds it, so ``train --attention-cache PATH`` accepts what this writes::

    attentive-cutmix cache-attention --dataset cifar10 --extractor cifar_resnet56 \\
        --extractor-weights cifar10-resnet56.safetensors --out cifar10-r56.safetensors
    attentive-cutmix train --dataset cifar10 --method attentive-cutmix --grid-size 8 \\
        --attention-cache cifar10-r56.safetensors
"""
from __future__ import annotations

import argparse
import shlex
import signal
import time
from pathlib import Path
from typing import Any

from ._common import (
    add_data_arguments,
    add_device_argument,
    add_extractor_arguments,
    data_section,
    extractor_spec,
    fail,
    size_limit_error,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_data_arguments(parser, title="data (use the same values as for train)")
    add_extractor_arguments(parser, required=True)
    parser.add_argument("--pretrained", action="store_true",
                        help="use the library's pretrained ImageNet weights (downloads them)")
    out = parser.add_argument_group("output")
    out.add_argument("--out", required=True, help="cache file to write (.safetensors)")
    out.add_argument("--force", action="store_true",
                     help="replace an existing cache (the old one stays until the new one is complete)")
    out.add_argument("--batch-size", type=int, default=256, help="images per extractor batch (default 256)")
    out.add_argument("--workers", type=int, default=2, help="DataLoader worker processes (default 2)")
    add_device_argument(out)
    out.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def _train_command(args: argparse.Namespace, parser_defaults: dict[str, Any]) -> str:
    """The train command that accepts this cache: the split (the data section's options) and the extractor."""
    from ..training.config import DATA_FIELDS

    def flags(keys: tuple[str, ...]) -> list[str]:
        out = []
        for key in keys:
            value = getattr(args, key)
            if value is None or (value == parser_defaults.get(key) and key != "dataset"):
                continue
            text = " ".join(map(str, value)) if isinstance(value, list) else shlex.quote(str(value))
            out.append(f"--{key.replace('_', '-')} {text}")
        return out

    return " ".join(["attentive-cutmix train", *flags(DATA_FIELDS), "--method attentive-cutmix",
                     f"--attention-cache {shlex.quote(str(args.out))}",
                     *flags(("extractor", "extractor_weights", "extractor_input_size", "extractor_attention"))])


def _defaults() -> dict[str, Any]:
    probe = argparse.ArgumentParser(add_help=False)
    add_data_arguments(probe)
    add_extractor_arguments(probe)
    return vars(probe.parse_args([]))


def run(args: argparse.Namespace) -> int:
    from ..attention import is_checkpoint_path
    from ..attention.cache import CacheBuildInterrupted, CacheError, build_cache, cache_meta, check_cache_target
    from ..training.distributed import resolve_device

    if (too_large := size_limit_error(args)) is not None:
        return fail("cache-attention", too_large)
    out = Path(args.out)
    checkpoint = is_checkpoint_path(args.extractor)
    try:  # before any work: never replace what is not a cache, never the extractor's own weights
        check_cache_target(out, force=args.force,
                           protected=(args.extractor_weights, args.extractor if checkpoint else None))
    except CacheError as err:
        return fail("cache-attention", err)
    if checkpoint and (args.pretrained or args.extractor_weights):
        return fail("cache-attention", f"--extractor {args.extractor} is a checkpoint with its own weights; "
                                       "drop --pretrained/--extractor-weights")
    if not checkpoint and args.pretrained == (args.extractor_weights is not None):
        return fail("cache-attention", f"--extractor {args.extractor} needs its weights: pass --extractor-weights FILE "
                     "or --pretrained (downloads ImageNet weights), not both and not neither")
    try:
        device = resolve_device(args.device)
        # The split and the extractor as train makes them (the same sections and spec), the split un-augmented;
        # train reads "no --extractor-weights" as pretrained, asked for here with --pretrained.
        train_ds, _, info = data_section(args).datasets(augment=False)
        extractor = extractor_spec(args).build(image_size=info.image_size, device=device, quiet=True)
        meta = cache_meta(info, extractor, args.extractor)
        start = time.perf_counter()
        cache = build_cache(train_ds, extractor, out, meta=meta, batch_size=args.batch_size, workers=args.workers,
                            device=device, progress=args.progress)
        seconds = time.perf_counter() - start
    except (ValueError, TypeError, OSError) as err:  # CacheError, ConfigError, CheckpointError, bad dataset names/paths
        return fail("cache-attention", str(err))
    except CacheBuildInterrupted as err:
        fail("cache-attention", err)
        return 128 + err.signum
    except KeyboardInterrupt:  # Ctrl-C before the build started (reading the data, loading the extractor)
        fail("cache-attention", f"interrupted before the build; nothing was written to {out}")
        return 128 + signal.SIGINT
    h, w = cache.grid
    size = out.stat().st_size
    print(f"wrote {out}: {len(cache)} maps of {h}x{w} (fp16, {size / 2**20:.1f} MiB)" if size >= 2**20 else
          f"wrote {out}: {len(cache)} maps of {h}x{w} (fp16, {size / 2**10:.1f} KiB)", end="")
    print(f" from {args.extractor} at {meta['input_size']} px over the {info.name} train split, "
          f"in {seconds:.1f} s on {device} ({len(cache) / seconds:.0f} images/s)")
    print("train with it (the same split and extractor flags, so train can check the cache fits):\n  "
          + _train_command(args, _defaults()))
    return 0
