"""The `labguard` command's runner: resolves settings and flags, runs a sweep (or reads saved plan JSON) on the
same reconcile core and ARM adapter as the Functions, and collects every plan's result for the renderer.

Settings come from the same app settings as the Functions (``shared.runtime.settings``), with the command's
flags written over them first; the ARM session is the one :func:`shared.runtime.runs.build_runtime` opens;
plans stream through :meth:`shared.runtime.reconcile.Reconciler.sweep`. The command never sends failure
notices (the Functions do that, once per failure): its reconciler has no notifier; it only reads
the notice ledger, when one is configured, to say whether a Failed plan's notice went out.

Every mistake an admin can make (bad setting, unreadable policy, no credentials, unreachable
endpoint) becomes a :class:`ConfigError` with one line saying what to do.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import re
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from labguard import exit_codes
from labguard.tracking import (
    INTERRUPT_GRACE_S,
    Interruption,
    TrackingArm,
    WriteDenied,
    install_interrupt,
    write_denied,
)
from shared.core.plans import LabPlan, PlanId
from shared.core.policy import Mode, Policy, load_policy
from shared.core.snapshot import DRIFT_STATUSES
from shared.errors import ArmError, PolicyError, SettingsError, TrustError
from shared.runtime.reconcile import PlanOutcome, Reconciler, scope_path, sweep_scopes
from shared.runtime.runs import APP_ROOT
from shared.runtime.settings import Settings

_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_RESOURCE_GROUP = re.compile(r"^[-\w._()]{1,90}$")
LOGIN_HINT = "run `az login` (or set AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET for a service principal)"


class ConfigError(Exception):
    """A mistake in the command line, the settings, the policy, the credentials or the endpoint.

    ``str()`` is one line that says what is wrong and what to do; the command exits ``code``: 2
    (usage or configuration), or 3 for :class:`AzureUnavailable`.
    """

    code = exit_codes.USAGE


class AzureUnavailable(ConfigError):
    """Azure could not be reached, or kept failing after the retries: exit 3, not a configuration mistake."""

    code = exit_codes.AZURE_UNAVAILABLE


@dataclass(frozen=True)
class Flags:
    """Command-line values that beat the app settings; None = use the setting."""

    subscriptions: Sequence[str] | None = None
    resource_groups: Sequence[str] | None = None
    policy: str | None = None


def _split(values: Sequence[str]) -> list[str]:
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def resolve_settings(env: Mapping[str, str], flags: Flags, *, mode: Mode | None = None) -> Settings:
    """The app settings with the flags written over them; raises ConfigError on any bad value."""
    values = dict(env)
    if flags.subscriptions:
        subs = _split(flags.subscriptions)
        for sub in subs:
            if not _GUID.match(sub):
                raise ConfigError(
                    f"--subscription {sub!r} is not a subscription id: write its GUID, such as "
                    "00000000-0000-0000-0000-000000000000 (`az account list -o table` shows yours)"
                )
        values["LABGUARD_SUBSCRIPTIONS"] = ",".join(subs)
    if flags.resource_groups:
        groups = _split(flags.resource_groups)
        for group in groups:
            if not _RESOURCE_GROUP.match(group):
                raise ConfigError(
                    f"--resource-group {group!r} is not a resource group name "
                    "(letters, digits, - _ . ( ), at most 90 characters)"
                )
        values["LABGUARD_RESOURCE_GROUPS"] = ",".join(groups)
    if mode is not None:
        values["LABGUARD_MODE"] = mode
    policy = policy_path(flags.policy, values.get("LABGUARD_POLICY_FILE", "").strip() or None)
    values["LABGUARD_POLICY_FILE"] = str(policy)
    try:
        return Settings.from_env(values)
    except SettingsError as exc:
        raise ConfigError(f"bad setting: {exc}") from None


def policy_path(flag: str | None, setting: str | None) -> Path:
    """``--policy`` is relative to the working directory; the setting (and the default) as the Functions
    read it, beside function_app.py, unless the file exists relative to the working directory."""
    if flag:
        return Path(flag).expanduser().resolve()
    name = Path(setting or "policy.yaml").expanduser()
    if name.is_absolute():
        return name
    here = Path.cwd() / name
    return here.resolve() if here.exists() else (APP_ROOT / name).resolve()


def read_policy(
    path: str | os.PathLike[str], mode: Mode | None = None, *, hint: str = " (or pass --policy FILE)"
) -> Policy:
    try:
        return load_policy(path, mode_override=mode)
    except PolicyError as exc:
        raise ConfigError(f"{exc}{hint}") from None


def read_run_policy(
    settings: Settings, command: Literal["audit", "enforce"], env: Mapping[str, str]
) -> tuple[Policy, tuple[str, str]]:
    """The policy this command runs with (the command decides the mode), and the Functions' mode with
    where it comes from under the same settings: LABGUARD_MODE when set, the file's ``mode`` otherwise."""
    base = read_policy(settings.policy_file)
    raw = env.get("LABGUARD_MODE", "").strip().lower()
    from_setting = raw in ("audit", "enforce")
    functions = (raw, "app setting LABGUARD_MODE") if from_setting else (base.mode, base.mode_source)
    run_mode: Mode = command
    return dataclasses.replace(base, mode=run_mode, mode_source=f"the command (labguard {command})"), functions


