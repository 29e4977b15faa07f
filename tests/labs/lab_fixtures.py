"""Lab bodies written from the 2023-06-07 spec's facts (Labs.json: LabProperties, VirtualMachineProfile), not
copied from its examples: a Windows template-VM lab with the example's shape, and variations of it."""

from __future__ import annotations

import copy
from typing import Any

SUB = "6f1d2c3b-4a59-4e6d-8c7b-9a0b1c2d3e4f"
RG = "rg-labs"
PLAN_ID = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.LabServices/labPlans/plan-labs"


def lab_id(name: str, rg: str = RG, sub: str = SUB) -> str:
    return f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.LabServices/labs/{name}"


def lab_body(
    name: str = "lab-win",
    *,
    os_type: str = "Windows",
    plan_id: str | None = PLAN_ID,
    state: str = "Succeeded",
    rg: str = RG,
    tags: dict[str, str] | None = None,
    connection: dict[str, Any] | None = None,
    shutdown: dict[str, Any] | None = None,
    **vm: Any,
) -> dict[str, Any]:
    """A lab as ARM returns it: every governed leaf as a lab creator might leave it (loose), unless given."""
    windows = os_type == "Windows"
    body: dict[str, Any] = {
        "id": lab_id(name, rg),
        "name": name,
        "type": "Microsoft.LabServices/Lab",
        "location": "westeurope",
        "tags": dict(tags or {}),
        "systemData": {
            "createdBy": "teacher@contoso.edu",
            "createdByType": "User",
            "lastModifiedBy": "teacher@contoso.edu",
            "lastModifiedByType": "User",
            "lastModifiedAt": "2025-06-01T09:12:28Z",
        },
        "properties": {
            "provisioningState": state,
            "connectionProfile": connection
            if connection is not None
            else {
                "webSshAccess": "None",
                "webRdpAccess": "Public",
                "clientSshAccess": "Public",
                "clientRdpAccess": "Public",
            },
            "autoShutdownProfile": shutdown
            if shutdown is not None
            else {
                "shutdownOnDisconnect": "Disabled",
                "shutdownWhenNotConnected": "Enabled",
                "shutdownOnIdle": "None",
                "disconnectDelay": "PT2H",
                "noConnectDelay": "01:00",
            },
            "securityProfile": {"registrationCode": "c0dE", "openAccess": "Disabled"},
            "virtualMachineProfile": {
                "createOption": "TemplateVM",
                "imageReference": {
                    "offer": "WindowsServer" if windows else "0001-com-ubuntu-server-jammy",
                    "publisher": "MicrosoftWindowsServer" if windows else "Canonical",
                    "sku": "2019-Datacenter" if windows else "22_04-lts",
                    "version": "latest",
                },
                "osType": os_type,
                "sku": {"name": "Classic_Fsv2_2_4GB_128_S_SSD", "capacity": 20},
                "additionalCapabilities": {"installGpuDrivers": "Disabled"},
                "usageQuota": "PT40H",
                "useSharedPassword": "Disabled",
                "adminUser": {"username": "labadmin"},
                **vm,
            },
            "title": f"Lab {name}",
            "description": "a course lab",
            "state": "Published",
        },
    }
    if plan_id is not None:
        body["properties"]["labPlanId"] = plan_id
    return body


def compliant_lab(name: str = "lab-ok", **kw: Any) -> dict[str, Any]:
    kw.setdefault(
        "connection",
        {
            "webSshAccess": "None",
            "webRdpAccess": "None",
            "clientSshAccess": "Private",
            "clientRdpAccess": "Public",
        },
    )
    kw.setdefault(
        "shutdown",
        {
            "shutdownOnDisconnect": "Enabled",
            "shutdownWhenNotConnected": "Enabled",
            "shutdownOnIdle": "UserAbsence",
            "disconnectDelay": "PT5M",
            "noConnectDelay": "PT10M",
            "idleDelay": "PT10M",
        },
    )
    return lab_body(name, **kw)


def clone(body: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(body)
