"""Single-flight blob fetching: one upstream fetch per digest however many clients ask.

The first request for a missing blob starts a fill task (owned by the fetcher, so a client that
hangs up does not cancel the fetch others wait for); every later request for the same digest joins
the fill and streams from it. A fill is verified before it is committed to the store; if the quota
cannot hold it, it is still streamed (and verified) but not kept.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from imgaccel.cache.fill import Fill
from imgaccel.cache.store import BlobStore
from imgaccel.errors import CacheFull, DigestMismatch, RegistryError, UpstreamUnavailable
from imgaccel.oci.digest import Digest
from imgaccel.proxy.access import AccessGuard, refusal
from imgaccel.proxy.metrics import NodeMetrics
from imgaccel.upstream.blobs import BlobLocation, OriginFetch
from imgaccel.upstream.client import Answer, UpstreamClient
from imgaccel.upstream.config import UpstreamClientSettings

log = logging.getLogger(__name__)

#: Hooks run after a blob is committed (the P2P layer seeds and publishes it).
CommitHook = Callable[[Digest, int], Awaitable[None]]


class BlobFetcher:
    """Owns the fills in progress and the tasks that run them."""

    def __init__(
        self,
        store: BlobStore,
        guard: AccessGuard,
        client: UpstreamClient,
        settings: UpstreamClientSettings,
        metrics: NodeMetrics,
    ) -> None:
        self.store = store
        self.guard = guard
        self.client = client
        self.settings = settings
        self.metrics = metrics
        self.fills: dict[Digest, Fill] = {}
        self.on_commit: list[CommitHook] = []
        self._starting: dict[Digest, asyncio.Future[Fill]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def fill(self, location: BlobLocation) -> Fill:
        """The fill for ``location.digest``: an existing one, or a new one from the origin.

        Raises the client-facing error when the origin refuses (the refusal is this client's:
        another waiter with other credentials tries on its own). A client joining a fill that
        another client started must pass the access guard with its own credentials first.
        """
        digest = location.digest
        for _ in range(3):
            if (existing := self.fills.get(digest)) is not None:
                return await self._join(location, existing)
            starting = self._starting.get(digest)
            if starting is None:
                return await self._start(location)
            try:
                started = await asyncio.shield(starting)
            except RegistryError:
                continue  # the starter was refused; try with our own credentials
            return await self._join(location, started)
        return await self._start(location)

    async def _join(self, location: BlobLocation, fill: Fill) -> Fill:
        await self.guard.check(
            location.registry, location.repo, location.digest, location.client_auth, "blobs"
        )
        return fill

    async def _start(self, location: BlobLocation) -> Fill:
        ready: asyncio.Future[Fill] = asyncio.get_running_loop().create_future()
        self._starting[location.digest] = ready
        task = asyncio.create_task(self._run(location, ready), name=f"fill-{location.digest}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        try:
            return await asyncio.shield(ready)
        finally:
            if self._starting.get(location.digest) is ready:
                del self._starting[location.digest]

    async def _run(self, location: BlobLocation, ready: asyncio.Future[Fill]) -> None:
        try:
            await self._fetch(location, ready)
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(
                    exc
                    if isinstance(exc, RegistryError | Exception)
                    else UpstreamUnavailable("fetch cancelled")
                )
                ready.exception()  # the starter re-raises it; never "never retrieved"
            if not isinstance(exc, Exception):
                raise

    async def _fetch(self, location: BlobLocation, ready: asyncio.Future[Fill]) -> None:
        started = time.monotonic()
        async with self.client.open(
            "GET",
            location.registry,
            location.repo,
            location.path,
            client_auth=location.client_auth,
            kind="blob",
        ) as answer:
            if answer.status != 200:
                raise refusal(answer.status, "blobs", answer.challenge)
            length = answer.headers.get("Content-Length", "")
            if not length.isdigit():
                raise UpstreamUnavailable("origin sent a blob without Content-Length")
            size = int(length)
            self.guard.record(
                location.registry,
                location.repo,
                location.digest,
                used_client_auth=answer.used_client_auth,
                client_auth=location.client_auth,
            )
            keep = self._reserve(location.digest, size)
            fill = Fill(location.digest, self.store.temp_path(), size)
            self.fills[location.digest] = fill
            ready.set_result(fill)
            self.metrics.fills_active.inc()
            try:
                await self._complete(fill, location, answer, keep)
            finally:
                self.metrics.fills_active.dec()
                del self.fills[location.digest]
                if keep:
                    self.store.unreserve(size)
        log.info(
            "fetched %s (%d bytes) from %s in %.2fs",
            location.digest,
            size,
            location.registry,
            time.monotonic() - started,
        )

    def _reserve(self, digest: Digest, size: int) -> bool:
        try:
            self.store.reserve(size)
        except CacheFull as exc:
            log.warning("not caching %s: %s", digest, exc)
            return False
        return True

    async def _complete(
        self, fill: Fill, location: BlobLocation, answer: Answer, keep: bool
    ) -> None:
        hashing = asyncio.create_task(fill.hash_while_filling(), name=f"hash-{fill.digest}")
        try:
            ranges_ok = answer.headers.get("Accept-Ranges", "").lower() == "bytes"
            await OriginFetch(self.client, location, fill, self.settings).run(
                answer.response, ranges_ok
            )
            await fill.verify()
            if keep:
                await asyncio.to_thread(self.store.commit, fill.temp, fill.digest, fill.size)
                fill.committed = True
                self.store.add(fill.digest, fill.size)
        except BaseException as exc:
            if isinstance(exc, DigestMismatch):
                self.metrics.verify_failures.labels("origin").inc()
                log.error("%s", exc)
            else:
                log.warning("fetching %s failed: %s", fill.digest, exc)
            await fill.finish(exc)
            if isinstance(exc, Exception):
                return
            raise
        finally:
            hashing.cancel()
        await fill.finish()
        if fill.committed:
            for hook in self.on_commit:
                try:
                    await hook(fill.digest, fill.size)
                except Exception:
                    log.exception("after-commit hook failed for %s", fill.digest)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
