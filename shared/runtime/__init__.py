"""The runtime glue: settings, structured logs, Event Grid events, the reconcile loop and the runs the triggers and
the command start, and what a sweep writes (change log, write backoff, page).
"""
