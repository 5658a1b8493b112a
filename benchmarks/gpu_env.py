"""The GPU check's set-up helpers, called by ``benchmarks/gpu_check.sh`` (standard library, and packaging if there).

    python benchmarks/gpu_env.py wheels DIR        # the carried wheels to install: missing or unsatisfying dists
    python benchmarks/gpu_env.py versions          # interpreter, torch/torchvision/timm versions, the GPU
    python benchmarks/gpu_env.py preflight CMD [';' CMD ...] -- PYTEST_ARGS...
        # each benchmark command line (script + its flags) imports and parses, then pytest collects PYTEST_ARGS

The GPU machine reaches no package registry: it runs its own ``python3`` (torch and friends preinstalled) with
``PYTHONPATH=src``, and a missing package travels as a wheel made beforehand by ``benchmarks/gpu_wheels.sh``.
"""
from __future__ import annotations

import argparse
import importlib.metadata as metadata
import importlib.util
import platform
import re
import subprocess
import sys
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parents[1]
# The machine's own builds: a carried torch would be another CUDA build (or none); the check tests what is there.
MACHINE_OWN = {"torch", "torchvision"}
NOT_RUN_BY_THE_CHECK = {"ruff"}  # the lint test is not a CUDA test


def canonical(name: str) -> str:
    """A distribution name as pip compares it (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements(pyproject: Path) -> dict[str, object]:
    """Canonical name -> specifier of the project's runtime and test requirements ({} if they cannot be read)."""
    try:
        import tomllib
        from packaging.requirements import Requirement
    except ImportError:  # Python < 3.11 or no packaging: every carried wheel of a missing dist still installs
        return {}
    project = tomllib.loads(pyproject.read_text())["project"]
    lines = [*project.get("dependencies", []), *project.get("optional-dependencies", {}).get("test", [])]
    specs: dict[str, object] = {}
    for req in map(Requirement, lines):  # a name listed twice must satisfy both
        name = canonical(req.name)
        specs[name] = specs[name] & req.specifier if name in specs else req.specifier
    return specs


def installed_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def wheels_to_install(wheel_dir: Path, pyproject: Path = ROOT / "pyproject.toml") -> tuple[list[Path], list[str]]:
    """(the carried wheels this interpreter needs, one note per decision).

    A wheel is needed when its distribution is missing, or installed at a version the project's requirement
    excludes; the machine's own torch and torchvision are never replaced.
    """
    wheels = sorted(wheel_dir.glob("*.whl"))
    by_name: dict[str, list[Path]] = {}
    for wheel in wheels:
        by_name.setdefault(canonical(wheel.name.split("-")[0]), []).append(wheel)
    doubled = {name: [w.name for w in found] for name, found in by_name.items() if len(found) > 1}
    if doubled:
        raise ValueError(f"{wheel_dir} holds several wheels of one distribution, which stops pip's whole install: "
                         f"{doubled}; keep one of each (rerun benchmarks/gpu_wheels.sh)")
    wanted = requirements(pyproject)
    chosen, notes = [], []
    for name, (wheel,) in sorted(by_name.items()):
        have, spec = installed_version(name), wanted.get(name)
        if name in MACHINE_OWN:
            notes.append(f"{wheel.name}: not installed, the machine's own {name} {have} is the one checked")
        elif have is None:
            chosen.append(wheel)
            notes.append(f"{wheel.name}: {name} is missing here")
        elif spec is not None and not spec.contains(have, prereleases=True):
            chosen.append(wheel)
            notes.append(f"{wheel.name}: {name} {have} does not satisfy {name}{spec}")
        else:
            notes.append(f"{wheel.name}: not needed, {name} {have} is here")
    for name, spec in sorted(wanted.items()):
        if name not in by_name and name not in MACHINE_OWN | NOT_RUN_BY_THE_CHECK:
            have = installed_version(name)
            if have is None or not spec.contains(have, prereleases=True):
                notes.append(f"WARNING: {name}{spec} is not met ({have or 'missing'}) and no wheel of it is carried; "
                             "add it to benchmarks/gpu_wheels.sh")
    return chosen, notes


