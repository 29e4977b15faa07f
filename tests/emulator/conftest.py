"""Fixtures for the emulator's own tests (helpers live in emu_support.py so test modules can import them)."""

from tests.emulator.emu_support import client, emu, raw_get

__all__ = ["client", "emu", "raw_get"]
