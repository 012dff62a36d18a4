"""What fal billed, beside the estimate (issue 20, items 2 and 3): the result's
x-fal-billable-units × the unit price replaces the estimate in the ledger, today's spend
and the ceilings, and shows in the node's status, its UI data, the spend view and the
fal Spend node; "estimate" where fal sent no bill. A unit no one can count before a run
(per second, a vague unit) is learned from fal's bill."""

from __future__ import annotations

import asyncio
import json

import pytest

import reliability_helpers as rh
from conftest import node, run_node, sample_image

from comfyui_fal_edit.nodes import pricing, routes, server_settings
from comfyui_fal_edit.nodes.errors import FalNodeError
from comfyui_fal_edit.nodes.settings import FalSettings
from fal_emulator import billing
from fal_emulator.server import EmulatorServer

FLUX = "FalFluxDevImageToImage"          # $0.03 a megapixel at the emulator
AURA = "fal-ai/aura-sr"                  # $0.0009 a second
CARTOON = "fal-ai/image-editing/cartoonify"   # $0.2 a "unit"


@pytest.fixture
def priced(fal):
    assert asyncio.run(pricing.prices.refresh("price-test-key-1234", fal.base_url))
    fal.reset()
    return fal


def run_flux(**settings):
    flux = node(FLUX)
    return asyncio.run(flux.run(image=sample_image(48, 32, seed=1), prompt="a duck",
                                strength=0.9, num_inference_steps=10, guidance_scale=3.5,
                                num_images=1, enable_safety_checker=True, output_format="jpeg",
                                acceleration="none", seed=3, settings=FalSettings(**settings)))


def test_the_bill_replaces_the_estimate_everywhere(priced, statuses):
    """fal made a 1500x1000 image (1.5 MP, billed as 2) from a 48x32 input (estimated as
    1 MP): the bill ($0.06) is what counts, shown beside the estimate ($0.03)."""
    priced.state.output_sizes = [[1500, 1000]]
    ui = run_flux()["ui"]
    assert billing.total_usd(priced.state) == pytest.approx(0.06)
    assert "≈ $0.030 (estimate) · 1 MP × $0.03" in statuses[-1]
    assert "billed $0.060 by fal" in statuses[-1]
    assert ui["fal_cost"] == [pytest.approx(0.03)] and ui["fal_billed"] == [pytest.approx(0.06)]
    assert ui["fal_counted"] == [pytest.approx(0.06)]
    [entry] = pricing.ledger.entries()
    assert (entry.estimated_usd, entry.billed_usd, entry.billed_units) == \
        (pytest.approx(0.03), pytest.approx(0.06), 2.0)
    assert pricing.ledger.spent() == pytest.approx(0.06)
    assert server_settings.spent_today() == pytest.approx(0.06)
    # The spend view and the fal Spend node.
    spend = routes._spend_answer()
    assert spend["entries"][0]["estimated_usd"] == pytest.approx(0.03)
    assert spend["entries"][0]["billed_usd"] == pytest.approx(0.06)
    assert spend["entries"][0]["state"] == "billed"
    assert spend["billed_total"] == pytest.approx(0.06) and spend["total"] == pytest.approx(0.06)
    report, total = run_node("FalSpend")
    assert f"| {entry.request_id} | billed | 0.0300 | 0.0600" in report
    assert "$0.0600 billed by fal for 1 request(s)" in report and total == pytest.approx(0.06)


def test_without_a_bill_the_estimate_counts_and_says_so(priced, statuses, monkeypatch):
    original = EmulatorServer._result_response

    def without_header(self, job):
        response = original(self, job)
        response.headers.pop("x-fal-billable-units", None)
        return response

    monkeypatch.setattr(EmulatorServer, "_result_response", without_header)
    ui = run_flux()["ui"]
    assert "billed: estimate (fal sent no bill)" in statuses[-1]
    assert ui["fal_billed"] == [None]
    [entry] = pricing.ledger.entries()
    assert entry.billed_usd is None and pricing.ledger.spent() == pytest.approx(0.03)
    assert "| sent (estimate) | 0.0300 | estimate" in pricing.ledger.report()


def test_a_malformed_bill_is_no_bill():
    from comfyui_fal_edit.nodes.stages.queue import billable_units
    assert billable_units({"x-fal-billable-units": "2.5"}) == 2.5
    for bad in ("NaN", "-1", "inf", "lots", None):
        assert billable_units({"x-fal-billable-units": bad} if bad else {}) is None


