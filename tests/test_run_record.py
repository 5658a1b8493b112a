"""The run folder and its record (issue 30, item 6): one module names a run's files, one reads and writes its
record; every committed run still reads, byte for byte, and is skipped as finished by ``compare``."""
from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from attentive_cutmix.experiments import compare as compare_mod
from attentive_cutmix.training import make_config, train
from attentive_cutmix.training.run_folder import RunFolder
from attentive_cutmix.training.run_io import _json_line
from attentive_cutmix.training.run_record import RecordedConfig, RunRecord, results_record

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src" / "attentive_cutmix"
COMMITTED = sorted(p.parent for p in (REPO / "results").glob("*/runs/*/results.json"))
TINY = dict(dataset="synthetic", synthetic_size=[32, 16], image_size=16, model="cifar_resnet20", epochs=1,
            batch_size=16, max_steps_per_epoch=1, workers=0, progress=False)

# A run folder's file names, as a string in code (a docstring or comment may name them for the reader).
FILE_NAMES = re.compile(r"results\.json|metrics\.jsonl|config\.yaml|weights(_ema|_best)?\.safetensors|checkpoint\.pt"
                        r"|^\.lock$|^tb$")
OWNERS = {"training/run_folder.py"}


def _docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def _file_name_literals(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    docs = _docstrings(tree)
    return [f"{path.relative_to(SRC)}:{node.lineno}: {node.value!r}" for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs
            and FILE_NAMES.search(node.value)]


def test_no_run_folder_file_name_is_spelled_outside_run_folder_py():
    found: dict[str, list[str]] = {}
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel not in OWNERS and (hits := _file_name_literals(path)):
            found[rel] = hits
    assert found == {}
    assert _file_name_literals(SRC / "training" / "run_folder.py")  # the scan does find them where they are


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("record") / "run"
    train(make_config({**TINY, "eval_train": True, "output_dir": str(out)}))
    return out


def test_a_trained_run_reads_back_typed(tiny_run):
    raw = json.loads((tiny_run / "results.json").read_text())
    record = RunRecord.read(tiny_run)
    assert record.finished and record.status == "finished" and record.folder == RunFolder(tiny_run)
    assert record.config == raw["config"] and isinstance(record.config, RecordedConfig)
    assert (record.config.method, record.config.seed, record.config.model) == ("none", 0, "cifar_resnet20")
    assert record.config.num_classes == raw["config"]["num_classes"] == len(record.config.classes)
    assert record.config.train_fingerprint == raw["config"]["train_fingerprint"] is not None
    assert record.config.missing_model_keys() == []
    last = raw["curve"][-1]
    f = record.finals
    assert (f.top1, f.top5, f.best_top1, f.epochs, f.wall_time_s) == (raw["top1"], raw["top5"], raw["best_top1"], 1,
                                                                      raw["wall_time_s"])
    assert (f.eval_loss, f.train_top1) == (last["eval_loss"], last["train_top1"]) and f.train_top1 is not None
    assert record.curve == raw["curve"] and record.weights == tiny_run / "weights.safetensors"
    folder = RunFolder(tiny_run)
    assert folder.is_finished() and folder.recorded_status() == "finished"
    assert set(folder.existing_outputs()) >= {"checkpoint.pt", "results.json", "metrics.jsonl", "config.yaml",
                                              "weights.safetensors"}
    assert not folder.lock.exists()  # a finished run leaves no lock
    # compare's grid entry lists the run under the keys (and in the order) it always did
    assert list(record.summary()) == ["top1", "top5", "best_top1", "best_top5", "epochs", "curve", "wall_time_s"]
    assert record.summary() == {k: raw[k] for k in record.summary()}


def _broken(run: Path, tmp_path: Path, change) -> Path:
    folder = tmp_path / "broken"
    folder.mkdir(exist_ok=True)
    record = json.loads((run / "results.json").read_text())
    text = change(record)
    (folder / "results.json").write_text(text if isinstance(text, str) else json.dumps(record))
    return folder


@pytest.mark.parametrize("change, message", [
    (lambda r: r.pop("config"), r"has no 'config' mapping: not written by `attentive-cutmix train`"),
    (lambda r: r.update(top1="high"), r"is damaged or was edited: its 'top1' is 'high', expected a number"),
    (lambda r: r.update(best_top5=True), r"its 'best_top5' is True, expected a number"),
    (lambda r: r.update(epochs=1.5), r"its 'epochs' is 1.5, expected an integer"),
    (lambda r: r.update(status=3), r"its 'status' is 3, expected a string"),
    (lambda r: r["curve"][0].update(eval_loss="nan?"), r"its curve\[0\]\['eval_loss'\] is 'nan\?', expected a number"),
    (lambda r: r.update(curve={"1": 2}), r"its 'curve' is \{'1': 2\}, expected a list of per-epoch rows"),
    (lambda r: "[1, 2]", r"its top level is \[1, 2\], expected a mapping"),
    (lambda r: '{"config": {', r"is not valid JSON"),
])
def test_a_broken_record_is_one_error_naming_the_file_and_the_entry(tiny_run, tmp_path, change, message):
    folder = _broken(tiny_run, tmp_path, change)
    with pytest.raises(ValueError, match=message) as info:
        RunRecord.read(folder)
    assert str(info.value).startswith(str(folder / "results.json"))


def test_a_folder_without_a_record_is_an_os_error_and_not_finished(tmp_path):
    with pytest.raises(FileNotFoundError):
        RunRecord.read(tmp_path)
    assert RunFolder(tmp_path).recorded_status() is None and not RunFolder(tmp_path).is_finished()
    (tmp_path / "results.json").write_text('{"status": "extending", "config": {}}')
    assert RunFolder(tmp_path).recorded_status() == "extending" and not RunFolder(tmp_path).is_finished()


def test_run_config_resolves_relative_paths_from_where_the_run_started(tmp_path):
    config = RecordedConfig({"data_dir": "images", "base_dir": "../start", "method": "cutmix"})
    resolved = config.resolved(tmp_path / "run")
    assert Path(resolved["data_dir"]).resolve() == tmp_path.resolve() / "start" / "images"
    assert resolved.method == "cutmix" and RecordedConfig({"data_dir": "x"}).resolved(tmp_path)["data_dir"] == "x"
    assert RecordedConfig({"model": "m"}).missing_model_keys() == ["num_classes", "image_size", "mean", "std"]


@pytest.mark.skipif(not COMMITTED, reason="no committed runs in results/")
def test_every_committed_run_reads_and_is_skipped_as_finished_and_its_files_are_rewritten_byte_for_byte():
    """The layout and the record's JSON are those of every run written so far: the committed grids must still read,
    be skipped as finished by compare, and be what the writer writes today (names, keys, order, indentation)."""
    for run in COMMITTED:
        folder = RunFolder(run)
        record = RunRecord.read(folder)
        assert record.finished and record.weights == folder.weights and folder.config.is_file(), run
        assert record.config.missing_model_keys() == [] and record.finals.top1 is not None, run
        identity = json.loads((run / compare_mod.CELL_FILE).read_text())["identity"]
        assert compare_mod.cell_status(run, identity) == "finished", run
        raw = json.loads(folder.results.read_text())
        again = results_record(raw["config"], raw["curve"], raw["wall_time_s"])
        assert json.dumps(again, indent=2) == folder.results.read_text(), run
        assert "".join(_json_line(r) for r in record.curve) == folder.metrics.read_text(), run