def versions() -> list[str]:
    """What the check runs on, one line each; an import that fails is reported, never raised."""
    lines = [f"python {platform.python_version()} ({sys.executable})"]
    for name in ("torch", "torchvision", "timm", "attentive_cutmix"):
        try:
            module = __import__(name)
            lines.append(f"{name} {getattr(module, '__version__', '?')} ({Path(module.__file__).parent})")
        except Exception as err:  # report and go on: the summary names what is missing
            lines.append(f"{name}: not importable ({type(err).__name__}: {err})")
    try:
        import torch

        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            lines.append(f"GPU: {props.name}, {props.total_memory / 2**30:.0f} GiB, capability "
                         f"{props.major}.{props.minor}, CUDA {torch.version.cuda}")
        else:
            lines.append(f"GPU: none (torch.cuda.is_available() is False; torch built for CUDA {torch.version.cuda})")
    except Exception as err:
        lines.append(f"GPU: unknown ({type(err).__name__}: {err})")
    return lines


class _Parsed(Exception):
    """Raised by the patched ``parse_args`` once a benchmark's flags parsed: nothing after it runs."""


def check_command(script: Path, argv: list[str]) -> argparse.Namespace:
    """Import ``script`` and parse ``argv`` with its own parser, running nothing else (its ``main`` stops there).

    A misspelt flag, a value outside ``choices`` or a missing module fails here, on any machine.
    """
    spec = importlib.util.spec_from_file_location(f"_gpu_check_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(script.parent))  # as when run as a script: sibling modules import
    real_parse = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        raise _Parsed(real_parse(self, args, namespace))

    saved_argv = sys.argv
    try:
        spec.loader.exec_module(module)
        sys.argv = [str(script), *argv]  # mixers.py's main() reads sys.argv
        with mock.patch.object(argparse.ArgumentParser, "parse_args", parse_then_stop):
            module.main()
    except _Parsed as parsed:
        return parsed.args[0]
    finally:
        sys.argv = saved_argv
        sys.path.remove(str(script.parent))
    raise RuntimeError(f"{script.name}: main() returned without parsing its arguments")


def _split_commands(words: list[str]) -> list[list[str]]:
    commands, current = [], []
    for word in words:
        if word == ";":
            commands.append(current)
            current = []
        else:
            current.append(word)
    return [c for c in [*commands, current] if c]


def preflight(commands: list[list[str]], pytest_args: list[str]) -> int:
    """Check each benchmark command line, then collect ``pytest_args``; 1 if anything failed."""
    parsed = 0
    for script, *argv in commands:
        try:
            check_command(Path(script), argv)
            parsed += 1
            print(f"{Path(script).name}: imports, and its {len(argv)} arguments parse")
        except SystemExit as err:  # argparse's own message is already on stderr
            print(f"{Path(script).name}: its arguments do not parse (exit {err.code}): {' '.join(argv)}")
        except Exception as err:
            print(f"{Path(script).name}: {type(err).__name__}: {err}")
    tests, collect_ok = "no tests asked for", True
    if pytest_args:
        collected = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                                    *pytest_args], capture_output=True, text=True)
        out = (collected.stdout + collected.stderr).strip().splitlines() or ["(no output)"]
        print("\n".join(out[-15:]))
        tests, collect_ok = f"pytest {' '.join(pytest_args)}: {out[-1]}", collected.returncode == 0
    print(f"preflight: {parsed}/{len(commands)} benchmark command lines parse; {tests}")
    return 0 if parsed == len(commands) and collect_ok else 1


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["wheels"] and len(args) == 2:
        chosen, notes = wheels_to_install(Path(args[1]))
        print("\n".join(notes), file=sys.stderr)
        print("\n".join(str(w) for w in chosen))
        return 0
    if args == ["versions"]:
        print("\n".join(versions()))
        return 0
    if args[:1] == ["preflight"]:
        rest = args[1:]
        cut = rest.index("--") if "--" in rest else len(rest)
        return preflight(_split_commands(rest[:cut]), rest[cut + 1:])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
