"""How the run's config travels through ``train``: steps, files, trips back up a layer, re-entries (issues 20, 30).

``train(cfg)`` runs a tiny synthetic config (1 epoch of 1 step) under ``sys.setprofile``; two measures are taken in
the same run and both printed.

Direct measure (issue 20). A *config call* is a call event of a function defined in an ``attentive_cutmix`` module
whose arguments, at call time, hold the run's config: the ``TrainConfig`` itself, an object with it as an attribute
(``self.cfg``), a tuple/list/dict holding it, or the very value of one of its fields. Fields are followed by
identity: strings (copied first, so no interned literal elsewhere matches), lists and the method's options object;
``None``/bools/numbers cannot be told apart by identity and values computed from a field (``Path(cfg.output_dir)``)
are new values, so neither is followed. Its *caller* is the nearest ``attentive_cutmix`` frame below it; calls
within one module are dropped, and so (Python 3.11+) are implicit calls whose caller runs no call expression: a
property or ``__getattr__`` reached by ``cfg.lr`` is the caller reading the config, not passing it to the config's
module (this changes nothing at 3c102cb; a flat-read ``TrainConfig.__getattr__`` would otherwise count each read).

Full measure (issue 30): the config followed over every call that passes it on, into ``data/`` too, numbers,
bools and ``None`` included. A call passes it on when an argument *is* the config, holds it, or is a value read
from one of its fields. Values are followed through the code, not by identity: at each call event the caller's
running call expression is found (``code.co_positions()`` at ``frame.f_lasti``, matched to the ``ast.Call`` of that
source span) and each argument expression is read (``Env.reads``):
  - a config value is: a name bound to one, ``x.attr`` of one (``cfg.epochs``, ``cfg.mixing.grid_size``), the
    attribute of an object that holds one (``self.cfg``, ``self.seed`` when ``self.seed`` was set from a config
    value), an item of one, either branch of ``a if c else b`` / ``a or b``, a tuple/list/set/dict (literal or
    ``dict(...)``) holding one, or what a method of one returns (``cfg.to_dict()``, ``options.cell_kwargs()``);
  - not followed (new values, as in the direct measure): a function's result (``Path(cfg.output_dir)``,
    ``needs_attention(cfg)``), an operator's (``cfg.epochs // 3``, ``cfg.amp == "fp16"``), a table lookup keyed
    by one (``TABLE[cfg.method]``), an f-string;
  - names are bound to config values by the call (the callee's parameters given a config value, mapped by
    position and keyword, ``self``/``cls`` skipped when bound), by identity (the config, a container or object
    holding it, a non-scalar field value, in the frame's locals and free variables) and by the function's own
    bindings (``x = cfg.a``, ``a, b = cfg.a, 1``, ``for``, ``with``, ``:=``; flow-insensitive: a binding anywhere
    in the function counts everywhere in it); ``obj.attr = <config value>`` marks that object's attribute when the
    function returns (a dataclass's generated ``__init__``: ``self.<param>`` set to that parameter, by identity).
  - Implicit calls (a property, ``__getattr__``, iteration, ``with``, operators: no call expression runs in the
    caller) read the object, they pass nothing on, and are not steps. Through a wrapper outside the package
    (``torch.no_grad``) the nearest package frame's call expression is used when it names the callee; otherwise
    (``nn.Module.__call__`` -> ``forward``) the identity rule alone decides. A generator's frame is followed over
    its resumptions (the first ``next`` is its call event; numbers it was created with are not seen).
  A *step* is a cross-module call that passes the config on (the first is ``train`` itself); calls within one
  file carry the flow without being steps. Needs Python 3.11+ (``co_positions``); on 3.10 only the direct measure
  is taken.

Both measures then read the flow's *path* the same way: in time order, each step's caller (when the flow is not
already there: it came back up, or went on through calls that carry nothing of the config) then its callee.
  steps: the cross-module config calls (full measure; the direct measure's are its calls list);
  files / modules passed: the distinct files on the path;
  trips back up a layer: steps of the path into a higher layer (``LAYERS``; 0 is the top): the config went down
    and the flow came back up to carry it down again (a call from a lower layer into a higher one is one too);
  re-entries: steps into a file already on the path (it was entered and left before).
The full measure prints each trip back up with the call it came back for, and each re-entered file with the calls
that came back to it: what to restructure.

Issue 20's done-when, direct measure, main path: <= 4 trips back up and <= 7 re-entries. Issue 30's done-when, full
measure, main path: <= 4 trips back up and <= 12 re-entries (tests/test_config_flow.py; xfail until the
restructuring lands). Main path: attentive-cutmix on the device path, online extractor from a run's checkpoint
(``--extractor run/checkpoint.pt``). The committed studies name their extractor with a weights file and cache its
maps (``configs/results``): that path reads the weights file before it can build the network it fills, one trip up
more (measured below, not the done-when).

    PYTHONPATH=src python benchmarks/config_flow.py      # five paths, both measures, ~10 s on one core
    (tests/test_config_flow.py asserts the done-whens on the main path)

Direct measure (modules / trips up / re-entries), before (a34d2fe) -> after issue 20's restructuring:
  main path                      10/8/10 (registry 3, components 3, attention, data_setup, config, mixing 1)
                              -> 10/4/4  (config, components, registry, mixing 1)
  extractor name + weights file  11/9/13 -> 11/5/7 (serialization, config, factory, cifar_resnet, components,
                                 registry, mixing 1)
  as the studies (name + weights, cache built first)  12/11/14 -> 12/6/7 (the same 7; the cache header is a 6th
                                 descent from training/)
  loader path 10/8/10 -> 10/4/4    cutmix 9/6/8 -> 9/3/2.  No call from a lower layer into a higher one, ever.
Full measure at 3c102cb (2026-12-06, 2-core AMD EPYC, Python 3.11; steps / files / trips up / re-entries):
  main path 45/20/13/25    name + weights file 50/20/16/30    as the studies 58/23/21/35    loader path 43/20/13/23
  cutmix 34/18/11/17.  The issue's reviewer counted 48/18/9/30 on the main path by hand; here, as there,
  re-entries = steps - files. Of the 13 trips up, 9 return from ``constants.py``'s type checks (``is_int``,
  ``is_number``: a field value checked again in data/, mixers/, attention) and 8 of the 25 re-entries go into it;
  the rest: ``needs_attention``/``build_extractor`` after the mixer's module answered, ``device_split`` twice and
  the batches, ``build_parts`` after the model, and ``derive_seed`` (6), ``run_io`` (2), ``data/transforms`` (2).
After issue 30 (sections, attention specs made at validation and resolved once, both device splits in one call, the
writer knowing its epochs; 2026-12-06, same machine):
  direct measure (modules / up / re-entries): main 12/3/0, name + weights 13/4/3, studies 14/5/3, loader 12/3/0,
  cutmix 10/2/0 (a flat read, ``cfg.lr`` through ``TrainConfig.__getattr__``, is an attribute: not counted).
  full measure (steps / files / up / re-entries): main 40/21/11/19; above the floor (calls into ``constants``,
  ``errors``, ``serialization`` left out: value checks, not the config travelling) 31/20/5/11. Issue 30's bound
  (<= 4 up, <= 12 re-entries) holds above the floor for re-entries, not for trips up: the flow comes back up to
  training/ after each of the datasets, the attention source, the device splits, the model and the mixer.
"""
from __future__ import annotations

