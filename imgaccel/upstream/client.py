"""The client for origin registries.

``UpstreamClient.open`` sends one registry request the way a careful client does:

* **Auth.** First as the node (its configured credentials, else anonymous, following the bearer
  token challenge); if the origin refuses that and the client sent its own ``Authorization``, the
  request is repeated with the client's credentials (passed through as they are, or a Basic pair
  exchanged for a token at the origin's realm). The answer says which identity succeeded, so the
  cache knows whether the content is public. When both fail, the origin's challenge is kept so the
  mirror can relay it and the client can authenticate.
* **Redirects** (blob storage) are followed by hand; credentials never go to another host.
* **Retries** with exponential backoff on connection errors, timeouts, 5xx and 429, before any
  body byte was used; no single sleep is longer than ``_MAX_RETRY_SLEEP`` whatever the origin's
  ``Retry-After`` says, and all of them together stay within ``_MAX_RETRY_SLEEPS`` (the client
  is waiting all that time).
* **Tokens** are cached per identity; one the origin refuses (other than for a scope it does
  not cover) is dropped and fetched afresh once. Credentials never go to a plain-HTTP realm of an
  HTTPS origin, and a token answer has a total time limit and a size limit.
* **Proxies** (:mod:`imgaccel.upstream.proxy`): the upstream's ``proxy``, else the environment's
  for that URL, for every request of the upstream's, redirects and token realm included. A proxy
  that refuses the node's credentials (407) is not retried.
* **TLS** with the upstream's own context (:mod:`imgaccel.upstream.tls`) for its API, its
  redirects and its token realm. A certificate either side refuses is not retried: it would be
  refused again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import aiohttp
from yarl import URL

from imgaccel.errors import UpstreamError, UpstreamStatus, UpstreamTimeout
from imgaccel.upstream.auth import Challenge, Realms, TokenCache, basic_header, identity
from imgaccel.upstream.config import UpstreamClientSettings, UpstreamSettings
from imgaccel.upstream.proxy import Proxies, Proxy
from imgaccel.upstream.tls import OriginTLS

log = logging.getLogger(__name__)

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_MAX_REDIRECTS = 5
_MAX_RETRY_SLEEP = 30.0
_MAX_RETRY_SLEEPS = 60.0
_MAX_TOKEN_BODY = 1024 * 1024
_PROXY_CREDENTIALS = (
    "(it wants a user and password: give the ones it takes in the proxy URL, "
    "http://user:password@host:port, of the upstream's proxy or HTTPS_PROXY / HTTP_PROXY)"
)
DENIED = frozenset({401, 403})
#: OpenSSL's names of the alerts an origin sends about this node's client certificate: none
#: sent, or one it does not take.
_CLIENT_CERTIFICATE_ALERTS = frozenset(
    {
        "SSLV3_ALERT_BAD_CERTIFICATE",
        "SSLV3_ALERT_CERTIFICATE_EXPIRED",
        "SSLV3_ALERT_CERTIFICATE_REVOKED",
        "SSLV3_ALERT_CERTIFICATE_UNKNOWN",
        "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE",
        "TLSV1_ALERT_UNKNOWN_CA",
        "TLSV13_ALERT_CERTIFICATE_REQUIRED",
    }
)


@dataclass
class Answer:
    """An origin response (body not yet read) and how it was obtained."""

    response: aiohttp.ClientResponse
    used_client_auth: bool
    challenge: str | None = None
    #: Sent with no credentials at all (neither the client's nor the node's configured ones):
    #: only such an answer says the content is public. The node's own credentials make it
    #: readable by this node's clients, never by anyone else's.
    anonymous: bool = False

    @property
    def ranges_ok(self) -> bool:
        """The origin said it serves byte ranges of this resource."""
        return self.response.headers.get("Accept-Ranges", "").lower() == "bytes"

    @property
    def status(self) -> int:
        return self.response.status

    @property
    def headers(self) -> Mapping[str, str]:
        return self.response.headers


@dataclass
class _Attempt:
    """One identity's try at a request."""

    authorization: str | None
    who: str  # token-cache identity
    basic_for_token: str | None  # Basic credentials to trade at a bearer realm
    extra: dict[str, str] = field(default_factory=dict)


Lookup = Callable[[str], UpstreamSettings]
Observer = Callable[[str, float], None]
Reporter = Callable[[str, "str | None"], None]


