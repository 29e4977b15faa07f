"""The policy file: bounds a lab plan must stay within, per scope, validated once at load.

An admin writes ``policy.yaml`` (camelCase keys, as in ARM); :func:`load_policy` reads it into a
frozen :class:`Policy`, or raises :class:`PolicyError` with one line naming the file and the field
path. Nothing runs on a bad policy. The JSON Schema shipped as ``policy.schema.json`` is generated
from the same model: ``labguard check-policy --write-schema policy.schema.json``.

Bounds, not exact values:

* connection: the most exposure allowed per channel, ordered ``None < Private < Public``;
* auto-shutdown: flags required ``Enabled``; a minimum idle mode; maximum delays (ISO-8601);
* labs: allowed VM sizes, template VM forbidden or not, a non-admin user required, a maximum usage quota.

The settings and their kinds of bound are the table in :mod:`shared.core.governed`; the section models below
are built from it, so a new row there is a new key here (and in the schema).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Mapping, Sequence
from datetime import timedelta
from types import MappingProxyType
from typing import TYPE_CHECKING, Annotated, Any, Literal, cast, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, PlainValidator, ValidationError, WithJsonSchema, create_model

from shared.core.durations import format_iso, parse_delay, parse_iso
from shared.core.governed import GOVERNED, PROFILES, Bound, Profile, Setting
from shared.core.rules import CONNECTION_RANK, DEFAULT_EXEMPTION_TAG, IDLE_RANK, MAX_POLICY_BYTES, Mode, Policy, Rules
from shared.errors import SHOWN, PolicyError

__all__ = [
    "CONNECTION_RANK",
    "IDLE_RANK",
    "Mode",
    "Policy",
    "PolicyError",
    "Rules",
    "load_policy",
    "parse_policy",
    "policy_json_schema",
]

_GUID = r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}"
_SUBSCRIPTION_KEY = re.compile(rf"^{_GUID}$")
_RESOURCE_GROUP_KEY = re.compile(rf"^{_GUID}/[-\w._()]{{1,90}}$")
_TAG_FORBIDDEN = re.compile(r"[<>%&\\?/]")
_ISO_PATTERN = r"^P(?!$)(\d+(\.\d+)?W)?(\d+(\.\d+)?D)?(T(?=\d)(\d+(\.\d+)?H)?(\d+(\.\d+)?M)?(\d+(\.\d+)?S)?)?$"


# Limits on what a policy file may be: a real policy is a few KB, a few levels deep, with no aliases.
MAX_DEPTH = 32  # mappings and lists inside each other
MAX_NODES = 100_000  # values after YAML aliases are expanded (a "billion laughs" file expands to 10^9)


def _shown(value: object) -> str:
    """``repr`` of a bad value, capped: an error never echoes a whole (possibly hostile) value."""
    if isinstance(value, (dict, list, tuple, set)):
        return f"a {'mapping' if isinstance(value, dict) else 'list'} of {len(value)} item(s)"
    text = repr(value[: SHOWN + 1] if isinstance(value, str) else value)
    return text if len(text) <= SHOWN else text[: SHOWN - 3] + "..."


# --------------------------------------------------------------------------------------------
# The file's shape (pydantic, camelCase as ARM writes it). Unset = inherited; null = not governed.
# --------------------------------------------------------------------------------------------


def _delay(value: object) -> timedelta:
    if not isinstance(value, str):
        raise ValueError(f"{_shown(value)} is not an ISO-8601 duration; write e.g. PT15M (quoted or not)")
    try:
        delta = parse_iso(value)
    except ValueError as exc:
        try:  # a TimeSpan such as "00:15": say what it means in ISO-8601
            hint = parse_delay(value)
        except ValueError:
            hint = None
        if hint is not None and hint > timedelta(0):
            raise ValueError(f"{_shown(value)} is not an ISO-8601 duration; write {format_iso(hint)}") from None
        raise ValueError(str(exc)) from None
    if delta <= timedelta(0):
        raise ValueError(f"{_shown(value)} must be longer than zero; write e.g. PT15M")
    return delta


Delay = Annotated[
    timedelta,
    PlainValidator(_delay),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": _ISO_PATTERN,
            "description": "ISO-8601 duration longer than zero, as ARM writes it (PT15M, PT1H30M)",
            "examples": ["PT15M", "PT1H"],
        }
    ),
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, field_title_generator=lambda name, _info: name)


def _bound_type(setting: Setting) -> tuple[Any, dict[str, Any]]:
    """The policy value a setting's bound takes (one of its enum values, ``Enabled``, a delay, a list of
    allowed values, ``Forbidden``/``Allowed``, ``true``/``false``) and the field's constraints."""
    if setting.kind in ("max-delay", "max-duration"):
        return Delay, {}
    if setting.kind == "one-of":
        return list[Annotated[str, Field(pattern=setting.pattern)]], {"min_length": 1, "max_length": 200}
    if setting.kind == "forbidden":
        return Literal["Allowed", "Forbidden"], {}
    if setting.kind == "required":
        return bool, {}
    values = setting.scale[-1:] if setting.kind == "enabled" else setting.scale
    return cast(Any, Literal)[values], {}


