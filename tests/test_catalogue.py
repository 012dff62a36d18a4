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


def test_catalogue_comes_from_fals_schemas_and_keeps_retired_endpoints():
    data = catalogue.load()
    header, endpoints = data["catalogue"], data["endpoints"]
    live = [i for i, e in endpoints.items() if not e.get("retired")]
    assert header["counts"]["live"] == len(live) and header["counts"]["endpoints"] == len(endpoints)
    assert header["generated"]            # dated
    # Every source is named with its date; every endpoint says which one it came from.
    sources = {s["name"]: s for s in header["sources"]}
    assert sources["schemas"]["kind"] == "schema" and sources["schemas"]["date"] == "2026-05-12"
    assert sources["types-1.10.1"]["endpoints"] == 1207
    for endpoint_id, item in endpoints.items():
        assert item["source"]["date"] == sources[item["source"]["name"]]["date"], endpoint_id
    assert sum(header["counts"]["by_source"].values()) == len(endpoints)
    assert catalogue.entry("fal-ai/nano-banana-pro/edit")["source"]["name"] == "schemas"
    # SeedEdit 3.0 is in no current source (only @fal-ai/client 1.9.5): kept, marked retired,
    # with its own fields.
    seededit = endpoints[SEEDEDIT]
    assert "gone from every current source" in seededit["retired"] and "1.9.5" in seededit["retired"]
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
    code = ("import sys; sys.path.insert(0, %r)\n"
            "from tools.pack_loader import load_pack\n"
            "pack = load_pack()\n"
            "from comfyui_fal_edit.nodes import catalogue\n"
            "print(catalogue.load.cache_info().currsize)" % str(ROOT))
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
                       "change it to `sharpen_alpha`, the closest field name")


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
    assert '`sharpen_mode` is "extreme", which fal does not accept; pick one of "basic", "smart", "cas"' \
        in message


def test_missing_required_field():
    message = problem(KONTEXT_MULTI, '{"num_images": 2}', ("image_urls",))
    assert message == (f"{WHERE} on {KONTEXT_MULTI}: `prompt` is required by fal but not set; "
                       'add "prompt": "text" to `arguments`')


def test_missing_required_image_without_a_socket_asks_for_a_url():
    assert '`image_url` is required by fal but not set; set "image_url" to an image URL in ' \
        "`arguments`" in problem(SHARPEN, "{}", filled=())


def test_unknown_endpoint():
    with pytest.raises(InputProblem, match="pick 'fal-ai/post-processing/sharpen', the closest"):
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


# -- the ten curated nodes against the catalogue ------------------------------------------

# Where a curated node deliberately differs from fal's newest types, and why. An entry that
# no longer differs fails the test too, so this list cannot go stale.
CURATED_DEFAULTS = {
    # An empty text sends no colours, which is fal's default (an empty list).
    ("fal-ai/recraft/v3/image-to-image", "colors"): "",
}


def same_value(a, b) -> bool:
    numbers = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (a, b))
    return float(a) == float(b) if numbers else str(a) == str(b)


def drift(endpoint) -> list[str]:
    """Every way the curated node differs from the catalogue, as readable lines."""
    published = catalogue.entry(endpoint.endpoint_id)["input"]
    offered = {f.name: f for f in endpoint.fields}
    found = []
    for name, field in published.items():
        if field.get("image"):
            if name != endpoint.image_field:
                found.append(f"image field {name} has no socket")
            continue
        if name == "sync_mode":
            if not endpoint.supports_sync_mode:
                found.append("sync_mode is not driven by the settings' inline_results")
            continue
        node_field = offered.get(name)
        if node_field is None:
            found.append(f"new fal input {name} ({field['type']}) is not offered")
            continue
        if field.get("enum") and [str(v) for v in field["enum"]] != list(node_field.choices):
            found.append(f"{name}: choices {field['enum']} != {list(node_field.choices)}")
        if bool(field.get("required")) != node_field.required:
            found.append(f"{name}: required is {bool(field.get('required'))} at fal")
        for bound, ours in (("min", node_field.minimum), ("max", node_field.maximum)):
            if bound in field and field[bound] != ours:
                found.append(f"{name}: {bound} is {field[bound]} at fal, {ours} here")
        if "default" in field and not same_value(field["default"], node_field.default):
            expected = CURATED_DEFAULTS.get((endpoint.endpoint_id, name))
            if expected is None or expected != node_field.default:
                found.append(f"{name}: default is {field['default']!r} at fal, "
                             f"{node_field.default!r} here")
        elif (endpoint.endpoint_id, name) in CURATED_DEFAULTS:
            found.append(f"{name}: listed in CURATED_DEFAULTS but agrees with fal now")
    found += [f"{name} is offered but fal has no such input" for name in offered
              if name not in published]
    return found


def test_the_ten_nodes_have_not_drifted_from_fals_types():
    from nodes.endpoints import ENDPOINTS
    report = {e.endpoint_id: drift(e) for e in ENDPOINTS}
    assert not any(report.values()), "\n".join(
        f"{endpoint_id}: {line}" for endpoint_id, lines in report.items() for line in lines)


def test_drift_is_reported_for_a_new_fal_input():
    import dataclasses
    from nodes.endpoints import BY_ENDPOINT
    old_multi = BY_ENDPOINT[KONTEXT_MULTI]
    without = dataclasses.replace(old_multi, fields=tuple(
        f for f in old_multi.fields if f.name != "enhance_prompt"))
    assert drift(without) == ["new fal input enhance_prompt (boolean) is not offered"]
    no_sync = dataclasses.replace(BY_ENDPOINT[SEEDEDIT], supports_sync_mode=False)
    assert drift(no_sync) == ["sync_mode is not driven by the settings' inline_results"]
