"""Write the untrained extractor of the variants study: a CIFAR ResNet-56 at its seeded random initialisation.

    python configs/results/make_untrained_extractor.py
    # -> results/extractors/cifar_resnet56-untrained-seed0.safetensors

The low end of "the better the extractor": the same architecture as the pretrained ResNet-56 extractor, the same
pipeline (eval mode, BatchNorm at its initial statistics, ImageNet normalisation, layer3's 8x8 map at 32 px), no
training. The file is generated, not committed: run this once before the variants grid. torch's CPU generator makes
the same weights on any machine; ``DIGEST`` is the digest of the weights the committed cells used, and
tests/test_variants.py checks that this script still makes exactly them.
"""
from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import torch
from safetensors.torch import save_file

from attentive_cutmix.models import create_model

SEED = 0
OUT = Path(__file__).resolve().parents[2] / "results/extractors" / f"cifar_resnet56-untrained-seed{SEED}.safetensors"


# state_digest of the weights behind the committed `attentive-cutmix-untrained` cells (2026-12-02).
DIGEST = "d9ab8724590ce5985dc1c21f5cf063c282987fa2ce3a44c5f86280bc9772871e"


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 over the tensors' names, dtypes, shapes and bytes (a file's bytes also depend on its header's order)."""
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous()
        h.update(f"{key}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def untrained_state(seed: int = SEED) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    net = create_model("cifar_resnet56", 10, 32)
    return {k: v.contiguous() for k, v in net.state_dict().items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", type=Path, default=OUT, help=f"where to write it (default {OUT})")
    out = parser.parse_args(argv).out
    state = untrained_state()
    if state_digest(state) != DIGEST:  # another torch could draw other numbers: then these are not the study's
        raise SystemExit(f"this torch makes other untrained weights (digest {state_digest(state)[:12]}, the study's "
                         f"{DIGEST[:12]}): the variants grid's untrained cells would not pair; use torch 2.14.1")
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out), metadata={"seed": str(SEED), "model": "cifar_resnet56", "trained": "no"})
    print(out)


if __name__ == "__main__":
    main()