def _section_model(profile: Profile) -> type[BaseModel]:
    """The policy file section bounding one ARM profile: a key per governed setting, in table order."""
    fields: dict[str, Any] = {}
    for s in GOVERNED:
        if s.profile == profile:
            kind, constraints = _bound_type(s)
            fields[s.policy_key] = (kind | None, Field(None, description=s.description, **constraints))
    return create_model(profile.model, __base__=_Strict, __doc__=profile.description, **fields)


_SECTIONS: dict[str, type[BaseModel]] = {profile.section: _section_model(profile) for profile in PROFILES}

if TYPE_CHECKING:  # the section keys are generated from the table; mypy sees the base
    _ScopeBase = _Strict
else:
    _ScopeBase = create_model(
        "_ScopeBase", __base__=_Strict, **{section: (model | None, None) for section, model in _SECTIONS.items()}
    )


class ScopeBounds(_ScopeBase):
    """Bounds for one scope. In an override, keys you omit are inherited; null means not governed here."""


class Overrides(_Strict):
    subscriptions: dict[str, ScopeBounds] = Field(
        default_factory=dict,
        description="Per subscription id (GUID); beats the baseline",
        json_schema_extra={"propertyNames": {"pattern": _SUBSCRIPTION_KEY.pattern}},
    )
    resourceGroups: dict[str, ScopeBounds] = Field(
        default_factory=dict,
        description='Per "<subscription id>/<resource group>"; beats subscription overrides',
        json_schema_extra={"propertyNames": {"pattern": _RESOURCE_GROUP_KEY.pattern}},
    )


class PolicyFile(ScopeBounds):
    """labguard policy: the bounds Azure Lab Services lab plans must stay within."""

    mode: Mode = Field("audit", description="audit = report only (default); enforce = apply minimal patches")
    exemptionTag: str = Field(
        DEFAULT_EXEMPTION_TAG,
        min_length=1,
        max_length=500,
        description="Plan tag whose value (a reason) exempts the plan; '<tag>-until' may hold an end date",
    )
    overrides: Overrides = Field(default_factory=Overrides)


def policy_json_schema() -> dict[str, Any]:
    """The JSON Schema of the policy file (what ``--write-schema`` writes)."""
    schema = PolicyFile.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": "policy.schema.json", **schema}


# --------------------------------------------------------------------------------------------
# Effective rules
# --------------------------------------------------------------------------------------------


def _layer(parent: Rules, scope: ScopeBounds) -> Rules:
    """Apply one scope's bounds over its parent: set keys win, null un-governs, omitted keys inherit."""
    bounds: dict[str, Bound | None] = dict(parent.bounds)
    for setting in GOVERNED:
        section, key = setting.profile.section, setting.policy_key
        if section not in scope.model_fields_set:
            continue
        given: BaseModel | None = getattr(scope, section)
        if given is None:
            bounds[key] = None
        elif key in given.model_fields_set:
            value = getattr(given, key)
            bounds[key] = tuple(value) if isinstance(value, list) else value
    return Rules.of(**bounds)


# --------------------------------------------------------------------------------------------
# Loading and validation
# --------------------------------------------------------------------------------------------


def load_policy(
    path: str | os.PathLike[str],
    mode_override: Mode | None = None,
    *,
    override_source: str = "app setting LABGUARD_MODE",
) -> Policy:
    """Read and validate a policy file; ``mode_override`` (LABGUARD_MODE) beats the file's ``mode``.

    The one rule for the mode: the app setting (or the command) wins when it is set, the file otherwise,
    audit when neither says; ``Policy.mode_source`` names which, so every run can say it at start.
    """
    source = os.fspath(path)
    try:
        with open(source, encoding="utf-8") as handle:
            text = handle.read(MAX_POLICY_BYTES + 1)
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise PolicyError(source, "", f"cannot read the policy file: {reason}") from None
    if len(text) > MAX_POLICY_BYTES:
        raise PolicyError(
            source, "", f"the policy file is larger than {MAX_POLICY_BYTES // 1000} KB; a policy is a few KB"
        )
    try:
        data = _read_yaml(text)
    except yaml.YAMLError as exc:
        raise PolicyError(source, "", f"not valid YAML: {_yaml_problem(exc)}") from None
    except _TooBig as exc:
        raise PolicyError(source, "", str(exc)) from None
    except RecursionError:
        raise PolicyError(source, "", f"nested more than {MAX_DEPTH} levels deep") from None
    policy = parse_policy(data, source)
    if mode_override is None:
        return policy
    return dataclasses.replace(policy, mode=mode_override, mode_source=override_source)


