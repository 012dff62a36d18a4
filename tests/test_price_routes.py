"""GET /fal/prices and GET /fal/spend: the front end's price badges and spend view."""

from __future__ import annotations

import asyncio
import json
import sys
import types

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from comfyui_fal_edit.nodes import keystore, pricing, routes
from comfyui_fal_edit.nodes.endpoints import ENDPOINTS
from comfyui_fal_edit.nodes.pricing import LedgerEntry

from test_routes import assert_no_key, closed_port

ENV_KEY = "envkey-7a1c2e3d:4b5c6d7e8f90a1b2c3d4-Hq8P"
SAVED_KEY = "savedkey-0f9e8d7c:6b5a4f3e2d1c0b9a8f7e-Lm4T"
FLUX = "fal-ai/flux/dev/image-to-image"
COLOR = "fal-ai/image-editing/color-correction"
KONTEXT = "fal-ai/flux-pro/kontext/max/multi"


@pytest.fixture
def clean(tmp_path, monkeypatch):
    """No key anywhere, prices and ledger empty, the price file under tmp_path."""
    monkeypatch.setenv("COMFYUI_FAL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv(keystore.ENV_KEY_FILE, str(tmp_path / "user" / "keys.json"))
    monkeypatch.delenv(keystore.ENV_KEY, raising=False)
    # Never fall through to fal's real API from a test.
    monkeypatch.setenv("COMFYUI_FAL_BASE_URL", f"http://127.0.0.1:{closed_port()}/")
    pricing.prices.clear()
    pricing.ledger.clear()
    routes.price_refresh.reset()
    yield tmp_path
    routes.price_refresh.reset()
    pricing.prices.clear()
    pricing.ledger.clear()


@pytest.fixture
def emulator(clean, emulator):
    """conftest's emulator, after `clean` (which points the pack at a closed port)."""
    return emulator


@pytest_asyncio.fixture
async def client(clean):
    async with TestClient(TestServer(routes.make_app())) as c:
        yield c


@pytest.fixture
def seen(capture_logs):
    """Every response body and every log line."""
    return capture_logs   # the routes' tests add response bodies to it


async def get(client, seen, path, **headers):
    response = await client.get(path, headers=headers)
    text = await response.text()
    seen.append(text)
    return response.status, json.loads(text)


async def settle():
    task = routes.price_refresh.task
    if task is not None:
        await asyncio.wait_for(task, 10)


# -- /fal/prices -------------------------------------------------------------------

@pytest.mark.asyncio
async def test_prices_shape_and_fallback_when_nothing_was_fetched(client, seen):
    status, body = await get(client, seen, "/fal/prices")
    assert status == 200
    assert set(body) >= {"prices", "fresh", "fallback_date", "refreshing", "nodes"}
    assert body["fresh"] is False and body["fallback_date"] == pricing.FALLBACK_DATE
    assert body["refreshing"] is False               # no key: nothing to ask fal with
    assert set(body["prices"]) == {e.endpoint_id for e in ENDPOINTS}
    for endpoint_id, row in body["prices"].items():
        assert row["source"] == "fallback"
        assert (row["unit_price"], row["unit"]) == pricing.FALLBACK_PRICES[endpoint_id]
    # The front end finds a node's endpoint, and which node sends all images at once.
    assert body["nodes"]["FalColorCorrection"] == {
        "endpoint_id": COLOR, "title": "fal Color Correction", "multi": False}
    assert body["nodes"]["FalFluxKontextMaxMulti"]["multi"] is True


@pytest.mark.asyncio
async def test_answers_are_not_cached(client):
    for path in ("/fal/prices", "/fal/spend"):
        response = await client.get(path)
        assert response.headers["Cache-Control"] == "no-store"


@pytest.mark.asyncio
async def test_stale_prices_are_refreshed_in_the_background(client, seen, emulator, monkeypatch):
    monkeypatch.setenv("FAL_KEY", ENV_KEY)
    status, first = await get(client, seen, "/fal/prices")
    # The answer did not wait for fal: still the shipped table, a refresh under way.
    assert status == 200 and first["fresh"] is False and first["refreshing"] is True
    assert first["prices"][COLOR]["source"] == "fallback"
    status, second = await get(client, seen, "/fal/prices")   # one refresh at a time
    await settle()
    assert emulator.state.count("pricing") == 1
    [call] = emulator.state.entries("pricing")
    assert call["key_hint"] == ENV_KEY[-4:]

    status, body = await get(client, seen, "/fal/prices")
    assert body["fresh"] is True and body["refreshing"] is False
    assert body["prices"][COLOR].items() >= {"unit_price": 0.05, "unit": "image", "source": "fal"}.items()
    assert body["prices"][FLUX].items() >= {"unit_price": 0.03, "unit": "megapixel", "source": "fal"}.items()
    assert pricing.prices.path().exists()            # kept on disk for a day
    # Fresh prices: no more calls.
    await get(client, seen, "/fal/prices")
    assert routes.price_refresh.task.done() and emulator.state.count("pricing") == 1
    assert_no_key(seen, ENV_KEY)


@pytest.mark.asyncio
async def test_a_saved_key_is_used_without_fal_key(client, seen, emulator):
    keystore.add("studio", SAVED_KEY)
    await get(client, seen, "/fal/prices")
    await settle()
    assert [c["key_hint"] for c in emulator.state.entries("pricing")] == [SAVED_KEY[-4:]]
    status, body = await get(client, seen, "/fal/prices")
    assert body["prices"][KONTEXT]["source"] == "fal"
    assert_no_key(seen, SAVED_KEY)


@pytest.mark.asyncio
async def test_failed_refresh_keeps_the_fallback_and_warns(client, seen, emulator, monkeypatch):
    monkeypatch.setenv("FAL_KEY", ENV_KEY)
    emulator.state.add_fault("pricing", 503)
    await get(client, seen, "/fal/prices")
    await settle()
    status, body = await get(client, seen, "/fal/prices")
    assert status == 200 and body["fresh"] is False
    assert {row["source"] for row in body["prices"].values()} == {"fallback"}
    assert any("fal prices could not be fetched" in line and "HTTP 503" in line and
               pricing.FALLBACK_DATE in line for line in seen)
    # No retry storm: the front end polls, but the next try waits PRICE_RETRY_S.
    assert body["refreshing"] is False and emulator.state.count("pricing") == 1
    routes.price_refresh.failed_at -= routes.PRICE_RETRY_S
    await get(client, seen, "/fal/prices")
    await settle()
    assert emulator.state.count("pricing") == 2
    status, body = await get(client, seen, "/fal/prices")
    assert body["fresh"] is True and body["prices"][COLOR]["source"] == "fal"
    assert_no_key(seen, ENV_KEY)


@pytest.mark.asyncio
async def test_unreachable_fal_keeps_the_fallback(client, seen, monkeypatch):
    monkeypatch.setenv("FAL_KEY", ENV_KEY)       # base URL: a closed port (see `clean`)
    await get(client, seen, "/fal/prices")
    await settle()
    status, body = await get(client, seen, "/fal/prices")
    assert status == 200 and body["prices"][FLUX]["source"] == "fallback"
    assert any("fal prices could not be fetched from 127.0.0.1" in line and
               "(ConnectError)" in line for line in seen)
    assert_no_key(seen, ENV_KEY)


@pytest.mark.asyncio
async def test_prices_fetched_earlier_today_come_from_disk(client, seen, emulator, monkeypatch):
    monkeypatch.setenv("FAL_KEY", ENV_KEY)
    await get(client, seen, "/fal/prices")
    await settle()
    pricing.prices.clear()                          # a restart
    routes.price_refresh.reset()
    status, body = await get(client, seen, "/fal/prices")
    assert body["fresh"] is True and body["prices"][COLOR]["source"] == "fal"
    assert body["refreshing"] is False and emulator.state.count("pricing") == 1


@pytest.mark.asyncio
async def test_no_key_means_no_call_and_one_log_line(client, seen, emulator):
    for _ in range(3):
        status, body = await get(client, seen, "/fal/prices")
        assert status == 200 and body["refreshing"] is False
    assert emulator.state.count("pricing") == 0
    assert sum("no fal key" in line for line in seen) == 1


# -- start-up ------------------------------------------------------------------------

def test_nothing_is_fetched_at_registration_and_once_after_start_up(emulator, monkeypatch):
    """register_with_comfyui only hooks the server's start-up; the refresh runs after it."""
    monkeypatch.setenv("FAL_KEY", ENV_KEY)
    monkeypatch.setattr(routes, "STARTUP_DELAY_S", 0.05)
    app = web.Application()
    instance = types.SimpleNamespace(routes=web.RouteTableDef(), app=app, loop=None)
    fake_server = types.ModuleType("server")
    fake_server.PromptServer = types.SimpleNamespace(instance=instance)
    monkeypatch.setitem(sys.modules, "server", fake_server)

    assert routes.register_with_comfyui() is True
    assert emulator.state.count("pricing") == 0           # not at import / registration
    before = len(web.Application().on_startup)              # aiohttp's own cleanup hook
    assert len(app.on_startup) == before + 1
    assert any(getattr(r, "path", "") == "/fal/prices" for r in instance.routes)

    async def start_server():
        for callback in app.on_startup:
            await callback(app)
        assert emulator.state.count("pricing") == 0       # start-up itself does not wait
        for _ in range(100):
            await asyncio.sleep(0.05)
            task = routes.price_refresh.task
            if task is not None and task.done():
                return task.result()
        raise AssertionError("no price refresh after start-up")

    assert asyncio.run(start_server()) is True
    assert emulator.state.count("pricing") == 1
    assert pricing.prices.price(COLOR).source == "fal"


def test_a_running_server_gets_the_refresh_via_its_loop(clean):
    app = web.Application()
    app.freeze()

    async def scenario():
        return routes.schedule_startup_refresh(app, asyncio.get_running_loop())

    assert asyncio.run(scenario()) == "call_later"
    assert routes.schedule_startup_refresh(None, None) == ""


# -- /fal/spend ----------------------------------------------------------------------

@pytest.mark.asyncio
async def test_spend_lists_the_ledger(client, seen):
    status, body = await get(client, seen, "/fal/spend")
    assert status == 200 and body["entries"] == [] and body["total"] == 0
    assert body["report"] == "No fal calls in this session yet."

    pricing.ledger.add(LedgerEntry(COLOR, "req-1", False, 0.04, "p1", at=1000.0))
    pricing.ledger.add(LedgerEntry(COLOR, "req-1", True, 0.0, "p2", at=1001.0))
    pricing.ledger.add(LedgerEntry(FLUX, "req-2", False, 0.0375, "p2", at=1002.0))
    status, body = await get(client, seen, "/fal/spend")
    assert status == 200
    assert body["entries"][0] == {"endpoint": COLOR, "title": "fal Color Correction",
                                  "request_id": "req-1", "cached": False, "estimated_usd": 0.04,
                                  "billed_usd": None, "billed_units": None,
                                  "state": "sent (estimate)", "queue_s": None, "run_s": None,
                                  "prompt_id": "p1", "at": 1000.0}
    assert [e["cached"] for e in body["entries"]] == [False, True, False]
    assert [e["estimated_usd"] for e in body["entries"]] == [0.04, 0.0, 0.0375]
    assert body["total"] == pytest.approx(0.0775)
    assert (body["billed"], body["cached"]) == (2, 1)
    assert body["report"] == pricing.ledger.report()


# -- origin and keys ------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/fal/prices", "/fal/spend"])
@pytest.mark.asyncio
async def test_foreign_origin_is_refused(client, seen, emulator, monkeypatch, path):
    monkeypatch.setenv("FAL_KEY", ENV_KEY)
    pricing.ledger.add(LedgerEntry(COLOR, "req-secret", False, 0.04, "p1"))
    for headers in ({"Origin": "http://evil.example"}, {"Origin": "http://127.0.0.1:1"},
                    {"Origin": "null"}, {"Sec-Fetch-Site": "cross-site"}):
        status, answer = await get(client, seen, path, **headers)
        assert status == 403 and answer["error"].startswith("refused:"), headers
        assert "req-secret" not in json.dumps(answer)
    assert routes.price_refresh.task is None and emulator.state.count("pricing") == 0
    host = f"{client.host}:{client.port}"
    status, _ = await get(client, seen, path, Origin=f"http://{host}")
    assert status == 200
    await settle()


@pytest.mark.asyncio
async def test_no_key_in_any_answer_or_log(client, seen, emulator, monkeypatch):
    monkeypatch.setenv("FAL_KEY", ENV_KEY)
    keystore.add("studio", SAVED_KEY)
    emulator.state.add_fault("pricing", 401)
    await get(client, seen, "/fal/prices")
    await settle()
    routes.price_refresh.failed_at = 0.0
    await get(client, seen, "/fal/prices")
    await settle()
    await get(client, seen, "/fal/prices")
    pricing.ledger.add(LedgerEntry(COLOR, "req-1", False, 0.05, "p1"))
    await get(client, seen, "/fal/spend")
    assert any("HTTP 401" in line for line in seen)
    assert_no_key(seen, ENV_KEY, SAVED_KEY)
    assert_no_key([json.dumps(emulator.state.entries(), default=str)], ENV_KEY, SAVED_KEY)


# -- what a fal node tells its price badge after a run ---------------------------------

def _ui(name, **inputs):
    from conftest import node
    instance = node(name)
    returned = asyncio.run(getattr(instance, instance.FUNCTION)(**inputs))
    return returned["ui"]


def test_executed_data_carries_the_runs_count_and_cost(fal):
    """The badge's real request count after a run, and the run's cost (cached: $0).

    Needs the runtime's fal_items / fal_cost / fal_cached / fal_megapixels (see the
    proposed runtime diff); the front end falls back to fal_status and the request ids.
    """
    from conftest import sample_image
    image = sample_image(100, 50, batch=2, seed=41)
    price = pricing.prices.price(COLOR).unit_price      # the run refreshes prices alongside
    ui = _ui("FalColorCorrection", image=image, seed=5)
    if "fal_items" not in ui:
        pytest.skip("the runtime does not send fal_items/fal_cost yet")
    assert ui["fal_items"] == [2] and ui["fal_cached"] == [0]
    assert ui["fal_cost"] == [pytest.approx(2 * price)]
    assert ui["fal_megapixels"] == [pytest.approx(0.005)]
    assert len(ui["fal_request_ids"]) == 2
    again = _ui("FalColorCorrection", image=image, seed=5)
    assert again["fal_items"] == [2] and again["fal_cached"] == [2] and again["fal_cost"] == [0]

    price = pricing.prices.price(KONTEXT).unit_price
    kontext = _ui("FalFluxKontextMaxMulti", image_1=sample_image(64, 64, batch=2, seed=42),
                  image_2=sample_image(32, 32, seed=43), num_images=2, seed=1)
    assert kontext["fal_items"] == [1]       # every image in one request
    assert kontext["fal_cost"] == [pytest.approx(2 * price)]


def test_a_price_refresh_puts_no_httpx_line_in_the_console(clean, emulator, capture_logs):
    """httpx logs each request at INFO, naming fal's host even when the egress transport
    sent it to the owner's server: ComfyUI's console showed one at every start-up. Unless
    the user set httpx's level, the pack's clients keep only its warnings."""
    import logging

    httpx_log = logging.getLogger("httpx")
    httpx_log.setLevel(logging.NOTSET)
    assert asyncio.run(pricing.prices.refresh("price-test-key-1234", emulator.base_url))
    assert not [r for r in capture_logs if "HTTP Request" in r], capture_logs
    assert any("pricing" in e["kind"] for e in emulator.state.log)   # the call was made
