"""A real headless browser for page tests: Debian's ``chromium`` driven over the DevTools protocol.

A few dozen lines of protocol over aiohttp's WebSocket client (already a dependency), so no browser
driver package is needed. :func:`headless_chromium` starts chromium with a fresh profile and no
network chatter, and yields a :class:`Page` that records console messages, log entries and uncaught
exceptions from the moment it is attached.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--remote-debugging-port=0",
    "--window-size=1280,900",
    "--hide-scrollbars",
)


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


class Page:
    """One page target: ``call`` sends a command and waits for its answer; events are kept in lists."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._event_waiters: list[tuple[str, asyncio.Future[dict[str, Any]]]] = []
        self.events: list[dict[str, Any]] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self._ws:
            data = json.loads(message.data)
            if "id" in data:
                future = self._waiting.pop(data["id"], None)
                if future is not None and not future.done():
                    future.set_result(data)
                continue
            self.events.append(data)
            for method, waiter in list(self._event_waiters):
                if method == data.get("method") and not waiter.done():
                    waiter.set_result(data)
                    self._event_waiters.remove((method, waiter))

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        ident = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[ident] = future
        await self._ws.send_str(json.dumps({"id": ident, "method": method, "params": params}))
        answer = await asyncio.wait_for(future, 30)
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error']}")
        return dict(answer.get("result", {}))

    def expect(self, method: str) -> asyncio.Future[dict[str, Any]]:
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._event_waiters.append((method, future))
        return future

    async def open(self, url: str) -> None:
        loaded = self.expect("Page.loadEventFired")
        await self.call("Page.navigate", url=url)
        await asyncio.wait_for(loaded, 30)

    async def evaluate(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def screenshot(self, path: Path, width: int = 1280) -> None:
        height = int(await self.evaluate("document.documentElement.scrollHeight"))
        await self.call(
            "Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False
        )
        shot = await self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        _write(path, base64.b64decode(shot["data"]))

    def problems(self) -> list[str]:
        """Console errors and warnings, log entries of level error or warning, uncaught exceptions."""
        found = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "warning", "assert"):
                found.append(f"console.{params['type']}: {params.get('args')}")
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") in ("error", "warning"):
                entry = params["entry"]
                found.append(f"log {entry.get('level')} ({entry.get('source')}): {entry.get('text')}")
            elif method == "Runtime.exceptionThrown":
                found.append(f"exception: {params.get('exceptionDetails')}")
        return found

    async def close(self) -> None:
        await self._ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


def _write(path: Path, data: bytes) -> None:
    path.write_bytes(data)


def _prepare(profile: Path) -> Path:
    profile.mkdir(parents=True, exist_ok=True)
    return profile / "chromium.log"


def _port(profile: Path) -> int | None:
    port_file = profile / "DevToolsActivePort"
    text = port_file.read_text().strip() if port_file.exists() else ""
    return int(text.split()[0]) if text else None


@contextlib.asynccontextmanager
async def headless_chromium(profile: Path) -> AsyncIterator[Page]:
    """chromium with a fresh ``--user-data-dir``; yields its first page with Page, Runtime and Log enabled."""
    binary = chromium_path()
    assert binary is not None
    log_path = _prepare(profile)
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            binary,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            "about:blank",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=log,
        )
    page: Page | None = None
    try:
        port = None
        for _ in range(300):
            port = _port(profile)
            if port is not None:
                break
            if proc.returncode is not None:
                raise RuntimeError(f"chromium exited {proc.returncode}; see {log_path}")
            await asyncio.sleep(0.1)
        assert port is not None, f"chromium did not open its DevTools port; see {log_path}"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/json/list") as response:
                targets = await response.json()
            target = next(t for t in targets if t.get("type") == "page")
            ws = await http.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0)
            page = Page(ws)
            for domain in ("Page", "Runtime", "Log"):
                await page.call(f"{domain}.enable")
            yield page
    finally:
        if page is not None:
            await page.close()
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
