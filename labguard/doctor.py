"""``labguard doctor``: what an admin runs once, with their own credentials, before switching to enforce.

Our local endpoint encodes our assumptions about Lab Services; the admin's subscription is where they are
settled. Doctor reads (who am I, may I read and write lab plans, is the provider registered, which plans
are in scope, is the policy sound) and, with ``--live RG``, writes one throwaway lab plan to see how the
service answers a PATCH: merge or replace of nested profiles, 200 or 202, the operation URL and whether
this identity may read it, and whether an absent delay stays absent. Each line says which labguard
behaviour the answer confirms. The throwaway plan is deleted in a ``finally``, also on Ctrl-C.

Exit status: 0 every line ok; 1 a warning or failure; 2 a usage or configuration mistake.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import fnmatch
import json
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl, quote, urlsplit

from labguard import runner
from shared.core.governed import AUTO_SHUTDOWN, CONNECTION, GOVERNED
from shared.core.plans import PROVIDER
from shared.core.policy import DEFAULT_EXEMPTION_TAG, Policy, load_policy
from shared.edge.arm import API_VERSION, ArmReply, BadPlan, LabPlansArm
from shared.errors import ArmError, PolicyError, ProviderNotRegistered
from shared.runtime.reconcile import sweep_scopes
from shared.runtime.settings import Settings

Verdict = Literal["ok", "warn", "fail"]

PROVIDERS_API = "2021-04-01"  # Microsoft.Resources: Providers - Get
PERMISSIONS_API = "2022-04-01"  # Microsoft.Authorization: Permissions - List
WRITE_ACTION = f"{PROVIDER}/labPlans/write"
READ_ACTION = f"{PROVIDER}/labPlans/read"
TERMINAL = frozenset({"succeeded", "failed", "canceled"})
DELAYS = {s.arm_key: s.feature for s in GOVERNED if s.feature}  # delay -> the switch or mode of its feature
# The throwaway plan, from the table of governed settings: a non-default sibling (the second client channel,
# client RDP, Public) shows whether a PATCH of another leaf (the first, client SSH, set to None) keeps it
# (merge) or resets it to the spec's default (replace). The web channels are None. Every shutdown feature is
# off; the first delay is written anyway (is it kept or dropped on read?), the others are not (do they stay
# absent?).
_PROBED, _SIBLING = (s for s in GOVERNED if s.profile == CONNECTION and s.client_channel)
_FIRST_DELAY = next(s for s in GOVERNED if s.profile == AUTO_SHUTDOWN and s.feature)
PROBE_CONNECTION = {s.arm_key: s.scale[-1 if s.client_channel else 0] for s in GOVERNED if s.profile == CONNECTION}
PROBE_SHUTDOWN = {s.arm_key: s.scale[0] for s in GOVERNED if s.profile == AUTO_SHUTDOWN and s.scale} | {
    _FIRST_DELAY.arm_key: "PT15M"
}
PROBE_PATCH = {"properties": {CONNECTION.arm_key: {_PROBED.arm_key: _PROBED.scale[0]}}}


@dataclass(frozen=True)
class Check:
    """One line of the table: what was checked, the verdict, what was found, what it means for labguard."""

    name: str
    verdict: Verdict
    detail: str
    labguard: str = ""


@dataclass
class Report:
    settings: Settings
    policy_file: str
    checks: list[Check] = field(default_factory=list)
    live: dict[str, Any] = field(default_factory=dict)

    def add(self, name: str, verdict: Verdict, detail: str, labguard: str = "") -> Check:
        check = Check(name, verdict, detail, labguard)
        self.checks.append(check)
        return check

    @property
    def exit_code(self) -> int:
        return 0 if all(check.verdict == "ok" for check in self.checks) else 1

    def as_json(self) -> dict[str, Any]:
        return {
            "command": "doctor",
            "endpoint": self.settings.arm_endpoint,
            "scope": {
                "subscriptions": list(self.settings.subscriptions),
                "resourceGroups": list(self.settings.resource_groups),
            },
            "policy": self.policy_file,
            "checks": [asdict(check) for check in self.checks],
            "live": self.live or None,
            "exitCode": self.exit_code,
        }


# ------------------------------------------------------------------------------------ pure helpers


def token_claims(token: str) -> dict[str, Any]:
    """The payload of our own access token, read (never trusted, never printed) to say who we are."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError, binascii.Error):
        return {}
    return claims if isinstance(claims, dict) else {}


