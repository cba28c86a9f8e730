"""Async resources kept per event loop (HTTP clients, gRPC channels, Redis clients), and threads."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, Generic, TypeVar

T = TypeVar("T")


async def to_thread_in(pool: Executor, func: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """:func:`asyncio.to_thread` in ``pool`` rather than the loop's default one (``min(32, cores + 4)``
    threads, shared by every caller)."""
    call = functools.partial(contextvars.copy_context().run, func, *args, **kwargs)
    return await asyncio.get_running_loop().run_in_executor(pool, call)


class PerEventLoop(Generic[T]):
    """One ``T`` (async connections) for each running event loop: connections belong to the loop that
    opened them, so a transport used by successive ``asyncio.run()`` calls, or by loops in several
    threads, never lends one across loops. Those of closed loops are dropped when another loop first
    asks: their sockets cannot be closed through a closed loop.

    :param factory: makes the ``T`` of a loop that has none yet.
    """

    def __init__(self, factory: Callable[[], T]) -> None:
        self._factory = factory
        self._items: dict[asyncio.AbstractEventLoop, T] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def get(self) -> T:
        """The running loop's ``T``, made on first use."""
        loop = asyncio.get_running_loop()
        item = self._items.get(loop)
        if item is None:
            with self._lock:
                for ended in [other for other in self._items if other.is_closed()]:
                    del self._items[ended]
                if loop not in self._items:
                    self._items[loop] = self._factory()
                item = self._items[loop]
        return item

    def pop(self) -> T | None:
        """Take the running loop's ``T`` away (to close it)."""
        with self._lock:
            return self._items.pop(asyncio.get_running_loop(), None)

    def clear(self) -> None:
        """Forget every loop's ``T`` (unclosed: a loop's own can only be closed from it)."""
        with self._lock:
            self._items.clear()
