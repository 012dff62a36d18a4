"""The shipped catalogue of fal endpoints, and the checks of `arguments` against it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nodes import catalogue
from nodes.spec import InputProblem

ROOT = Path(__file__).resolve().parents[1]
WHERE = "fal Image Endpoint"
SHARPEN = "fal-ai/post-processing/sharpen"
KONTEXT_MULTI = "fal-ai/flux-pro/kontext/max/multi"
SEEDEDIT = "fal-ai/bytedance/seededit/v3/edit-image"


def problem(endpoint_id: str, text: str, filled: tuple[str, ...] = ("image_url",)) -> str:
    with pytest.raises(InputProblem) as caught:
        catalogue.check_arguments(WHERE, endpoint_id, catalogue.parse_arguments(WHERE, text), filled)
    return str(caught.value)


def test_catalogue_covers_the_newest_types_and_keeps_retired_endpoints():
    data = catalogue.load()
    header, endpoints = data["catalogue"], data["endpoints"]
    live = [i for i, e in endpoints.items() if not e.get("retired")]
    assert header["counts"]["1.10.1"]["endpoints"] == 1207
    assert len(live) == header["counts"]["1.10.1"]["image_to_image"]
    assert header["generated"]            # dated
    # SeedEdit 3.0 left the types after 1.9.5: kept, marked retired, with its own fields.
    seededit = endpoints[SEEDEDIT]
    assert "1.9.5" in seededit["retired"]
    assert {"enable_safety_checker", "sync_mode"} <= set(seededit["input"])
    # Every endpoint has an image input and says where its images come back.
    for endpoint_id, item in endpoints.items():
        assert catalogue.image_fields(item), endpoint_id
        assert item["output"]["images"] in ("images", "image"), endpoint_id


def test_catalogue_shapes_ranges_and_flags_come_from_fal():
    sharpen = catalogue.entry(SHARPEN)["input"]
    assert (sharpen["sharpen_alpha"]["min"], sharpen["sharpen_alpha"]["max"]) == (0.1, 5)
    assert sharpen["sharpen_radius"]["type"] == "integer"
    multi = catalogue.entry(KONTEXT_MULTI)
    assert multi["input"]["image_urls"]["image"] == "urls"
    assert multi["output"]["nsfw"] == "has_nsfw_concepts"
    assert "enhance_prompt" in multi["input"]
    masked = [i for i, e in catalogue.endpoints().items()
              if "mask" in catalogue.image_fields(e).values()]
    assert "fal-ai/flux-pro/v1/fill" in masked
    assert catalogue.entry("fal-ai/birefnet")["output"]["images"] == "image"


def test_loading_the_pack_does_not_read_the_catalogue():
    code = ("import sys; sys.path.insert(0, %r); import importlib; "
            "m = importlib.import_module('nodes.catalogue'); "
            "print(m.load.cache_info().currsize)" % str(ROOT))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "0"


def test_not_json():
    message = problem(SHARPEN, '{"sharpen_alpha": 1,}')
    assert message.startswith(f"{WHERE}: `arguments` is not JSON")
    assert "write a JSON object" in message


def test_json_that_is_not_an_object():
    assert "is a JSON list, not an object" in problem(SHARPEN, "[1, 2]")


def test_unknown_field_names_the_closest_known_one():
    message = problem(SHARPEN, '{"sharpen_alpah": 1.5}')
    assert message == (f"{WHERE} on {SHARPEN}: `sharpen_alpah` is not a field of this endpoint; "
                       "did you mean `sharpen_alpha`?")


def test_unknown_field_without_a_close_one_lists_the_fields():
    assert "remove it (its fields are image_url, sharpen_mode" in problem(SHARPEN, '{"zzz": 1}')


def test_wrong_type():
    assert "`sharpen_radius` is \"3\" but fal needs a number; write a number without quotes" in \
        problem(SHARPEN, '{"sharpen_radius": "3"}')
    assert "`sharpen_radius` is 2.5 but fal needs a whole number" in \
        problem(SHARPEN, '{"sharpen_radius": 2.5}')
    assert "fal needs true or false" in problem(KONTEXT_MULTI, '{"prompt": "x", "enhance_prompt": "yes"}',
                                                ("image_urls",))
    assert "fal needs text" in problem(KONTEXT_MULTI, '{"prompt": 3}', ("image_urls",))


def test_out_of_range():
    message = problem(SHARPEN, '{"sharpen_alpha": 7}')
    assert message == (f"{WHERE} on {SHARPEN}: `sharpen_alpha` is 7, outside fal's range "
                       "(from 0.1 to 5); pick a value inside it")


def test_not_in_enum():
    message = problem(SHARPEN, '{"sharpen_mode": "extreme"}')
    assert '`sharpen_mode` is "extreme", which fal does not accept; use one of "basic", "smart", "cas"' \
        in message


def test_missing_required_field():
    message = problem(KONTEXT_MULTI, '{"num_images": 2}', ("image_urls",))
    assert message == (f"{WHERE} on {KONTEXT_MULTI}: `prompt` is required by fal but not set; "
                       'add "prompt": "..." to `arguments`')


def test_missing_required_image_says_what_to_connect():
    assert "`image_url` is required by fal but not set; connect an image to `image`" in \
        problem(SHARPEN, "{}", filled=())


def test_unknown_endpoint():
    with pytest.raises(InputProblem, match="did you mean 'fal-ai/post-processing/sharpen'"):
        catalogue.check_arguments(WHERE, "fal-ai/post-processing/sharpn", {})


def test_valid_arguments_pass_and_empty_text_is_no_arguments():
    catalogue.check_arguments(WHERE, SHARPEN, catalogue.parse_arguments(
        WHERE, json.dumps({"sharpen_mode": "smart", "sharpen_alpha": 0.1, "noise_radius": 3})),
        ("image_url",))
    assert catalogue.parse_arguments(WHERE, "  ") == {}


def test_retired_endpoints_point_to_live_ones_doing_the_same_job():
    alternatives = catalogue.alternatives(SEEDEDIT)
    assert alternatives and all("seedream" in a and "edit" in a for a in alternatives)
    assert all(not catalogue.entry(a).get("retired") for a in alternatives)
