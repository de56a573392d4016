"""The JSON API's shared parts: request parsing, error replies, the error middleware.

API errors are ``{"error": "..."}`` with a 4xx status; a bad digest is the registry error JSON
of :class:`~imgaccel.errors.DigestInvalid`. Nothing reaches a client as a traceback.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any, Protocol

from aiohttp import web

from imgaccel.errors import RegistryError
from imgaccel.oci.digest import Digest
from imgaccel.tracker.store import MAX_INT64

log = logging.getLogger(__name__)

_MAX_NODE_ID = 256


class ApiError(Exception):
    """A client error of the JSON API: an HTTP status and a message."""

    def __init__(self, status: int, message: str, **extra: object) -> None:
        super().__init__(message)
        self.status = status
        self.body: dict[str, object] = {"error": message, **extra}


@web.middleware
async def error_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
    except ApiError as exc:
        log.info("%s %s -> %d: %s", request.method, request.path, exc.status, exc)
        return web.json_response(exc.body, status=exc.status)
    except RegistryError as exc:
        log.info("%s %s -> %d: %s", request.method, request.path, exc.status, exc.message)
        return web.json_response(exc.body(), status=exc.status)
    return response


async def json_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object, or a 400."""
    try:
        body = await request.json(loads=json.loads)
    # ValueError: not JSON (or not UTF-8, or an integer of over 4300 digits); LookupError: an
    # unknown charset in the Content-Type; RecursionError: arrays nested thousands deep.
    except (ValueError, LookupError, RecursionError):
        raise ApiError(400, "the body is not JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    return body


def text_field(body: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    """A non-empty string field of at most 256 characters, or a 400."""
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value or len(value) > _MAX_NODE_ID or not utf8(value):
        raise ApiError(400, f"{name!r} must be a non-empty string of at most 256 characters")
    return value


def utf8(text: str) -> bool:
    """Whether ``text`` can be stored: JSON's ``"\\ud800"`` decodes to a lone surrogate, which
    SQLite refuses (UnicodeEncodeError)."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def count_field(body: dict[str, Any], name: str) -> int:
    """A non-negative integer field (default 0) that SQLite can hold (below 2**63), or a 400."""
    value = body.get(name, 0)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_INT64:
        raise ApiError(400, f"{name!r} must be a non-negative integer below 2**63")
    return value


def node_field(body: dict[str, Any]) -> str:
    node = text_field(body, "node")
    assert node is not None
    return node


def digest_param(request: web.Request) -> str:
    """The ``{digest}`` path part, validated (DigestInvalid: 400)."""
    return str(Digest.parse(request.match_info["digest"]))


def wait_param(request: web.Request, most: float) -> float:
    """``?wait=SECONDS`` clamped to ``[0, most]``; 0 when absent."""
    raw = request.query.get("wait", "0")
    try:
        wait = float(raw)
    except ValueError:
        raise ApiError(400, "wait must be a number of seconds") from None
    if not math.isfinite(wait) or wait < 0:
        raise ApiError(400, "wait must be a number of seconds")
    return min(wait, most)


class Closable(Protocol):
    def close(self) -> None: ...


def close_at_cleanup(app: web.Application, resource: Closable) -> None:
    """Close ``resource`` (a store opened with the app) when the app is cleaned up."""

    async def close(app: web.Application) -> None:
        resource.close()

    app.on_cleanup.append(close)
