"""The table of governed settings drives the policy file, evaluation, the patch and check-policy: a new row
is a new setting everywhere, and nothing else needs to spell it."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from datetime import timedelta

from unit_support import NOW, REPO, body

from shared.core.drift import evaluate
from shared.core.governed import GOVERNED, PROFILES
from shared.core.plans import LabPlan
from shared.core.policy import Rules, parse_policy, policy_json_schema


def test_the_policy_file_has_one_key_per_row_in_table_order() -> None:
    defs = policy_json_schema()["$defs"]
    for profile in PROFILES:
        keys = [s.policy_key for s in GOVERNED if s.profile == profile]
        assert list(defs[profile.model]["properties"]) == keys


def test_every_row_is_checked_in_table_order() -> None:
    """A plan outside every bound: one drift finding per row, named and placed by the row."""
    pol = parse_policy(
        {
            "connection": dict.fromkeys(("webSshAccess", "webRdpAccess", "clientSshAccess"), "None"),
            "autoShutdown": {
                "shutdownOnDisconnect": "Enabled",
                "shutdownWhenNotConnected": "Enabled",
                "minShutdownOnIdle": "UserAbsence",
                "maxDisconnectDelay": "PT5M",
                "maxNoConnectDelay": "PT5M",
                "maxIdleDelay": "PT5M",
            },
        },
        "p",
    )
    # clientRdpAccess too (a policy file may not forbid Public on both client channels; rules can)
    pol = dataclasses.replace(pol, baseline=Rules.of(**dict(pol.baseline.bounds), clientRdpAccess="None"))
    plan = body(
        connection=dict.fromkeys(("webSshAccess", "webRdpAccess", "clientSshAccess", "clientRdpAccess"), "Public"),
        shutdown={
            "shutdownOnDisconnect": "Disabled",
            "shutdownWhenNotConnected": "Disabled",
            "shutdownOnIdle": "LowUsage",
            "disconnectDelay": "PT1H",
            "noConnectDelay": "01:00",
            "idleDelay": "PT1H",
        },
    )
    ev = evaluate(LabPlan.from_arm(plan), pol, NOW)
    assert [(f.rule, f.field) for f in ev.findings] == [(s.rule, s.path) for s in GOVERNED]
    assert all(f.message.startswith(s.label) for f, s in zip(ev.findings, GOVERNED, strict=True))
    assert [f.leaf for f in ev.findings] == [s.arm_key for s in GOVERNED]


def test_rules_keep_table_order_and_refuse_keys_not_in_the_table() -> None:
    rules = Rules.of(maxIdleDelay=timedelta(minutes=5), webSshAccess="None", clientRdpAccess=None)
    assert rules.bounds == (("webSshAccess", "None"), ("maxIdleDelay", timedelta(minutes=5)))
    try:
        Rules.of(webVncAccess="None")
    except TypeError as exc:
        assert "webVncAccess" in str(exc)
    else:
        raise AssertionError("a key not in the table was accepted")


ADD_A_ROW = """
import dataclasses, json
from datetime import datetime
import shared.core.governed as governed
row = dataclasses.replace(governed.GOVERNED[0], arm_key="webVncAccess", policy_key="webVncAccess",
                          label="Web VNC access", description="Most exposure allowed for web access over VNC")
governed.GOVERNED = (*governed.GOVERNED, row)  # the one change: a row

from labguard.render import _rule_rows
from shared.core.drift import evaluate
from shared.core.plans import LabPlan
from shared.core.policy import parse_policy, policy_json_schema
from shared.core.report import evaluation_to_dict

policy = parse_policy({"connection": {"webVncAccess": "Private"}}, "p")
plan = LabPlan.from_arm({
    "id": "/subscriptions/34adfa4f-cedf-4dc0-ba29-b6d1a69ab345/resourceGroups/rg/providers/"
          "Microsoft.LabServices/labPlans/p",
    "properties": {"provisioningState": "Succeeded",
                   "defaultConnectionProfile": {"clientRdpAccess": "Public", "webVncAccess": "Public"}},
})
print(json.dumps({
    "schema": policy_json_schema()["$defs"]["ConnectionBounds"]["properties"]["webVncAccess"],
    "evaluation": evaluation_to_dict(evaluate(plan, policy, datetime(2025, 1, 1))),
    "rows": _rule_rows(policy.baseline),
}))
"""


def test_adding_a_setting_is_one_row() -> None:
    """A new row (web VNC access, say) is in the policy file and schema, judged, patched and shown."""
    run = subprocess.run(
        [sys.executable, "-c", ADD_A_ROW], capture_output=True, text=True, cwd=REPO, timeout=60, check=False
    )
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["schema"]["description"] == "Most exposure allowed for web access over VNC"
    assert out["schema"]["anyOf"][0]["enum"] == ["None", "Private", "Public"]
    (finding,) = out["evaluation"]["findings"]
    assert finding["rule"] == "connection.webVncAccess"
    assert finding["field"] == "properties.defaultConnectionProfile.webVncAccess"
    assert finding["severity"] == "high"
    assert finding["message"].startswith("Web VNC access is Public but the policy allows at most Private")
    assert out["evaluation"]["patch"] == {
        "properties": {"defaultConnectionProfile": {"clientRdpAccess": "Public", "webVncAccess": "Private"}}
    }
    assert out["rows"][-1] == ["webVncAccess", "at most Private"]
