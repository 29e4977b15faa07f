"""Evaluations as data: one plan's verdict as plain JSON, and lab plan bodies read from a saved JSON file.

``labguard audit --from-file plans.json`` evaluates saved lab plan bodies (ARM JSON: a list, a list response
``{"value": [...]}``, or one body) against the policy with no Azure call; the command renders them like any
other audit. Pure: nothing here talks to Azure or prints.
"""

from __future__ import annotations

import json
from typing import Any

from shared.core.drift import Evaluation
from shared.core.plans import LabPlan

__all__ = ["evaluation_to_dict", "read_plans"]


def evaluation_to_dict(ev: Evaluation) -> dict[str, Any]:
    """One evaluation as plain JSON data (``--format json``)."""
    return {
        "id": ev.plan.id.path,
        "status": ev.status,
        "reason": ev.reason,
        "findings": [
            {
                "rule": f.rule,
                "field": f.path,
                "observed": f.observed,
                "allowed": f.allowed,
                "severity": f.severity,
                "message": f.message,
                "patchValue": f.patch_value,
            }
            for f in ev.findings
        ],
        "patch": ev.patch,
    }


def read_plans(path: str) -> tuple[list[LabPlan], list[tuple[str, str]]]:
    """Plans from a JSON file, plus (where, why) for each entry that is not a lab plan. Raises OSError or
    ValueError when the file cannot be read as JSON of lab plans at all."""
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    if isinstance(data, dict):
        data = data["value"] if isinstance(data.get("value"), list) else [data]
    if not isinstance(data, list):
        raise ValueError("expected a JSON list of lab plan bodies")
    plans: list[LabPlan] = []
    problems: list[tuple[str, str]] = []
    for index, body in enumerate(data):
        try:
            if not isinstance(body, dict):
                raise ValueError(f"expected a JSON object, got {type(body).__name__}")
            plans.append(LabPlan.from_arm(body))
        except ValueError as exc:
            problems.append((f"{path} entry {index}", f"not evaluated: {exc}"))
    return plans, problems
