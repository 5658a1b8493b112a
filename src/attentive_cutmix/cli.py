"""Command line: ``attentive-cutmix {demo,train,cache-attention,compare,visualize}``."""
from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    print("attentive-cutmix: the trainer lands with the training harness", file=sys.stderr)
    return 2
