"""The emulator serves every catalogue endpoint from the catalogue: strict, in fal's shapes."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import fal_client
import fal_client.client as fal_client_module

from catalogue_helpers import endpoints_by_shape, minimal_arguments
from comfyui_fal_edit.nodes import catalogue
from fal_emulator import ENDPOINTS, client_globals
from fal_emulator.specs import validate
from test_emulator import fetch_image, make_image, upload

KEY = "test-key-0000"


@pytest.fixture
def client(fal, monkeypatch):
    for name, value in client_globals(fal.base_url).items():
        monkeypatch.setattr(fal_client_module, name, value)
    return fal_client.AsyncClient(key=KEY)


def test_every_catalogue_endpoint_is_served_and_accepts_its_minimal_request():
    picture = make_image(24, 16)
    for endpoint_id, entry in catalogue.endpoints().items():
        spec = ENDPOINTS[endpoint_id]
        params, errors = validate(spec, minimal_arguments(endpoint_id, "http://x/files/a/b.png"))
        assert not errors, (endpoint_id, errors)
        if spec.from_catalogue:
            assert spec.output_fields[0] == entry["output"]["images"]
            images = [picture] * len(spec.image_fields)
            out = spec.op(images, params, 1, len(spec.mask_fields))
            assert isinstance(out, Image.Image) and out.width >= 1, endpoint_id


def test_an_unknown_field_is_a_422_for_every_endpoint():
    for endpoint_id in ("fal-ai/birefnet", "fal-ai/image-editing/background-change"):
        args = {**minimal_arguments(endpoint_id, "http://x/files/a/b.png"), "imag_url": "x"}
        _, errors = validate(ENDPOINTS[endpoint_id], args)
        assert [(e["loc"], e["type"]) for e in errors] == [(["body", "imag_url"], "extra_forbidden")]


def test_types_ranges_and_enums_come_from_fals_schema():
    fill = ENDPOINTS["fal-ai/flux-pro/v1/fill"]
    url = "http://x/files/a/b.png"
    base = minimal_arguments("fal-ai/flux-pro/v1/fill", url)
    _, errors = validate(fill, {**base, "num_images": 0})
    assert errors and errors[0]["type"] == "greater_than_equal"
    _, errors = validate(fill, {**base, "output_format": "bmp"})
    assert errors and errors[0]["type"] == "literal_error"
    _, errors = validate(fill, {**base, "num_images": "2"})
    assert errors and errors[0]["type"] == "int_type"


def test_ranges_match_fal_where_the_emulator_was_stricter():
    url = "http://x/files/a/b.png"
    for endpoint_id, args, ok in [
        ("fal-ai/image-editing/color-correction", {"guidance_scale": 0}, True),
        ("fal-ai/post-processing/sharpen", {"sharpen_alpha": 5}, True),
        ("fal-ai/post-processing/sharpen", {"sharpen_alpha": 0.1}, True),
        ("fal-ai/post-processing/sharpen", {"sharpen_alpha": 5.1}, False),
        ("fal-ai/luma-photon/modify", {"strength": 0.5, "aspect_ratio": "1:1"}, True),  # no prompt
    ]:
        _, errors = validate(ENDPOINTS[endpoint_id], {"image_url": url, **args})
        assert (not errors) is ok, (endpoint_id, args, errors)


@pytest.mark.asyncio
async def test_background_removal_answers_a_single_cut_out_with_alpha(client, fal):
    url = await upload(client, make_image(40, 30))
    result = await client.run("fal-ai/birefnet", {"image_url": url})
    assert set(result) == {"image"}          # the catalogue's output shape: one image
    out = await fetch_image(result["image"]["url"])
    assert out.mode == "RGBA" and out.size == (40, 30)
    alpha = np.asarray(out)[..., 3]
    assert alpha[0, 0] == 0 and alpha[15, 20] == 255


@pytest.mark.asyncio
async def test_list_endpoint_takes_every_reference_and_answers_an_images_list(client, fal):
    endpoint_id = "fal-ai/bytedance/seedream/v4.5/edit"
    assert endpoint_id in endpoints_by_shape()["list"]
    red, blue = Image.new("RGB", (32, 32), (250, 0, 0)), Image.new("RGB", (32, 32), (0, 0, 250))
    urls = [await upload(client, red), await upload(client, blue)]
    result = await client.run(endpoint_id, {"prompt": "mix", "image_urls": urls})
    assert isinstance(result["images"], list) and len(result["images"]) == 1


@pytest.mark.asyncio
async def test_inpainting_changes_only_the_white_part_of_the_mask(client, fal):
    picture = make_image(40, 40)
    mask = Image.new("L", (40, 40), 0)
    mask.paste(255, (0, 0, 20, 40))
    urls = await upload(client, picture), await upload(client, mask.convert("RGB"))
    result = await client.run("fal-ai/flux-pro/v1/fill", {"prompt": "a hat", "image_url": urls[0],
                                                          "mask_url": urls[1], "output_format": "png"})
    out = np.asarray((await fetch_image(result["images"][0]["url"])).convert("RGB"), float)
    before = np.asarray(picture, float)
    assert np.abs(out[:, 20:] - before[:, 20:]).max() == 0
    assert np.abs(out[:, :20] - before[:, :20]).mean() > 1
    assert "has_nsfw_concepts" in result


@pytest.mark.asyncio
async def test_a_retired_endpoint_is_application_not_found(client, fal):
    fal.state.retired_endpoints = {"fal-ai/bytedance/seededit/v3/edit-image"}
    url = await upload(client)
    with pytest.raises(fal_client.client.FalClientHTTPError) as caught:
        await client.submit("fal-ai/bytedance/seededit/v3/edit-image",
                            {"image_url": url, "prompt": "x"})
    assert caught.value.status_code == 404 and "not found" in caught.value.message
