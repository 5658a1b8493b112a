"""Datasets and augmentation: ``build_datasets(name, ...) -> (train_ds, eval_ds, info)``.

Names: "synthetic" (the embedded default, 32 px), "synthetic2" (its version 2: larger objects, lighter clutter),
"synthetic64", "cifar10", "cifar100", "imagefolder",
"imagenet". See ``datasets.py`` for the item format and ``transforms.py`` for the presets.
"""
from .datasets import DATASETS, DatasetInfo, build_datasets
from .folders import CorruptImageError, DatasetError, DatasetNotFoundError
from .split import stratified_split
from .synthetic import SHAPES, SyntheticObjects, generate_objects
from .transforms import eval_transform, frame_transform, preset_for_size, train_transform
from .wrapper import AugmentedDataset, dataset_boxes

__all__ = [
    "build_datasets", "DatasetInfo", "DATASETS", "train_transform", "eval_transform", "frame_transform",
    "preset_for_size", "SyntheticObjects", "generate_objects", "SHAPES", "dataset_boxes", "AugmentedDataset",
    "stratified_split", "DatasetError", "DatasetNotFoundError", "CorruptImageError",
]
