"""The local Lab Services endpoint as a separate process (``python -m emulator``), driven over HTTPS.

A separate process, so the endpoint does not share the GIL (or the peak-RSS figure) with the code
under test. Started by the run and always stopped at its end (SIGTERM, then SIGKILL), leaving no
process behind.
"""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import urllib.request
from collections import Counter
from pathlib import Path
from types import TracebackType
from typing import Any

REPO = Path(__file__).resolve().parents[1]


class Endpoint:
    def __init__(self, *, latency_ms: float, page_size: int = 100, lro_delay_s: float = 0.0) -> None:
        self.latency_ms = latency_ms
        self.page_size = page_size
        self.lro_delay_s = lro_delay_s
        self._proc: subprocess.Popen[str] | None = None
        self.endpoint = ""
        self.ca_file = ""
        self.tenant_id = ""
        self.authority = ""
        self._ssl: ssl.SSLContext | None = None

    def __enter__(self) -> Endpoint:
        self.start()
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        cmd = [
            sys.executable,
            "-m",
            "emulator",
            "--port",
            "0",
            "--latency-ms",
            str(self.latency_ms),
            "--page-size",
            str(self.page_size),
            "--lro-delay-s",
            str(self.lro_delay_s),
        ]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self._proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            self.stop()
            raise RuntimeError("the emulator process exited before it was ready")
        ready = json.loads(line)
        self.endpoint, self.ca_file = ready["endpoint"], ready["ca_file"]
        self._ssl = ssl.create_default_context(cafile=self.ca_file)
        config = self.control("GET", "/_emulator/config")
        self.tenant_id, self.authority = config["tenant_id"], config["authority"]

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def control(self, method: str, path: str, body: Any = None, timeout: float = 300) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.endpoint + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, context=self._ssl, timeout=timeout) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    # ------------------------------------------------------------------ state and modes
    def seed(self, state: dict[str, Any]) -> int:
        """Replace everything the endpoint holds with ``state``; clear its request log and events."""
        seeded = int(self.control("POST", "/_emulator/seed?reset=1", state)["seeded"])
        self.clear_logs()
        return seeded

    def clear_logs(self) -> None:
        self.control("DELETE", "/_emulator/requests")
        self.control("DELETE", "/_emulator/events")

    def configure(self, **modes: Any) -> dict[str, Any]:
        result: dict[str, Any] = self.control("POST", "/_emulator/config", modes)
        return result

    def reset_buckets(self) -> None:
        """Full token buckets: switching throttling off and on drops them."""
        self.configure(throttle=False)
        self.configure(throttle=True)

    def resource(self, resource_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.control("GET", "/_emulator/resources?id=" + urllib.request.quote(resource_id))
        return result

    def rss_mb(self) -> float:
        return _status_kb(self.pid, "VmRSS") / 1024

    # ------------------------------------------------------------------ what the endpoint saw
    def calls(self) -> dict[str, Any]:
        """ARM requests the endpoint served since the last clear, by kind, and 429s (the server's count)."""
        entries = [e for e in self.control("GET", "/_emulator/requests")["value"] if e["kind"] == "arm"]
        kinds: Counter[str] = Counter()
        throttled: Counter[str] = Counter()
        for e in entries:
            kind = classify(e["method"], e["path"], e.get("query") or {})
            kinds[kind] += 1
            if e["status"] == 429:
                throttled[kind] += 1
        return {
            "by_kind": dict(sorted(kinds.items())),
            "total": sum(kinds.values()),
            "throttled": sum(throttled.values()),
            "throttled_by_kind": dict(sorted(throttled.items())),
        }


def classify(method: str, path: str, query: dict[str, str]) -> str:
    """A request's kind: list, get, patch, poll for plans; ``lab list``, ``lab get``, ``lab patch`` for labs."""
    lower = path.lower()
    if "/operationresults/" in lower or "/operationstatuses/" in lower:
        return "poll (final GET)" if query.get("monitor") == "location" else "poll"
    tail = lower.rstrip("/").rsplit("/providers/microsoft.labservices/", 1)[-1]
    prefix = "lab " if tail.startswith("labs") else ""
    if method == "GET":
        return prefix + ("get" if "/" in tail else "list")
    return prefix + method.lower()


def _status_kb(pid: int | str, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM), MB."""
    return _status_kb("self", "VmHWM") / 1024
