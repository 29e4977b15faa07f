"""What the ``labguard`` command runs, on the same core and ARM adapter as the Functions.

Settings come from the same app settings as the Functions (``shared.settings``), with the command's
flags written over them first; the ARM session is the one :func:`shared.runs.build_runtime` opens;
plans stream through :meth:`shared.reconcile.Reconciler.sweep`. The command never sends failure
notices (the Functions do that, once per failure): its reconciler has no notifier; it only reads
the notice ledger, when one is configured, to say whether a Failed plan's notice went out.

Every mistake an admin can make (bad setting, unreadable policy, no credentials, unreachable
endpoint) becomes a :class:`ConfigError` with one line saying what to do.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from shared.arm import ArmError
from shared.lab_plans import LabPlan, PlanId
from shared.policy import Mode, Policy, PolicyError, load_policy
from shared.reconcile import PlanOutcome, Reconciler, sweep_scopes
from shared.runs import APP_ROOT
from shared.settings import Settings, SettingsError
from shared.tls import TrustError

_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_RESOURCE_GROUP = re.compile(r"^[-\w._()]{1,90}$")
LOGIN_HINT = "run `az login` (or set AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET for a service principal)"

#: Outcomes that make ``audit`` (and ``enforce``) exit 1.
PROBLEMS = frozenset({"drifted", "provisioning-failed", "failed", "unconverged", "write-failed", "proof-deferred"})


class ConfigError(Exception):
    """A mistake in the command line, the settings, the policy, the credentials or the endpoint.

    ``str()`` is one line that says what is wrong and what to do; the command exits 2.
    """


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

    @property
    def counts(self) -> Counter[str]:
        return Counter(result.status for result in self.results)

    @property
    def exit_code(self) -> int:
        """0: everything in scope is compliant (or exempt / skipped); 1: drift left or a failure."""
        if self.list_failures or any(result.status in PROBLEMS for result in self.results):
            return 1
        return 0

    def sorted_results(self) -> list[PlanResult]:
        def key(result: PlanResult) -> tuple[str, str, str]:
            pid = result.plan_id
            if pid is None:
                return ("~", "~", result.outcome.plan_id)
            return (pid.subscription_id.lower(), pid.resource_group.lower(), pid.name.lower())

        return sorted(self.results, key=key)


# ------------------------------------------------------------------------------------ running


OnResult = Callable[[PlanResult], Awaitable[None] | None]


async def run(
    settings: Settings,
    policy: Policy,
    *,
    command: Literal["audit", "enforce"],
    dry_run: bool = False,
    credential: Any | None = None,
    on_result: OnResult | None = None,
    read_ledger: bool = True,
) -> RunResult:
    """Sweep every plan in scope: evaluate (audit, enforce --dry-run) or fix (enforce). Raises ConfigError."""
    import time

    from shared.runs import build_runtime

    require_scope(settings)
    started = time.monotonic()
    try:
        runtime = await build_runtime(settings, credential=credential, policy=policy)
    except PolicyError as exc:
        raise ConfigError(f"{exc} (or pass --policy FILE)") from None
    except (TrustError, SettingsError) as exc:
        raise ConfigError(f"bad setting: {exc}") from None
    except ValueError as exc:  # a malformed AzureWebJobsStorage, or AZURE_* values the credential refuses
        hint = (
            " (check AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET)"
            if _raised_in(exc, "azure.identity")
            else ""
        )
        raise ConfigError(f"bad setting: {exc}{hint}") from None
    result = RunResult(command=command, dry_run=dry_run, settings=settings, policy=policy)
    try:
        await _check_sign_in(runtime.session)
        reconciler = Reconciler(
            runtime.session.plans,
            policy,
            notifier=None,
            concurrency=settings.concurrency,
            dry_run=dry_run or command == "audit",
        )
        ledger = _open_ledger(settings) if read_ledger else None

        async def collect(outcome: PlanOutcome) -> None:
            notice = None
            if outcome.status == "provisioning-failed" and outcome.evaluation is not None:
                notice = await _notice_status(ledger, outcome.evaluation.plan)
            item = PlanResult(outcome, notice)
            result.results.append(item)
            if on_result is not None:
                maybe = on_result(item)
                if maybe is not None:
                    await maybe

        try:
            summary = await reconciler.sweep(
                sweep_scopes(settings.subscriptions, settings.resource_groups), on_outcome=collect
            )
        finally:
            if ledger is not None:
                await ledger.close()
        if command == "enforce" and not dry_run:  # the compliance page's "changes labguard made" include these
            from shared.changes import record_changes

            outcomes = [item.outcome for item in result.results]
            await record_changes(
                settings.storage_connection, settings.changes_table, outcomes, trigger="labguard enforce"
            )
        result.list_failures = [(scope, str(exc)) for scope, exc in summary.list_errors]
        result.not_registered = sorted(summary.not_registered)
        if summary.list_errors and not result.results:
            raise ConfigError(_listing_problem(settings, *summary.list_errors[0]))
    finally:
        await runtime.close()
    result.duration_s = time.monotonic() - started
    return result


async def _check_sign_in(session: Any) -> None:
    """Get a token before the sweep, so a missing login is one line, not one error per plan."""
    from azure.core.exceptions import AzureError, ClientAuthenticationError
    from azure.identity import CredentialUnavailableError

    try:
        await session.credential.get_token(session.scope)
    except CredentialUnavailableError:
        raise ConfigError(f"no Azure credentials found: {LOGIN_HINT}, then try again") from None
    except ClientAuthenticationError as exc:
        chain = len(getattr(session.credential, "credentials", ()) or ())
        raise ConfigError(_sign_in_problem(str(exc.message or exc), chain)) from None
    except AzureError as exc:
        raise ConfigError(
            f"cannot reach the sign-in endpoint ({_first_line(str(exc))}): check your network "
            "(and AZURE_AUTHORITY_HOST / LABGUARD_CA_BUNDLE if you set them)"
        ) from None


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
    from shared.ledger import open_ledger

    try:
        return open_ledger(settings, retry_total=0)
    except ValueError:
        return None


async def _notice_status(ledger: Any | None, plan: LabPlan) -> NoticeStatus | None:
    """Read-only: which channels delivered this failure's notice (None without a ledger)."""
    if ledger is None:
        return None
    from shared.notices import Notice

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
