"""fal Image Endpoint checks each endpoint against its own schema (not the TypeScript type
fal gives to several endpoints at once): the fields fal accepts are accepted, unions,
nullability, lengths, list items and whole numbers are checked before any upload, and
images go only into fields that take an image, inside objects and lists of objects too.
End to end through the node, against the emulator with the real fal-client."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import run_node, sample_image
from reliability_helpers import sentence_problems

from comfyui_fal_edit.nodes import catalogue
from comfyui_fal_edit.nodes.errors import FalNodeError

NODE = "FalImageEndpoint"
NANO_PRO_EDIT = "fal-ai/nano-banana-pro/edit"
SEEDREAM = "fal-ai/bytedance/seedream/v4.5/edit"


def run(endpoint: str, arguments: dict, **sockets):
    return run_node(NODE, endpoint=endpoint, arguments=json.dumps(arguments), **sockets)


def submitted(fal, endpoint: str) -> dict:
    (submit,) = fal.state.entries("submit", endpoint)
    return submit["payload"]


def mask_of(width: int, height: int) -> torch.Tensor:
    mask = torch.zeros((1, height, width))
    mask[:, :, : width // 2] = 1.0
    return mask


# -- fields fal's schema accepts, which the shared types refused ------------------------

@pytest.mark.parametrize("endpoint,arguments,sockets", [
    # fal types nano-banana-pro/edit with a type that lacks system_prompt (and suggested
    # "change it to `prompt`", which would have overwritten the user's prompt).
    (NANO_PRO_EDIT, {"prompt": "a red hat", "system_prompt": "Answer in one image."}, ("image",)),
    ("xai/grok-imagine-image/edit", {"prompt": "a red hat", "aspect_ratio": "16:9"}, ("image",)),
    ("fal-ai/wan/v2.7/edit", {"prompt": "a red hat", "output_format": "webp"}, ("image",)),
    # null where fal's schema says null
    (NANO_PRO_EDIT, {"prompt": "a red hat", "seed": None, "aspect_ratio": None}, ("image",)),
    # image_size: a preset name or an object, both alternatives of the union
    (SEEDREAM, {"prompt": "a red hat", "image_size": "square_hd"}, ("image",)),
    (SEEDREAM, {"prompt": "a red hat", "image_size": {"width": 1024, "height": 768}}, ("image",)),
    ("fal-ai/genfocus", {"focus_point": [0.25, 0.75]}, ("image",)),
    ("fal-ai/swin2sr", {"seed": 7.0}, ("image",)),            # a whole number written as 7.0
    ("fal-ai/luma-photon/modify", {"prompt": "red", "strength": 0.5, "aspect_ratio": "1:1"},
     ("image",)),
])
def test_what_fals_own_schema_accepts_reaches_fal(fal, endpoint, arguments, sockets):
    run(endpoint, arguments, **{name: sample_image(32, 24) for name in sockets})
    payload = submitted(fal, endpoint)
    assert {k: payload[k] for k in arguments} == arguments


# -- refused before any upload, in one sentence that says what fal accepts ------------------

@pytest.mark.parametrize("endpoint,arguments,expected", [
    (SEEDREAM, {"prompt": "x", "image_size": "sqaure_hd"},
     '`image_size` is "sqaure_hd", which fal does not accept; write an object {"width": …, '
     '"height": …} or one of "square_hd", "square", "portrait_4_3"'),
    (SEEDREAM, {"prompt": "x", "image_size": 42},
     '`image_size` is 42, which fal does not accept; write an object {"width": …, "height": …} '
     'or one of "square_hd"'),
    (SEEDREAM, {"prompt": "x", "image_size": {"width": 0, "height": 512}},
     "`image_size` has `width` that is 0, outside fal's range (above 0 and 14142)"),
    ("fal-ai/flux-pro/v1.1-ultra/redux", {"aspect_ratio": 42},
     '`aspect_ratio` is 42, which fal does not accept; write one of "21:9"'),
    ("fal-ai/swin2sr", {"seed": 2.5}, "`seed` is 2.5 but fal needs a whole number"),
    ("fal-ai/genfocus", {"focus_point": [0.5]},
     "`focus_point` has 1 items but fal needs at least 2"),
    ("fal-ai/genfocus", {"focus_point": [0.1, 0.2, 0.3]},
     "`focus_point` has 3 items but fal takes at most 2"),
    ("fal-ai/genfocus", {"focus_point": ["left", "top"]},
     "`focus_point` item 1 is \"left\" but fal needs a number"),
    ("fal-ai/luma-photon/modify", {"prompt": "ab"},
     "`prompt` has 2 characters but fal needs at least 3"),
    ("fal-ai/luma-photon/modify", {"prompt": "a" * 5001},
     "`prompt` has 5001 characters but fal takes at most 5000"),
    ("fal-ai/recraft/v3/image-to-image", {"prompt": "x", "negative_prompt": "n" * 1001},
     "`negative_prompt` has 1001 characters but fal takes at most 1000"),
    # null only where fal's schema allows it
    (NANO_PRO_EDIT, {"prompt": "a red hat", "output_format": None},
     "`output_format` is null, which fal does not accept here; set a value or delete the field"),
    (NANO_PRO_EDIT, {"prompt": "a red hat", "num_images": None}, "`num_images` is null"),
    ("fal-ai/image-editing/object-removal", {"prompt": "x", "guidance": 3},
     "`guidance` is not a field of this endpoint; change it to `guidance_scale`"),
])
def test_what_fal_refuses_is_refused_before_any_upload(fal, endpoint, arguments, expected):
    with pytest.raises(FalNodeError) as caught:
        run(endpoint, arguments, image=sample_image(24, 24))
    message = str(caught.value)
    assert expected in message, message
    assert message.startswith(f"fal Image Endpoint on {endpoint}: ")
    assert sentence_problems(message, message.split(":", 1)[0]) == []
    assert fal.state.count("upload") == 0 and fal.state.count("submit") == 0


def test_a_field_the_types_had_but_the_schema_lacks_is_refused():
    # The shared type gave grok-imagine-image/edit's fields to others; where fal's schema
    # lacks one, naming it is an error (the catalogue checks the endpoint's own list).
    fields = set(catalogue.entry("fal-ai/image-editing/object-removal")["input"])
    assert "prompt" in fields and "system_prompt" not in fields
    assert "system_prompt" in catalogue.entry(NANO_PRO_EDIT)["input"]


# -- fal's own defaults and hints ------------------------------------------------------------

def test_defaults_and_hints_are_each_endpoints_own():
    removal = catalogue.entry("fal-ai/image-editing/object-removal")["input"]["prompt"]
    assert removal["default"] == "background people"
    assert removal["description"] == "Specify which objects to remove from the image."
    change = catalogue.entry("fal-ai/image-editing/background-change")["input"]["prompt"]
    assert change["default"] == "beach sunset with palm trees"
    system = catalogue.entry(NANO_PRO_EDIT)["input"]["system_prompt"]
    assert system["default"] == "" and system["max_length"] == 50000
    assert system["description"].startswith("Optional system instruction")


# -- images only into fields that take an image -----------------------------------------------

def slot_fields(endpoint_id: str) -> dict[str, tuple[str, ...]]:
    return {s.field: s.sockets for s in catalogue.endpoint_for(endpoint_id).slots}


def test_archives_are_not_image_fields(fal):
    # photomaker's image_archive_url and ip-adapter-face-id's face_images_data_url hold zips.
    assert slot_fields("fal-ai/photomaker") == {"initial_image_url": ("image",)}
    assert slot_fields("fal-ai/ip-adapter-face-id") == {"face_image_url": ("image",)}
    with pytest.raises(FalNodeError) as caught:
        run("fal-ai/photomaker", {"prompt": "a portrait"}, image=sample_image(24, 24))
    assert "`image_archive_url` is required by fal but not set" in str(caught.value)
    assert fal.state.count("upload") == 0
    archive = "https://example.com/faces.zip"
    run("fal-ai/ip-adapter-face-id", {"prompt": "a portrait", "face_images_data_url": archive},
        image=sample_image(24, 24))
    payload = submitted(fal, "fal-ai/ip-adapter-face-id")
    assert payload["face_images_data_url"] == archive
    assert payload["face_image_url"].startswith(fal.base_url)


def test_ic_light_gets_the_image_and_the_background_the_second_socket():
    sockets = slot_fields("fal-ai/lora")
    assert sockets["ic_light_image_url"] == ("image",)
    assert sockets["ic_light_model_background_image_url"] == ("image_2",)


def test_the_mask_socket_does_not_fill_the_references_own_masks(fal):
    remix = "fal-ai/ideogram/character/remix"
    assert "reference_mask_urls" not in slot_fields(remix)
    assert catalogue.entry(remix)["input"]["reference_mask_urls"]["image"] == "masks"
    with pytest.raises(FalNodeError) as caught:
        run(remix, {"prompt": "x"}, image=sample_image(24, 24), image_2=sample_image(24, 24),
            mask=mask_of(24, 24))
    assert "`mask` is connected but the endpoint has no image field for it" in str(caught.value)
    assert fal.state.count("upload") == 0
    # The edit endpoint has a mask for the image itself: that one takes the socket.
    assert slot_fields("fal-ai/ideogram/character/edit")["mask_url"] == ("mask",)


# -- images inside objects and lists of objects -----------------------------------------------

def test_each_frame_fills_one_item_of_a_list_of_objects(fal):
    pulid = "fal-ai/pulid"
    assert slot_fields(pulid)["reference_images[].image_url"] == (
        "image", "image_2", "image_3", "image_4")
    run(pulid, {"prompt": "a portrait"}, image=sample_image(24, 24, batch=2),
        image_2=sample_image(24, 24, seed=5))
    items = submitted(fal, pulid)["reference_images"]
    assert len(items) == 3 and all(set(i) == {"image_url"} for i in items)
    assert all(i["image_url"].startswith(fal.base_url) for i in items)


def test_a_socket_fills_the_image_of_an_object_the_arguments_describe(fal):
    sd35 = "fal-ai/stable-diffusion-v35-large"
    assert slot_fields(sd35)["ip_adapter.image_url"] == ("image_2",)
    adapter = {"path": "InstantX/SD3.5-Large-IP-Adapter", "image_encoder_path": "google/siglip",
               "scale": 0.6}
    run(sd35, {"prompt": "a cat", "ip_adapter": adapter}, image_2=sample_image(24, 24))
    sent = submitted(fal, sd35)["ip_adapter"]
    assert {k: sent[k] for k in adapter} == adapter and sent["image_url"].startswith(fal.base_url)


def test_an_object_the_socket_would_make_alone_names_what_it_lacks(fal):
    sd35 = "fal-ai/stable-diffusion-v35-large"
    with pytest.raises(FalNodeError) as caught:
        run(sd35, {"prompt": "a cat"}, image_2=sample_image(24, 24))
    message = str(caught.value)
    assert "`ip_adapter` needs `path` as well as the connected image; add \"ip_adapter\": " \
        "{\"path\": \"text\"} to `arguments`" in message, message
    assert fal.state.count("upload") == 0
    with pytest.raises(FalNodeError) as caught:
        run(sd35, {"prompt": "a cat", "ip_adapter": {"path": "x"}}, image_2=sample_image(24, 24))
    assert "`ip_adapter` lacks `image_encoder_path`, which fal requires in it" in str(caught.value)


def test_a_plain_url_string_field_takes_the_image(fal):
    embed = "bria/embed-product"
    assert slot_fields(embed)["image_source"] == ("image",)
    products = [{"image_source": "https://example.com/p.png",
                 "coordinates": {"x": 1, "y": 2, "width": 30, "height": 40}}]
    run(embed, {"products": products}, image=sample_image(24, 24))
    payload = submitted(fal, embed)
    assert payload["image_source"].startswith(fal.base_url) and payload["products"] == products


# -- text-to-image endpoints with optional image inputs ----------------------------------------

def test_every_endpoint_that_needs_no_image_runs_with_nothing_connected(fal):
    from catalogue_helpers import sample_value

    from comfyui_fal_edit.nodes import server_settings
    # 48 runs at stand-in prices: no ceiling of the owner's (their defaults would stop it).
    server_settings.update({"max_usd_per_prompt": 0.0, "max_usd_per_day": 0.0})
    live = [i for i, e in catalogue.endpoints().items() if not e.get("retired")]
    optional_only = [i for i in live if not any(s.required for s in catalogue.endpoint_for(i).slots)]
    assert "krea/v2/medium/text-to-image" in optional_only and len(optional_only) == 48
    for endpoint_id in optional_only:
        arguments = {name: sample_value(f) for name, f in catalogue.entry(endpoint_id)["input"].items()
                     if f.get("required") and not f.get("image")}
        images, *_ = run(endpoint_id, arguments)
        assert images.shape[0] >= 1, endpoint_id
    assert fal.state.count("upload") == 0 and fal.state.count("submit") == len(optional_only)
