"""The owner's ceilings hold (issue 20): the five ways they could be passed, each played
against the emulator, which bills like fal (fal_emulator/billing.py). In each, what the
pack counts is at least what the emulator billed, and a run the ceiling can't afford
sends nothing."""

from __future__ import annotations

import asyncio
import json

import pytest

from conftest import run_node, sample_image

from comfyui_fal_edit.nodes import pricing, server_settings
from comfyui_fal_edit.nodes.errors import FalNodeError
from comfyui_fal_edit.nodes.settings import FalSettings
from fal_emulator import FalEmulator, billing
from fal_emulator.server import EmulatorServer, FileStore

SEEDREAM = "fal-ai/bytedance/seedream/v4.5/edit"            # $0.04 an image
LCM = "fal-ai/fast-lcm-diffusion/image-to-image"            # $0.025 a megapixel
UPSCALER = "clarityai/crystal-upscaler"                     # $0.016 a megapixel
PRODUCT_SHOT = "fal-ai/bria/product-shot"                   # $0.04 an image
LAYERED = "fal-ai/qwen-image-layered"                       # $0.05 an image
NO_LIMIT = FalSettings(max_usd_per_prompt=0.0, max_usd_per_session=0.0)


def run(endpoint: str, arguments: dict, settings: FalSettings = NO_LIMIT, **sockets):
    return run_node("FalImageEndpoint", endpoint=endpoint, arguments=json.dumps(arguments),
                    settings=settings, **sockets)


def billed_by_emulator(fal) -> float:
    return billing.total_usd(fal.state)


def counted() -> float:
    return pricing.ledger.spent()


# 1. A catalogue price is asked only of fal or the owner's own server, kept per server,
#    and $0 is refused.

def test_a_price_quoted_by_a_server_the_workflow_picked_prices_nothing(fal, monkeypatch):
    """The owner allowed a test server; a workflow runs one node there, where the price
    list quotes $0. That quote is never asked for: the next runs to the owner's default
    server are counted at its price, and the per-prompt ceiling holds."""
    async def quoting_zero(self, request):
        return EmulatorServer._json_prices({PRODUCT_SHOT: (0.0, "image")})

    # Bound when the other server's app is made: only that one quotes $0.
    monkeypatch.setattr(EmulatorServer, "pricing", quoting_zero)
    with FalEmulator() as other:
        server_settings.update({"allowed_servers": [other.base_url], "max_usd_per_prompt": 0.2})
        run(PRODUCT_SHOT, {}, FalSettings(base_url=other.base_url, max_usd_per_prompt=0),
            image=sample_image(8, 8, seed=1))
        assert other.state.count("submit") == 1 and other.state.count("pricing") == 0
        assert pricing.prices.price(PRODUCT_SHOT).unit_price == pytest.approx(0.04)
        with pytest.raises(FalNodeError, match=r"spend guard.*\$0.400.*\$0.20 limit"):
            run(PRODUCT_SHOT, {}, image=sample_image(8, 8, batch=10, seed=2))
        assert fal.state.count("submit") == 0


def test_a_price_of_zero_is_refused(fal, monkeypatch):
    from fal_emulator.specs import PRICES
    monkeypatch.setitem(PRICES, PRODUCT_SHOT, (0.0, "image"))
    server_settings.update({"max_usd_per_prompt": 1.0})
    with pytest.raises(FalNodeError, match=r"its estimate \$2.500 .* \$1.00 limit"):
        run(PRODUCT_SHOT, {}, image=sample_image(8, 8, batch=10, seed=3))
    assert pricing.prices.price(PRODUCT_SHOT) is None
    assert fal.state.count("submit") == 0


# 2. Per-megapixel prices are counted on the output the arguments ask for.

