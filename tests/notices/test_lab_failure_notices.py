"""A failed lab is noticed like a failed plan: its resourceOperationError goes once per error to the support
contacts of the plan it belongs to (labPlanId), through the real Functions, SMTP and Azurite."""

from __future__ import annotations

from typing import Any

from tests.app.test_functions_e2e import deliver, tick, write_event
from tests.labs.lab_fixtures import lab_body
from tests.notices.plans import SUB, SUPPORT, plan_json
from tests.notices.servers import SmtpServer
from tests.notices.test_notices_through_functions import ERROR, _close_runtimes, app_env, emu

__all__ = ["_close_runtimes", "app_env", "emu"]


async def test_a_failed_lab_tells_its_plans_support_once_per_error(
    emu: Any, app_env: dict[str, str], smtp: SmtpServer
) -> None:
    plan = plan_json(state="Succeeded", with_error=False, support=SUPPORT)
    emu.put_plan(plan)
    body = lab_body("lab-broken", plan_id=plan["id"])
    body["id"] = body["id"].replace(body["id"].split("/")[2], SUB)
    emu.put_lab(body)
    emu.fail_plan(body["id"], ERROR)  # the endpoint fails any Lab Services resource this way
    event = write_event(body["id"])
    event["data"]["operationName"] = "Microsoft.LabServices/labs/write"
    await deliver(event)
    await deliver(event)  # redelivered
    await tick()  # and the sweep sees the same failure
    assert len(smtp.messages) == 1
    mail = smtp.messages[0]
    assert mail.rcpt_tos == [SUPPORT["email"]]
    assert mail.message["Subject"] == "[labguard] Lab lab-broken failed: SubnetInUse"
    text = mail.body("plain")
    for expected in (body["id"], "SubnetInUse", "Update", SUPPORT["phone"]):
        assert expected in text
    emu.fail_plan(body["id"], {**ERROR, "code": "QuotaExceeded", "timestamp": "2026-11-23T11:00:00Z"})
    await tick()
    assert [m.message["Subject"].split(": ")[-1] for m in smtp.messages] == ["SubnetInUse", "QuotaExceeded"]
    written = [r["path"] for r in emu.requests() if r["kind"] == "arm" and r["method"] == "PATCH"]
    assert not [path for path in written if "/labs/" in path.lower()]  # a failed lab is never patched
