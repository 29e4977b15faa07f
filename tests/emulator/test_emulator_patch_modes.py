"""The endpoint's PATCH modes (merge / replace) and its read mode that omits the delays of features that are off.

Real Lab Services may merge a PATCH's nested profile into the stored one or replace it; labguard must be safe
under both, so the endpoint offers both, in-process and as a process flag."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from azure.core.rest import HttpRequest

from emulator.testing import Emulator, start_emulator

ROOT = Path(__file__).resolve().parents[2]
SUB = "7d0c8a51-3b6e-4f0a-9a57-2c1f5e0d4b11"
PLAN_ID = f"/subscriptions/{SUB}/resourceGroups/rg-modes/providers/Microsoft.LabServices/labPlans/plan-modes"


def _plan() -> dict[str, Any]:
    return {
        "id": PLAN_ID,
        "location": "westeurope",
        "tags": {"owner": "physics"},
        "properties": {
            "defaultConnectionProfile": {
                "webSshAccess": "None",
                "webRdpAccess": "Private",
                "clientSshAccess": "Public",
                "clientRdpAccess": "Public",
            },
            "defaultAutoShutdownProfile": {
                "shutdownOnDisconnect": "Disabled",
                "disconnectDelay": "PT15M",
                "shutdownWhenNotConnected": "Enabled",
                "noConnectDelay": "PT30M",
                "shutdownOnIdle": "None",
                "idleDelay": "PT15M",
            },
            "supportInfo": {"email": "help@contoso.edu", "phone": "+1 555 0100"},
        },
    }


def _patch(emu: Emulator, body: dict[str, Any]) -> int:
    with emu.client(SUB) as client:
        resp = client._send_request(HttpRequest("PATCH", PLAN_ID, json=body, params={"api-version": "2023-06-07"}))
        return int(resp.status_code)


def _get(emu: Emulator) -> dict[str, Any]:
    with emu.client(SUB) as client:
        resp = client._send_request(HttpRequest("GET", PLAN_ID, params={"api-version": "2023-06-07"}))
        assert resp.status_code == 200
        body: dict[str, Any] = resp.json()
        return body


LEAF_ONLY = {"properties": {"defaultConnectionProfile": {"clientSshAccess": "Private"}}}


def test_merge_mode_keeps_the_profiles_other_leaves() -> None:
    with start_emulator(seed={"labPlans": [_plan()]}) as emu:
        assert emu.configure()["patch_mode"] == "merge"
        assert _patch(emu, LEAF_ONLY) in (200, 202)
        props = emu.get_plan(PLAN_ID)["properties"]  # type: ignore[index]
        assert props["defaultConnectionProfile"] == {
            **_plan()["properties"]["defaultConnectionProfile"],
            **LEAF_ONLY["properties"]["defaultConnectionProfile"],
        }


def test_replace_mode_resets_omitted_leaves_of_the_named_profile_only() -> None:
    with start_emulator(seed={"labPlans": [_plan()]}, patch_mode="replace") as emu:
        assert _patch(emu, LEAF_ONLY) in (200, 202)
        props = emu.get_plan(PLAN_ID)["properties"]  # type: ignore[index]
        assert props["defaultConnectionProfile"] == {
            "webSshAccess": "None",
            "webRdpAccess": "None",
            "clientSshAccess": "Private",
            "clientRdpAccess": "None",
        }
        # profiles the PATCH did not name, and other properties, are as they were
        assert props["defaultAutoShutdownProfile"] == _plan()["properties"]["defaultAutoShutdownProfile"]
        assert props["supportInfo"] == _plan()["properties"]["supportInfo"]
        assert emu.get_plan(PLAN_ID)["tags"] == {"owner": "physics"}  # type: ignore[index]

        assert _patch(emu, {"properties": {"defaultAutoShutdownProfile": {"shutdownOnIdle": "LowUsage"}}}) in (200, 202)
        shutdown = emu.get_plan(PLAN_ID)["properties"]["defaultAutoShutdownProfile"]  # type: ignore[index]
        # flags take their defaults, delays (no default) are gone
        assert shutdown == {
            "shutdownOnDisconnect": "Disabled",
            "shutdownWhenNotConnected": "Disabled",
            "shutdownOnIdle": "LowUsage",
        }


def test_whole_profile_patch_is_the_same_under_both_modes() -> None:
    whole = {
        "properties": {
            "defaultConnectionProfile": {
                **_plan()["properties"]["defaultConnectionProfile"],
                "clientSshAccess": "Private",
            }
        }
    }
    stored = []
    for mode in ("merge", "replace"):
        with start_emulator(seed={"labPlans": [_plan()]}) as emu:
            emu.configure(patch_mode=mode)
            _patch(emu, whole)
            stored.append(emu.get_plan(PLAN_ID)["properties"])  # type: ignore[index]
    assert stored[0] == stored[1]
    assert stored[0]["defaultConnectionProfile"]["clientRdpAccess"] == "Public"


def test_unknown_patch_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="patch_mode"), start_emulator(patch_mode="overwrite"):
        pass


def test_omit_off_delays_leaves_out_delays_of_features_that_are_off_on_reads_only() -> None:
    with start_emulator(seed={"labPlans": [_plan()]}, omit_off_delays=True) as emu:
        shutdown = _get(emu)["properties"]["defaultAutoShutdownProfile"]
        assert shutdown == {
            "shutdownOnDisconnect": "Disabled",
            "shutdownWhenNotConnected": "Enabled",
            "noConnectDelay": "PT30M",
            "shutdownOnIdle": "None",
        }
        # the stored plan keeps them; only reads leave them out
        assert emu.get_plan(PLAN_ID)["properties"]["defaultAutoShutdownProfile"]["idleDelay"] == "PT15M"  # type: ignore[index]
        emu.configure(omit_off_delays=False)
        assert _get(emu)["properties"]["defaultAutoShutdownProfile"]["disconnectDelay"] == "PT15M"


def test_process_flags_patch_mode_replace_and_omit_off_delays(tmp_path: Path) -> None:
    seed = tmp_path / "seed.json"
    seed.write_text(json.dumps({"labPlans": [_plan()]}))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "emulator",
            "--port",
            "0",
            "--state",
            str(seed),
            "--patch-mode",
            "replace",
            "--omit-off-delays",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert proc.stdout is not None
        ready = json.loads(proc.stdout.readline())
        script = (
            "import json,ssl,sys,urllib.request;"
            "ctx=ssl.create_default_context(cafile=sys.argv[2]);"
            "print(urllib.request.urlopen(sys.argv[1]+'/_emulator/config',context=ctx).read().decode())"
        )
        config = json.loads(
            subprocess.check_output([sys.executable, "-c", script, ready["endpoint"], ready["ca_file"]])
        )
        assert config["patch_mode"] == "replace"
        assert config["omit_off_delays"] is True
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_process_refuses_an_unknown_patch_mode() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "emulator", "--patch-mode", "overwrite"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=30,
    )
    assert result.returncode == 2
    assert "--patch-mode" in result.stderr