def identity_text(claims: Mapping[str, Any]) -> str:
    """``user alice@school.edu (oid …)`` or ``application <appid> (oid …)``, from the token's claims."""
    oid = str(claims.get("oid") or "?")
    tenant = str(claims.get("tid") or "?")
    user = claims.get("upn") or claims.get("unique_name") or claims.get("preferred_username")
    if user and claims.get("idtyp") != "app":
        return f"user {user} (oid {oid}, tenant {tenant})"
    return f"application {claims.get('appid') or claims.get('azp') or '?'} (oid {oid}, tenant {tenant})"


def _matches(pattern: str, action: str) -> bool:
    return fnmatch.fnmatchcase(action.lower(), pattern.lower())


def allowed(permissions: Sequence[Mapping[str, Any]], action: str) -> bool:
    """ARM's rule: some role's ``actions`` match and that same role's ``notActions`` do not."""
    for entry in permissions:
        actions = [str(a) for a in entry.get("actions") or []]
        not_actions = [str(a) for a in entry.get("notActions") or []]
        if any(_matches(a, action) for a in actions) and not any(_matches(n, action) for n in not_actions):
            return True
    return False


def url_shape(url: str) -> str:
    """An operation URL with its ids written as placeholders: what its form is, not which operation."""
    parts = urlsplit(url)
    segments = parts.path.split("/")
    out: list[str] = []
    for index, segment in enumerate(segments):
        before = segments[index - 1].lower() if index else ""
        if before == "subscriptions":
            out.append("{subscriptionId}")
        elif before == "locations":
            out.append("{location}")
        elif before in ("operationresults", "operationstatuses"):
            out.append("{operationId}")
        elif before == "resourcegroups":
            out.append("{resourceGroup}")
        else:
            out.append(segment)
    query = "&".join(f"{key}=…" for key, _ in parse_qsl(parts.query, keep_blank_values=True))
    return "/".join(out) + (f"?{query}" if query else " (no query: no api-version)")


def override_problems(policy: Policy, settings: Settings, groups_seen: Mapping[str, set[str]]) -> list[str]:
    """Overrides that match nothing in scope: another subscription, a group outside -g, or no plan there."""
    subs = set(settings.subscriptions)
    problems = [f"subscription {key}: not in scope" for key in sorted(policy.subscriptions) if key.lower() not in subs]
    for key in sorted(policy.resource_groups):
        sub, _, group = key.partition("/")
        if sub not in subs:
            problems.append(f"resource group {key}: its subscription is not in scope")
        elif settings.resource_groups and group not in settings.resource_groups:
            problems.append(f"resource group {key}: outside the resource groups in scope")
        elif group not in groups_seen.get(sub, set()):
            problems.append(f"resource group {key}: no lab plan found there")
    return problems


# ------------------------------------------------------------------------------------ the run


