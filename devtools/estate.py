"""The lab estate ``make demo`` (and the CLI tests) seed into the local Lab Services endpoint.

Three subscriptions of a school (teaching, research, continuing education), seven resource groups
and 36 lab plans, as ARM returns them (api-version 2023-06-07): compliant plans in both delay
notations (``PT15M`` and ``00:15``); one plan drifted in each governed field; plans stricter than
the baseline (left alone); an exempt plan and one whose exemption has expired; one Failed plan with
a ``resourceOperationError``; one Locked plan. Exemption dates are relative to ``today`` so the
story is the same on any day.

:data:`DEMO_POLICY` is the bundled ``policy.yaml`` baseline plus two overrides (longer idle delays
for research, public SSH but private RDP for the Linux course).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

TEACHING = "5b1d7d3e-2f4a-4c1e-9a55-3c7e1b2d4f60"
RESEARCH = "9e3c0a71-6b8d-4f2a-8c14-7d5e2a9b1c03"
EXTENSION = "c4f2e8a9-1d3b-4e6f-a7c8-0b9d2e4f6a15"
SUBSCRIPTIONS = (TEACHING, RESEARCH, EXTENSION)
SUBSCRIPTION_NAMES = {TEACHING: "teaching", RESEARCH: "research", EXTENSION: "continuing education"}

#: The plan a lab owner loosens in the demo (the Event Grid step).
OWNER_PLAN = "cs240-databases"
#: What the owner's PATCH writes: both outside the policy's bounds.
OWNER_PATCH: dict[str, Any] = {
    "properties": {
        "defaultConnectionProfile": {"clientSshAccess": "Public"},
        "defaultAutoShutdownProfile": {"idleDelay": "PT2H"},
    }
}
FAILED_PLAN = "eng400-fpga"
LOCKED_PLAN = "linux-bootcamp"
EXEMPT_PLAN = "gpu-deep-learning"
EXPIRED_EXEMPT_PLAN = "gpu-render-farm"
SUPPORT_EMAIL = "eng-labs@school.example"
FAILURE = {
    "action": "Update",
    "code": "InvalidSubnetDelegation",
    "message": (
        "Subnet 'labs' of virtual network 'vnet-engineering' must be delegated to "
        "Microsoft.LabServices/labplans before a lab plan can use it."
    ),
}

DEMO_POLICY = f"""\
# labguard demo policy: the bundled policy.yaml baseline, plus two overrides.
mode: audit
exemptionTag: labguard:exempt
connection:
  webSshAccess: None
  webRdpAccess: None
  clientSshAccess: Private
  clientRdpAccess: Public
autoShutdown:
  shutdownOnDisconnect: Enabled
  shutdownWhenNotConnected: Enabled
  minShutdownOnIdle: LowUsage
  maxDisconnectDelay: PT15M
  maxNoConnectDelay: PT30M
  maxIdleDelay: PT30M
labs:                      # rules for labs only (Azure Policy's lab built-ins, plus a quota cap)
  templateVm: Forbidden
  maxUsageQuota: PT20H
overrides:
  subscriptions:
    "{RESEARCH}":          # research: long-running notebooks may idle up to 2 hours
      autoShutdown:
        maxIdleDelay: PT2H
  resourceGroups:
    "{TEACHING}/rg-linux-course":   # the Linux course needs public SSH; RDP stays private
      connection:
        clientSshAccess: Public
        clientRdpAccess: Private
