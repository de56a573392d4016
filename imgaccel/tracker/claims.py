"""Cold-blob election: fetch each blob from the origin once for the whole cluster.

``POST /v1/claims/{digest}`` with ``{"node", "role": "node"|"seeder", "registry"?, "repository"?}``
answers ``{"fetch": true, "lease_seconds"}`` to exactly one claimant; the others get
``{"fetch": false, "holder"}`` and long-poll ``GET /v1/metainfo/{digest}?wait=``. When a node
claims and a seeder is alive (and the claim says where the blob comes from), the seeder is
elected instead: the work is queued for it (``GET /v1/seeders/work``) and the node waits too.

A lease ends when the holder publishes the metainfo, releases the claim (``DELETE``, on failure)
or neither renews (``POST .../renew``) nor publishes in time; waiters are then woken so that
one of them can claim again. A seeder that gave up or lapsed is not elected again for that
digest for one lease, so a blob a seeder cannot fetch falls back to the nodes.

Each election is one synchronous read-decide-write on the store, so it is atomic on the loop.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

from aiohttp import web

from imgaccel.tracker.api import ApiError, digest_param, json_body, node_field, text_field
from imgaccel.tracker.metainfo import metainfo_key
from imgaccel.tracker.state import STATE, TrackerState
from imgaccel.tracker.store import Claim, WorkItem

log = logging.getLogger(__name__)

ROLES = frozenset({"node", "seeder"})


@dataclass(frozen=True, slots=True)
class ClaimRequest:
    digest: str
    node: str
    role: str
    registry: str | None = None
    repository: str | None = None


def work_key(seeder: str) -> str:
    """The notifier key woken when work is queued for ``seeder``."""
    return f"work:{seeder}"


def elect(state: TrackerState, req: ClaimRequest) -> dict[str, object]:
    """Decide who fetches ``req.digest``; the reply for the claimant."""
    now, lease = state.now(), state.settings.claim_lease_seconds
    if state.store.get_metainfo(req.digest) is not None:
        return {"fetch": False, "published": True}
    current = state.store.get_claim(req.digest)
    if current is not None and current.expires_at > now:
        if current.holder == req.node:
            return _grant(state, current, now)
        return {"fetch": False, "holder": current.holder, "lease_seconds": current.expires_at - now}
    if current is not None:
        end_claim(state, current, "lapsed")
    seeder = choose_seeder(state, req.digest) if req.role == "node" else None
    if seeder is not None and req.registry and req.repository:
        item = WorkItem(req.digest, req.registry, req.repository)
        state.store.set_claim(Claim(req.digest, seeder, "seeder", now + lease, *_origin(req)))
        state.store.add_work(seeder, item, now)
        state.notifier.notify(work_key(seeder))
        log.info("claim %s: seeder %s fetches for %s", req.digest, seeder, req.node)
        return {"fetch": False, "holder": seeder, "lease_seconds": lease}
    claim = Claim(req.digest, req.node, req.role, now + lease, *_origin(req))
    log.info("claim %s: %s %s fetches", req.digest, req.role, req.node)
    return _grant(state, claim, now)


def _origin(req: ClaimRequest) -> tuple[str | None, str | None]:
    return req.registry, req.repository


def _grant(state: TrackerState, claim: Claim, now: float) -> dict[str, object]:
    lease = state.settings.claim_lease_seconds
    state.store.set_claim(
        Claim(claim.digest, claim.holder, claim.role, now + lease, claim.registry, claim.repository)
    )
    return {"fetch": True, "holder": claim.holder, "lease_seconds": lease}


def choose_seeder(state: TrackerState, digest: str) -> str | None:
    """An alive seeder for ``digest`` by rendezvous hashing (stable, spreads digests)."""
    now = state.now()
    if state.seeder_declined.get(digest, 0.0) > now:
        return None
    alive = state.store.alive_seeders(now - state.settings.seeder_ttl)
    if not alive:
        return None
    return max(alive, key=lambda s: hashlib.sha256(f"{s}\0{digest}".encode()).digest())


def end_claim(state: TrackerState, claim: Claim, why: str) -> None:
    """Forget ``claim`` and wake the digest's waiters so one of them can claim again."""
    state.store.delete_claim(claim.digest)
    if claim.role == "seeder":
        state.seeder_declined[claim.digest] = state.now() + state.settings.claim_lease_seconds
    state.notifier.notify(metainfo_key(claim.digest))
    log.info("claim %s of %s %s", claim.digest, claim.holder, why)


def expire_claims(state: TrackerState) -> int:
    """End every claim whose lease ran out; how many."""
    now = state.now()
    expired = state.store.expired_claims(now)
    for claim in expired:
        end_claim(state, claim, "lapsed")
    for digest in [d for d, until in state.seeder_declined.items() if until <= now]:
        del state.seeder_declined[digest]
    return len(expired)


async def handle_claim(request: web.Request) -> web.Response:
    body = await json_body(request)
    role = body.get("role", "node")
    if not isinstance(role, str) or role not in ROLES:  # a list or dict is not hashable
        raise ApiError(400, "'role' must be 'node' or 'seeder'")
    req = ClaimRequest(
        digest=digest_param(request),
        node=node_field(body),
        role=role,
        registry=text_field(body, "registry", required=False),
        repository=text_field(body, "repository", required=False),
    )
    state = request.app[STATE]
    if role == "seeder":  # a seeder that claims is alive
        state.store.seeder_heartbeat(req.node, state.now())
    return web.json_response(elect(state, req))


def _held_by(state: TrackerState, digest: str, node: str) -> Claim:
    claim = state.store.get_claim(digest)
    if claim is None or claim.holder != node:
        raise ApiError(
            409, "not the holder of this claim", holder=claim.holder if claim is not None else None
        )
    return claim


async def handle_renew(request: web.Request) -> web.Response:
    state = request.app[STATE]
    node = node_field(await json_body(request))
    claim = _held_by(state, digest_param(request), node)
    return web.json_response(_grant(state, claim, state.now()))


async def handle_release(request: web.Request) -> web.Response:
    """``DELETE /v1/claims/{digest}?node=ID``: the holder gives up (its fetch failed)."""
    state = request.app[STATE]
    digest = digest_param(request)
    node = request.query.get("node", "")
    if state.store.get_claim(digest) is not None:
        end_claim(state, _held_by(state, digest, node), "released")
    return web.Response(status=204)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/claims/{digest}", handle_claim)
    app.router.add_post("/v1/claims/{digest}/renew", handle_renew)
    app.router.add_delete("/v1/claims/{digest}", handle_release)
