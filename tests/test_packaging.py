"""What the package declares and what it needs: torch alone for the library, ranges only, the harness in an extra."""
from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = Path(__import__("attentive_cutmix").__file__).resolve().parents[1]  # the tree under test
tomllib = pytest.importorskip("tomllib")  # Python 3.11+; the metadata is the same under 3.10

# What `pip install attentive-cutmix` (no extra) does not bring: the harness's dependencies.
HARNESS_MODULES = ("torchvision", "timm", "safetensors", "yaml", "tqdm", "matplotlib", "tensorboard", "PIL", "numpy")

# A meta-path finder that refuses the harness's modules, as if they were not installed; the first lines of every
# script run under it. It raises ModuleNotFoundError exactly as a missing package does.
BLOCKER = textwrap.dedent(f"""
    import importlib.abc, sys
    BLOCKED = {HARNESS_MODULES!r}
    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by the test)", name=name)
            return None
    sys.meta_path.insert(0, Blocker())
    for mod in [m for m in sys.modules if m.split(".")[0] in BLOCKED]:
        del sys.modules[mod]
    # Asked whether a missing package exists, importlib.util.find_spec answers None (torch's dynamo asks for numpy).
    import importlib.util as _util
    _find_spec = _util.find_spec
    _util.find_spec = lambda name, package=None: (None if name.split(".")[0] in BLOCKED
                                                  else _find_spec(name, package))
""")


