"""Logging set-up: readable lines, or one JSON object per line (``log.json_format``)."""

from __future__ import annotations

import json
import logging
import sys
import time

from aiohttp.http_exceptions import HttpProcessingError

from imgaccel.errors import ConfigError

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record, with any ``extra=`` fields as keys."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class ClientErrors(logging.Filter):
    """aiohttp logs a request it could not parse (a client's malformed HTTP: a bad header, a line
    over its limits, a port scanner) as an ERROR with the parser's traceback, though the client
    got its 400 and the daemon is fine. This filter, on the ``aiohttp.server`` logger, makes such
    a record one WARNING line saying who sent what; any other error stays as it is."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError) and 400 <= error.code < 500:
            lines = str(error.message).strip().splitlines() or [type(error).__name__]
            record.msg = "bad HTTP request from %s (%d): %s"
            remote = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            record.args = (remote, error.code, lines[0][:200])
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info = record.exc_text = None
        return True


def check_level(level: str) -> str:
    """``level`` upper-cased if :mod:`logging` knows it (DEBUG, INFO, ...); ConfigError if not."""
    if level.upper() not in logging.getLevelNamesMapping():
        raise ConfigError(f"unknown log level {level!r}: use DEBUG, INFO, WARNING or ERROR")
    return level.upper()


def setup_logging(level: str = "INFO", json_format: bool = False) -> None:
    """Log to stderr at ``level``; ConfigError (before any change) for an unknown level."""
    level = check_level(level)
    handler = logging.StreamHandler(sys.stderr)
    if json_format:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    server = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, ClientErrors) for f in server.filters):
        server.addFilter(ClientErrors())
