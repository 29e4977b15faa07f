"""``make demo`` (``python -m devtools.demo``): the whole job on this machine, with no Azure and no account.

It starts the local Lab Services endpoint seeded with a school's estate (:mod:`devtools.estate`),
Azurite (the notice ledger) and an SMTP sink (STARTTLS + AUTH), points the real Functions app at
them through the same app settings Azure would give it, and shows in order:

1. ``labguard audit``: the estate as an admin first sees it;
2. a teacher (a person, signed in as ``az login`` would) loosening a drifted lab; the real Event Grid
   function sets the lab back and mails the teacher what it set back and where to ask for an
   exemption (LABGUARD_NOTIFY_CHANGER=on);
3. a lab owner loosening a plan through ARM with their own identity, the write event taken from
   the endpoint's event log and handed to the real Event Grid function, which fixes the plan
   within the same second (and recognises its own write's event);
4. the real timer function sweeping and fixing the rest, and notifying the Failed plan's owner;
5. the failure notice as the SMTP sink received it;
6. ``labguard audit`` again: every enforceable plan compliant, the Failed plan reported with its
   notice sent, the Locked and exempt plans reported as skipped with the reason.

It checks its own story (exit 1 if any step did not happen as shown) and stops everything it
started, also on Ctrl-C or SIGTERM (exit 130).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.rule import Rule
from rich.text import Text

from devtools import estate, services
from labguard import render, runner

API_VERSION = "2023-06-07"
APP_CLIENT = "labguard-app"
OWNER_CLIENT = "lab-owner-cs240"
MAIL_FROM = "labguard@school.example"
FALLBACK = "it-helpdesk@school.example"
EXEMPTIONS = "https://it.school.example/lab-exemptions"
TEACHER = "teacher@school.example"  # the person the demo labs' systemData names as their last writer
TEACHER_NAME = "Grace Hopper"
#: What the teacher's PATCH writes to the drifted lab: both outside the policy's bounds.
TEACHER_PATCH: dict[str, Any] = {
    "properties": {
        "connectionProfile": {"clientSshAccess": "Public"},
        "autoShutdownProfile": {"noConnectDelay": "PT4H"},
    }
}


class StoryError(RuntimeError):
    """A step did not turn out as the demo says it does."""


# ------------------------------------------------------------------------------------ log capture


@dataclass
class Captured:
    """labguard's structured records (``<event> {json}``) kept in order, off the terminal."""

    records: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def since(self, mark: int, *events: str) -> list[dict[str, Any]]:
        return [fields for event, fields in self.records[mark:] if not events or event in events]

    def events_since(self, mark: int) -> list[str]:
        return [event for event, _ in self.records[mark:]]


class _Handler(logging.Handler):
    def __init__(self, captured: Captured) -> None:
        super().__init__(logging.DEBUG)
        self._captured = captured

    def emit(self, record: logging.LogRecord) -> None:
        fields = getattr(record, "labguard", None)
        if isinstance(fields, dict) and isinstance(record.args, tuple) and record.args:
            self._captured.records.append((str(record.args[0]), dict(fields)))


@contextlib.contextmanager
def capture_logs() -> Iterator[Captured]:
    captured = Captured()
    handler = _Handler(captured)
    quiet = logging.NullHandler()
    loggers = {name: logging.getLogger(name) for name in ("labguard", "azure", "asyncio", "mail.log")}
    saved = {name: (lg.handlers[:], lg.propagate, lg.level) for name, lg in loggers.items()}
    for name, logger in loggers.items():
        logger.handlers = [handler if name == "labguard" else quiet]
        logger.propagate = False
    loggers["labguard"].setLevel(logging.INFO)
    try:
        yield captured
    finally:
        for name, (handlers, propagate, level) in saved.items():
            loggers[name].handlers, loggers[name].propagate = handlers, propagate
            loggers[name].setLevel(level)


# ------------------------------------------------------------------------------------ the story


@dataclass
class Stage:
    """What the demo started: where everything listens."""

    workdir: Path
    policy_file: Path
    endpoint: services.Endpoint
    azurite: services.Azurite
    tls: services.Tls


