"""Small HTTP servers for the key-egress tests, each on 127.0.0.1 in its own thread.

- Recorder: a stranger's server. Answers 404 to everything and records every request
  with its headers, so a test can count what reached it and whether a key came along.
- FalJsProxy: a server-side proxy speaking fal-js's `proxyUrl` protocol, in front of the
  emulator as fal's stand-in. A request carries the real fal URL in `x-fal-target-url`;
  the proxy checks it against fal's hosts (like @fal-ai/server-proxy's allowed
  patterns), adds its own key and forwards it. Answers have the emulator's URLs
  rewritten to fal's shapes (queue URLs to https://queue.fal.run/...), and file and
  signed-upload URLs to the proxy itself, which stands in for fal's CDN (the tests
  cannot reach fal.media). Requests without the header go to the emulator as they are.
"""

from __future__ import annotations

import asyncio
import threading

import httpx
from aiohttp import web

TARGET = "x-fal-target-url"
# fal URL prefix -> path below the emulator (its URL layout).
FAL_TO_EMULATOR = {
    "https://queue.fal.run/": "queue/",
    "https://fal.run/": "run/",
    "https://rest.fal.ai/storage/upload/initiate?storage_type=fal-cdn-v3": None,   # exact
    "https://api.fal.ai/v1/models/pricing": "v1/models/pricing",
}


class _Threaded:
    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def app(self) -> web.Application:
        raise NotImplementedError

    def __enter__(self):
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    async def _start(self) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def record(self, request: web.Request) -> None:
        self.requests.append({"method": request.method, "url": str(request.url),
                              "headers": {k.lower(): v for k, v in request.headers.items()}})

    def with_key(self, key: str) -> list[dict]:
        return [r for r in self.requests if any(key in v for v in r["headers"].values())]


class Recorder(_Threaded):
    redirect_to: str | None = None     # answer every request with a redirect there

    def app(self) -> web.Application:
        async def anything(request: web.Request) -> web.Response:
            self.record(request)
            await request.read()
            if self.redirect_to:
                raise web.HTTPFound(self.redirect_to)
            return web.json_response({"detail": "Not Found"}, status=404)

        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/{tail:.*}", anything)
        return app


class FalJsProxy(_Threaded):
    def __init__(self, emulator_base: str, key: str, route: str = "api/fal/proxy") -> None:
        super().__init__()
        self.emulator = emulator_base
        self.key = key
        self.route = route

    @property
    def url(self) -> str:
        return self.base_url + self.route

    def _emulator_url(self, target: str) -> str | None:
        for prefix, path in FAL_TO_EMULATOR.items():
            if path is None and target == prefix:
                return self.emulator + "rest/storage/upload/initiate?storage_type=fal-cdn-v3"
            if path is not None and target.startswith(prefix):
                return self.emulator + path + target[len(prefix):]
        return None

    def _rewrite(self, body: bytes) -> bytes:
        text = body.decode("utf-8", "replace")
        text = text.replace(self.emulator + "queue/", "https://queue.fal.run/")
        text = text.replace(self.emulator + "files/", self.base_url + "files/")
        text = text.replace(self.emulator + "rest/storage/upload/put/",
                            self.base_url + "rest/storage/upload/put/")
        return text.encode()

    def app(self) -> web.Application:
        async def handle(request: web.Request) -> web.Response:
            self.record(request)
            body = await request.read()
            target = request.headers.get(TARGET)
            headers = {k: v for k, v in request.headers.items()
                       if k.lower() in ("content-type",) or k.lower().startswith("x-fal-")}
            headers.pop(TARGET, None)
            if target is not None:
                if request.path != "/" + self.route:
                    return web.Response(status=404)
                upstream = self._emulator_url(target)
                if upstream is None:   # like @fal-ai/server-proxy: fal's URLs only
                    return web.Response(status=400, text="Invalid request")
                headers["Authorization"] = f"Key {self.key}"
            else:   # the stand-in CDN: files and signed uploads, no key
                upstream = self.emulator + request.path_qs.lstrip("/")
            async with httpx.AsyncClient(timeout=30) as http:
                answer = await http.request(request.method, upstream, content=body or None,
                                            headers=headers)
            kind = answer.headers.get("content-type", "application/json").split(";")[0]
            body = self._rewrite(answer.content) if kind == "application/json" else answer.content
            return web.Response(status=answer.status_code, body=body, content_type=kind)

        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/{tail:.*}", handle)
        return app