def parse_policy(data: object, source: str) -> Policy:
    """Validate already-parsed policy data (a mapping as read from YAML or JSON)."""
    if data is None:
        raise PolicyError(source, "", "the policy is empty; write at least one bound (see policy.yaml)")
    if not isinstance(data, Mapping):
        raise PolicyError(source, "", f"the policy must be a mapping of keys, not {type(data).__name__}")
    try:
        _check_tree(data)
    except _TooBig as exc:
        raise PolicyError(source, "", str(exc)) from None
    try:
        model = PolicyFile.model_validate(data)
    except ValidationError as exc:
        raise _policy_error(source, exc) from None
    except (TypeError, RecursionError) as exc:  # keys pydantic cannot read (a list as a key, say)
        raise PolicyError(source, "", f"unreadable policy structure ({type(exc).__name__})") from None
    if _TAG_FORBIDDEN.search(model.exemptionTag):
        raise PolicyError(
            source, "exemptionTag", f"{_shown(model.exemptionTag)}: Azure tag names cannot hold < > % & \\ ? /"
        )

    baseline = _layer(Rules(), model)
    _check_scope(source, "connection", baseline)
    subscriptions: dict[str, Rules] = {}
    for key, scope in model.overrides.subscriptions.items():
        where = f"overrides.subscriptions{_key(key)}"
        if not _SUBSCRIPTION_KEY.match(key):
            raise PolicyError(
                source, where, "not a subscription id; write a GUID such as 00000000-0000-0000-0000-000000000000"
            )
        if key.lower() in subscriptions:
            raise PolicyError(source, where, "this subscription is listed twice (ids are case-insensitive)")
        subscriptions[key.lower()] = rules = _layer(baseline, scope)
        _check_scope(source, f"{where}.connection", rules)
    groups: dict[str, Rules] = {}
    for key, scope in model.overrides.resourceGroups.items():
        where = f"overrides.resourceGroups{_key(key)}"
        if not _RESOURCE_GROUP_KEY.match(key):
            raise PolicyError(source, where, 'write "<subscription id>/<resource group name>"')
        sub = key.split("/", 1)[0].lower()
        if key.lower() in groups:
            raise PolicyError(source, where, "this resource group is listed twice (names are case-insensitive)")
        groups[key.lower()] = rules = _layer(subscriptions.get(sub, baseline), scope)
        _check_scope(source, f"{where}.connection", rules)
    return Policy(
        mode=model.mode,
        source=source,
        baseline=baseline,
        subscriptions=MappingProxyType(subscriptions),
        resource_groups=MappingProxyType(groups),
        exemption_tag=model.exemptionTag,
        mode_source=f"policy file {source}" if "mode" in model.model_fields_set else Policy.mode_source,
    )


def _check_scope(source: str, where: str, rules: Rules) -> None:
    """A lab needs a client channel that may be Public; a scope that forbids every one is unusable."""
    channels = [(s, rules.bound(s)) for s in GOVERNED if s.client_channel]
    if channels and all(bound is not None and bound != s.scale[-1] for s, bound in channels):
        top = channels[0][0].scale[-1]
        named = " and ".join(f"{s.policy_key} (at most {bound})" for s, bound in channels)
        raise PolicyError(
            source,
            where,
            f"{named} {'both' if len(channels) == 2 else 'all'} forbid {top} in this "
            f"scope, so no lab could be created; allow {top} on at least one client channel",
        )


def _key(key: str) -> str:
    return f'["{key[:SHOWN]}"]'


_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _path(loc: Sequence[int | str]) -> str:
    text, previous = "", None
    for part in loc:
        if previous in ("subscriptions", "resourceGroups"):  # an override's key, even if it looks like a name
            text += f'["{str(part)[:SHOWN]}"]'
        elif isinstance(part, int):
            text += f"[{part}]"
        elif _IDENT.match(part):
            text += f".{part}" if text else part
        else:
            text += f'["{str(part)[:SHOWN]}"]'
        previous = part
    return text


def _allowed_keys(loc: Sequence[int | str]) -> list[str]:
    """The keys the model accepts at ``loc`` (the parent of an unknown key)."""
    model: type[BaseModel] = PolicyFile
    parts = list(loc)
    while parts:
        info = model.model_fields.get(str(parts.pop(0)))
        if info is None:
            return []
        if get_origin(info.annotation) is dict and parts:
            parts.pop(0)  # the override's key (a subscription or resource group)
        found = [a for a in (info.annotation, *get_args(info.annotation)) if isinstance(a, type)]
        target = next((a for a in found if issubclass(a, BaseModel)), None)
        if target is None:
            return []
        model = target
    return list(model.model_fields)


