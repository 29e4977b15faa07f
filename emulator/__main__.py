"""``python -m emulator --port 0 --state seed.json [--latency-ms N] [--patch-mode merge|replace]``

Prints exactly one JSON line ``{"endpoint": "https://127.0.0.1:PORT", "ca_file": "PATH"}`` when ready,
then serves until killed (SIGTERM/SIGINT stop it cleanly and remove the throwaway CA).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys

from emulator.server import EmulatorServer
from emulator.store import PATCH_MODES


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m emulator", description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    p.add_argument("--state", help='seed JSON: {"labPlans": [...], "labs": [...]}')
    p.add_argument("--latency-ms", type=float, default=0, help="added latency per ARM call")
    p.add_argument("--page-size", type=int, default=100)
    p.add_argument(
        "--lro-delay-s", type=float, default=0.0, help="seconds a write's LRO stays InProgress (0: due at once)"
    )
    p.add_argument("--throttle", action="store_true", help="ARM per-subscription token buckets")
    _write_mode_flags(p)
    p.add_argument(
        "--unregistered",
        action="append",
        default=[],
        metavar="SUB",
        help="subscription where Microsoft.LabServices is not registered (409 MissingSubscriptionRegistration)",
    )
    p.add_argument(
        "--patch-mode",
        choices=PATCH_MODES,
        default="merge",
        help="merge: RFC 7386 (default); replace: each nested object a PATCH names in properties is replaced "
        "wholesale, omitted leaves taking the spec's defaults",
    )
    p.add_argument(
        "--omit-off-delays", action="store_true", help="reads leave out the delay of a shutdown feature that is off"
    )
    return p


def _write_mode_flags(p: argparse.ArgumentParser) -> None:
    """How writes complete (emulator.store.WriteModes)."""
    p.add_argument(
        "--patch-reply",
        choices=("lro", "200", "spec"),
        default="lro",
        help="PATCH answer: 202 + both LRO headers, 200 done at once, or the spec example's 202 + Location only",
    )
    p.add_argument("--operation-status", type=int, default=None, help="the operation URL answers this (403, 400)")
    p.add_argument("--drop-written", default="", help="auto-shutdown leaves writes silently drop, comma-separated")
    p.add_argument(
        "--stale-read-s", type=float, default=0.0, help="after a 202, GET shows the pre-write plan this long"
    )


async def _serve(args: argparse.Namespace) -> None:
    server = EmulatorServer(
        seed=args.state,
        latency_ms=args.latency_ms,
        page_size=args.page_size,
        lro_delay_s=args.lro_delay_s,
        throttle=args.throttle,
        patch_mode=args.patch_mode,
        omit_off_delays=args.omit_off_delays,
        host=args.host,
        port=args.port,
        patch_reply=args.patch_reply,
        operation_status=args.operation_status,
        drop_written=args.drop_written,
        stale_read_s=args.stale_read_s,
    )
    await server.start()
    for subscription in args.unregistered:
        server.store.set_registered(subscription, False)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    sys.stdout.write(json.dumps({"endpoint": server.endpoint, "ca_file": server.ca_file}) + "\n")
    sys.stdout.flush()
    try:
        await stop.wait()
    finally:
        await server.stop()


def main(argv: list[str] | None = None) -> None:
    asyncio.run(_serve(_parser().parse_args(argv)))


if __name__ == "__main__":
    main()
