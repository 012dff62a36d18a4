"""The owner's ceilings against what a review found could still pass them (issue 20's
rule: a ceiling holds whatever a workflow, a list or a hostile answer does), against the
emulator with the real fal-client.

- A submit sent again after its answer was lost is a second possibly billed request: it
  must fit the ceilings like the first, not ride on a hold its run already spent.
- A cost learned from fal's bill (per-second and vague units) is learned only from a
  request that made something, and only counts for inputs no larger than the ones it was
  learned from: a bill of 0 for a failed request, or a bill for a 16x16 image, must not
  price the next run's 4 MP images.
"""

from __future__ import annotations

import asyncio
import json

import pytest

import reliability_helpers as rh
from conftest import pack, run_node, sample_image

from comfyui_fal_edit.nodes import pricing, server_settings
from comfyui_fal_edit.nodes.errors import FalNodeError
from comfyui_fal_edit.nodes.settings import FalSettings
from fal_emulator.server import EmulatorServer

NODE = "FalColorCorrection"               # $0.04 an image (the shipped price)
AURA = "fal-ai/aura-sr"                   # $0.0009 a second at the emulator


def jobs(fal) -> int:
    return sum(1 for e in fal.state.entries("submit") if e["request_id"] in fal.server.jobs)


# -- a resend after a lost answer is held against the ceilings too -------------------------

def test_a_resend_after_a_lost_answer_does_not_pass_the_per_prompt_ceiling(fal):
    """Two images at $0.04 under a $0.08 per-prompt ceiling: both submits lose their
    answer. Sending both again would make 4 possibly billed requests ($0.16 counted) in a
    prompt the owner capped at $0.08: the resends are refused and say why."""
    fal.state.add_fault("submit", "lost_answer", times=2)
    out = rh.run_guarded(NODE, 30.0, image=sample_image(48, 40, batch=2, seed=61),
                         settings=FalSettings(max_usd_per_prompt=0.08))
    assert isinstance(out.error, FalNodeError), out.error
    assert jobs(fal) == 2, "a resend went past the per-prompt ceiling"
    assert pricing.ledger.spent() == pytest.approx(0.08)
    message = str(out.error)
    assert rh.sentence_problems(message, "fal Color Correction") == [], message
    assert "spend guard did not send it again" in message and "fal may have billed" in message


def test_a_resend_after_a_lost_answer_does_not_pass_the_daily_ceiling(fal):
    fal.state.add_fault("submit", "lost_answer", times=2)
    server_settings.update({"max_usd_per_day": 0.08})
    out = rh.run_guarded(NODE, 30.0, image=sample_image(48, 40, batch=2, seed=62),
                         settings=FalSettings(max_usd_per_prompt=0.0))
    assert isinstance(out.error, FalNodeError), out.error
    assert jobs(fal) == 2
    assert server_settings.spent_today() == pytest.approx(0.08)


def test_a_resend_within_the_ceilings_still_goes_and_counts(fal):
    fal.state.add_fault("submit", "lost_answer", times=1)
    images, _, _ = run_node(NODE, image=sample_image(48, 40, seed=63),
                            settings=FalSettings(max_usd_per_prompt=0.08))
    assert images.shape[0] == 1 and jobs(fal) == 2
    # Both requests counted: the lost one at its estimate, the resend at fal's bill (1 image
    # at the price the pack knows).
    assert pricing.ledger.spent() == pytest.approx(0.08)
    assert pricing.ledger.held() == 0


def test_a_list_whose_answers_are_lost_stops_at_the_ceiling(fal):
    """A list input of 4 (ComfyUI calls the node 4 times at once on one loop), each
    submit's answer lost once, under a $0.16 per-prompt ceiling."""
    fal.state.add_fault("submit", "lost_answer", times=4)
    settings = FalSettings(max_usd_per_prompt=0.16)

    async def main():
        node = pack.NODE_CLASS_MAPPINGS[NODE]()
        return await asyncio.gather(*(node.run(image=sample_image(seed=70 + i),
                                               settings=settings)
                                      for i in range(4)), return_exceptions=True)

    asyncio.run(main())
    assert jobs(fal) <= 4
    assert pricing.ledger.spent() <= 0.16 + 1e-9


# -- costs learned from fal's bill ---------------------------------------------------------

@pytest.fixture
def priced(fal):
    assert asyncio.run(pricing.prices.refresh("price-test-key-1234", fal.base_url))
    fal.reset()
    return fal


def run_aura(image, **settings):
    return run_node("FalImageEndpoint", endpoint=AURA,
                    arguments=json.dumps({"upscale_factor": 4}), image=image,
                    settings=FalSettings(**settings))


