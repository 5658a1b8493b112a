"""load_extractor: one builder for names, weights files, training checkpoints and modules, each file read once;
its ExtractorSource is what the cache header stores and compares field by field."""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file
from torch.utils.data import TensorDataset

from attentive_cutmix import constants
from attentive_cutmix.attention import (
    ExtractorSource,
    FeatureExtractor,
    NotATrainingCheckpointError,
    load_extractor,
)
from attentive_cutmix.attention.cache import (
    CacheMismatchError,
    build_cache,
    cache_meta,
    open_cache,
)
from attentive_cutmix.attention.source import ExtractorSpec
from attentive_cutmix.models import create_model
from attentive_cutmix.serialization import CheckpointError
from attentive_cutmix.training.config import ConfigError

MEAN, STD = (0.1, 0.2, 0.3), (0.4, 0.5, 0.6)


def _info(n: int = 4) -> SimpleNamespace:
    return SimpleNamespace(name="synthetic", image_size=32, train_fingerprint="f" * 64, num_train=n, mean=MEAN, std=STD)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("extractors")
    torch.manual_seed(0)
    net = create_model("cifar_resnet20", num_classes=10, image_size=32)
    weights = root / "r20.safetensors"
    save_file(net.state_dict(), str(weights))
    ckpt = root / "checkpoint.pt"
    config = {"model": "cifar_resnet20", "num_classes": 10, "image_size": 32, "mean": list(MEAN), "std": list(STD)}
    torch.save({"model": {f"module.{k}": v for k, v in net.state_dict().items()}, "optimizer": {}, "epoch": 1,
                "config": config}, ckpt)
    foreign = root / "foreign.pt"
    torch.save(net.state_dict(), foreign)
    return SimpleNamespace(net=net, weights=weights, ckpt=ckpt, foreign=foreign, root=root)


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_each_spec_kind_builds_an_extractor_with_its_source(files):
    by_name = load_extractor("cifar_resnet20")
    assert by_name.source == ExtractorSource("name", "cifar_resnet20") and by_name.input_size == 32
    by_weights = load_extractor("cifar_resnet20", weights=files.weights)
    assert by_weights.source == ExtractorSource("weights", "cifar_resnet20", str(files.weights.resolve()),
                                                _sha(files.weights))
    assert torch.equal(by_weights.model.linear.weight, files.net.linear.weight)
    by_ckpt = load_extractor(files.ckpt)
    assert by_ckpt.source == ExtractorSource("checkpoint", "cifar_resnet20", str(files.ckpt.resolve()),
                                             _sha(files.ckpt))
    assert by_ckpt.input_size == 32 and by_ckpt.mean.flatten().tolist() == pytest.approx(MEAN)
    assert torch.equal(by_ckpt.model.linear.weight, files.net.linear.weight)  # DDP prefixes stripped
    by_module = load_extractor(files.net, input_size=40, mean=(0.5,) * 3, std=(0.25,) * 3)
    assert by_module.source == ExtractorSource("module", "CifarResNet") and by_module.input_size == 40
    # The same images give the same maps whichever way the same weights came in.
    images = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(by_weights(images), FeatureExtractor(files.net, input_size=32)(images))


def test_every_file_is_loaded_once(files, monkeypatch):
    calls = []
    real = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **kw: calls.append(a[0]) or real(*a, **kw))
    load_extractor(files.ckpt)
    assert len(calls) == 1
    ext = ExtractorSpec(str(files.ckpt)).build(image_size=_info().image_size, device=torch.device("cpu"))
    assert len(calls) == 2 and ext.source.kind == "checkpoint"  # the trainer's spec too (it loaded it twice)
    assert ext.mean.flatten().tolist() == pytest.approx(MEAN) and ext.input_size == 32


def test_bad_specs_are_clear_errors(files, tmp_path):
    with pytest.raises(NotATrainingCheckpointError, match="not a checkpoint written by"):
        load_extractor(files.foreign)
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_extractor(tmp_path / "missing.ckpt")
    with pytest.raises(ValueError, match="own weights"):
        load_extractor(files.ckpt, weights=files.weights)
    with pytest.raises(ValueError, match="apply to a model name"):
        load_extractor(files.net, pretrained=True)
    with pytest.raises(ValueError, match="input_size"):
        load_extractor("cifar_resnet20", input_size=0)
    with pytest.raises(TypeError, match="spec must be"):
        load_extractor(3)
    with pytest.raises(ValueError, match="kind must be one of"):
        ExtractorSource("file", "x")
    with pytest.raises(ValueError, match="takes path and sha256 both"):
        ExtractorSource("weights", "x")
    # The trainer's spec keeps its flag-worded messages.
    with pytest.raises(ConfigError, match="--extractor .* is not a checkpoint written by"):
        ExtractorSpec(str(files.foreign)).build(image_size=32, device=torch.device("cpu"))
    with pytest.raises(ConfigError, match="--extractor checkpoint not found"):
        ExtractorSpec("gone.pt").build(image_size=32, device=torch.device("cpu"))
    with pytest.raises(ConfigError, match="own weights; drop --extractor-weights"):
        ExtractorSpec(str(files.ckpt), weights=str(files.weights))