class UpstreamClient:
    """Requests to origin registries (see the module docstring)."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        upstream_for: Lookup,
        settings: UpstreamClientSettings,
        observe: Observer | None = None,
        tls: OriginTLS | None = None,
        proxies: Proxies | None = None,
        report: Reporter | None = None,
    ) -> None:
        """``tls``: the upstreams' contexts, loaded at start (default: built on first use);
        ``proxies``: which proxy each request goes through (default: none); ``report``: told
        how each request of :meth:`open` ended, ``(registry, None)`` when the origin answered
        (any status under 500 but 429), ``(registry, why)`` when it could not be reached or
        failed (after the retries)."""
        self._report = report or (lambda registry, error: None)
        self._session = session
        self._tls = tls or OriginTLS()
        self._proxies = proxies or Proxies()
        self._upstream_for = upstream_for
        self._settings = settings
        self._observe = observe or (lambda kind, seconds: None)
        self._tokens = TokenCache()
        self._realms = Realms()
        self._timeout = aiohttp.ClientTimeout(
            total=None,
            connect=settings.connect_timeout_seconds,
            sock_connect=settings.connect_timeout_seconds,
            sock_read=settings.read_timeout_seconds,
        )
        # A token answer is small: a realm that trickles one byte at a time must not hold the
        # request until the client gives up, as a blob body legitimately may.
        self._token_timeout = aiohttp.ClientTimeout(
            total=settings.connect_timeout_seconds + settings.read_timeout_seconds,
            connect=settings.connect_timeout_seconds,
            sock_connect=settings.connect_timeout_seconds,
            sock_read=settings.read_timeout_seconds,
        )

    async def challenge(self, registry: str) -> str | None:
        """The origin's ``WWW-Authenticate`` to an anonymous ``GET /v2/``; None if it sent none
        (an open registry) or could not be reached (the mirror must still answer from cache)."""
        upstream = self._upstream_for(registry)
        try:
            response = await self._follow("GET", f"{upstream.url}/v2/", upstream, {}, None)
        except (aiohttp.ClientError, TimeoutError, UpstreamError) as exc:  # a proxy's 407
            log.info("cannot ask %s for its challenge: %s", registry, exc)
            return None
        response.release()
        return response.headers.get("WWW-Authenticate") if response.status == 401 else None

    def proxy_for(self, registry: str, url: URL) -> Proxy | None:
        """The proxy a request of ``registry``'s traffic to ``url`` goes through, if any."""
        return self._proxies.for_url(url, self._upstream_for(registry))

    @contextlib.asynccontextmanager
    async def open(
        self,
        method: str,
        registry: str,
        repo: str,
        path: str,
        *,
        client_auth: str | None = None,
        headers: Mapping[str, str] | None = None,
        query: Mapping[str, str] | None = None,
        kind: str = "request",
    ) -> AsyncIterator[Answer]:
        """Send ``method`` to ``<origin>/v2/<repo>/<path>``, with ``query`` (its values
        percent-encoded here) if given; yield the answer (see module doc)."""
        upstream = self._upstream_for(registry)
        url = f"{upstream.url}/v2/{repo}/{path}"
        if query:
            url += "?" + urlencode(query)
        scope = f"repository:{repo}:pull"
        node_basic = (
            basic_header(upstream.username, upstream.password.get_secret_value())
            if upstream.username and upstream.password
            else None
        )
        # The node's identity names its credentials: two upstreams with different accounts behind
        # one realm and service must not share tokens.
        node_who = f"node-{identity(node_basic)}" if node_basic else "anonymous"
        attempts = [_Attempt(None, node_who, node_basic)]
        if client_auth:
            client_basic = client_auth if client_auth.lower().startswith("basic ") else None
            attempts.append(_Attempt(client_auth, identity(client_auth), client_basic))
        started = time.monotonic()
        answer: Answer | None = None
        try:
            try:
                for number, attempt in enumerate(attempts):
                    if answer is not None:
                        answer.response.release()
                    answer = await self._try(method, url, scope, upstream, attempt, headers or {})
                    answer.used_client_auth = number > 0
                    answer.anonymous = number == 0 and node_basic is None
                    if answer.status not in DENIED:
                        break
            except UpstreamError as exc:
                self._report(registry, str(exc))
                raise
            assert answer is not None
            self._observe(kind, time.monotonic() - started)
            failed = answer.status >= 500 or answer.status == 429  # after the retries
            self._report(registry, f"answered {answer.status}" if failed else None)
            yield answer
        finally:
            if answer is not None:
                answer.response.release()

    async def _try(
        self,
        method: str,
        url: str,
        scope: str,
        upstream: UpstreamSettings,
        attempt: _Attempt,
        headers: Mapping[str, str],
    ) -> Answer:
        """One identity: send, and on a challenge authenticate and send once more."""
        auth = self._upfront(url, scope, attempt) or attempt.authorization
        response = await self._send(method, url, upstream, headers, auth)
        if response.status != 401:
            return Answer(response, False)
        raw_challenge = response.headers.get("WWW-Authenticate")
        challenge = Challenge.parse(raw_challenge)
        retry_auth = await self._answer_challenge(challenge, scope, upstream, attempt, url, auth)
        if retry_auth is None or retry_auth == auth:
            return Answer(response, False, raw_challenge)
        response.release()
        response = await self._send(method, url, upstream, headers, retry_auth)
        challenge_header = response.headers.get("WWW-Authenticate") or raw_challenge
        return Answer(response, False, challenge_header if response.status == 401 else None)

    async def _answer_challenge(
        self,
        challenge: Challenge | None,
        scope: str,
        upstream: UpstreamSettings,
        attempt: _Attempt,
        url: str,
        refused: str | None,
    ) -> str | None:
        """The ``Authorization`` to send again after ``challenge``; None if there is none.
        ``refused`` is the one the challenged request carried."""
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            self._remember_realm(url, challenge)
            return attempt.basic_for_token or attempt.authorization
        if challenge.scheme != "bearer" or not challenge.realm:
            return None
        if attempt.authorization and not attempt.basic_for_token:
            return attempt.authorization  # the client's own bearer token: pass it through
        token = await self._fetch_token(challenge, scope, upstream, attempt, refused)
        if token is None:
            return None
        self._remember_realm(url, challenge)
        return f"Bearer {token}"

    async def _fetch_token(
        self,
        challenge: Challenge,
        scope: str,
        upstream: UpstreamSettings,
        attempt: _Attempt,
        refused: str | None,
    ) -> str | None:
        realm = challenge.realm or ""
        service = challenge.params.get("service", "")
        key = (realm, service, scope, attempt.who)
        cached = self._tokens.get(key)
        # If the origin refused this very token, the realm rotated its key or revoked it, and the
        # cache would hand it out until it expires: fetch a new one. Unless the origin says the
        # token is good but does not cover the scope: a new one for the same identity would not
        # either, and fetching it would cost a round trip per request to a private repository.
        insufficient = challenge.params.get("error") == "insufficient_scope"
        if cached and (f"Bearer {cached}" != refused or insufficient):
            return cached
        self._tokens.discard(key)
        if attempt.basic_for_token and _in_clear(upstream.url, realm):
            log.warning(
                "not sending %s's credentials to %s: a plain-HTTP realm of the HTTPS origin %s",
                attempt.who,
                realm,
                upstream.url,
            )
            return None
        body = await self._token_answer(realm, service, scope, upstream, attempt)
        if body is None:
            return None
        token = body.get("token") or body.get("access_token")
        if not isinstance(token, str):
            return None
        self._tokens.put(key, token, body.get("expires_in"))
        return token

    async def _token_answer(
        self, realm: str, service: str, scope: str, upstream: UpstreamSettings, attempt: _Attempt
    ) -> dict[str, Any] | None:
        """The realm's JSON object; None if it refused, could not be reached or sent none.
        Raises UpstreamTimeout past the time limit, UpstreamError past ``_MAX_TOKEN_BODY``."""
        params = {"scope": scope}
        if service:
            params["service"] = service
        headers = {"Authorization": attempt.basic_for_token} if attempt.basic_for_token else {}
        started = time.monotonic()
        proxy = self._proxies.for_url(URL(realm), upstream)
        try:
            async with self._session.get(
                realm,
                params=params,
                timeout=self._token_timeout,
                ssl=self._tls.context(upstream),
                **_through(proxy, URL(realm), headers),
            ) as resp:
                _check_proxy_answer(resp, proxy)
                if resp.status != 200:
                    log.info(
                        "token realm %s refused %s for %s: %d",
                        realm,
                        attempt.who,
                        scope,
                        resp.status,
                    )
                    return None
                raw = await _read_at_most(resp, _MAX_TOKEN_BODY)
        except TimeoutError as exc:
            raise UpstreamTimeout(f"token realm {realm} timed out") from exc
        except (aiohttp.ClientError, ValueError) as exc:
            refusal = _tls_refusal(exc) or _proxy_refusal(exc, proxy)
            log.warning("token realm %s failed: %s", realm, refusal or _via(exc, proxy))
            return None
        finally:
            self._observe("token", time.monotonic() - started)
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError) as exc:  # RecursionError: "[[[[..." a MiB deep
            log.warning("token realm %s sent no JSON: %s", realm, exc.__class__.__name__)
            return None
        return body if isinstance(body, dict) else None

    def _remember_realm(self, url: str, challenge: Challenge) -> None:
        self._realms.remember(str(URL(url).origin()), challenge)

    def _upfront(self, url: str, scope: str, attempt: _Attempt) -> str | None:
        """What to send before being challenged, from the challenge this origin sent last: the
        Basic pair for a Basic origin, a cached token for a bearer one (saves a 401 per request)."""
        challenge = self._realms.get(str(URL(url).origin()))
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            return attempt.basic_for_token
        token = self._tokens.get(
            (challenge.realm or "", challenge.params.get("service", ""), scope, attempt.who)
        )
        return f"Bearer {token}" if token else None

    async def _send(
        self,
        method: str,
        url: str,
        upstream: UpstreamSettings,
        headers: Mapping[str, str],
        authorization: str | None,
    ) -> aiohttp.ClientResponse:
        """Send with retries and hand-followed redirects."""
        backoff = self._settings.backoff_seconds
        slept = 0.0
        for attempt in range(self._settings.retries + 1):
            try:
                response = await self._follow(method, url, upstream, headers, authorization)
            except aiohttp.InvalidURL as exc:  # sending it again would not make it valid
                raise UpstreamError(f"{method} {url} failed: {exc}") from exc
            except (aiohttp.ClientError, TimeoutError) as exc:
                proxy = self._proxies.for_url(URL(url), upstream)
                refusal = _tls_refusal(exc) or _proxy_refusal(exc, proxy)
                if refusal is not None:  # would be refused again
                    raise UpstreamError(f"{method} {url} failed: {refusal}") from exc
                delay = self._retry_delay(attempt, slept, backoff)
                if delay is None:
                    if isinstance(exc, TimeoutError):
                        raise UpstreamTimeout(f"{method} {url} timed out") from exc
                    raise UpstreamError(f"{method} {url} failed: {_via(exc, proxy)}") from exc
                log.info("retrying %s %s after %s", method, url, exc.__class__.__name__)
            else:
                if response.status not in _RETRY_STATUSES:
                    return response
                delay = self._retry_delay(attempt, slept, max(backoff, _retry_after(response)))
                if delay is None:
                    return response
                response.release()
                log.info("retrying %s %s after status %d", method, url, response.status)
            await asyncio.sleep(delay)
            slept += delay
            # Only the backoff doubles: a Retry-After is the origin's wish for this one wait.
            backoff = min(backoff * 2, _MAX_RETRY_SLEEP)
        raise AssertionError("unreachable")

    def _retry_delay(self, attempt: int, slept: float, wanted: float) -> float | None:
        """How long to wait before the next try; None for no next try (the last one was the
        last allowed, or waiting would take the sleeps past ``_MAX_RETRY_SLEEPS``)."""
        delay = min(wanted, _MAX_RETRY_SLEEP)
        if attempt == self._settings.retries or slept + delay > _MAX_RETRY_SLEEPS:
            return None
        return delay

    async def _follow(
        self,
        method: str,
        url: str,
        upstream: UpstreamSettings,
        headers: Mapping[str, str],
        authorization: str | None,
    ) -> aiohttp.ClientResponse:
        try:
            return await self._hops(method, url, upstream, headers, authorization)
        except aiohttp.ClientError:
            raise
        except ValueError as exc:
            # yarl and aiohttp refuse some URLs with a bare ValueError rather than InvalidURL: a
            # port out of range, a host the IDNA codec rejects (an empty or 64-character label:
            # UnicodeError), in the URL asked for or in a redirect's Location.
            raise aiohttp.InvalidUrlClientError(url, f"{exc.__class__.__name__}: {exc}") from exc

    async def _hops(
        self,
        method: str,
        url: str,
        upstream: UpstreamSettings,
        headers: Mapping[str, str],
        authorization: str | None,
    ) -> aiohttp.ClientResponse:
        """Send, following up to ``_MAX_REDIRECTS`` redirects by hand."""
        origin = URL(url).origin()
        target = URL(url, encoded=False)
        for _ in range(_MAX_REDIRECTS + 1):
            sent = dict(headers)
            if authorization and target.origin() == origin:
                sent["Authorization"] = authorization
            proxy = self._proxies.for_url(target, upstream)
            response = await self._session.request(
                method,
                target,
                allow_redirects=False,
                timeout=self._timeout,
                ssl=self._tls.context(upstream),
                **_through(proxy, target, sent),
            )
            _check_proxy_answer(response, proxy)
            location = response.headers.get("Location")
            if response.status not in _REDIRECTS or not location:
                return response
            response.release()
            target = target.join(URL(location))
            if method == "POST":
                method = "GET"
        raise UpstreamStatus(310, f"too many redirects from {url}")