def require_scope(settings: Settings) -> None:
    if not settings.subscriptions:
        raise ConfigError(
            "no subscription in scope: pass --subscription <id> (repeatable) or set LABGUARD_SUBSCRIPTIONS "
            "to comma-separated subscription ids"
        )


# ------------------------------------------------------------------------------------ results


@dataclass(frozen=True)
class NoticeStatus:
    """What the notice ledger says about a Failed plan's current failure."""

    sent: tuple[str, ...]  # channels that delivered it
    pending: tuple[str, ...]
    problem: str | None = None

    def describe(self, contact: str | None = None) -> str:
        to = f" to {contact}" if contact else ""
        if self.problem:
            return f"notice status unknown ({self.problem})"
        if self.sent:
            return f"notice sent{to} (" + ", ".join(self.sent) + ")"
        if self.pending:
            return f"notice being sent{to} (" + ", ".join(self.pending) + ")"
        return f"no notice sent{to} yet (the Functions send it)"


@dataclass(frozen=True)
class PlanResult:
    outcome: PlanOutcome
    notice: NoticeStatus | None = None
    write_denied: WriteDenied | None = None  # checked, but labguard may not write it
    write_failed: bool = False  # enforce sent (or tried to send) its patch and it did not land: not converged
    refused_patch: Mapping[str, Any] | None = None  # the patch that did not land

    @property
    def status(self) -> str:
        return self.outcome.status

    @property
    def plan_id(self) -> PlanId | None:
        evaluation = self.outcome.evaluation
        if evaluation is not None:
            return evaluation.plan.id
        try:
            return PlanId.parse(self.outcome.plan_id)
        except ValueError:
            return None


