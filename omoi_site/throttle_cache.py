"""The rate-limit cache: Redis (shared by every process) that falls back to process memory while Redis is down.

A rate limit is a courtesy, not a lock: when Redis cannot be reached every MCP and REST call must still be
served, so the counters fail open to a per-process `LocMemCache` (limits then hold per process, not per
fleet) with one warning line (`omoi_site.outages.redis_throttle`); Redis is probed again every few seconds
and used as soon as it answers.
"""

from __future__ import annotations

from django.core.cache.backends.locmem import LocMemCache
from django.core.cache.backends.redis import RedisCache

from omoi_site.outages import redis_throttle

_FAIL_OPEN_OPERATIONS = ("get", "set", "add", "delete", "get_many", "set_many", "delete_many", "incr", "touch",
                         "has_key", "clear")


class FailOpenRedisCache(RedisCache):
    """`RedisCache` whose operations use a local fallback while Redis is unavailable."""

    def __init__(self, server, params):
        options = dict(params.get("OPTIONS") or {})
        # fail fast: a Redis that does not answer must cost a request milliseconds, not redis-py's defaults
        options.setdefault("socket_connect_timeout", 0.5)
        options.setdefault("socket_timeout", 1.0)
        super().__init__(server, {**params, "OPTIONS": options})
        self._fallback = LocMemCache(f"omoios-throttle-fallback-{id(self)}", {"TIMEOUT": params.get("TIMEOUT", 300)})


def _fail_open(name: str):
    redis_operation = getattr(RedisCache, name)

    def operation(self, *args, **kwargs):
        if redis_throttle.should_skip():
            return getattr(self._fallback, name)(*args, **kwargs)
        try:
            result = redis_operation(self, *args, **kwargs)
        except Exception as error:  # redis-py's ConnectionError/TimeoutError, and whatever a broken pool raises
            if isinstance(error, (ValueError, TypeError)):  # our own misuse, not an outage
                raise
            redis_throttle.failed(error)
            return getattr(self._fallback, name)(*args, **kwargs)
        redis_throttle.succeeded()
        return result

    operation.__name__ = name
    operation.__doc__ = f"`{name}` on Redis, or on the per-process fallback while Redis is down."
    return operation


for _name in _FAIL_OPEN_OPERATIONS:
    setattr(FailOpenRedisCache, _name, _fail_open(_name))