import ast
import dataclasses
import inspect
import os
import sys
import tempfile
from collections import Counter
from functools import lru_cache
from typing import NamedTuple

import torch
from safetensors.torch import save_file

from attentive_cutmix.models import create_model
from attentive_cutmix.training import make_config
from attentive_cutmix.training.config import TrainConfig, validate
from attentive_cutmix.training.sections import SECTIONS
from attentive_cutmix.training.trainer import train

PACKAGE = "attentive_cutmix."
# Layers by top-level name (a folder, or a module of the package's root): a module added under a folder takes its
# folder's layer; a new module at the root must be added here (layer() says so).
LAYERS = {"cli": 0, "examples": 0, "__main__": 0, "experiments": 1, "training": 2,
          "data": 3, "models": 3, "registry": 3, "mixers": 3, "attention": 3, "losses": 3, "serialization": 4,
          "constants": 4, "errors": 4}
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
    """``training/config.py`` for ``attentive_cutmix.training.config`` (``data/__init__.py`` for a package)."""
    name = module[len(PACKAGE):].replace(".", "/")
    return name + ("/__init__.py" if hasattr(sys.modules.get(module), "__path__") else ".py")


def layer(name: str) -> int:
    top = name.split("/")[0].removesuffix(".py")
    if top not in LAYERS:
        raise KeyError(f"benchmarks/config_flow.py: {name} is in no layer; add {top!r} to LAYERS (0 is the top)")
    return LAYERS[top]


