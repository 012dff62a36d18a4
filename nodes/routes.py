"""Server routes for the front end: the fal key panel, price badges, the spend view.

A key travels once, browser -> server, and is kept only in the key store
(keystore.py: one 0600 file under ComfyUI's user directory). No answer ever
carries a key or more of it than its last four characters, and nothing here
logs a key.

    GET    /fal/keys              -> {"keys": [{"name", "hint"}], "env": {...}, "target": ...}
    POST   /fal/keys              {"name", "key"}  -> the listing (+ "added", "replaced")
    DELETE /fal/keys/{name}       -> the listing
    POST   /fal/keys/test         {"name"}  -> {"name", "result", "message"}
                                  result: "valid" | "rejected" | "unreachable"
    GET    /fal/prices            -> {"prices": {endpoint_id: {unit_price, unit, source}},
                                      "fresh", "fallback_date", "refreshing", "nodes",
                                      "can_ask_fal", "not_listed": [endpoint_id, ...]}
    GET    /fal/spend             -> {"entries": [...], "total", "billed_total", "estimated_total",
                                      "billed", "with_bill", "cached", "report"}; an entry has
                                      estimated_usd and billed_usd (None until fal's bill)
    GET    /fal/server-settings   -> {"allowed_servers": [url, ...], "proxy_url",
                                      "max_usd_per_prompt", "max_usd_per_day", "cache_max_gb",
                                      "spent_today", "in_force": {"kind", "url", "from"}}
    POST   /fal/server-settings   {some of those fields} -> the same object, or
                                  400 {"error": one sentence} (nothing saved)
    GET    /fal/catalogue/{id}    -> one catalogue endpoint: {"id", "title", "input", "output",
                                      "multi", "sockets", "retired"?, "alternatives"}
    GET    /fal/prices?endpoint_id=ID also asks fal for that catalogue endpoint's price

Prices: when the fetched ones are missing or a day old, GET /fal/prices starts
one background refresh (a task on the server's loop, never awaited by the
request) with the FAL_KEY key or else the first saved key; ComfyUI's start-up
schedules the same refresh once. Nothing is fetched at import.

ComfyUI serves every route also under /api/. The routes refuse requests whose
Origin is another site, compared by scheme, host and port (ComfyUI's own origin
check only runs for loopback hosts), and requests whose Host is not this
machine's (DNS rebinding: a stranger's name that resolves to 127.0.0.1 sends
its own name as Host and Origin). The POST routes only take JSON, which a plain
cross-site form cannot send.

Importing this module needs aiohttp only (ComfyUI has it); `add_routes` works on
any RouteTableDef, so tests run the routes without ComfyUI (see `make_app`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
from typing import Any, Awaitable, Callable
from urllib.parse import urlsplit

from aiohttp import web

from . import egress, keystore, pricing, server_settings, state

log = logging.getLogger("comfyui_fal_edit")

PREFIX = "/fal/keys"
# The FalKey node's combo entry for the FAL_KEY environment variable.
ENV_CHOICE = "environment FAL_KEY"
# fal's REST host; COMFYUI_FAL_BASE_URL replaces it with {base}rest.
FAL_REST_URL = egress.FAL_REST_URL
# One cheap authenticated call: a CDN upload token. Unknown or revoked keys get 401/403.
TOKEN_PATH = "/storage/auth/token?storage_type=fal-cdn-v3"
TEST_TIMEOUT_S = 8.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# -- helpers -------------------------------------------------------------------

def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


# Host names (besides loopback and IP addresses) this ComfyUI may be reached by, e.g. the
# name of a reverse proxy in front of it: comma-separated.
ENV_ALLOWED_HOSTS = "COMFYUI_FAL_ALLOWED_HOSTS"


def _split_host(netloc: str) -> tuple[str, int | None]:
    try:
        parts = urlsplit("//" + netloc)
        return (parts.hostname or "").lower().rstrip("."), parts.port
    except ValueError:
        return "", None


def _own_host_names() -> set[str]:
    """Names besides IP addresses and localhost: this machine's name, ComfyUI's --listen
    and the owner's list."""
    import socket
    names = {n.strip().lower() for n in os.environ.get(ENV_ALLOWED_HOSTS, "").split(",")}
    machine = socket.gethostname().lower()
    names |= {machine, machine + ".local"}
    try:
        from comfy.cli_args import args  # type: ignore[import-not-found]
        names |= {n.strip().lower() for n in str(getattr(args, "listen", "") or "").split(",")}
    except Exception:   # outside ComfyUI
        pass
    return {n for n in names if n}


