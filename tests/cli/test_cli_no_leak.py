"""Issue 13, item 9: a credential that cannot be built still closes the run's HTTP client (no aiohttp
``Unclosed client session`` on stderr), in the CLI as a subprocess and in ``open_arm`` itself."""

from __future__ import annotations

import gc
import subprocess
import warnings
from pathlib import Path
from typing import Any

import pytest

from shared.edge.arm import open_arm
from shared.runtime.settings import Settings

from .conftest import clean_env, one_line_error

SUB = "34adfa4f-cedf-4dc0-ba29-b6d1a69ab345"


def test_a_credential_that_cannot_be_built_leaks_no_http_client(labguard_command: Path, tmp_path: Path) -> None:
    """The CLI fails on the credential before any request, so no endpoint is needed."""
    env = clean_env(
        HOME=str(tmp_path),
        LABGUARD_ARM_ENDPOINT="https://127.0.0.1:9",
        LABGUARD_SUBSCRIPTIONS=SUB,
        AZURE_AUTHORITY_HOST="http://login.insecure.example",  # the credential refuses non-https
    )
    proc = subprocess.run(
        [str(labguard_command), "audit"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
    )
    line = one_line_error(proc)  # exactly one line on stderr: nothing else, no "Unclosed client session"
    assert "https" in line
    assert "Unclosed" not in proc.stderr


async def test_open_arm_closes_its_session_when_the_credential_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_AUTHORITY_HOST", "http://login.insecure.example")
    settings = Settings.from_env({"LABGUARD_SUBSCRIPTIONS": SUB})
    unclosed: list[Any] = []

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ValueError, match="https"):
            async with open_arm(settings):
                pass
        gc.collect()
    unclosed = [w for w in caught if "Unclosed" in str(w.message)]
    assert unclosed == []
