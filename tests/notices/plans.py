"""ARM-shaped lab plans and settings for notice tests."""

from __future__ import annotations

from pathlib import Path
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


def functions_env(
    emu: Any,
    env: dict[str, str],
    ca_file: str,
    tmp_path: Path,
    policy: str,
    *,
    drop: tuple[str, ...] = (),
    **extra: str,
) -> dict[str, str]:
    """The settings that point the real Functions app at the local endpoint and the notice servers: one CA
    bundle trusting both, the policy written to a file; ``drop`` removes notice settings, ``extra`` adds."""
    bundle = tmp_path / "ca.pem"
    bundle.write_text(Path(ca_file).read_text() + Path(emu.ca_file).read_text())
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(policy)
    return {
        **{k: v for k, v in env.items() if not any(part in k for part in drop)},
        "LABGUARD_CA_BUNDLE": str(bundle),
        "LABGUARD_ARM_ENDPOINT": emu.endpoint,
        "LABGUARD_ARM_AUDIENCE": "https://management.azure.com/",
        "LABGUARD_SUBSCRIPTIONS": SUB,
        "LABGUARD_POLICY_FILE": str(policy_file),
        "AZURE_TENANT_ID": emu.tenant_id,
        "AZURE_CLIENT_ID": "labguard-app",
        "AZURE_CLIENT_SECRET": "local-test-secret",
        "AZURE_AUTHORITY_HOST": emu.authority,
        **extra,
    }