def app_settings(stage: Stage, sink: services.SmtpSink, bundle: str) -> dict[str, str]:
    """The Function App's settings, as an admin would write them, pointed at the local services."""
    return {
        "LABGUARD_MODE": "enforce",
        "LABGUARD_POLICY_FILE": str(stage.policy_file),
        "LABGUARD_SUBSCRIPTIONS": ",".join(estate.SUBSCRIPTIONS),
        "LABGUARD_RESOURCE_GROUPS": "",
        "LABGUARD_ARM_ENDPOINT": stage.endpoint.endpoint,
        "LABGUARD_ARM_AUDIENCE": "https://management.azure.com/",
        "LABGUARD_CA_BUNDLE": bundle,
        "LABGUARD_CONCURRENCY": "16",
        "LABGUARD_SMTP_HOST": sink.host,
        "LABGUARD_SMTP_PORT": str(sink.port),
        "LABGUARD_SMTP_USERNAME": sink.username,
        "LABGUARD_SMTP_PASSWORD": sink.password,
        "LABGUARD_MAIL_FROM": MAIL_FROM,
        "LABGUARD_FALLBACK_EMAIL": FALLBACK,
        "LABGUARD_NOTIFY_CHANGER": "on",
        "LABGUARD_EXEMPTION_CONTACT": EXEMPTIONS,
        "AzureWebJobsStorage": stage.azurite.connection_string,
        "AZURE_TENANT_ID": stage.endpoint.tenant_id,
        "AZURE_CLIENT_ID": APP_CLIENT,
        "AZURE_CLIENT_SECRET": "demo-only-secret",
        "AZURE_AUTHORITY_HOST": stage.endpoint.authority,
    }


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """The demo's app settings in os.environ (the Functions read them there), the caller's own hidden."""
    prefixes = ("LABGUARD_", "AZURE_", "AzureWebJobs")
    saved = {k: v for k, v in os.environ.items() if k.startswith(prefixes)}
    for key in saved:
        del os.environ[key]
    os.environ.update(values)
    try:
        yield
    finally:
        for key in [k for k in os.environ if k.startswith(prefixes)]:
            del os.environ[key]
        os.environ.update(saved)


@functools.cache
def functions() -> dict[str, Any]:
    """The functions exactly as the Functions host indexes them from function_app.py (indexed once)."""
    root = logging.getLogger()
    quiet = logging.NullHandler()
    root.addHandler(quiet)  # azure.functions warns on the root logger while indexing; keep the terminal clean
    try:
        from function_app import app

        return {str(f.get_function_name()): f for f in app.get_functions()}
    finally:
        root.removeHandler(quiet)


async def deliver_event(body: dict[str, Any]) -> None:
    """Decode an Event Grid event as the Python worker does and call the indexed function."""
    from azure.functions.eventgrid import EventGridEventInConverter
    from azure.functions.meta import Datum

    event = EventGridEventInConverter.decode(Datum(json.dumps(body), "json"), trigger_metadata={})
    await functions()["eventgrid_lab_plan"].get_user_function()(event)


async def tick_timer() -> None:
    from azure.functions.meta import Datum
    from azure.functions.timer import TimerRequestConverter

    timer = TimerRequestConverter.decode(Datum(json.dumps({"IsPastDue": False}), "json"), trigger_metadata={})
    await functions()["timer_sweep"].get_user_function()(timer)


