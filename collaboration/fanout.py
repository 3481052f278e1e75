"""Process-local websocket fan-out: one channel-layer channel per web process for all of its sockets.

Channels' usual shape is one layer channel per socket: the publisher's `group_send` reaches every socket's
channel and each socket's consumer task receives and dispatches the message itself. With 200 sockets on one
board that is 200 receives per event, each with channels-redis' own tasks (two per wait) and channels'
`await_many_dispatch` task per message — 58 % of a web process' busy time in the fan-out bench.

Here a web process (precisely: an event loop) holds ONE layer channel. That channel joins a group when the
first local socket needs it and leaves when the last one goes, so Redis carries each event once per process
per group. One reader task receives the event, drops the copies that came through a second group
(de-duplicated by event id), encodes the JSON once, evaluates each distinct `events=` filter once, and hands
the text to every local socket of the event's groups (`Listener.offer`, synchronous). Each socket still
applies its own visibility check and per-socket de-duplication (replay and live can overlap) and sends in
order; a slow client queues behind itself, never in front of the others.

The transport is unchanged: channels-redis with `REDIS_URL`, the in-memory layer fed by the event log relay
without it (omoi_site.events). If the layer fails under the reader (Redis gone), every local socket is closed
with 1011: clients reconnect with `?since=<last id>` and replay what they missed from the event log.
"""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from collections import deque
from typing import Protocol

from channels import DEFAULT_CHANNEL_LAYER
from channels.layers import channel_layers, get_channel_layer
from django.conf import settings

from omoi_site.events import event_groups

logger = logging.getLogger(__name__)

RECENT_IDS = 4096  # event ids remembered per process to drop the copy that came through a second group


class Listener(Protocol):
    """A socket of this process (the consumers in collaboration.consumers)."""

    event_filter: frozenset[str]  # event names / `prefix.*` it wants; empty: all

    def offer(self, message: dict, text: str) -> None:
        """Deliver one event (already matched against `event_filter`); must not block."""

    def interrupted(self) -> None:
        """The live stream broke: close so the client reconnects and catches up."""


def event_matches(event: str, wanted: frozenset[str] | set[str]) -> bool:
    """`wanted` holds exact names ('ticket.resolved') or prefixes ('ticket.*'); empty means everything."""
    if not wanted:
        return True
    return event in wanted or any(w.endswith(".*") and event.startswith(w[:-1]) for w in wanted)


