"""Where a run's requests may go: the one place that decides where the fal key may be sent.

Workflows come from strangers, so a server named inside one (fal Settings'
`base_url`) is only a request: the key goes to fal's own hosts, or to a server
that the owner of this ComfyUI chose on the server itself:

- `COMFYUI_FAL_BASE_URL`: a fal-compatible server in the emulator's layout
  ({base}queue/, {base}run/, {base}rest, {base}cdn); it receives the key.
- `COMFYUI_FAL_PROXY_URL`, or the proxy saved in Settings → fal: fal-js's
  `proxyUrl` protocol. Every request goes to the proxy with the real fal URL in
  the `x-fal-target-url` header and the proxy adds its own key, so the pack
  sends no key at all.
- the allowed servers saved in Settings → fal (server_settings.json beside the
  keys): a workflow's `base_url` is used only if it is one of them (or the env
  one). Loopback is not special: a local server can forward anywhere.

fal-client's module-wide hosts are never changed. Each run gets its own client
whose HTTP transport (EgressTransport) maps fal's URLs to the destination and
refuses any request carrying an Authorization header to a host that is neither
fal's nor the destination.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from . import server_settings
from .addresses import (FAL_DOMAINS, FAL_FILE_DOMAINS, FAL_GCS_HOST, FAL_GCS_PREFIX,  # noqa: F401
                        EgressRefused, _on_domain, is_fal_url, is_private_host, normalize,
                        origin, tls_context)

ENV_BASE_URL = "COMFYUI_FAL_BASE_URL"
ENV_PROXY_URL = "COMFYUI_FAL_PROXY_URL"
TARGET_URL_HEADER = "x-fal-target-url"     # fal-js: libs/client/src/middleware.ts
FAL_REST_URL = "https://rest.fal.ai"       # fal-client's REST_URL (storage, tokens)

# An API answer (result JSON, inline results included) larger than this is refused as it
# streams in, before fal-client holds it (and its parsed copy) in memory.
MAX_ANSWER_BYTES = 256 << 20
# A JSON answer may hold at most this many values (objects, arrays, and their members),
# counted as it streams in: 100 MiB of `{},{},...` parses into 5 GiB of dicts. One value
# costs Python ~64 bytes at most, so the parsed answer stays within ~100 MB.
MAX_ANSWER_VALUES = 1_000_000
# ...and nest at most this deep (checked once parsed; see answer_shape_problem).
MAX_ANSWER_DEPTH = 64
# The encodings API requests and result downloads accept (see _capped).
ANSWER_ENCODINGS = "gzip, deflate"
BILLED = " (fal billed this request)"
# What the user can do about an answer refused for its size or shape.
ANSWER_FIX = "run again, and check base_url if it persists"

# fal's URLs (fal-client's module defaults) -> the path below an emulator-layout base.
_LAYOUT = {
    "queue.fal.run": "queue/", "queue.falrun.com": "queue/",
    "fal.run": "run/", "falrun.com": "run/",
    "rest.fal.ai": "rest/",
    "v3.fal.media": "cdn/",
    "api.fal.ai": "",
}


@dataclass(frozen=True)
class Destination:
    """Where one run sends its requests."""

    kind: str = "fal"        # "fal" | "server" (emulator layout, gets the key) | "proxy"
    url: str = ""            # normalized; "" for fal

    @property
    def name(self) -> str:
        """What caches are keyed on: results from one server never answer for another."""
        return "https://fal.run" if self.kind == "fal" else f"{self.kind}:{self.url}"

    @property
    def label(self) -> str:
        return "fal" if self.kind == "fal" else urlsplit(self.url).netloc

    @property
    def sends_key(self) -> bool:
        return self.kind != "proxy"

    def is_own(self, url: str) -> bool:
        """The URL is on this destination's server (same scheme, host and port)."""
        return bool(self.url) and origin(url) == origin(self.url)

    def route(self, url: str) -> tuple[str, dict[str, str]]:
        """fal's URL -> (the URL to send to, extra headers)."""
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        if self.kind == "server" and parts.scheme == "https" and host in _LAYOUT:
            rest = url.split(parts.netloc, 1)[1].lstrip("/")
            return self.url + _LAYOUT[host] + rest, {}
        if self.kind == "proxy" and is_fal_url(url):
            return self.proxy_url, {TARGET_URL_HEADER: url}
        return url, {}

    @property
    def proxy_url(self) -> str:
        return self.url.rstrip("/") if self.kind == "proxy" else ""

    def may_carry_credentials(self, url: str) -> bool:
        """A request with an Authorization header may go to fal's hosts or this server."""
        return is_fal_url(url) or (self.kind == "server" and self.is_own(url))

    def accepts_result_url(self, url: str) -> bool:
        """Result files: https from fal's file hosts, or this destination's own server."""
        parts = urlsplit(url)
        if self.is_own(url):
            return True
        if parts.scheme != "https":
            return False
        host = (parts.hostname or "").lower()
        return _on_domain(host, FAL_FILE_DOMAINS) or \
            (host == FAL_GCS_HOST and parts.path.startswith(FAL_GCS_PREFIX))

    def may_redirect_to(self, url: str) -> bool:
        """A redirect of a result download: https to a public host, or this server."""
        parts = urlsplit(url)
        if self.is_own(url):
            return True
        return parts.scheme == "https" and not is_private_host(parts.hostname or "")