async def diagnose(
    settings: Settings,
    *,
    report: Report | None = None,
    live_group: str | None = None,
    location: str | None = None,
    credential: Any | None = None,
    wait_s: float = 300.0,
) -> Report:
    """Run every check against the configured ARM endpoint; never raises for what it finds."""
    from shared.edge.arm import open_arm

    report = report if report is not None else Report(settings, settings.policy_file)
    policy = _check_policy_file(report, settings)
    async with open_arm(settings, credential=credential) as session:
        if not await _check_credential(report, session):
            report.add("everything else", "fail", "not checked: every other check needs a working credential")
            return report
        arm: LabPlansArm = session.plans
        for sub in settings.subscriptions:
            await _check_provider(report, arm, sub)
        groups_seen: dict[str, set[str]] = {}
        found_location: str | None = None
        for sub, group in sweep_scopes(settings.subscriptions, settings.resource_groups):
            found = await _check_listing(report, arm, sub, group, groups_seen)
            found_location = found_location or found
            await _check_write_permission(report, arm, sub, group)
        if policy is not None:
            problems = override_problems(policy, settings, groups_seen)
            count = len(policy.subscriptions) + len(policy.resource_groups)
            if problems:
                report.add(
                    "policy overrides",
                    "warn",
                    f"{len(problems)} of {count} match nothing in scope: " + "; ".join(problems[:5]),
                    "an override that matches nothing changes nothing: check the subscription id / group name",
                )
            else:
                report.add(
                    "policy overrides", "ok", f"{count} override(s), each matches plans in scope" if count else "none"
                )
        if live_group is not None:
            sub = settings.subscriptions[0]
            tag = policy.exemption_tag if policy is not None else DEFAULT_EXEMPTION_TAG
            await _live(report, arm, sub, live_group, location or found_location, tag, wait_s)
    return report


def _check_policy_file(report: Report, settings: Settings) -> Policy | None:
    try:
        policy = load_policy(settings.policy_file)
    except PolicyError as exc:
        report.add("policy", "fail", str(exc), "nothing runs on a bad policy: labguard refuses it at load")
        return None
    report.add(
        "policy",
        "ok",
        f"valid; mode {policy.mode} in the file (LABGUARD_MODE beats it)",
        "audit reports only; enforce writes only when you choose it",
    )
    return policy


async def _check_credential(report: Report, session: Any) -> bool:
    try:
        await runner._check_sign_in(session)
        token = await session.credential.get_token(session.scope)
    except runner.ConfigError as exc:
        report.add("credential", "fail", str(exc))
        return False
    claims = token_claims(token.token)
    source = type(getattr(session.credential, "_successful_credential", None) or session.credential).__name__
    report.add(
        "credential",
        "ok",
        f"{identity_text(claims)}, from {source}",
        "the checks below are for this identity; the Function App's own identity gets the labguard roles (infra/)",
    )
    return True


async def _check_provider(report: Report, arm: LabPlansArm, sub: str) -> None:
    name = f"provider {sub[:8]}…"
    try:
        reply = await arm.request(
            "GET", f"/subscriptions/{quote(sub)}/providers/{PROVIDER}?api-version={PROVIDERS_API}"
        )
    except ArmError as exc:
        report.add(name, "fail", f"cannot ask ARM: {runner._first_line(str(exc))}")
        return
    state = str(reply.body.get("registrationState") or "")
    if reply.status == 200 and state.lower() == "registered":
        report.add(name, "ok", f"{PROVIDER} Registered", "labguard lists and (in enforce) writes plans here")
    elif reply.status == 200:
        report.add(
            name,
            "warn",
            f"{PROVIDER} {state or 'state unknown'}: no lab plans can exist here",
            "sweeps report 'not registered, no plans here' (record sweep.not-registered) and do not fail; "
            f"`az provider register -n {PROVIDER} --subscription {sub}` once you create lab plans here",
        )
    else:
        report.add(
            name,
            "warn",
            f"cannot read the registration (HTTP {reply.status} {_code(reply)})".rstrip(),
            "labguard does not need this read; the listing below shows whether plans are readable",
        )


