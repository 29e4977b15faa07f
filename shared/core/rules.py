"""A validated policy as plain data: the effective bounds per scope (:class:`Rules`) and the policy
(:class:`Policy`), with no validation library. Validating a policy file is :mod:`shared.core.policy`'s (pydantic);
what reads a policy (evaluation, the runtime, a checked policy loaded by :mod:`shared.core.policy_check`)
needs only this module, so a new instance's first event does not import the validator.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from types import MappingProxyType
from typing import Literal

from shared.core.durations import format_iso
from shared.core.governed import EXPOSURE, GOVERNED, IDLE_MODES, PROFILES, Bound, Setting, rank_of
from shared.core.plans import PlanId

Mode = Literal["audit", "enforce"]

#: Exposure order of a connection channel: a higher rank exposes more.
CONNECTION_RANK: Mapping[str, int] = rank_of(EXPOSURE)
#: Strictness order of shutdownOnIdle (see :mod:`shared.core.governed`): a higher rank shuts VMs down more.
IDLE_RANK: Mapping[str, int] = rank_of(IDLE_MODES)

DEFAULT_EXEMPTION_TAG = "labguard:exempt"
MAX_POLICY_BYTES = 1_000_000  # a real policy is a few KB


@dataclass(frozen=True)
class Rules:
    """The effective bounds for one plan or lab after overrides: (policy key, bound) in table order; a setting
    left out is not governed. Build with ``Rules.of(maxIdleDelay=timedelta(minutes=15))``."""

    bounds: tuple[tuple[str, Bound], ...] = ()
    # policy key -> bound, built once: evaluation asks for every setting of every plan a sweep lists
    _by_key: Mapping[str, Bound] = field(init=False, repr=False, compare=False)
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_key", MappingProxyType(dict(self.bounds)))
        object.__setattr__(self, "_hash", hash(self.bounds))

    def __hash__(self) -> int:  # evaluation's caches look a plan's rules up once per plan: hash them once
        return self._hash

    @classmethod
    def of(cls, **bounds: Bound | list[str] | None) -> Rules:
        unknown = set(bounds) - {s.policy_key for s in GOVERNED}
        if unknown:
            raise TypeError(f"not governed settings: {', '.join(sorted(unknown))}")
        return cls(
            tuple(
                (s.policy_key, tuple(b) if isinstance(b, list) else b)
                for s in GOVERNED
                if (b := bounds.get(s.policy_key)) is not None
            )
        )

    def get(self, policy_key: str) -> Bound | None:
        """The bound on a setting by its policy key, or None when it is not governed."""
        return self._by_key.get(policy_key)

    def bound(self, setting: Setting) -> Bound | None:
        return self.get(setting.policy_key)

    def shown(self, setting: Setting) -> str | bool | list[str] | None:
        """The bound as the policy file writes it (delays as ISO-8601, lists as lists), or None when not governed."""
        value = self.get(setting.policy_key)
        if isinstance(value, timedelta):
            return format_iso(value)
        return list(value) if isinstance(value, tuple) else value

    def to_policy_dict(self) -> dict[str, dict[str, str | bool | list[str] | None]]:
        """These rules in the policy file's own shape (delays as ISO-8601), for ``check-policy`` output."""
        out: dict[str, dict[str, str | bool | list[str] | None]] = {profile.section: {} for profile in PROFILES}
        for setting in GOVERNED:
            out[setting.profile.section][setting.policy_key] = self.shown(setting)
        return out


@dataclass(frozen=True)
class Policy:
    """A validated policy. Look up a plan's or a lab's bounds with :meth:`rules_for`."""

    mode: Mode
    source: str
    baseline: Rules = field(default_factory=Rules)
    subscriptions: Mapping[str, Rules] = field(default_factory=dict)  # key: lower-case subscription id
    resource_groups: Mapping[str, Rules] = field(default_factory=dict)  # key: lower-case "<sub>/<rg>"
    exemption_tag: str = DEFAULT_EXEMPTION_TAG

    #: Where ``mode`` came from, said at start: the setting that overrode it, the file, or the default.
    mode_source: str = "default: neither LABGUARD_MODE nor the policy file sets it"
    #: How it was loaded, said at start: validated now, or its checked copy (:mod:`shared.core.policy_check`).
    load_note: str = field(default="validated at load", compare=False)

    @property
    def exemption_until_tag(self) -> str:
        """The tag holding an exemption's last day (ISO date, e.g. 2025-07-31)."""
        return f"{self.exemption_tag}-until"

    def rules_for(self, plan_id: PlanId) -> Rules:
        """Resource-group override, else subscription override, else the baseline (a lab: by ``LabId.scope``)."""
        if not self.resource_groups and not self.subscriptions:  # a baseline alone: most schools' policy
            return self.baseline
        sub = plan_id.subscription_id.lower()
        rules = self.resource_groups.get(f"{sub}/{plan_id.resource_group.lower()}")
        if rules is None:
            rules = self.subscriptions.get(sub, self.baseline)
        return rules

    def describe(self) -> dict[str, Rules]:
        """Effective rules per scope: ``baseline``, ``subscription <id>``, ``resource group <id>/<rg>``."""
        scopes = {"baseline": self.baseline}
        scopes.update({f"subscription {key}": rules for key, rules in sorted(self.subscriptions.items())})
        scopes.update({f"resource group {key}": rules for key, rules in sorted(self.resource_groups.items())})
        return scopes