FAL = Destination()


def _env(name: str) -> str:
    return normalize(os.environ.get(name, ""))


def owner_choice() -> tuple[Destination, str]:
    """Where runs go when the workflow names no server, and where that choice comes from:
    the environment variable's name, "proxy_url" (saved in Settings → fal), or "" (fal)."""
    if proxy := _env(ENV_PROXY_URL):
        return Destination("proxy", proxy), ENV_PROXY_URL
    if base := _env(ENV_BASE_URL):
        return Destination("server", base), ENV_BASE_URL
    if proxy := normalize(server_settings.load().get("proxy_url", "")):
        return Destination("proxy", proxy), "proxy_url"
    return FAL, ""


def owner_default() -> Destination:
    """Where runs go when the workflow names no server: the owner's choice, else fal."""
    return owner_choice()[0]


def resolve(workflow_url: str = "") -> Destination:
    """The destination of a run whose fal Settings carry `workflow_url` (may be empty).

    Raises EgressRefused (one sentence, naming the host and how to allow it) for a
    server the owner did not allow; nothing has been sent then."""
    try:
        wanted = normalize(workflow_url)
    except EgressRefused as exc:
        raise EgressRefused(f"base_url {exc}; leave it empty to use fal") from None
    default = owner_default()
    if not wanted or wanted == default.url:
        return default
    settings = server_settings.load()
    if wanted == _env(ENV_BASE_URL):
        return Destination("server", wanted)
    if wanted in (_env(ENV_PROXY_URL), normalize(settings.get("proxy_url", ""))):
        return Destination("proxy", wanted)
    if wanted in settings.get("allowed_servers", []):
        return Destination("server", wanted)
    raise EgressRefused(
        f"base_url {urlsplit(wanted).netloc} comes with the workflow and is not a server this "
        f"ComfyUI's owner allowed, so nothing was sent (your fal key would go to it); leave "
        f"base_url empty to use fal, or add {wanted} to the allowed servers in Settings → fal")


# -- the transport every HTTP client of a run uses -----------------------------

