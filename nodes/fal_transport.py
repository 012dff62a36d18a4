"""How the pack reaches fal: which hosts, and HTTP clients that are cheap to open.

Opening an httpx client loads the CA certificates (~30 ms of CPU, on the event
loop). fal-client opens one for every upload, so a batch of 8 spent a quarter
of a second there; the pack shares one certificate context and gives fal-client
one upload client per run.
"""

from __future__ import annotations

import ssl
from contextlib import asynccontextmanager
from functools import lru_cache
from typing import Any, AsyncIterator

# fal-client builds its URLs from these module globals at call time.
_FAL_CLIENT_HOSTS = ("QUEUE_URL_FORMAT", "RUN_URL_FORMAT", "REST_URL", "CDN_URL")
_original_hosts: dict[str, str] = {}


def point_fal_client_at(base_url: str) -> None:
    """Send fal-client's traffic to `base_url` (queue/, run/, rest, cdn below it),
    or back to fal's own hosts when base_url is empty.

    ComfyUI runs one prompt at a time, so a process-wide switch is safe there.
    """
    import fal_client.client as fc

    if not _original_hosts:
        _original_hosts.update({name: getattr(fc, name) for name in _FAL_CLIENT_HOSTS})
    if not base_url:
        for name, value in _original_hosts.items():
            setattr(fc, name, value)
        return
    fc.QUEUE_URL_FORMAT = base_url + "queue/"
    fc.RUN_URL_FORMAT = base_url + "run/"
    fc.REST_URL = base_url + "rest"
    fc.CDN_URL = base_url + "cdn"


@lru_cache(maxsize=1)
def tls_context() -> ssl.SSLContext:
    """The certificate context httpx would build for each client (certifi's CAs), built once."""
    import certifi
    return ssl.create_default_context(cafile=certifi.where())


def http_client(**options: Any):
    """An httpx.AsyncClient that verifies certificates like httpx's default, opened cheaply."""
    import httpx
    return httpx.AsyncClient(verify=tls_context(), **options)


def fal_client_for_run(key: str):
    """A fal_client.AsyncClient whose uploads share one HTTP client for the run."""
    import fal_client

    class RunClient(fal_client.AsyncClient):
        _uploads_http = None

        @asynccontextmanager
        async def _cdn_client(self) -> AsyncIterator[Any]:
            if self._uploads_http is None:
                self._uploads_http = http_client(
                    headers={"User-Agent": fal_client.client.USER_AGENT},
                    timeout=self.default_timeout)
            yield self._uploads_http

        async def prefetch_upload_token(self) -> None:
            """Ask for the CDN upload token while images are still being encoded, so the
            first upload does not wait a round trip for it."""
            try:
                await (await self._token_manager).get_token()
            except Exception:   # the upload itself will ask again and report any failure
                pass

    if not hasattr(fal_client.AsyncClient, "_cdn_client"):   # a fal-client that changed inside
        return fal_client.AsyncClient(key=key)
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
