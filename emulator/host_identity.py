"""Where the local endpoint serves the Functions host's managed identity, and the secret it expects.

A module of constants only: bench children read them before they time anything, so it imports nothing.
"""

#: The Functions/App Service host's managed identity endpoint (what IDENTITY_ENDPOINT points at in Azure).
MANAGED_IDENTITY_PATH = "/msi/token"
#: The secret the host gives the app in IDENTITY_HEADER, sent back as X-IDENTITY-HEADER (a fixed local one).
MANAGED_IDENTITY_HEADER = "local-identity-header"
#: Whose token the endpoint issues when no client_id (user-assigned identity) is asked for.
MANAGED_IDENTITY_CLIENT = "labguard-managed-identity"
