"""What a command run has done so far, so an interrupted run (Ctrl-C) can say it, and a refused write
can say why.

:class:`TrackingArm` wraps the ARM adapter the reconcile core uses: it notes every plan listed, every
read or write that failed and every write in flight. Once interrupted it starts no new write; a write
already sent is shielded from the cancellation, so it finishes (bounded by a grace period, a second
Ctrl-C abandons it) and its result is known, not guessed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.core.labs import Lab, LabId
from shared.core.plans import LabPlan, PlanId
from shared.errors import ArmError
from shared.runtime.reconcile import scope_path
from shared.runtime.runs import APP_ROOT

WRITE_ACTION = "Microsoft.LabServices/labPlans/write"
LAB_WRITE_ACTION = "Microsoft.LabServices/labs/write"
#: Seconds an interrupted run waits for writes already sent; a second Ctrl-C stops waiting.
INTERRUPT_GRACE_S = 30.0


class NotSent(ArmError):
    """A write labguard did not send because the run was interrupted first."""

    def __init__(self, plan_id: PlanId) -> None:
        super().__init__(f"PATCH {plan_id}: not sent (interrupted)", transient=False)


@dataclass(frozen=True)
class InFlight:
    """A write that was sent when the run was interrupted, and what became of it."""

    plan_id: PlanId  # or a shared.labs.LabId for a lab's write (same name, path and scope attributes)
    patch: Mapping[str, Any]
    # "applied" (the proof read found it Succeeded), "refused" (the PATCH was answered with an error),
    # "unproven" (sent and accepted, but no read proved it), "failed" (the read found the plan Failed),
    # "abandoned" (sent; outcome unknown)
    result: str
    detail: str | None = None


def _proven(after: Any) -> tuple[str, str | None]:
    """What the proof read after an accepted write says: applied only for a Succeeded plan (or lab)."""
    what = "lab" if isinstance(after, Lab) else "plan"
    if isinstance(after, (LabPlan, Lab)) and after.provisioning_state == "Succeeded":
        return "applied", None
    if isinstance(after, (LabPlan, Lab)) and after.provisioning_state == "Failed":
        return "failed", f"sent; the {what} was left Failed"
    return "unproven", f"sent; not proven (the {what} was still busy)"


# The read that proves a write: (accepted, timeout_s) -> the plan or lab read, or None at the deadline.
Prover = Callable[[Any, float], Awaitable[Any]]


@dataclass
class Interruption:
    """What an interrupted run had done: filled in by :meth:`TrackingArm.settle`."""

    in_flight: list[InFlight] = field(default_factory=list)
    not_reached: list[str] = field(default_factory=list)  # plan and lab paths listed but never checked
    scopes_not_listed: list[str] = field(default_factory=list)  # scopes whose listing did not finish
    abandoned_wait: bool = False  # a second Ctrl-C: in-flight writes were not waited for


class TrackingArm:
    """The ARM adapter with a note of what happened; anything not overridden goes to the adapter."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.stopping = False
        self.listed: dict[str, PlanId] = {}  # plan key -> id, in listing order
        self.scopes_done: set[str] = set()
        self.write_errors: dict[str, ArmError] = {}
        self.read_errors: dict[str, ArmError] = {}
        self.refused_patches: dict[str, Mapping[str, Any]] = {}
        # plan (or lab) key -> (id, patch, task, stage): stage "send" (the PATCH) or "wait" (the proof read)
        self._writes: dict[str, tuple[PlanId, Mapping[str, Any], asyncio.Future[Any], str]] = {}
        self._provers: dict[str, Prover] = {}  # how to prove each write still in flight (plans and labs differ)
        # writes whose proof finished: plan key -> (id, patch, result, detail), as InFlight.result says
        self.applied: dict[str, tuple[PlanId, Mapping[str, Any], str, str | None]] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def list_plans(self, subscription_id: str, resource_group: str | None = None) -> AsyncIterator[Any]:
        async for item in self._inner.list_plans(subscription_id, resource_group):
            if isinstance(item, LabPlan):
                self.listed.setdefault(item.id.key, item.id)
            yield item
        self.scopes_done.add(scope_path(subscription_id, resource_group))

    async def get_plan(self, plan_id: PlanId) -> LabPlan:
        try:
            plan: LabPlan = await self._inner.get_plan(plan_id)
        except ArmError as exc:
            self.read_errors[plan_id.key] = exc
            raise
        return plan

    async def send_patch(self, plan_id: PlanId, patch: Mapping[str, Any], slot: Any = None) -> Any:
        """Send the write, shielded: a Ctrl-C cancels the sweep, not a write already on its way."""
        inner = self._inner

        async def prove(accepted: Any, timeout_s: float) -> Any:
            return await inner.wait_for_write(plan_id, accepted, timeout_s=timeout_s)

        return await self.track_send(plan_id, patch, lambda: inner.send_patch(plan_id, patch, slot), prove)

    async def track_send(
        self, plan_id: Any, patch: Mapping[str, Any], send: Callable[[], Awaitable[Any]], prove: Prover
    ) -> Any:
        """Send one write (a plan's or a lab's) as :meth:`send_patch` does; ``prove`` reads it after an interrupt."""
        if self.stopping:
            raise NotSent(plan_id)
        task = asyncio.ensure_future(send())
        self._provers[plan_id.key] = prove
        self._writes[plan_id.key] = (plan_id, patch, task, "send")
        try:
            return await asyncio.shield(task)
        except ArmError as exc:
            self.write_errors[plan_id.key] = exc
            self.refused_patches[plan_id.key] = patch
            self._writes.pop(plan_id.key, None)
            raise
        except asyncio.CancelledError:
            raise  # the task goes on; settle() waits for it

    async def wait_for_write(
        self, plan_id: PlanId, accepted: Any, *, timeout_s: float | None = None, gate: Any = None
    ) -> Any:
        """The write stays in flight until the service has finished it (the read that proves it)."""
        return await self.track_wait(
            plan_id, lambda: self._inner.wait_for_write(plan_id, accepted, timeout_s=timeout_s, gate=gate)
        )

    async def track_wait(self, plan_id: Any, wait: Callable[[], Awaitable[Any]]) -> Any:
        """Wait for one write's proof read (a plan's or a lab's) as :meth:`wait_for_write` does."""
        sent = self._writes.get(plan_id.key)
        task = asyncio.ensure_future(wait())
        patch: Mapping[str, Any] = sent[1] if sent is not None else {}
        self._writes[plan_id.key] = (plan_id, patch, task, "wait")
        try:
            after = await asyncio.shield(task)
        except asyncio.CancelledError:
            raise  # settle() waits for the service to finish it
        except BaseException:
            self._writes.pop(plan_id.key, None)
            raise
        self._writes.pop(plan_id.key, None)
        self.applied[plan_id.key] = (plan_id, patch, *_proven(after))
        return after

    async def settle(self, checked: set[str], abandon: asyncio.Event, grace_s: float) -> Interruption:
        """After an interrupt: wait (bounded) for the writes in flight, then say what was not reached.

        A PATCH that was accepted before its proof read started gets that read here (within the same
        grace period), so "applied" is said only of a write a read proved.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        writes = dict(self._writes)
        report = Interruption()
        stop = asyncio.ensure_future(abandon.wait())
        try:
            while not abandon.is_set() and loop.time() < deadline:
                for key, (plan_id, patch, task, stage) in list(writes.items()):
                    if stage == "send" and task.done() and not task.cancelled() and task.exception() is None:
                        prove = self._provers[key]
                        proof = asyncio.ensure_future(prove(task.result(), max(0.1, deadline - loop.time())))
                        writes[key] = (plan_id, patch, proof, "wait")
                pending = {task for _, _, task, _ in writes.values() if not task.done()}
                if not pending:
                    break
                await asyncio.wait(
                    [*pending, stop], timeout=deadline - loop.time(), return_when=asyncio.FIRST_COMPLETED
                )
        finally:
            stop.cancel()
        if writes:
            report.abandoned_wait = abandon.is_set()
        for plan_id, patch, task, stage in writes.values():
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
                report.in_flight.append(InFlight(plan_id, patch, "abandoned", "sent; outcome unknown"))
            elif task.cancelled():
                report.in_flight.append(InFlight(plan_id, patch, "abandoned", "sent; outcome unknown"))
            elif task.exception() is not None:
                error = task.exception()
                if stage == "send":  # the PATCH itself was answered with an error
                    if isinstance(error, ArmError):
                        self.write_errors[plan_id.key] = error
                    report.in_flight.append(InFlight(plan_id, patch, "refused", str(error)))
                else:  # the PATCH was accepted; the read meant to prove it failed
                    report.in_flight.append(InFlight(plan_id, patch, "unproven", f"sent; not proven: {error}"))
            elif stage == "send":  # accepted, but the interrupt came before the proof read
                report.in_flight.append(InFlight(plan_id, patch, "unproven", "sent; not proven"))
            else:
                report.in_flight.append(InFlight(plan_id, patch, *_proven(task.result())))
        for key, (plan_id, patch, result, detail) in self.applied.items():  # the sweep stopped before it said so
            if key not in checked and key not in self._writes:
                report.in_flight.append(InFlight(plan_id, patch, result, detail))
        flying = {w.plan_id.key for w in report.in_flight}
        report.not_reached = [pid.path for key, pid in self.listed.items() if key not in checked | flying]
        return report


class TrackingLabsArm:
    """The labs adapter (:class:`shared.lab_arm.LabsArm`) noting into a run's :class:`TrackingArm`: labs listed,
    reads and writes that failed, lab writes in flight. After Ctrl-C no lab write starts either, and a lab
    write already sent is finished and reported with the plans' (changed, in flight, not reached)."""

    def __init__(self, inner: Any, tracker: TrackingArm) -> None:
        self._inner = inner
        self._tracker = tracker

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def list_labs(self, subscription_id: str, resource_group: str | None = None) -> AsyncIterator[Any]:
        async for item in self._inner.list_labs(subscription_id, resource_group):
            if isinstance(item, Lab):
                self._tracker.listed.setdefault(item.id.key, item.id)
            yield item

    async def get_lab(self, lab_id: LabId) -> Lab:
        try:
            lab: Lab = await self._inner.get_lab(lab_id)
        except ArmError as exc:
            self._tracker.read_errors[lab_id.key] = exc
            raise
        return lab

    async def send_patch(self, lab_id: LabId, patch: Mapping[str, Any], slot: Any = None) -> Any:
        inner = self._inner

        async def prove(accepted: Any, timeout_s: float) -> Any:
            return await inner.wait_for_write(lab_id, accepted, timeout_s=timeout_s)

        return await self._tracker.track_send(lab_id, patch, lambda: inner.send_patch(lab_id, patch, slot), prove)

    async def wait_for_write(
        self, lab_id: LabId, accepted: Any, *, timeout_s: float | None = None, gate: Any = None
    ) -> Any:
        """Forwards the completion-poll gate, as :meth:`TrackingArm.wait_for_write` does for plans."""
        return await self._tracker.track_wait(
            lab_id, lambda: self._inner.wait_for_write(lab_id, accepted, timeout_s=timeout_s, gate=gate)
        )


