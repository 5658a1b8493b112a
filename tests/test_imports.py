"""``import attentive_cutmix`` and ``attentive-cutmix --help`` stay light: no timm, no torchvision model zoo."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("timm", "torchvision.models")


def _modules_after(code: str) -> list[str]:
    script = f"import sys, json\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    return json.loads(out.splitlines()[-1])


_HELP = "from attentive_cutmix.cli import main\ntry:\n    main({argv!r})\nexcept SystemExit:\n    pass"


@pytest.mark.parametrize("code", [
    "import attentive_cutmix",
    "from attentive_cutmix import AttentiveCutMix, RandomCells, CutMix, MixUp, Cutout",
    _HELP.format(argv=["--help"]),
    *[_HELP.format(argv=[command, "--help"]) for command in
      ("train", "evaluate", "demo", "compare", "visualize", "cache-attention")],
])
def test_light_entry_points_import_no_model_zoo(code):
    loaded = _modules_after(code)
    assert [m for m in HEAVY if m in loaded] == []


@pytest.mark.slow
def test_building_a_model_does_import_the_zoo():
    # The check above would pass vacuously if the names were wrong: show they are what a model build loads.
    loaded = _modules_after("from attentive_cutmix.models import create_model\ncreate_model('resnet18', 10, 32)")
    assert [m for m in HEAVY if m in loaded] == list(HEAVY)


def test_lazy_names_resolve_and_unknown_names_fail():
    import attentive_cutmix

    assert attentive_cutmix.RandomCells.__name__ == "RandomCells"
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        attentive_cutmix.Nope  # noqa: B018
