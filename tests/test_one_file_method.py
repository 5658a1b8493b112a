"""A new mixing method is one file plus nothing else (issue 30's done-when).

``tests/data/centre_square.py`` is installed as a package of its own (a ``.dist-info`` with an
``attentive_cutmix.mixers`` entry point on a path given to a fresh interpreter, as pip would lay it out), and then,
with no file of ``src/``, ``tests/`` or ``benchmarks/`` edited, it passes ``check_mixer``, trains through
``train --method``, runs in a ``compare`` grid whose report has its localisation hit rate, and is drawn by
``visualize`` with its region outlined.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def _install(site: Path) -> None:
    """Lay the one file out as an installed distribution with an entry point (what ``pip install`` writes)."""
    package = site / "centre_square_mixer"
    package.mkdir(parents=True)
    shutil.copy(HERE / "data" / "centre_square.py", package / "__init__.py")
    info = site / "centre_square_mixer-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: centre-square-mixer\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[attentive_cutmix.mixers]\ncentre-square = centre_square_mixer\n")


def _run(args: list[str], site: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_a_third_party_method_is_one_file_through_every_part_of_the_harness(tmp_path):
    site = tmp_path / "site"
    _install(site)
    script = (
        "from attentive_cutmix import check_mixer, registry\n"
        "assert 'centre-square' in registry.names(), registry.names()\n"
        "check_mixer('centre-square')\n"
        "print('contract ok')\n")
    done = _run(["-c", script], site, tmp_path)
    assert done.returncode == 0 and "contract ok" in done.stdout, done.stderr
    tiny = ["--dataset", "synthetic", "--synthetic-size", "64", "16", "--epochs", "1", "--batch-size", "32",
            "--workers", "0", "--no-progress"]
    done = _run(["-m", "attentive_cutmix", "train", "--method", "centre-square", "--centre-side", "0.25", *tiny,
                 "--output-dir", str(tmp_path / "run")], site, tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "run" / "results.json").read_text())["config"]["centre_side"] == 0.25
    grid = tmp_path / "grid.yaml"
    grid.write_text("name: toy\nsettings: {dataset: synthetic, synthetic_size: [64, 16], epochs: 1, batch_size: 32, "
                    "workers: 0, progress: false}\naxes: {method: [none, centre-square], seed: [0]}\n")
    done = _run(["-m", "attentive_cutmix", "compare", str(grid), "--output-dir", str(tmp_path / "out")], site,
                tmp_path)
    assert done.returncode == 0, done.stderr
    table = (tmp_path / "out" / "table.md").read_text()
    assert "| Centre square |" in table and "Localisation" in table, table
    runs = json.loads((tmp_path / "out" / "results.json").read_text())["runs"]
    loc = next(r for r in runs if r["labels"]["method"] == "centre-square")["localization"]
    assert 0.0 <= loc["hit"] <= 1.0 and loc["area"] == pytest.approx(0.25)
    done = _run(["-m", "attentive_cutmix", "visualize", "--method", "centre-square", "--num-images", "2",
                 "--out", str(tmp_path / "fig.png")], site, tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "fig.png").read_bytes()[:4] == b"\x89PNG"


def test_a_broken_plugin_is_reported_and_skipped(tmp_path):
    site = tmp_path / "site"
    (site / "broken_mixer").mkdir(parents=True)
    (site / "broken_mixer" / "__init__.py").write_text("raise ImportError('no such thing')\n")
    info = site / "broken_mixer-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-mixer\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[attentive_cutmix.mixers]\nbroken = broken_mixer\n")
    done = _run(["-W", "always", "-c", "from attentive_cutmix import registry; print(registry.names())"], site,
                tmp_path)
    assert done.returncode == 0 and "cutmix" in done.stdout, done.stderr
    assert "entry point 'broken'" in done.stderr and "no such thing" in done.stderr