def test_the_ceilings_count_the_bill(priced):
    """The bill is more than the estimate: the next run's guard counts the bill."""
    priced.state.output_sizes = [[1500, 1000]]
    run_flux()                                               # $0.06 billed, $0.03 estimated
    with pytest.raises(FalNodeError, match=r"\$0.030 plus \$0.060 spent"):
        run_flux(max_usd_per_prompt=0.08, cache="off")


# -- item 3: per second and vague units ---------------------------------------------------

def run_catalogue(endpoint, arguments, **inputs):
    return run_node("FalImageEndpoint", endpoint=endpoint, arguments=json.dumps(arguments),
                    **inputs)


def test_a_per_second_price_is_learned_from_the_bill(priced, statuses):
    """Before a run: counted conservatively (UNPRICED), the badge says "price varies". After
    one: the bill for those inputs counts, and the badge shows it, marked as such."""
    server_settings.update({"max_usd_per_prompt": 0.3})
    unpriced = pricing.UNPRICED.unit_price
    with pytest.raises(FalNodeError, match=rf"\${2 * unpriced:.3f} plus"):
        run_catalogue(AURA, {"upscale_factor": 4}, image=sample_image(16, 16, batch=2))
    run_catalogue(AURA, {"upscale_factor": 4}, image=sample_image(16, 16, seed=1))
    assert "fal bills $0.0009 per second, which can't be counted before the run" in statuses[-1]
    assert "billed $0.0009 by fal" in statuses[-1]
    # The $0.25 stood in for the bill until it came; the status must not say it still counts.
    assert "counted as ≈ $0.250 ($0.25 an image) against the spend limits until fal's bill" \
        in statuses[-1]
    [entry] = pricing.ledger.entries()
    assert entry.estimated_usd == pytest.approx(unpriced)
    assert entry.billed_usd == pytest.approx(billing.total_usd(priced.state)) == \
        pytest.approx(0.0009)
    # The same inputs again: the last bill counts (2 requests now fit under $0.30).
    run_catalogue(AURA, {"upscale_factor": 4}, image=sample_image(16, 16, batch=2, seed=2))
    assert "2 request × $0.0009, what fal last billed for these inputs" in statuses[-1]
    # Other inputs: not learned, counted conservatively again.
    with pytest.raises(FalNodeError, match="spend guard"):
        run_catalogue(AURA, {"checkpoint": "v2"}, image=sample_image(16, 16, batch=2, seed=3))
    learned = routes._prices_answer()["learned"][AURA]
    assert learned == [{"inputs": {"upscale_factor": 4}, "usd": pytest.approx(0.0009)}]


def test_a_vague_unit_is_learned_too(priced, statuses):
    run_catalogue(CARTOON, {}, image=sample_image(16, 16, seed=4))
    assert "fal bills $0.2 per units" in statuses[-1] and "billed $0.200 by fal" in statuses[-1]
    assert pricing.learned.last(CARTOON, {}, pricing.PriceBook._server()) == pytest.approx(0.2)


def test_fal_queue_and_run_times_show_in_the_ledger_when_known():
    entry = pricing.LedgerEntry("e", "r1", False, 0.05, None, billed_usd=0.05, queue_s=1.25,
                                run_s=3.5)
    book = pricing.Ledger()
    book.add(entry)
    assert "| r1 | billed | 0.0500 | 0.0500 | queue 1.2s, run 3.5s" in book.report()


def test_a_bill_on_an_error_answer_counts(priced, monkeypatch):
    """fal answered the result with an error, and said what it billed: that counts."""
    rh.results_fail_with_a_bill(monkeypatch, "3")
    with pytest.raises(FalNodeError):
        run_flux()
    [entry] = pricing.ledger.entries()
    assert entry.billed_units == 3 and entry.billed_usd == pytest.approx(0.09)
    assert pricing.ledger.spent() == pytest.approx(0.09)
    assert server_settings.spent_today() == pytest.approx(0.09)


def test_the_spend_report_has_a_header_for_every_column():
    """The fal Spend node shows the report as a table: a row with fal's times has a heading
    for them, and a row without has a placeholder, so the columns line up."""
    book = pricing.Ledger()
    timed = pricing.LedgerEntry("fal-ai/aura-sr", "r1", False, 0.25, None, billed_usd=0.0009,
                                queue_s=0.5, run_s=1.0)
    book.add(timed)
    book.add(pricing.LedgerEntry("fal-ai/post-processing/sharpen", "r2", False, 0.002, None))
    header, *rows, total = book.report().splitlines()
    assert header.endswith("| time on fal")
    assert [row.count(" | ") for row in rows] == [header.count(" | ")] * 2
    assert rows[1].endswith("| -") and total.startswith("total this session")
