"""In-process handle: ``with start_emulator(...) as emu:`` runs the HTTPS endpoint on a background
thread with its own event loop, so sync and async SDK clients on the calling thread can use it.

Every method of the handle runs its work on the emulator's loop thread, so it is safe to call
while requests are in flight.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from emulator.server import EmulatorServer, FaultRule
from emulator.store import parse_resource_id

T = TypeVar("T")
DEFAULT_CLIENT_ID = "labguard-test-client"
DEFAULT_CLIENT_SECRET = "emulator-accepts-any-non-empty-secret"


class Emulator:
    """The handle ``start_emulator`` yields."""

    def __init__(self, server: EmulatorServer, loop: asyncio.AbstractEventLoop) -> None:
        self._server = server
        self._loop = loop

    # ------------------------------------------------------------------ plumbing
    def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        async def run() -> T:
            return fn(*args, **kwargs)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout=30)

    # ------------------------------------------------------------------ connection facts
    @property
    def endpoint(self) -> str:
        return self._server.endpoint

    @property
    def ca_file(self) -> str:
        return self._server.ca_file

    @property
    def tenant_id(self) -> str:
        return self._server.tenant_id

    @property
    def authority(self) -> str:
        return self._server.authority

    @property
    def server(self) -> EmulatorServer:
        """The server object (loop-thread only; prefer the handle's methods)."""
        return self._server

    def principal_id(self, client_id: str) -> str:
        return self._server.issuer.principal_id(client_id)

    def token(self, client_id: str = DEFAULT_CLIENT_ID, audience: str = "https://management.azure.com/") -> str:
        """A valid access token for hand-made requests (the SDK should use ``credential()``)."""
        return self._server.issuer.issue(client_id, audience=audience)

    def user_token(self, upn: str, name: str = "", *, claims: dict[str, Any] | None = None) -> str:
        """A person's delegated token (``idtyp`` user, ``upn``, ``name``); ``claims`` overrides any claim."""
        return self._server.issuer.issue_user(upn, name, extra=claims)

    def user_principal_id(self, upn: str) -> str:
        return self._server.issuer.user_principal_id(upn)

    def credential(self, client_id: str = DEFAULT_CLIENT_ID, client_secret: str = DEFAULT_CLIENT_SECRET) -> Any:
        """A real ``azure.identity.ClientSecretCredential`` that gets its token from the emulator."""
        from azure.identity import ClientSecretCredential

        return ClientSecretCredential(
            self.tenant_id,
            client_id,
            client_secret,
            authority=self.authority,
            connection_verify=self.ca_file,
            disable_instance_discovery=True,
        )

    def async_credential(self, client_id: str = DEFAULT_CLIENT_ID, client_secret: str = DEFAULT_CLIENT_SECRET) -> Any:
        """A real ``azure.identity.aio.ClientSecretCredential`` (close it, or use ``async with``)."""
        from azure.identity.aio import ClientSecretCredential

        return ClientSecretCredential(
            self.tenant_id,
            client_id,
            client_secret,
            authority=self.authority,
            connection_verify=self.ca_file,
            disable_instance_discovery=True,
        )

    def client(
        self,
        subscription_id: str,
        *,
        api_version: str = "2023-06-07",
        client_id: str = DEFAULT_CLIENT_ID,
        **kwargs: Any,
    ) -> Any:
        """A ``ManagedLabsClient`` wired to this emulator (convenience for tests)."""
        from azure.mgmt.labservices import ManagedLabsClient

        kwargs.setdefault("polling_interval", 0)
        return ManagedLabsClient(
            self.credential(client_id),
            subscription_id,
            base_url=self.endpoint,
            api_version=api_version,
            connection_verify=self.ca_file,
            **kwargs,
        )

    # ------------------------------------------------------------------ state
    def seed(self, state: dict[str, Any], *, reset: bool = False) -> int:
        def run() -> int:
            if reset:
                self._server.store.reset()
            return self._server.store.seed(state)

        return self._call(run)

    def put_plan(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._call(self._server.store.seed_resource, body, "labPlans")

    def put_lab(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._call(self._server.store.seed_resource, body, "labs")

    def get_resource(self, resource_id: str) -> dict[str, Any] | None:
        def run() -> dict[str, Any] | None:
            r = self._server.store.lookup(resource_id)
            return None if r is None else _deepcopy(r.body)

        return self._call(run)

    def get_plan(self, plan_id: str) -> dict[str, Any] | None:
        return self.get_resource(plan_id)

    def get_lab(self, lab_id: str) -> dict[str, Any] | None:
        return self.get_resource(lab_id)

    def plan_count(self) -> int:
        return self._call(lambda: len(self._server.store.resources["labPlans"]))

    def fail_plan(self, plan_id: str, error: dict[str, str] | None = None, *, next_write: bool = False) -> None:
        """provisioningState=Failed + resourceOperationError now, or (``next_write=True``) make the next
        PUT/PATCH/DELETE of the plan fail its long-running operation with that error."""
        parse_resource_id(plan_id)
        self._call(self._server.store.fail_resource, plan_id, error, next_write=next_write)

    def set_state(self, resource_id: str, state: str) -> dict[str, Any]:
        return self._call(self._server.store.set_state, resource_id, state)

    def reset(self) -> None:
        self._call(self._server.store.reset)

    def set_registered(self, subscription_id: str, registered: bool = True) -> None:
        """``registered=False``: every Microsoft.LabServices request in that subscription answers ARM's
        409 MissingSubscriptionRegistration, and the provider reads ``NotRegistered``."""
        self._call(self._server.store.set_registered, subscription_id, registered)

    def set_permissions(self, permissions: list[dict[str, list[str]]] | None, client_id: str = "*") -> None:
        """What Permissions - List answers ``client_id`` (``*``: everyone); None restores Contributor's."""
        self._call(self._server.set_permissions, permissions, client_id)

    # ------------------------------------------------------------------ logs
    def requests(self) -> list[dict[str, Any]]:
        return self._call(self._server.requests)

    def clear_requests(self) -> None:
        self._call(self._server.request_log.clear)

    def request_count(self) -> int:
        """How many requests the log holds (cheap: no copy), to wait for a caller's progress."""
        return self._call(lambda: len(self._server.request_log))

    def take_events(self) -> list[dict[str, Any]]:
        """The Event Grid events produced since the last take, removed from the endpoint (a subscription's feed)."""

        def run() -> list[dict[str, Any]]:
            events = self._server.store.events
            taken = [events.popleft() for _ in range(len(events))]
            return _deepcopy(taken)

        return self._call(run)

    def events(self) -> list[dict[str, Any]]:
        return self._call(lambda: _deepcopy(list(self._server.store.events)))

    def clear_events(self) -> None:
        self._call(self._server.store.events.clear)

    # ------------------------------------------------------------------ faults and modes
    def add_fault(
        self,
        method: str = "*",
        path_pattern: str = ".*",
        status: int | None = None,
        retry_after: float | None = None,
        count: int | None = 1,
        latency_ms: float = 0,
        reset: bool = False,
    ) -> FaultRule:
        return self._call(
            self._server.add_fault,
            method=method,
            path_pattern=path_pattern,
            status=status,
            retry_after=retry_after,
            count=count,
            latency_ms=latency_ms,
            reset=reset,
        )

    def clear_faults(self) -> None:
        self._call(self._server.faults.clear)
        self._call(self._server.write_denials.clear)

    def deny_writes(self, client_id: str = "*", scope: str = "/subscriptions") -> None:
        """RBAC-lite: ``client_id`` ("*" = anyone) keeps reading but every write under ``scope`` (a resource id
        prefix, case-insensitive) gets ARM's 403 AuthorizationFailed naming the action and the caller's object id.
        ``clear_faults()`` lifts it."""
        self._call(self._server.deny_writes, client_id, scope)

    def fault_mix(
        self,
        rates: dict[str, float],
        *,
        seed: int = 0,
        client_ids: tuple[str, ...] = (),
        methods: tuple[str, ...] = (),
        path_pattern: str = ".*",
        retry_after: float | None = None,
    ) -> dict[str, Any]:
        """Draw a fault at random for each matching ARM request: ``rates`` maps 429/500/503/reset to a
        probability; seeded, so a run reproduces; ``client_ids`` limits it to those callers."""
        return self._call(
            self._server.set_fault_mix,
            rates=rates,
            seed=seed,
            client_ids=client_ids,
            methods=methods,
            path_pattern=path_pattern,
            retry_after=retry_after,
        )

    def fault_mix_counts(self) -> dict[str, Any] | None:
        """The running mix: rates, requests drawn for, faults injected by kind."""
        return self._call(lambda: self._server.fault_mix.public() if self._server.fault_mix else None)

    def clear_fault_mix(self) -> dict[str, Any] | None:
        """Stop the mix; returns its final counts."""
        return self._call(self._server.clear_fault_mix)

    def configure(self, **cfg: Any) -> dict[str, Any]:
        """Change latency_ms, page_size, lro_delay_s, throttle, patch_mode, omit_off_delays or a write mode
        (patch_reply, operation_status, drop_written) while running."""
        return self._call(self._server.set_config, **cfg)


def _deepcopy(obj: T) -> T:
    import copy

    return copy.deepcopy(obj)


@contextmanager
def start_emulator(
    seed: dict[str, Any] | str | os.PathLike[str] | None = None,
    latency_ms: float = 0,
    page_size: int = 100,
    lro_delay_s: float = 0.0,
    throttle: bool = False,
    patch_mode: str = "merge",
    omit_off_delays: bool = False,
    **server_kwargs: Any,
) -> Iterator[Emulator]:
    """Run the emulator on a background thread for the duration of the ``with`` block.

    ``patch_mode``: ``"merge"`` (RFC 7386) or ``"replace"`` (each nested object a PATCH names in
    ``properties`` replaces the stored one, omitted leaves taking the spec's defaults).
    ``omit_off_delays``: reads leave out the delay of a shutdown feature that is off."""
    server = EmulatorServer(
        seed=seed,
        latency_ms=latency_ms,
        page_size=page_size,
        lro_delay_s=lro_delay_s,
        throttle=throttle,
        patch_mode=patch_mode,
        omit_off_delays=omit_off_delays,
        **server_kwargs,
    )
    loop = asyncio.new_event_loop()
    started = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(server.start())
        except BaseException as exc:
            failure.append(exc)
            started.set()
            return
        started.set()
        loop.run_forever()
        loop.run_until_complete(server.stop())
        loop.close()

    thread = threading.Thread(target=run, name="labservices-emulator", daemon=True)
    thread.start()
    started.wait(timeout=30)
    if failure:
        raise RuntimeError("the emulator did not start") from failure[0]
    try:
        yield Emulator(server, loop)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