async def _check_listing(
    report: Report, arm: LabPlansArm, sub: str, group: str | None, groups_seen: dict[str, set[str]]
) -> str | None:
    scope = f"{sub[:8]}…" + (f"/{group}" if group else "")
    name = f"read plans {scope}"
    count, unreadable, location = 0, 0, None
    try:
        async for item in arm.list_plans(sub, group):
            if isinstance(item, BadPlan):
                unreadable += 1
                continue
            count += 1
            groups_seen.setdefault(sub, set()).add(item.id.resource_group.lower())
            location = location or item.location
    except ProviderNotRegistered:
        report.add(name, "warn", "409 MissingSubscriptionRegistration: not registered, no plans here")
        return None
    except ArmError as exc:
        hint = "give this identity Microsoft.LabServices/labPlans/read (the labguard role or Reader)"
        report.add(
            name,
            "fail",
            f"listing refused: HTTP {exc.status} {exc.code or ''}".rstrip(),
            hint if exc.status == 403 else "",
        )
        return None
    detail = f"{count} lab plan{'s' if count != 1 else ''} found" + (f", {unreadable} unreadable" if unreadable else "")
    report.add(
        name,
        "ok" if not unreadable else "warn",
        detail,
        "read access confirmed: audit works here"
        + ("; unreadable plans are reported, never written" if unreadable else ""),
    )
    return str(location) if location else None


async def _check_write_permission(report: Report, arm: LabPlansArm, sub: str, group: str | None) -> None:
    path = f"/subscriptions/{quote(sub)}" + (f"/resourceGroups/{quote(group)}" if group else "")
    name = f"write access {sub[:8]}…" + (f"/{group}" if group else "")
    try:
        reply = await arm.request(
            "GET", f"{path}/providers/Microsoft.Authorization/permissions?api-version={PERMISSIONS_API}"
        )
    except ArmError as exc:
        report.add(name, "warn", f"cannot ask ARM: {runner._first_line(str(exc))}")
        return
    if reply.status != 200:
        report.add(
            name, "warn", f"cannot read this identity's permissions (HTTP {reply.status} {_code(reply)})".rstrip()
        )
        return
    entries = [e for e in reply.body.get("value") or [] if isinstance(e, Mapping)]
    can_write = allowed(entries, WRITE_ACTION)
    can_read = allowed(entries, READ_ACTION)
    if can_write and can_read:
        report.add(name, "ok", f"{WRITE_ACTION} allowed (checked, nothing written)", "enforce can write here")
    else:
        missing = [a for a, ok in ((READ_ACTION, can_read), (WRITE_ACTION, can_write)) if not ok]
        report.add(
            name,
            "warn",
            "not allowed: " + ", ".join(missing),
            "audit needs read; enforce's PATCH would be refused (403) and reported, never retried blindly",
        )


# ------------------------------------------------------------------------------------ --live


async def _live(
    report: Report, arm: LabPlansArm, sub: str, group: str, location: str | None, tag: str, wait_s: float
) -> None:
    name = f"labguard-doctor-{secrets.token_hex(4)}"
    path = f"/subscriptions/{quote(sub)}/resourceGroups/{quote(group)}/providers/{PROVIDER}/labPlans/{name}"
    url = f"{path}?api-version={API_VERSION}"
    live = report.live
    live.update({"plan": path, "created": False, "deleted": False})
    if not location:
        report.add("live: create", "fail", "no location known: pass --location (no lab plan in scope to copy it from)")
        return
    body = {
        "location": location,
        "tags": {tag: "throwaway plan of labguard doctor; it deletes it"},
        "properties": {"defaultConnectionProfile": PROBE_CONNECTION, "defaultAutoShutdownProfile": PROBE_SHUTDOWN},
    }
    created = False
    try:
        started = time.monotonic()
        # Before the PUT: one that times out after ARM took it, or Ctrl-C while it is sent, may have created
        # the plan, so cleanup runs (a DELETE answered 404 then says what to check).
        created = True
        put = await arm.request("PUT", url, body)
        if put.status not in (200, 201, 202):
            created = False  # ARM answered: refused, nothing was created
            report.add("live: create", "fail", f"PUT {name} in {group}: HTTP {put.status} {_code(put)}".rstrip())
            return
        live["created"] = True
        before = await _settled(arm, url, wait_s)
        report.add(
            "live: create",
            "ok",
            f"PUT {name} in {group}: HTTP {put.status}, {_state(before)} after {time.monotonic() - started:.1f} s",
        )
        _check_absent_delays(report, before)
        patch = await arm.request("PATCH", url, PROBE_PATCH)
        _check_write_answer(report, patch)
        if patch.status in (200, 201, 202):
            await _check_operation_urls(report, arm, patch)
            after = await _settled(arm, url, wait_s)
            _check_nested_profiles(report, before, after)
    except ArmError as exc:
        report.add("live: probe", "fail", f"stopped: {runner._first_line(str(exc))}")
    except TimeoutError as exc:
        report.add("live: probe", "fail", str(exc))
    except asyncio.CancelledError:  # Ctrl-C: still delete the plan (below), then stop
        report.add("live: probe", "fail", "interrupted")
        raise
    finally:
        if created:
            await _delete(report, arm, url, path, wait_s)


