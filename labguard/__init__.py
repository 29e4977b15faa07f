"""labguard's command line for admins: ``labguard audit | enforce | check-policy``.

Built on the same core (``shared.reconcile``) and ARM adapter (``shared.arm``) as the Functions.
"""
