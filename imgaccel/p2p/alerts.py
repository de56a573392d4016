"""libtorrent alerts delivered on the asyncio event loop, without polling.

libtorrent writes a byte to the fd given to ``session.set_alert_fd`` whenever its alert queue goes
from empty to non-empty. The pump hands it the write end of a pipe and watches the read end with
``loop.add_reader``: an idle session costs no CPU, and alerts are handled on the loop thread, so
subscribers may touch futures and events directly. The pipe is drained *before* popping so that
an alert posted during the pop re-arms the reader rather than being missed.

Subscribers register per infohash (torrent alerts) or for every alert (``None``). A subscriber
must be quick and must not raise; an exception is logged and the pump goes on.

Which torrent an alert is about is asked of libtorrent once per torrent: ``info_hashes()`` is a
round trip to libtorrent's network thread (the event loop waits for it, busy with transfers or
not), so the pump remembers each handle's infohash until the torrent's removal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from typing import Any

import libtorrent as lt

log = logging.getLogger(__name__)

Subscriber = Callable[[Any], None]

ALERT_MASK = (
    lt.alert_category.error
    | lt.alert_category.status
    | lt.alert_category.storage
    | lt.alert_category.piece_progress
    | lt.alert_category.connect
    | lt.alert_category.tracker
)


class AlertPump:
    """Reads one session's alerts on the loop and dispatches them to subscribers."""

    def __init__(self, session: Any) -> None:
        self._session = session
        self._by_hash: dict[str, set[Subscriber]] = {}
        # libtorrent hashes and compares handles by their torrent, removed ones too.
        self._infohash_of: dict[Any, str] = {}
        self._everything: set[Subscriber] = set()
        self._fds: tuple[int, int] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        """Start watching; call on the loop thread before anything can post an alert we need."""
        read_fd, write_fd = os.pipe()
        os.set_blocking(read_fd, False)
        os.set_blocking(write_fd, False)
        self._fds = (read_fd, write_fd)
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(read_fd, self._drain)
        self._session.set_alert_fd(write_fd)
        self._drain()  # alerts posted before the fd was set never signalled it

    def stop(self) -> None:
        """Stop watching and close the pipe; no alert is dispatched after this."""
        if self._fds is None:
            return
        if self._loop is not None:
            self._loop.remove_reader(self._fds[0])
        if self._session is not None:
            # libtorrent swaps the notifier under the lock it notifies under, so once this
            # returns it never writes to the old fd again (which the OS may soon reuse).
            self._session.set_alert_fd(-1)
        for fd in self._fds:
            os.close(fd)
        self._fds = None

    @property
    def session(self) -> Any:
        return self._session

    def detach(self) -> Any:
        """Forget the session (so the caller can destroy it) and return it."""
        session, self._session = self._session, None
        return session

    def subscribe(self, infohash: str | None, fn: Subscriber) -> Callable[[], None]:
        """Call ``fn(alert)`` for alerts of torrent ``infohash`` (every alert for ``None``).

        Returns the function that unsubscribes.
        """
        group = self._everything if infohash is None else self._by_hash.setdefault(infohash, set())
        group.add(fn)
        return lambda: self._unsubscribe(infohash, fn)

    def _unsubscribe(self, infohash: str | None, fn: Subscriber) -> None:
        if infohash is None:
            self._everything.discard(fn)
            return
        group = self._by_hash.get(infohash, set())
        group.discard(fn)
        if not group:
            self._by_hash.pop(infohash, None)

    def _drain(self) -> None:
        assert self._fds is not None
        with contextlib.suppress(BlockingIOError):
            while os.read(self._fds[0], 4096):
                pass
        for alert in self._session.pop_alerts():
            self._dispatch(alert)

    def _dispatch(self, alert: Any) -> None:
        targets = list(self._everything)
        infohash = self._infohash(alert)
        if infohash is not None:
            targets += self._by_hash.get(infohash, ())
        for fn in targets:
            try:
                fn(alert)
            except Exception:
                log.exception("alert subscriber failed on %s", type(alert).__name__)

    def _infohash(self, alert: Any) -> str | None:
        """:func:`alert_infohash`, asked of libtorrent once per torrent."""
        if isinstance(alert, lt.torrent_removed_alert):
            self._infohash_of.pop(alert.handle, None)
            return alert_infohash(alert)
        if not isinstance(alert, lt.torrent_alert):
            return None
        handle = alert.handle
        if handle not in self._infohash_of:
            infohash = alert_infohash(alert)
            if infohash is None:
                return None  # the torrent went before we asked: nobody to tell
            self._infohash_of[handle] = infohash
        return self._infohash_of[handle]


def alert_infohash(alert: Any) -> str | None:
    """The v1 infohash (hex) of a torrent alert; ``None`` for session alerts."""
    if isinstance(alert, lt.torrent_removed_alert):
        return str(alert.info_hashes.v1)
    if not isinstance(alert, lt.torrent_alert):
        return None
    handle = alert.handle
    if not handle.is_valid():
        return None
    infohash = handle.info_hashes().v1
    # A torrent removed between the two calls answers with zeros (seen once in CI: a
    # state_changed_alert of a torrent being removed went to the subscriber of "000...").
    return None if infohash.is_all_zeros() else str(infohash)
