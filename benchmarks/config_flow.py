"""How the run's config travels through ``train``: modules passed, trips back up a layer, re-entries (issue 20).

Definition. ``train(cfg)`` runs a tiny synthetic config under ``sys.setprofile``. A *config call* is a call
event of a function defined in an ``attentive_cutmix`` module whose arguments, at call time, hold the run's
config: the ``TrainConfig`` itself, an object with it as an attribute (``self.cfg``), a tuple/list/dict holding it,
or the very value of one of its fields. Fields are followed by identity: strings (copied first, so no interned
literal elsewhere matches), lists and the method's options object; ``None``/bools/numbers cannot be told apart
by identity and values computed from a field (``Path(cfg.output_dir)``) are new values, so neither is followed.
Its *caller* is the nearest ``attentive_cutmix`` frame below it; calls within one module are dropped.
The flow's *path* is, in time order, each cross-module config call's caller (when the flow is not already there:
it came back up, or went on through calls that carry nothing of the config) then its callee.
  modules passed: the distinct modules on the path;
  trips back up a layer: steps of the path into a higher layer (``LAYERS``; 0 is the top): the config went down
    and the flow came back up to carry it down again (a call from a lower layer into a higher one is one too);
  re-entries: cross-module config calls into a module already on the path (it was entered and left before).
Issue 20's done-when, on the main path: <= 4 trips back up and <= 7 re-entries. Main path: attentive-cutmix on the
device path, online extractor from a run's checkpoint (``--extractor run/checkpoint.pt``). The committed studies
name their extractor with a weights file and cache its maps (``configs/results``): that path reads the weights file
before it can build the network it fills, one trip up more (measured below, not the done-when).

    PYTHONPATH=src python benchmarks/config_flow.py      # five paths, ~15 s on one core
    (tests/test_config_flow.py asserts the done-when on the main path)

Measured (modules / trips up / re-entries), before (a34d2fe) -> after issue 20's restructuring:
  main path                      10/8/10 (registry 3, components 3, attention, data_setup, config, mixing 1)
                              -> 10/4/4  (config, components, registry, mixing 1)
  extractor name + weights file  11/9/13 -> 11/5/7 (serialization, config, factory, cifar_resnet, components,
                                 registry, mixing 1)
  as the studies (name + weights, cache built first)  12/11/14 -> 12/6/7 (the same 7; the cache header is a 6th
                                 descent from training/)
  loader path 10/8/10 -> 10/4/4    cutmix 9/6/8 -> 9/3/2.  No call from a lower layer into a higher one, ever.
Issue 30 (sections, attention as a type; 2026-12-06, this machine): the config is five frozen sections; a flat read
(``cfg.lr``, ``TrainConfig.__getattr__``) is an attribute, not a call passing the config on, so it is not counted;
the attention specs the mixing section makes at validation are followed as the config (they are its values).
  main path   10/4/4 -> 12/3/0      extractor name + weights file 11/5/7 -> 13/4/3
  as the studies 12/6/7 -> 14/5/3   loader path 10/4/4 -> 12/3/0     cutmix 9/3/2 -> 10/2/0
  (two more modules: training/sections.py, attention_source.py; the attention question is answered once, when
  the config is made, and resolved once in data set-up)
"""
from __future__ import annotations

import os
import sys
import tempfile
from collections import Counter

import torch
from safetensors.torch import save_file

from attentive_cutmix.models import create_model
from attentive_cutmix.training import make_config
from attentive_cutmix.training.config import TrainConfig, validate
from attentive_cutmix.training.sections import SECTIONS
from attentive_cutmix.training.trainer import train

PACKAGE = "attentive_cutmix."
READS = {TrainConfig.__getattr__.__code__, TrainConfig.get.__code__, TrainConfig.fields.__code__}
LAYERS = {"cli": 0, "experiments": 1, "training": 2,
          "data": 3, "models": 3, "registry": 3, "mixers": 3, "attention": 3, "attention_source": 3, "cache": 3,
          "serialization": 4, "constants": 4, "errors": 4}
BASE = dict(dataset="synthetic", synthetic_size=[16, 8], image_size=16, model="cifar_resnet20", epochs=1,
            max_steps_per_epoch=1, batch_size=8, workers=0, progress=False, data_path="device")
ATTENTIVE = dict(method="attentive-cutmix", extractor="CHECKPOINT", grid_size=4, num_patches=3)
PATHS = {"attentive-cutmix, device path, online extractor from a run's checkpoint (main)": ATTENTIVE,
         "attentive-cutmix, device path, online extractor from a name and a weights file":
             {**ATTENTIVE, "extractor": "cifar_resnet20", "extractor_weights": "WEIGHTS"},
         "attentive-cutmix, device path, name + weights file, attention cache built first (as the studies)":
             {**ATTENTIVE, "extractor": "cifar_resnet20", "extractor_weights": "WEIGHTS", "attention_cache": "maps.bin",
              "build_cache": True},
         "attentive-cutmix, loader path, online extractor": {**ATTENTIVE, "data_path": "loader"},
         "cutmix, device path": {"method": "cutmix"}}


