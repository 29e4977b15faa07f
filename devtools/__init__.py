"""Dev-only tooling, never installed or deployed: ``make demo`` (``python -m devtools.demo``), its local
services (the Lab Services endpoint, Azurite, an SMTP sink) and the demo estate."""
