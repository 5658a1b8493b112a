"""`attentive-cutmix train` option handling: YAML + flags precedence, presets, refusals of options that don't apply."""
from __future__ import annotations

import json

import pytest

from attentive_cutmix.cli import main
from attentive_cutmix.cli.train import add_arguments, config_from_args
from attentive_cutmix.training import config as config_mod
from attentive_cutmix.training.config import ConfigError, make_config


def _parse(argv):
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return config_from_args(parser.parse_args(argv))


def test_flags_override_the_yaml_file(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text("method: cutmix\nalpha: 0.5\nepochs: 7\nbatch-size: 16\nlr: 0.01\n")
    cfg = _parse(["--config", str(f), "--epochs", "3", "--lr", "0.2"])
    assert (cfg.method, cfg.mixing.options.alpha, cfg.batch_size) == ("cutmix", 0.5, 16)  # from the file
    assert (cfg.epochs, cfg.lr) == (3, 0.2)  # flags win
    options = cfg.mixing.options
    assert options.prob == 1.0 and not hasattr(options, "num_patches")  # only the method's own options
    flat = cfg.to_dict()  # recorded flat, None where an option does not apply, as runs always recorded them
    assert (flat["alpha"], flat["prob"], flat["num_patches"]) == (0.5, 1.0, None)


def test_unknown_key_in_the_file_lists_valid_keys(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text("epochs: 2\nnum_pathces: 3\n")
    with pytest.raises(ConfigError, match=r"num_pathces.*valid keys:.*num_patches"):
        _parse(["--config", str(f)])


def test_preset_sets_the_paper_values_and_flags_still_win():
    cfg = _parse(["--preset", "paper-cifar100", "--epochs", "5"])
    assert (cfg.dataset, cfg.epochs, cfg.batch_size, cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.init) == \
        ("cifar100", 5, 32, "adam", 1e-3, 1e-5, "xavier")
    assert make_config({"preset": "paper-cifar10"}).epochs == 80
    imagenet = make_config({"preset": "paper-imagenet", "model": "efficientnet_b0"})
    assert (imagenet.epochs, imagenet.batch_size) == (180, 64)
    assert make_config({"preset": "paper-imagenet", "model": "resnet50"}).epochs == 100


@pytest.mark.parametrize("argv,flag", [
    (["--method", "cutmix", "--num-patches", "3"], "--num-patches"),
    (["--method", "mixup", "--cutout-size", "8"], "--cutout-size"),
    (["--method", "none", "--alpha", "0.4"], "--alpha"),
    (["--method", "cutout", "--extractor", "resnet50"], "--extractor"),
    (["--optimizer", "adam", "--momentum", "0.9"], "--momentum"),
    (["--schedule", "cosine", "--step-size", "3"], "--step-size"),
])
def test_options_that_do_not_apply_are_refused(argv, flag):
    with pytest.raises(ConfigError, match=flag):
        _parse(argv)


def test_attentive_cutmix_without_attention_source_explains_both_options():
    with pytest.raises(ConfigError, match=r"--extractor.*--attention-cache"):
        _parse(["--method", "attentive-cutmix"])
    cfg = _parse(["--method", "attentive-cutmix", "--attention-cache", "maps.cache"])
    assert (cfg.mixing.options.num_patches, cfg.mixing.options.grid_size) == (6, 7)


@pytest.mark.parametrize("argv,needle", [(["--epochs", "0"], "epochs"), (["--lr", "-1"], "lr"),
                                         (["--val-fraction", "1.5"], "val_fraction"),
                                         (["--prob", "2", "--method", "mixup"], "prob")])
def test_bad_values_name_the_option(argv, needle):
    with pytest.raises(ConfigError, match=needle):
        _parse(argv)


def test_cli_reports_errors_without_traceback_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["train", "--model", "resnet_nope", "--output-dir", str(out), "--synthetic-size", "64", "--workers", "0"])
    err = capsys.readouterr().err
    assert rc == 1 and "resnet_nope" in err and "cifar_resnet20" in err and "Traceback" not in err
    assert not (out / "checkpoint.pt").exists()


def test_cli_train_runs_end_to_end(tmp_path, capsys):
    out = tmp_path / "out"
    f = tmp_path / "run.yaml"
    f.write_text("dataset: synthetic\nsynthetic_size: 96\nbatch_size: 32\nworkers: 0\nprogress: false\n")
    rc = main(["train", "--config", str(f), "--epochs", "1", "--max-steps-per-epoch", "2", "--method", "cutout",
               "--cutout-size", "8", "--output-dir", str(out)])
    assert rc == 0, capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["cutout_size"] == 8 and results["config"]["synthetic_size"] == 96
    assert results["epochs"] == 1 and 0 <= results["top1"] <= 100
    # The written config.yaml resumes the run: resolving it again gives the same options.
    again = make_config({}, config_file=out / "config.yaml")
    assert {k: v for k, v in again.to_dict().items() if k != "resume"} == \
        {k: v for k, v in results["config"].items() if k in config_mod.config_keys() and k != "resume"}
    assert main(["train", "--config", str(out / "config.yaml"), "--resume"]) == 0  # already finished: rewrites results


def test_training_seed_does_not_move_the_held_out_split():
    from attentive_cutmix.training.config import make_config

    base = dict(dataset="synthetic", synthetic_size=[200, 20], val_fraction=0.2)
    fingerprints = [make_config({**base, **extra}).data.datasets()[2].train_fingerprint
                    for extra in ({"seed": 0}, {"seed": 5}, {"seed": 0, "split_seed": 1}, {"train_subset": 80})]
    assert fingerprints[0] == fingerprints[1]
    assert len(set(fingerprints[1:])) == 3


@pytest.mark.slow
def test_a_reader_that_leaves_early_gets_no_traceback():
    # `attentive-cutmix compare GRID --list | head -1`: the pipe closes before the listing is written.
    import subprocess
    import sys
    from pathlib import Path

    grid = Path(__file__).resolve().parents[1] / "configs" / "results" / "cifar10-jpeg-converged.yaml"
    proc = subprocess.Popen([sys.executable, "-m", "attentive_cutmix", "compare", str(grid), "--list"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # before the interpreter has even imported the package
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=120) == 141, err
    assert "Traceback" not in err and "BrokenPipeError" not in err, err


def test_timm_train_flags_work_with_timms_meaning():
    cfg = _parse(["--opt", "sgd", "--sched", "cosine", "--model-ema-decay", "0.999", "-b", "8", "-j", "0",
                  "--img-size", "24", "--smoothing", "0.1"])
    assert (cfg.optimizer, cfg.nesterov, cfg.schedule, cfg.ema_decay, cfg.batch_size, cfg.workers, cfg.image_size,
            cfg.label_smoothing) == ("sgd", True, "cosine", 0.999, 8, 0, 24, 0.1)  # timm's sgd is Nesterov
    assert (_parse(["--opt", "momentum"]).nesterov, _parse(["--opt", "adamw"]).optimizer) == (False, "adamw")
    assert _parse(["--model-ema"]).ema_decay == 0.9998  # timm's default decay
    assert _parse(["--model-ema-decay", "0.99", "--model-ema"]).ema_decay == 0.99


def test_timm_model_ema_keeps_a_decay_from_the_config_file(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text("ema-decay: 0.95\n")
    assert _parse(["--config", str(f), "--model-ema"]).ema_decay == 0.95


@pytest.mark.parametrize("argv,instead", [
    (["--min-lr", "1e-5"], "cosine decays the lr to 0"),
    (["--warmup-lr", "1e-6"], "--warmup-epochs"),
    (["--pretrained"], "pretrained=True"),
    (["--initial-checkpoint", "w.pth"], "--resume"),
    (["--drop-path", "0.1"], "drop_path_rate"),
    (["--grad-accum-steps", "4"], "--batch-size"),
    (["--checkpoint-hist", "3"], "weights_best.safetensors"),
])
def test_timm_train_flags_we_do_not_take_are_refused_with_what_to_use(argv, instead, capsys):
    with pytest.raises(SystemExit) as exit_:
        _parse(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and f"{argv[0]} (timm's train.py) is not supported here" in err and instead in err
