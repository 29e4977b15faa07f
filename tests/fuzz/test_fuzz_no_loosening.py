"""Fuzz (issue 13): the no-loosening property over the fuzzed ARM responses, not only over spec-shaped plans.

``test_fuzz`` checks that odd ARM bodies (missing or partial profiles, unknown enums of any JSON type, delays as
``1.00:00:00``, ``P1D``, ``00:05:00``, negative, huge, junk) never make labguard raise; ``tests/unit/
test_properties`` checks that a patch never loosens, over plans the generators there build. This joins the
two: for every fuzzed body labguard can map, the patch it would send leaves every governed leaf at least as
strict as what the service applies for the plan as read (absent leaves as the spec's defaults), whether the
service merges the PATCH's profiles or replaces them; a value labguard cannot judge is left exactly as it was.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hypothesis import given, reject
from hypothesis import strategies as st

from shared.core.drift import evaluate
from shared.core.plans import LabPlan
from shared.core.policy import Policy, parse_policy
from tests.fuzz.conftest import FUZZ, tried
from tests.fuzz.test_fuzz import DELAY_FORMS, PLAN, arm_bodies, delays, enums, optional_profile, policies, states

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))  # test_properties imports unit_support
from tests.unit.test_properties import APPLY, applied, not_looser
from tests.unit.test_properties import policies as generated_policies


# Plans labguard can map and would act on, with every governed leaf fuzzed (test_fuzz's values): most of these
# get a patch, so the property is tested where it matters, not only on bodies that are refused.
def mostly(*valid: str) -> st.SearchStrategy[Any]:
    """A value the spec allows three times in four, test_fuzz's odd enum values the rest."""
    return st.integers(0, 3).flatmap(lambda n: enums if n == 0 else st.sampled_from(valid))


channel = mostly("None", "Private", "Public")
flag = mostly("Enabled", "Disabled")
delay = st.integers(0, 2).flatmap(lambda n: delays if n == 0 else st.sampled_from(DELAY_FORMS))
actionable = st.fixed_dictionaries(
    {
        "id": st.just(PLAN),
        "properties": st.fixed_dictionaries(
            {"provisioningState": st.integers(0, 5).flatmap(lambda n: states if n == 0 else st.just("Succeeded"))},
            optional={
                "defaultConnectionProfile": st.one_of(
                    st.fixed_dictionaries(
                        dict.fromkeys(("webSshAccess", "clientRdpAccess"), channel),
                        optional=dict.fromkeys(("webRdpAccess", "clientSshAccess"), channel),
                    ),
                    optional_profile(dict.fromkeys(("webSshAccess", "clientRdpAccess"), enums)),
                ),
                "defaultAutoShutdownProfile": st.one_of(
                    st.fixed_dictionaries(
                        {"shutdownOnDisconnect": flag, "disconnectDelay": delay, "idleDelay": delay},
                        optional={
                            "shutdownWhenNotConnected": flag,
                            "shutdownOnIdle": mostly("None", "LowUsage", "UserAbsence"),
                            "noConnectDelay": delay,
                        },
                    ),
                    optional_profile({"shutdownOnIdle": enums, "idleDelay": delays}),
                ),
            },
        ),
    }
)


def holds_null_member(value: Any) -> bool:
    """An object with a null member somewhere inside: RFC 7386 cannot send it intact (null means delete)."""
    if isinstance(value, dict):
        return any(v is None or holds_null_member(v) for v in value.values())
    if isinstance(value, list):
        return any(holds_null_member(v) for v in value)
    return False


@FUZZ
@given(
    body=st.integers(0, 3).flatmap(lambda n: arm_bodies if n == 0 else actionable),
    policy=st.one_of(policies.map(lambda data: parse_policy(data, "policy.yaml")), generated_policies()),
)
def test_no_fuzzed_arm_body_gets_a_patch_that_loosens_it(body: dict[str, Any], policy: Policy) -> None:
    tried["arm.no-loosening"] += 1
    try:
        plan = LabPlan.from_arm(body)
    except ValueError:
        reject()
    if not isinstance(body.get("properties"), dict):
        body = {**body, "properties": {}}  # what labguard maps such a body to: no profiles at all
    evaluation = evaluate(plan, policy, datetime.now(UTC))
    if not evaluation.patch:
        return
    tried["arm.no-loosening (with a patch)"] += 1
    assert set(evaluation.patch) == {"properties"}
    before = applied(body)
    for mode, apply in APPLY.items():
        after = applied(apply(body, evaluation.patch))
        for key in before:
            if mode == "merge" and holds_null_member(before[key]):
                continue  # see holds_null_member: a merge service changes such a value whatever is sent
            assert not_looser(key, before[key], after[key]), (mode, key, before[key], after[key], evaluation.patch)
