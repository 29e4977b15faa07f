"""Every error labguard's shared code raises on purpose, in one place: what each means and who handles it.

* :class:`PolicyError`: a bad policy file (one line: file, field path, what to write); nothing runs.
* :class:`SettingsError`: a missing or malformed app setting, named; nothing runs.
* :class:`TrustError`: the extra CA bundle (``LABGUARD_CA_BUNDLE``) cannot be used.
* :class:`ArmError` (and :class:`PlanGone`, :class:`ProviderNotRegistered`, :class:`Throttled`): ARM answered
  with an error; ``transient`` ones are worth retrying later.
* :class:`MalformedEvent`: an Event Grid event that cannot be read; logged and acknowledged.
* :class:`DeliveryError`: a notice channel did not accept a notice; the ledger keeps it for a retry.
* :class:`RunFailed` (and :class:`BusyRetry`): raised at the end of a trigger so the Functions host records
  the run as failed and Event Grid delivers the event again.

Pure and imported by every room, so it imports nothing of labguard's. Anything else an error can be (a bug)
is left to raise as itself.
"""

from __future__ import annotations

__all__ = [
    "ArmError",
    "BusyRetry",
    "DeliveryError",
    "MalformedEvent",
    "PlanGone",
    "PolicyError",
    "ProviderNotRegistered",
    "RunFailed",
    "SettingsError",
    "Throttled",
    "TrustError",
]

SHOWN = 200  # characters of a bad value or key a policy error may show
MESSAGE_CAP = 600  # the longest PolicyError message: the file name, the field path and the problem


def one_line(text: str, cap: int) -> str:
    """``text`` on one line (whitespace runs collapsed), capped at ``cap`` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= cap else flat[: cap - 3] + "..."


# ---------------------------------------------------------------------------------------------- configuration


class PolicyError(ValueError):
    """A bad policy file. ``str()`` is one line: ``<file>: <field path>: <what is wrong and what to write>``.

    The line is capped (``MESSAGE_CAP``) and shows at most ``SHOWN`` characters of any bad value.
    """

    def __init__(self, source: str, path: str, problem: str) -> None:
        self.source, self.path, self.problem = source, one_line(path, SHOWN), one_line(problem, 2 * SHOWN)
        text = f"{source}: {self.path}: {self.problem}" if self.path else f"{source}: {self.problem}"
        super().__init__(one_line(text, MESSAGE_CAP))


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names it and says what to write."""


class TrustError(ValueError):
    """The extra CA bundle cannot be used; the message names the setting and the file."""


# ---------------------------------------------------------------------------------------------- Azure


class ArmError(Exception):
    """ARM answered with an error labguard cannot act on. ``transient`` errors are worth retrying later."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None, transient: bool) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.transient = transient


class PlanGone(ArmError):
    """The plan no longer exists (404): nothing to enforce, nothing to retry."""

    def __init__(self, plan_id: object) -> None:  # a PlanId
        super().__init__(f"lab plan {plan_id} not found", status=404, code="ResourceNotFound", transient=False)


class ProviderNotRegistered(ArmError):
    """The subscription has not registered Microsoft.LabServices (409 MissingSubscriptionRegistration).

    Not an error for labguard: such a subscription holds no lab plans, so a sweep says so and goes on.
    """

    def __init__(self, scope: str) -> None:
        super().__init__(
            f"{scope}: Microsoft.LabServices is not registered in this subscription, so it holds no lab plans",
            status=409,
            code="MissingSubscriptionRegistration",
            transient=False,
        )
        self.scope = scope


class Throttled(ArmError):
    """ARM answered 429 to a write; the caller waits ``retry_after_s``, re-reads the plan, then decides again."""

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message, status=429, code="TooManyRequests", transient=True)
        self.retry_after_s = retry_after_s


# ---------------------------------------------------------------------------------------------- events and notices


class MalformedEvent(ValueError):
    """The event cannot be read; it is logged with its id and acknowledged (never retried forever)."""


class DeliveryError(Exception):
    """A channel did not accept the notice. The message is safe to log and report (no secrets)."""


# ---------------------------------------------------------------------------------------------- runs


class RunFailed(RuntimeError):
    """Raised at the end of a run so the Functions host records it as failed (and Event Grid redelivers)."""


class BusyRetry(RunFailed):
    """The plan was busy: raised so Event Grid delivers the event again (a plain retry, not a fault)."""
