"""Bad input matrix for the mixers, the extractor and the CLI: each gets a clear error (or a documented,
tested handling), and nothing the user had is modified. Also: unwritable output folders, a disk that
fills up while a checkpoint is written, and replayed mixer params that do not fit."""
from __future__ import annotations

import errno
import os
import stat

import pytest
import torch
from PIL import Image

from _reliability_utils import RUN_OPTS, snapshot
from attentive_cutmix import AttentiveCutMix, CutMix, Cutout, MixUp, RandomCells
from attentive_cutmix.attention import load_extractor
from attentive_cutmix.cli import main as cli_main
from attentive_cutmix.serialization import CheckpointError
from attentive_cutmix.training import ConfigError, make_config, run_io, train

K = 5
MIXERS = {"attentive": lambda **kw: AttentiveCutMix(K, grid_size=4, num_patches=3, **kw),
          "cutmix": lambda **kw: CutMix(K, **kw), "mixup": lambda **kw: MixUp(K, **kw),
          "cutout": lambda **kw: Cutout(K, size=4, **kw)}
ROOT = os.geteuid() == 0 if hasattr(os, "geteuid") else False


def _batch(b=4, c=3, h=16, w=16):
    g = torch.Generator().manual_seed(0)
    return torch.rand(b, c, h, w, generator=g), torch.randint(0, K, (b,), generator=g), torch.rand(b, 4, 4, generator=g)


def _call(name, images, labels, attention=None, **kw):
    return MIXERS[name](**kw)(images, labels, attention if name == "attentive" else None,
                              generator=torch.Generator().manual_seed(1))


# --------------------------------------------------------------------------- mixers
# Bad images, labels, generators and replayed perms, and a batch of one, are checked for every registered method by
# check_mixer (tests/test_contract.py); what follows is specific to a method.
ATTENTION_CASES = {
    "on another device": (lambda a: a.to("meta"), ValueError, "attention is on meta but images are on cpu"),
    "NaN": (lambda a: a.index_put((torch.tensor([1]),), torch.tensor(float("nan"))), ValueError, "NaN or Inf"),
    "Inf": (lambda a: a.index_put((torch.tensor([2]),), torch.tensor(float("inf"))), ValueError, "NaN or Inf"),
    "wrong batch": (lambda a: a[:2], ValueError, "attention has batch size 2 but images has 4"),
    "integer": (lambda a: (a * 10).long(), TypeError, "attention must be a floating tensor"),
    "2-D": (lambda a: a[0], ValueError, r"attention must have shape \(B, h, w\)"),
}


@pytest.mark.parametrize("case", list(ATTENTION_CASES))
def test_attentive_cutmix_rejects_bad_attention(case):
    make, error, message = ATTENTION_CASES[case]
    x, y, a = _batch()
    bad = make(a)
    with pytest.raises(error, match=message):
        _call("attentive", x, y, bad)
    assert torch.equal(x, _batch()[0])


@pytest.mark.parametrize("kwargs,message", [
    (dict(grid_size=0), "grid_size must be a positive int"), (dict(grid_size=2.5), "grid_size must be a positive int"),
    (dict(num_patches=-1), r"num_patches must be an int in \[0, grid_size\*\*2\] = \[0, 16\]"),
    (dict(num_patches=17), r"\[0, 16\]"), (dict(num_patches=True), "num_patches"), (dict(prob=1.5), "prob must be in"),
    (dict(label_smoothing=1.0), "label_smoothing"), (dict(extractor=3), "extractor must be callable"),
])
def test_attentive_cutmix_rejects_bad_options(kwargs, message):
    opts = {"grid_size": 4, "num_patches": 3, **kwargs}
    with pytest.raises((ValueError, TypeError), match=message):
        AttentiveCutMix(K, **opts)


def test_grid_that_does_not_fit_the_image_is_refused():
    x, y, _ = _batch(h=6, w=16)
    with pytest.raises(ValueError, match="grid_size=7 does not fit images of size 6x16"):
        AttentiveCutMix(K, grid_size=7)(x, y, torch.rand(4, 7, 7))


@pytest.mark.parametrize("factory", [AttentiveCutMix, CutMix, MixUp, Cutout])
def test_unknown_or_misspelt_keyword_is_a_type_error_naming_it(factory):
    with pytest.raises(TypeError, match="num_patch"):
        factory(K, num_patch=3)
    with pytest.raises(ValueError, match="num_classes must be a positive int"):
        factory(0)