async def _settled(arm: LabPlansArm, url: str, wait_s: float) -> dict[str, Any]:
    """Read the plan until its provisioningState is terminal: the GET the read role already allows."""
    deadline = time.monotonic() + wait_s
    delay = 0.2
    while True:
        reply = await arm.request("GET", url)
        if reply.status == 200 and _state(reply.body).lower() in TERMINAL:
            return reply.body
        if reply.status not in (200, 404):
            raise ArmError(f"GET of the throwaway plan: HTTP {reply.status} {_code(reply)}".rstrip(), transient=False)
        if time.monotonic() + delay > deadline:
            raise TimeoutError(f"the throwaway plan was still {_state(reply.body)} after {wait_s:.0f} s")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 5.0)


def _check_absent_delays(report: Report, plan: Mapping[str, Any]) -> None:
    shutdown = _profile(plan, "defaultAutoShutdownProfile")
    written = {key for key in DELAYS if key in PROBE_SHUTDOWN}
    kept = sorted(key for key in written if key in shutdown)
    dropped = sorted(key for key in written if key not in shutdown)
    filled = {key: shutdown[key] for key in DELAYS if key not in written and key in shutdown}
    report.live["delays"] = {"keptWhileOff": kept, "droppedWhileOff": dropped, "filledInWhileOff": filled}
    parts = []
    if kept:
        parts.append(f"{', '.join(kept)} written with its feature off: kept")
    if dropped:
        parts.append(f"{', '.join(dropped)} written with its feature off: dropped on read")
    absent = sorted(key for key in DELAYS if key not in written and key not in filled)
    if absent:
        parts.append(f"{', '.join(absent)} not written: stay absent")
    if filled:
        parts.append("not written but filled in: " + ", ".join(f"{k}={v}" for k, v in filled.items()))
    report.add(
        "live: delays, features off",
        "ok",
        "; ".join(parts),
        "a delay is bounded only when its feature is on or required by the policy: an absent (or dropped) delay of a "
        "feature that is off is not drift, so labguard never rewrites it in a loop",
    )


def _check_write_answer(report: Report, patch: ArmReply) -> None:
    interesting = [h for h in ("Location", "Azure-AsyncOperation", "Retry-After") if _header(patch.headers, h)]
    report.live.update({"patchStatus": patch.status, "patchHeaders": interesting})
    if patch.status not in (200, 201, 202):
        report.add(
            "live: PATCH answer", "fail", f"HTTP {patch.status} {_code(patch)}".rstrip(), "a refused write is reported"
        )
        return
    headers = ", ".join(interesting) or "no operation headers"
    how = (
        "answered at once: labguard proves the write by reading the plan again"
        if patch.status == 200
        else "accepted: labguard waits by reading the plan until provisioningState is terminal, then proves it"
    )
    report.add("live: PATCH answer", "ok", f"HTTP {patch.status}; {headers}", how)


