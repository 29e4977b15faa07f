"""``make demo`` (``python -m devtools.demo``) as a subprocess, on embedded defaults, with no Azure.

It must tell the whole story in order, check it, and leave no process or temporary directory behind,
also when interrupted (Ctrl-C or SIGTERM) in the middle.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from devtools import estate
from devtools.services import AZURITE_TABLE

from .conftest import clean_env

STEPS = (
    "1. What the admin sees first",
    "2. A teacher loosens a lab; labguard sets it back and tells them",
    "3. A lab owner loosens a plan; Event Grid brings the write to labguard",
    "4. The timer sweep fixes the rest",
    "5. The failure notice, as the SMTP sink received it",
    "6. The final audit",
)


@pytest.fixture
def demo_env(tmp_path: Path) -> tuple[dict[str, str], str, Path]:
    if not AZURITE_TABLE.exists():
        pytest.fail("Azurite is not installed: run `make test` (it runs npm ci before pytest)", pytrace=False)
    marker = uuid.uuid4().hex
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = clean_env(
        LABGUARD_DEMO_TEST_MARKER=marker,  # inherited by every child: how we find leftovers
        TMPDIR=str(scratch),
        PYTHONUNBUFFERED="1",
        COLUMNS="120",
        # The caller's settings must not leak into the demo: it brings its own.
        LABGUARD_SUBSCRIPTIONS="00000000-0000-0000-0000-000000000000",
        LABGUARD_WEBHOOK_URLS="https://example.invalid/hook",
    )
    return env, marker, scratch


def leftovers(marker: str) -> list[int]:
    """Processes still running with our marker in their environment."""
    found = []
    needle = f"LABGUARD_DEMO_TEST_MARKER={marker}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def assert_nothing_left(marker: str, scratch: Path) -> None:
    deadline = time.monotonic() + 5
    while leftovers(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert leftovers(marker) == []
    assert [p.name for p in scratch.iterdir() if p.name.startswith(("labguard-demo-", "labguard-emulator-"))] == []


def test_make_demo_tells_the_whole_story_and_stops_everything(demo_env: tuple[dict[str, str], str, Path]) -> None:
    env, marker, scratch = demo_env
    proc = subprocess.run(  # how long it takes is bench's business, not a timed test (it ran 68 s on a busy box)
        ["make", "--no-print-directory", "demo"],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr
    assert "Traceback" not in proc.stderr and "WARNING" not in out

    positions = [out.index(step) for step in STEPS]
    assert positions == sorted(positions)
    first, teacher, owner, sweep, notice, final = (
        out[a:b] for a, b in zip(positions, [*positions[1:], len(out)], strict=True)
    )

    assert "36 lab plans in 3 subscriptions" in out and "7 resource groups" in out
    assert "$ labguard audit" in first
    assert "36 plans: 20 compliant, 13 drifted, 1 exempt, 1 skipped, 1 failed" in first

    # a person's lab change, set back by the Event Grid function, and one mail to them (LABGUARD_NOTIFY_CHANGER)
    assert "sends PATCH lab db-lab-drifted: clientSshAccess None → Public, noConnectDelay PT15M → PT4H" in teacher
    assert "caller teacher@school.example (idtyp user)" in teacher
    assert "eventgrid_lab_plan fixed the lab" in teacher and "noConnectDelay PT4H → PT30M" in teacher
    assert "RCPT TO:<teacher@school.example>" in teacher
    assert "Subject: [labguard] Your change to lab db-lab-drifted was set back" in teacher
    assert "ask for an exemption: https://it.school.example/lab-exemptions" in teacher
    assert "its labs re-checked: lab db-lab-over-quota fixed; its last writer teacher@school.example told" in owner

    assert f"sends PATCH {estate.OWNER_PLAN}: clientSshAccess Private → Public, idleDelay PT30M → PT2H" in owner
    assert "Microsoft.Resources.ResourceWriteSuccess" in owner
    assert "eventgrid_lab_plan fixed it" in owner
    assert "clientSshAccess Public → Private, idleDelay PT2H → PT30M" in owner
    assert "recognised as its own write, no ARM call made" in owner

    for spec in estate.SPECS:
        if spec.kind in ("drifted", "expired-exempt"):
            assert f"fixed   {spec.name}" in sweep, spec.name
    assert f"skipped {estate.LOCKED_PLAN}" in sweep and "provisioning state Locked" in sweep
    assert f"exempt  {estate.EXEMPT_PLAN}" in sweep
    assert f"FAILED  {estate.FAILED_PLAN}" in sweep and f"notice sent to {estate.SUPPORT_EMAIL}" in sweep
    assert "timer_sweep: 36 plans" in sweep and "13 fixed" in sweep

    assert f"RCPT TO:<{estate.SUPPORT_EMAIL}>" in notice and "STARTTLS on" in notice
    assert f"Subject: [labguard] Lab plan {estate.FAILED_PLAN} failed: InvalidSubnetDelegation" in notice
    assert "What failed" in notice and "Who to contact" in notice

    assert "36 plans: 33 compliant, 1 exempt, 1 skipped, 1 failed" in final
    assert f"notice sent to {estate.SUPPORT_EMAIL} (email)" in " ".join(final.split())  # (table cells wrap)
    assert "demo finished" in out and "not as expected" not in out
    assert_nothing_left(marker, scratch)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_an_interrupted_demo_leaves_nothing_behind(demo_env: tuple[dict[str, str], str, Path], sig: int) -> None:
    env, marker, scratch = demo_env
    proc = subprocess.Popen(
        [sys.executable, "-m", "devtools.demo"],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # as started from a terminal: a suite run as a shell's background job would hand down SIGINT ignored
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:  # interrupt once the services run and the story has begun
        seen.append(line)
        if line.startswith("$ labguard audit"):
            break
    assert leftovers(marker), "the endpoint and Azurite should be running by now"
    proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, "".join(seen) + err
    assert "interrupted; stopped the local endpoint, Azurite and the SMTP sink" in err
    assert "Traceback" not in err
    assert_nothing_left(marker, scratch)
