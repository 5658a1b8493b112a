"""YAML as config and grid files use it: numbers written ``1e-3`` read as numbers, repeated keys and alias bombs
refused with a message that says where."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

# YAML 1.1 (PyYAML) reads 1e-3 and 5E4 as strings: its float pattern wants a dot. This loader also reads the
# exponent forms people write (1e-3, 1E5, +2e0, 1.e-3) as floats; everything else is PyYAML's safe loader.
_FLOAT = re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X)


# A few kB of nested aliases ("billion laughs") expand to billions of nodes once anything walks the document (the
# constructor, a hash of it, an error message's repr). Our files have tens to hundreds of nodes.
MAX_YAML_NODES = 100_000


class YamlSizeError(yaml.YAMLError):
    """A YAML document whose aliases expand beyond ``MAX_YAML_NODES``, or that nests too deeply to read."""


def _expanded_size(root: yaml.Node) -> int:
    """Node count of the document with every alias written out, computed on the composed graph (each node once);
    a node that contains itself counts as unbounded."""
    sizes: dict[int, int] = {}
    pending: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:  # iterative post-order: no recursion limit on deep documents
        node, done = stack.pop()
        key = id(node)
        if key in sizes:
            continue
        children = [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else (
            node.value if isinstance(node, yaml.SequenceNode) else [])
        if done:
            pending.discard(key)
            sizes[key] = min(1 + sum(sizes[id(c)] for c in children), MAX_YAML_NODES + 1)
            continue
        if key in pending:
            return MAX_YAML_NODES + 1  # a recursive alias
        pending.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in sizes)
    return sizes[id(root)]


class _YamlLoader(yaml.SafeLoader):
    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        # PyYAML keeps the last of repeated keys without a word: `lr: 0.1` ... `lr: 0.01` must not pass unseen.
        # Merged keys (<<: *base) may be overridden, as YAML means them to be.
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                continue
            if key_node.value in seen:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping", node.start_mark, f"the key {key_node.value!r} is given twice (first "
                    f"on line {seen[key_node.value].line + 1}); give each key once", key_node.start_mark)
            seen[key_node.value] = key_node.start_mark
        mapping: dict[Any, Any] = super().construct_mapping(node, deep=deep)
        return mapping

    def get_single_node(self) -> yaml.Node | None:
        node = super().get_single_node()
        if node is not None and _expanded_size(node) > MAX_YAML_NODES:
            raise YamlSizeError(f"its aliases (*name) expand to more than {MAX_YAML_NODES:,} values (an alias bomb, "
                                "or an alias that contains itself); write the values out or use fewer aliases")
        return node


_YamlLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def yaml_load(text: str) -> Any:
    """``yaml.safe_load`` that reads ``1e-3`` as a number (used for config and grid files).

    Documents whose aliases expand beyond ``MAX_YAML_NODES`` values are refused before they are built
    (``YamlSizeError``, a ``yaml.YAMLError``).
    """
    try:
        return yaml.load(text, Loader=_YamlLoader)
    except RecursionError as err:  # PyYAML composes nested collections recursively
        raise YamlSizeError("it nests collections too deeply to read") from err


def read_yaml_file(path: Path, what: str, error: type[Exception]) -> Any:
    """The YAML document in ``path`` (``yaml_load``), or ``error`` naming ``what`` file it is and what is wrong."""
    try:
        return yaml_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise error(f"{what} {path} is not valid YAML: {err}") from err
    except UnicodeDecodeError as err:
        raise error(f"{what} {path} is not UTF-8 text ({err}); save it as UTF-8") from err


__all__ = ["yaml_load", "read_yaml_file", "YamlSizeError", "MAX_YAML_NODES"]
