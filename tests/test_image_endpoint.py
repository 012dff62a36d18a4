"""fal Image Endpoint: any catalogue endpoint, end to end through the node and the shared
runtime, against the emulator with the real fal-client."""

from __future__ import annotations

import json

import pytest
import torch

from catalogue_helpers import endpoints_by_shape, sample_value
from conftest import interrupt_after_submits, pack, run_node, sample_image
from reliability_helpers import sentence_problems

from comfyui_fal_edit.nodes import catalogue
from comfyui_fal_edit.nodes.errors import FalNodeError
from comfyui_fal_edit.nodes.settings import FalSettings

NODE = "FalImageEndpoint"
BIREFNET = "fal-ai/birefnet"
SEEDREAM = "fal-ai/bytedance/seedream/v4.5/edit"
FILL = "fal-ai/flux-pro/v1/fill"
SEEDEDIT = "fal-ai/bytedance/seededit/v3/edit-image"


def run(endpoint: str, arguments: dict | str | None = None, **sockets):
    text = arguments if isinstance(arguments, str) else json.dumps(arguments or {})
    return run_node(NODE, endpoint=endpoint, arguments=text, **sockets)


def required_arguments(endpoint_id: str) -> dict:
    """The endpoint's required non-image fields, with values fal accepts."""
    return {name: sample_value(f) for name, f in catalogue.entry(endpoint_id)["input"].items()
            if f.get("required") and not f.get("image")}