def foreign_host(request: web.Request) -> str | None:
    """Why the Host is not this machine, or None. A page on a stranger's name that resolves
    to this machine (DNS rebinding) sends that name; an IP address or localhost cannot be
    rebound, and the owner can name others (COMFYUI_FAL_ALLOWED_HOSTS)."""
    host, _ = _split_host(request.headers.get("Host", ""))
    if not host:
        return "the request names no host"
    try:
        ipaddress.ip_address(host.strip("[]"))
        return None
    except ValueError:
        pass
    if host == "localhost" or host.endswith(".localhost") or host in _own_host_names():
        return None
    return (f"this ComfyUI was reached by the name {host}, which is not its own (add it to "
            f"{ENV_ALLOWED_HOSTS} if it is)")


def foreign_origin(request: web.Request) -> str | None:
    """Why the request comes from another site, or None when it is our own page.

    Browsers send Origin on every POST/DELETE and on cross-origin GETs; it must
    name the host the request was sent to: same scheme, host and port, with the
    default port of the Origin's scheme filled in where a side has none (a Host
    without a port is a proxy on the default port). Requests without Origin
    (curl, scripts on the machine) pass unless the browser marks them cross-site.
    """
    origin = request.headers.get("Origin")
    if origin is None:
        if request.headers.get("Sec-Fetch-Site", "").lower() == "cross-site":
            return "the request comes from another site"
        return None
    parsed = urlsplit(origin.strip())
    if origin.strip().lower() == "null" or not parsed.netloc or \
            parsed.scheme not in ("http", "https"):
        return "the request comes from a page without an origin"
    default = 443 if parsed.scheme == "https" else 80
    o_host, o_port = _split_host(parsed.netloc)
    h_host, h_port = _split_host(request.headers.get("Host", ""))
    if not o_host or (o_host, o_port or default) != (h_host, h_port or default):
        return f"the request comes from {parsed.scheme}://{parsed.netloc}, not from this ComfyUI"
    return None


def same_origin_only(handler: Handler) -> Handler:
    async def guarded(request: web.Request) -> web.StreamResponse:
        reason = foreign_host(request) or foreign_origin(request)
        if reason is not None:
            log.warning("fal routes: refused %s %s: %s", request.method, request.path, reason)
            return _error(403, f"refused: {reason}; use the fal panels from ComfyUI's own page")
        try:
            return await handler(request)
        except state.StateUnavailable as exc:   # Redis away: one sentence, not a traceback
            return _error(503, str(exc))

    guarded.__name__ = handler.__name__
    guarded.__doc__ = handler.__doc__
    return guarded


async def _json_body(request: web.Request, shape: str) -> dict[str, Any]:
    """The request's JSON object, or web.HTTPBadRequest with a sentence saying what to send."""
    if request.content_type != "application/json":
        raise _bad(f"send JSON ({shape}) with Content-Type: application/json")
    try:
        body = await request.json()
    except ValueError:
        raise _bad(f"the request body is not valid JSON; send {shape}") from None
    if not isinstance(body, dict):
        raise _bad(f"send a JSON object: {shape}")
    return body


def _bad(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=web.json_response({"error": message}).text,
                              content_type="application/json")