class Fanout:
    """The sockets of one event loop by group, and the one layer channel that feeds them."""

    def __init__(self):
        self._members: dict[str, dict[Listener, None]] = {}  # group -> its local sockets (insertion-ordered)
        self._lock = asyncio.Lock()
        self._layer = None
        self._channel: str | None = None
        self._reader: asyncio.Task | None = None
        self._recent: deque = deque(maxlen=RECENT_IDS)
        self._recent_set: set = set()

    async def join(self, listener: Listener, groups: list[str]) -> None:
        """Add a socket to groups; returns once this process' channel is in all of them (so an event
        committed after this returns reaches the socket)."""
        async with self._lock:
            try:
                if self._reader is None:
                    self._layer = _layer_for_a_reader()
                    self._channel = await self._layer.new_channel()
                    self._reader = asyncio.get_running_loop().create_task(
                        self._read(self._layer, self._channel), name="omoi-fanout-reader")
                new_groups = [group for group in groups if group not in self._members]
                await asyncio.gather(*(self._layer.group_add(group, self._channel) for group in new_groups))
            except BaseException:
                if not self._members:
                    await self._stop()
                raise
            for group in groups:
                self._members.setdefault(group, {})[listener] = None

    async def leave(self, listener: Listener, groups: list[str]) -> None:
        """Remove a socket; a group left without local sockets is left by the channel too, and the reader
        stops with the last socket."""
        async with self._lock:
            emptied = []
            for group in groups:
                members = self._members.get(group)
                if members is None or listener not in members:
                    continue
                del members[listener]
                if not members:
                    del self._members[group]
                    emptied.append(group)
            if self._reader is None:
                return
            for group in emptied:
                try:
                    await self._layer.group_discard(group, self._channel)
                except Exception:  # harmless: channels-redis expires the membership of a dead channel
                    logger.warning("group_discard %s failed for %s", group, self._channel, exc_info=True)
            if not self._members:
                await self._stop()

    async def _stop(self) -> None:
        reader, layer, self._reader, self._layer, self._channel = self._reader, self._layer, None, None, None
        if reader is not None and reader is not asyncio.current_task():
            reader.cancel()
            try:
                await reader
            except (asyncio.CancelledError, Exception):
                pass
        await _close_layer(layer)

    async def _read(self, layer, channel: str) -> None:
        try:
            while True:
                self.deliver(await layer.receive(channel))
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.warning("live events interrupted (channel layer receive failed); closing this process' "
                           "sockets so they reconnect and catch up", exc_info=True)
            if self._reader is asyncio.current_task():
                self._interrupt()

    def _interrupt(self) -> None:
        listeners = {listener: None for members in self._members.values() for listener in members}
        self._members.clear()
        layer, self._reader, self._layer, self._channel = self._layer, None, None, None
        # Its pooled connections may be dead (a restarted Redis closes them; each would fail once more):
        # the next socket starts over with a fresh layer instance.
        asyncio.get_running_loop().create_task(_close_layer(layer))
        for listener in listeners:
            listener.interrupted()

    def deliver(self, message: dict) -> None:
        """Hand one layer message to the local sockets of its groups (synchronous: nothing awaits here)."""
        if message.get("type") != "omoi.event":
            return
        key = message.get("id")
        if key is not None:
            if key in self._recent_set:
                return  # the same event through a second group of this process
            if len(self._recent) == self._recent.maxlen:
                self._recent_set.discard(self._recent[0])
            self._recent.append(key)
            self._recent_set.add(key)
        present = [members for group in event_groups(message) if (members := self._members.get(group))]
        if not present:
            return
        targets = tuple(present[0]) if len(present) == 1 else tuple(dict.fromkeys(x for m in present for x in m))
        text = json.dumps(message)  # what AsyncJsonWebsocketConsumer.send_json would send, encoded once
        event = message.get("event", "")
        matches: dict[frozenset[str], bool] = {}
        for listener in targets:
            wanted = listener.event_filter
            matched = matches.get(wanted)
            if matched is None:
                matched = matches[wanted] = event_matches(event, wanted)
            if matched:
                try:
                    listener.offer(message, text)
                except Exception:  # one broken socket must not starve the others
                    logger.exception("delivering event %s to a socket failed", key)


def _layer_for_a_reader():
    """The channel layer a reader receives from. The in-memory layer is the process' own instance (the event
    log relay sends into it); a Redis layer gets an instance of its own per reader, so the reader's pooled
    connections can be dropped after a failure without touching the publisher's."""
    if settings.CHANNEL_LAYER_KIND == "in-memory":
        return get_channel_layer()
    return channel_layers.make_backend(DEFAULT_CHANNEL_LAYER)


async def _close_layer(layer) -> None:
    if layer is None or layer is get_channel_layer() or not hasattr(layer, "close_pools"):
        return
    try:
        await layer.close_pools()
    except Exception:  # closing connections to a Redis that is gone may fail; they are dropped either way
        logger.debug("closing the fan-out reader's layer failed", exc_info=True)


_fanouts: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Fanout] = weakref.WeakKeyDictionary()


def fanout() -> Fanout:
    """The fan-out of the running event loop (one per web process; tests run several loops)."""
    loop = asyncio.get_running_loop()
    hub = _fanouts.get(loop)
    if hub is None:
        hub = _fanouts[loop] = Fanout()
    return hub