def _scalar(value) -> bool:
    return isinstance(value, (bool, int, float, type(None)))


def config_values(cfg) -> list:
    """What of the config is followed by identity: its sections, every option's non-scalar value, the method's
    options object and the attention specs the mixing section made when the config was checked (its values); of
    another dataclass (the tests' toy config), its fields' non-scalar values."""
    if not isinstance(cfg, TrainConfig):
        return [v for f in dataclasses.fields(cfg) if not _scalar(v := getattr(cfg, f.name))]
    return [getattr(cfg, s) for s in SECTIONS] + [
        v for v in (*cfg.fields().values(), cfg.mixing.options, cfg.mixing.extractor_spec, cfg.mixing.cache_spec)
        if not _scalar(v)]


def report(calls: list[tuple]) -> dict:
    """Path, trips back up and re-entries of ``calls``, each ``(caller, callee, function)`` in time order."""
    path, ups, reentries, upward, up_trips, reentered = [], 0, Counter(), [], [], {}
    for caller, callee, function in calls:
        call = f"{caller} -> {callee}.{function}"
        if caller is not None and (not path or path[-1] != caller):
            if path and layer(caller) < layer(path[-1]):
                ups += 1
                up_trips.append(f"{path[-1]} ^ {caller}, to call {callee}.{function}")
            path.append(caller)
        if callee in path:
            reentries[callee] += 1
            reentered.setdefault(callee, []).append(f"{caller} -> {function}")
        if caller is not None and layer(callee) < layer(caller):
            upward.append(call)
        if path and layer(callee) < layer(path[-1]):
            ups += 1
            up_trips.append(f"{call} (a call into a higher layer)")
        path.append(callee)
    return {"modules": list(dict.fromkeys(path)), "steps": len(calls), "up": ups,
            "reentries": sum(reentries.values()), "per_module": dict(reentries.most_common()), "upward_calls": upward,
            "path": path, "up_trips": up_trips, "reentered": reentered}


class Flow:
    """Today's (direct) measure, a profile hook: records ``(caller, callee, function)`` of each cross-module call
    whose arguments hold the config itself or a non-scalar field value, by identity."""

    def __init__(self, cfg) -> None:
        self.cfg, self.calls = cfg, []
        self.values = config_values(cfg)

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
        n = code.co_argcount + code.co_kwonlyargcount + bool(code.co_flags & 4) + bool(code.co_flags & 8)
        if not any(self._holds(frame.f_locals.get(a)) for a in code.co_varnames[:n]):
            return
        back = _package_frame(frame.f_back)
        if FULL_MEASURE and back is frame.f_back and _call_at(back) is None:
            return  # an implicit call (a property, __getattr__): the caller reads the config, it passes nothing on
        caller = _name(back.f_globals["__name__"]) if back is not None else None
        if caller != _name(module):
            self.calls.append((caller, _name(module), code.co_name))

    def report(self) -> dict:
        return report(self.calls)


def _package_frame(frame):
    """``frame`` or the nearest frame below it that runs code of the package (``None``: there is none)."""
    while frame is not None and not frame.f_globals.get("__name__", "").startswith(PACKAGE):
        frame = frame.f_back
    return frame