def test_image_size_sets_the_megapixels_counted(fal):
    """5 frames of 8x8 at image_size 2048x2048 and num_images 4: 20 images of 4.2 MP,
    billed as 5 MP each ($2.50), not 0.01 MP of input."""
    server_settings.update({"max_usd_per_prompt": 1.0})
    arguments = {"prompt": "x", "image_size": {"width": 2048, "height": 2048}, "num_images": 4}
    with pytest.raises(FalNodeError, match=r"its estimate \$2.500 plus .* \$1.00 limit"):
        run(LCM, arguments, image=sample_image(8, 8, batch=5, seed=4))
    assert fal.state.count("submit") == 0
    # One that fits: counted as fal bills it.
    images, *_ = run(LCM, {**arguments, "image_size": "square_hd", "num_images": 2},
                     image=sample_image(8, 8, seed=5))
    assert images.shape[0] == 2
    assert billed_by_emulator(fal) == pytest.approx(2 * 2 * 0.025)      # 1.05 MP -> 2
    assert counted() == pytest.approx(billed_by_emulator(fal))
    assert pricing.ledger.entries()[0].estimated_usd == pytest.approx(2 * 2 * 0.025)


def test_a_scale_factor_scales_the_megapixels_counted(fal):
    """crystal-upscaler's scale_factor (up to 200): 32x32 x 100 = 3200x3200, 10.24 MP."""
    server_settings.update({"max_usd_per_prompt": 0.1})
    with pytest.raises(FalNodeError, match=r"its estimate \$0.176"):            # 11 MP
        run(UPSCALER, {"scale_factor": 100}, image=sample_image(32, 32, seed=6))
    assert fal.state.count("submit") == 0


def test_an_image_given_by_url_is_not_counted_as_nothing(fal):
    """No socket: the image comes by URL in `arguments`, its size unknown before the run.
    It is counted as the largest image fal makes, so the count stays above the bill."""
    from comfyui_fal_edit.nodes import imaging
    url = FileStore.url(fal.base_url, fal.server.files.put(
        imaging.png_bytes(sample_image(64, 64, seed=7)[0].mul(255).byte().numpy()),
        "image/png", "in.png"), "in.png")
    run(UPSCALER, {"image_url": url, "scale_factor": 2})
    assert billed_by_emulator(fal) > 0
    [entry] = pricing.ledger.entries()
    assert entry.estimated_usd >= billed_by_emulator(fal)
    assert entry.billed_usd == pytest.approx(billed_by_emulator(fal))


# 3. Every count input in the endpoint's schema counts.

def test_automatic_placement_and_num_results_count_every_result(fal):
    """Bria product shot, placement_type automatic, num_results 4: 40 results a request."""
    server_settings.update({"max_usd_per_prompt": 1.0})
    with pytest.raises(FalNodeError, match=r"its estimate \$4.800"):           # 3 x 40 x $0.04
        run(PRODUCT_SHOT, {"placement_type": "automatic", "num_results": 4},
            image=sample_image(8, 8, batch=3, seed=8))
    assert fal.state.count("submit") == 0
    images, *_ = run(PRODUCT_SHOT, {"placement_type": "automatic"},
                     image=sample_image(8, 8, seed=9))
    assert images.shape[0] == 10
    assert counted() == pytest.approx(billed_by_emulator(fal)) == pytest.approx(0.4)


def test_qwen_image_layered_with_its_defaults_succeeds_and_is_counted(fal):
    """num_layers defaults to 4: the answer's 4 images are expected, and counted."""
    images, *_ = run(LAYERED, {}, image=sample_image(8, 8, seed=10))
    assert images.shape[0] == 4
    assert counted() == pytest.approx(billed_by_emulator(fal)) == pytest.approx(4 * 0.05)


def test_an_unreadable_count_counts_as_its_maximum():
    endpoint = pricing._endpoint(PRODUCT_SHOT)
    assert endpoint.most_images({"num_results": None}) == 4
    assert endpoint.most_images({"num_results": 4.0}) == 4
    assert endpoint.most_images({"num_results": 2.5}) == 3
    assert endpoint.most_images({"placement_type": "automatic"}) == 10


