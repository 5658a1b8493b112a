"""Every benchmark still runs: each script, at its smallest size, exits 0 and prints its figures.

Benchmarks are not timed here (their figures are read on a quiet machine, BENCHMARKS.md); this only keeps them from
rotting when the code they drive changes (a renamed trainer attribute once broke two of them silently).
"""
from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_CIFAR = ROOT.parent / "shared" / "data" / "cifar10-jpeg" / "train"

# script -> the smallest arguments that still go through every step of it
SMALLEST = {
    "engine.py": ["--rounds", "1", "--steps", "1", "--images", "256"],
    "engine_parts.py": [],
    "mixers.py": ["--rounds", "1", "--calls", "1"],
    "targets.py": ["--rounds", "1", "--calls", "1", "--batch-size", "8", "--classes", "10"],
    "train_step.py": ["--steps", "1", "--warmup", "1", "--repeats", "1", "--batch-size", "8"],
    "attention_cache.py": ["--rounds", "1", "--build-images", "32", "--build-rounds", "1", "--batch-size", "8"],
    "cell_speed.py": ["--only", "eager (today),channels_last", "--rounds", "1", "--steps", "1", "--images", "256",
                      "--eval-images", "32"],
    "localization_extractors.py": ["--train-size", "64", "--eval-size", "32", "--epochs", "1"],
    "label_mass.py": ["--images", "64", "--untrained-weights", "untrained.safetensors"],  # and ../shared's data
    "collision.py": ["--images", "64", "--batch-size", "32"],  # ../shared's data, else a synthetic stand-in
}
HEADLINE = {"engine_parts.py": "of a none step"}  # what each prints at the end (default: a markdown table)


def test_every_benchmark_script_is_listed():
    scripts = {p.name for p in (ROOT / "benchmarks").glob("*.py")}
    # config_flow has its own test; gpu_env is a helper of gpu_check.sh, tested in test_gpu_check.py
    assert scripts - {"config_flow.py", "gpu_env.py"} == set(SMALLEST)


def _run_script(script: str, tmp_path: Path) -> subprocess.CompletedProcess:
    tmp_path.mkdir(parents=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")}
    if script == "label_mass.py":  # the variants' untrained extractor is generated, not committed
        subprocess.run([sys.executable, str(ROOT / "configs" / "results" / "make_untrained_extractor.py"),
                        str(tmp_path / "untrained.safetensors")], check=True, capture_output=True, timeout=300,
                       env=env)
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *SMALLEST[script]], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def script_runs(request, tmp_path_factory):
    """The selected scripts started at once, as many at a time as there are cores (at most 4): each runs on one
    thread, so on CI's two cores this halves the wall time of the ten runs. A test waits for its own script only."""
    root = tmp_path_factory.mktemp("benchmarks")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    selected = {item.callspec.params["script"] for item in request.session.items
                if item.originalname == "test_benchmark_runs_at_its_smallest_size_and_prints_its_figures"}
    scripts = [s for s in sorted(selected) if s != "label_mass.py" or SHARED_CIFAR.is_dir()]
    with ThreadPoolExecutor(max_workers=max(1, min(cores, 4))) as pool:
        yield {s: pool.submit(_run_script, s, root / s.removesuffix(".py")) for s in scripts}


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(SMALLEST))
def test_benchmark_runs_at_its_smallest_size_and_prints_its_figures(script, script_runs):
    if script == "label_mass.py" and not SHARED_CIFAR.is_dir():
        pytest.skip("label_mass.py reads ../shared's CIFAR-10 JPEGs, not present")
    done = script_runs[script].result()
    assert done.returncode == 0, f"{script} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    assert HEADLINE.get(script, "|---") in done.stdout, f"{script} printed no figures:\n{done.stdout[-2000:]}"


@pytest.mark.slow
def test_cell_speed_methods_times_every_registered_method_against_cutmix(tmp_path):
    # --methods reads the registry: every method (and each guided one's shuffled control) gets its row. The rows are
    # checked in-process; the script runs end to end on two of them (a step per method at batch 128 is the cost).
    import importlib.util

    from attentive_cutmix import registry

    sys.path.insert(0, str(ROOT / "benchmarks"))  # cell_speed imports its sibling engine.py, as when run as a script
    try:
        spec = importlib.util.spec_from_file_location("cell_speed", ROOT / "benchmarks" / "cell_speed.py")
        cell_speed = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(cell_speed)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    assert set(registry.names()) | {"attentive-cutmix (guidance=shuffled)"} <= set(cell_speed.method_rows())
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "cell_speed.py"), "--methods", "--rounds", "1",
                           "--steps", "1", "--images", "256", "--eval-images", "32", "--mixer-calls", "1",
                           "--only", "cutmix,fmix"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    rows = [line.split(" | ")[0].lstrip("| ") for line in done.stdout.splitlines() if line.startswith("| ")]
    assert {"cutmix", "fmix"} <= set(rows)
    assert "| cutmix | " in done.stdout and " | 1.00 | " in done.stdout
