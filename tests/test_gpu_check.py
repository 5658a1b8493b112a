"""The GPU check (``benchmarks/gpu_check.sh``) and what it runs, checked without a GPU.

Its dry run goes end to end here with the same interpreter rule and set-up (wheels included), the CUDA steps
reported as skipped; its helpers choose wheels and parse the benchmarks' command lines; the attention-cache
benchmark's set-up runs at small size, and its ResNet-152 extractor's maps fit float16.
"""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
CUDA_STEPS = ["cuda-tests", "mixers", "engine", "attention-cache"]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gpu_env = _load("gpu_env")


def _rows(output: str) -> dict[str, tuple[str, str]]:
    """step -> (status, headline) from the summary table."""
    rows = re.findall(r"^\| ([\w-]+) \| ([^|]+) \| \d+ \| (.*) \|$", output, flags=re.M)
    return {name: (status.strip(), headline) for name, status, headline in rows}


def _run_check(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k not in {"OUT", "GPU_CHECK_DRY"}}
    full_env.update(GPU_CHECK_LOGS=str(tmp_path / "logs"), GPU_CHECK_SITE=str(tmp_path / "site"),
                    GPU_CHECK_WHEELS=str(tmp_path / "wheels"), OMP_NUM_THREADS="1", **env)
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=full_env, timeout=900)


