"""The Azure edge: the one ARM adapter (raw JSON in, frozen lab plans out), the pacing of its requests to ARM's
budget, and the TLS trust for outgoing HTTPS.
"""
