"""Notices: the failure notice (message), its channels (email, webhook, Event Grid topic), which support URLs may
be called, the ledger that makes each one go out once, and the daily digest's delivery. Their one error type is
shared.errors.DeliveryError.
"""