async def _check_operation_urls(report: Report, arm: LabPlansArm, patch: ArmReply) -> None:
    urls = [(h, _header(patch.headers, h)) for h in ("Azure-AsyncOperation", "Location")]
    urls = [(h, u) for h, u in urls if u]
    report.live["operationUrls"] = []
    if not urls:
        report.add("live: operation URL", "ok", "none given", "labguard reads the plan itself; it never needs one")
        return
    for header, op_url in urls:
        shape = url_shape(op_url)
        try:
            reply = await arm.request("GET", op_url)
            status: int | str = reply.status
            code = _code(reply)
        except ArmError as exc:
            status, code = "not followed", runner._first_line(str(exc))
        readable = status in (200, 202, 204)
        report.live["operationUrls"].append({"header": header, "shape": shape, "status": status, "readable": readable})
        answer = f"readable by this identity (HTTP {status})" if readable else f"not readable: {status} {code}".rstrip()
        report.add(
            f"live: {header}",
            "ok",
            f"{shape}; {answer}",
            "an optional faster path only: labguard waits by reading the plan and never fails a fix on a 403/400 here",
        )


def _check_nested_profiles(report: Report, before: Mapping[str, Any], after: Mapping[str, Any]) -> None:
    connection = _profile(after, "defaultConnectionProfile")
    probed, sent = _PROBED.arm_key, _PROBED.scale[0]
    name, kept = _SIBLING.arm_key, PROBE_CONNECTION[_SIBLING.arm_key]
    sibling = connection.get(name)
    report.live["after"] = {
        "defaultConnectionProfile": connection,
        "defaultAutoShutdownProfile": _profile(after, "defaultAutoShutdownProfile"),
    }
    if connection.get(probed) != sent:
        report.live["nestedProfiles"] = "not applied"
        report.add(
            "live: nested profiles",
            "fail",
            f"PATCH {probed}={sent} read back as {connection.get(probed)!r}: the write did not take",
            "labguard proves each write by reading again and records plan.unconverged with a backoff",
        )
        return
    if sibling == kept:
        mode, text = "merge", f"merges: {name} stayed {kept} when only {probed} was sent"
    else:
        mode, text = "replace", f"replaces the profile: {name} {kept} became {sibling or 'absent'} (not sent)"
    report.live["nestedProfiles"] = mode
    report.add(
        "live: nested profiles",
        "ok",
        text,
        "labguard sends each drifted profile whole, as just read, with only the drifted leaves changed: "
        "right under merge and replace"
        + ("" if mode == "merge" else "; a leaf-only patch would have reset the other leaves"),
    )
    untouched_before = _profile(before, "defaultAutoShutdownProfile")
    untouched_after = _profile(after, "defaultAutoShutdownProfile")
    if untouched_before == untouched_after:
        report.add(
            "live: profile not sent",
            "ok",
            "defaultAutoShutdownProfile unchanged",
            "labguard leaves a profile without drift out of the patch",
        )
    else:
        report.add(
            "live: profile not sent",
            "warn",
            f"defaultAutoShutdownProfile changed though not sent: {untouched_before} -> {untouched_after}",
            "labguard's proof after each write reports any governed leaf that changed outside the patch",
        )


async def _delete(report: Report, arm: LabPlansArm, url: str, path: str, wait_s: float) -> None:
    """Delete the throwaway plan and say so; tell the admin exactly what to delete if it did not go."""
    by_hand = f"delete it yourself: az resource delete --ids {path}"
    try:
        reply = await arm.request("DELETE", url)
        if reply.status == 404 and not report.live.get("created"):  # the PUT did not answer: it may still land
            report.add(
                "live: cleanup",
                "warn",
                f"the PUT did not finish and the plan is not there (DELETE 404); if it appears, {by_hand}",
            )
            return
        if reply.status not in (200, 202, 204):
            report.add("live: cleanup", "fail", f"DELETE answered HTTP {reply.status} {_code(reply)}; {by_hand}")
            return
        deadline = time.monotonic() + wait_s
        delay = 0.2
        while (await arm.request("GET", url)).status != 404:
            if time.monotonic() + delay > deadline:
                report.add("live: cleanup", "fail", f"still there after {wait_s:.0f} s; {by_hand}")
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
    except (ArmError, OSError) as exc:
        report.add("live: cleanup", "fail", f"{runner._first_line(str(exc))}; {by_hand}")
        return
    report.live["deleted"] = True
    report.add("live: cleanup", "ok", f"deleted the throwaway plan {path.rsplit('/', 1)[-1]} (DELETE {reply.status})")