def _string(body: dict[str, Any], field: str) -> str:
    value = body.get(field, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _bad(f"`{field}` must be a string")
    return value


def _env_key() -> str:
    return os.environ.get(keystore.ENV_KEY, "").strip()


def key_test_destination() -> egress.Destination:
    """Where "test" sends a key: the owner's server when it takes keys, else fal (a proxy
    uses its own key, so testing this one there would say nothing)."""
    try:
        destination = egress.owner_default()
    except egress.EgressRefused:
        return egress.FAL
    return destination if destination.sends_key else egress.FAL


def rest_url(destination: egress.Destination | None = None) -> str:
    destination = destination or key_test_destination()
    return destination.route(FAL_REST_URL + "/")[0].rstrip("/")


def _listing() -> dict[str, Any]:
    env = _env_key()
    return {
        "keys": keystore.listing(),
        "env": {"choice": ENV_CHOICE, "set": bool(env), "hint": keystore.hint(env) if env else ""},
        # Where "test" sends its call: fal, or the fal-compatible server in COMFYUI_FAL_BASE_URL.
        "target": urlsplit(rest_url()).netloc,
    }


def _listing_or_error() -> dict[str, Any] | web.Response:
    try:
        return _listing()
    except keystore.KeyStoreError as exc:
        return _error(500, str(exc))


# -- the key check -------------------------------------------------------------

async def check_key_with_fal(key: str, timeout_s: float = TEST_TIMEOUT_S) -> tuple[str, str]:
    """One authenticated call; ("valid" | "rejected" | "unreachable", one sentence).

    The sentence names the server and the HTTP status, never the key.
    """
    import httpx

    from .fal_transport import http_client, tls_context

    # The owner's settings file, and the certificates the first time: off ComfyUI's loop.
    destination = await asyncio.to_thread(key_test_destination)
    await asyncio.to_thread(tls_context)
    where = urlsplit(rest_url(destination)).netloc
    try:
        async with http_client(timeout=httpx.Timeout(timeout_s), follow_redirects=False,
                               transport=egress.egress_transport(destination)) as client:
            response = await client.post(FAL_REST_URL + TOKEN_PATH, json={}, headers={
                "Authorization": f"Key {key}", "Accept": "application/json"})
    except httpx.TimeoutException:
        return "unreachable", (f"{where} did not answer within {timeout_s:g}s, so the key could "
                               f"not be checked; check the network and try again")
    except httpx.HTTPError as exc:
        return "unreachable", (f"{where} could not be reached ({type(exc).__name__}), so the key "
                               f"could not be checked; check the network or "
                               f"{egress.ENV_BASE_URL} and try again")
    status = response.status_code
    if 200 <= status < 300:
        return "valid", f"fal accepted the key ({where} answered {status})"
    if status in (401, 403):
        return "rejected", (f"fal rejected the key ({where} answered {status}); copy a current "
                            f"key from fal.ai/dashboard/keys and add it again")
    return "unreachable", (f"{where} answered {status}, so the key could not be checked; "
                           f"try again later")


# -- prices and spend ------------------------------------------------------------

# Start-up refresh: a few seconds after the server started, out of start-up's way.
STARTUP_DELAY_S = 5.0
PRICE_RETRY_S = pricing.PRICE_RETRY_S
# The process's one price refresh (shared with the runs, so one back-off for all).
price_refresh = pricing.price_refresh
# Price tasks started in the background, held until they end (the loop keeps only weak
# references to tasks).
_price_tasks: set[asyncio.Task] = set()


def price_key() -> str | None:
    """The key for the price call: FAL_KEY, else the first saved key, else None."""
    from .settings import FalKeyRef, MissingKey, resolve_key
    try:
        return resolve_key(FalKeyRef())
    except MissingKey:
        pass
    for name in keystore.names():
        try:
            key = keystore.get(name)
        except keystore.KeyStoreError:
            return None
        if key:
            return key
    return None


def price_caller() -> tuple[egress.Destination, str | None] | None:
    """Where price calls go (fal, or the owner's own server) and the key they carry (None
    through a proxy, or when there is none); None if the owner's settings can't be used.
    Reads the owner's settings and the key file: call it in a worker thread."""
    try:
        destination = egress.owner_default()
    except egress.EgressRefused as exc:
        log.warning("fal prices: %s", exc)
        return None
    return destination, (price_key() if destination.sends_key else None)


async def schedule_price_refresh(force: bool = False) -> asyncio.Task | None:
    """Start a background refresh on the running loop when prices are stale.

    Never waits for the refresh itself, only for the files that say where it goes.
    Returns the task (the running one if there is one), or None when nothing is
    needed or possible (fresh, no key, a recent failure).
    """
    if price_refresh.running():
        return price_refresh.task

    def caller_if_stale() -> tuple[egress.Destination, str | None] | None:
        # The price file is read on first use: off the loop, like the settings and keys.
        if not force and (pricing.prices.fresh() or price_refresh.backing_off()):
            return None
        return price_caller()

    caller = await asyncio.to_thread(caller_if_stale)
    if caller is None:
        return None
    destination, key = caller
    return price_refresh.start(key, destination, force)


def _prices_answer() -> dict[str, Any]:
    """The price table for the badges (the price file is read on first use: call it in a
    worker thread)."""
    from .endpoints import ENDPOINTS
    fresh = pricing.prices.fresh()
    caller = price_caller()
    return {
        "prices": pricing.prices.table(),
        # What fal last billed for one request of an endpoint with given inputs, where its
        # unit can't be counted before a run (per second, a vague unit).
        "learned": pricing.learned.table(pricing.PriceBook._server()),
        "fresh": fresh,
        "fallback_date": pricing.FALLBACK_DATE,
        "refreshing": price_refresh.running(),
        # Why a catalogue endpoint has no price (the badge says "price ?" and why): no key
        # to ask fal's price list with, or asked and not on it.
        "can_ask_fal": caller is not None and (caller[1] is not None or not caller[0].sends_key),
        "not_listed": pricing.prices.not_listed(),
        # What the front end needs to put a price on a node: its endpoint, and whether all
        # of its images go in one request (Kontext multi) or one request per image.
        "nodes": {**{e.node_name: {"endpoint_id": e.endpoint_id, "title": e.display_name,
                                   "multi": bool(e.multi_image_sockets)} for e in ENDPOINTS},
                  # fal Image Endpoint: the endpoint is its `endpoint` widget's value.
                  "FalImageEndpoint": {"endpoint_widget": "endpoint", "title": "fal Image Endpoint",
                                       "multi": False}},
    }


def _catalogue_answer(endpoint_id: str) -> dict[str, Any] | None:
    from . import catalogue
    entry = catalogue.entry(endpoint_id)
    if entry is None:
        return None
    slots = catalogue.endpoint_for(endpoint_id).slots
    return {"id": endpoint_id, **entry, "generated": catalogue.load()["catalogue"]["generated"],
            # One request for all images (a list field and no single-image field)?
            "multi": not any(s.kind == "url" for s in slots),
            "sockets": {s.field: list(s.sockets) for s in slots},
            "alternatives": catalogue.alternatives(endpoint_id) if entry.get("retired") else []}


PRICE_LOOKUP_WAIT_S = 3.0


async def schedule_price_lookups(endpoint_ids: list[str]) -> list[asyncio.Task]:
    """Ask fal, in the background, for the prices of the catalogue endpoints among
    `endpoint_ids` that have none yet; returns the lookups started."""
    from . import catalogue

    def unpriced() -> tuple[list[str], Any]:
        # The catalogue and price files are read on first use, the key file each time.
        wanted = [e for e in dict.fromkeys(endpoint_ids)
                  if catalogue.entry(e) is not None and pricing.prices.price(e) is None]
        return wanted, (price_caller() if wanted else None)

    wanted, caller = await asyncio.to_thread(unpriced)
    if not wanted or caller is None:
        return []
    destination, key = caller
    if key is None and destination.sends_key:
        return []
    loop = asyncio.get_running_loop()
    lookups = [loop.create_task(_price_lookup(key, destination, endpoint_id))
               for endpoint_id in wanted]
    for task in lookups:
        _price_tasks.add(task)
        task.add_done_callback(_price_tasks.discard)
    return lookups


# A background price lookup gives up after this long: a price list that drips its answer
# must not hold a connection for ever.
PRICE_LOOKUP_LIMIT_S = 30.0


async def _price_lookup(key: str | None, destination: Any, endpoint_id: str) -> None:
    from .concurrency import within
    try:
        await within(pricing.prices.fetch_one(key, destination, endpoint_id),
                     PRICE_LOOKUP_LIMIT_S)
    except asyncio.TimeoutError:
        log.info("fal prices: no answer for %s within %gs", endpoint_id, PRICE_LOOKUP_LIMIT_S)


def _spend_answer() -> dict[str, Any]:
    """The ledger for the spend view: each request's estimate and, once fal's bill came,
    what fal billed (None: the estimate counts), its state, and fal's queue and run times
    when known."""
    from .endpoints import BY_ENDPOINT
    from .pricing import entry_state, ledger
    rows = ledger.entries()
    entries = [{
        "endpoint": e.endpoint_id,
        "title": BY_ENDPOINT[e.endpoint_id].display_name if e.endpoint_id in BY_ENDPOINT
        else e.endpoint_id,
        "request_id": e.request_id,
        "cached": e.cached,
        "estimated_usd": 0.0 if e.cached else round(e.estimated_usd, 6),
        "billed_usd": None if e.billed_usd is None else round(e.billed_usd, 6),
        "billed_units": e.billed_units,
        "state": entry_state(e),
        "queue_s": e.queue_s,
        "run_s": e.run_s,
        "prompt_id": e.prompt_id,
        "at": e.at,
    } for e in rows]
    sent = [e for e in rows if not e.cached]
    return {
        "entries": entries,
        "total": round(ledger.spent(), 6),
        "billed_total": round(sum(e.billed_usd for e in sent if e.billed_usd is not None), 6),
        "estimated_total": round(sum(e.estimated_usd for e in sent if e.billed_usd is None), 6),
        "billed": len(sent),
        "with_bill": sum(1 for e in sent if e.billed_usd is not None),
        "cached": sum(1 for e in rows if e.cached),
        "report": ledger.report(),
    }


# -- routes --------------------------------------------------------------------

def add_routes(routes: web.RouteTableDef) -> web.RouteTableDef:
    """Put the key routes on `routes` (ComfyUI's PromptServer.instance.routes, or a test app's)."""

    # The key file and the owner's settings are files under a lock another process may
    # hold: these routes run on ComfyUI's own event loop, so they read and write them in a
    # worker thread.

    @routes.get(PREFIX)
    @same_origin_only
    async def fal_keys_list(request: web.Request) -> web.Response:
        listing = await asyncio.to_thread(_listing_or_error)
        return listing if isinstance(listing, web.Response) else web.json_response(listing)

    @routes.post(PREFIX)
    @same_origin_only
    async def fal_keys_add(request: web.Request) -> web.Response:
        body = await _json_body(request, '{"name": "...", "key": "..."}')
        return await asyncio.to_thread(_add_key, body)

    @routes.post(PREFIX + "/test")
    @same_origin_only
    async def fal_keys_test(request: web.Request) -> web.Response:
        body = await _json_body(request, '{"name": "..."}')
        found = await asyncio.to_thread(_key_to_test, _string(body, "name").strip())
        if isinstance(found, web.Response):
            return found
        name, key = found
        result, message = await check_key_with_fal(key)
        log.info("fal key '%s' tested: %s", name, result)
        return web.json_response({"name": name, "result": result, "message": message})

    @routes.delete(PREFIX + "/{name}")
    @same_origin_only
    async def fal_keys_delete(request: web.Request) -> web.Response:
        return await asyncio.to_thread(_delete_key, request.match_info["name"])

    @routes.get("/fal/prices")
    @same_origin_only
    async def fal_prices(request: web.Request) -> web.Response:
        # fal Image Endpoint's chosen endpoint: its price is asked for (once per session),
        # and this answer waits a little for it.
        lookups = await schedule_price_lookups(request.query.getall("endpoint_id", [])[:8])
        if lookups:
            await asyncio.wait(lookups, timeout=PRICE_LOOKUP_WAIT_S)
        await schedule_price_refresh()   # only when stale; never awaited
        answer = await asyncio.to_thread(_prices_answer)
        return web.json_response(answer, headers={"Cache-Control": "no-store"})

    @routes.get("/fal/catalogue/{endpoint_id:.+}")
    @same_origin_only
    async def fal_catalogue(request: web.Request) -> web.Response:
        """One catalogue endpoint's schema, for fal Image Endpoint's form (a local file)."""
        answer = await asyncio.to_thread(_catalogue_answer, request.match_info["endpoint_id"])
        if answer is None:
            return _error(404, f"'{request.match_info['endpoint_id']}' is not in the catalogue")
        return web.json_response(answer)

    @routes.get("/fal/spend")
    @same_origin_only
    async def fal_spend(request: web.Request) -> web.Response:
        return web.json_response(_spend_answer(), headers={"Cache-Control": "no-store"})

    @routes.get("/fal/server-settings")
    @same_origin_only
    async def fal_server_settings(request: web.Request) -> web.Response:
        answer = await asyncio.to_thread(lambda: _server_settings_answer(server_settings.load()))
        return web.json_response(answer, headers={"Cache-Control": "no-store"})

    @routes.post("/fal/server-settings")
    @same_origin_only
    async def fal_server_settings_update(request: web.Request) -> web.Response:
        body = await _json_body(request, '{"allowed_servers": [...], "max_usd_per_prompt": 5, '
                                         '...}')
        for read_only in ("spent_today", "in_force"):   # a panel may send back what it got
            body.pop(read_only, None)
        return await asyncio.to_thread(_update_server_settings, body)

    return routes


# What the key and settings routes do with the files, in a worker thread; each returns the
# route's answer.

def _add_key(body: dict[str, Any]) -> web.Response:
    try:
        name = keystore.check_name(_string(body, "name"))
        key = keystore.check_key(_string(body, "key"))
        replaced = name in keystore.names()
        keystore.add(name, key)
    except keystore.KeyStoreError as exc:
        return _error(400, str(exc))
    except OSError as exc:
        return _error(500, f"the key file {keystore.key_file()} cannot be written "
                           f"({type(exc).__name__}); check the permissions of that folder")
    log.info("fal key '%s' %s in the key store", name, "replaced" if replaced else "saved")
    listing = _listing_or_error()
    if isinstance(listing, web.Response):
        return listing
    return web.json_response({**listing, "added": name, "replaced": replaced},
                             status=200 if replaced else 201)


def _key_to_test(raw: str) -> tuple[str, str] | web.Response:
    if raw == ENV_CHOICE:
        key = _env_key()
        if not key:
            return _error(404, "the FAL_KEY environment variable is not set for this ComfyUI")
        return raw, key
    try:
        name = keystore.check_name(raw)
        key = keystore.get(name)
    except keystore.KeyStoreError as exc:
        return _error(400, str(exc))
    if not key:
        return _error(404, f"no fal key named '{name}' is saved")
    return name, key


def _delete_key(raw: str) -> web.Response:
    try:
        name = keystore.check_name(raw)
        deleted = keystore.delete(name)
    except keystore.KeyStoreError as exc:
        return _error(400, str(exc))
    except OSError as exc:
        return _error(500, f"the key file {keystore.key_file()} cannot be written "
                           f"({type(exc).__name__}); check the permissions of that folder")
    if not deleted:
        return _error(404, f"no fal key named '{name}' is saved")
    log.info("fal key '%s' deleted from the key store", name)
    listing = _listing_or_error()
    if isinstance(listing, web.Response):
        return listing
    return web.json_response({**listing, "deleted": name})


def _update_server_settings(body: dict[str, Any]) -> web.Response:
    try:
        updated = server_settings.update(body)
    except (server_settings.SettingsError, keystore.KeyStoreError) as exc:
        return _error(400, str(exc))
    except OSError as exc:
        return _error(500, f"{server_settings.path()} cannot be written "
                           f"({type(exc).__name__}); check the permissions of that folder")
    log.info("fal server settings changed: %s", ", ".join(sorted(body)))
    return web.json_response(_server_settings_answer(updated))


def _server_settings_answer(values: dict[str, Any]) -> dict[str, Any]:
    # spent_today: read-only, what the daily ceiling is measured against (None, with the
    # sentence why, when the spend file is damaged: the daily ceiling then counts as reached).
    # in_force: where runs that name no server go, and which setting says so.
    try:
        return {**values, "spent_today": round(server_settings.spent_today(), 6),
                "in_force": _in_force()}
    except server_settings.SpendFileUnreadable as exc:
        return {**values, "spent_today": None, "spend_file_error": str(exc),
                "in_force": _in_force()}


def _in_force() -> dict[str, str]:
    """Where runs that name no server go, and which setting says so (read-only)."""
    try:
        destination, source = egress.owner_choice()
    except egress.EgressRefused as exc:
        return {"kind": "error", "error": str(exc)}
    return {"kind": destination.kind, "url": destination.url, "from": source}


def make_app() -> web.Application:
    """A bare aiohttp app with only these routes (tests; no ComfyUI needed)."""
    app = web.Application()
    app.add_routes(add_routes(web.RouteTableDef()))
    return app


def register_with_comfyui() -> bool:
    """Add the routes to ComfyUI's server when running inside ComfyUI. True if added."""
    try:
        from server import PromptServer  # type: ignore[import-not-found]
    except ImportError:
        return False
    instance = getattr(PromptServer, "instance", None)
    routes = getattr(instance, "routes", None)
    if routes is None:
        return False
    add_routes(routes)
    schedule_startup_refresh(getattr(instance, "app", None), getattr(instance, "loop", None))
    return True


def schedule_startup_refresh(app: web.Application | None,
                             loop: asyncio.AbstractEventLoop | None = None) -> str:
    """Refresh prices once, a few seconds after the server started (never at import).

    Returns how: "on_startup" (the usual case: custom nodes load before the server
    starts), "call_later" (the server already runs), or "" (no way to schedule).
    """
    def start() -> None:
        task = asyncio.get_running_loop().create_task(schedule_price_refresh())
        _price_tasks.add(task)
        task.add_done_callback(_price_tasks.discard)

    async def on_startup(_app: web.Application) -> None:
        asyncio.get_running_loop().call_later(STARTUP_DELAY_S, start)

    if app is not None:
        try:
            app.on_startup.append(on_startup)
            return "on_startup"
        except RuntimeError:   # the app is frozen: the server started already
            pass
    if loop is not None:
        loop.call_soon_threadsafe(loop.call_later, STARTUP_DELAY_S, start)
        return "call_later"
    return ""
