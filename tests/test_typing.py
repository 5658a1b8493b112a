"""Real types for the public API: mypy, strict on the package's top level, the mixers and the loss (the
``[tool.mypy]`` of pyproject.toml), finds no error there, and sees the real classes behind the lazy top-level names:
``CutMix(num_clases=10)`` in a user's typed code is an error, the correct call is clean. Slow: one mypy run, ~20 s
of CPU with a cold cache."""
from __future__ import annotations

import ast
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("mypy")

GOOD = '''\
import torch

from attentive_cutmix import CutMix, Mix, mixed_cross_entropy


def step(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    mixer = CutMix(num_classes=10, alpha=1.0, target_format="pair")
    mix = Mix(mixup_alpha=0.8, cutmix_alpha=1.0, num_classes=10)
    mixed, pairs = mixer(images, labels)
    mix.prob = 0.5
    return mixed_cross_entropy(mixed.flatten(1)[:, :10], pairs, label_smoothing=0.1)
'''
BAD = '''\
from attentive_cutmix import CutMix, Mix
from attentive_cutmix.training.config import make_config

CutMix(num_clases=10)
Mix(mixup_alpha="high")
make_config({}).optim.lrr
'''


@pytest.mark.slow
def test_mypy_is_clean_on_the_public_api_and_catches_a_users_typo():
    # The snippets live at a fixed path beside mypy's cache: its cache is keyed by module name, so a snippet at a new
    # (temporary) path each run would be reported under the path of the run that filled the cache.
    tmp_path = ROOT / ".mypy_cache" / "snippets"
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "good_user.py").write_text(GOOD)
    (tmp_path / "bad_user.py").write_text(BAD)
    config = ROOT / "pyproject.toml"
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    package = tomllib.loads(config.read_text())["tool"]["mypy"]["files"]  # the strict part, as pyproject says
    run = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(config), "--no-error-summary",
                          "--cache-dir", str(ROOT / ".mypy_cache"), *package, str(tmp_path / "good_user.py"),
                          str(tmp_path / "bad_user.py")], cwd=ROOT, capture_output=True, text=True)
    errors = [line for line in run.stdout.splitlines() if ": error:" in line]
    assert all(line.split(":")[0].endswith("snippets/bad_user.py") for line in errors), run.stdout + run.stderr
    assert any(re.search(r'bad_user.py:4: error: Unexpected keyword argument "num_clases" for "CutMix"', line)
               for line in errors), run.stdout
    assert any("bad_user.py:5: error: Argument \"mixup_alpha\" to \"Mix\" has incompatible type" in line
               for line in errors), run.stdout
    # the config's sections are typed: a typo in a section read is caught (a flat read, cfg.lrr, is not)
    assert any('bad_user.py:6: error: "OptimConfig" has no attribute "lrr"' in line for line in errors), run.stdout
    assert run.returncode == 1


def test_every_top_level_name_is_typed_for_checkers():
    # The lazy __getattr__ returns Any to a checker: each exported name needs its TYPE_CHECKING import.
    tree = ast.parse((ROOT / "src" / "attentive_cutmix" / "__init__.py").read_text())
    typed = {alias.asname or alias.name for node in ast.walk(tree) if isinstance(node, ast.If)
             and getattr(node.test, "id", None) == "TYPE_CHECKING"
             for stmt in node.body if isinstance(stmt, ast.ImportFrom) for alias in stmt.names}
    import attentive_cutmix

    exported = {name for name, module in attentive_cutmix._EXPORTS.items()
                if importlib.util.find_spec(f"attentive_cutmix.{module}") is not None}
    assert exported <= typed
    assert set(attentive_cutmix.__all__) == set(attentive_cutmix._EXPORTS) | {"__version__"}


def test_the_typed_names_are_still_imported_lazily():
    code = ("import sys, json, attentive_cutmix\nbefore = sorted(sys.modules)\nattentive_cutmix.CutMix\n"
            "print(json.dumps([before, sorted(sys.modules)]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    before, after = json.loads(out.splitlines()[-1])
    assert not [m for m in before if m.split(".")[0] in ("torchvision", "timm")]
    assert "attentive_cutmix.mixers.cutmix" not in before and "attentive_cutmix.mixers.cutmix" in after
    assert not [m for m in after if m.split(".")[0] in ("torchvision", "timm")]