def _run_blocked(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCKER + textwrap.dedent(code)], capture_output=True, text=True,
                          env={"PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}, timeout=300)


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_blocker_really_blocks():
    # Without this, the test below could pass because the blocker does nothing.
    result = _run_blocked("""
        for name in BLOCKED:
            try:
                __import__(name)
            except ModuleNotFoundError:
                continue
            raise SystemExit(f"{name} imported")
        print("all blocked")
    """)
    assert result.returncode == 0, result.stderr
    assert "all blocked" in result.stdout


@pytest.mark.slow
def test_library_and_every_mixer_run_without_the_harness_dependencies():
    result = _run_blocked("""
        import torch
        from torch import nn
        import attentive_cutmix
        from attentive_cutmix import AttentiveCutMix, CutMix, Cutout, FeatureExtractor, MixUp, RandomCells

        g = torch.Generator().manual_seed(0)
        images, labels = torch.rand(4, 3, 32, 32, generator=g), torch.tensor([0, 1, 2, 3])
        maps = torch.rand(4, 8, 8, generator=g)
        for mixer in (CutMix(10), MixUp(10), Cutout(10, size=8), RandomCells(10), AttentiveCutMix(10)):
            mixed, targets = mixer(images, labels, attention=maps, generator=g)
            assert mixed.shape == images.shape and torch.allclose(targets.sum(1), torch.ones(4)), mixer
        # The online path with the user's own module needs nothing beyond torch either.
        net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, stride=4))
        mixer = AttentiveCutMix(10, FeatureExtractor(net, input_size=None), num_patches=3, grid_size=4)
        mixed, targets = mixer(images, labels, generator=g)
        assert mixed.shape == images.shape
        print("ok", attentive_cutmix.__version__)
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok")


def test_cli_version_and_a_missing_extra_named():
    result = _run_blocked("""
        from attentive_cutmix.cli import main
        try:
            main(["--version"])
        except SystemExit as e:
            assert e.code == 0, e.code
        raise SystemExit(main(["train", "--epochs", "1"]))
    """)
    import attentive_cutmix

    assert result.stdout.strip() == f"attentive-cutmix {attentive_cutmix.__version__}"
    assert result.returncode == 2
    assert "pip install 'attentive-cutmix[train]'" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def _requirements() -> list[str]:
    project = _pyproject()["project"]
    return [*project["dependencies"], *(r for reqs in project["optional-dependencies"].values() for r in reqs)]


def test_metadata_declares_ranges_only_and_torch_alone_for_the_library():
    project = _pyproject()["project"]
    assert project["dependencies"] == ["torch>=2.11"]
    pinned = [r for r in _requirements() if re.search(r"===?|~=", r)]
    assert pinned == [], f"exact pins belong in constraints.txt, not the package metadata: {pinned}"
    extras = project["optional-dependencies"]
    light = {re.split(r"[<>=!~ \[]", r)[0].lower() for r in extras["train-light"]}
    assert {"torchvision", "timm", "safetensors", "pyyaml", "tqdm", "pillow", "numpy"} <= light
    assert not light & {"matplotlib", "tensorboard"}  # the light harness: the CLI runs without them
    assert sorted(extras["train"]) == sorted(["attentive-cutmix[train-light]", "matplotlib>=3.7", "tensorboard>=2.14"])
    assert any(r.startswith("attentive-cutmix[") and "train" in r and "integrations" in r for r in extras["test"])


def test_constraints_pin_every_declared_dependency_and_the_commands_use_them():
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[name.lower().replace("_", "-")] = version
    assert pins["torch"] == "2.14.1" and pins["torchvision"] == "0.29.1"
    declared = {re.split(r"[<>=!~ \[]", r)[0].lower() for r in _requirements()} - {"attentive-cutmix"}
    assert declared - set(pins) == set()
    readme = (ROOT / "README.md").read_text()
    test_command = "python3 -m venv .venv && .venv/bin/pip install -q -c constraints.txt -e '.[test]' && " \
                   ".venv/bin/python -m pytest -q"
    assert test_command in readme
    assert "pip install -q -c constraints.txt -e '.[train]' && .venv/bin/attentive-cutmix demo" in readme
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines()
          if line and not line.startswith(("#", "set", "cd"))]
    assert ci == [test_command]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from this checkout as `pip wheel` builds it (isolated build, no dependencies fetched)."""
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", str(ROOT), "-w", str(out)],
                   check=True, capture_output=True, text=True, timeout=600)
    (built,) = out.glob("attentive_cutmix-*.whl")
    return built


@pytest.mark.slow
def test_wheel_declares_licence_classifiers_ranges_and_ships_types_and_grids(wheel):
    import zipfile

    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        (meta_name,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        meta = zf.read(meta_name).decode()
    assert "attentive_cutmix/py.typed" in names
    # every module ships, sub-packages included (packages.find picks up a folder with an __init__.py)
    package = ROOT / "src" / "attentive_cutmix"
    modules = {f"attentive_cutmix/{p.relative_to(package).as_posix()}" for p in package.rglob("*.py")}
    assert {"attentive_cutmix/attention/__init__.py", "attentive_cutmix/attention/cache.py"} <= modules <= names, \
        sorted(modules - names)
    assert {f"attentive_cutmix/examples/{n}" for n in RECIPES} <= names
    assert "Project-URL: Paper, https://arxiv.org/abs/2003.13048" in meta
    assert {"attentive_cutmix/configs/examples/synthetic-tiny.yaml", "attentive_cutmix/configs/paper/cifar10.yaml"} \
        <= names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert not any(n.endswith((".safetensors", ".pt")) for n in names)  # no weights ship (theirs is another licence)
    headers = [line for line in meta.splitlines() if ": " in line and not line.startswith(" ")]
    requires = [h.split(": ", 1)[1] for h in headers if h.startswith("Requires-Dist: ")]
    assert "torch>=2.11" in requires and not [r for r in requires if "==" in r.split(";")[0]]
    assert "License-Expression: MIT" in headers
    for classifier in ("Operating System :: POSIX :: Linux", "Operating System :: MacOS",
                       "Programming Language :: Python :: 3.13", "Typing :: Typed",
                       "Topic :: Scientific/Engineering :: Artificial Intelligence"):
        assert f"Classifier: {classifier}" in headers


@pytest.mark.slow
def test_installed_wheel_finds_its_packaged_grids_from_any_folder(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, text=True, timeout=300)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {"PYTHONPATH": str(target), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "attentive_cutmix", *args], cwd=elsewhere, env=env,
                              capture_output=True, text=True, timeout=300)

    listed = cli("compare", "examples/synthetic-tiny.yaml", "--list")
    assert listed.returncode == 0, listed.stderr
    assert len(listed.stdout.split()) == 8  # 4 methods x 2 seeds
    assert cli("compare", "configs/paper/cifar10.yaml", "--list").returncode == 0  # the checkout's old name too
    missing = cli("compare", "examples/nope.yaml", "--list")
    assert missing.returncode != 0
    assert "examples/synthetic-tiny.yaml" in missing.stderr and "paper/cifar10.yaml" in missing.stderr
    assert cli("--version").stdout.startswith("attentive-cutmix ")
    recipe = subprocess.run([sys.executable, "-m", "attentive_cutmix.examples.torchvision_collate"], cwd=elsewhere,
                            env=env, capture_output=True, text=True, timeout=300)  # a recipe, from the installed copy
    assert recipe.returncode == 0 and "(8, 10)" in recipe.stdout, recipe.stderr


RECIPES = ("README.md", "timm_loop.py", "torchvision_collate.py", "lightning_module.py", "hf_trainer.py")


def test_the_recipes_ship_inside_the_package_and_the_metadata_links_the_paper():
    from importlib.resources import files

    assert set(RECIPES) <= {p.name for p in files("attentive_cutmix.examples").iterdir()}
    assert "examples/README.md" in _pyproject()["tool"]["setuptools"]["package-data"]["attentive_cutmix"]
    assert _pyproject()["project"]["urls"]["Paper"] == "https://arxiv.org/abs/2003.13048"


def test_packaged_grids_point_at_nothing_outside_the_folder_they_are_run_from():
    # Two shipped grids read ../shared/..., a folder of this project's machines that no installed copy has.
    from attentive_cutmix.experiments.grid import PACKAGED_GRIDS, packaged_grids

    for name in packaged_grids():
        text = (PACKAGED_GRIDS / name).read_text()
        assert "../" not in text and "shared/" not in text, name


@pytest.fixture
def light(monkeypatch):
    """The [train-light] extra: TensorBoard and matplotlib as if not installed (importing them raises)."""
    import sys as _sys

    # Our event-file writer imports TensorBoard's protobufs: a process without TensorBoard cannot import it either
    # (another test may have imported it into this one already).
    for module in ("torch.utils.tensorboard", "tensorboard", "matplotlib", "matplotlib.pyplot",
                   "attentive_cutmix.training.events"):
        monkeypatch.setitem(_sys.modules, module, None)


def test_train_runs_without_tensorboard_and_says_so(light, tmp_path, capsys):
    from attentive_cutmix.cli import main

    out = tmp_path / "run"
    assert main(["train", "--synthetic-size", "32", "16", "--image-size", "16", "--epochs", "1", "--batch-size", "16",
                 "--max-steps-per-epoch", "1", "--workers", "0", "--output-dir", str(out)]) == 0
    assert "TensorBoard is not installed" in capsys.readouterr().err
    assert (out / "metrics.jsonl").read_text().count("\n") == 1 and not (out / "tb").exists()


def test_reports_skip_plots_and_figure_commands_name_matplotlib_without_it(light, tmp_path, capsys):
    from safetensors.torch import save_file

    from attentive_cutmix.cli import main
    from attentive_cutmix.experiments.report import write_plots
    from attentive_cutmix.models import create_model

    run = {"status": "finished", "top1": 50.0, "labels": {"dataset": "d", "model": "m", "method": "none", "seed": 0},
           "curve": [{"epoch": 1, "top1": 50.0}]}
    with pytest.warns(UserWarning, match="plots skipped: matplotlib is not installed"):
        assert write_plots([run], tmp_path) == []
    weights = tmp_path / "w.safetensors"
    save_file(create_model("cifar_resnet20", num_classes=10, image_size=32).state_dict(), str(weights))
    assert main(["visualize", "--synthetic-size", "8", "4", "--extractor", "cifar_resnet20", "--extractor-weights",
                 str(weights), "--num-images", "2", "--out", str(tmp_path / "fig.png")]) == 2
    assert "needs 'matplotlib'" in capsys.readouterr().err and not (tmp_path / "fig.png").exists()