def test_cache_header_stores_the_source_field_by_field(files, tmp_path):
    ext = load_extractor("cifar_resnet20", weights=files.weights)
    meta = cache_meta(_info(), ext, "cifar_resnet20")
    assert (meta["source_kind"], meta["source_name"], meta["source_path"], meta["weights_sha256"]) == \
        ("weights", "cifar_resnet20", str(files.weights.resolve()), _sha(files.weights))
    path = build_cache(TensorDataset(torch.rand(4, 3, 32, 32)), ext, tmp_path / "c.safetensors", meta=meta,
                       progress=False).path
    # The same file moved elsewhere is the same weights.
    moved = tmp_path / "elsewhere.safetensors"
    shutil.copy(files.weights, moved)
    open_cache(path, expect=cache_meta(_info(), load_extractor("cifar_resnet20", weights=moved), "cifar_resnet20"))
    # The same weights from the training checkpoint are another source: named field by field.
    ckpt_ext = load_extractor(files.ckpt, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    with pytest.raises(CacheMismatchError) as err:
        open_cache(path, expect=cache_meta(_info(), ckpt_ext, str(files.ckpt)))
    msg = str(err.value)
    assert "source_kind: expected 'checkpoint', found 'weights'" in msg and "weights_sha256" in msg
    assert f"extractor: expected {str(files.ckpt)!r}, found 'cifar_resnet20'" in msg
    for same in ("source_name", "source_path", "mean", "input_size"):  # where the files lie is no difference
        assert same not in msg, same
    # A checkpoint moved elsewhere and named by its new path is the same extractor.
    ckpt_meta = cache_meta(_info(), ckpt_ext, str(files.ckpt))
    ckpt_cache = build_cache(TensorDataset(torch.rand(4, 3, 32, 32)), ckpt_ext, tmp_path / "k.safetensors",
                             meta=ckpt_meta, progress=False)
    moved_ckpt = tmp_path / "moved.ckpt"
    shutil.copy(files.ckpt, moved_ckpt)
    moved_ext = load_extractor(moved_ckpt, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    open_cache(ckpt_cache.path, expect=cache_meta(_info(), moved_ext, str(moved_ckpt)))


def test_headers_written_before_extractor_source_are_still_read(files, tmp_path):
    ext = load_extractor("cifar_resnet20", weights=files.weights)
    new = cache_meta(_info(), ext, "cifar_resnet20")
    old = {k: v for k, v in new.items() if k not in ("source_kind", "source_name", "source_path", "attention")}
    old["extractor_source"] = f"weights:{files.weights.resolve()}"
    path = tmp_path / "old.safetensors"
    build_cache(TensorDataset(torch.rand(4, 3, 32, 32)), ext, path, meta=old, progress=False)
    assert "source_kind" not in json.dumps(open_cache(path).meta)
    open_cache(path, expect=new)
    with pytest.raises(CacheMismatchError, match="source_name: expected 'cifar_resnet32'"):
        open_cache(path, expect=dict(new, source_name="cifar_resnet32"))
    with pytest.raises(CacheMismatchError, match="attention: expected 'cls_token'"):
        open_cache(path, expect=dict(new, attention="cls_token"))


@pytest.mark.slow
def test_constants_are_defined_once_and_the_attention_module_imports_no_model_zoo():
    from attentive_cutmix import attention
    from attentive_cutmix.data import datasets

    assert attention.IMAGENET_MEAN is constants.IMAGENET_MEAN and attention.IMAGENET_STD is constants.IMAGENET_STD
    assert datasets.IMAGENET_STATS == (constants.IMAGENET_MEAN, constants.IMAGENET_STD)
    code = ("import sys, attentive_cutmix.attention, attentive_cutmix.attention.cache; "
            "print(sorted(m for m in sys.modules if m == 'timm' or m.startswith('torchvision.models')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("dtype", [torch.int8, torch.bool])
def test_extractor_weights_of_a_non_float_dtype_are_refused(tmp_path, dtype):
    from attentive_cutmix import load_extractor
    from attentive_cutmix.models import create_model
    from attentive_cutmix.serialization import CheckpointError

    model = create_model("cifar_resnet20", 10, 32)
    state = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    path = tmp_path / "r20-int.safetensors"
    save_file(state, str(path))
    with pytest.raises(CheckpointError, match=rf"non-floating values for floating weights.*{dtype}"):
        load_extractor("cifar_resnet20", weights=path, input_size=32)


def test_a_module_with_input_size_none_keeps_the_batch_size_as_feature_extractor_does():
    # load_extractor(module, input_size=None) used to resize to 224: 32 px batches ran 7.7x slower in the
    # Lightning example. Now it means what FeatureExtractor(module, input_size=None) means: no resize.
    seen = []
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU())
    net.register_forward_pre_hook(lambda _m, args: seen.append(tuple(args[0].shape[-2:])))
    images = torch.rand(2, 3, 32, 32)
    loaded, direct = load_extractor(net, input_size=None), FeatureExtractor(net, input_size=None)
    assert loaded.input_size is None and direct.input_size is None
    torch.testing.assert_close(loaded(images), direct(images))
    assert seen and set(seen) == {(32, 32)}
    assert load_extractor(net, input_size=64).input_size == 64  # an explicit size still resizes
    assert load_extractor("cifar_resnet20").input_size == 32  # and a name keeps its own size


def test_the_lightning_example_extracts_at_the_batch_size():
    pytest.importorskip("lightning")
    from attentive_cutmix.examples.lightning_module import MixedClassifier

    assert MixedClassifier().mixer.extractor.input_size is None
