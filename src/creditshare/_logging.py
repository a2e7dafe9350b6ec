"""Process logging for the services: JSON lines (or text) with the request id.

A request id names one HTTP request to the coordinator and every node call made
for it: the coordinator takes it from ``X-Request-ID`` (when short and made of
safe characters) or makes one, returns it in the response header and sends it to
the nodes as gRPC metadata ``x-request-id``; each side keeps it in a contextvar
for the duration of the request, and every log line written meanwhile carries it.

Log lines never carry secrets: callers log identifiers, counts and reasons, not
API keys, consent signatures, private keys or ciphertexts; as a second line of
defence, an ``extra`` field whose name looks like a secret is written redacted.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import uuid
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

__all__ = [
    "REQUEST_ID_HEADER",
    "REQUEST_ID_METADATA",
    "JsonFormatter",
    "LogFormat",
    "LogLevel",
    "RequestIdFilter",
    "configure_logging",
    "make_handler",
    "new_request_id",
    "request_id_var",
    "valid_request_id",
]

LogFormat = Literal["json", "text"]
LogLevel = Literal["debug", "info", "warning", "error"]

REQUEST_ID_HEADER = "X-Request-ID"
#: gRPC metadata keys are lower case.
REQUEST_ID_METADATA = "x-request-id"

#: The request being served in this task or thread (None outside a request).
request_id_var: ContextVar[str | None] = ContextVar("creditshare_request_id", default=None)

_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"
#: Attributes every LogRecord has; anything else on a record came from ``extra=``
#: (uvicorn's ``color_message`` is its message again, with terminal colour codes).
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "request_id",
    "color_message",
}
_SECRET_HINTS = (
    "api_key",
    "apikey",
    "authorization",
    "password",
    "secret",
    "token",
    "private",
    "signature",
    "ciphertext",
)


def new_request_id() -> str:
    return uuid.uuid4().hex


def valid_request_id(value: str | None) -> str | None:
    """``value`` if it is a usable request id (1-64 of ``A-Za-z0-9._:-``), else None."""
    if value is None or _REQUEST_ID.fullmatch(value) is None:
        return None
    return value


def _redacted(name: str) -> bool:
    lowered = name.lower()
    return any(hint in lowered for hint in _SECRET_HINTS)


class RequestIdFilter(logging.Filter):
    """Stamps each record with the current request id (``-`` outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = request_id_var.get() or "-"
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id, extras."""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created, UTC)
        doc: dict[str, Any] = {
            "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None) or request_id_var.get()
        if request_id and request_id != "-":
            doc["request_id"] = request_id
        for name, value in record.__dict__.items():
            if name in _STANDARD or name.startswith("_") or name in doc:
                continue
            doc[name] = "[redacted]" if _redacted(name) else value
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        return json.dumps(doc, ensure_ascii=False, default=str)


def make_handler(log_format: LogFormat, stream: TextIO | None = None) -> logging.Handler:
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.addFilter(RequestIdFilter())
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(_TEXT_FORMAT))
    return handler


def configure_logging(
    log_format: LogFormat = "json", level: LogLevel = "info", stream: TextIO | None = None
) -> None:
    """Send every logger's records (uvicorn's and grpc's too) to one handler on the root."""
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(make_handler(log_format, stream))
    root.setLevel(level.upper())
    logging.captureWarnings(True)
    # Loggers that install their own handlers would write a second, unformatted line;
    # their levels follow the root's from here on.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.setLevel(logging.NOTSET)
        logger.propagate = True
        logger.disabled = False
