"""Lab plans as plain, frozen data: the one shape the core, notices and reports see.

ARM JSON (camelCase, api-version 2023-06-07) is mapped here and nowhere else, so the pure core
never sees SDK models or raw dictionaries. Mapping is total: missing optional profiles become
``None`` and unknown extra fields are ignored, because a sweep must never crash on one odd plan.
Delays are kept exactly as ARM wrote them (``PT5M`` or ``00:05``); :mod:`shared.core.durations` reads them.

The governed profiles (:mod:`shared.core.governed`) are kept whole, exactly as read (``LabPlan.profiles_as_read``):
:meth:`LabPlan.observed` reads a governed setting from them, and a patch sends each drifted profile back
whole, because a service that replaces nested objects must get every other key as it was, or it resets them
to the spec's defaults.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar, Self

from shared.core.governed import PLAN_PROFILES, Setting, plan_settings

PROVIDER = "Microsoft.LabServices"
TERMINAL_STATES = frozenset({"Succeeded", "Failed"})


# ARM's grammar for a lab plan id, ASCII only (re.ASCII: no Unicode case folding, so ``labPlan\u017f`` (long s) is not
# ``labPlans``, and no Unicode ``\w``). Resource group: 1-90 of letters, digits, ``-_.()``, not ending
# in a period (ARM's resource group rules). Lab plan name: 1-100 of letters, digits, ``-_.``, starting
# with a letter and ending with a letter or digit (the service's rules for Microsoft.LabServices/labPlans),
# so ``.`` and ``..`` segments can never pass.
def resource_id_grammar(collection: str, name_first: str) -> re.Pattern[str]:
    """ARM's grammar for ``/subscriptions/{guid}/resourceGroups/{rg}/providers/Microsoft.LabServices/
    {collection}/{name}``: ASCII only, the resource group's and the name's rules, no child resources."""
    return re.compile(
        r"/subscriptions/(?P<sub>[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12})"
        r"/resourceGroups/(?P<rg>[-A-Z0-9_.()]{0,89}[-A-Z0-9_()])"
        rf"/providers/Microsoft\.LabServices/{collection}/(?P<name>{name_first}(?:[-A-Z0-9_.]{{0,98}}[A-Z0-9])?)/?",
        re.IGNORECASE | re.ASCII,
    )


def match_resource_id(grammar: re.Pattern[str], text: object, what: str, collection: str) -> re.Match[str]:
    """Match an id strictly; ValueError naming at most a capped part of a rejected (maybe hostile) value."""
    match = grammar.fullmatch(text) if isinstance(text, str) and len(text) <= _MAX_ID else None
    if match is None:
        shown = repr(text[:_ID_SHOWN]) + ("..." if len(text) > _ID_SHOWN else "") if isinstance(text, str) else "?"
        raise ValueError(
            f"not a {what} resource id: {shown} (expected /subscriptions/<guid>/resourceGroups/"
            f"<name>/providers/Microsoft.LabServices/{collection}/<name>, ASCII, ARM's name rules)"
        )
    return match


_PLAN_ID = resource_id_grammar("labPlans", "[A-Z]")
_MAX_ID = 400  # the longest id the grammar allows is about 300 characters
_ID_SHOWN = 200  # characters of a rejected id shown in an error (never the whole hostile value)


@dataclass(frozen=True)
class ResourceId:
    """An ARM id of one Lab Services resource (a subclass says which collection). ARM ids are case-insensitive,
    so equality and hashing use ``key``; ids of different kinds are never equal."""

    subscription_id: str
    resource_group: str
    name: str
    collection: ClassVar[str]  # the ARM collection: ``labPlans``, ``labs``
    what: ClassVar[str]  # how an error names it
    grammar: ClassVar[re.Pattern[str]]

    @classmethod
    def parse(cls, text: str) -> Self:
        """Parse an id strictly (no child resources, no trailing parts); ValueError otherwise."""
        match = match_resource_id(cls.grammar, text, cls.what, cls.collection)
        return cls(match["sub"].lower(), match["rg"], match["name"])

    # Worked out once per id (cached in the instance, which a frozen dataclass allows): a sweep compares, hashes
    # and records each id many times.
    @functools.cached_property
    def key(self) -> str:
        """Canonical lower-case id: use it for comparisons, dictionary keys and ledger rows."""
        return self.path.lower()

    @functools.cached_property
    def path(self) -> str:
        """The ARM path of the resource, as used in REST URLs."""
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
            f"/providers/{PROVIDER}/{self.collection}/{self.name}"
        )

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and isinstance(other, ResourceId) and other.key == self.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __str__(self) -> str:
        return self.path


class PlanId(ResourceId):
    """A lab plan's ARM id."""

    collection = "labPlans"
    what = "lab plan"
    grammar = _PLAN_ID


@dataclass(frozen=True)
class SupportInfo:
    """``supportInfo``: written by plan owners, so every field is untrusted text."""

    url: str | None = None
    email: str | None = None
    phone: str | None = None
    instructions: str | None = None


@dataclass(frozen=True)
class OperationError:
    """``resourceOperationError`` (2023-06-07 only): why the last operation on a plan or a lab failed."""

    action: str | None = None
    code: str | None = None
    message: str | None = None
    timestamp: str | None = None

    @classmethod
    def from_arm(cls, value: object) -> OperationError | None:
        """Map ``properties.resourceOperationError`` (None when absent or not an object)."""
        error = arm_object_or_none(value)
        if error is None:
            return None
        return cls(
            action=arm_text(error.get("action")),
            code=arm_text(error.get("code")),
            message=arm_text(error.get("message")),
            timestamp=arm_text(error.get("timestamp")),
        )


