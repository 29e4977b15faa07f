"""labguard's command line for admins: ``labguard audit | enforce | check-policy``.

Built on the same core (``shared.runtime.reconcile``) and ARM adapter (``shared.edge.arm``) as the Functions.
"""
