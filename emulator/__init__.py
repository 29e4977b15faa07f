"""A local, faithful-enough Microsoft.LabServices (ARM) endpoint over HTTPS for tests, the demo and benchmarks.

In-process: ``from emulator.testing import start_emulator``. As a process: ``python -m emulator``.
See emulator/README.md for the contract and what it does not model.

The package itself imports nothing: bench children read ``emulator.host_identity`` before they time
anything, and must not load the server's modules (token signing, the store) on the way.
"""
