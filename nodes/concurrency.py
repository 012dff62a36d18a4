"""What concurrent fal node calls share, so a list costs what its requests cost.

When a node's input is a list, ComfyUI calls the node once per item, all at once
on one event loop. Each call is a `Run`; they share:

- one budget of fal requests in flight for the whole process (`budget`), so
  `concurrency` in fal Settings bounds the prompt, not each call: a list of
  1,000 at the default never opens 1,000 requests or holds 1,000 uploads;
- per event loop, one fal client per key and server and one download client
  (`LoopClients`): opening an HTTP client loads the CA bundle, ~30 ms of CPU on
  the loop, which 64 calls would otherwise pay 64 times.

And one rule for waiting with a deadline (`within`), because asyncio's own
`wait_for` can lose a cancel on the Pythons we support.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections import deque
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Awaitable, Callable, Hashable, TypeVar

T = TypeVar("T")


async def within(awaitable: Awaitable[T], timeout_s: float) -> T:
    """`asyncio.wait_for` without its flaw on Python 3.10 and 3.11: there, a task cancelled
    just as the awaited thing finishes gets the result and never sees the cancel
    (CPython gh-86296). An interrupt that landed as a status arrived from fal would then
    leave the request running, and billed, to its end. Here the cancel always wins.

    Raises asyncio.TimeoutError after `timeout_s`. Whether cancelled or out of time, the
    awaited thing is cancelled and waited for, so its own clean-up (a submit still
    learning its request id) is done before this returns."""
    task = asyncio.ensure_future(awaitable)
    try:
        done, _ = await asyncio.wait((task,), timeout=timeout_s)
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    if not done:
        raise asyncio.TimeoutError
    return task.result()


class ProcessBudget:
    """At most `limit` fal requests in flight in this process, counting every call on every
    loop; callers wait first come, first served. Each caller names its own limit (its fal
    Settings' concurrency): it starts only while fewer than that are in flight."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.in_flight = 0
        self._waiting: deque[tuple[int, asyncio.AbstractEventLoop, asyncio.Future]] = deque()

    @asynccontextmanager
    async def slot(self, limit: int) -> AsyncIterator[None]:
        await self._acquire(max(1, int(limit)))
        try:
            yield
        finally:
            self._release()

    async def _acquire(self, limit: int) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            if not self._waiting and self.in_flight < limit:
                self.in_flight += 1
                return
            entry = (limit, loop, loop.create_future())
            self._waiting.append(entry)
        try:
            await entry[2]          # resolved once a slot has been counted for this caller
        except BaseException:
            with self._lock:
                if entry in self._waiting:      # still waiting: leave the line
                    self._waiting.remove(entry)
                    raise
            if entry[2].done() and not entry[2].cancelled():
                self._release()                 # the slot arrived as we were stopped
            raise                               # (a cancelled hand-over releases itself)

    def _release(self) -> None:
        with self._lock:
            self.in_flight -= 1
            while self._waiting and self.in_flight < self._waiting[0][0]:
                _, loop, future = self._waiting.popleft()
                self.in_flight += 1
                try:
                    loop.call_soon_threadsafe(self._hand_over, future)
                except RuntimeError:            # that loop has closed: nobody to hand it to
                    self.in_flight -= 1

    def _hand_over(self, future: asyncio.Future) -> None:
        if future.cancelled():
            self._release()
        else:
            future.set_result(None)


budget = ProcessBudget()


class LoopClients:
    """The clients the calls on one event loop share, closed when the last call ends."""

    def __init__(self) -> None:
        self.users = 0
        self._clients: dict[Hashable, asyncio.Future] = {}
        self._closers: list[Callable[[], Awaitable[None]]] = []

    async def get(self, key: Hashable, open_client: Callable[[], Any],
                  close_client: Callable[[Any], Awaitable[None]]) -> Any:
        """The client for `key`, opened by the first caller that asks for it."""
        future = self._clients.get(key)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._clients[key] = future
            try:
                client = open_client()
                if asyncio.iscoroutine(client):
                    client = await client
            except BaseException as exc:
                del self._clients[key]
                future.set_exception(exc)
                future.exception()              # retrieved: the caller gets it raised
                raise
            future.set_result(client)
            self._closers.append(lambda: close_client(client))
        return await asyncio.shield(future)

    async def close(self) -> None:
        closers, self._closers, self._clients = self._closers, [], {}
        await asyncio.gather(*(close() for close in closers), return_exceptions=True)


_by_loop: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopClients]" = \
    weakref.WeakKeyDictionary()


@asynccontextmanager
async def loop_clients() -> AsyncIterator[LoopClients]:
    """This loop's shared clients, for the duration of one call."""
    loop = asyncio.get_running_loop()
    shared = _by_loop.get(loop)
    if shared is None:
        shared = _by_loop[loop] = LoopClients()
    shared.users += 1
    try:
        yield shared
    finally:
        shared.users -= 1
        if shared.users == 0:
            _by_loop.pop(loop, None)
            await shared.close()
