"""The benchmark estate: lab plans spread evenly over subscriptions, a fixed fraction drifted.

Compliant plans sit inside the bundled ``policy.yaml`` (some stricter than it). Drifted plans break
exactly one governed field each, rotating over every field the policy can tighten, so the drift is
spread "across the governed fields". Delays are ISO-8601 (``PT15M``): the SDK's typed models, which
the naive loop uses, raise DeserializationError on the ``00:05`` form the official examples show.
Everything is deterministic, so every run (and the naive loop) starts from the same drift.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

LOCATION = "westus"
RESOURCE_GROUPS_PER_SUBSCRIPTION = 5

# Inside policy.yaml's bounds (webSsh/webRdp None, clientSsh <= Private, shutdown flags on,
# idle >= LowUsage, delays <= PT15M / PT30M / PT30M). Two variants so not every plan is identical.
COMPLIANT_CONNECTION = (
    {"webSshAccess": "None", "webRdpAccess": "None", "clientSshAccess": "Private", "clientRdpAccess": "Public"},
    {"webSshAccess": "None", "webRdpAccess": "None", "clientSshAccess": "None", "clientRdpAccess": "Private"},
)
COMPLIANT_SHUTDOWN = (
    {
        "shutdownOnDisconnect": "Enabled",
        "shutdownWhenNotConnected": "Enabled",
        "shutdownOnIdle": "LowUsage",
        "disconnectDelay": "PT15M",
        "noConnectDelay": "PT30M",
        "idleDelay": "PT30M",
    },
    {
        "shutdownOnDisconnect": "Enabled",
        "shutdownWhenNotConnected": "Enabled",
        "shutdownOnIdle": "UserAbsence",
        "disconnectDelay": "PT5M",
        "noConnectDelay": "PT15M",
        "idleDelay": "PT10M",
    },
)

# One way to break each governed field (clientRdpAccess may be Public under policy.yaml: it cannot drift).
DRIFTS: tuple[tuple[str, str, str], ...] = (
    ("defaultConnectionProfile", "webSshAccess", "Public"),
    ("defaultConnectionProfile", "webRdpAccess", "Private"),
    ("defaultConnectionProfile", "clientSshAccess", "Public"),
    ("defaultAutoShutdownProfile", "shutdownOnDisconnect", "Disabled"),
    ("defaultAutoShutdownProfile", "shutdownWhenNotConnected", "Disabled"),
    ("defaultAutoShutdownProfile", "shutdownOnIdle", "None"),
    ("defaultAutoShutdownProfile", "disconnectDelay", "PT1H"),
    ("defaultAutoShutdownProfile", "noConnectDelay", "PT2H"),
    ("defaultAutoShutdownProfile", "idleDelay", "PT1H30M"),
)

# What the naive loop writes to every plan: the policy's bounds as values.
BASELINE_CONNECTION = {
    "webSshAccess": "None",
    "webRdpAccess": "None",
    "clientSshAccess": "Private",
    "clientRdpAccess": "Public",
}
BASELINE_SHUTDOWN = {
    "shutdownOnDisconnect": "Enabled",
    "shutdownWhenNotConnected": "Enabled",
    "shutdownOnIdle": "LowUsage",
    "disconnectDelay": "PT15M",
    "noConnectDelay": "PT30M",
    "idleDelay": "PT30M",
}


def subscription_id(index: int) -> str:
    return f"{index + 1:08x}-bbbb-4000-8000-{index + 1:012x}"


# Labs (issue 16): inside the same bounds, one OS each way so the reachability guard (client RDP on Windows,
# client SSH on Linux) stays satisfied by every fix. The idle-mode drift is left out for labs: its fix
# (LowUsage) needs an image that supports it, which labguard reports instead of patching on Linux.
LAB_CONNECTION = {
    "Windows": {"webSshAccess": "None", "webRdpAccess": "None", "clientSshAccess": "None", "clientRdpAccess": "Public"},
    "Linux": {"webSshAccess": "None", "webRdpAccess": "None", "clientSshAccess": "Private", "clientRdpAccess": "None"},
}
LAB_DRIFTS: tuple[tuple[str, str, str], ...] = (
    ("connectionProfile", "webSshAccess", "Public"),
    ("connectionProfile", "webRdpAccess", "Private"),
    ("autoShutdownProfile", "shutdownOnDisconnect", "Disabled"),
    ("autoShutdownProfile", "shutdownWhenNotConnected", "Disabled"),
    ("autoShutdownProfile", "disconnectDelay", "PT1H"),
    ("autoShutdownProfile", "noConnectDelay", "PT2H"),
    ("autoShutdownProfile", "idleDelay", "PT1H30M"),
)


@dataclass(frozen=True)
class Estate:
    plans: int
    subscriptions: int
    drift: float
    labs_per_plan: int = 0

    @property
    def subscription_ids(self) -> list[str]:
        return [subscription_id(i) for i in range(self.subscriptions)]

    @property
    def drifted(self) -> int:
        return sum(1 for i in range(self.plans) if _is_drifted(i, self.drift))

    @property
    def labs(self) -> int:
        return self.plans * self.labs_per_plan

    @property
    def drifted_labs(self) -> int:
        return sum(1 for i in range(self.labs) if _is_drifted(i, self.drift))

    def describe(self) -> str:
        labs = f" + {self.labs:,} labs" if self.labs else ""
        return f"{self.plans:,} plans{labs} / {self.subscriptions} subscriptions / {self.drift:.0%} drifted"

    def lab_body(self, index: int) -> dict[str, Any]:
        """Lab ``index`` (``labs_per_plan`` per plan, in the plan's resource group, naming it as ``labPlanId``)."""
        plan = index // self.labs_per_plan
        plan_id = self.plan_id(plan)
        os_type = "Windows" if index % 2 == 0 else "Linux"
        connection = dict(LAB_CONNECTION[os_type])
        shutdown = dict(COMPLIANT_SHUTDOWN[1])  # UserAbsence: stricter than the policy's LowUsage
        if _is_drifted(index, self.drift):
            profile, key, value = LAB_DRIFTS[_drift_rank(index, self.drift) % len(LAB_DRIFTS)]
            (connection if profile == "connectionProfile" else shutdown)[key] = value
        windows = os_type == "Windows"
        return {
            "id": plan_id.split("/providers/")[0] + f"/providers/Microsoft.LabServices/labs/lab-{index:07d}",
            "location": LOCATION,
            "tags": {"course": f"course-{index % 11}"},
            "systemData": {"lastModifiedBy": "teacher@school.example", "lastModifiedByType": "User"},
            "properties": {
                "labPlanId": plan_id,
                "connectionProfile": connection,
                "autoShutdownProfile": shutdown,
                "securityProfile": {"openAccess": "Disabled"},
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
                    "usageQuota": "PT10H",
                    "useSharedPassword": "Disabled",
                    "adminUser": {"username": "labadmin"},
                },
            },
        }

    def plan_id(self, index: int) -> str:
        sub = subscription_id(index * self.subscriptions // self.plans)  # contiguous blocks per subscription
        rg = f"labs-{index % RESOURCE_GROUPS_PER_SUBSCRIPTION}"
        return f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.LabServices/labPlans/plan-{index:06d}"

    def body(self, index: int) -> dict[str, Any]:
        connection = dict(COMPLIANT_CONNECTION[index % 2])
        shutdown = dict(COMPLIANT_SHUTDOWN[(index // 2) % 2])
        if _is_drifted(index, self.drift):
            profile, key, value = DRIFTS[_drift_rank(index, self.drift) % len(DRIFTS)]
            (connection if profile == "defaultConnectionProfile" else shutdown)[key] = value
        return {
            "id": self.plan_id(index),
            "location": LOCATION,
            "tags": {"department": f"dept-{index % 7}"},
            "properties": {
                "defaultConnectionProfile": connection,
                "defaultAutoShutdownProfile": shutdown,
                "supportInfo": {"email": "labs-help@school.example", "instructions": "Ask the IT desk."},
            },
        }

    def state(self) -> dict[str, Any]:
        return {
            "labPlans": [self.body(i) for i in range(self.plans)],
            "labs": [self.lab_body(i) for i in range(self.labs)],
        }

    def drifted_ids(self) -> list[str]:
        return [self.plan_id(i) for i in range(self.plans) if _is_drifted(i, self.drift)]


def _is_drifted(index: int, fraction: float) -> bool:
    """Exactly floor(n * fraction) of the first n plans are drifted, evenly spaced."""
    return math.floor((index + 1) * fraction + 1e-9) > math.floor(index * fraction + 1e-9)


def _drift_rank(index: int, fraction: float) -> int:
    return math.floor(index * fraction + 1e-9)