def _name(module: str) -> str:
    return module[len(PACKAGE):].replace(".", "/") + ".py"


def layer(name: str) -> int:
    return LAYERS[name.split("/")[0].removesuffix(".py")]


class Flow:
    """The profile hook: records ``(caller, callee, function)`` of each cross-module config call."""

    def __init__(self, cfg) -> None:
        self.cfg, self.calls = cfg, []
        # The sections and every option's value (the method's options object among them), by identity.
        # The sections, the attention specs the mixing section made, and every option's value (the method's options
        # object among them), by identity.
        self.values = [getattr(cfg, s) for s in SECTIONS] + [
            v for v in (*cfg.fields().values(), cfg.mixing.options, cfg.mixing.extractor_spec, cfg.mixing.cache_spec)
            if not isinstance(v, (bool, int, float, type(None)))]

    def _holds(self, value) -> bool:
        if value is self.cfg or any(value is v for v in self.values):
            return True
        inner = value.values() if isinstance(value, dict) else value if isinstance(value, (tuple, list)) else \
            vars(value).values() if hasattr(value, "__dict__") and not isinstance(value, torch.nn.Module) else ()
        return any(v is self.cfg for v in inner)

    def __call__(self, frame, event, arg) -> None:
        module = frame.f_globals.get("__name__", "")
        if event != "call" or not module.startswith(PACKAGE):
            return
        code = frame.f_code
        if code in READS:  # a flat read (cfg.lr is cfg.optim.lr): an attribute, not a call passing the config on
            return
        n = code.co_argcount + code.co_kwonlyargcount + bool(code.co_flags & 4) + bool(code.co_flags & 8)
        if not any(self._holds(frame.f_locals.get(a)) for a in code.co_varnames[:n]):
            return
        back = frame.f_back
        while back is not None and not back.f_globals.get("__name__", "").startswith(PACKAGE):
            back = back.f_back
        caller = _name(back.f_globals["__name__"]) if back is not None else None
        if caller != _name(module):
            self.calls.append((caller, _name(module), code.co_name))

    def report(self) -> dict:
        path, ups, reentries, upward = [], 0, Counter(), []
        for caller, callee, function in self.calls:
            if caller is not None and (not path or path[-1] != caller):
                ups += bool(path) and layer(caller) < layer(path[-1])
                path.append(caller)
            if callee in path:
                reentries[callee] += 1
            if caller is not None and layer(callee) < layer(caller):
                upward.append(f"{caller} -> {callee}.{function}")
            ups += bool(path) and layer(callee) < layer(path[-1])
            path.append(callee)
        return {"modules": list(dict.fromkeys(path)), "up": ups, "reentries": sum(reentries.values()),
                "per_module": dict(reentries.most_common()), "upward_calls": upward, "path": path}


def measure(overrides: dict, folder: str) -> dict:
    """Train ``BASE`` + ``overrides`` into ``folder`` and return the flow's report (see the module docstring)."""
    files = {k: os.path.join(folder, name) for k, name in (("CHECKPOINT", "extractor.pt"),
                                                             ("WEIGHTS", "extractor.safetensors"))}
    if not os.path.exists(files["CHECKPOINT"]):  # an untrained extractor: the flow does not depend on its weights
        torch.manual_seed(0)
        state = create_model("cifar_resnet20", num_classes=4, image_size=16).state_dict()
        save_file(state, files["WEIGHTS"])
        torch.save({"model": state, "config": {"model": "cifar_resnet20", "num_classes": 4, "image_size": 16}},
                   files["CHECKPOINT"])
    opts = {**BASE, "output_dir": tempfile.mkdtemp(dir=folder), **overrides}
    opts.update({k: files[v] for k, v in opts.items() if isinstance(v, str) and v in files})
    if "attention_cache" in opts:
        opts["attention_cache"] = os.path.join(opts["output_dir"], opts["attention_cache"])
    cfg = make_config(opts)
    # Fresh strings: only the config's own are followed (no interned literal elsewhere is the same object).
    cfg = validate(cfg.replace(**{k: "".join(list(v)) for k, v in cfg.fields().items()
                                  if isinstance(v, str) and len(v) > 1}))
    flow = Flow(cfg)
    sys.setprofile(flow)
    try:
        train(cfg)
    finally:
        sys.setprofile(None)
    return flow.report()


def describe(title: str, r: dict) -> str:
    steps = [r["path"][0]] + [("^ " if layer(b) < layer(a) else "> ") + b for a, b in zip(r["path"], r["path"][1:])]
    per = ", ".join(f"{m} {k}" for m, k in r["per_module"].items()) or "none"
    return (f"{title}\n  {len(r['modules'])} modules, {r['up']} trips back up a layer, {r['reentries']} re-entries "
            f"({per})\n  upward calls: {', '.join(r['upward_calls']) or 'none'}\n  path: {' '.join(steps)}")


def main() -> None:
    import warnings
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        for title, overrides in PATHS.items():
            print(describe(title, measure(overrides, folder)), flush=True)


if __name__ == "__main__":
    main()
