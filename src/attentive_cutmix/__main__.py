"""``python -m attentive_cutmix`` (and ``torchrun -m attentive_cutmix train ...``)."""
from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
