"""Who may import whom (the README's ownership table, from ../shared/DESIGN.md), held on every module's imports,
function-level ones included. A new import that breaks a rule fails here, naming the file and the import."""
from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "attentive_cutmix"
PKG = "attentive_cutmix"

# The lowest modules: anything may import them.
BASE = {"constants", "serialization", "errors"}
METHOD_HELPERS = {"mixers.base", "mixers.geometry", "mixers.guidance", "mixers.model_tap", "mixers.cell_scores"}
# layer of a module -> the modules (or packages, as "x" for "x" and "x.*") it may import besides its own package
RULES = {
    "cli": None,  # anything below
    "examples": None,  # recipes, as a user writes them
    "experiments": {"training", "registry", "mixers.base", "mixers.geometry", "mixers.check", "attention", "data",
                    "models"},
    "training": {"registry", "mixers.base", "attention", "data", "models"},
    "attention": {"mixers.base", "models", "data"},  # extractors, the cache, the run's source: one layer
    "data": {"mixers.base"}, "models": set(),
    "mixers.check": {"registry", "mixers.base"},
    "mixers.method": {"registry", *METHOD_HELPERS},
    "mixers.helper": {"registry", *METHOD_HELPERS},
    "registry": set(), "constants": set(), "errors": set(), "serialization": {"constants"}, "__init__": None,
    "__main__": None,
}


def _module(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(p for p in parts if p != "__init__") or "__init__"


def _layer(module: str) -> str:
    top = module.split(".")[0]
    if top == "mixers":
        if module == "mixers.check":
            return "mixers.check"
        return "mixers.helper" if module in METHOD_HELPERS or module == "mixers" else "mixers.method"
    return top


def _imports(path: Path, module: str) -> list[tuple[int, str]]:
    """(line, imported module relative to the package) for every import of the package in ``path``."""
    is_pkg = path.name == "__init__.py"
    here = module.split(".") if module != "__init__" else []
    package = here if is_pkg else here[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                target = ".".join([*base, *(node.module.split(".") if node.module else [])])
            elif node.module and node.module.startswith(PKG):
                target = node.module[len(PKG) + 1:]
            else:
                continue
            names = [target] if node.module else [f"{target}.{a.name}".lstrip(".") for a in node.names]
            found += [(node.lineno, n.lstrip(".")) for n in names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name[len(PKG) + 1:]) for a in node.names if a.name.startswith(PKG + ".")]
    return found


def _allowed(importer: str, imported: str) -> bool:
    layer = _layer(importer)
    rule = RULES[layer]
    if rule is None or not imported:
        return True
    top = imported.split(".")[0]
    if top in BASE or top == importer.split(".")[0] and layer not in ("mixers.method", "mixers.helper", "mixers.check"):
        return True
    if layer in ("mixers.method", "mixers.helper", "mixers.check") and imported in ("mixers",):
        return True
    return any(imported == r or imported.startswith(r + ".") for r in rule)


def test_every_import_keeps_the_layers():
    broken = []
    for path in sorted(SRC.rglob("*.py")):
        module = _module(path)
        broken += [f"{path.relative_to(SRC)}:{line}: {module} imports {target}"
                   for line, target in _imports(path, module) if not _allowed(module, target)]
    assert broken == [], "imports against the ownership table (README, 'Package map'):\n" + "\n".join(broken)


def test_the_check_can_fail():
    assert not _allowed("experiments.report", "mixers.attentive")  # experiments never import a method's file
    assert not _allowed("mixers.cutmix", "training.config")  # a method never reaches up
    assert not _allowed("mixers.cutmix", "mixers.attentive")  # nor into another method
    assert not _allowed("data.device", "training.batches")
    assert not _allowed("attention.source", "training.config")  # the attention package is one layer, below training
    assert _allowed("experiments.localization", "mixers.base") and _allowed("cli.train", "experiments.compare")