def test_a_bill_of_nothing_for_a_failed_request_is_not_learned(priced, monkeypatch):
    """fal failed the request and billed 0 units: that says nothing about what the next,
    successful one costs. Learned as $0, 100 requests would pass any ceiling."""
    original = EmulatorServer._result_response
    rh.results_fail_with_a_bill(monkeypatch, "0")
    with pytest.raises(FalNodeError):
        run_aura(sample_image(16, 16, seed=80))
    monkeypatch.setattr(EmulatorServer, "_result_response", original)
    assert pricing.learned.last(AURA, {"upscale_factor": 4}, pricing.PriceBook._server(),
                                megapixels=16 * 16 / 1e6) is None
    with pytest.raises(FalNodeError, match="spend guard"):
        run_aura(sample_image(16, 16, batch=4, seed=81), max_usd_per_prompt=0.3)
    assert priced.state.count("submit") == 1


def test_a_cost_learned_on_a_small_image_does_not_price_a_large_one(priced, statuses):
    """fal bills aura-sr per second, and a 4 MP image takes longer than a 16x16 one: the
    16x16 run's bill is no estimate for it. Counted conservatively until one is billed."""
    run_aura(sample_image(16, 16, seed=82))
    assert "billed $0.0009 by fal" in statuses[-1]
    with pytest.raises(FalNodeError, match="spend guard"):
        run_aura(sample_image(2048, 2048, batch=2, seed=83), max_usd_per_prompt=0.3)
    # The same size, or a smaller one, is priced from the bill.
    run_aura(sample_image(16, 16, batch=2, seed=84), max_usd_per_prompt=0.3)
    assert "what fal last billed for these inputs" in statuses[-1]
    run_aura(sample_image(8, 8, seed=85), max_usd_per_prompt=0.3)
    assert "what fal last billed for these inputs" in statuses[-1]


# -- through a proxy, a 502 or 504 may come after fal made the job -------------------------

class GatewayProxy:
    """A fal-js proxy behind which fal's answer was lost: like nginx or any gateway, it
    answers 502 (its upstream broke) with no fal request id, though fal made the job."""

    def __new__(cls, emulator_base: str, key: str):
        from aiohttp import web
        from servers import FalJsProxy

        class Proxy(FalJsProxy):
            def app(self):
                app = super().app()

                @web.middleware
                async def bad_gateway(request, handler):
                    try:
                        return await handler(request)
                    except Exception:
                        return web.json_response({"detail": "Bad Gateway"}, status=502)
                app.middlewares.append(bad_gateway)
                return app
        return Proxy(emulator_base, key)


def test_a_502_from_a_proxy_after_fal_made_the_job_stays_counted(fal, monkeypatch, statuses):
    """fal's ingress answers 502 without a request id when nothing reached a job, but a
    proxy answers it when fal's answer did not come back: that submit may be billed. It
    stays counted, and is sent again at most once, like any lost answer."""
    with GatewayProxy(fal.base_url, "proxy-own-key-5d2e") as proxy:
        monkeypatch.delenv("COMFYUI_FAL_BASE_URL")
        monkeypatch.setenv("COMFYUI_FAL_PROXY_URL", proxy.url)
        fal.state.add_fault("submit", "lost_answer", times=1)
        images, _, _ = run_node(NODE, image=sample_image(48, 40, seed=90))
    assert images.shape[0] == 1
    assert jobs(fal) == 2
    assert len(pricing.ledger.entries()) == 2, "the job behind the 502 was taken back"
    assert "fal may have billed 1 request whose answer was lost" in statuses[-1]


# -- a server the workflow picked can't lower what its requests count ---------------------

def test_fewer_images_from_a_server_the_workflow_picked_do_not_lower_the_count(fal, monkeypatch):
    """A hostile answer: the owner allowed a test server; a workflow asks it for 4 product
    shots ($0.16 counted) and its answer brings 1. Like its bill, that answer is not
    believed: the request stays counted at $0.16, not $0.04."""
    from fal_emulator import FalEmulator

    product_shot = "fal-ai/bria/product-shot"
    with FalEmulator() as other:
        original = other.server._result_response

        def one_image(job):
            if job.result and len(job.result.get("images") or []) > 1:
                job.result = {**job.result, "images": job.result["images"][:1]}
            response = original(job)
            response.headers.pop("x-fal-billable-units", None)
            return response

        monkeypatch.setattr(other.server, "_result_response", one_image)
        server_settings.update({"allowed_servers": [other.base_url]})
        run_node("FalImageEndpoint", endpoint=product_shot,
                 arguments=json.dumps({"num_results": 4, "placement_type": "manual_placement"}),
                 image=sample_image(8, 8, seed=95),
                 settings=FalSettings(base_url=other.base_url, max_usd_per_prompt=0,
                                      max_usd_per_session=0))
        assert other.state.count("submit") == 1
    [entry] = pricing.ledger.entries()
    assert entry.billed_usd is None
    assert pricing.ledger.spent() == pytest.approx(0.16)
    assert server_settings.spent_today() == pytest.approx(0.16)