def _retry_after(response: aiohttp.ClientResponse) -> float:
    """The origin's ``Retry-After`` in seconds; 0 if it sent none, or a date."""
    value = response.headers.get("Retry-After", "")
    return float(value) if value.isascii() and value.isdigit() else 0.0  # "²".isdigit() too


def _tls_refusal(exc: BaseException) -> str | None:
    """What is wrong when either side of a TLS handshake refused the other's certificate (no
    retry changes that); None for any other failure."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        error = exc.certificate_error
        reason = getattr(error, "verify_message", None) or error
        return (
            f"certificate verify failed for {exc.host}:{exc.port}: {reason} (if a private CA "
            "signed its certificate, give that CA in the upstream's ca_file)"
        )
    cause = exc.__cause__
    alert = getattr(cause, "reason", None) if isinstance(cause, ssl.SSLError) else None
    if alert in _CLIENT_CERTIFICATE_ALERTS:
        return (
            f"the origin refused this node's TLS client certificate ({alert}): give the "
            "upstream a client_cert and client_key the origin accepts"
        )
    return None


def _through(proxy: Proxy | None, url: URL, headers: dict[str, str]) -> dict[str, Any]:
    """aiohttp's arguments for ``headers`` sent to ``url`` through ``proxy``. Its credentials:
    aiohttp sends ``proxy_headers`` only with a ``CONNECT``, so a plain-HTTP request carries
    them itself."""
    if proxy is None:
        return {"headers": headers}
    if url.scheme == "https":
        return {"headers": headers, "proxy": proxy.url, "proxy_headers": proxy.headers}
    return {"headers": headers | (proxy.headers or {}), "proxy": proxy.url}


def _check_proxy_answer(response: aiohttp.ClientResponse, proxy: Proxy | None) -> None:
    """A plain-HTTP request's proxy answers 407 itself when it wants other credentials than
    the node's: an UpstreamError that says so (not retried), never relayed as the origin's."""
    if proxy is not None and response.status == 407:
        response.release()
        raise UpstreamError(f"the proxy {proxy} refused the node: 407 {_PROXY_CREDENTIALS}")


def _proxy_refusal(exc: BaseException, proxy: Proxy | None) -> str | None:
    """What is wrong when the proxy refused to open a tunnel (no retry changes that): 407 for
    no or wrong credentials (tinyproxy: 401 for wrong ones), 403 for a target its rules
    forbid; None for any other failure."""
    if proxy is None or not isinstance(exc, aiohttp.ClientHttpProxyError):
        return None
    if exc.status in (401, 407):
        return f"the proxy {proxy} refused the tunnel: {exc.status} {_PROXY_CREDENTIALS}"
    if exc.status == 403:
        return f"the proxy {proxy} refused the tunnel: 403 {exc.message} (its rules forbid it)"
    return None


def _via(exc: BaseException, proxy: Proxy | None) -> str:
    """``exc`` as a message, naming the proxy the request went through."""
    if proxy is None:
        return str(exc)
    if isinstance(exc, aiohttp.ClientHttpProxyError):
        return f"the proxy {proxy} answered {exc.status} {exc.message}"
    if isinstance(exc, aiohttp.ClientProxyConnectionError):
        return f"cannot connect to the proxy {proxy}: {exc.os_error}"
    return f"{exc} (through the proxy {proxy})"


def _in_clear(origin_url: str, realm: str) -> bool:
    """Credentials for an HTTPS origin would cross the network unencrypted to ``realm``."""
    return origin_url.lower().startswith("https://") and not realm.lower().startswith("https://")


async def _read_at_most(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The body; UpstreamError if it is, or says it is, longer than ``limit`` bytes."""
    too_long = f"{response.url} sent more than {limit} bytes"
    if response.content_length is not None and response.content_length > limit:
        raise UpstreamError(too_long)
    body = bytearray()
    async for chunk in response.content.iter_chunked(64 * 1024):
        body += chunk
        if len(body) > limit:
            raise UpstreamError(too_long)
    return bytes(body)
