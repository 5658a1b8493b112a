"""Constants shared across the package, defined once."""
from __future__ import annotations

import signal

# ImageNet channel statistics: what published ImageNet (and most CIFAR) weights expect, and the default
# normalisation for image folders.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Images of at most this many pixels a side are CIFAR-like: the crop-and-flip preset, small-input model stems,
# and the device-resident data path.
SMALL_IMAGE_MAX = 64

# Weight initialisations (the config, the model factory). The mixing methods are named by the registry.
INITS = ("default", "xavier")
# How an extractor's last map becomes a heat map: the channel mean (the paper's) or, for ViT-style extractors, the
# last block's class-token attention (attention.FeatureExtractor; the config and the flags name them too).
ATTENTIONS = ("channel_mean", "cls_token")

# The largest image side a run accepts (an explicit --image-size or a folder's own size): beyond it one batch needs
# tens of GB; a typo or one stray photo, not a plan.
MAX_IMAGE_SIZE = 2048
# Signals that stop a run as SIGTERM does (finish the step, checkpoint, exit 128 + signal): SIGHUP (the terminal or
# ssh session went away) and SIGUSR1 (a cluster's preemption warning, e.g. Slurm's --signal=USR1@60). SIGINT (Ctrl-C)
# is handled beside them, with a second Ctrl-C aborting.
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP", "SIGUSR1") if hasattr(signal, name))
# What `evaluate` measures (experiments/evaluate.py), named by its command line before the library is loaded.
EVAL_SPLITS = ("eval", "train")
EVAL_WEIGHTS = ("auto", "final", "checkpoint")


def is_int(value: object) -> bool:
    """An ``int`` that is not a ``bool`` (``True`` is an int to Python, never a size or a seed to us)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    """An ``int`` or ``float`` that is not a ``bool``."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


__all__ = ["CHECKPOINT_SUFFIXES", "IMAGENET_MEAN", "IMAGENET_STD",
           "SMALL_IMAGE_MAX", "MAX_IMAGE_SIZE", "INITS", "EVAL_SPLITS", "EVAL_WEIGHTS",
           "is_int", "is_number"]

# What makes an extractor spec a training checkpoint rather than a model name (attention/extractors.py), and so a
# path that a run's config resolves like the other paths (training/config.py).
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")
