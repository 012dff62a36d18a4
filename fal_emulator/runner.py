"""FalEmulator: run the aiohttp app on a background thread with its own loop."""

from __future__ import annotations

import asyncio
import threading

from aiohttp import web

from .server import EMULATOR, create_app
from .state import EmulatorState


class FalEmulator:
    """A local fal.ai stand-in listening on ``host:port`` (0 = pick a free port).

    ``start()`` returns once the socket is listening; ``stop()`` returns
    promptly even with stalled handlers or running jobs.
    """

    def __init__(self, state: EmulatorState | None = None, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.state = state or EmulatorState()
        self.host, self.port = host, port
        self.app: web.Application | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    @property
    def server(self):
        """The EmulatorServer (jobs, file store) behind the app."""
        return self.app[EMULATOR]

    def start(self) -> "FalEmulator":
        if self._thread is not None:
            return self
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever,
                                        name="fal-emulator", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=30)
        return self

    async def _start(self) -> None:
        self.app = create_app(self.state)
        # Short shutdown timeout: stalled handlers are woken by server.shutdown()
        # anyway, and a test suite must not wait a minute on teardown.
        self._runner = web.AppRunner(self.app, handle_signals=False, shutdown_timeout=2.0,
                                     access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]

    def stop(self) -> None:
        if self._thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=30)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()
            self._thread = self._loop = None

    async def _stop(self) -> None:
        await self.server.shutdown()
        await self._runner.cleanup()

    def reset(self) -> None:
        """Clear the log, faults and knobs (stored files and jobs are kept)."""
        self.state.reset()

    def __enter__(self) -> "FalEmulator":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
