"""Issues 20 and 30: the run's config, followed through ``train`` (``benchmarks/config_flow.py``), goes back up a layer
at most 3 times and re-enters no module on the main path (as measured after issue 30); a set-up that ping-pongs
again fails here."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("_bench_config_flow", ROOT / "benchmarks" / "config_flow.py")
flow = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(flow)


def test_counting_rules_on_a_known_sequence():
    recorder = flow.Flow.__new__(flow.Flow)
    recorder.calls = [(None, "training/trainer.py", "train"), ("training/trainer.py", "data/datasets.py", "a"),
                      ("training/trainer.py", "models/factory.py", "b"),  # back up from data/, down again
                      ("models/factory.py", "training/config.py", "c"),  # a lower layer calling up
                      ("training/trainer.py", "data/datasets.py", "d")]  # same layer back, data/ entered again
    report = recorder.report()
    assert report["up"] == 2 and report["reentries"] == 1 and report["per_module"] == {"data/datasets.py": 1}
    assert report["upward_calls"] == ["models/factory.py -> training/config.py.c"]


STUDIES = "attentive-cutmix, device path, name + weights file, attention cache built first (as the studies)"


@pytest.mark.parametrize("path, most_up, most_reentries", [
    ("main", 3, 0),  # as measured after issue 30 (issue 20's done-when was 4 and 7)
    ("studies", 5, 3),  # as measured after issue 30 (the weights file and the cache header each add a descent)
])
def test_config_flow_stays_within_its_bounds(path, most_up, most_reentries, tmp_path):
    report = flow.measure(flow.ATTENTIVE if path == "main" else flow.PATHS[STUDIES], str(tmp_path))
    described = flow.describe(path, report)
    # The measurement saw the flow (not an empty trace): the data, the extractor and the mixer each took the config.
    assert {"training/trainer.py", "training/data_setup.py", "attention.py", "registry.py"} <= set(report["modules"])
    assert report["up"] <= most_up, described
    assert report["reentries"] <= most_reentries, described
    assert report["upward_calls"] == [], described
