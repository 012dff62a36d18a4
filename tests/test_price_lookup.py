"""A catalogue endpoint's price is looked up inside the run's deadline and its Cancel: a
price list that drips its answer a byte at a time (no read ever times out) must not hold
the node (issue 21, as far as pricing goes)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from aiohttp import web

from conftest import sample_image

from comfyui_fal_edit.nodes import pricing, runtime
from comfyui_fal_edit.nodes.host import Interrupted, host
from fal_emulator import FalEmulator
from fal_emulator.server import EmulatorServer

PRODUCT_SHOT = "fal-ai/bria/product-shot"


@pytest.fixture
def dripping(fal, monkeypatch):
    """The owner's default server, whose price list answers one space a second, forever."""
    started = threading.Event()

    async def drip(self, request):
        self.state.record("pricing", endpoint=None)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        started.set()
        while not self.stopping.is_set():
            await response.write(b" ")
            await asyncio.sleep(0.2)
        return response

    monkeypatch.setattr(EmulatorServer, "pricing", drip)   # bound by the server made next
    with FalEmulator() as server:
        monkeypatch.setenv("COMFYUI_FAL_BASE_URL", server.base_url)
        server.started = started
        yield server


def run_in_thread(outcome: dict) -> threading.Thread:
    def node():
        from conftest import run_node
        try:
            outcome["result"] = run_node("FalImageEndpoint", endpoint=PRODUCT_SHOT,
                                         arguments="{}", image=sample_image(8, 8))
        except BaseException as exc:   # noqa: BLE001 - handed to the test
            outcome["error"] = exc

    thread = threading.Thread(target=node, daemon=True)
    thread.start()
    return thread


def test_a_dripping_price_list_is_given_up_on_within_the_deadline(dripping, monkeypatch,
                                                                  statuses):
    monkeypatch.setattr(runtime, "PRICE_LOOKUP_S", 1.0)
    outcome: dict = {}
    thread = run_in_thread(outcome)
    thread.join(30)
    assert not thread.is_alive(), "the node still waits for the price list"
    assert "error" not in outcome, outcome.get("error")
    assert dripping.state.count("submit") == 1
    # Counted as unpriced: conservatively.
    assert pricing.ledger.spent() == pytest.approx(pricing.UNPRICED.unit_price)
    assert any("price unknown" in s for s in statuses)


def test_cancel_stops_the_price_lookup(dripping):
    outcome: dict = {}
    thread = run_in_thread(outcome)
    assert dripping.started.wait(20)
    time.sleep(0.3)
    host.interrupt_requested = True
    thread.join(30)
    assert not thread.is_alive(), "Cancel did not stop the node"
    assert isinstance(outcome.get("error"), Interrupted)
    assert dripping.state.count("submit") == 0
    assert pricing.ledger.entries() == []


def test_a_background_lookup_for_the_badge_gives_up_too(dripping, monkeypatch):
    """GET /fal/prices?endpoint_id=... asks in the background: a dripping answer ends it
    after PRICE_LOOKUP_LIMIT_S, not never."""
    from comfyui_fal_edit.nodes import routes
    monkeypatch.setattr(routes, "PRICE_LOOKUP_LIMIT_S", 0.5)

    async def lookups():
        started = await routes.schedule_price_lookups([PRODUCT_SHOT])
        done, pending = await asyncio.wait(started, timeout=20)
        return started, done, pending

    started, done, pending = asyncio.run(lookups())
    assert len(started) == 1 and not pending
    assert all(task.exception() is None for task in done)
    assert pricing.prices.price(PRODUCT_SHOT) is None