@dataclass
class RunResult:
    """One command run: every plan's outcome, listing failures, and what it was run against."""

    command: Literal["audit", "enforce"]
    dry_run: bool
    settings: Settings
    policy: Policy
    results: list[PlanResult] = field(default_factory=list)
    list_failures: list[tuple[str, str]] = field(default_factory=list)
    not_registered: list[str] = field(default_factory=list)  # scopes without Microsoft.LabServices: no plans
    duration_s: float = 0.0
    files: tuple[str, ...] = ()  # audit --from-file: the saved plan JSON evaluated instead of a sweep
    empty_scopes: list[str] = field(default_factory=list)  # listed fine (or not found) and held no lab plan
    fail_on: frozenset[str] = frozenset(exit_codes.DEFAULT_FAIL_ON)
    azure_failing: bool = False  # something could not be read because Azure was unreachable or kept failing
    interrupted: Interruption | None = None
    functions_mode: tuple[str, str] | None = None  # (mode, where it came from) the Functions would run in
    configured: Settings | None = None  # the scope the app settings name, without the flags
    today: date = field(default_factory=lambda: datetime.now(UTC).date())
    labs: list[PlanOutcome] = field(default_factory=list)  # lab outcomes (outcome.lab: the LabEvaluation)

    def labs_of(self, plan_id: PlanId | None) -> list[PlanOutcome]:
        """The labs whose labPlanId names this plan (None: labs naming no plan in this run), by name."""
        keys = {r.plan_id.key for r in self.results if r.plan_id is not None}
        out = []
        for outcome in self.labs:
            named = outcome.lab.lab.lab_plan_id if outcome.lab is not None else None
            mine = named == plan_id if plan_id is not None else (named is None or named.key not in keys)
            if mine:
                out.append(outcome)
        return sorted(out, key=lambda o: o.plan_id)

    @property
    def counts(self) -> Counter[str]:
        return Counter(result.status for result in self.results)

    def expiring(self) -> list[tuple[PlanResult, date]]:
        """Exempt plans whose exemption ends within 14 days (the ``exempt-expiring`` finding)."""
        soon = self.today + timedelta(days=exit_codes.EXPIRING_WITHIN_DAYS)
        found = []
        for result in self.results:
            end = exemption_end(result, self.policy)
            if result.status == "exempt" and end is not None and end <= soon:
                found.append((result, end))
        return found

    def tally(self) -> exit_codes.Tally:
        counts = self.counts
        not_converged = sum(1 for r in self.results if r.write_failed)
        unreadable = sum(1 for r in self.results if r.status == "failed" and not r.write_failed)
        return exit_codes.Tally(
            drift=sum(counts[status] for status in DRIFT_STATUSES) + not_converged,
            failed_provisioning=counts["provisioning-failed"],
            exempt_expiring=len(self.expiring()),
            empty_scopes=len(self.empty_scopes),
            unreadable=unreadable + len(self.list_failures),
            azure_failing=self.azure_failing,
        )

    @property
    def exit_code(self) -> int:
        """0 compliant; 1 a finding ``--fail-on`` selects; 3 Azure unreachable or failing; 130 interrupted."""
        if self.interrupted is not None:
            return exit_codes.INTERRUPTED
        code = exit_codes.decide(self.tally(), self.fail_on)
        if code == 0 and any(
            LAB_FAIL_ON.get(lab.status, "drift") in self.fail_on for lab in self.labs if lab.status in LAB_FAIL_ON
        ):
            return exit_codes.FINDINGS  # a lab left drifted, failed to provision or not converged
        return code

    def sorted_results(self) -> list[PlanResult]:
        def key(result: PlanResult) -> tuple[str, str, str]:
            pid = result.plan_id
            if pid is None:
                return ("~", "~", result.outcome.plan_id)
            return (pid.subscription_id.lower(), pid.resource_group.lower(), pid.name.lower())

        return sorted(self.results, key=key)


# ------------------------------------------------------------------------------------ running


def evaluate_files(paths: Sequence[str], settings: Settings, policy: Policy, now: datetime) -> RunResult:
    """``audit --from-file``: evaluate saved lab plan bodies as of ``now``, with no Azure call. An entry that is
    not a lab plan is a ``failed`` row; a file that cannot be read is a ConfigError."""
    from shared.core.drift import evaluate
    from shared.core.report import read_plans

    result = RunResult(command="audit", dry_run=False, settings=settings, policy=policy, files=tuple(paths))
    for path in paths:
        try:
            plans, problems = read_plans(path)
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read lab plans: {exc.strerror or exc}") from None
        except ValueError as exc:
            raise ConfigError(f"{path}: cannot read lab plans: {_first_line(str(exc))}") from None
        for plan in plans:
            evaluation = evaluate(plan, policy, now)
            status = "provisioning-failed" if evaluation.status == "failed" else evaluation.status
            detail = evaluation.reason if status in ("skipped", "exempt") else None
            result.results.append(PlanResult(PlanOutcome(plan.id.key, status, evaluation, detail=detail)))
        result.results += [PlanResult(PlanOutcome(where, "failed", detail=why)) for where, why in problems]
    return result


