"""Checks shared by the enforcement tests (Functions, CLI, sweep) that run under both PATCH modes of the endpoint.

Real Lab Services may merge a PATCH's nested profiles into the stored plan or replace them; labguard's patch
must come out the same either way. These helpers check the two things that make it so: the PATCH sends each
drifted profile whole as read, and after enforcement the stored plan differs from the plan before only in the
governed leaves that were fixed.
"""

from __future__ import annotations

from typing import Any

PATCH_MODES = ("merge", "replace")
CONN, SHUT = "defaultConnectionProfile", "defaultAutoShutdownProfile"
# What the service applies for an absent enum leaf (the spec's defaults); an absent delay has no default.
SPEC_DEFAULT = {
    CONN: dict.fromkeys(("webSshAccess", "webRdpAccess", "clientSshAccess", "clientRdpAccess"), "None"),
    SHUT: {"shutdownOnDisconnect": "Disabled", "shutdownWhenNotConnected": "Disabled", "shutdownOnIdle": "None"},
}
# Properties the service owns and changes on every write.
SERVICE_OWNED = ("provisioningState", "resourceOperationError")


def patch_changes(patch: dict[str, Any], as_read: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The leaves a PATCH body changes, per profile, after asserting its shape: only ``properties``, and each
    profile in it is that profile exactly as read (every key, value and order) plus the changed leaves."""
    assert set(patch) == {"properties"}, patch
    changes: dict[str, dict[str, Any]] = {}
    for profile, sent in patch["properties"].items():
        read = as_read.get("properties", {}).get(profile) or {}
        assert list(sent)[: len(read)] == list(read), (profile, sent, read)
        changed = {k: v for k, v in sent.items() if k not in read or read[k] != v}
        assert changed, f"{profile} was sent without a change"
        changes[profile] = changed
    return changes


def _applied(body: dict[str, Any]) -> dict[str, Any]:
    """A plan's properties as the service applies them: absent enum leaves of the two profiles read as their
    defaults (a replacing service writes them out, a merging one leaves them absent; both mean the same)."""
    props = {k: v for k, v in (body.get("properties") or {}).items() if k not in SERVICE_OWNED}
    for profile, defaults in SPEC_DEFAULT.items():
        read = props.get(profile)
        if isinstance(read, dict) or profile in props:
            given = read if isinstance(read, dict) else {}
            props[profile] = {**defaults, **{k: v for k, v in given.items() if v is not None}}
    return {"properties": props, "tags": body.get("tags") or {}, "location": body.get("location")}


def assert_only_fixed(before: dict[str, Any], after: dict[str, Any], fixed: dict[str, dict[str, Any]]) -> None:
    """After enforcement the stored plan equals the plan before, except the ``fixed`` leaves ({profile: {key:
    value}}), which hold their new values: no ungoverned leaf, and no other leaf of a patched profile, changed."""
    expected = _applied(before)
    for profile, leaves in fixed.items():
        expected["properties"][profile] = {**SPEC_DEFAULT.get(profile, {}), **expected["properties"].get(profile, {})}
        expected["properties"][profile].update(leaves)
    assert _applied(after) == expected