def mask_of(width: int, height: int, batch: int = 1) -> torch.Tensor:
    mask = torch.zeros((batch, height, width))
    mask[:, :, : width // 2] = 1.0
    return mask


def sockets_for(endpoint_id: str, image: torch.Tensor) -> dict:
    described = catalogue.endpoint_for(endpoint_id)
    out = {}
    for slot in described.slots:
        if slot.required or slot.sockets[0] in ("image", "mask"):
            name = slot.sockets[0]
            out[name] = mask_of(image.shape[2], image.shape[1]) if name == "mask" else image
    return out


def sample(shape: str, n: int = 4) -> list[str]:
    """Every k-th live endpoint of a shape: a spread over owners and kinds of job."""
    ids = endpoints_by_shape()[shape]
    step = max(1, len(ids) // n)
    return ids[::step][:n]


@pytest.mark.parametrize("endpoint_id", sample("single") + sample("list") + sample("mask"))
def test_a_sample_of_catalogue_endpoints_runs_end_to_end(fal, endpoint_id):
    args = required_arguments(endpoint_id)
    images, mask, urls, result_json = run(endpoint_id, args,
                                          **sockets_for(endpoint_id, sample_image(48, 40)))
    assert images.ndim == 4 and images.shape[-1] == 3 and images.shape[0] >= 1
    assert mask.shape == images.shape[:3]
    assert len(urls.splitlines()) == images.shape[0]
    (submit,) = fal.state.entries("submit", endpoint_id)
    image_fields = set(catalogue.image_fields(catalogue.entry(endpoint_id)))
    # Only what the user set (plus the connected images) is sent: fal's defaults apply.
    assert set(submit["payload"]) - image_fields == set(args)
    assert isinstance(json.loads(result_json), list)


def test_single_image_field_is_one_request_per_frame_in_order(fal):
    batch = sample_image(40, 32, batch=3, seed=3)
    images, mask, urls, _ = run(BIREFNET, {}, image=batch)
    submits = fal.state.entries("submit", BIREFNET)
    assert len(submits) == 3 and set(submits[0]["payload"]) == {"image_url"}
    assert images.shape == (3, 32, 40, 3)
    # Cut-outs: the mask is 1 - alpha (outside the subject 1, inside 0), as Load Image does.
    assert float(mask[0, 0, 0]) == 1.0 and float(mask[0, 16, 20]) == 0.0
    singles = [run(BIREFNET, {}, image=batch[i:i + 1], settings=FalSettings(cache="off"))[0]
               for i in range(3)]
    assert all(torch.equal(singles[i][0], images[i]) for i in range(3))


def test_list_field_takes_every_frame_of_every_socket_in_one_request(fal):
    first, second = sample_image(32, 32, batch=2, seed=1), sample_image(32, 32, seed=2)
    images, mask, _, result_json = run(SEEDREAM, {"prompt": "mix them"}, image=first,
                                       image_2=second)
    (submit,) = fal.state.entries("submit", SEEDREAM)
    assert len(submit["payload"]["image_urls"]) == 3
    assert set(submit["payload"]) == {"prompt", "image_urls"}
    assert float(mask.abs().sum()) == 0.0, "an opaque result gives an empty mask"
    assert json.loads(result_json) == [{}]       # Seedream answers nothing but images


def test_mask_goes_to_the_mask_field(fal):
    picture = sample_image(40, 40)
    images, _, _, result_json = run(FILL, {"prompt": "a hat", "output_format": "png"},
                                    image=picture, mask=mask_of(40, 40))
    (answer,) = json.loads(result_json)
    assert answer["prompt"] == "a hat" and "seed" in answer and "images" not in answer
    (submit,) = fal.state.entries("submit", FILL)
    assert {"image_url", "mask_url"} <= set(submit["payload"])
    before = (picture[0] * 255).round()
    after = (images[0] * 255).round()
    assert float((after[:, 20:] - before[:, 20:]).abs().max()) <= 1, "outside the mask: unchanged"
    assert float((after[:, :20] - before[:, :20]).abs().mean()) > 1


def test_inline_results_follow_the_settings_unless_arguments_say(fal):
    run(BIREFNET, {}, image=sample_image(24, 24), settings=FalSettings(inline_results=True))
    assert fal.state.entries("submit", BIREFNET)[0]["payload"]["sync_mode"] is True
    fal.reset()
    run(BIREFNET, {"sync_mode": False}, image=sample_image(24, 24),
        settings=FalSettings(inline_results=True, cache="off"))
    assert fal.state.entries("submit", BIREFNET)[0]["payload"]["sync_mode"] is False


# -- fal -> fal: results go back by URL, nothing uploaded -------------------------------

def test_chains_of_every_shape_upload_nothing(fal):
    picture = run(BIREFNET, {}, image=sample_image(32, 32))[0]            # a fal result
    grey = run_node("FalSharpen", image=mask_of(32, 32).unsqueeze(-1).expand(-1, -1, -1, 3)
                    .contiguous())[0]                                      # a fal result, grey
    before = fal.state.count("upload")
    run(BIREFNET, {"model": "Portrait"}, image=picture)                   # single
    run(SEEDREAM, {"prompt": "again"}, image=picture, image_2=picture)     # list
    run(FILL, {"prompt": "a hat"}, image=picture, mask=grey[..., 0])       # mask (ImageToMask)
    assert fal.state.count("upload") == before, "a fal result was uploaded again"
    assert all(fal.state.count("submit", e) for e in (SEEDREAM, FILL))


# -- every check before money is spent: one sentence each, nothing uploaded -------------

@pytest.mark.parametrize("endpoint,arguments,sockets,expected", [
    (BIREFNET, '{"model": "Portrait",}', {"image"},
     "fal Image Endpoint: `arguments` is not JSON"),
    (BIREFNET, '{"modle": "Portrait"}', {"image"},
     "fal Image Endpoint on fal-ai/birefnet: `modle` is not a field of this endpoint; change it "
     "to `model`, the closest field name."),
    (BIREFNET, '{"refine_foreground": "yes"}', {"image"},
     "`refine_foreground` is \"yes\" but fal needs true or false"),
    (FILL, '{"prompt": "x", "num_images": 9}', {"image", "mask"},
     "`num_images` is 9, outside fal's range (from 1 to 4)"),
    (BIREFNET, '{"model": "Huge"}', {"image"}, '`model` is "Huge", which fal does not accept'),
    (SEEDREAM, "{}", {"image"}, '`prompt` is required by fal but not set; add "prompt"'),
    (FILL, '{"prompt": "x"}', {"image"},
     "`mask_url` is required by fal but nothing is connected to `mask`; connect a MASK to it"),
    (BIREFNET, "{}", set(), "`image_url` is required by fal but nothing is connected to `image`"),
    (BIREFNET, "{}", {"image", "image_3"}, "`image_3` is connected but the endpoint has no image "
                                           "field for it (its image fields: `image_url`); "
                                           "disconnect it"),
    ("fal-ai/birefnet/v9", "{}", {"image"}, "is not in the catalogue; pick 'fal-ai/birefnet"),
])
def test_bad_requests_fail_in_one_sentence_before_any_upload(fal, endpoint, arguments, sockets,
                                                             expected):
    inputs = {name: (mask_of(24, 24) if name == "mask" else sample_image(24, 24))
              for name in sockets}
    with pytest.raises(FalNodeError) as caught:
        run(endpoint, arguments, **inputs)
    message = str(caught.value)
    assert expected in message
    prefix = message.split(":", 1)[0]
    assert prefix.startswith("fal Image Endpoint")
    assert sentence_problems(message, prefix) == []
    assert fal.state.count("upload") == 0 and fal.state.count("submit") == 0


def test_retired_endpoint_names_the_endpoints_doing_its_job(fal):
    fal.state.retired_endpoints = {SEEDEDIT}
    for name, inputs in ((NODE, dict(endpoint=SEEDEDIT, arguments='{"prompt": "a hat"}')),
                         ("FalSeedEditV3", {})):
        with pytest.raises(FalNodeError) as caught:
            run_node(name, image=sample_image(24, 24), **inputs)
        message = str(caught.value)
        assert sentence_problems(message, message.split(":", 1)[0]) == []
        assert f"fal retired `{SEEDEDIT}`" in message
        assert "fal-ai/bytedance/seedream/v4.5/edit" in message


def test_node_definition_lists_every_catalogue_endpoint():
    inputs = pack.NODE_CLASS_MAPPINGS[NODE].INPUT_TYPES()
    assert inputs["required"]["endpoint"][0] == catalogue.ids()
    assert set(inputs["optional"]) == {"image", "image_2", "image_3", "image_4", "mask", "settings"}
    assert pack.NODE_CLASS_MAPPINGS[NODE].RETURN_NAMES == ("images", "mask", "urls", "result_json")


def test_a_rerun_after_a_restart_comes_from_the_cache_with_mask_and_json(fal):
    from comfyui_fal_edit.nodes.caches import caches
    picture = sample_image(32, 24)
    first = run(BIREFNET, {"output_format": "webp"}, image=picture)
    caches.forget_memory()     # what a ComfyUI restart does
    again = run(BIREFNET, {"output_format": "webp"}, image=picture)
    assert fal.state.count("submit", BIREFNET) == 1
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert float(again[1].max()) == 1.0, "the cut-out's transparency survived the restart"
    assert first[3] == again[3]


def test_price_of_a_catalogue_endpoint_is_fetched_and_the_spend_guard_applies(fal):
    def asked():
        return [e for e in fal.state.entries("pricing") if SEEDREAM in e.get("endpoints", ())]
    images, *_ = run(SEEDREAM, {"prompt": "x", "num_images": 2}, image=sample_image(24, 24))
    assert len(asked()) == 1
    with pytest.raises(FalNodeError) as caught:
        run(SEEDREAM, {"prompt": "y", "num_images": 2}, image=sample_image(24, 24),
            settings=FalSettings(max_usd_per_prompt=0.05))
    assert "spend guard" in str(caught.value) and "$0.080" in str(caught.value)
    assert len(asked()) == 1, "the price is asked for once"
    assert fal.state.count("submit", SEEDREAM) == 1


def test_every_image_an_up_to_count_made_comes_out_and_is_counted(fal):
    """Seedream makes up to max_images per generation, num_images generations (fal's docs),
    and fal bills each: 2 x 3 images are what the user paid for, not a hostile answer. All
    six come out (the batch had set aside two slots), and the spend guard counts six."""
    images, *_ = run(SEEDREAM, {"prompt": "x", "num_images": 2, "max_images": 3},
                     image=sample_image(24, 24))
    assert images.shape[0] == 6 and fal.state.count("submit", SEEDREAM) == 1
    with pytest.raises(FalNodeError) as caught:
        run(SEEDREAM, {"prompt": "y", "num_images": 2, "max_images": 3},
            image=sample_image(24, 24), settings=FalSettings(max_usd_per_prompt=0.2))
    assert "spend guard" in str(caught.value) and "$0.240" in str(caught.value)   # 6 x $0.04
    assert fal.state.count("submit", SEEDREAM) == 1


def test_num_samples_on_a_try_on_brings_that_many_images(fal):
    tryon = "fal-ai/fashn/tryon/v1.6"
    picture = sample_image(24, 32)
    images, *_ = run(tryon, {**required_arguments(tryon), "num_samples": 3},
                     **sockets_for(tryon, picture))
    assert images.shape[0] == 3


def test_an_endpoint_nobody_could_price_still_counts_against_the_owners_ceiling(fal, statuses):
    """fal's price list can't be reached (every price call answers 503), so nobody knows
    BiRefNet's price: the run is counted at pricing.UNPRICED per image, so a shared workflow
    can't pick an unpriced endpoint to spend past the owner's ceilings, and the node says
    what it was counted as."""
    from comfyui_fal_edit.nodes import pricing, server_settings

    fal.state.add_fault("pricing", 503, times=-1)
    images, *_ = run(BIREFNET, {}, image=sample_image(24, 24, batch=2))
    assert fal.state.count("pricing") >= 1 and pricing.prices.price(BIREFNET) is None
    assert any("price unknown: counted as ≈ $0.500 ($0.25 an image)" in s for s in statuses)
    assert pricing.ledger.spent() == pytest.approx(0.5)    # the session's count has it too

    server_settings.update({"max_usd_per_prompt": 1.0})
    submits = fal.state.count("submit", BIREFNET)
    with pytest.raises(FalNodeError) as caught:   # a workflow without a limit of its own
        run(BIREFNET, {}, image=sample_image(24, 24, batch=6, seed=7),
            settings=FalSettings(max_usd_per_prompt=0.0, max_usd_per_session=0.0))
    assert "spend guard" in str(caught.value) and "$1.500" in str(caught.value)
    assert "$1.00 limit" in str(caught.value)
    assert fal.state.count("submit", BIREFNET) == submits


def test_a_price_per_second_is_counted_like_an_unknown_one(fal, statuses, monkeypatch):
    """fal bills some endpoints per second of GPU time: no one can count that before the
    run, so the guard counts it like an unpriced endpoint, and the status says why."""
    from fal_emulator.specs import PRICES

    from comfyui_fal_edit.nodes import pricing
    monkeypatch.setitem(PRICES, BIREFNET, (0.0011, "second"))
    run(BIREFNET, {}, image=sample_image(24, 24, batch=2))
    assert pricing.prices.price(BIREFNET).unit == "second"     # fal's price was fetched
    assert any("fal bills $0.0011 per second, which can't be counted before the run: "
               "counted as ≈ $0.500 ($0.25 an image)" in s for s in statuses), statuses[-1]


# -- what the ten nodes do, this one does through the same runtime -----------------------

def test_interrupt_cancels_the_fal_requests(fal):
    from comfyui_fal_edit.nodes.host import Interrupted
    fal.state.latency_s = 10
    interrupt_after_submits(fal, 2)
    with pytest.raises(Interrupted):
        run(BIREFNET, {}, image=sample_image(24, 24, batch=2))
    assert fal.state.count("cancel") == 2


def test_nsfw_flags_follow_the_policy(fal):
    with pytest.raises(FalNodeError, match="fal flagged item 1 as NSFW"):
        run(FILL, {"prompt": "nsfw hat"}, image=sample_image(24, 24), mask=mask_of(24, 24))
    images, *_ = run(FILL, {"prompt": "nsfw hat"}, image=sample_image(24, 24),
                     mask=mask_of(24, 24), settings=FalSettings(nsfw_policy="keep flagged"))
    assert images.shape[0] == 1


@pytest.mark.parametrize("output_format", ["png", "webp", "gif"])
def test_cut_outs_keep_their_alpha_in_every_format(fal, output_format):
    images, mask, urls, _ = run(BIREFNET, {"output_format": output_format},
                                image=sample_image(40, 30))
    assert urls.split("?")[0].endswith(output_format)
    assert float(mask[0, 0, 0]) == 1.0 and float(mask[0, 15, 20]) == 0.0


def test_birefnet_mask_image_is_in_result_json_as_a_url(fal):
    _, _, _, result_json = run(BIREFNET, {"output_mask": True}, image=sample_image(32, 24))
    (answer,) = json.loads(result_json)
    assert answer["mask_image"]["url"].startswith(fal.base_url) and "image" not in answer


def test_an_image_url_in_arguments_is_sent_as_it_is_without_an_upload(fal):
    import base64
    import io
    from PIL import Image
    buffer = io.BytesIO()
    Image.new("RGB", (20, 16), (10, 200, 30)).save(buffer, "PNG")
    url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    images, *_ = run(BIREFNET, {"image_url": url})
    (submit,) = fal.state.entries("submit", BIREFNET)
    assert submit["payload"] == {"image_url": url}
    assert fal.state.count("upload") == 0 and images.shape == (1, 16, 20, 3)
    with pytest.raises(FalNodeError, match="`image_url` is set in `arguments` and also fed by a "
                                           "connected socket; remove it from `arguments`"):
        run(BIREFNET, {"image_url": url}, image=sample_image(20, 16))


def test_a_required_image_list_gets_the_sockets_before_an_optional_one(fal):
    endpoint_id = "fal-ai/ideogram/character"
    slots = catalogue.endpoint_for(endpoint_id).slots
    assert slots[0].field == "reference_image_urls" and slots[0].sockets[0] == "image"
    run(endpoint_id, required_arguments(endpoint_id), image=sample_image(24, 24))
    (submit,) = fal.state.entries("submit", endpoint_id)
    assert len(submit["payload"]["reference_image_urls"]) == 1 and "image_urls" not in submit["payload"]


def test_optional_image_fields_may_stay_empty(fal):
    # bria/replace-background's image_url is optional (fal has an example default).
    endpoint_id = "bria/replace-background"
    images, *_ = run(endpoint_id, required_arguments(endpoint_id))
    (submit,) = fal.state.entries("submit", endpoint_id)
    assert "image_url" not in submit["payload"] and images.shape[0] == 1