# ------------------------------------------------------------------------------------------------ the full measure
# The package's floor: modules every layer may import (tests/test_layers.py's BASE), holding value checks
# (is_int, is_number), errors and safe I/O. A call into them checks or reads a value where it is; the config does
# not travel there. The full measure counts them; "above the floor" is the same run without them.
FLOOR = ("constants.py", "errors.py", "serialization.py")
FULL_MEASURE = sys.version_info >= (3, 11)  # it finds the running call expression by code.co_positions() (3.11+)
COMPREHENSIONS = {"<listcomp>", "<setcomp>", "<dictcomp>", "<genexpr>"}
GENERATOR = inspect.CO_GENERATOR | inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR
CONTAINERS = {"dict", "list", "tuple", "set", "frozenset"}
SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)


class Env(NamedTuple):
    """What, in one frame, carries the config: ``values`` are names bound to it or to values read from it;
    ``holders`` maps a name to the attributes of its object that do (``self`` -> ``{"cfg"}``); ``passes`` are the
    names whose object holds the config itself, so passing the object passes the config."""
    values: frozenset
    holders: frozenset  # of (name, frozenset of attributes)
    passes: frozenset

    def reads(self, node: ast.AST) -> bool:
        """Whether ``node``'s value is read from the config: a name bound to a config value, an attribute of one
        (``cfg.a.b``), a holder's attribute (``self.cfg``, ``self.size`` set from a field), an item of a config value
        (``cfg.sizes[0]``), either branch of ``x if c else y`` or ``x or y``, or a tuple/list/set/dict holding one.
        ``dict(...)``/``list(...)``/``tuple(...)``/``set(...)`` hold what they are given, as their literals do.
        A method of a config value answers with the config's own values, so its result is one too
        (``cfg.to_dict()``, ``options.cell_kwargs()``). A value computed from one is a new value and is not
        followed: a function's result (``Path(cfg.a)``, ``needs_attention(cfg)``), an operator's (``cfg.a * 2``,
        ``cfg.a == "x"``), a lookup keyed by one (``TABLE[cfg.a]``), an f-string, a lambda."""
        if isinstance(node, ast.Name):
            return node.id in self.values
        if isinstance(node, ast.Attribute):
            base, first = node, None
            while isinstance(base, ast.Attribute):
                base, first = base.value, base.attr
            if isinstance(base, ast.Name):
                return base.id in self.values or first in dict(self.holders).get(base.id, ())
            return self.reads(node.value)
        if isinstance(node, ast.Call):
            if isinstance(node.func, ast.Name) and node.func.id in CONTAINERS:  # dict(a=cfg.a) is {"a": cfg.a}
                return any(self.reads(v) for v in [*node.args, *(k.value for k in node.keywords)])
            return isinstance(node.func, ast.Attribute) and self.reads(node.func.value)
        if isinstance(node, (ast.Subscript, ast.Starred, ast.NamedExpr)):
            return self.reads(node.value)
        if isinstance(node, ast.IfExp):
            return self.reads(node.body) or self.reads(node.orelse)
        if isinstance(node, (ast.BoolOp, ast.Tuple, ast.List, ast.Set)):
            return any(self.reads(v) for v in getattr(node, "values", getattr(node, "elts", ())))
        if isinstance(node, ast.Dict):
            return any(self.reads(v) for v in node.values)
        return False

    def passes_on(self, node: ast.expr) -> bool:
        """Whether the argument expression ``node`` passes the config, an object holding it, or a value read
        from it."""
        node = node.value if isinstance(node, ast.Starred) else node
        return self.reads(node) or isinstance(node, ast.Name) and node.id in self.passes


class Source:
    """One parsed file: its call expressions by source position, its functions by first line and name."""

    def __init__(self, filename: str) -> None:
        with open(filename, encoding="utf-8") as f:
            tree = ast.parse(f.read())
        self.calls, self.functions = {}, {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                self.calls[(node.lineno, node.end_lineno, node.col_offset, node.end_col_offset)] = node
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
                key = (first, getattr(node, "name", "<lambda>"))
                self.functions[key] = None if key in self.functions else node  # two lambdas on a line: neither

    @staticmethod
    @lru_cache(maxsize=None)
    def of(filename: str) -> Source | None:
        return Source(filename) if filename.endswith(".py") and os.path.isfile(filename) else None  # not <string>


def _bindings(function: ast.AST) -> list[tuple[ast.expr, ast.expr]]:
    """``(target, value)`` of every binding in ``function``'s own scope (its comprehensions included, nested
    functions and classes not): assignments, augmented and annotated ones, ``:=``, ``for`` and ``with ... as``."""
    out, stack = [], list(function.body) if isinstance(function.body, list) else [function.body]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Assign):
            out += [(t, node.value) for t in node.targets]
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign, ast.NamedExpr)) and node.value is not None:
            out.append((node.target, node.value))
        elif isinstance(node, (ast.For, ast.AsyncFor, ast.comprehension)):
            out.append((node.target, node.iter))
        elif isinstance(node, ast.withitem) and node.optional_vars is not None:
            out.append((node.optional_vars, node.context_expr))
        stack += [c for c in ast.iter_child_nodes(node) if not isinstance(c, SCOPES)]
    return out


