"""Structured log records that read well in Application Insights.

Each record's message is ``<event> {json}``: the JSON is queryable with ``parse_json`` in Log
Analytics, and the same fields ride in ``extra["labguard"]`` for handlers that keep them. Callers
pass only plain values; secrets are never among them.
"""

from __future__ import annotations

import json
import logging
from typing import Any


def record(logger: logging.Logger, level: int, event: str, **fields: Any) -> None:
    """Log one structured record; ``None`` fields are dropped so records stay short."""
    clean = {key: value for key, value in fields.items() if value is not None}
    logger.log(level, "%s %s", event, json.dumps(clean, default=str, sort_keys=True), extra={"labguard": clean})


# azure-core's per-request logger: at INFO it writes every request's URL and headers (redacted, but one
# record per ARM call), which the Functions worker forwards to Application Insights as traces.
SDK_HTTP_LOGGER = "azure.core.pipeline.policies.http_logging_policy"


def quiet_sdk_http_logging() -> None:
    """Keep the SDK's per-request HTTP logging at WARNING, whatever the host's default level is."""
    logging.getLogger(SDK_HTTP_LOGGER).setLevel(logging.WARNING)
