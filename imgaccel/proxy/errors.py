"""One middleware turns every error into the registry error JSON with the right status.

Client mistakes are 4xx with a log line at INFO; only a bug is a 500 (aiohttp's own: the
traceback goes to the node's log, never to the client). The node's own disk failing under its
metadata (:class:`MetaUnwritable`: full, or an I/O error) is a 503 UNAVAILABLE, which containerd
falls back to the origin on, with one WARNING line per request. A registry the ``registries``
setting does not allow (:class:`RegistryNotAllowed`, a 403 ``DENIED``) is logged once per
registry where it is refused (:mod:`imgaccel.proxy.target`), and each request only at DEBUG: a
pod pulling in a loop must not flood the log.
"""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.typedefs import Handler

from imgaccel.errors import (
    Denied,
    MetaUnwritable,
    RegistryError,
    UpstreamError,
    UpstreamUnavailable,
)

log = logging.getLogger(__name__)


class RegistryNotAllowed(Denied):
    """403 DENIED: the ``registries`` setting does not allow the registry a request names."""


_HTTP_CODES = {
    400: "UNSUPPORTED",
    404: "NOT_FOUND",
    405: "UNSUPPORTED",
    413: "SIZE_INVALID",
    414: "NAME_INVALID",
    431: "UNSUPPORTED",
}


def error_response(error: RegistryError, method: str = "GET") -> web.Response:
    headers = {"Docker-Distribution-API-Version": "registry/2.0", **error.headers}
    if method == "HEAD":
        return web.Response(status=error.status, headers=headers)
    return web.json_response(error.body(), status=error.status, headers=headers)


@web.middleware
async def registry_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except MetaUnwritable as exc:
        log.warning(
            "%s %s -> %d %s: %s; clients pull from the origin meanwhile",
            request.method,
            request.path[:300],
            exc.status,
            exc.code,
            exc.message,
        )
        return error_response(exc, request.method)
    except RegistryError as exc:
        log.log(
            logging.DEBUG if isinstance(exc, RegistryNotAllowed) else logging.INFO,
            "%s %s -> %d %s: %s",
            request.method,
            request.path_qs[:300],
            exc.status,
            exc.code,
            exc.message,
        )
        return error_response(exc, request.method)
    except UpstreamError as exc:
        log.warning("%s %s -> origin unavailable: %s", request.method, request.path[:300], exc)
        return error_response(
            UpstreamUnavailable(f"origin registry unavailable: {exc}"), request.method
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "UNSUPPORTED")
        error = RegistryError(exc.reason)
        error.status, error.code = exc.status, code
        return error_response(error, request.method)
