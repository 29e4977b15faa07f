"""A local, faithful-enough Microsoft.LabServices (ARM) endpoint over HTTPS for tests, the demo and benchmarks.

In-process: ``from emulator.testing import start_emulator``. As a process: ``python -m emulator``.
See emulator/README.md for the contract and what it does not model.
"""

from emulator.store import API_VERSIONS

__all__ = ["API_VERSIONS"]
