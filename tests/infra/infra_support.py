"""Reading the Bicep templates for the infra drift tests: a real parser (pycep), no regular expressions.

pycep turns a Bicep file into a JSON-like tree. Two of its conventions matter here:
- identifiers (a parameter, a variable, a resource symbol) and string literals are both plain
  ``str`` values; :func:`resolve_name` tells them apart by looking the name up in the file;
- ``a.b.c`` is a nest of ``property_accessor`` operators; :func:`accessor_path` flattens it;
- quoted object keys keep their quotes; :func:`unquote` drops them.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from pycep import BicepParser

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
MAIN = INFRA / "main.bicep"
MODULES = INFRA / "modules"
README = INFRA / "README.md"


def bicep_files() -> list[Path]:
    return sorted(INFRA.rglob("*.bicep"))


@functools.cache
def parse(path: Path) -> dict[str, Any]:
    """The pycep tree of one Bicep file (raises on a syntax error)."""
    return BicepParser().parse(text=path.read_text(encoding="utf-8"))


def module(name: str) -> dict[str, Any]:
    return parse(MODULES / f"{name}.bicep")


def main() -> dict[str, Any]:
    return parse(MAIN)


def accessor_path(node: Any) -> list[Any] | None:
    """``keyVault.outputs.x`` -> ['keyVault', 'outputs', 'x']; None when node is no accessor chain."""
    if not isinstance(node, dict) or node.get("operator", {}).get("type") != "property_accessor":
        return None
    operands = node["operator"]["operands"]
    rest = accessor_path(operands["operand_2"])
    return [operands["operand_1"], *(rest if rest is not None else [operands["operand_2"]])]


def function_call(node: Any) -> tuple[str, dict[str, Any]] | None:
    """``union(a, b)`` -> ('union', {'arg_1': 'a', 'arg_2': 'b'}); None when node is no call."""
    if isinstance(node, dict) and isinstance(node.get("function"), dict):
        return node["function"]["type"], node["function"].get("parameters") or {}
    return None


def resolve_name(tree: dict[str, Any], value: Any) -> tuple[str, Any]:
    """What a plain string stands for in this file: ('param'|'var'|'resource'|'module'|'literal', ...)."""
    if isinstance(value, str):
        for kind, section in (("param", "parameters"), ("var", "variables"), ("resource", "resources")):
            if value in tree.get(section, {}):
                return kind, tree[section][value]
        if value in tree.get("modules", {}):
            return "module", tree["modules"][value]
    return "literal", value


def unquote(key: str) -> str:
    """Object keys that need quotes in Bicep (``'azd-service-name'``) keep them in pycep's tree."""
    return key[1:-1] if len(key) >= 2 and key[0] == key[-1] == "'" else key


def body(resource_or_module: dict[str, Any]) -> dict[str, Any]:
    """The object body of a resource or module, under any `if (...)` condition or `for` loop."""
    config = resource_or_module["config"]
    while "config" in config and ("condition" in config or "loop_type" in config):
        config = config["config"]
    return config


def condition(resource_or_module: dict[str, Any]) -> Any:
    return resource_or_module["config"].get("condition")


def resources_of_type(tree: dict[str, Any], resource_type: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in tree.get("resources", {}).items() if r["type"] == resource_type}


def decorator_types(param: dict[str, Any]) -> set[str]:
    return {d["type"] for d in param.get("decorators", [])}


def allowed_values(param: dict[str, Any]) -> list[Any] | None:
    for d in param.get("decorators", []):
        if d["type"] == "allowed":
            return list(d["argument"])
    return None


def load_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def action_matches(pattern: str, action: str) -> bool:
    """Azure RBAC action matching: case-insensitive, ``*`` stands for any run of characters."""
    parts = pattern.lower().split("*")
    text = action.lower()
    if len(parts) == 1:
        return text == parts[0]
    if not text.startswith(parts[0]) or not text.endswith(parts[-1]):
        return False
    pos = len(parts[0])
    end = len(text) - len(parts[-1])
    for middle in parts[1:-1]:
        found = text.find(middle, pos, end)
        if found < 0:
            return False
        pos = found + len(middle)
    return pos <= end