def egress_transport(destination: Destination, inner=None):
    """An httpx transport that sends fal's URLs to `destination` and refuses credentials
    anywhere else. `inner` sends what passes (default: httpx's own transport)."""
    import httpx


    class EgressTransport(httpx.AsyncBaseTransport):
        def __init__(self) -> None:
            self.inner = inner or httpx.AsyncHTTPTransport(verify=tls_context())

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            original = str(request.url)
            target, extra = destination.route(original)
            headers = request.headers.copy()
            # Only encodings _capped can count as they unpack (not br or zstd, which httpx
            # asks for when their libraries happen to be installed).
            headers["accept-encoding"] = ANSWER_ENCODINGS
            if destination.kind == "proxy" and extra:
                # The proxy adds its own key; the pack's never goes there.
                headers.pop("authorization", None)
            if "authorization" in headers and not destination.may_carry_credentials(target):
                raise EgressRefused(
                    f"refused to send fal credentials to {urlsplit(target).netloc}, which is "
                    f"neither fal nor a server this ComfyUI's owner allowed")
            if target != original or extra:
                headers.update(extra)
                url = httpx.URL(target)
                headers["host"] = url.netloc.decode("ascii")
                request = httpx.Request(request.method, url, headers=headers,
                                        stream=request.stream,
                                        extensions=request.extensions.copy())
            elif headers != request.headers:
                request.headers = headers
            response = await self.inner.handle_async_request(request)
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > MAX_ANSWER_BYTES:
                await response.aclose()
                sentence = (f"{urlsplit(target).netloc} sent an answer of "
                            f"{int(declared) >> 20} MiB, more than the "
                            f"{MAX_ANSWER_BYTES >> 20} MiB the pack reads, so it was "
                            f"refused; {ANSWER_FIX}")
                raise EgressRefused(with_billed(sentence)
                                    if _is_result_fetch(request.method, target) else sentence)
            return _capped(response, urlsplit(target).netloc,
                           billed=_is_result_fetch(request.method, target))

        async def aclose(self) -> None:
            await self.inner.aclose()

    return EgressTransport()


def _is_result_fetch(method: str, url: str) -> bool:
    """A GET of a queue request's result ({app}/requests/{id}): fal has billed it."""
    return method == "GET" and re.search(r"/requests/[^/]+/?$", urlsplit(url).path) is not None


def with_billed(sentence: str) -> str:
    """A refusal sentence ("cause; fix") saying that fal billed the request it answers."""
    cause, sep, fix = sentence.partition("; ")
    return f"{cause}{BILLED}{sep}{fix}"


