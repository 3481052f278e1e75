"""Hooks: how a lower floor lets a higher one act, without importing it.

The floors (docs/architecture.md) import downward only. Where a lower floor must trigger a higher one —
"a ticket became ready" → the fleet auto-spawns a worker, "a task lost its holder" → collaboration expires
its hand-offs — the lower floor declares a `Hook` in its `hooks.py` and calls it; the higher floor connects
its receiver once, in its `AppConfig.ready()`. There are no signals and no discovery: the list of hooks is
the `hooks.py` modules, and each receiver is named where it is connected.

Receivers run synchronously inside the caller's transaction (use `transaction.on_commit` in the receiver
for work that must wait for the commit), in connection order; an exception propagates to the caller.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Hook:
    """One named point a lower floor calls. `send(**kwargs)` calls every receiver; `ask(**kwargs)` calls
    the single receiver that answers a question (e.g. "resolve these task ids") and returns its answer."""

    def __init__(self, name: str, description: str):
        self.name = name
        self.description = description
        self._receivers: list[Callable[..., Any]] = []

    def connect(self, receiver: Callable[..., Any]) -> Callable[..., Any]:
        """Register `receiver` (idempotent: `ready()` may run twice in tests)."""
        if receiver not in self._receivers:
            self._receivers.append(receiver)
        return receiver

    def send(self, **arguments) -> None:
        for receiver in list(self._receivers):
            receiver(**arguments)

    def ask(self, **arguments) -> Any:
        if len(self._receivers) != 1:
            raise LookupError(f"hook {self.name!r} needs exactly one receiver, has {len(self._receivers)}")
        return self._receivers[0](**arguments)

    def __repr__(self) -> str:
        return f"<Hook {self.name}: {len(self._receivers)} receiver(s)>"