def _targets(target: ast.expr, value: ast.expr, env: Env):
    """``(names, attributes)`` that ``target = value`` binds to a value read from the config (pairwise for
    ``a, b = x, y``); ``attributes`` are ``(object name, attribute)`` of ``obj.attr = ...``; ``d[k] = ...`` binds
    ``d``."""
    if isinstance(target, (ast.Tuple, ast.List)):
        pairs = zip(target.elts, value.elts) if isinstance(value, (ast.Tuple, ast.List)) and \
            len(value.elts) == len(target.elts) and not any(isinstance(e, ast.Starred) for e in target.elts) \
            else ((t, value) for t in target.elts)
        names, attrs = set(), set()
        for t, v in pairs:
            n, a = _targets(t, v, env)
            names |= n
            attrs |= a
        return names, attrs
    if not env.reads(value):
        return set(), set()
    if isinstance(target, ast.Starred):
        return _targets(target.value, value, env)
    if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name):
        return set(), {(target.value.id, target.attr)}
    while isinstance(target, (ast.Subscript, ast.Attribute)):
        target = target.value
    return ({target.id} if isinstance(target, ast.Name) else set()), set()


@lru_cache(maxsize=None)
def _closure(function: ast.AST, env: Env) -> tuple[Env, frozenset]:
    """``env`` grown over ``function``'s bindings until nothing changes (flow-insensitive: ``x = cfg.a`` anywhere
    in the function makes ``x`` a config value everywhere in it), and the ``(object name, attribute)`` pairs the
    function sets to config values."""
    bindings, attrs = _bindings(function), set()
    while True:
        names = set()
        for target, value in bindings:
            n, a = _targets(target, value, env)
            names |= n
            attrs |= a
        if names <= env.values:
            return env, frozenset(attrs)
        env = env._replace(values=env.values | names)