def _policy_error(source: str, exc: ValidationError) -> PolicyError:
    errors = exc.errors(include_url=False)
    first = errors[0]
    loc = [p for p in first["loc"] if p != "[key]"]
    kind, value = first["type"], first.get("input")
    if kind == "extra_forbidden":
        allowed = ", ".join(_allowed_keys(loc[:-1]))
        problem = "unknown key" + (f"; allowed here: {allowed}" if allowed else "")
        where = _path(loc)
    elif kind == "value_error":
        problem = str(first["msg"]).removeprefix("Value error, ")
        where = _path(loc)
    elif kind == "literal_error":
        expected = str(first.get("ctx", {}).get("expected", "")).replace("'", "")
        problem = f"{_shown(value)} is not allowed; write {expected}"
        if expected == "Enabled":
            problem += ", or leave the key out to not govern it"
        where = _path(loc)
    elif kind in ("model_type", "dict_type"):
        problem = f"expected a mapping of keys, got {_shown(value)}"
        where = _path(loc)
    else:
        problem = f"{first['msg']} (got {_shown(value)})"
        where = _path(loc)
    if len(errors) > 1:
        problem += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return PolicyError(source, where, problem)


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys instead of silently keeping the last one, and stops
    composing past ``MAX_DEPTH`` levels (PyYAML's scanner slows down quadratically with nesting)."""

    _depth = 0

    def fetch_flow_collection_start(self, token_class: Any) -> None:
        if self.flow_level >= MAX_DEPTH:  # the scanner reads flow collections ahead: stop it there too
            raise _TooBig(f"nested more than {MAX_DEPTH} levels deep; a policy is a few levels deep")
        super().fetch_flow_collection_start(token_class)

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _TooBig(f"nested more than {MAX_DEPTH} levels deep; a policy is a few levels deep")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: set[object] = set()
    for key_node, _ in node.value:
        if not isinstance(key_node, yaml.ScalarNode):
            raise yaml.constructor.ConstructorError(
                "while reading a mapping",
                node.start_mark,
                "a key must be a plain name, not a list or mapping",
                key_node.start_mark,
            )
        key = loader.construct_object(key_node)
        if isinstance(key, (str, int, float, bool)) and key in seen:
            raise yaml.constructor.ConstructorError(
                "while reading a mapping", node.start_mark, f"duplicate key {_shown(key)}", key_node.start_mark
            )
        if isinstance(key, (str, int, float, bool)):
            seen.add(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


class _TooBig(ValueError):
    """The policy is nested too deeply or expands (through YAML aliases) beyond a sane size."""


def _read_yaml(text: str) -> object:
    """Compose the YAML, refuse it if too deep or too big once aliases are expanded, then build it."""
    loader = _UniqueKeyLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_size(node, _node_children)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _node_children(node: object) -> list[object]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _data_children(value: object) -> list[object]:
    if isinstance(value, Mapping):
        return [part for pair in value.items() for part in pair]
    if isinstance(value, (list, tuple)):
        return list(value)
    return []


def _check_tree(data: object) -> None:
    _check_size(data, _data_children)


def _check_size(root: object, children_of: Any) -> None:
    """Iterative walk (no recursion) counting values as if every alias were expanded; shared nodes once."""
    sizes: dict[int, int] = {}
    depths: dict[int, int] = {}
    active: set[int] = set()
    stack: list[tuple[object, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if key in sizes:
            continue
        children = children_of(node)
        if not finished:
            if key in active:
                raise _TooBig("a YAML alias refers to a value that contains it; write the values out")
            if not children:
                sizes[key], depths[key] = 1, 0
                continue
            active.add(key)
            stack.append((node, True))
            stack.extend((child, False) for child in children if id(child) not in sizes)
            continue
        active.discard(key)
        sizes[key] = 1 + sum(sizes[id(child)] for child in children)
        depths[key] = 1 + max(depths[id(child)] for child in children)
        if depths[key] > MAX_DEPTH:
            raise _TooBig(f"nested more than {MAX_DEPTH} levels deep; a policy is a few levels deep")
        if sizes[key] > MAX_NODES:
            raise _TooBig(
                f"more than {MAX_NODES} values once YAML aliases are expanded; write the policy out without aliases"
            )


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return " ".join(f"{where}{problem}".split())


def schema_text() -> str:
    """``policy.schema.json`` as ``labguard check-policy --write-schema`` writes it."""
    return json.dumps(policy_json_schema(), indent=2, ensure_ascii=False) + "\n"
