"""Config and grid files: YAML alias bombs and self-containing aliases are refused before anything walks the
document, with one line, not a MemoryError traceback (issue 23, item 16). Ordinary anchors still work."""
from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import attentive_cutmix
from attentive_cutmix.training.config import ConfigError, yaml_load

SRC = Path(attentive_cutmix.__file__).resolve().parents[1]  # the package under test, wherever it is imported from


def _bomb(levels: int = 9) -> str:
    """~400 bytes whose aliases expand to 9**levels strings, hidden under a key a grid or config reads."""
    lines = ["description:", '  - &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    prev = "a"
    for name in "bcdefghijkl"[:levels - 1]:
        lines.append(f"  - &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
        prev = name
    return "\n".join(lines + ["axes:", "  seed: [0]", f"  lr: *{prev}"]) + "\n"


def test_an_alias_bomb_is_refused_before_it_is_built():
    assert len(_bomb()) < 500
    with pytest.raises(yaml.YAMLError, match=r"aliases \(\*name\) expand to more than 100,000 values"):
        yaml_load(_bomb())


def test_an_alias_that_contains_itself_is_refused():
    with pytest.raises(yaml.YAMLError, match="contains itself"):
        yaml_load("a: &a [1, *a]\n")


def test_absurd_nesting_is_a_yaml_error_not_a_recursion_error():
    with pytest.raises(yaml.YAMLError, match="nests collections too deeply"):
        yaml_load("[" * 20000 + "]" * 20000)


def test_ordinary_anchors_and_merge_keys_still_load():
    text = "base: &base {lr: 0.1, epochs: 2}\nsgd:\n  <<: *base\n  momentum: 0.9\nlist: [*base, *base]\n"
    data = yaml_load(text)
    assert data["sgd"] == {"lr": 0.1, "epochs": 2, "momentum": 0.9} and data["list"] == [data["base"]] * 2


def test_a_bomb_in_a_config_file_is_a_config_error(tmp_path):
    from attentive_cutmix.training.config import load_yaml

    (tmp_path / "c.yaml").write_text("lr: 0.1\n" + _bomb(7).replace("description:", "seed:").split("axes:")[0])
    with pytest.raises(ConfigError, match=r"c\.yaml is not valid YAML: its aliases"):
        load_yaml(tmp_path / "c.yaml")


def _limit_memory() -> None:  # what a user's 4 GB limit would do; keeps a regression from eating the machine
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))


@pytest.mark.slow
@pytest.mark.parametrize("command", [["compare", "{path}", "--dry-run"], ["train", "--config", "{path}"]])
def test_the_cli_refuses_a_bomb_in_one_line(tmp_path, command):
    path = tmp_path / "bomb.yaml"
    path.write_text(_bomb() if command[0] == "compare" else _bomb().replace("description:", "seed:").split("axes:")[0])
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "attentive_cutmix", *(a.format(path=path) for a in command),
                           "--output-dir", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=120, env=env, preexec_fn=_limit_memory)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "MemoryError" not in proc.stderr
    assert "expand to more than 100,000 values" in proc.stderr and str(path) in proc.stderr