OnResult = Callable[[PlanResult], Awaitable[None] | None]
# A lab's outcome -> the --fail-on finding it counts as (as the plan outcomes do).
LAB_FAIL_ON = {
    "drifted": "drift",
    "unconverged": "drift",
    "write-failed": "drift",
    "proof-deferred": "drift",
    "provisioning-failed": "failed-provisioning",
}


async def run(
    settings: Settings,
    policy: Policy,
    *,
    command: Literal["audit", "enforce"],
    dry_run: bool = False,
    credential: Any | None = None,
    on_result: OnResult | None = None,
    read_ledger: bool = True,
    fail_on: frozenset[str] | None = None,
    handle_interrupt: bool = False,
    interrupt_grace_s: float = INTERRUPT_GRACE_S,
    functions_mode: tuple[str, str] | None = None,
    approved_patches: Mapping[str, Mapping[str, Any]] | None = None,
) -> RunResult:
    """Sweep every plan in scope: evaluate (audit, enforce --dry-run) or fix (enforce). Raises ConfigError.

    ``approved_patches`` ({plan key: patch} shown in a preview and approved): only those exact patches
    are sent; a plan whose fresh patch differs stays drifted, "changed since the preview; not written".

    With ``handle_interrupt``, Ctrl-C stops the sweep cleanly instead of raising: no new write starts,
    the writes already sent finish (a second Ctrl-C abandons them) and ``RunResult.interrupted`` says
    what was in flight and what was not reached.
    """
    import time

    from shared.runtime.runs import build_runtime

    require_scope(settings)
    started = time.monotonic()
    try:
        runtime = await build_runtime(settings, credential=credential, policy=policy)
    except PolicyError as exc:
        raise ConfigError(f"{exc} (or pass --policy FILE)") from None
    except (TrustError, SettingsError) as exc:
        raise ConfigError(f"bad setting: {exc}") from None
    except ValueError as exc:  # AZURE_* values the credential refuses
        hint = (
            " (check AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET)"
            if _raised_in(exc, "azure.identity")
            else ""
        )
        raise ConfigError(f"bad setting: {exc}{hint}") from None
    result = RunResult(
        command=command, dry_run=dry_run, settings=settings, policy=policy, functions_mode=functions_mode
    )
    if fail_on is not None:
        result.fail_on = fail_on
    try:
        principal = await _check_sign_in(runtime.session)
        arm = TrackingArm(runtime.session.plans)
        reconciler = Reconciler(
            arm,  # type: ignore[arg-type]  # the adapter, with a note of what happened
            policy,
            notifier=None,
            concurrency=settings.concurrency,
            dry_run=dry_run or command == "audit",
            labs=_labs(runtime, policy, dry_run=dry_run or command == "audit"),
            approved_patches=approved_patches,
        )
        ledger = _open_ledger(settings) if read_ledger else None
        checked: set[str] = set()

        async def collect(outcome: PlanOutcome) -> None:
            if outcome.lab is not None or "/providers/microsoft.labservices/labs/" in outcome.plan_id.lower():
                result.labs.append(outcome)  # shown under its plan
                return
            checked.add(outcome.plan_id)
            notice = None
            if outcome.status == "provisioning-failed" and outcome.evaluation is not None:
                notice = await _notice_status(ledger, outcome.evaluation.plan)
            write_error = arm.write_errors.get(outcome.plan_id)
            denied = None
            if write_error is not None:
                with contextlib.suppress(ValueError):
                    denied = write_denied(write_error, PlanId.parse(outcome.plan_id), principal)
            item = PlanResult(
                outcome,
                notice,
                denied,
                write_failed=outcome.status == "failed" and write_error is not None,
                refused_patch=arm.refused_patches.get(outcome.plan_id),
            )
            result.results.append(item)
            if on_result is not None:
                maybe = on_result(item)
                if maybe is not None:
                    await maybe

        abandon = asyncio.Event()
        sweep = asyncio.ensure_future(
            reconciler.sweep(sweep_scopes(settings.subscriptions, settings.resource_groups), on_outcome=collect)
        )

        def stop() -> None:
            arm.stopping = True
            sweep.cancel()

        undo = install_interrupt(stop, abandon) if handle_interrupt else (lambda: None)
        try:
            try:
                summary = await sweep
            except asyncio.CancelledError:
                if not arm.stopping:
                    raise
                result.interrupted = await arm.settle(checked, abandon, interrupt_grace_s)
                listed_scopes = {
                    scope_path(sub, rg) for sub, rg in sweep_scopes(settings.subscriptions, settings.resource_groups)
                }
                result.interrupted.scopes_not_listed = sorted(listed_scopes - arm.scopes_done)
        finally:
            undo()
            if ledger is not None:
                await ledger.close()
        if command == "enforce" and not dry_run:  # the compliance page's "changes labguard made" include these
            from shared.runtime.changes import record_changes

            outcomes = [item.outcome for item in result.results]
            await record_changes(settings, outcomes, trigger="labguard enforce")
        if result.interrupted is not None:
            result.duration_s = time.monotonic() - started
            return result
        result.empty_scopes = list(summary.empty_scopes)
        failures = []
        for scope, exc in summary.list_errors:
            if exc.status == 404 and "/resourceGroups/" in scope:  # ARM: ResourceGroupNotFound
                result.empty_scopes.append(scope)
            else:
                failures.append((scope, exc))
        result.list_failures = [(scope, str(exc)) for scope, exc in failures]
        result.not_registered = sorted(summary.not_registered)
        errors = [exc for _, exc in failures] + list(arm.read_errors.values())
        result.azure_failing = any(_azure_trouble(exc) for exc in errors)
        if failures and not result.results:
            problem = _listing_problem(settings, *failures[0])
            raise (AzureUnavailable if _azure_trouble(failures[0][1]) else ConfigError)(problem)
    finally:
        await runtime.close()
    result.duration_s = time.monotonic() - started
    return result