def _profile(plan: Mapping[str, Any], name: str) -> dict[str, Any]:
    props = plan.get("properties")
    profile = props.get(name) if isinstance(props, Mapping) else None
    return dict(profile) if isinstance(profile, Mapping) else {}


def _state(plan: Mapping[str, Any]) -> str:
    props = plan.get("properties")
    return str(props.get("provisioningState") or "?") if isinstance(props, Mapping) else "?"


def _code(reply: ArmReply) -> str:
    error = reply.body.get("error")
    return str(error.get("code") or "") if isinstance(error, Mapping) else ""


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name.lower():
            return value
    return None


# ------------------------------------------------------------------------------------ the command


def command(
    flags: runner.Flags,
    *,
    live_group: str | None,
    location: str | None,
    as_json: bool,
    env: Mapping[str, str],
    out: Any = None,
) -> int:
    """``labguard doctor``: run, print the table (or JSON), return the exit code. Raises ConfigError."""
    from labguard import render

    if live_group is not None and not runner._RESOURCE_GROUP.match(live_group):
        raise runner.ConfigError(
            f"--live {live_group!r} is not a resource group name (letters, digits, - _ . ( ), at most 90 characters)"
        )
    settings = runner.resolve_settings(env, flags)
    runner.require_scope(settings)
    out = out or render.console()
    report = Report(settings, settings.policy_file)
    interrupted = False
    try:
        asyncio.run(diagnose(settings, report=report, live_group=live_group, location=location))
    except KeyboardInterrupt:  # the plan was deleted in diagnose's finally; show what happened, then stop
        interrupted = True
    if report.live.get("created") and not any(c.name == "live: cleanup" for c in report.checks):
        report.add(
            "live: cleanup",
            "fail",
            f"interrupted before the throwaway plan was deleted: az resource delete --ids {report.live['plan']}",
        )
    if as_json:
        out.file.write(json.dumps(report.as_json(), indent=2, ensure_ascii=False) + "\n")
    else:
        print_report(out, report, live_group=live_group, interrupted=interrupted)
    return 130 if interrupted else report.exit_code


STYLES = {"ok": "green", "warn": "yellow", "fail": "bold red"}


def print_report(out: Any, report: Report, *, live_group: str | None, interrupted: bool = False) -> None:
    from rich import box
    from rich.table import Table
    from rich.text import Text

    from labguard import render

    settings = report.settings
    out.print("labguard doctor: is this subscription ready for labguard (and for enforce)?", style="bold")
    out.print(f"policy   {report.policy_file}", soft_wrap=True)
    out.print(f"endpoint {settings.arm_endpoint}", soft_wrap=True)
    groups = ", ".join(settings.resource_groups) or "all resource groups"
    live = f"; live test in {live_group}" if live_group else "; no live test (--live RG writes a throwaway plan)"
    out.print(f"scope    {', '.join(settings.subscriptions)}; {groups}{live}", soft_wrap=True)
    out.print()
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column("CHECK", no_wrap=True)
    table.add_column("VERDICT", no_wrap=True)
    table.add_column("FOUND / → WHAT LABGUARD DOES", overflow="fold")
    for check in report.checks:
        cell = Text(check.detail)
        if check.labguard:
            cell.append("\n→ " + check.labguard, style="dim")
        table.add_row(check.name, Text(check.verdict, style=STYLES[check.verdict]), cell)
    render.emit(out, table)
    counts = {v: sum(1 for c in report.checks if c.verdict == v) for v in ("ok", "warn", "fail")}
    summary = f"{counts['ok']} ok, {counts['warn']} warning(s), {counts['fail']} failure(s)"
    if interrupted:
        out.print(Text(f"exit 130: interrupted; {summary}", style="yellow"))
    elif report.exit_code == 0:
        out.print(Text(f"exit 0: {summary}", style="green"))
    else:
        out.print(Text(f"exit 1: {summary}", style="yellow"))
