"""Outages of optional dependencies (Redis), tracked per process so the doors degrade instead of failing.

Redis carries two things that must never take a committed write or an agent's call down with them: the
rate-limit counters (`omoi_site.throttle_cache`) and channel-layer publishes (`omoi_site.events`). When a
Redis operation fails, its `Outage` opens: one warning line is logged, callers skip Redis for
`RETRY_AFTER_SECONDS` (no connect timeout paid per request) and count what they dropped; the first success
after that closes it with one "recovered" line. `/healthz` reports open outages as `degraded` with the reason.
"""

from __future__ import annotations

import logging
import threading
import time

logger = logging.getLogger("omoi_site.outages")

RETRY_AFTER_SECONDS = 5.0
RELAPSE_SECONDS = 30.0


class Outage:
    """The state of one dependency as this process sees it."""

    def __init__(self, name: str, consequence: str):
        self.name = name
        self.consequence = consequence
        self._lock = threading.Lock()
        self.since: float | None = None  # wall-clock time the outage began, None while healthy
        self.reason = ""
        self.dropped = 0  # operations skipped or failed during outages (lifetime of the process)
        self._retry_at = 0.0
        self._recovered_at = -RELAPSE_SECONDS

    def should_skip(self) -> bool:
        """True while the outage is open and the retry pause has not passed (count the skip as dropped)."""
        if self.since is None:
            return False
        with self._lock:
            if time.monotonic() < self._retry_at:
                self.dropped += 1
                return True
            self._retry_at = time.monotonic() + RETRY_AFTER_SECONDS  # let one caller probe
            return False

    def failed(self, error: BaseException) -> None:
        with self._lock:
            self.dropped += 1
            self._retry_at = time.monotonic() + RETRY_AFTER_SECONDS
            first = self.since is None
            if first:
                self.since = time.time()
            self.reason = f"{type(error).__name__}: {error}"[:200]
        if first:
            # connections pooled before a restart fail once each right after recovery: a relapse within
            # RELAPSE_SECONDS is the same outage for the log (still counted and reported by /healthz)
            relapse = time.monotonic() - self._recovered_at < RELAPSE_SECONDS
            logger.log(logging.INFO if relapse else logging.WARNING, "%s unavailable (%s); %s", self.name,
                       self.reason, self.consequence)

    def succeeded(self) -> None:
        if self.since is None:
            return
        with self._lock:
            if self.since is None:
                return
            seconds = time.time() - self.since
            self.since = None
            self._recovered_at = time.monotonic()
            self.reason = ""
        logger.log(logging.WARNING if seconds >= 1 else logging.INFO, "%s recovered after %.1f s (%d operations "
                   "dropped so far)", self.name, seconds, self.dropped)

    def status(self) -> dict:
        return {
            "status": "ok" if self.since is None else "unavailable",
            **({"reason": self.reason, "since_seconds": round(time.time() - self.since, 1)} if self.since else {}),
            "dropped": self.dropped,
        }


redis_throttle = Outage("Redis (rate-limit counters)", "rate limits fall back to per-process counters")
redis_publish = Outage("Redis (channel layer)", "live events are dropped and counted; clients catch up with ?since=")


def open_outages() -> list[Outage]:
    return [outage for outage in (redis_throttle, redis_publish) if outage.since is not None]
