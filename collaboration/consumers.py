"""Websocket doors: live event streams for dashboards (humans, session auth) and agents (bearer token).

Services publish `omoi.event` messages after commit to the Channels groups `workflow.<slug>`,
`ticket.<TKT-n>` and `agent.<agent_id>` (omoi_site.events); these consumers only authenticate, join the
groups the caller may see, filter and forward. They never write and never publish.

Close codes (sent after accepting, so browsers and clients can read them):
4400 bad subscription request · 4401 not authenticated · 4403 not allowed · 4404 unknown workflow/ticket/agent.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
import weakref
from collections import deque
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

from agents.selectors import agent_for_token, agent_get_visible
from collaboration.fanout import event_matches, fanout
from omoi_site.domain import DomainError
from omoi_site.events import EVENT_NAMES, agent_group, events_since, relay, ticket_group, workflow_group
from tickets.selectors import ticket_get, workflow_get

logger = logging.getLogger(__name__)

CLOSE_BAD_REQUEST = 4400
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
MAX_SUBSCRIPTIONS = 50


def _query(scope) -> dict[str, list[str]]:
    raw = scope.get("query_string", b"").decode("latin-1")
    params = parse_qs(raw, keep_blank_values=False)
    # `?workflow=a,b` and `?workflow=a&workflow=b` mean the same.
    return {key: [item.strip() for value in values for item in value.split(",") if item.strip()] for key, values in params.items()}


def _header(scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


class _EventForwarder(AsyncJsonWebsocketConsumer):
    """Joins groups, replays what the client missed (`?since=<event id>`), forwards `omoi.event` messages
    once each (replay and live can overlap), answers pings, sends a heartbeat when quiet and re-checks its
    credentials every few seconds: a revoked or expired token (or an ended session) closes the socket with
    4401.

    Live events do not come through a channel of this socket: the process' fan-out (collaboration.fanout)
    receives each event once and calls `offer()` on every local socket of its groups. So these consumers
    have no channel layer of their own (`channel_layer_alias = None`)."""

    channel_layer_alias = None
    groups_joined: list[str]
    wanted_events: set[str]
    allowed_workflows: set[str] | None  # None: every workflow
    # Whether a live event needs an awaited (database) check before it is sent; see AgentConsumer.
    checks_each_event = False

    async def _join(self, groups: list[str]) -> None:
        if settings.CHANNEL_LAYER_KIND == "in-memory":
            await relay.ensure_started()  # no shared layer: this process relays the event log to its sockets
        self.groups_joined = list(dict.fromkeys(groups))
        self.event_filter = frozenset(self.wanted_events)
        self._recent: deque[str] = deque(maxlen=2048)
        self._recent_set: set[str] = set()
        self._outbox: deque[tuple[dict | None, str]] = deque()
        self._sending = False
        self._fanout = fanout()
        await self._fanout.join(self, self.groups_joined)

    def _since(self) -> int | None:
        """The `since` query argument: the last event id the client saw (None when absent)."""
        values = _query(self.scope).get("since") or []
        if not values:
            return None
        if len(values) != 1 or not values[0].isdigit() or len(values[0]) > 18:
            raise ValueError("since must be the last event id you received (a non-negative integer).")
        return int(values[0])

    async def _since_or_refuse(self) -> int | None | bool:
        """`_since()`, or False after refusing the socket (close 4400) when the value is not an event id."""
        try:
            return self._since()
        except ValueError as error:
            await self._refuse(CLOSE_BAD_REQUEST, str(error))
            return False

    async def _start(self, since: int | None) -> None:
        """After accept: say hello, replay what was missed, then watch the credentials."""
        await self.send_json({"type": "subscribed", **self._hello()})
        if since is not None:
            for message in await _events_since(self.groups_joined, since):
                await self._forward(message)
        _watch_for_this_loop().add(self)

    def _hello(self) -> dict:
        return {"groups": self.groups_joined}

    async def _refuse(self, code: int, reason: str) -> None:
        # Accept first: a close before accept is an HTTP 403 without the code or the reason.
        await self.accept()
        await self.send_json({"type": "error", "code": code, "message": reason})
        await self.close(code=code)

    async def send_json(self, content, close=False):
        self._last_sent = time.monotonic()
        await super().send_json(content, close=close)

    @classmethod
    def recheck_many(cls, sockets: list[_EventForwarder]) -> dict[_EventForwarder, tuple[str | None, object]]:
        """In a worker thread, for all open sockets of this class in the process at once: socket → (None
        while it may stay open, else the reason it is closed; what `_apply_recheck` takes)."""
        return {socket: (None, None) for socket in sockets}

    def _apply_recheck(self, update) -> None:
        """Back on the event loop: take what `recheck_many` found (e.g. the workflows a user may see now)."""

    async def _refuse_open(self, reason: str) -> None:
        await self.send_json({"type": "error", "code": CLOSE_UNAUTHENTICATED, "message": reason})
        await self.close(code=CLOSE_UNAUTHENTICATED)

    async def disconnect(self, code):
        watch = getattr(self, "_watch", None)
        if watch is not None:
            watch.discard(self)
        hub = getattr(self, "_fanout", None)
        if hub is not None:
            self._fanout = None
            await hub.leave(self, self.groups_joined)

    # --- live delivery from the process' fan-out ---------------------------------------------------------

    def offer(self, message: dict, text: str) -> None:
        """A live event for this socket (its `events=` filter already matched): checked and sent in order,
        without awaiting here — a slow client queues behind itself, not in front of the other sockets."""
        if self._fanout is None:
            return
        if not self.checks_each_event:
            if self.allowed_workflows is not None and message.get("workflow") not in self.allowed_workflows:
                return
            if not self._first_delivery(message):
                return
        self._send_in_order(message, text)

    def _send_in_order(self, message: dict | None, text: str) -> None:
        """Queue a frame behind the frames not yet sent (`message` None: a control frame, e.g. a heartbeat)."""
        self._outbox.append((message, text))
        if self._sending:
            return
        self._sending = True
        # Eager: when the server can take the frame at once (the usual case), the send completes right here
        # without scheduling a task; only a socket whose client is slow leaves a task behind.
        sender = asyncio.Task(self._drain_outbox(), loop=asyncio.get_running_loop(), eager_start=True)
        if not sender.done():
            self._sender = sender  # the loop keeps only a weak reference to a task

    async def _drain_outbox(self) -> None:
        try:
            while self._outbox:
                message, text = self._outbox.popleft()
                if message is not None and self.checks_each_event:
                    if not await self._workflow_allowed(message.get("workflow")) or not self._first_delivery(message):
                        continue
                self._last_sent = time.monotonic()
                await self.send(text_data=text)
        except Exception:  # the client went away mid-send: its disconnect handler cleans up
            self._outbox.clear()
        finally:
            self._sending = False

    def interrupted(self) -> None:
        """The live stream of this process broke (channel layer gone): close with 1011 so the client
        reconnects with `?since=` and replays what it missed from the event log."""
        self._fanout = None
        asyncio.get_running_loop().create_task(self.close(code=1011))

    async def receive_json(self, content, **kwargs):
        if isinstance(content, dict) and content.get("type") == "ping":
            await self.send_json({"type": "pong", "id": content.get("id")})
        else:
            await self.send_json({"type": "error", "code": CLOSE_BAD_REQUEST, "message": "send {\"type\": \"ping\"}; this socket is receive-only."})

    async def receive(self, text_data=None, bytes_data=None, **kwargs):
        try:
            await super().receive(text_data=text_data, bytes_data=bytes_data, **kwargs)
        except (ValueError, TypeError):
            await self.send_json({"type": "error", "code": CLOSE_BAD_REQUEST, "message": "messages must be JSON objects."})

    def _first_delivery(self, message: dict) -> bool:
        if message.get("id") is not None:
            key = f"id:{message['id']}"
        else:
            key = hashlib.sha1(json.dumps(message, sort_keys=True, default=str).encode()).hexdigest()
        if key in self._recent_set:
            return False
        if len(self._recent) == self._recent.maxlen:
            self._recent_set.discard(self._recent[0])
        self._recent.append(key)
        self._recent_set.add(key)
        return True

    async def _workflow_allowed(self, slug: str | None) -> bool:
        return self.allowed_workflows is None or slug in self.allowed_workflows

    async def _forward(self, message: dict) -> None:
        """A replayed event (`?since=`): the same checks as a live one."""
        if not event_matches(message.get("event", ""), self.wanted_events):
            return
        if not await self._workflow_allowed(message.get("workflow")):
            return
        if not self._first_delivery(message):
            return
        await self.send_json(message)


class _Watch:
    """Every WEBSOCKET_RECHECK_SECONDS, re-check the credentials of all sockets of one event loop (a web
    process) in ONE worker-thread hop — each distinct session, user and token once — and send a heartbeat to
    those quiet for WEBSOCKET_HEARTBEAT_SECONDS. (A timer, a thread hop and three queries per socket every
    3 s cost 0.28 cores for 200 idle sockets in two processes.)"""

    def __init__(self):
        self._sockets: dict[_EventForwarder, None] = {}
        self._task: asyncio.Task | None = None

    def add(self, socket: _EventForwarder) -> None:
        socket._watch = self
        self._sockets[socket] = None
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="omoi-socket-watch")

    def discard(self, socket: _EventForwarder) -> None:
        self._sockets.pop(socket, None)
        if not self._sockets and self._task is not None:
            self._task.cancel()
            self._task = None

    async def _run(self) -> None:
        while self._sockets:
            await asyncio.sleep(settings.WEBSOCKET_RECHECK_SECONDS)
            sockets = list(self._sockets)
            try:
                verdicts = await _recheck_all(sockets)
            except Exception:  # a database hiccup is not a reason to drop healthy sockets
                logger.warning("websocket credential re-check failed; keeping the sockets", exc_info=True)
                verdicts = {}
            now = time.monotonic()
            for socket in sockets:
                if socket not in self._sockets:
                    continue  # closed meanwhile
                refusal, update = verdicts.get(socket, (None, None))
                if refusal:
                    self._sockets.pop(socket, None)
                    asyncio.get_running_loop().create_task(socket._refuse_open(refusal))
                    continue
                if socket in verdicts:
                    socket._apply_recheck(update)
                if now - getattr(socket, "_last_sent", 0.0) >= settings.WEBSOCKET_HEARTBEAT_SECONDS:
                    socket._last_sent = now
                    socket._send_in_order(None, _HEARTBEAT)


_HEARTBEAT = json.dumps({"type": "heartbeat"})
_watches: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Watch] = weakref.WeakKeyDictionary()


def _watch_for_this_loop() -> _Watch:
    loop = asyncio.get_running_loop()
    watch = _watches.get(loop)
    if watch is None:
        watch = _watches[loop] = _Watch()
    return watch


@database_sync_to_async
def _recheck_all(sockets: list[_EventForwarder]) -> dict:
    by_class: dict[type, list[_EventForwarder]] = {}
    for socket in sockets:
        by_class.setdefault(type(socket), []).append(socket)
    verdicts = {}
    for consumer_class, members in by_class.items():
        verdicts.update(consumer_class.recheck_many(members))
    return verdicts


# --- database reads (through selectors) ------------------------------------------------------------


@database_sync_to_async
def _dashboard_subscription(user, workflows: list[str], tickets: list[str], agents: list[str]):
    """(groups, allowed workflow slugs or None) for a user, or raise DomainError."""
    groups: list[str] = []
    for slug in workflows:
        groups.append(workflow_group(workflow_get(slug=slug, actor=user).slug))
    for ticket_id in tickets:
        groups.append(ticket_group(ticket_get(ticket_id=ticket_id, actor=user, argument="ticket").public_id))
    for agent_id in agents:
        groups.append(agent_group(agent_get_visible(agent_id=agent_id, actor=user, argument="agent").agent_id))
    from collaboration.selectors import visible_workflow_slugs

    return groups, visible_workflow_slugs(actor=user)


@database_sync_to_async
def _agent_for_token(raw_token: str):
    return agent_for_token(raw_token=raw_token)


@database_sync_to_async
def _events_since(groups: list[str], since_id: int) -> list[dict]:
    return events_since(groups=groups, since_id=since_id)


@database_sync_to_async
def _visible_workflow_slugs(actor) -> set[str] | None:
    from collaboration.selectors import visible_workflow_slugs

    return visible_workflow_slugs(actor=actor)


def _sessions_recheck(scopes: list[dict]) -> list[tuple[bool, set[str] | None]]:
    """For each scope: (session still valid, workflow slugs its user may see now); False when the session
    ended or the user was disabled. Each distinct session, and each distinct user, is read once."""
    from django.contrib.auth import get_user_model

    from collaboration.selectors import visible_workflow_slugs

    live_sessions: dict[str, bool] = {}
    for scope in scopes:
        session = scope.get("session")
        if session is not None and session.session_key and session.session_key not in live_sessions:
            live_sessions[session.session_key] = session.exists(session.session_key)
    user_ids = {scope["user"].pk for scope in scopes}
    users = {user.pk: user for user in get_user_model().objects.filter(pk__in=user_ids, is_active=True)}
    visible: dict[int, set[str] | None] = {pk: visible_workflow_slugs(actor=user) for pk, user in users.items()}
    results = []
    for scope in scopes:
        session = scope.get("session")
        if session is None or not live_sessions.get(session.session_key) or scope["user"].pk not in users:
            results.append((False, None))
        else:
            results.append((True, visible[scope["user"].pk]))
    return results


# --- consumers -------------------------------------------------------------------------------------


class DashboardConsumer(_EventForwarder):
    """`/ws/dashboard/?workflow=demo&ticket=TKT-3&agent=worker-1&events=ticket.status_changed,message.*`

    For logged-in users (Django session). Joins the named workflow, ticket and agent groups the user may
    see (staff: every workflow) and forwards the events whose name matches `events` (all when omitted).
    """

    async def connect(self):
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self._refuse(CLOSE_UNAUTHENTICATED, "log in first (/admin/login/); dashboards need a session.")
            return
        query = _query(self.scope)
        workflows, tickets, agents = query.get("workflow", []), query.get("ticket", []), query.get("agent", [])
        if not (workflows or tickets or agents):
            await self._refuse(CLOSE_BAD_REQUEST, "subscribe to at least one workflow=, ticket= or agent=.")
            return
        if len(workflows) + len(tickets) + len(agents) > MAX_SUBSCRIPTIONS:
            await self._refuse(CLOSE_BAD_REQUEST, f"at most {MAX_SUBSCRIPTIONS} subscriptions per socket.")
            return
        self.wanted_events = set(query.get("events", []))
        unknown = sorted(e for e in self.wanted_events if e not in EVENT_NAMES and not e.endswith(".*"))
        if unknown:
            await self._refuse(CLOSE_BAD_REQUEST, f"unknown event name(s) {', '.join(unknown)}; known: {', '.join(sorted(EVENT_NAMES))}.")
            return
        since = await self._since_or_refuse()
        if since is False:
            return
        try:
            groups, self.allowed_workflows = await _dashboard_subscription(user, workflows, tickets, agents)
        except DomainError as error:
            await self._refuse(CLOSE_NOT_FOUND if error.code == "not_found" else CLOSE_FORBIDDEN, error.message)
            return
        await self._join(groups)
        await self.accept()
        await self._start(since)

    def _hello(self) -> dict:
        return {"groups": self.groups_joined, "events": sorted(self.wanted_events)}

    @classmethod
    def recheck_many(cls, sockets):
        verdicts = {}
        for socket, (valid, allowed_workflows) in zip(sockets, _sessions_recheck([s.scope for s in sockets]), strict=True):
            verdicts[socket] = (None, allowed_workflows) if valid else ("your session ended; log in again (/admin/login/).", None)
        return verdicts

    def _apply_recheck(self, update) -> None:
        self.allowed_workflows = update


class AgentConsumer(_EventForwarder):
    """`/ws/agents/<agent_id>/` for an agent: `Authorization: Bearer <token>` or `?token=<token>`.

    Receives everything addressed to it the moment it commits: direct messages, broadcasts, hand-off
    requests and answers, task assignments and releases, ticket changes of tickets assigned to it.
    """

    async def connect(self):
        agent_id = self.scope["url_route"]["kwargs"]["agent_id"]
        token = None
        authorization = _header(self.scope, b"authorization")
        if authorization and authorization.lower().startswith("bearer "):
            token = authorization[7:].strip()
        if not token:
            token = (_query(self.scope).get("token") or [None])[0]
        agent = await _agent_for_token(token) if token else None
        if agent is None:
            await self._refuse(CLOSE_UNAUTHENTICATED, "send a live agent token (Authorization: Bearer … or ?token=…).")
            return
        if agent.agent_id != agent_id:
            await self._refuse(CLOSE_FORBIDDEN, f"this token belongs to {agent.agent_id}; connect to /ws/agents/{agent.agent_id}/.")
            return
        since = await self._since_or_refuse()
        if since is False:
            return
        self.agent, self._token = agent, token
        self.wanted_events = set(_query(self.scope).get("events", []))
        self.allowed_workflows = None  # checked against the agent's current workflows for every event
        self.checks_each_event = True
        await self._join([agent_group(agent.agent_id)])
        await self.accept()
        await self._start(since)

    def _hello(self) -> dict:
        return {"groups": self.groups_joined, "agent_id": self.agent.agent_id}

    async def _workflow_allowed(self, slug: str | None) -> bool:
        # Per event, from the database: an agent removed from a workflow stops getting its events at once.
        return slug in await _visible_workflow_slugs(self.agent)

    @classmethod
    def recheck_many(cls, sockets):
        owners = {token: agent_for_token(raw_token=token) for token in {socket._token for socket in sockets}}
        verdicts = {}
        for socket in sockets:
            agent = owners[socket._token]
            if agent is None or agent.agent_id != socket.agent.agent_id:
                verdicts[socket] = ("your token was revoked or expired; reconnect with a live token.", None)
            else:
                verdicts[socket] = (None, None)
        return verdicts
