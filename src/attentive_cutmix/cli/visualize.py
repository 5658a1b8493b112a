"""``attentive-cutmix visualize``: a figure like the paper's Fig. 1/2 for a few images, for any registered method
(see experiments/visualize.py)."""
from __future__ import annotations

import argparse

from ._common import (
    add_data_arguments,
    add_device_argument,
    add_extractor_arguments,
    add_method_options,
    data_section,
    extractor_spec,
    fail,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_data_arguments(parser)
    add_extractor_arguments(parser)
    fig = parser.add_argument_group("figure")
    fig.add_argument("--method", action="append", default=None, metavar="NAME",
                     help="a method to show (repeat for several; default: every registered mixing method, those that "
                          "read an extractor's maps only with --extractor)")
    fig.add_argument("--num-images", type=int, default=4, help="rows of the figure (default 4, at least 2)")
    fig.add_argument("--seed", type=int, default=0, help="which images and which mixing draws (default 0)")
    add_device_argument(fig)
    fig.add_argument("--out", required=True, metavar="FIG.png", help="where to write the figure")
    add_method_options(parser.add_argument_group("method options (each applies to the methods that have it)"),
                       suppress=False)


def run(args: argparse.Namespace) -> int:
    from .. import registry
    from ..experiments.visualize import figure_for_dataset
    from ..training.distributed import resolve_device
    from ._common import size_limit_error

    if (too_large := size_limit_error(args)) is not None:
        return fail("visualize", too_large)
    try:
        if args.num_images < 2:
            raise ValueError(f"--num-images must be at least 2 (mixing pairs images), got {args.num_images}")
        for name in args.method or ():
            if registry.get(name).build is None:
                raise ValueError(f"--method {name} does not mix: nothing to show")
        options = {k: v for k in registry.option_names() if (v := getattr(args, k, None)) is not None}
        device = resolve_device(args.device)
        # An image folder has no eval split of its own; holding some out only satisfies build_datasets here.
        held_out = args.val_fraction or (0.1 if args.dataset == "imagefolder" and args.val_data is None else 0.0)
        dataset, _, info = data_section(args, val_fraction=held_out).datasets(augment=False)
        if args.num_images > len(dataset):
            raise ValueError(f"--num-images {args.num_images} exceeds the dataset's {len(dataset)} images")
        spec = extractor_spec(args)
        extractor = spec.build(image_size=info.image_size, device=device) if spec is not None else None
        shown = ", ".join(args.method) if args.method else "every method"
        figure_for_dataset(dataset, info, args.out, methods=args.method, options=options, extractor=extractor,
                           num_images=args.num_images, seed=args.seed, device=device,
                           title=f"{info.name}: {shown}" + (f", extractor {args.extractor}" if extractor else ""))
    except (ValueError, TypeError, OSError, KeyError) as err:
        return fail("visualize", err)
    print(f"wrote {args.out}")
    return 0