def _azure_trouble(exc: ArmError) -> bool:
    """Unreachable (no HTTP status), throttled or failing (5xx) after the retries: exit 3, not 1 or 2."""
    if exc.status is None:
        return not _untrusted(_transport_reason(exc))
    return exc.status == 429 or exc.status >= 500


def exemption_end(result: PlanResult, policy: Policy) -> date | None:
    """The last day of a plan's exemption (the ``-until`` tag), when it has a readable one."""
    evaluation = result.outcome.evaluation
    if evaluation is None:
        return None
    tags = {str(key).lower(): value for key, value in evaluation.plan.tags.items()}
    raw = tags.get(policy.exemption_until_tag.lower())
    if not isinstance(raw, str):
        return None
    try:
        return date.fromisoformat(raw.strip()[:10])
    except ValueError:
        return None


def unused_overrides(
    policy: Policy,
    settings: Settings | None,
    results: Sequence[PlanResult] | None = None,
    run: Settings | None = None,
) -> list[str]:
    """One line per override that applies to nothing: outside the scope ``settings`` names, or (given a run's
    ``results`` and its scope ``run``) inside the run's scope yet matching no plan it saw."""
    subs = {s.lower() for s in settings.subscriptions} if settings is not None else set()
    groups = {g.lower() for g in settings.resource_groups} if settings is not None else set()
    run_subs = {s.lower() for s in run.subscriptions} if run is not None else set()
    run_groups = {g.lower() for g in run.resource_groups} if run is not None else set()
    seen_subs: set[str] = set()
    seen_groups: set[str] = set()
    for item in results or ():
        pid = item.plan_id
        if pid is not None:
            seen_subs.add(pid.subscription_id.lower())
            seen_groups.add(f"{pid.subscription_id.lower()}/{pid.resource_group.lower()}")

    def in_run(sub: str, group: str | None = None) -> bool:
        if results is None or sub not in run_subs:
            return False
        return group is None or not run_groups or group in run_groups

    lines = []
    for key in policy.subscriptions:
        if subs and key not in subs:
            lines.append(
                f"override for subscription {key}: outside the scope ({_scope_words(settings)}); it applies to nothing"
            )
        elif in_run(key) and not run_groups and key not in seen_subs:
            lines.append(f"override for subscription {key}: matched no lab plan in this run")
    for key in policy.resource_groups:
        sub, _, group = key.partition("/")
        if subs and sub not in subs:
            lines.append(
                f"override for resource group {key}: its subscription is outside the scope ({_scope_words(settings)}); "
                "it applies to nothing"
            )
        elif groups and group not in groups:
            lines.append(
                f"override for resource group {key}: {group} is not among the resource groups in scope "
                f"({', '.join(sorted(groups))}); it applies to nothing"
            )
        elif in_run(sub, group) and key not in seen_groups:
            lines.append(
                f"override for resource group {key}: matched no lab plan in this run; check the name "
                f"(`az group list --subscription {sub} -o table`)"
            )
    return lines