def answer_shape_problem(answer: object) -> str | None:
    """Why a parsed answer is refused (nested deeper than MAX_ANSWER_DEPTH), or None.
    Walked without recursion; its size was bounded while it streamed in."""
    stack = [(answer, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            value = list(value.values())
        elif not isinstance(value, list):
            continue
        if depth > MAX_ANSWER_DEPTH:
            return answer_nested_too_deep()
        stack.extend((member, depth + 1) for member in value)
    return None


def answer_nested_too_deep() -> str:
    """The refusal of a result nested past MAX_ANSWER_DEPTH (fal has billed it)."""
    return with_billed(f"the answer nests more than {MAX_ANSWER_DEPTH} levels deep, so it "
                       f"was refused; {ANSWER_FIX}")


def _capped(response, where: str, what: str = "an answer", billed: bool = False):
    """The response, refused once its body passes MAX_ANSWER_BYTES, counted unpacked: a
    compressed answer is unpacked here, a bounded piece at a time, so a small gzip that
    unpacks to gigabytes is refused at the cap instead of filling memory in httpx. A JSON
    answer is also refused past MAX_ANSWER_VALUES values, before it is parsed. `billed`:
    the refusal says fal billed the request (a result, fetched after fal finished)."""
    import zlib

    import httpx

    def refused(sentence: str) -> EgressRefused:
        return EgressRefused(with_billed(sentence) if billed else sentence)

    encoding = response.headers.get("content-encoding", "").strip().lower()
    if encoding not in ("", "identity", "gzip", "x-gzip", "deflate"):
        raise refused(f"{where} sent {what} packed as '{encoding}', which the pack did not "
                      f"ask for, so it was refused; {ANSWER_FIX}")
    unpack = zlib.decompressobj(zlib.MAX_WBITS | 32) \
        if encoding not in ("", "identity") else None   # 32: a gzip or zlib header
    is_json = response.headers.get("content-type", "").lower().startswith("application/json")

    def too_big() -> EgressRefused:
        return refused(f"{where} sent {what} larger than {MAX_ANSWER_BYTES >> 20} MiB, so it "
                       f"was refused; {ANSWER_FIX}")

    def too_many_values() -> EgressRefused:
        return refused(f"{where} sent {what} of more than {MAX_ANSWER_VALUES:,} JSON values, "
                       f"so it was refused before it was read; {ANSWER_FIX}")

    class Capped(httpx.AsyncByteStream):
        def __init__(self, stream) -> None:
            self.stream = stream

        async def __aiter__(self):
            size = values = 0
            async for chunk in self.stream:
                for piece in _unpacked(unpack, chunk, where, refused):
                    size += len(piece)
                    if size > MAX_ANSWER_BYTES:
                        raise too_big()
                    if is_json:
                        values += _json_values(piece)
                        if values > MAX_ANSWER_VALUES:
                            raise too_many_values()
                    yield piece
            if unpack is not None:
                tail = unpack.flush()
                if size + len(tail) > MAX_ANSWER_BYTES:
                    raise too_big()
                if is_json and values + _json_values(tail) > MAX_ANSWER_VALUES:
                    raise too_many_values()
                yield tail

        async def aclose(self) -> None:
            await self.stream.aclose()

    headers = response.headers
    if unpack is not None:   # what httpx gets is already unpacked
        headers = headers.copy()
        for name in ("content-encoding", "content-length"):
            headers.pop(name, None)
    return httpx.Response(response.status_code, headers=headers,
                          stream=Capped(response.stream), extensions=response.extensions)


def _json_values(piece: bytes) -> int:
    """An upper bound on the JSON values `piece` opens: every member but a container's
    first follows a comma, and each container counts for itself and its first member."""
    return piece.count(b",") + 2 * (piece.count(b"{") + piece.count(b"["))


def _unpacked(unpack, chunk: bytes, where: str, refused=EgressRefused,
              piece_bytes: int = 1 << 20):
    """`chunk` as it arrived, or unpacked in pieces of at most `piece_bytes`."""
    import zlib

    if unpack is None:
        yield chunk
        return
    try:
        while chunk:
            piece = unpack.decompress(chunk, piece_bytes)
            chunk = unpack.unconsumed_tail
            yield piece
    except zlib.error:
        raise refused(f"{where} sent compressed data that could not be unpacked, so it was "
                      f"refused; {ANSWER_FIX}") from None


def download_transport(destination: Destination, inner=None, **options):
    """The transport of result downloads: every hop (redirects included) is checked, and
    no credentials ever go along. A host whose name resolved to a private or loopback
    address is refused once connected, before its body is read (a public name can point
    inside). `options` go to httpx's transport (limits); `inner` replaces it (tests)."""
    import httpx


    class DownloadTransport(httpx.AsyncBaseTransport):
        def __init__(self) -> None:
            self.inner = inner or httpx.AsyncHTTPTransport(verify=tls_context(), **options)

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            url = str(request.url)
            where = urlsplit(url).netloc
            if "authorization" in request.headers or not destination.may_redirect_to(url):
                raise EgressRefused(f"refused to fetch a result from {where}: a result may "
                                    f"only come from fal's file hosts or the allowed server")
            # Only the encodings _capped unpacks a bounded piece at a time (httpx asks for
            # br and zstd when their libraries are installed, and inflates each chunk whole).
            request.headers["accept-encoding"] = ANSWER_ENCODINGS
            response = await self.inner.handle_async_request(request)
            address = _peer_address(response)
            if address and is_private_host(address) and not destination.is_own(url):
                await response.aclose()
                raise EgressRefused(f"refused to fetch a result from {where}: it is at the "
                                    f"private address {address}")
            try:
                return _capped(response, where, "a result file", billed=True)
            except EgressRefused:
                await response.aclose()
                raise

        async def aclose(self) -> None:
            await self.inner.aclose()

    return DownloadTransport()


def _peer_address(response) -> str:
    """The IP address the response came from, where the connection tells it."""
    stream = response.extensions.get("network_stream")
    try:
        peer = stream.get_extra_info("server_addr") if stream is not None else None
    except Exception:
        return ""
    return str(peer[0]) if isinstance(peer, tuple) and peer else ""
