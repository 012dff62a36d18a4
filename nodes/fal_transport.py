"""How the pack reaches fal: which hosts, and HTTP clients that are cheap to open.

Opening an httpx client loads the CA certificates (~30 ms of CPU, on the event
loop). fal-client opens one for every upload, so a batch of 8 spent a quarter
of a second there; the pack shares one certificate context and gives fal-client
one upload client per run.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

from . import egress
from .addresses import tls_context


def http_client(**options: Any):
    """An httpx.AsyncClient that verifies certificates like httpx's default, opened cheaply."""
    import httpx
    quiet_httpx()
    return httpx.AsyncClient(verify=tls_context(), **options)


def quiet_httpx() -> None:
    """httpx logs every request at INFO: a console line per status poll, and a line naming
    fal's host for a request the egress transport sent elsewhere. Unless the user
    configured that logger, keep only its warnings. (Called as clients open: never at
    import.)"""
    httpx_log = logging.getLogger("httpx")
    if httpx_log.level == logging.NOTSET:
        httpx_log.setLevel(logging.WARNING)


# The key fal-client holds when a proxy adds the real one: never sent (EgressTransport
# strips Authorization on the way to a proxy), but fal-client wants some key.
PROXY_PLACEHOLDER_KEY = "proxy-adds-the-key"


def fal_client_for_run(key: str, destination: Any = None):
    """A fal_client.AsyncClient for one run, whose every HTTP client sends through
    egress.EgressTransport for `destination` (fal's hosts when None). fal-client's
    module-wide hosts are never changed; uploads share one HTTP client per run."""
    import fal_client
    import httpx
    from asyncstdlib import cached_property as async_cached_property
    from fal_client import client as fc


    quiet_httpx()
    destination = destination or egress.FAL

    def transport() -> httpx.AsyncBaseTransport:
        # fal's own hosts keep fal-client's fallback to its backup domains.
        inner = fc.AsyncBackupDomainTransport(
            transport=httpx.AsyncHTTPTransport(verify=tls_context())) \
            if destination.kind == "fal" else None
        return egress.egress_transport(destination, inner)

    class RunTokenManager(fc.AsyncCDNTokenManager):
        """fal-client's token manager opens a bare httpx client; this one sends through
        the run's transport, to fal's own URL (whatever fal-client's globals say)."""

        def __init__(self, auth: Any) -> None:
            super().__init__(auth)
            self._url = egress.FAL_REST_URL + "/storage/auth/token?storage_type=fal-cdn-v3"

        async def _refresh_token(self) -> Any:
            async with http_client(transport=transport()) as client:
                response = await client.post(self._url, headers=self._headers, json={})
                response.raise_for_status()
                data = response.json()
            return fc.CDNToken(token=data["token"], token_type=data["token_type"],
                               base_upload_url=data["base_url"],
                               expires_at=fc.datetime.fromisoformat(data["expires_at"]))

    class RunClient(fal_client.AsyncClient):
        _uploads_http = None
        # What an answer proves depends on who sent it (stages/submit.py): through a proxy,
        # a 502 or 504 may come after fal made the job.
        through_proxy = destination.kind == "proxy"

        @async_cached_property(asyncio.Lock)
        async def _client(self) -> httpx.AsyncClient:
            auth = await self._auth
            return http_client(transport=transport(), timeout=self.default_timeout,
                               headers={"Authorization": auth.header_value,
                                        "User-Agent": fc.USER_AGENT})

        @async_cached_property(asyncio.Lock)
        async def _token_manager(self) -> Any:
            return RunTokenManager(await self._auth)

        @asynccontextmanager
        async def _cdn_client(self) -> AsyncIterator[Any]:
            if self._uploads_http is None:
                self._uploads_http = http_client(
                    transport=transport(), headers={"User-Agent": fc.USER_AGENT},
                    timeout=self.default_timeout)
            yield self._uploads_http

        async def upload(self, data: bytes, content_type: str, file_name: str | None = None,
                         **options: Any) -> str:
            if destination.kind != "proxy":
                return await super().upload(data, content_type, file_name, **options)
            # fal-js through a proxy: the proxy starts the upload (fal's default proxy only
            # lets storage_type=fal-cdn-v3 through), the bytes go to the signed URL it
            # returns, without any key.
            client = await self._client
            started = await client.post(
                egress.FAL_REST_URL + "/storage/upload/initiate?storage_type=fal-cdn-v3",
                json={"content_type": content_type, "file_name": file_name or "upload.bin"})
            fc._raise_for_status(started)
            answer = started.json()
            async with self._cdn_client() as cdn:
                put = await cdn.put(answer["upload_url"], content=data,
                                    headers={"Content-Type": content_type}, timeout=None)
                fc._raise_for_status(put)
            return answer["file_url"]

        async def prefetch_upload_token(self) -> None:
            """Ask for the CDN upload token while images are still being encoded, so the
            first upload does not wait a round trip for it."""
            if destination.kind == "proxy":
                return
            try:
                await (await self._token_manager).get_token()
            except Exception:   # the upload itself will ask again and report any failure
                pass

    if not all(hasattr(fal_client.AsyncClient, name)
               for name in ("_client", "_token_manager", "_cdn_client")):
        # A fal-client that changed inside: refuse rather than let its own clients send
        # the key past the transport.
        raise RuntimeError("this fal-client builds its HTTP clients in a way the pack does "
                           "not know, so the pack will not hand it the key; install fal-client "
                           "1.x, as requirements.txt says")
    key = key if destination.sends_key else PROXY_PLACEHOLDER_KEY
    return RunClient(key=key)


async def close_fal_client(client: Any) -> None:
    """Close what a fal client opened, with the loop that opened it."""
    # fal-client caches its API client on the instance (asyncstdlib keeps the value
    # in `.value`); RunClient adds the shared upload client.
    cached = client.__dict__.get("_client")
    for http in (getattr(cached, "value", cached), client.__dict__.get("_uploads_http")):
        if hasattr(http, "aclose"):
            try:
                await http.aclose()
            except Exception:
                pass