class FullFlow:
    """The full measure, a profile hook: records ``(caller, callee, function)`` of each cross-module call that
    passes the config on in any form (see the module docstring, "Full measure")."""

    def __init__(self, cfg) -> None:
        self.cfg, self.calls = cfg, []
        self.values = config_values(cfg)
        self.ids = {id(cfg)} | {id(v) for v in self.values}  # kept alive by self.cfg and self.values
        self.frames = {}  # a frame that carries the config -> the names its call bound to config values
        self.attributes = {}  # id(obj) -> (obj, attributes a package function set to config values)

    def _classify(self, value) -> tuple[bool, frozenset, bool]:
        """``(is a config value, attributes holding config values, holds the config itself)`` by identity: the
        config, a container of it, a non-scalar field value, an object with it (or a value set from it) as an
        attribute."""
        if id(value) in self.ids:
            return True, frozenset(), True
        if _scalar(value) or isinstance(value, (str, torch.Tensor)):
            return False, frozenset(), False
        if isinstance(value, (tuple, list, dict)):
            inner = value.values() if isinstance(value, dict) else value
            holds = any(v is self.cfg for v in inner)
            return holds, frozenset(), holds
        try:
            attrs = {k for k, v in vars(value).items() if v is self.cfg}
        except TypeError:
            return False, frozenset(), False
        known = self.attributes.get(id(value))
        return False, frozenset(attrs | (known[1] if known is not None and known[0] is value else set())), bool(attrs)

    def _env(self, frame, names) -> tuple[Env, frozenset]:
        """The frame's ``Env`` (``names``: bound to config values by its call) and the attributes it sets."""
        values, holders, passes = set(), {}, set()
        for name, value in frame.f_locals.items():
            is_value, attrs, holds = self._classify(value)
            if attrs:  # an object: followed through those attributes (and passed on when it holds the config)
                holders[name] = attrs
                passes |= {name} if holds else set()
            elif is_value or name in names:
                values.add(name)
        env = Env(frozenset(values), frozenset(holders.items()), frozenset(passes))
        source = Source.of(frame.f_code.co_filename)
        function = source and source.functions.get((frame.f_code.co_firstlineno, frame.f_code.co_name))
        return _closure(function, env) if function is not None else (env, frozenset())

    def _passed(self, call: ast.Call, caller, callee) -> set[str]:
        """Names of ``callee``'s parameters that ``call``, running in ``caller``, binds to config values."""
        code = callee.f_code
        scope = caller
        while scope.f_code.co_name in COMPREHENSIONS and scope.f_back is not None:  # 3.11: their own frames
            scope = scope.f_back
        env = self._env(scope, self.frames.get(scope, ()))[0]
        if scope is not caller:
            inner = self._env(caller, self.frames.get(caller, ()))[0]
            env = Env(env.values | inner.values, env.holders | inner.holders, env.passes | inner.passes)
        positional = list(code.co_varnames[:code.co_argcount])
        named = code.co_varnames[:code.co_argcount + code.co_kwonlyargcount]
        star = code.co_varnames[len(named)] if code.co_flags & inspect.CO_VARARGS else None
        stars = code.co_varnames[len(named) + bool(star)] if code.co_flags & inspect.CO_VARKEYWORDS else None
        args = call.args
        if positional and positional[0] in ("self", "cls") and not (
                args and isinstance(args[0], ast.Name) and args[0].id == positional[0]):
            positional = positional[1:]  # bound: self/cls is not among the call's arguments
        out = set()
        for i, arg in enumerate(args):
            if env.passes_on(arg):
                out |= set(positional[i:]) | {star} if isinstance(arg, ast.Starred) else \
                    {positional[i] if i < len(positional) else star}
        for kw in call.keywords:
            if env.passes_on(kw.value):
                out |= set(named) | {stars} if kw.arg is None else {kw.arg if kw.arg in named else stars}
        return out - {None}

    def __call__(self, frame, event, arg) -> None:
        if event == "return":
            names = self.frames.get(frame)
            if names is not None:  # the attributes it set to config values now carry the config
                env, attrs = self._env(frame, names)
                if Source.of(frame.f_code.co_filename) is None and "self" in frame.f_locals:
                    # generated code (a dataclass's __init__): self.<name> = <name>, told by identity
                    obj = frame.f_locals["self"]
                    attrs = {("self", n) for n in env.values if n in getattr(obj, "__dict__", {})
                             and getattr(obj, n) is frame.f_locals.get(n)}
                for obj_name, attr in attrs:
                    obj = frame.f_locals.get(obj_name)
                    if obj is not None and not _scalar(obj) and hasattr(obj, "__dict__"):
                        self.attributes.setdefault(id(obj), (obj, set()))[1].add(attr)
                if not frame.f_code.co_flags & GENERATOR:
                    del self.frames[frame]
            return
        module = frame.f_globals.get("__name__", "")
        if event != "call" or not module.startswith(PACKAGE) or frame in self.frames:
            return  # a generator resumed is not a new call
        code = frame.f_code
        caller = _package_frame(frame.f_back)
        call = _call_at(caller) if caller is not None else None
        func = getattr(call, "func", None)
        if caller is not None and caller is not frame.f_back and \
                getattr(func, "attr", getattr(func, "id", None)) != code.co_name:
            call = None  # not through a wrapper (torch.no_grad) but from outside: e.g. nn.Module.__call__ -> forward
        implicit = caller is frame.f_back and call is None  # a property, __getattr__, iteration, with, an operator
        followed = caller is not None and (caller in self.frames or caller.f_code.co_name in COMPREHENSIONS)
        names = self._passed(call, caller, frame) if call is not None and followed else set()
        params = code.co_varnames[:code.co_argcount + code.co_kwonlyargcount + bool(code.co_flags & 4)
                                  + bool(code.co_flags & 8)]
        carried = False
        for name in params + code.co_freevars:
            is_value, attrs, holds = self._classify(frame.f_locals.get(name))
            carried |= bool(is_value or attrs or holds)
            if name in params and (is_value or holds):
                names.add(name)
        if names or carried:
            self.frames[frame] = frozenset(names)
        if implicit:
            return
        if names and (caller is None or _name(caller.f_globals["__name__"]) != _name(module)):
            self.calls.append((_name(caller.f_globals["__name__"]) if caller is not None else None, _name(module),
                               code.co_name))

    def report(self) -> dict:
        return report(self.calls)


