"""Benchmarks of labguard against the naive admin loop on the same local ARM endpoint: ``make bench``.

``python -m bench`` runs every measurement once, prints the table and writes ``bench/RESULTS.md``.
Each measurement runs in its own child process (so its peak RSS is its own), and the Lab Services
endpoint (``python -m emulator``) runs in yet another process, started and stopped by the run.
"""
