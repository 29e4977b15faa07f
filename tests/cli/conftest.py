"""Fixtures for the ``labguard`` command: the installed console script, run as a subprocess, against the
local Lab Services endpoint seeded with the demo estate (:mod:`devtools.estate`).

The endpoint runs in this test process (a background thread); the command is a separate process that
reaches it over HTTPS with DefaultAzureCredential's environment credential, as an admin's laptop would.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools import estate
from emulator.testing import start_emulator

ROOT = Path(__file__).resolve().parents[2]
LABGUARD = Path(sys.executable).parent / "labguard"
ADMIN_CLIENT = "school-it-admin"


def clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without any labguard / Azure setting, plus ``extra``."""
    prefixes = ("LABGUARD_", "AZURE_", "AzureWebJobs", "IDENTITY_", "MSI_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def labguard_command() -> Path:
    if not LABGUARD.exists():
        pytest.fail(f"{LABGUARD} is missing: run `make test` (it installs the labguard command)", pytrace=False)
    return LABGUARD


@pytest.fixture(scope="module")
def emu_server() -> Iterator[Any]:
    with start_emulator(seed=estate.estate()) as emulator:
        yield emulator


@pytest.fixture
def emu(emu_server: Any, request: pytest.FixtureRequest) -> Any:
    """The endpoint with the estate freshly seeded and empty logs. PATCH merges (RFC 7386) unless a test asks
    for both modes with ``@pytest.mark.parametrize("emu", PATCH_MODES, indirect=True)``."""
    emu_server.configure(patch_mode=getattr(request, "param", "merge"))
    emu_server.seed(estate.estate(), reset=True)
    emu_server.clear_requests()
    emu_server.clear_events()
    emu_server.clear_faults()
    return emu_server


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(estate.DEMO_POLICY)
    return path


@pytest.fixture
def settings(emu: Any, policy_file: Path, tmp_path: Path) -> dict[str, str]:
    """App settings pointing at the local endpoint, as on an admin's laptop."""
    home = tmp_path / "home"
    home.mkdir()
    return clean_env(
        HOME=str(home),  # no az / VS Code login cache of the developer's leaks in
        LABGUARD_ARM_ENDPOINT=emu.endpoint,
        LABGUARD_ARM_AUDIENCE="https://management.azure.com/",
        LABGUARD_CA_BUNDLE=emu.ca_file,
        LABGUARD_SUBSCRIPTIONS=",".join(estate.SUBSCRIPTIONS),
        LABGUARD_POLICY_FILE=str(policy_file),
        AZURE_TENANT_ID=emu.tenant_id,
        AZURE_CLIENT_ID=ADMIN_CLIENT,
        AZURE_CLIENT_SECRET="local-test-secret",
        AZURE_AUTHORITY_HOST=emu.authority,
        COLUMNS="160",
    )


@pytest.fixture
def run(
    labguard_command: Path, settings: dict[str, str], tmp_path: Path
) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run ``labguard ARGS`` with the settings (``env`` replaces them); returns the finished process."""

    def go(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(labguard_command), *args],
            env=settings if env is None else env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    return go


def arm_writes(emu: Any) -> list[dict[str, Any]]:
    return [r for r in emu.requests() if r["kind"] == "arm" and r["method"] not in ("GET", "HEAD")]


def one_line_error(proc: subprocess.CompletedProcess[str], code: int = 2) -> str:
    """Asserts a configuration error (exit 2; 3 when Azure could not be reached): nothing on stdout, one
    ``labguard:`` line on stderr."""
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("labguard: ")
    assert "Traceback" not in proc.stderr
    return lines[0]
