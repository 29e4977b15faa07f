"""What every measured child process shares: reading its spec, pointing labguard at the endpoint, logs."""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any

from bench.endpoint import REPO
from emulator.host_identity import MANAGED_IDENTITY_HEADER, MANAGED_IDENTITY_PATH

POLICY = REPO / "policy.yaml"


def read_spec() -> dict[str, Any]:
    spec: dict[str, Any] = json.loads(sys.stdin.read())
    return spec


def emit(result: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


def labguard_env(spec: dict[str, Any]) -> dict[str, str]:
    """App settings as an admin would set them, pointed at the local endpoint (as tests/app/conftest.py does)."""
    return {
        "LABGUARD_ARM_ENDPOINT": spec["endpoint"],
        "LABGUARD_ARM_AUDIENCE": "https://management.azure.com/",
        # Production trust (the system store, which SSL_CERT_FILE points at the endpoint's CA) unless the
        # spec asks for LABGUARD_CA_BUNDLE, the campus-proxy configuration (see RESULTS.md for its cost).
        "LABGUARD_CA_BUNDLE": spec["ca_file"] if spec.get("ca_bundle") else "",
        "LABGUARD_SUBSCRIPTIONS": ",".join(spec["subscriptions"]),
        "LABGUARD_RESOURCE_GROUPS": "",
        "LABGUARD_MODE": "enforce",
        "LABGUARD_POLICY_FILE": str(POLICY),
        "LABGUARD_CONCURRENCY": str(spec.get("concurrency") or 16),
        # The app's identity as the Functions host gives it (shared.edge.identity): its managed identity endpoint.
        "IDENTITY_ENDPOINT": spec["endpoint"] + MANAGED_IDENTITY_PATH,
        "IDENTITY_HEADER": MANAGED_IDENTITY_HEADER,
        # A platform setting the template gives the Function App (infra/modules/functionapp.bicep).
        "PYDANTIC_DISABLE_PLUGINS": "__all__",
    }


def apply_env(spec: dict[str, Any]) -> None:
    """Set the app settings before anything imports aiohttp (its default SSL context reads SSL_CERT_FILE)."""
    for key in [k for k in os.environ if k.startswith("LABGUARD_")]:
        del os.environ[key]
    os.environ.update(labguard_env(spec))
    if os.environ.get("SSL_CERT_FILE") != spec["ca_file"]:
        raise SystemExit("start this child with SSL_CERT_FILE set to the endpoint's CA (bench.__main__ does)")


class _Formatting(logging.Handler):
    """Formats every record (what a log shipper pays) and keeps only the sweep summaries."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records = 0
        self.summaries: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = self.format(record)
        self.records += 1
        if message.startswith("sweep.summary "):
            self.summaries.append(json.loads(message.split(" ", 1)[1]))


def capture_logs() -> _Formatting:
    handler = _Formatting()
    logger = logging.getLogger("labguard")
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    logger.propagate = False
    return handler


def spawn_json(
    argv: list[str], spec: dict[str, Any], *, cwd: Any, env: dict[str, str], timeout: float
) -> dict[str, Any]:
    """Run one child process with ``spec`` as JSON on stdin; its last stdout line is its JSON result."""
    import subprocess

    done = subprocess.run(
        argv, input=json.dumps(spec), capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout
    )
    if done.returncode != 0 or not done.stdout.strip():
        raise RuntimeError(f"{' '.join(argv[1:])} in {cwd} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result