@dataclass(frozen=True)
class LabPlan:
    """What labguard observed of one lab plan."""

    id: PlanId
    location: str | None = None
    provisioning_state: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    support: SupportInfo | None = None
    error: OperationError | None = None
    modified_by: str | None = None  # systemData.lastModifiedBy: who wrote the plan last
    modified_by_type: str | None = None  # systemData.lastModifiedByType: User, Application, ManagedIdentity, Key
    modified_at: str | None = None  # systemData.lastModifiedAt, as ARM wrote it (untrusted)
    # ARM profile key -> that profile's JSON object exactly as read: a read-only copy of its keys (values are
    # shared with the body read, not copied: a hostile nesting depth must not cost a recursion; never mutate them).
    profiles_as_read: Mapping[str, Mapping[str, Any]] = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        return self.id.name

    def observed(self, setting: Setting) -> str | None:
        """A governed setting as ARM wrote it (``PT15M`` and ``00:15`` alike), or None if it is absent."""
        key = setting.profile.arm_key
        return None if key is None else setting.read(self.profiles_as_read.get(key))

    def content_key(self) -> tuple[Any, ...]:
        """What :meth:`observed` depends on, as a key (see :func:`profiles_content`)."""
        return profiles_content(self.profiles_as_read)

    @staticmethod
    def settings() -> tuple[Setting, ...]:
        """The governed settings a plan has (its default profiles)."""
        return plan_settings()

    @staticmethod
    def path_of(setting: Setting) -> tuple[str, ...]:
        """Where ARM keeps a governed setting in a plan body."""
        return setting.path

    @property
    def is_terminal(self) -> bool:
        """Only a plan in a terminal state may be patched; ARM rejects or queues writes otherwise."""
        return self.provisioning_state in TERMINAL_STATES

    @classmethod
    def from_arm(cls, body: Mapping[str, Any]) -> LabPlan:
        """Map one lab plan's ARM JSON. Raises ValueError only when ``id`` is missing or not a plan id."""
        plan_id = PlanId.parse(str(body.get("id", "")))
        props = _obj(body.get("properties"))
        support = _obj_or_none(props.get("supportInfo"))
        system = _obj(body.get("systemData"))
        return cls(
            id=plan_id,
            location=_str(body.get("location")),
            provisioning_state=_str(props.get("provisioningState")),
            tags=arm_tags(body),
            support=None
            if support is None
            else SupportInfo(
                url=_str(support.get("url")),
                email=_str(support.get("email")),
                phone=_str(support.get("phone")),
                instructions=_str(support.get("instructions")),
            ),
            error=OperationError.from_arm(props.get("resourceOperationError")),
            modified_by=_str(system.get("lastModifiedBy")),
            modified_by_type=_str(system.get("lastModifiedByType")),
            modified_at=_str(system.get("lastModifiedAt")),
            profiles_as_read={
                profile.arm_key: MappingProxyType(
                    dict(read) if type(read) is dict else {str(k): v for k, v in read.items()}
                )
                for profile in PLAN_PROFILES
                if profile.arm_key and (read := _obj_or_none(props.get(profile.arm_key))) is not None
            },
        )


# JSON objects are dicts: ``type(...) is dict`` first, because ``isinstance(x, Mapping)`` is an ABC check
# that costs more than the rest of the mapping (a sweep maps every plan it lists).


def _obj(value: object) -> Mapping[str, Any]:
    if value is None:
        return {}
    return value if type(value) is dict or isinstance(value, Mapping) else {}


def _obj_or_none(value: object) -> Mapping[str, Any] | None:
    if value is None:
        return None
    return value if type(value) is dict or isinstance(value, Mapping) else None


def _str(value: object) -> str | None:
    if value is None or type(value) is str:
        return value
    return value if isinstance(value, str) else str(value)


def profiles_content(profiles: Mapping[str, Mapping[str, Any]]) -> tuple[Any, ...]:
    """Profiles as read, as a key equal for equal profiles (hashable unless a leaf is an object or a list).
    Cheap to build and to look up; see :func:`small_text_content` before keeping one."""
    return tuple([(key, tuple(profile.items())) for key, profile in profiles.items()])


#: The longest key or value and the most keys of a profile :func:`small_text_content` lets a cache keep. Real
#: profiles have at most seven keys and values of at most about 30 characters (a VM size); more is hostile.
CONTENT_TEXT_CHARS = 100
CONTENT_KEYS = 24
_TEXT_ONLY = frozenset((str,))


def small_text_content(content: tuple[Any, ...]) -> bool:
    """Whether a :func:`profiles_content` key may be kept: text leaves only (``True`` and ``1`` hash and compare
    alike but read differently), few and short (a hostile value is never held in memory by a cache)."""
    for _key, items in content:
        if len(items) > CONTENT_KEYS:
            return False
        for leaf, value in items:
            if type(value) is not str or len(value) > CONTENT_TEXT_CHARS or len(leaf) > CONTENT_TEXT_CHARS:
                return False
    return True


def arm_tags(body: Mapping[str, Any]) -> dict[str, str]:
    """A resource's ``tags`` as text (values that are not scalars are left out)."""
    return {str(k): str(v) for k, v in _obj(body.get("tags")).items() if isinstance(v, (str, int, float, bool))}


# What the lab mapping (shared.core.labs) reads ARM JSON with: the same rules as a plan's.
arm_object, arm_object_or_none, arm_text = _obj, _obj_or_none, _str
