"""How many handlers are executing right now, for the runtime's signal handler: a SIGINT or SIGTERM
that arrives while one runs breaks it (`blendwire.runtime.run_until_shutdown`). No bpy here."""

from __future__ import annotations

from types import TracebackType

__all__ = ["HANDLER", "count"]


class _InFlight:
    """`with HANDLER:` around a handler's run (a class, not a generator context manager: it wraps
    every request on the hot path)."""

    __slots__ = ("running",)

    def __init__(self) -> None:
        self.running = 0

    def __enter__(self) -> None:
        self.running += 1

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.running -= 1


HANDLER = _InFlight()


def count() -> int:
    """How many handlers run right now (main thread: 0 or, nested, more)."""
    return HANDLER.running