"""

_COMPLIANT_CONNECTION = {
    "webSshAccess": "None",
    "webRdpAccess": "None",
    "clientSshAccess": "Private",
    "clientRdpAccess": "Public",
}
_COMPLIANT_SHUTDOWN = {
    "shutdownOnDisconnect": "Enabled",
    "shutdownWhenNotConnected": "Enabled",
    "shutdownOnIdle": "LowUsage",
    "disconnectDelay": "PT15M",
    "noConnectDelay": "PT30M",
    "idleDelay": "PT30M",
}
_STRICT_CONNECTION = {
    "webSshAccess": "None",
    "webRdpAccess": "None",
    "clientSshAccess": "None",
    "clientRdpAccess": "Private",
}
_STRICT_SHUTDOWN = {
    "shutdownOnDisconnect": "Enabled",
    "shutdownWhenNotConnected": "Enabled",
    "shutdownOnIdle": "UserAbsence",
    "disconnectDelay": "PT5M",
    "noConnectDelay": "PT10M",
    "idleDelay": "PT10M",
}


@dataclass(frozen=True)
class Spec:
    """One plan of the estate: where it lives, what differs from a compliant plan, and why."""

    name: str
    sub: str
    rg: str
    kind: str  # compliant | drifted | stricter | exempt | expired-exempt | failed | locked | owner
    connection: dict[str, Any] | None = None
    shutdown: dict[str, Any] | None = None
    note: str = ""


SPECS: tuple[Spec, ...] = (
    # teaching / rg-computer-science
    Spec("cs101-intro-programming", TEACHING, "rg-computer-science", "compliant"),
    Spec("cs105-python-for-all", TEACHING, "rg-computer-science", "compliant"),
    Spec(
        "cs201-data-structures",
        TEACHING,
        "rg-computer-science",
        "compliant",
        shutdown={"disconnectDelay": "00:15", "noConnectDelay": "00:30", "idleDelay": "00:30"},
        note="delays in the hh:mm form the portal shows",
    ),
    Spec(OWNER_PLAN, TEACHING, "rg-computer-science", "owner", note="a lab owner loosens it during the demo"),
    Spec("cs310-web-development", TEACHING, "rg-computer-science", "drifted", connection={"webSshAccess": "Public"}),
    Spec("cs320-networks", TEACHING, "rg-computer-science", "drifted", connection={"webRdpAccess": "Private"}),
    Spec("cs330-security", TEACHING, "rg-computer-science", "drifted", connection={"clientSshAccess": "Public"}),
    Spec(
        "cs410-capstone",
        TEACHING,
        "rg-computer-science",
        "stricter",
        connection=_STRICT_CONNECTION,
        shutdown=_STRICT_SHUTDOWN,
    ),
    # teaching / rg-engineering
    Spec("eng110-electronics", TEACHING, "rg-engineering", "compliant"),
    Spec("eng150-cad", TEACHING, "rg-engineering", "drifted", shutdown={"shutdownOnDisconnect": "Disabled"}),
    Spec("eng220-matlab", TEACHING, "rg-engineering", "drifted", shutdown={"shutdownWhenNotConnected": "Disabled"}),
    Spec("eng300-simulation", TEACHING, "rg-engineering", "drifted", shutdown={"shutdownOnIdle": "None"}),
    Spec("eng310-robotics", TEACHING, "rg-engineering", "compliant"),
    Spec(FAILED_PLAN, TEACHING, "rg-engineering", "failed", connection={"webRdpAccess": "Public"}),
    # teaching / rg-linux-course (override: clientSshAccess Public, clientRdpAccess Private)
    Spec(
        "linux101-shell",
        TEACHING,
        "rg-linux-course",
        "compliant",
        connection={"clientSshAccess": "Public", "clientRdpAccess": "Private"},
    ),
    Spec(
        "linux201-sysadmin",
        TEACHING,
        "rg-linux-course",
        "drifted",
        connection={"clientSshAccess": "Public", "clientRdpAccess": "Public"},
    ),
    Spec(
        "linux-containers",
        TEACHING,
        "rg-linux-course",
        "stricter",
        connection={"clientSshAccess": "Private", "clientRdpAccess": "None"},
    ),
    Spec(LOCKED_PLAN, TEACHING, "rg-linux-course", "locked", connection={"webSshAccess": "Public"}),
    # research / rg-data-science (subscription override: idle delays up to PT2H)
    Spec("ds-python-notebooks", RESEARCH, "rg-data-science", "compliant", shutdown={"idleDelay": "PT1H"}),
    Spec("ds-r-programming", RESEARCH, "rg-data-science", "compliant", shutdown={"idleDelay": "01:30"}),
    Spec("ds-spark-cluster", RESEARCH, "rg-data-science", "drifted", shutdown={"disconnectDelay": "PT1H"}),
    Spec("ds-ml-workshop", RESEARCH, "rg-data-science", "drifted", shutdown={"noConnectDelay": "PT2H"}),
    Spec("ds-statistics", RESEARCH, "rg-data-science", "compliant"),
    # research / rg-gpu-lab
    Spec(
        EXEMPT_PLAN,
        RESEARCH,
        "rg-gpu-lab",
        "exempt",
        shutdown={"shutdownOnIdle": "None", "idleDelay": "PT8H"},
        note="exempt until a date 90 days ahead",
    ),
    Spec(
        EXPIRED_EXEMPT_PLAN,
        RESEARCH,
        "rg-gpu-lab",
        "expired-exempt",
        shutdown={"idleDelay": "PT4H"},
        note="its exemption ended 10 days ago",
    ),
    Spec("gpu-inference", RESEARCH, "rg-gpu-lab", "stricter", connection=_STRICT_CONNECTION, shutdown=_STRICT_SHUTDOWN),
    Spec("gpu-visualisation", RESEARCH, "rg-gpu-lab", "compliant", shutdown={"shutdownOnIdle": "UserAbsence"}),
    # continuing education / rg-languages
    Spec("lang-spanish-a1", EXTENSION, "rg-languages", "compliant"),
    Spec("lang-german-a2", EXTENSION, "rg-languages", "compliant"),
    Spec("lang-italian-b1", EXTENSION, "rg-languages", "compliant"),
    Spec("lang-french-b2", EXTENSION, "rg-languages", "drifted", shutdown={"idleDelay": "PT1H"}),
    Spec(
        "lang-japanese-n4",
        EXTENSION,
        "rg-languages",
        "drifted",
        connection={"webRdpAccess": "Public"},
        shutdown={"shutdownOnIdle": "None", "idleDelay": "PT1H30M"},
        note="several fields at once",
    ),
    # continuing education / rg-business
    Spec("bus-accounting", EXTENSION, "rg-business", "compliant"),
    Spec("bus-project-management", EXTENSION, "rg-business", "compliant"),
    Spec("bus-marketing", EXTENSION, "rg-business", "stricter", shutdown={"idleDelay": "PT15M"}),
    Spec(
        "bus-excel-analytics",
        EXTENSION,
        "rg-business",
        "drifted",
        shutdown={},
        note="no auto-shutdown profile at all: the whole governed part is written",
    ),
)


def plan_id(spec: Spec) -> str:
    return f"/subscriptions/{spec.sub}/resourceGroups/{spec.rg}/providers/Microsoft.LabServices/labPlans/{spec.name}"


def spec_named(name: str) -> Spec:
    return next(spec for spec in SPECS if spec.name == name)


def plan_body(spec: Spec, today: date) -> dict[str, Any]:
    """One lab plan as ARM returns it (GET, api-version 2023-06-07)."""
    connection = {**_COMPLIANT_CONNECTION, **(spec.connection or {})}
    properties: dict[str, Any] = {
        "provisioningState": "Succeeded",
        "defaultConnectionProfile": connection,
        "defaultNetworkProfile": {},
        "allowedRegions": ["westeurope", "northeurope"],
        "sharedGalleryId": f"/subscriptions/{spec.sub}/resourceGroups/{spec.rg}"
        "/providers/Microsoft.Compute/galleries/labimages",
        "supportInfo": {
            "url": "https://it.school.example/labs",
            "email": "lab-support@school.example",
            "phone": "+44 20 7946 0000",
            "instructions": "Teaching staff: raise a ticket with IT, queue 'Lab Services'.",
        },
    }
    if spec.shutdown != {}:
        properties["defaultAutoShutdownProfile"] = {**_COMPLIANT_SHUTDOWN, **(spec.shutdown or {})}
    tags = {"department": spec.rg.removeprefix("rg-"), "costCenter": f"CC-{1000 + sum(map(ord, spec.rg)) % 9000}"}
    if spec.kind == "exempt":
        tags["labguard:exempt"] = "GPU training jobs run overnight (ticket RES-4711)"
        tags["labguard:exempt-until"] = (today + timedelta(days=90)).isoformat()
    if spec.kind == "expired-exempt":
        tags["labguard:exempt"] = "render deadline for the degree show (ticket RES-4690)"
        tags["labguard:exempt-until"] = (today - timedelta(days=10)).isoformat()
    if spec.kind == "failed":
        properties["provisioningState"] = "Failed"
        failed_at = datetime.combine(today, datetime.min.time(), UTC) + timedelta(hours=7, minutes=42)
        properties["resourceOperationError"] = {**FAILURE, "timestamp": failed_at.isoformat().replace("+00:00", "Z")}
        properties["supportInfo"] = {
            "url": "https://it.school.example/labs/engineering",
            "email": SUPPORT_EMAIL,
            "phone": "+44 20 7946 0123",
            "instructions": "Engineering lab team, room E2.14; out of hours call the IT service desk.",
        }
        properties["defaultNetworkProfile"] = {
            "subnetId": f"/subscriptions/{spec.sub}/resourceGroups/{spec.rg}/providers/Microsoft.Network/"
            "virtualNetworks/vnet-engineering/subnets/labs"
        }
    if spec.kind == "locked":
        properties["provisioningState"] = "Locked"
    return {
        "id": plan_id(spec),
        "name": spec.name,
        "type": "Microsoft.LabServices/LabPlan",
        "location": "westeurope",
        "tags": tags,
        "properties": properties,
    }


#: Labs of the demo, all under the plan OWNER_PLAN (name, OS, what is special about it).
LAB_PLAN = OWNER_PLAN
LAB_SPECS: tuple[tuple[str, str, str], ...] = (
    ("db-lab-drifted", "Windows", "drifted"),  # RDP and web RDP public, shutdown off, long delays
    ("db-lab-stricter", "Windows", "stricter"),  # tighter than the policy: left alone
    ("db-lab-exempt", "Linux", "exempt"),  # drifted but exempt by tag
    ("db-lab-template", "Windows", "template"),  # uses a template VM: reported, never patched
    ("db-lab-over-quota", "Linux", "over-quota"),  # 40 hours per student: lowered to the bound
)


def lab_body(name: str, os_type: str, kind: str) -> dict[str, Any]:
    """One demo lab as ARM returns it (api-version 2023-06-07), under LAB_PLAN."""
    spec = spec_named(LAB_PLAN)
    windows = os_type == "Windows"
    tight = kind in ("stricter", "template", "over-quota")
    return {
        "id": f"/subscriptions/{spec.sub}/resourceGroups/{spec.rg}/providers/Microsoft.LabServices/labs/{name}",
        "name": name,
        "type": "Microsoft.LabServices/Lab",
        "location": "westeurope",
        "tags": {"labguard:exempt": "thesis defence week (ticket LAB-77)"} if kind == "exempt" else {},
        "systemData": {
            "lastModifiedBy": "teacher@school.example",
            "lastModifiedByType": "User",
            "lastModifiedAt": datetime.now(UTC).isoformat().replace("+00:00", "Z"),  # the teacher's change: today
        },
        "properties": {
            "provisioningState": "Succeeded",
            "labPlanId": plan_id(spec),
            "connectionProfile": {
                "webSshAccess": "None",
                "webRdpAccess": "None" if tight else "Public",
                "clientSshAccess": "None" if windows else "Private",
                "clientRdpAccess": "Public" if windows else "None",
            },
            "autoShutdownProfile": {
                "shutdownOnDisconnect": "Enabled" if tight else "Disabled",
                "shutdownWhenNotConnected": "Enabled",
                "shutdownOnIdle": "UserAbsence" if tight else "None",
                "disconnectDelay": "PT10M" if tight else "PT2H",
                "noConnectDelay": "PT15M",
                "idleDelay": "PT15M",
            },
            "securityProfile": {"openAccess": "Disabled"},
            "virtualMachineProfile": {
                "createOption": "TemplateVM" if kind == "template" else "Image",
                "imageReference": {
                    "offer": "WindowsServer" if windows else "0001-com-ubuntu-server-jammy",
                    "publisher": "MicrosoftWindowsServer" if windows else "Canonical",
                    "sku": "2019-Datacenter" if windows else "22_04-lts",
                    "version": "latest",
                },
                "osType": os_type,
                "sku": {"name": "Classic_Fsv2_2_4GB_128_S_SSD", "capacity": 20},
                "usageQuota": "PT40H" if kind == "over-quota" else "PT10H",
                "useSharedPassword": "Disabled",
                "adminUser": {"username": "labadmin"},
                "nonAdminUser": {"username": "student"},
            },
            "title": name,
        },
    }


def estate(today: date | None = None) -> dict[str, Any]:
    """Seed JSON for the local endpoint: ``{"labPlans": [...], "labs": [...]}``."""
    today = today or datetime.now(UTC).date()
    return {
        "labPlans": [copy.deepcopy(plan_body(spec, today)) for spec in SPECS],
        "labs": [lab_body(*spec) for spec in LAB_SPECS],
    }
