"""After each timer sweep: the daily digest (SMTP sink + Azurite ledger), the change log and the page in
a blob container (Azurite's blob service), through the real Functions timer and the local ARM endpoint.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from devtools.services import AZURITE_ACCOUNT, AZURITE_KEY, Children, free_port, wait_listening
from emulator.testing import start_emulator
from shared.runtime.settings import Settings
from tests.app.test_functions_e2e import tick
from tests.notices.plans import SUB, SUPPORT, functions_env, plan_json
from tests.notices.servers import AZURITE_TABLE, Azurite, SmtpServer, TlsMaterial

ADMIN = "it-admins@school.example"
ERROR = {"action": "Update", "code": "SubnetInUse", "message": "subnet in use", "timestamp": "2026-11-23T09:00:00Z"}
POLICY = "mode: {mode}\nautoShutdown:\n  shutdownOnDisconnect: Enabled\n"
AZURITE_BLOB = AZURITE_TABLE.parent / "azurite-blob"


@pytest.fixture(scope="module")
def azurite_blob(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    workdir = tmp_path_factory.mktemp("azurite-blob")
    children = Children()
    try:
        for _ in range(3):
            port = free_port()
            with (workdir / "azurite-blob.log").open("ab") as log:
                proc = children.spawn(
                    [
                        str(AZURITE_BLOB),
                        "--blobHost",
                        "127.0.0.1",
                        "--blobPort",
                        str(port),
                        "--inMemoryPersistence",
                        "--skipApiVersionCheck",
                        "--loose",
                        "--disableTelemetry",
                    ],
                    log=log,
                    cwd=workdir,
                    env={**os.environ, "AZURITE_ACCEPT_EULA": "true"},
                )
            if wait_listening(proc, port, 30):
                yield port
                return
        pytest.fail("Azurite's blob service did not start (run `make test`: npm ci installs it)", pytrace=False)
    finally:
        children.stop_all()


@pytest.fixture
def emu() -> Iterator[Any]:
    with start_emulator() as emulator:
        yield emulator


@pytest.fixture(autouse=True)
async def _close_runtimes() -> Any:
    yield
    from shared.runtime.runs import close_runtimes

    await close_runtimes()


def storage(azurite_table: Azurite, blob_port: int | None = None) -> str:
    conn = azurite_table.connection_string
    if blob_port is not None:
        conn += f"BlobEndpoint=http://127.0.0.1:{blob_port}/{AZURITE_ACCOUNT};"
    assert AZURITE_KEY in conn
    return conn


def configure(
    monkeypatch: pytest.MonkeyPatch,
    emu: Any,
    env: dict[str, str],
    tls: TlsMaterial,
    tmp_path: Path,
    *,
    mode: str = "audit",
    **extra: str,
) -> dict[str, str]:
    values = functions_env(
        emu,
        env,
        tls.ca_file,
        tmp_path,
        POLICY.format(mode=mode),
        drop=("WEBHOOK_URLS", "EVENTGRID_TOPIC", "SUPPORT_URL_HOSTS"),
        LABGUARD_CHANGES_TABLE=env["LABGUARD_LEDGER_TABLE"] + "changes",
        **extra,
    )
    for key in ("LABGUARD_REPORT_CONTAINER", "LABGUARD_DIGEST_EMAIL", "LABGUARD_REPORT_ACCOUNT_URL"):
        monkeypatch.delenv(key, raising=False)
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return values


def shutdown(value: str) -> dict[str, Any]:
    return {"shutdownOnDisconnect": value, "shutdownWhenNotConnected": "Disabled", "shutdownOnIdle": "None"}


def put(emu: Any, name: str, *, on_disconnect: str = "Enabled", tags: dict[str, str] | None = None) -> str:
    body = plan_json(name, state="Succeeded", with_error=False, support=SUPPORT)
    body["properties"]["defaultAutoShutdownProfile"] = shutdown(on_disconnect)
    if tags:
        body["tags"] = tags
    emu.put_plan(body)
    return str(body["id"])


def estate(emu: Any) -> None:
    """One drifted plan, one exempt plan ending in 5 days, one Failed plan, one compliant plan."""
    put(emu, "physics-101", on_disconnect="Disabled")
    ends = (datetime.now(UTC).date() + timedelta(days=5)).isoformat()
    put(emu, "chem-201", on_disconnect="Disabled", tags={"labguard:exempt": "exam week", "labguard:exempt-until": ends})
    failed = put(emu, "bio-301")
    emu.fail_plan(failed, ERROR)
    put(emu, "maths-101")


def digests(smtp: SmtpServer) -> list[Any]:
    return [m for m in smtp.messages if ADMIN in m.rcpt_tos]


async def digest_rows(conn: str, table: str) -> list[dict[str, Any]]:
    from azure.data.tables.aio import TableClient

    async with TableClient.from_connection_string(conn, table_name=table) as client:
        return [dict(e) async for e in client.query_entities("PartitionKey eq 'labguard-digest'")]


async def test_the_digest_goes_out_once_a_day_and_lists_drift_failures_and_ending_exemptions(
    emu: Any, env: dict[str, str], tls: TlsMaterial, smtp: SmtpServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = configure(monkeypatch, emu, env, tls, tmp_path, LABGUARD_DIGEST_EMAIL=ADMIN)
    estate(emu)
    await tick()
    (mail,) = digests(smtp)
    assert mail.tls and mail.message["Auto-Submitted"] == "auto-generated"
    subject = mail.message["Subject"]
    assert "1 new failure" in subject and "1 new drift" in subject and "1 exemption ending" in subject
    text = mail.text()
    assert "physics-101: shutdownOnDisconnect Disabled -> Enabled" in text
    assert "bio-301: SubnetInUse" in text
    assert "chem-201: ends " in text and "(5 days left): exam week" in text
    assert "maths-101" not in text
    assert "NEW" in mail.body("html")
    (row,) = await digest_rows(values["AzureWebJobsStorage"], values["LABGUARD_LEDGER_TABLE"])
    assert row["RowKey"] == datetime.now(UTC).date().isoformat() and row["State"] == "sent"
    assert len(json.loads(row["Items"])) == 3

    await tick()  # a second sweep the same day, with something new: still one digest today
    put(emu, "maths-101", on_disconnect="Disabled")
    await tick()
    assert len(digests(smtp)) == 1
    # The support contacts' notice is the notices' business, not the digest's: it went out once too.
    assert [m for m in smtp.messages if "physics-support@school.example" in m.rcpt_tos]


async def test_next_day_only_what_is_new_and_nothing_when_nothing_is_new(
    emu: Any, env: dict[str, str], tls: TlsMaterial, smtp: SmtpServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared.core.policy import load_policy
    from shared.core.snapshot import PlanEntry, build_snapshot
    from shared.notices.digest import send_daily_digest

    values = configure(monkeypatch, emu, env, tls, tmp_path, LABGUARD_DIGEST_EMAIL=ADMIN)
    settings = Settings.from_env(values)
    policy = load_policy(values["LABGUARD_POLICY_FILE"])
    from shared.core.drift import evaluate
    from shared.core.plans import LabPlan

    def snapshot(*names_drifted: str, at: datetime) -> dict[str, Any]:
        entries = []
        for name in ("physics-101", "maths-101"):
            body = plan_json(name, state="Succeeded", with_error=False)
            body["properties"]["defaultAutoShutdownProfile"] = shutdown(
                "Disabled" if name in names_drifted else "Enabled"
            )
            evaluation = evaluate(LabPlan.from_arm(body), policy, at)
            entries.append(PlanEntry(body["id"], evaluation.status, evaluation))
        return build_snapshot(entries, policy, source="test", subscriptions=[SUB], resource_groups=[], generated_at=at)

    day1 = datetime(2026, 12, 1, 6, 0, tzinfo=UTC)
    day2, day3 = day1 + timedelta(days=1), day1 + timedelta(days=2)
    nothing = await send_daily_digest(settings, snapshot(at=day1), now=day1)
    assert nothing.status == "nothing-new" and digests(smtp) == []
    assert (await send_daily_digest(settings, snapshot("physics-101", at=day1), now=day1)).status == "sent"
    # Day 2: the same drift is not new: nothing is sent, and no row claims the day.
    assert (await send_daily_digest(settings, snapshot("physics-101", at=day2), now=day2)).status == "nothing-new"
    assert len(digests(smtp)) == 1
    # Day 3: a new drift: a digest listing both, only the new one marked.
    smtp.recorder.fail_data_with = "451 4.3.0 Try again later"
    failed = await send_daily_digest(settings, snapshot("physics-101", "maths-101", at=day3), now=day3)
    assert failed.status == "failed" and len(digests(smtp)) == 1  # the claim is released for the next sweep
    smtp.recorder.fail_data_with = None
    sent = await send_daily_digest(settings, snapshot("physics-101", "maths-101", at=day3), now=day3)
    assert (sent.status, sent.items, sent.new) == ("sent", 2, 1)
    text = digests(smtp)[-1].text()
    assert "NEW rg-science-labs/maths-101" in text and "    rg-science-labs/physics-101" in text
    rows = await digest_rows(values["AzureWebJobsStorage"], values["LABGUARD_LEDGER_TABLE"])
    assert sorted(r["RowKey"] for r in rows) == ["2026-12-01", "2026-12-03"]
    assert (await send_daily_digest(settings, snapshot("physics-101", at=day3), now=day3)).status == "already-sent"


class MarkSentFails:
    """A real ledger table whose first ``failures`` writes of a ``sent`` mark fail, as storage going away would."""

    def __init__(self, table: Any, failures: int) -> None:
        self._table, self.failures = table, failures

    def __getattr__(self, name: str) -> Any:
        return getattr(self._table, name)

    async def _mark(self, entity: dict[str, Any], **kwargs: Any) -> Any:
        if entity.get("State") == "sent" and self.failures > 0:
            self.failures -= 1
            from azure.core.exceptions import ServiceRequestError

            raise ServiceRequestError("storage unreachable")
        return await self._table.upsert_entity(entity, **kwargs)

    upsert_entity = _mark

    async def update_entity(self, entity: dict[str, Any], **kwargs: Any) -> Any:
        if entity.get("State") == "sent":
            return await self._mark(entity, **kwargs)
        return await self._table.update_entity(entity, **kwargs)


async def test_a_digest_the_relay_took_is_never_sent_again_when_marking_it_sent_fails(
    emu: Any, env: dict[str, str], tls: TlsMaterial, smtp: SmtpServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared.core.drift import evaluate
    from shared.core.plans import LabPlan
    from shared.core.policy import load_policy
    from shared.core.snapshot import PlanEntry, build_snapshot
    from shared.notices import digest as digest_delivery

    values = configure(monkeypatch, emu, env, tls, tmp_path, LABGUARD_DIGEST_EMAIL=ADMIN)
    settings = Settings.from_env(values)
    policy = load_policy(values["LABGUARD_POLICY_FILE"])
    monkeypatch.setattr(digest_delivery, "MARK_SENT_PAUSE_S", 0.01, raising=False)
    fails = {"count": 0}
    real_open = digest_delivery.open_table

    def open_failing(*args: Any) -> Any:
        table, credential = real_open(*args)
        return MarkSentFails(table, fails["count"]), credential

    monkeypatch.setattr(digest_delivery, "open_table", open_failing)

    def snapshot(at: datetime) -> dict[str, Any]:  # a new drifted plan each day: always something new
        body = plan_json(f"physics-{at.day}", state="Succeeded", with_error=False)
        body["properties"]["defaultAutoShutdownProfile"] = shutdown("Disabled")
        evaluation = evaluate(LabPlan.from_arm(body), policy, at)
        entry = PlanEntry(body["id"], evaluation.status, evaluation)
        return build_snapshot([entry], policy, source="test", subscriptions=[SUB], resource_groups=[], generated_at=at)

    async def row(day: datetime) -> dict[str, Any]:
        rows = await digest_rows(values["AzureWebJobsStorage"], values["LABGUARD_LEDGER_TABLE"])
        return next(r for r in rows if r["RowKey"] == day.date().isoformat())

    # One failed mark: the retry marks it.
    day1 = datetime(2026, 12, 1, 6, 0, tzinfo=UTC)
    fails["count"] = 1
    assert (await digest_delivery.send_daily_digest(settings, snapshot(day1), now=day1)).status == "sent"
    assert (await row(day1))["State"] == "sent" and len(digests(smtp)) == 1
    # Every mark fails: sent once, and not again after the claim's lease, by this process.
    day2 = day1 + timedelta(days=1)
    fails["count"] = 99
    assert (await digest_delivery.send_daily_digest(settings, snapshot(day2), now=day2)).status == "sent"
    assert (await row(day2))["State"] == "pending" and len(digests(smtp)) == 2
    later = day2 + digest_delivery.CLAIM_LEASE + timedelta(minutes=1)
    again = await digest_delivery.send_daily_digest(settings, snapshot(later), now=later)
    assert again.status == "already-sent" and len(digests(smtp)) == 2
    # Storage is back: the next sweep marks the row, still without sending.
    fails["count"] = 0
    assert (await digest_delivery.send_daily_digest(settings, snapshot(later), now=later)).status == "already-sent"
    assert (await row(day2))["State"] == "sent" and len(digests(smtp)) == 2


async def test_no_digest_without_the_setting_or_when_all_is_well(
    emu: Any, env: dict[str, str], tls: TlsMaterial, smtp: SmtpServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = configure(monkeypatch, emu, env, tls, tmp_path)
    estate(emu)
    await tick()
    assert digests(smtp) == []  # not opted in
    monkeypatch.setenv("LABGUARD_DIGEST_EMAIL", ADMIN)
    emu.seed({"labPlans": [], "labs": []}, reset=True)
    put(emu, "maths-101")
    await tick()
    assert digests(smtp) == []  # opted in, nothing to say
    assert await digest_rows(values["AzureWebJobsStorage"], values["LABGUARD_LEDGER_TABLE"]) == []


async def test_each_sweep_writes_the_page_and_snapshot_to_the_container_with_its_changes(
    emu: Any,
    env: dict[str, str],
    tls: TlsMaterial,
    smtp: SmtpServer,
    azurite_table: Azurite,
    azurite_blob: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from azure.storage.blob.aio import BlobServiceClient

    container = "reports" + env["LABGUARD_LEDGER_TABLE"][-12:]
    configure(
        monkeypatch,
        emu,
        env,
        tls,
        tmp_path,
        mode="enforce",
        AzureWebJobsStorage=storage(azurite_table, azurite_blob),
        LABGUARD_REPORT_CONTAINER=container,
    )
    estate(emu)
    await tick()
    async with BlobServiceClient.from_connection_string(storage(azurite_table, azurite_blob)) as service:
        client = service.get_container_client(container)
        snapshot = json.loads(await (await client.download_blob("latest.json")).readall())
        page_blob = client.get_blob_client("latest.html")
        props = await page_blob.get_blob_properties()
        page = (await (await page_blob.download_blob()).readall()).decode("utf-8")
    assert props.content_settings.content_type == "text/html; charset=utf-8"
    assert snapshot["source"] == "the timer sweep" and snapshot["mode"] == "enforce"
    assert snapshot["totals"]["plans"] == 4 and snapshot["totals"]["fixed"] == 1
    assert snapshot["totals"]["exempt"] == 1 and snapshot["totals"]["provisioning-failed"] == 1
    (change,) = snapshot["changes"]
    assert change["name"] == "physics-101" and change["trigger"] == "sweep"
    assert change["changes"] == [
        {
            "field": "properties.defaultAutoShutdownProfile.shutdownOnDisconnect",
            "observed": "Disabled",
            "new": "Enabled",
        }
    ]
    (failed,) = snapshot["failedPlans"]
    assert failed["name"] == "bio-301" and failed["notice"]["sent"] == ["email"]
    assert 'data-total="fixed">1<' in page and "physics-101" in page and "sent (email)" in page


async def test_a_fix_made_on_an_event_goes_into_the_change_log(
    emu: Any, env: dict[str, str], tls: TlsMaterial, smtp: SmtpServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared.runtime.changes import ChangeLog
    from tests.app.test_functions_e2e import deliver, write_event

    values = configure(monkeypatch, emu, env, tls, tmp_path, mode="enforce")
    plan_id = put(emu, "physics-101", on_disconnect="Disabled")
    await deliver(write_event(plan_id))
    async with ChangeLog.from_connection_string(values["AzureWebJobsStorage"], values["LABGUARD_CHANGES_TABLE"]) as log:
        (change,) = await log.recent(datetime.now(UTC))
    assert change.plan_id == plan_id and change.trigger == "event" and change.correlation_id
    assert change.changes == (("properties.defaultAutoShutdownProfile.shutdownOnDisconnect", "Disabled", "Enabled"),)


async def test_a_write_that_did_not_take_is_in_the_change_log_with_its_status(
    emu: Any, env: dict[str, str], tls: TlsMaterial, smtp: SmtpServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared.core.report_html import render_html
    from shared.core.snapshot import build_snapshot
    from shared.runtime.changes import ChangeLog
    from tests.app.test_functions_e2e import deliver, write_event

    values = configure(monkeypatch, emu, env, tls, tmp_path, mode="enforce")
    emu.configure(drop_written="shutdownOnDisconnect")  # the service takes the write and keeps the old value
    plan_id = put(emu, "physics-101", on_disconnect="Disabled")
    await deliver(write_event(plan_id))
    async with ChangeLog.from_connection_string(values["AzureWebJobsStorage"], values["LABGUARD_CHANGES_TABLE"]) as log:
        (change,) = await log.recent(datetime.now(UTC))
    assert change.plan_id == plan_id and change.status == "unconverged"
    assert change.detail is not None and "read back 'Disabled'" in change.detail
    assert change.changes == (("properties.defaultAutoShutdownProfile.shutdownOnDisconnect", "Disabled", "Enabled"),)
    from shared.core.policy import parse_policy

    page = render_html(
        build_snapshot(
            [],
            parse_policy({"mode": "enforce"}, "p.yaml"),
            source="t",
            subscriptions=[],
            resource_groups=[],
            generated_at=datetime.now(UTC),
            changes=[change],
        )
    )
    assert 'data-change-status="unconverged"' in page and "read back" in page


async def test_a_sweep_write_that_did_not_take_is_in_the_change_log_too(
    emu: Any, env: dict[str, str], tls: TlsMaterial, smtp: SmtpServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared.runtime.changes import ChangeLog

    values = configure(monkeypatch, emu, env, tls, tmp_path, mode="enforce")
    emu.configure(drop_written="shutdownOnDisconnect")
    plan_id = put(emu, "physics-101", on_disconnect="Disabled")
    await tick()
    async with ChangeLog.from_connection_string(values["AzureWebJobsStorage"], values["LABGUARD_CHANGES_TABLE"]) as log:
        (change,) = await log.recent(datetime.now(UTC))
    assert (change.plan_id, change.status, change.trigger) == (plan_id, "unconverged", "sweep")


async def test_labguard_enforce_from_a_laptop_goes_into_the_change_log_too(
    emu: Any, env: dict[str, str], tls: TlsMaterial, smtp: SmtpServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from labguard import runner
    from shared.runtime.changes import ChangeLog

    values = configure(monkeypatch, emu, env, tls, tmp_path, mode="enforce")
    plan_id = put(emu, "physics-101", on_disconnect="Disabled")
    settings = runner.resolve_settings(values, runner.Flags(), mode="enforce")
    result = await runner.run(settings, runner.read_policy(settings.policy_file, "enforce"), command="enforce")
    assert result.counts["fixed"] == 1
    async with ChangeLog.from_connection_string(values["AzureWebJobsStorage"], values["LABGUARD_CHANGES_TABLE"]) as log:
        (change,) = await log.recent(datetime.now(UTC))
    assert change.plan_id == plan_id and change.trigger == "labguard enforce"