# 4. Work fal did that the pack refuses is counted.

def test_a_float_count_is_the_count_fal_makes(fal):
    """num_images 4.0 passes the schema check (a whole number) and fal makes 4 images:
    counted as 4, and the answer's 4 images are taken, not refused."""
    images, *_ = run(SEEDREAM, {"prompt": "x", "num_images": 4.0},
                     image=sample_image(8, 8, seed=11))
    assert images.shape[0] == 4
    assert counted() == pytest.approx(billed_by_emulator(fal)) == pytest.approx(4 * 0.04)


def test_an_answer_too_large_to_decode_is_still_counted(fal, monkeypatch):
    """An answer over 100 MP is refused before decoding; fal made it and bills it."""
    from test_answers import png_header
    original = EmulatorServer._result_response
    huge = FileStore.url(fal.base_url, fal.server.files.put(png_header(12000, 12000),
                                                            "image/png", "x.png"), "x.png")

    def too_large(self, job):
        if job.result is not None:
            job.result = {**job.result, "images": [{**job.result["images"][0], "url": huge}]}
        return original(self, job)

    monkeypatch.setattr(EmulatorServer, "_result_response", too_large)
    with pytest.raises(FalNodeError, match="more than the 100 MP"):
        run(SEEDREAM, {"prompt": "x"}, image=sample_image(8, 8, seed=12))
    assert billed_by_emulator(fal) == pytest.approx(0.04)
    assert counted() == pytest.approx(0.04)
    assert server_settings.spent_today() == pytest.approx(0.04)


def test_the_daily_ceiling_stops_a_run_of_many_prompts(fal):
    """Prompts of 4 frames at $0.04 against a $0.40 daily ceiling: the third is refused
    before it sends anything; what the pack counted is what the emulator billed."""
    server_settings.update({"max_usd_per_day": 0.40})
    for prompt in range(3):
        try:
            run(PRODUCT_SHOT, {}, image=sample_image(8, 8, batch=4, seed=20 + prompt))
        except FalNodeError as exc:
            assert prompt == 2 and "daily ceiling" in str(exc)
    assert fal.state.count("submit") == 8
    assert server_settings.spent_today() == pytest.approx(billed_by_emulator(fal))
    assert billed_by_emulator(fal) <= 0.40


def test_prices_are_kept_per_server():
    book = pricing.PriceBook()
    book._prices = {"server:http://a/": {SEEDREAM: pricing.Price(0.04, "image", "fal")}}
    assert book.price(SEEDREAM, "server:http://a/").unit_price == 0.04
    assert book.price(SEEDREAM, "server:http://b/") is None
    asyncio.run(asyncio.sleep(0))


def test_a_bill_from_a_server_the_workflow_picked_does_not_replace_the_estimate(fal, monkeypatch):
    """A hostile answer: the owner allowed a test server; a workflow runs there and its
    results say fal billed 0 units. The request stays counted at its estimate, and nothing
    is learned from that bill for the owner's own server (aura-sr is billed per second, so
    a learned $0 would later count its requests as free)."""
    aura = "fal-ai/aura-sr"
    with FalEmulator() as other:
        original = other.server._result_response

        def billed_nothing(job):
            response = original(job)
            response.headers["x-fal-billable-units"] = "0"
            return response

        monkeypatch.setattr(other.server, "_result_response", billed_nothing)
        server_settings.update({"allowed_servers": [other.base_url]})
        for endpoint in (PRODUCT_SHOT, aura):
            run(endpoint, {}, FalSettings(base_url=other.base_url, max_usd_per_prompt=0,
                                          max_usd_per_session=0),
                image=sample_image(8, 8, seed=7))
        assert other.state.count("submit") == 2
    entries = pricing.ledger.entries()
    assert [e.billed_usd for e in entries] == [None, None]
    assert counted() == pytest.approx(0.04 + pricing.UNPRICED.unit_price)
    assert pricing.learned.table(pricing.PriceBook._server()) == {}