def configured_scope(env: Mapping[str, str]) -> Settings | None:
    """The scope the app settings name (no flags), to tell an override outside it; None when unset or bad."""
    try:
        settings = Settings.from_env(env)
    except SettingsError:
        return None
    return settings if settings.subscriptions else None


def _scope_words(settings: Settings | None) -> str:
    if settings is None or not settings.subscriptions:
        return "no subscription"
    return "subscriptions in scope: " + ", ".join(settings.subscriptions)


async def _check_sign_in(session: Any) -> str | None:
    """Get a token before the sweep, so a missing login is one line, not one error per plan.

    Returns our identity's object id (the token's ``oid``), to name it when a write is refused."""
    from azure.core.exceptions import AzureError, ClientAuthenticationError
    from azure.identity import CredentialUnavailableError

    from shared.edge.arm import principal_from_token

    try:
        token = await session.credential.get_token(session.scope)
    except CredentialUnavailableError:
        raise ConfigError(f"no Azure credentials found: {LOGIN_HINT}, then try again") from None
    except ClientAuthenticationError as exc:
        chain = len(getattr(session.credential, "credentials", ()) or ())
        raise ConfigError(_sign_in_problem(str(exc.message or exc), chain)) from None
    except AzureError as exc:
        raise AzureUnavailable(
            f"cannot reach the sign-in endpoint ({_first_line(str(exc))}): check your network "
            "(and AZURE_AUTHORITY_HOST / LABGUARD_CA_BUNDLE if you set them)"
        ) from None
    return principal_from_token(token.token)


def _sign_in_problem(text: str, chain: int) -> str:
    """DefaultAzureCredential lists each credential it tried, and stops at the first that *failed*
    (rather than being unavailable): if it tried all ``chain`` of them, nobody is signed in."""
    attempts = [line.strip() for line in text.splitlines() if line.startswith("\t")]
    if chain and len(attempts) >= chain:
        return f"no Azure credentials found: {LOGIN_HINT}, then try again"
    reason = attempts[-1] if attempts else _first_line(text)
    if _untrusted(reason):
        return (
            "Azure sign-in failed: the sign-in endpoint's TLS certificate is not trusted: "
            "point LABGUARD_CA_BUNDLE at the PEM file of the CA that signed it"
        )
    return f"Azure sign-in failed ({_cut(reason, 200)}): check the AZURE_* settings, or run `az login` again"