def install_interrupt(on_first: Callable[[], None], abandon: asyncio.Event) -> Callable[[], None]:
    """Ctrl-C once: ``on_first`` (stop cleanly); twice: set ``abandon``. Returns the undo function."""
    loop = asyncio.get_running_loop()
    hits = 0

    def handler() -> None:
        nonlocal hits
        hits += 1
        if hits == 1:
            on_first()
        else:
            abandon.set()

    try:
        loop.add_signal_handler(signal.SIGINT, handler)
    except (ValueError, RuntimeError, NotImplementedError):  # not the main thread, or no signals here
        return lambda: None

    def undo() -> None:
        with contextlib.suppress(ValueError, RuntimeError):
            loop.remove_signal_handler(signal.SIGINT)

    return undo


# ------------------------------------------------------------------------------------ refused writes


@dataclass(frozen=True)
class WriteDenied:
    """A plan labguard checked and could not write: its identity lacks the write action on that scope."""

    principal_id: str | None
    scope: str
    role: str | None  # the role in infra/roles that grants the action, and its file
    action: str = WRITE_ACTION  # labPlans/write, or labs/write for a lab

    def describe(self) -> str:
        who = f"object id {self.principal_id}" if self.principal_id else "object id unknown"
        grant = f"assign it {self.role}" if self.role else f"assign it a role with {self.action}"
        return (
            f"checked; not written: labguard's identity ({who}) lacks {self.action} on {self.scope}: "
            f"{grant} on that scope"
        )


def write_denied(
    error: ArmError | None, plan_id: PlanId | LabId, principal_id: str | None, action: str = WRITE_ACTION
) -> WriteDenied | None:
    """A 403 (or 401) answering our PATCH: which identity, which scope, which role would grant it."""
    if error is None or error.status not in (401, 403):
        return None
    scope = f"/subscriptions/{plan_id.subscription_id}/resourceGroups/{plan_id.resource_group}"
    return WriteDenied(principal_id, scope, role_granting(action), action)


def role_granting(action: str, roles_dir: Path | None = None) -> str | None:
    """The custom role in infra/roles that grants ``action``: ``'NAME' (infra/roles/FILE)``."""
    folder = roles_dir or APP_ROOT / "infra" / "roles"
    try:
        files = sorted(folder.glob("*.json"))
    except OSError:
        files = []
    for path in files:
        try:
            role = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(role, dict) and action in role.get("actions", []):
            return f"the role '{role.get('roleName', path.stem)}' (infra/roles/{path.name})"
    return None