@pytest.mark.parametrize("name", ["attentive", "cutmix", "cutout"])
def test_non_finite_pixels_pass_through_only_where_their_image_is_copied(name):
    # Documented choice (RELIABILITY.md): mixers do not scan images for NaN/Inf (a full extra pass and a device
    # sync per batch); such pixels are copied like any other, and the trainer's loss check stops the run.
    x, y, a = _batch()
    x[2] = float("nan")
    x[3, :, :2] = float("inf")
    mixed, targets = _call(name, x, y, a)
    assert torch.isfinite(targets).all()
    clean = _batch()[0]
    mixed_clean, _ = _call(name, clean, y, a)
    # Same generator, same draws: every pixel that is not copied from image 2/3's bad pixels is unchanged.
    bad = ~torch.isfinite(mixed)
    assert torch.equal(mixed[~bad], mixed_clean[~bad])
    assert bad[2].any() or name == "cutout"


# --------------------------------------------------------------------------- extractor
@pytest.fixture(scope="module")
def extractor():
    return load_extractor("cifar_resnet20", input_size=16)


@pytest.mark.parametrize("images,message", [
    (torch.rand(3, 16, 16), r"floating \(B, C, H, W\) tensor"),
    (torch.zeros(2, 3, 16, 16, dtype=torch.uint8), "floating"),
    (torch.rand(2, 1, 16, 16), "images have 1 channels but the extractor normalises 3"),
    (torch.rand(2, 3, 16, 16, device="meta"), "images are on meta but the extractor is on cpu"),
])
def test_extractor_rejects_bad_images(extractor, images, message):
    with pytest.raises(ValueError, match=message):
        extractor(images)


def test_nan_images_give_nan_attention_which_attentive_cutmix_refuses(extractor):
    x, y, _ = _batch()
    x[1] = float("nan")
    mixer = AttentiveCutMix(K, extractor, grid_size=4, num_patches=3)
    with pytest.raises(ValueError, match="attention contains NaN or Inf"):
        mixer(x, y)


@pytest.mark.parametrize("kwargs,error,message", [
    (dict(input_size=0), ValueError, "input_size must be a positive int"),
    (dict(std=(0.0, 1.0, 1.0)), ValueError, "std > 0"),
    (dict(layer="nope"), ValueError, "layer='nope' is not a module"), (dict(inputsize=16), TypeError, "inputsize"),
    (dict(weights="/no/such/weights.safetensors"), CheckpointError,
     "weights file not found: /no/such/weights.safetensors"),
])
def test_extractor_rejects_bad_options(kwargs, error, message):
    with pytest.raises(error, match=message):
        load_extractor("cifar_resnet20", **kwargs)


# --------------------------------------------------------------------------- CLI and files
def _argv(out, **kw):
    argv = ["train", "--output-dir", str(out), "--no-progress"]
    for key, value in {**RUN_OPTS, "epochs": 1, "max_steps_per_epoch": 1, **kw}.items():
        argv += ["--" + key.replace("_", "-")] + ([] if value is True else [str(value)])
    return argv


@pytest.mark.parametrize("extra,message", [(["--lrr", "0.1"], "unrecognized arguments: --lrr"),
                                           (["--epochs", "two"], "argument --epochs: invalid int value: 'two'"),
                                           (["--method", "cutmixx"], "invalid choice: 'cutmixx'")])
def test_cli_unknown_flags_and_bad_values_exit_2_with_a_message(extra, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(_argv(tmp_path / "run") + extra)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_unknown_option_names_in_python_are_refused():
    with pytest.raises(ConfigError, match=r"unknown option\(s\) \['lrr'\].*valid keys"):
        make_config({"lrr": 0.1})


def _image_folder(root, *, n=6):
    for c, colour in enumerate(("red", "blue")):
        folder = root / f"class{c}"
        folder.mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (16, 16), colour).save(folder / f"{i}.jpg" if i % 2 else folder / f"{i}.png")
    return root


def _imagefolder_argv(data, out):
    argv = _argv(out, dataset="imagefolder", data_dir=str(data), val_fraction=0.25, image_size=16, batch_size=16)
    i = argv.index("--synthetic-size")
    return argv[:i] + argv[i + 2:]  # synthetic-only option


def test_missing_data_folder_or_a_file_is_a_clear_cli_error(tmp_path, capsys):
    for data, message in ((tmp_path / "no-such-folder", "does not exist"), (tmp_path / "file.txt", "is a file")):
        if data.suffix:
            data.write_text("x")
        assert cli_main(_imagefolder_argv(data, tmp_path / "out")) == 1
        err = capsys.readouterr().err
        assert str(data) in err and message in err and "Traceback" not in err


def test_unreadable_data_folder_is_a_clear_error(tmp_path, capsys, monkeypatch):
    data = _image_folder(tmp_path / "data")
    before = snapshot(data)
    if ROOT:  # root reads anything whatever the mode: simulate what a user without permission gets
        real_scandir = os.scandir

        def denied(path="."):
            if os.fspath(path) == str(data):
                raise PermissionError(errno.EACCES, "Permission denied", str(path))
            return real_scandir(path)

        monkeypatch.setattr(os, "scandir", denied)
    else:
        data.chmod(0)
    try:
        assert cli_main(_imagefolder_argv(data, tmp_path / "out")) == 1
    finally:
        data.chmod(stat.S_IRWXU)
        monkeypatch.undo()
    err = capsys.readouterr().err
    assert str(data) in err and "ermission" in err and "Traceback" not in err
    assert snapshot(data) == before