def _probe_wheel(folder: Path) -> Path:
    """A minimal pure-Python wheel of a distribution no machine has: its install is visible in the site folder."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "gpu_check_probe-0.1-py3-none-any.whl"
    info = "gpu_check_probe-0.1.dist-info"
    files = {"gpu_check_probe.py": "VALUE = 42\n",
             f"{info}/METADATA": "Metadata-Version: 2.1\nName: gpu-check-probe\nVersion: 0.1\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    files[f"{info}/RECORD"] = "".join(f"{name},,\n" for name in [*files, f"{info}/RECORD"])
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return path


# ------------------------------------------------------------------------------------------ the script
@pytest.mark.slow
def test_the_dry_run_goes_end_to_end_and_skips_only_the_cuda_steps(tmp_path):
    _probe_wheel(tmp_path / "wheels")
    proc = _run_check(tmp_path, "--dry-run", GPU_CHECK_PYTHON=sys.executable)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    rows = _rows(proc.stdout)
    assert list(rows) == ["set-up", "preflight", *CUDA_STEPS]
    assert rows["set-up"] == ("ok", f"torch {torch.__version__}")
    status, headline = rows["preflight"]
    assert status == "ok" and re.search(r"3/3 benchmark command lines parse; .* \d+/\d+ tests collected", headline)
    assert all(rows[name][0] == "skipped: no GPU" for name in CUDA_STEPS)
    # Set-up: the carried wheel of a missing distribution went into the site folder, and the versions and the
    # (absent) GPU are printed before the first step runs.
    assert (tmp_path / "site" / "gpu_check_probe.py").read_text() == "VALUE = 42\n"
    assert "gpu-check-probe is missing here" in out
    assert out.index("GPU: none") < out.index("=== preflight")
    assert f"attentive_cutmix 0.1.0 ({ROOT / 'src' / 'attentive_cutmix'})" in out  # PYTHONPATH=src, not an install
    logs = tmp_path / "logs"
    assert sorted(p.name for p in logs.iterdir()) == ["preflight.log", "setup.log", "summary.md"]
    assert "| preflight | ok |" in (logs / "summary.md").read_text()


def test_a_failed_set_up_still_prints_the_summary_and_fails(tmp_path):
    proc = _run_check(tmp_path, GPU_CHECK_PYTHON="/bin/false")
    assert proc.returncode == 1
    rows = _rows(proc.stdout)
    assert rows["set-up"] == ("FAILED (rc 1)", "/bin/false does not import torch")
    assert all(rows[name][0] == "skipped: set-up failed" for name in ["preflight", *CUDA_STEPS])
    assert (tmp_path / "logs" / "summary.md").is_file()


def test_unknown_arguments_are_refused(tmp_path):
    proc = _run_check(tmp_path, "--dryrun")
    assert proc.returncode == 2 and "unknown argument: --dryrun (use --dry-run or --help)" in proc.stderr


# ------------------------------------------------------------------------------------------ its helpers
def _pyproject(tmp_path: Path, *requirements: str, test: str = "") -> Path:
    path = tmp_path / "pyproject.toml"
    deps = ", ".join(f'"{r}"' for r in requirements)
    path.write_text(f'[project]\nname = "x"\ndependencies = [{deps}]\n[project.optional-dependencies]\n'
                    f'test = [{test}]\n')
    return path


def _wheels(folder: Path, *names: str) -> Path:
    folder.mkdir()
    for name in names:
        (folder / name).write_bytes(b"")
    return folder


def test_only_wheels_of_missing_or_unsatisfying_distributions_are_chosen(tmp_path):
    folder = _wheels(tmp_path / "w", "gpu_check_absent-1.0-py3-none-any.whl", "pytest-99.0-py3-none-any.whl",
                     "numpy-0.1-py3-none-any.whl", "torch-2.11.0-cp312-cp312-manylinux_2_28_x86_64.whl")
    chosen, notes = gpu_env.wheels_to_install(folder, _pyproject(tmp_path, "numpy>=1.0", "torch>=99", "tqdm>=999",
                                                                 test='"pytest>=8"'))
    assert [w.name for w in chosen] == ["gpu_check_absent-1.0-py3-none-any.whl"]
    text = "\n".join(notes)
    assert "numpy-0.1-py3-none-any.whl: not needed, numpy" in text  # installed, and it satisfies numpy>=1.0
    assert "pytest-99.0-py3-none-any.whl: not needed" in text
    assert "not installed, the machine's own torch" in text  # never replaced, whatever the pin says
    assert re.search(r"WARNING: tqdm>=999 is not met \(4\.\S+\) and no wheel of it is carried", text)


def test_a_wheel_replaces_an_installed_version_the_project_excludes(tmp_path):
    folder = _wheels(tmp_path / "w", "pytest-99.0-py3-none-any.whl")
    chosen, notes = gpu_env.wheels_to_install(folder, _pyproject(tmp_path, "pytest>=8", test='"pytest>=99"'))
    assert [w.name for w in chosen] == ["pytest-99.0-py3-none-any.whl"]
    assert re.search(r"pytest \S+ does not satisfy pytest(>=8,>=99|>=99,>=8)", "\n".join(notes))


def test_two_wheels_of_one_distribution_are_refused(tmp_path):
    folder = _wheels(tmp_path / "w", "timm-1.0.0-py3-none-any.whl", "timm-1.0.31-py3-none-any.whl")
    with pytest.raises(ValueError, match=r"several wheels of one distribution.*timm-1\.0\.0.*timm-1\.0\.31"):
        gpu_env.wheels_to_install(folder, _pyproject(tmp_path))


def test_a_benchmark_command_line_is_parsed_without_running_it():
    args = gpu_env.check_command(ROOT / "benchmarks" / "engine.py", ["--device", "cuda", "--amp", "bf16"])
    assert args.device == "cuda" and args.amp == "bf16"
    with pytest.raises(SystemExit):  # argparse: engine.py's --device takes cpu or cuda only
        gpu_env.check_command(ROOT / "benchmarks" / "engine.py", ["--device", "gpu"])


# ------------------------------------------------------------------------------------------ attention-cache step
def test_the_gpu_checks_resnet152_extractor_gives_maps_that_fit_float16():
    # Random ResNet-152 weights used to give maps up to 5.7e8: past float16, so the cache refused them and fp16
    # autocast overflowed. The GPU check's own extractor arguments, built on the CPU.
    bench = _load("attention_cache")
    args = gpu_env.check_command(ROOT / "benchmarks" / "attention_cache.py",
                                 ["--device", "cuda", "--extractor", "resnet152", "--image-size", "224"])
    extractor, source = bench._extractor(args, torch.device("cpu"))
    assert source == "random weights, 50 residual blocks zero-initialised"
    images = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        maps = extractor(images)
    assert maps.abs().max() < 100 and torch.isfinite(maps.half()).all()


def test_maps_beyond_float16_stop_the_benchmark_before_any_timing():
    bench = _load("attention_cache")
    from attentive_cutmix.attention import FeatureExtractor

    scaled = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3))
    torch.nn.init.constant_(scaled[0].weight, 1e5)
    with pytest.raises(SystemExit, match=r"maps up to .* beyond float16 \(65504\)"):
        bench.check_maps_fit_float16(FeatureExtractor(scaled, input_size=None), torch.rand(1, 3, 8, 8))


def test_the_attention_cache_benchmark_runs_at_small_size_on_the_cpu(capsys):
    bench = _load("attention_cache")
    bench.main(["--device", "cpu", "--model", "cifar_resnet20", "--extractor", "cifar_resnet20", "--batch-size", "8",
                "--rounds", "1", "--build-images", "8", "--build-batch-size", "8", "--build-rounds", "1"])
    out = capsys.readouterr().out
    assert "random weights, 9 residual blocks zero-initialised" in out
    for table in ("## train step", "## the mixer alone", "## cache build", "## data item"):
        assert table in out
    assert re.search(r"^targets: cached <= 1\.05x cutmix: [\d.]+ \((met|MISSED)\)", out, flags=re.M)
