"""A token server in the Docker token-auth style, for registries that need real bearer auth.

``GET /token?service=S&scope=repository:NAME:pull[,push]`` with optional Basic credentials answers
``{"token": JWT, "access_token": JWT, "expires_in": ..., "issued_at": ...}``. Wrong credentials are
a 401; right ones (or none) get a token whose ``access`` holds what the account may do among what
was asked: an account's grants, plus ``pull`` on the public repositories for everyone. The JWT is
ES256-signed and carries its self-signed certificate in ``x5c``; the same certificate, written to
``cert_path``, is the registry's ``auth.token.rootcertbundle``.

Every request is recorded (account, scopes, User-Agent) so tests can count who asked for tokens.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import fnmatch
import json
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from imgaccel.testing.procs import Service

SERVICE = "imgaccel-test"
ISSUER = "imgaccel-test-issuer"

#: account -> repository pattern (fnmatch) -> actions.
Grants = Mapping[str, Mapping[str, Iterable[str]]]


@dataclass(frozen=True)
class TokenRequest:
    """One request the token server answered."""

    account: str  # "" for anonymous
    scopes: tuple[str, ...]
    status: int
    user_agent: str


@dataclass(frozen=True)
class Access:
    type: str
    name: str
    actions: tuple[str, ...]

    def as_json(self) -> dict[str, object]:
        return {"type": self.type, "name": self.name, "actions": list(self.actions)}


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class SigningKey:
    """A P-256 key and a self-signed certificate for it."""

    def __init__(self, common_name: str = ISSUER) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def jwt(self, claims: Mapping[str, object]) -> str:
        """An ES256 JWS (compact form) of ``claims`` with the certificate in ``x5c``."""
        der = self.cert.public_bytes(serialization.Encoding.DER)
        header = {"typ": "JWT", "alg": "ES256", "x5c": [base64.b64encode(der).decode()]}
        signing_input = (
            f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        )
        r, s = decode_dss_signature(
            self.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        )
        # JWS wants the raw r || s, 32 bytes each for P-256, not DER.
        return f"{signing_input}.{_b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


@dataclass
class TokenServer(Service):
    """The token server on loopback, port 0 (use as an async context manager).

    ``users`` maps account -> password; ``grants`` maps account -> repository pattern -> actions;
    ``public`` names repositories (patterns) anyone may pull, even anonymously.
    """

    root: Path
    users: Mapping[str, str] = field(default_factory=dict)
    grants: Grants = field(default_factory=dict)
    public: Iterable[str] = ()
    service: str = SERVICE
    issuer: str = ISSUER
    expires_in: int = 300
    requests: list[TokenRequest] = field(default_factory=list)
    #: While set to an unset Event, token requests wait for it (to hold a client mid-handshake);
    #: ``waiting`` counts those held.
    gate: asyncio.Event | None = None
    waiting: int = 0
    _key: SigningKey | None = None
    _runner: web.AppRunner | None = None
    _port: int = 0

    @property
    def cert_path(self) -> Path:
        return self.root / "token-cert.pem"

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self._port}/token"

    def registry_auth(self) -> dict[str, Any]:
        """The registry's ``auth:`` section for tokens from this server."""
        return {
            "token": {
                "realm": self.realm,
                "service": self.service,
                "issuer": self.issuer,
                "rootcertbundle": str(self.cert_path),
            }
        }

    def requests_from(self, user_agent_prefix: str) -> list[TokenRequest]:
        return [r for r in self.requests if r.user_agent.startswith(user_agent_prefix)]

    def token_for(self, account: str | None, scopes: Iterable[str]) -> str:
        """A token as the server would issue it to ``account`` (None: anonymous)."""
        return self._key_or_fail().jwt(self._claims(account or "", list(scopes)))

    async def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self._key = SigningKey(self.issuer)
        self.cert_path.write_bytes(self._key.cert_pem())
        app = web.Application()
        app.router.add_get("/token", self._token)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- the endpoint ---------------------------------------------------------------------------

    async def _token(self, request: web.Request) -> web.Response:
        scopes = tuple(request.query.getall("scope", []))
        user_agent = request.headers.get("User-Agent", "")
        account = self._authenticate(request.headers.get("Authorization", ""))
        if account is None:
            self.requests.append(TokenRequest("?", scopes, 401, user_agent))
            return web.json_response(
                {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]},
                status=401,
                headers={"WWW-Authenticate": f'Basic realm="{self.service}"'},
            )
        self.requests.append(TokenRequest(account, scopes, 200, user_agent))
        if self.gate is not None:
            self.waiting += 1
            try:
                await self.gate.wait()
            finally:
                self.waiting -= 1
        token = self._key_or_fail().jwt(self._claims(account, list(scopes)))
        issued = datetime.datetime.now(datetime.UTC).isoformat()
        body = {
            "token": token,
            "access_token": token,
            "expires_in": self.expires_in,
            "issued_at": issued,
        }
        return web.json_response(body)

    def _authenticate(self, header: str) -> str | None:
        """The account the Basic credentials name ("" when none were sent); None if wrong."""
        scheme, _, value = header.partition(" ")
        if not header:
            return ""
        if scheme.lower() != "basic":
            return None
        try:
            user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        return user if user in self.users and self.users[user] == password else None

    def _claims(self, account: str, scopes: list[str]) -> dict[str, object]:
        now = int(time.time())
        return {
            "iss": self.issuer,
            "sub": account,
            "aud": self.service,
            "exp": now + self.expires_in,
            "nbf": now - 10,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": [a.as_json() for a in self._granted(account, scopes)],
        }

    def _granted(self, account: str, scopes: list[str]) -> list[Access]:
        granted = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, wanted = rest.rpartition(":")
            if kind != "repository" or not name:
                continue
            allowed = self._allowed(account, name)
            actions = tuple(a for a in wanted.split(",") if a in allowed)
            if actions:
                granted.append(Access(kind, name, actions))
        return granted

    def _allowed(self, account: str, repo: str) -> set[str]:
        allowed = {"pull"} if any(fnmatch.fnmatchcase(repo, p) for p in self.public) else set()
        for pattern, actions in self.grants.get(account, {}).items():
            if account and fnmatch.fnmatchcase(repo, pattern):
                allowed.update(actions)
        return allowed

    def _key_or_fail(self) -> SigningKey:
        if self._key is None:
            raise RuntimeError("the token server is not started")
        return self._key
