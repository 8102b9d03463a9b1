"""Reading YAML the way users write it: ``1e-3`` is a float, ``off`` is a word (only true/false are booleans), a
repeated key is an error, a syntax error has a line."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from trainables.errors import BadInput


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 floats and no silent duplicate keys."""


# PyYAML follows YAML 1.1, where a float needs a dot: `lr: 1e-3` would load as the string "1e-3".
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


# YAML 1.2 booleans: true/false only. Under YAML 1.1 `off`, `on`, `yes`, `no` are booleans too, and `amp: off`
# would load as False instead of the mode named off.
BOOL_TAG = "tag:yaml.org,2002:bool"
for _first, _resolvers in _Loader.yaml_implicit_resolvers.items():  # _Loader's own copy (made by the float resolver)
    _resolvers[:] = [(tag, regexp) for tag, regexp in _resolvers if tag != BOOL_TAG]
_Loader.add_implicit_resolver(BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


def _mapping_without_duplicates(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> dict:
    # PyYAML keeps the last of two equal keys: a second `lr:` further down would silently win.
    loader.flatten_mapping(node)
    seen: set = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, (str, int, float, bool)):
            continue  # an unhashable key fails in construct_mapping with PyYAML's own message
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key '{key}' appears twice in one mapping", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def read_yaml(path: Path, shown: str) -> dict[str, Any]:
    """The YAML file as a dict; BadInput naming ``shown`` (the path as the user gave it) for anything else."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise BadInput(f"{shown}: file not found; check the path (relative paths start at {Path.cwd()})") from None
    except (IsADirectoryError, UnicodeDecodeError, PermissionError) as exc:
        raise BadInput(f"{shown}: cannot read it ({exc}); give a search-space YAML file") from None
    try:
        raw = yaml.load(text, Loader=_Loader)  # noqa: S506  _Loader is a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1} column {mark.column + 1}" if mark is not None else "YAML"
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise BadInput(
            f"{shown}: {where}: {problem}; fix the YAML syntax there (indentation, a missing ':' or space after it, "
            "an unclosed bracket or quote)"
        ) from None
    if raw is None:
        raise BadInput(f"{shown}: (top): the file is empty; start from search_spaces/demo.yaml")
    if not isinstance(raw, dict):
        raise BadInput(f"{shown}: (top): expected a mapping of keys (name, task, data, ...), got {type(raw).__name__}; "
                       "start from search_spaces/demo.yaml")
    return raw


def scalar(text: str) -> Any:
    """A `--set` value typed as YAML would type it: ``3e-3`` -> float, ``false`` -> bool, ``none`` -> None."""
    if text.strip().lower() in ("none", "null", "~", ""):
        return None
    try:
        value = yaml.load(text, Loader=_Loader)  # noqa: S506
    except yaml.YAMLError:
        return text
    return value if isinstance(value, (str, int, float, bool)) or value is None else text