def _untrusted(text: str) -> bool:
    return "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text.lower()


def _transport_reason(exc: BaseException) -> str:
    """The socket-level reason under an ARM transport error (refused, no such host, untrusted certificate)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        certificate = getattr(current, "certificate_error", None)
        if certificate is not None:
            return f"TLS certificate not trusted: {certificate}"
        os_error = getattr(current, "os_error", None)
        if isinstance(os_error, OSError):
            return os_error.strerror or str(os_error)
        inner = getattr(current, "inner_exception", None)
        current = current.__cause__ or (inner if isinstance(inner, BaseException) else None) or current.__context__
    return _first_line(str(exc))


def _listing_problem(settings: Settings, scope: str, exc: ArmError) -> str:
    if exc.status is None:
        reason = _transport_reason(exc)
        hint = "check LABGUARD_ARM_ENDPOINT and your network"
        if _untrusted(reason) or "TLS certificate" in reason:
            hint = "point LABGUARD_CA_BUNDLE at the PEM file of the CA that signed its certificate"
        return f"cannot reach the ARM endpoint {settings.arm_endpoint} ({_cut(reason, 160)}): {hint}"
    code = f" {exc.code}" if exc.code else ""
    if exc.status in (401, 403):
        return (
            f"ARM refused to list lab plans in {scope} (HTTP {exc.status}{code}): give your identity "
            "the labguard role or Reader on it (infra/README.md), or check --subscription"
        )
    if exc.status == 404:
        return f"{scope} was not found (HTTP 404{code}): check --subscription / LABGUARD_SUBSCRIPTIONS"
    if exc.status == 429 or exc.status >= 500:
        return f"listing lab plans in {scope} kept failing (HTTP {exc.status}{code}) after retries: try again later"
    return f"listing lab plans in {scope} failed: {_cut(_first_line(str(exc)), 200)}"


def _raised_in(exc: BaseException, package: str) -> bool:
    tb = exc.__traceback__
    module = ""
    while tb is not None:
        module = str(tb.tb_frame.f_globals.get("__name__", ""))
        tb = tb.tb_next
    return module == package or module.startswith(package + ".")


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return text.strip()


def _cut(text: str, room: int) -> str:
    return text if len(text) <= room else text[: room - 1] + "…"


# ------------------------------------------------------------------------------------ the notice ledger


def _open_ledger(settings: Settings) -> Any | None:
    from shared.notices.ledger import open_ledger

    try:
        return open_ledger(settings, retry_total=0)
    except ValueError:
        return None


async def _notice_status(ledger: Any | None, plan: LabPlan) -> NoticeStatus | None:
    """Read-only: which channels delivered this failure's notice (None without a ledger)."""
    if ledger is None:
        return None
    from shared.notices.message import Notice

    try:
        rows = await ledger.rows(plan.id, Notice.from_plan(plan).digest)
    except Exception as exc:  # any ledger fault: say so, the audit goes on
        return NoticeStatus((), (), problem=f"ledger: {type(exc).__name__}")
    sent = tuple(sorted(_channel(key) for key, row in rows.items() if row.state == "sent"))
    pending = tuple(sorted(_channel(key) for key, row in rows.items() if row.state != "sent"))
    return NoticeStatus(sent, pending)


def _channel(ledger_key: str) -> str:
    """``webhook:<host>:<digest>`` -> ``webhook:<host>``; other channel keys are already names."""
    return ":".join(ledger_key.split(":")[:2]) if ledger_key.startswith("webhook:") else ledger_key


def _labs(runtime: Any, policy: Policy, *, dry_run: bool) -> Any:
    """Labs beside plans (LABGUARD_LABS, on by default), judged as the Functions judge them."""
    if runtime.reconciler.labs is None:
        return None
    from shared.edge.lab_arm import LabsArm
    from shared.runtime.lab_reconcile import LabReconciler

    return LabReconciler(LabsArm(runtime.session.plans), policy, dry_run=dry_run)