def _call_at(frame) -> ast.Call | None:
    """The call expression ``frame`` is running (``None``: it is not in a call, e.g. it reads a property)."""
    source = Source.of(frame.f_code.co_filename)
    if source is None:
        return None
    positions = _positions(frame.f_code)
    index = frame.f_lasti // 2  # one position per 2-byte code unit
    return source.calls.get(positions[index]) if index < len(positions) else None


@lru_cache(maxsize=None)
def _positions(code) -> list:
    return list(code.co_positions())


class Both:
    """Both hooks in one run."""

    def __init__(self, *hooks) -> None:
        self.hooks = hooks

    def __call__(self, frame, event, arg) -> None:
        for hook in self.hooks:
            hook(frame, event, arg)


def measure_both(overrides: dict, folder: str, *, full: bool = True) -> dict:
    """Train ``BASE`` + ``overrides`` into ``folder``; ``{"direct": report, "full": report}`` of the two measures
    (``"full"``: ``None`` when not asked for, or before Python 3.11)."""
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
    direct, followed = Flow(cfg), FullFlow(cfg) if full and FULL_MEASURE else None
    sys.setprofile(Both(direct, followed) if followed is not None else direct)
    try:
        train(cfg)
    finally:
        sys.setprofile(None)
    return {"direct": direct.report(), "full": followed.report() if followed is not None else None,
            "above_floor": report([c for c in followed.calls if c[1] not in FLOOR]) if followed is not None else None}


def measure(overrides: dict, folder: str) -> dict:
    """Today's (direct) measure's report of ``BASE`` + ``overrides`` (see the module docstring)."""
    return measure_both(overrides, folder, full=False)["direct"]


def _path(r: dict) -> str:
    return " ".join([r["path"][0]] + [("^ " if layer(b) < layer(a) else "> ") + b
                                      for a, b in zip(r["path"], r["path"][1:])])


def describe(title: str, r: dict) -> str:
    per = ", ".join(f"{m} {k}" for m, k in r["per_module"].items()) or "none"
    return (f"{title}\n  {len(r['modules'])} modules, {r['up']} trips back up a layer, {r['reentries']} re-entries "
            f"({per})\n  upward calls: {', '.join(r['upward_calls']) or 'none'}\n  path: {_path(r)}")


def describe_full(r: dict) -> str:
    """The full measure's figures, then each trip back up and each re-entry with the call that made it."""
    lines = [f"  full measure: {r['steps']} steps, {len(r['modules'])} files, {r['up']} trips back up a layer, "
             f"{r['reentries']} re-entries", "  trips back up (the flow came back up to make the next call):"]
    lines += [f"    {trip}" for trip in r["up_trips"]] or ["    none"]
    lines.append("  re-entries (a file, then the calls that came back to it):")
    lines += [f"    {file} {len(calls)}: {'; '.join(calls)}" for file, calls in r["reentered"].items()] or ["    none"]
    lines.append(f"  path: {_path(r)}")
    return "\n".join(lines)


def main() -> None:
    import warnings
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        for title, overrides in PATHS.items():
            both = measure_both(overrides, folder)
            print(describe(title, both["direct"]), flush=True)
            print(describe_full(both["full"]) if both["full"] is not None else
                  "  full measure: needs Python 3.11+ (code.co_positions)", flush=True)
            if both["above_floor"] is not None:
                print(describe_full(both["above_floor"]).replace("full measure:", "full measure above the floor "
                                                                 f"({', '.join(FLOOR)}):", 1), flush=True)


if __name__ == "__main__":
    main()
