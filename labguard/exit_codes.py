"""What each exit status of ``labguard`` means, and which findings fail a run (``--fail-on``).

One meaning per code, so a CI job or a scheduled task can act on it without reading the output:

====  =========================================================================================
0     compliant: nothing selected by ``--fail-on`` was found, and every plan could be read
1     findings: drift left (audit) or not converged (enforce), or another ``--fail-on`` finding
2     usage or configuration: a bad flag, setting, policy file, credentials or permission to list
3     Azure could not be reached, or kept failing (5xx, timeouts) after the retries
130   interrupted (Ctrl-C); what was changed, in flight and not reached is printed first
====  =========================================================================================
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

COMPLIANT = 0
FINDINGS = 1
USAGE = 2
AZURE_UNAVAILABLE = 3
INTERRUPTED = 130

#: The findings ``--fail-on`` can select, and what each means.
FAIL_ON_CHOICES: dict[str, str] = {
    "drift": "a plan outside the policy (audit), or one enforce could not bring back (not converged)",
    "failed-provisioning": "a plan whose provisioning Failed (its owner's to fix; the Functions notify)",
    "exempt-expiring": "an exemption that ends within 14 days",
    "empty-scope": "a subscription or resource group in scope with no lab plan (a typo, usually)",
}
DEFAULT_FAIL_ON: tuple[str, ...] = ("drift", "failed-provisioning", "empty-scope")
EXPIRING_WITHIN_DAYS = 14


class FailOnError(ValueError):
    """A ``--fail-on`` value that is not one of :data:`FAIL_ON_CHOICES`."""


def parse_fail_on(values: Sequence[str] | None, *, allow_empty: bool = False) -> frozenset[str]:
    """``--fail-on drift,empty-scope`` (repeatable or comma-separated; ``none`` = nothing fails)."""
    chosen: set[str] = set()
    if not values:
        chosen = set(DEFAULT_FAIL_ON)
    else:
        for value in values:
            for part in value.split(","):
                name = part.strip().lower()
                if not name:
                    continue
                if name == "none":
                    continue
                if name == "all":
                    chosen |= set(FAIL_ON_CHOICES)
                    continue
                if name not in FAIL_ON_CHOICES:
                    raise FailOnError(
                        f"--fail-on {part.strip()!r} is not a finding; write any of {', '.join(FAIL_ON_CHOICES)} "
                        "(comma-separated), all, or none"
                    )
                chosen.add(name)
    if allow_empty:
        chosen.discard("empty-scope")
    return frozenset(chosen)


@dataclass(frozen=True)
class Tally:
    """What a run found, counted per kind, for :func:`decide`."""

    drift: int = 0  # drifted (audit, dry run) or not converged (enforce)
    failed_provisioning: int = 0
    exempt_expiring: int = 0
    empty_scopes: int = 0
    unreadable: int = 0  # plans or scopes Azure would not give us (after the retries)
    azure_failing: bool = False  # the unreadable ones failed for transport reasons or 5xx


def decide(tally: Tally, fail_on: Iterable[str]) -> int:
    """The exit status: Azure trouble first (3), then the selected findings (1), else 0."""
    selected = set(fail_on)
    if tally.unreadable and tally.azure_failing:
        return AZURE_UNAVAILABLE
    found = {
        "drift": tally.drift,
        "failed-provisioning": tally.failed_provisioning,
        "exempt-expiring": tally.exempt_expiring,
        "empty-scope": tally.empty_scopes,
    }
    if tally.unreadable or any(found[name] for name in selected):
        return FINDINGS
    return COMPLIANT
