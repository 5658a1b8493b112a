"""No untrusted unpickling: a planted malicious pickle is refused everywhere a file is loaded (--resume,
--extractor CHECKPOINT, --extractor-weights, --attention-cache) and its code never runs; truncated, corrupt
and foreign files give a CheckpointError/CacheError naming the file, never a traceback from inside torch."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from _reliability_utils import RUN_OPTS, payload_is_live, plant_malicious_pickle, snapshot
from attentive_cutmix.attention import load_extractor
from attentive_cutmix.attention.cache import CacheError, open_cache
from attentive_cutmix.cli import main as cli_main
from attentive_cutmix.serialization import CheckpointError, load_state_dict_file, safe_torch_load
from attentive_cutmix.training import make_config, train
from attentive_cutmix.training.checkpoint import load_checkpoint

SMALL = {**RUN_OPTS, "epochs": 1, "max_steps_per_epoch": 1}


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("good") / "run"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(make_config({**SMALL, "output_dir": str(out), "progress": False}))
    finally:
        torch.set_num_threads(before)
    return out / "checkpoint.pt"


def _argv(out, **kw):
    argv = ["train", "--output-dir", str(out), "--no-progress"]
    for key, value in {**SMALL, **kw}.items():
        argv += ["--" + key.replace("_", "-")] + ([] if value is True else [str(value)])
    return argv


def _attentive(spec_key: str, path) -> dict:
    extra = ({"extractor": "cifar_resnet20", "extractor_weights": str(path)} if spec_key == "weights"
             else {"extractor": str(path)})
    return {"method": "attentive-cutmix", "grid_size": 4, "num_patches": 2, **extra}


def _cli_refuses(argv, path, capsys, *words) -> str:
    assert cli_main(argv) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and str(path) in err, err
    for word in words:
        assert word in err, err
    return err


def test_the_planted_payload_really_runs_code_when_loaded_unsafely(tmp_path):
    assert payload_is_live(tmp_path)  # so the refusals below are refusals of live code


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("zip_format", [True, False], ids=["torch-zip", "raw-pickle"])
@pytest.mark.parametrize("where", ["resume", "extractor", "extractor-weights", "attention-cache"])
def test_malicious_pickle_is_refused_and_never_runs(where, zip_format, tmp_path, capsys):
    marker = tmp_path / "pwned"
    out = tmp_path / "run"
    if where == "resume":
        out.mkdir()
        evil = plant_malicious_pickle(out / "checkpoint.pt", marker, zip_format=zip_format)
        argv = _argv(out, resume=True)
    elif where == "attention-cache":
        evil = plant_malicious_pickle(tmp_path / "attention.safetensors", marker, zip_format=zip_format)
        argv = _argv(out, method="attentive-cutmix", attention_cache=str(evil), grid_size=4, num_patches=2)
    else:
        evil = plant_malicious_pickle(tmp_path / "evil.pt", marker, zip_format=zip_format)
        argv = _argv(out, **_attentive("weights" if where == "extractor-weights" else "ckpt", evil))
    before = evil.read_bytes()
    _cli_refuses(argv, evil, capsys)
    assert not marker.exists(), "the pickle's code ran"
    assert evil.read_bytes() == before and not (out / "results.json").exists()


@pytest.mark.parametrize("loader,error", [(safe_torch_load, CheckpointError), (load_state_dict_file, CheckpointError),
                                          (load_checkpoint, CheckpointError), (load_extractor, CheckpointError),
                                          (open_cache, CacheError)])
def test_library_loaders_refuse_the_payload(loader, error, tmp_path):
    marker = tmp_path / "pwned"
    evil = plant_malicious_pickle(tmp_path / "evil.pt", marker)
    with pytest.raises(error, match="evil.pt"):
        loader(evil)
    assert not marker.exists()


def _truncated(src, dst):
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) // 2])
    return dst


def _corrupt(src, dst):
    data = bytearray(src.read_bytes())
    for i in range(len(data) // 3, len(data) // 3 + 4096):
        data[i] ^= 0xFF  # flip a block in the middle (tensor bytes and/or zip records)
    dst.write_bytes(bytes(data))
    return dst


FOREIGN = {
    "tensor": torch.zeros(3),
    "list": [1, 2, 3],
    "state-dict": {"fc.weight": torch.zeros(2, 2)},
    "config-not-a-dict": {"model": {}, "optimizer": {}, "epoch": 0, "config": "cifar_resnet20"},
    "model-not-a-dict": {"model": [1], "optimizer": {}, "epoch": 0, "config": {"model": "cifar_resnet20"}},
}


def _bad_files(good, tmp_path):
    yield "truncated", _truncated(good, tmp_path / "truncated.pt")
    for kind, content in (("empty", b""), ("text", b"not a checkpoint\n")):
        (tmp_path / f"{kind}.pt").write_bytes(content)
        yield kind, tmp_path / f"{kind}.pt"
    for name, obj in FOREIGN.items():
        torch.save(obj, tmp_path / f"foreign-{name}.pt")
        yield f"foreign-{name}", tmp_path / f"foreign-{name}.pt"


@pytest.mark.parametrize("where", ["resume", "extractor", "extractor-weights"])
def test_truncated_corrupt_or_foreign_files_give_a_clear_error(where, good_checkpoint, tmp_path, capsys):
    bad = dict(_bad_files(good_checkpoint, tmp_path))
    corrupt = _corrupt(good_checkpoint, tmp_path / "corrupt.pt")
    try:  # a flipped block may land in padding that torch never reads; only a file torch rejects is "corrupt"
        safe_torch_load(corrupt)
    except CheckpointError:
        bad["corrupt"] = corrupt
    for kind, path in bad.items():
        out = tmp_path / f"run-{where}-{kind}"
        if where == "resume":
            out.mkdir()
            (out / "checkpoint.pt").write_bytes(path.read_bytes())
            path = out / "checkpoint.pt"
            argv = _argv(out, resume=True)
        else:
            argv = _argv(out, **_attentive("weights" if where == "extractor-weights" else "ckpt", path))
        before = path.read_bytes()
        _cli_refuses(argv, path, capsys)
        assert path.read_bytes() == before, kind


def test_truncated_or_foreign_safetensors_weights_give_a_clear_error(good_checkpoint, tmp_path):
    weights = tmp_path / "w.safetensors"
    save_file(load_state_dict_file(good_checkpoint), str(weights))
    load_extractor("cifar_resnet20", weights=weights, input_size=16)  # the good file loads
    with pytest.raises(CheckpointError, match="truncated.safetensors"):
        load_extractor("cifar_resnet20", weights=_truncated(weights, tmp_path / "truncated.safetensors"),
                         input_size=16)
    save_file({"fc.weight": torch.zeros(3, 3)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(CheckpointError, match="foreign.safetensors.*missing keys"):
        load_extractor("cifar_resnet20", weights=tmp_path / "foreign.safetensors", num_classes=3, input_size=16)


def test_corrupt_attention_cache_is_refused_through_the_cli(good_checkpoint, tmp_path, capsys):
    cache = tmp_path / "cache.safetensors"
    save_file({"attention": torch.zeros(4, 2, 2, dtype=torch.float16)}, str(cache))  # valid safetensors, no header
    before = snapshot(tmp_path)
    _cli_refuses(_argv(tmp_path / "run", method="attentive-cutmix", attention_cache=str(cache), grid_size=4,
                       num_patches=2), cache, capsys)
    truncated = _truncated(cache, tmp_path / "truncated.safetensors")
    _cli_refuses(_argv(tmp_path / "run2", method="attentive-cutmix", attention_cache=str(truncated), grid_size=4,
                       num_patches=2), truncated, capsys)
    assert {k: v for k, v in snapshot(tmp_path).items() if k in before} == before


def test_atomic_write_gives_files_the_usual_permissions(tmp_path):
    import os
    from pathlib import Path

    from attentive_cutmix.serialization import atomic_write

    umask = os.umask(0o022)
    try:
        path = atomic_write(tmp_path / "f.txt", lambda tmp: Path(tmp).write_text("x"))
    finally:
        os.umask(umask)
    assert path.read_text() == "x" and (path.stat().st_mode & 0o777) == 0o644