class Story:
    def __init__(self, out: Console, stage: Stage, sink: services.SmtpSink, captured: Captured) -> None:
        self.out = out
        self.stage = stage
        self.sink = sink
        self.captured = captured
        self.problems: list[str] = []

    # ---------------------------------------------------------------- helpers
    def title(self, number: int, text: str) -> None:
        self.out.print()
        self.out.print(Rule(Text(f" {number}. {text} ", style="bold"), align="left", style="blue"))
        self.out.print()

    def expect(self, ok: bool, what: str) -> None:
        if not ok:
            self.problems.append(what)
            self.out.print(Text(f"✗ not as expected: {what}", style="bold red"), soft_wrap=True)

    async def audit(self) -> runner.RunResult:
        settings = runner.resolve_settings(os.environ, runner.Flags(), mode="audit")
        policy = runner.read_policy(settings.policy_file, "audit")
        self.out.print(Text("$ labguard audit", style="bold"))
        result = await runner.run(settings, policy, command="audit")
        render.print_run(self.out, result)
        return result

    async def http(self, method: str, path: str, *, token: str | None = None, body: Any = None) -> tuple[int, Any, Any]:
        import aiohttp

        from shared.edge.tls import ssl_context

        url = path if path.startswith("https://") else self.stage.endpoint.endpoint + path
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        ssl = ssl_context(os.environ["LABGUARD_CA_BUNDLE"])
        async with (
            aiohttp.ClientSession() as session,
            session.request(method, url, json=body, headers=headers, ssl=ssl) as response,
        ):
            text = await response.text()
            return response.status, (json.loads(text) if text else None), response.headers

    async def stored(self, plan_id: str) -> dict[str, Any]:
        from urllib.parse import quote

        status, body, _ = await self.http("GET", f"/_emulator/resources?id={quote(plan_id)}")
        if status != 200 or not isinstance(body, dict):
            raise StoryError(f"the local endpoint has no {plan_id}")
        return body

    def failure_notices(self) -> list[Any]:
        """The failure notices the sink received (the mails to people whose change was set back are not)."""
        return [mail for mail in self.sink.messages if mail.message["X-Labguard-Failure"]]

    def changer_mails(self) -> list[Any]:
        return [mail for mail in self.sink.messages if mail.message["X-Labguard-Changer"]]

    # ---------------------------------------------------------------- 0. the stage
    def intro(self) -> None:
        stage, sink = self.stage, self.sink
        plans = len(estate.SPECS)
        groups = len({(s.sub, s.rg) for s in estate.SPECS})
        out = self.out
        out.print(Text("labguard demo: the whole job on this machine, no Azure account needed", style="bold"))
        out.print(
            f"local Lab Services endpoint {stage.endpoint.endpoint} seeded with {plans} lab plans in "
            f"{len(estate.SUBSCRIPTIONS)} subscriptions ({', '.join(estate.SUBSCRIPTION_NAMES.values())}) "
            f"and {groups} resource groups",
            soft_wrap=True,
        )
        out.print(
            f"Azurite (notice ledger) 127.0.0.1:{stage.azurite.port}; SMTP sink {sink.host}:{sink.port} (STARTTLS)"
        )
        out.print(
            "policy: the bundled baseline + 2 overrides (research may idle 2 h; the Linux course gets public SSH, "
            "private RDP); the Functions run with LABGUARD_MODE=enforce",
            soft_wrap=True,
        )

    # ---------------------------------------------------------------- 1. first audit
    async def first_audit(self) -> None:
        self.title(1, "What the admin sees first")
        result = await self.audit()
        self.expect(result.exit_code == 1 and result.counts["drifted"] > 0, "the first audit finds drift (exit 1)")

    # ---------------------------------------------------------------- 2. an owner's change, fixed by Event Grid
    async def owner_change(self) -> None:
        from azure.identity.aio import ClientSecretCredential

        from shared.edge.arm import principal_from_token

        self.title(3, "A lab owner loosens a plan; Event Grid brings the write to labguard")
        app_oid = await self._app_principal()  # the Function App is up: its worker holds its ARM session
        spec = estate.spec_named(estate.OWNER_PLAN)
        plan_id = estate.plan_id(spec)
        endpoint = self.stage.endpoint
        credential = ClientSecretCredential(
            endpoint.tenant_id,
            OWNER_CLIENT,
            "owner-demo-secret",
            authority=endpoint.authority,
            connection_verify=os.environ["LABGUARD_CA_BUNDLE"],
            disable_instance_discovery=True,
        )
        async with credential:
            token = (await credential.get_token("https://management.azure.com/.default")).token
        owner_oid = principal_from_token(token) or "?"
        before = await self.stored(plan_id)
        changes = _describe_patch(before, estate.OWNER_PATCH)
        path = f"{plan_id}?api-version={API_VERSION}"
        status, _, headers = await self.http("PATCH", path, token=token, body=estate.OWNER_PATCH)
        operation = headers.get("Azure-AsyncOperation")
        state = "?"
        for _ in range(100):
            if not operation:
                break
            _, op, _ = await self.http("GET", operation, token=token)
            state = str((op or {}).get("status", "?"))
            if state.lower() in ("succeeded", "failed", "canceled"):
                break
            await asyncio.sleep(0.02)
        written_at = time.monotonic()
        self.out.print(
            f"lab owner [bold]{OWNER_CLIENT}[/] (object id {owner_oid[:8]}…) sends PATCH {spec.name}: {changes}",
            soft_wrap=True,
        )
        self.out.print(f"  ARM answers {status}, operation {state}")

        event = await self._event_for(plan_id, owner_oid)
        self.out.print(
            f"Event Grid event {event['eventType']} (id {event['id'][:8]}…), caller {owner_oid[:8]}…, "
            f"subject …/labPlans/{spec.name}",
            soft_wrap=True,
        )
        mark = len(self.captured.records)
        started = time.monotonic()
        await deliver_event(event)
        done = time.monotonic()
        fixed = self.captured.since(mark, "plan.change")
        after = (await self.stored(plan_id))["properties"]
        shown = ", ".join(_change(c) for c in fixed)
        self.out.print(
            f"[green]eventgrid_lab_plan fixed it[/] in {1000 * (done - started):.0f} ms, "
            f"{1000 * (done - written_at):.0f} ms after the owner's write: {shown or 'nothing'}",
            soft_wrap=True,
        )
        connection, shutdown = after["defaultConnectionProfile"], after["defaultAutoShutdownProfile"]
        self.out.print(
            f"  the plan now: clientSshAccess {connection['clientSshAccess']}, idleDelay {shutdown['idleDelay']}; "
            "labs created from it from now on get these defaults (existing labs are not touched)",
            soft_wrap=True,
        )
        relabs = self.captured.since(mark, "lab.fixed")
        told = {r.get("lab_id"): r for r in self.captured.since(mark, "changer.notified")}
        for fixed_lab in relabs:
            lab_name = str(fixed_lab["lab_id"]).rsplit("/", 1)[-1]
            who = told.get(fixed_lab["lab_id"], {}).get("to")
            self.out.print(
                f"  its labs re-checked: lab {lab_name} fixed"
                + (f"; its last writer {who} told (systemData)" if who else ""),
                soft_wrap=True,
            )
        self.expect(done - written_at < 1.0, "the event fixes the plan within the same second")
        self.expect(
            connection["clientSshAccess"] == "Private" and shutdown["idleDelay"] == "PT30M",
            f"{spec.name} is back inside the policy",
        )

        # labguard's own PATCH raised an event too: the function must recognise it and do nothing.
        own = await self._event_for(plan_id, app_oid)
        mark = len(self.captured.records)
        await deliver_event(own)
        own_write = "event.own-write" in self.captured.events_since(mark)
        self.out.print(
            f"labguard's own PATCH raised an event too (caller {app_oid[:8]}…): "
            + ("recognised as its own write, no ARM call made" if own_write else "NOT recognised"),
            soft_wrap=True,
        )
        self.expect(own_write, "labguard recognises its own write's event")

    async def _event_for(self, plan_id: str, caller_oid: str, *, upn: str | None = None) -> dict[str, Any]:
        claim = "http://schemas.microsoft.com/identity/claims/objectidentifier"
        upn_claim = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn"
        for _ in range(200):
            _, events, _ = await self.http("GET", "/_emulator/events")
            for event in reversed((events or {}).get("value", [])):
                claims = event.get("data", {}).get("claims", {})
                caller = claims.get(upn_claim, "") if upn else claims.get(claim, "")
                if (
                    event.get("subject", "").lower() == plan_id.lower()
                    and event.get("eventType") == "Microsoft.Resources.ResourceWriteSuccess"
                    and str(caller).lower() == (upn or caller_oid).lower()
                ):
                    return dict(event)
            await asyncio.sleep(0.02)
        raise StoryError(f"the local endpoint recorded no write event for {plan_id} by {caller_oid}")

    async def _app_principal(self) -> str:
        from shared.runtime.runs import current_runtime

        runtime = await current_runtime()
        return await runtime.own_principal() or "?"

    # ---------------------------------------------------------------- 2. a teacher's lab change, set back and told
    async def teacher_change(self) -> None:
        self.title(2, "A teacher loosens a lab; labguard sets it back and tells them")
        spec = estate.spec_named(estate.LAB_PLAN)
        lab_id = (
            f"/subscriptions/{spec.sub}/resourceGroups/{spec.rg}/providers/Microsoft.LabServices/labs/db-lab-drifted"
        )
        # A person's delegated token, as `az login` gets one (the local endpoint has no interactive sign-in).
        _, issued, _ = await self.http("POST", "/_emulator/token", body={"user": TEACHER, "name": TEACHER_NAME})
        token = str((issued or {}).get("access_token", ""))
        before = await self.stored(lab_id)
        changes = _describe_patch(before, TEACHER_PATCH)
        status, _, _ = await self.http("PATCH", f"{lab_id}?api-version={API_VERSION}", token=token, body=TEACHER_PATCH)
        self.out.print(
            f"teacher [bold]{TEACHER_NAME}[/] ({TEACHER}, signed in as a person) sends PATCH lab db-lab-drifted: "
            f"{changes}; ARM answers {status}",
            soft_wrap=True,
        )
        event = await self._event_for(lab_id, "", upn=TEACHER)
        self.out.print(
            f"Event Grid event {event['eventType']} (id {event['id'][:8]}…), caller {TEACHER} "
            f"(idtyp {event['data']['claims'].get('idtyp')}), subject …/labs/db-lab-drifted",
            soft_wrap=True,
        )
        mark = len(self.captured.records)
        started = time.monotonic()
        await deliver_event(event)
        done = time.monotonic()
        fixed = self.captured.since(mark, "lab.change")
        self.out.print(
            f"[green]eventgrid_lab_plan fixed the lab[/] in {1000 * (done - started):.0f} ms: "
            + ", ".join(_change(c) for c in fixed),
            soft_wrap=True,
        )
        after = (await self.stored(lab_id))["properties"]
        self.expect(
            after["connectionProfile"]["clientSshAccess"] == "Private"
            and after["autoShutdownProfile"]["noConnectDelay"] == "PT30M",
            "db-lab-drifted is back inside the policy",
        )
        mails = self.changer_mails()
        self.expect(len(mails) == 1 and mails[0].rcpt_tos == [TEACHER], f"one mail to {TEACHER}")
        if not mails:
            return
        mail = mails[0]
        self.out.print(
            f"labguard told them (LABGUARD_NOTIFY_CHANGER=on): SMTP sink RCPT TO:<{', '.join(mail.rcpt_tos)}>",
            soft_wrap=True,
        )
        self.out.print(f"Subject: {mail.message['Subject']}", markup=False, highlight=False, soft_wrap=True)
        self.out.print()
        self.out.print(mail.text().rstrip(), markup=False, highlight=False, soft_wrap=True)
        self.expect("ask for an exemption: " + EXEMPTIONS in mail.text(), "the mail says where to ask for an exemption")

    # ---------------------------------------------------------------- 3. the timer sweep
    async def sweep(self) -> None:
        self.title(4, "The timer sweep fixes the rest")
        mark = len(self.captured.records)
        started = time.monotonic()
        try:
            await tick_timer()
        except Exception as exc:  # RunFailed: the host would record the run as failed
            self.expect(False, f"the sweep succeeds ({type(exc).__name__}: {exc})")
        elapsed = time.monotonic() - started
        by_plan: dict[str, list[str]] = {}
        for change in self.captured.since(mark, "plan.change"):
            by_plan.setdefault(change["plan_id"], []).append(_change(change))
        ids = {estate.plan_id(spec).lower(): spec for spec in estate.SPECS}
        width = max((len(ids[p].name) for p in by_plan if p in ids), default=10)
        for plan, changes in sorted(by_plan.items(), key=lambda kv: (ids[kv[0]].sub, ids[kv[0]].rg, ids[kv[0]].name)):
            spec = ids[plan]
            self.out.print(
                Text.assemble(("fixed   ", "green"), (f"{spec.name:<{width}}", "bold"), f"  {', '.join(changes)}"),
                soft_wrap=True,
            )
        for fields in self.captured.since(mark, "plan.skipped", "plan.exempt"):
            spec = ids[fields["plan_id"]]
            kind = "skipped " if spec.kind == "locked" else "exempt  "
            self.out.print(
                Text.assemble((kind, "dim"), (f"{spec.name:<{width}}", "bold"), f"  {fields['reason']}"),
                soft_wrap=True,
            )
        for fields in self.captured.since(mark, "plan.provisioning-failed"):
            spec = ids[fields["plan_id"]]
            to = ", ".join(r for mail in self.failure_notices() for r in mail.rcpt_tos) or "nobody"
            self.out.print(
                Text.assemble(
                    ("FAILED  ", "bold red"),
                    (f"{spec.name:<{width}}", "bold"),
                    f"  {fields.get('action')} {fields.get('code')}: failure notice sent to {to}",
                ),
                soft_wrap=True,
            )
        [summary] = self.captured.since(mark, "sweep.summary") or [{}]
        calls = summary.get("arm_calls_by_kind", {})
        self.out.print()
        self.out.print(
            f"timer_sweep: {summary.get('plans', 0)} plans in {elapsed:.2f} s: {summary.get('fixed', 0)} fixed, "
            f"{summary.get('compliant', 0)} compliant, {summary.get('exempt', 0)} exempt, "
            f"{summary.get('skipped', 0) - summary.get('exempt', 0)} skipped, "
            f"{summary.get('provisioning_failed', 0)} failed to provision; ARM calls: "
            + ", ".join(f"{n} {kind}" for kind, n in calls.items()),
            soft_wrap=True,
        )
        drifted = sum(1 for s in estate.SPECS if s.kind in ("drifted", "expired-exempt"))
        self.expect(summary.get("fixed") == drifted, f"the sweep fixes the {drifted} drifted plans")
        self.expect(summary.get("failed") == 0, "no plan fails in the sweep")

    # ---------------------------------------------------------------- 4. the notice
    def notice(self) -> None:
        self.title(5, "The failure notice, as the SMTP sink received it")
        messages = self.failure_notices()
        self.expect(len(messages) == 1, "exactly one failure notice is sent")
        if not messages:
            return
        mail = messages[0]
        msg = mail.message
        self.out.print(
            f"SMTP sink: STARTTLS {'on' if mail.tls else 'OFF'}, AUTH as {mail.login}; "
            f"MAIL FROM:<{mail.mail_from}> RCPT TO:{', '.join(f'<{r}>' for r in mail.rcpt_tos)}",
            soft_wrap=True,
        )
        for header in ("From", "To", "Subject", "Auto-Submitted", "X-Labguard-Plan-Id"):
            self.out.print(f"{header}: {msg[header]}", soft_wrap=True, markup=False, highlight=False)
        self.out.print()
        self.out.print(mail.text().rstrip(), markup=False, highlight=False, soft_wrap=True)
        self.expect(mail.rcpt_tos == [estate.SUPPORT_EMAIL], f"the notice goes to {estate.SUPPORT_EMAIL}")

    # ---------------------------------------------------------------- 5. final audit
    async def final_audit(self) -> None:
        self.title(6, "The final audit")
        result = await self.audit()
        by_name = {item.plan_id.name: item for item in result.results if item.plan_id is not None}
        for name, item in by_name.items():
            spec = estate.spec_named(name)
            if spec.kind not in ("failed", "locked", "exempt"):
                self.expect(item.status == "compliant", f"{name} is compliant")
        failed = by_name[estate.FAILED_PLAN]
        self.expect(
            failed.status == "provisioning-failed" and failed.notice is not None and "email" in failed.notice.sent,
            f"{estate.FAILED_PLAN} is reported Failed with its notice sent",
        )
        self.expect(by_name[estate.LOCKED_PLAN].status == "skipped", f"{estate.LOCKED_PLAN} is skipped (Locked)")
        self.expect(by_name[estate.EXEMPT_PLAN].status == "exempt", f"{estate.EXEMPT_PLAN} is exempt")


