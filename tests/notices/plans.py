"""ARM-shaped lab plans and settings for notice tests."""

from __future__ import annotations

from typing import Any

from azure.data.tables.aio import TableClient

from shared.core.plans import LabPlan, PlanId
from shared.notices.ledger import partition_key
from shared.runtime.settings import Settings

SUB = "0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9"
TOPIC_KEY = "topic-key-DO-NOT-LOG-0123456789abcdef=="
WEBHOOK_PATH = "/webhookb2/team-id@tenant/IncomingWebhook/SECRET-TOKEN-abc123/owner"


def settings(env: dict[str, str], **overrides: str) -> Settings:
    return Settings.from_env({**env, **overrides})


def plan_json(
    name: str = "physics-101",
    *,
    rg: str = "rg-science-labs",
    state: str = "Failed",
    code: str | None = "SubnetInUse",
    timestamp: str | None = "2024-05-01T10:15:00Z",
    message: str | None = "The subnet 'labs' is in use by another lab plan.",
    action: str | None = "Update",
    support: dict[str, Any] | None = None,
    with_error: bool = True,
) -> dict[str, Any]:
    """A lab plan as ARM (api-version 2023-06-07) returns it."""
    props: dict[str, Any] = {
        "provisioningState": state,
        "defaultConnectionProfile": {
            "webSshAccess": "None",
            "webRdpAccess": "None",
            "clientSshAccess": "Public",
            "clientRdpAccess": "Public",
        },
    }
    if support is not None:
        props["supportInfo"] = support
    if with_error:
        props["resourceOperationError"] = {"action": action, "code": code, "message": message, "timestamp": timestamp}
    return {
        "id": f"/subscriptions/{SUB}/resourceGroups/{rg}/providers/Microsoft.LabServices/labPlans/{name}",
        "name": name,
        "type": "Microsoft.LabServices/labPlans",
        "location": "westeurope",
        "properties": props,
    }


def plan(**kw: Any) -> LabPlan:
    return LabPlan.from_arm(plan_json(**kw))


SUPPORT = {
    "email": "physics-support@school.example",
    "phone": "+44 20 7946 0000",
    "instructions": "Open a ticket with the lab name.\nUrgent: call the phone number.",
}


async def ledger_rows(
    connection_string: str, table: str, plan_id: PlanId, *, open_only: bool = False
) -> list[dict[str, Any]]:
    """A plan's ledger rows read straight from the table (what the product wrote, not what it reports)."""
    query = "PartitionKey eq @pk" + (" and IsOpen eq true" if open_only else "")
    async with TableClient.from_connection_string(connection_string, table_name=table) as client:
        return [dict(e) async for e in client.query_entities(query, parameters={"pk": partition_key(plan_id)})]