def test_non_image_files_are_skipped_and_a_corrupt_jpeg_is_named(tmp_path, capsys):
    data = _image_folder(tmp_path / "data")
    (data / "class0" / "notes.txt").write_text("not an image")
    (data / "class1" / ".DS_Store").write_bytes(b"\0\1\2")
    from attentive_cutmix.data import build_datasets

    train_ds, eval_ds, info = build_datasets("imagefolder", data_dir=data, val_fraction=0.25, image_size=16)
    assert len(train_ds) + len(eval_ds) == 12 and info.num_classes == 2  # only the 12 images count
    bad = data / "class1" / "99.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0" + b"garbage" * 20)  # a JPEG header, then nothing decodable
    before = snapshot(data)
    assert cli_main(_imagefolder_argv(data, tmp_path / "out")) == 1
    err = capsys.readouterr().err
    assert "cannot decode image file" in err and str(bad) in err and "Traceback" not in err
    assert snapshot(data) == before


# --------------------------------------------------------------------------- output folder and disk
def test_read_only_output_dir_fails_before_training(tmp_path, monkeypatch):
    out = tmp_path / "ro"
    out.mkdir()
    if ROOT:  # root may write anywhere: simulate the refusal the write test meets
        def refuse(*args, **kwargs):
            raise OSError(errno.EROFS, "Read-only file system")

        monkeypatch.setattr(run_io.tempfile, "NamedTemporaryFile", refuse)
    else:
        out.chmod(stat.S_IRUSR | stat.S_IXUSR)
    started = []
    monkeypatch.setattr("attentive_cutmix.training.trainer.prepare_data", lambda *a, **k: started.append(1))
    try:
        with pytest.raises(ConfigError, match=r"--output-dir .*ro is not writable"):
            train(make_config({**RUN_OPTS, "output_dir": str(out), "progress": False}))
    finally:
        out.chmod(stat.S_IRWXU)
    assert not started and list(out.iterdir()) == []


def test_disk_full_during_a_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    assert cli_main(_argv(out)) == 0
    before = snapshot(out)
    real_save = torch.save

    def fill_disk(obj, f, *args, **kwargs):
        if ".checkpoint.pt." in str(f):
            real_save(obj, f, *args, **kwargs)
            with open(f, "r+b") as fh:
                fh.truncate(os.path.getsize(f) // 2)  # half of it made it to disk
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", fill_disk)
    assert cli_main(_argv(out, epochs=2, resume=True)) == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err and str(out / "checkpoint.pt") in err and "--resume" in err
    assert "Traceback" not in err
    assert snapshot(out)["checkpoint.pt"] == before["checkpoint.pt"]
    assert not list(out.glob(".checkpoint.pt.*.tmp"))  # the temp file was cleaned up


def _images_labels(b=4, h=16, w=16):
    return torch.rand(b, 3, h, w), torch.arange(b) % 3


@pytest.mark.parametrize("mixer", [CutMix(3), MixUp(3), RandomCells(3, grid_size=4, num_patches=2)])
def test_replayed_params_must_match_the_mixer_and_the_batch(mixer):
    images, labels = _images_labels()
    good = mixer.make_params(4, 16, 16, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="params must be the dict of"):
        mixer(images, labels, params={"perm": good["perm"]} if len(good) > 1 else {**good, "extra": good["perm"]})
    with pytest.raises(ValueError, match=r"params\['perm'\] must be a tensor with one row per image \(4\)"):
        mixer(images, labels, params={**good, "perm": good["perm"][:2]})


def test_bad_generator_prob_masks_and_empty_attention_are_named():
    images, labels = _images_labels()
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        CutMix(3)(images, labels, generator=0)
    with pytest.raises(ValueError, match="prob must be in"):
        CutMix(3, prob=None)
    with pytest.raises(ValueError, match=r"masks must have shape \(B, H, W\)=\(4, 16, 16\)"):
        CutMix(3)(images, labels, masks=torch.zeros(4, 8, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="MixUp blends whole images"):
        MixUp(3)(images, labels, masks=torch.zeros(4, 16, 16, dtype=torch.long))
    with pytest.raises(ValueError, match="attention has no values"):
        AttentiveCutMix(3, grid_size=4)(images, labels, attention=torch.rand(4, 0, 4, 4))
    mixed, targets, masks = Cutout(3, size=4, ignore_index=255)(
        images, labels, masks=torch.zeros(4, 16, 16, dtype=torch.long), generator=torch.Generator().manual_seed(1))
    assert (masks == 255).sum(dim=(1, 2)).tolist() == (mixed == 0).all(1).sum(dim=(1, 2)).tolist()
