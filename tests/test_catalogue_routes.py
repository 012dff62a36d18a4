"""GET /fal/catalogue/{id} (fal Image Endpoint's form) and a catalogue endpoint's price."""

from __future__ import annotations

import asyncio

import pytest
import pytest_asyncio

from comfyui_fal_edit.nodes import pricing, routes

from test_price_routes import TestClient, TestServer, clean, emulator, get, seen  # noqa: F401

SEEDREAM = "fal-ai/bytedance/seedream/v4.5/edit"


@pytest_asyncio.fixture
async def client(clean):  # noqa: F811
    async with TestClient(TestServer(routes.make_app())) as c:
        yield c


@pytest.mark.asyncio
async def test_catalogue_route_gives_one_endpoints_schema(client, seen):  # noqa: F811
    status, body = await get(client, seen, f"/fal/catalogue/{SEEDREAM}")
    assert status == 200 and body["id"] == SEEDREAM
    assert body["input"]["image_urls"]["image"] == "urls" and body["multi"] is True
    assert body["sockets"]["image_urls"] == ["image", "image_2", "image_3", "image_4"]
    status, body = await get(client, seen, "/fal/catalogue/fal-ai/bytedance/seededit/v3/edit-image")
    assert body["retired"] and body["alternatives"]
    status, body = await get(client, seen, "/fal/catalogue/fal-ai/nope")
    assert status == 404 and "not in the catalogue" in body["error"]


@pytest.mark.asyncio
async def test_asking_for_a_catalogue_endpoints_price_fetches_it_once(client, seen, emulator,  # noqa: F811
                                                                      monkeypatch):
    monkeypatch.setenv("FAL_KEY", "test-key-1234")
    monkeypatch.setenv("COMFYUI_FAL_BASE_URL", emulator.base_url)
    status, body = await get(client, seen, f"/fal/prices?endpoint_id={SEEDREAM}")
    assert body["nodes"]["FalImageEndpoint"]["endpoint_widget"] == "endpoint"
    assert body["prices"][SEEDREAM]   # the answer waited for the lookup
    await asyncio.gather(*routes._price_tasks)
    status, body = await get(client, seen, f"/fal/prices?endpoint_id={SEEDREAM}")
    assert {k: body["prices"][SEEDREAM][k] for k in ("unit_price", "unit", "source")} == \
        {"unit_price": 0.04, "unit": "image", "source": "fal"}
    asked = [e for e in emulator.state.entries("pricing") if SEEDREAM in e.get("endpoints", ())]
    assert len(asked) == 1
    assert pricing.prices.price(SEEDREAM).unit_price == 0.04


@pytest.mark.asyncio
async def test_an_unpriced_endpoint_says_why(client, seen, emulator, monkeypatch):  # noqa: F811
    """The badge's "price ?" comes with a reason: no key to ask fal with, or not on fal's list."""
    unlisted = "bria/fibo-edit/colorize"   # in the catalogue, not in the emulator's price list
    status, body = await get(client, seen, f"/fal/prices?endpoint_id={unlisted}")
    assert body["can_ask_fal"] is False and body["not_listed"] == []
    assert unlisted not in body["prices"]
    monkeypatch.setenv("FAL_KEY", "test-key-1234")
    monkeypatch.setenv("COMFYUI_FAL_BASE_URL", emulator.base_url)
    status, body = await get(client, seen, f"/fal/prices?endpoint_id={unlisted}")
    await asyncio.gather(*routes._price_tasks)
    status, body = await get(client, seen, "/fal/prices")
    assert body["can_ask_fal"] is True and body["not_listed"] == [unlisted]
    status, body = await get(client, seen, f"/fal/prices?endpoint_id={SEEDREAM}")
    assert SEEDREAM in body["prices"] and SEEDREAM not in body["not_listed"]
