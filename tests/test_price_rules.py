"""Prices that depend on the request (Recraft's vector styles, num_images, megapixels):
the estimate, the after-run cost, the ledger, the spend guard and the front end's badge
apply one rule, written once as data in nodes/pricing.py."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess

import pytest

from conftest import ROOT, node, sample_image

from comfyui_fal_edit.nodes import pricing
from comfyui_fal_edit.nodes.endpoints import BY_ENDPOINT
from comfyui_fal_edit.nodes.errors import FalNodeError
from comfyui_fal_edit.nodes.settings import FalSettings

RECRAFT = "fal-ai/recraft/v3/image-to-image"
FLUX = "fal-ai/flux/dev/image-to-image"
KONTEXT = "fal-ai/flux-pro/kontext/max/multi"


def test_recraft_vector_styles_cost_twice_the_raster_price():
    price = pricing.Price(0.04, "image", "fal")
    raster = pricing.estimate(RECRAFT, [({"style": "realistic_image"}, 1.0)], price)
    vector = pricing.estimate(RECRAFT, [({"style": "vector_illustration"}, 1.0)] * 2, price)
    sub_style = pricing.estimate(RECRAFT, [({"style": "vector_illustration/line_art"}, 1.0)], price)
    assert raster.total == pytest.approx(0.04)
    assert vector.total == pytest.approx(0.16) and vector.units == 2
    assert sub_style.total == pytest.approx(0.08)
    assert vector.describe() == "≈ $0.160 · 2 image × $0.08 (vector style: 2 × $0.04)"
    # The style names that cost more are the vector ones of the node's own list.
    styles = next(f for f in BY_ENDPOINT[RECRAFT].fields if f.name == "style").choices
    doubled = [s for s in styles
               if pricing.estimate(RECRAFT, [({"style": s}, 1.0)], price).total > 0.04 + 1e-9]
    assert doubled and all(s.startswith("vector_illustration") for s in doubled)
    assert len(doubled) == sum(1 for s in styles if "vector" in s)


def test_the_prices_route_serves_the_rules_with_the_prices():
    table = pricing.prices.table()
    assert {"field": "style", "multiplier": 2.0, "prefix": "vector_illustration",
            "why": "vector style"} in table[RECRAFT]["rules"]
    assert all({"field": "num_images", "per_value": True, "why": "images per request",
                "default": 1, "most": 4} in row["rules"] for row in table.values())


CASES = [
    # endpoint, the node's widget values, requests, megapixels per request, cached requests
    (RECRAFT, {"style": "vector_illustration/roundish_flat"}, 3, 1.0, 0),
    (RECRAFT, {"style": "vector_illustration"}, 3, 1.0, 1),
    (RECRAFT, {"style": "digital_illustration/pixel_art"}, 2, 1.0, 0),
    (FLUX, {"num_images": 3}, 2, 1.5, 0),
    (KONTEXT, {"num_images": 4}, 1, 1.0, 0),
]


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js runs web/lib/price.js")
def test_the_front_end_applies_the_same_rules_as_the_server():
    table = pricing.prices.table()
    expected, calls = [], []
    for endpoint_id, inputs, requests, megapixels, cached in CASES:
        price = pricing.prices.price(endpoint_id)
        paid = requests - cached
        expected.append(pricing.estimate(endpoint_id, [(inputs, megapixels)] * paid, price).total)
        calls.append([table[endpoint_id], {"images": requests, "inputs": inputs,
                                           "megapixels": megapixels, "cached": cached}])
    script = (f"import {{ estimateRun }} from {json.dumps((ROOT / 'web/lib/price.js').as_uri())};"
              f"const calls = {json.dumps(calls)};"
              "console.log(JSON.stringify(calls.map(([p, o]) => estimateRun(p, o).total)));")
    answer = subprocess.run(["node", "--input-type=module", "-e", script], capture_output=True,
                            text=True, check=True, timeout=60)
    assert json.loads(answer.stdout) == pytest.approx(expected)
    assert expected[0] == pytest.approx(3 * 2 * pricing.prices.price(RECRAFT).unit_price)


# -- the runtime: estimate, after-run cost, ledger and guard use the request's price ----------

def run_recraft(style: str, batch: int = 1, **settings):
    values = {"prompt": "winter", "strength": 0.5, "style": style, "colors": "", "style_id": "",
              "negative_prompt": ""}
    recraft = node("FalRecraftV3ImageToImage")
    result = asyncio.run(recraft.run(image=sample_image(32, 32, batch=batch, seed=len(style)),
                                  settings=FalSettings(**settings), **values))
    return result["ui"]


def test_a_vector_run_is_charged_twice_the_raster_price(fal):
    asyncio.run(pricing.prices.refresh("price-test-key-1234", fal.base_url))
    unit = pricing.prices.price(RECRAFT).unit_price
    ui = run_recraft("vector_illustration/line_art", batch=2)
    assert ui["fal_cost"] == [pytest.approx(2 * 2 * unit)]
    assert "(vector style: 2 ×" in ui["fal_status"][0]
    assert [e.estimated_usd for e in pricing.ledger.entries()] == [pytest.approx(2 * unit)] * 2
    raster = run_recraft("realistic_image")
    assert raster["fal_cost"] == [pytest.approx(unit)]


def test_the_spend_guard_counts_the_vector_price(fal):
    asyncio.run(pricing.prices.refresh("price-test-key-1234", fal.base_url))
    unit = pricing.prices.price(RECRAFT).unit_price
    limit = 1.5 * unit            # one raster image fits, one vector image does not
    fal.reset()
    with pytest.raises(FalNodeError, match="spend guard stopped this run"):
        run_recraft("vector_illustration", max_usd_per_prompt=limit)
    assert fal.state.log == []
    run_recraft("realistic_image", max_usd_per_prompt=limit)
