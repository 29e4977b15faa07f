"""``python -m labguard``: the same as the ``labguard`` command."""

from labguard.cli import main

main()