def _change(record: dict[str, Any]) -> str:
    """``field observed → new`` from a plan.change record."""
    observed = record.get("observed")
    return f"{record['field'].rsplit('.', 1)[-1]} {'(not set)' if observed is None else observed} → {record['new']}"


def _describe_patch(body: dict[str, Any], patch: dict[str, Any]) -> str:
    parts = []
    for profile, values in patch["properties"].items():
        for key, value in values.items():
            parts.append(f"{key} {body['properties'].get(profile, {}).get(key, '(not set)')} → {value}")
    return ", ".join(parts)


async def tell(out: Console, stage: Stage) -> list[str]:
    from shared.runtime.runs import close_runtimes

    async with services.smtp_sink(stage.tls) as sink:
        bundle = services.combined_bundle(stage.workdir, stage.endpoint.ca_file, stage.tls.ca_file)
        with environment(app_settings(stage, sink, bundle)), capture_logs() as captured:
            story = Story(out, stage, sink, captured)
            try:
                story.intro()
                await story.first_audit()
                await story.teacher_change()
                await story.owner_change()
                await story.sweep()
                story.notice()
                await story.final_audit()
            finally:
                await close_runtimes()
    return story.problems


def run_demo(out: Console | None = None) -> int:
    """Start the local services, tell the story, stop everything. 0 = the story held, 1 = it did not."""
    out = out or render.console()
    err = Console(file=sys.stderr, highlight=False, soft_wrap=True)

    interrupted: list[int] = []

    def terminate(signum: int, _frame: Any) -> None:
        interrupted.append(signum)
        raise KeyboardInterrupt(f"signal {signum}")

    restore = services.on_signal(terminate)
    children = services.Children()
    started = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="labguard-demo-") as tmp:
            workdir = Path(tmp)
            saved_tempdir, tempfile.tempdir = tempfile.tempdir, tmp  # the trust bundle labguard writes goes too
            try:
                seed = workdir / "estate.json"
                seed.write_text(json.dumps(estate.estate()), encoding="utf-8")
                policy_file = workdir / "policy.yaml"
                policy_file.write_text(estate.DEMO_POLICY, encoding="utf-8")
                emulator = services.EmulatorStarting(children, seed, workdir)
                azurite = services.AzuriteStarting(children, workdir)
                tls = services.make_tls(workdir)
                stage = Stage(workdir, policy_file, emulator.ready(), azurite.ready(), tls)
                problems = asyncio.run(tell(out, stage))
            finally:
                tempfile.tempdir = saved_tempdir
                previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip the cleanup
                try:
                    children.stop_all()
                finally:
                    signal.signal(signal.SIGINT, previous)
        if interrupted:  # raised where Python ignores exceptions (an import lock's weakref callback): still a stop
            raise KeyboardInterrupt(f"signal {interrupted[0]}")
    except KeyboardInterrupt:
        err.print("labguard demo: interrupted; stopped the local endpoint, Azurite and the SMTP sink")
        return 130
    except (services.ServiceError, StoryError, runner.ConfigError) as exc:
        err.print(f"[bold red]labguard demo:[/] {exc}")
        return 1
    finally:
        restore()
    out.print()
    if problems:
        out.print(Text(f"demo: {len(problems)} step(s) not as expected: " + "; ".join(problems), style="bold red"))
        return 1
    out.print(
        f"demo finished in {time.monotonic() - started:.1f} s; the local endpoint, Azurite and the SMTP sink are "
        "stopped. Next: `labguard --help`, infra/README.md to deploy.",
        soft_wrap=True,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(run_demo())
