"""The node table against fal's API pages (shared/seeds/fal-endpoints.txt), field by field.

The seed file is the contract: every input it lists is reachable from the node
(widget, IMAGE socket, or for sync_mode the settings node), with the same
default and, for enums, exactly the same values.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import pack

from comfyui_fal_edit.nodes import catalogue
from comfyui_fal_edit.nodes.endpoints import ENDPOINTS, BY_ENDPOINT
from comfyui_fal_edit.nodes.spec import FAL_DEFAULT

SEED_FILE = Path(__file__).resolve().parents[2] / "shared" / "seeds" / "fal-endpoints.txt"

FIELD_LINE = re.compile(r"^([a-z_]+) (string|float|integer|boolean|list<[^>]+>|[A-Za-z_]+Enum|"
                        r"[A-Za-z]+)$")


def parse_seed(text: str) -> dict[str, dict[str, dict]]:
    """{endpoint_id: {field: {"type", "default", "enum"}}} from the Input part of each page."""
    endpoints: dict[str, dict[str, dict]] = {}
    for block in re.split(r"^model \d+\s+-- ", text, flags=re.M)[1:]:
        endpoint_id = block.split("\n", 1)[0].strip()
        schema = block.split("5. Schema", 1)[1]
        inputs = schema.split("\nInput\n", 1)[1].split("\nOutput\n", 1)[0]
        inputs = inputs.split("\n{", 1)[0]  # the example JSON follows the fields
        fields: dict[str, dict] = {}
        current = None
        for line in inputs.splitlines():
            line = line.strip()
            match = FIELD_LINE.match(line)
            if match:
                current = {"type": match.group(2), "default": None, "enum": None}
                fields[match.group(1)] = current
                continue
            if current is None:
                continue
            default = re.search(r"Default value: (.+)$", line)
            if default:
                current["default"] = default.group(1).strip().strip('"')
            enum = re.match(r"Possible enum values: (.+)$", line)
            if enum:
                current["enum"] = [v.strip() for v in enum.group(1).split(",")]
        endpoints[endpoint_id] = fields
    return endpoints


@pytest.fixture(scope="module")
def seed():
    if not SEED_FILE.exists():
        pytest.skip("shared/seeds/fal-endpoints.txt is not beside this clone (a user's checkout)")
    return parse_seed(SEED_FILE.read_text(encoding="utf-8"))


def test_seed_lists_exactly_our_ten_endpoints(seed):
    assert sorted(seed) == sorted(e.endpoint_id for e in ENDPOINTS)
    assert len(ENDPOINTS) == 10


@pytest.mark.parametrize("endpoint_id", sorted(BY_ENDPOINT))
def test_every_seed_input_is_reachable_with_the_seed_default(seed, endpoint_id):
    endpoint = BY_ENDPOINT[endpoint_id]
    node_class = pack.NODE_CLASS_MAPPINGS[endpoint.node_name]
    inputs = node_class.INPUT_TYPES()
    widgets = {**inputs["required"], **inputs.get("optional", {})}
    seed_fields = seed[endpoint_id]
    assert seed_fields, "the seed parser found no inputs"

    for name, info in seed_fields.items():
        if name in ("image_url", "image_urls"):
            assert endpoint.image_field == name
            image_sockets = [k for k, v in widgets.items() if v[0] == "IMAGE"]
            assert image_sockets, f"{name} has no IMAGE socket"
            if name == "image_urls":
                assert len(image_sockets) >= 4
            continue
        if name == "sync_mode":
            # A transport choice: the settings node's inline_results switch.
            assert endpoint.supports_sync_mode
            assert "inline_results" in pack.NODE_CLASS_MAPPINGS["FalSettings"].INPUT_TYPES()["required"]
            continue
        assert name in widgets, f"{endpoint.node_name} has no input for seed field {name}"
        kind, options = widgets[name]
        assert options.get("tooltip"), f"{name} has no tooltip"
        field = endpoint.field_named(name)
        if info["enum"]:
            assert isinstance(kind, list)
            offered = [v for v in kind if v not in field.derived_choices and v != FAL_DEFAULT]
            assert offered == info["enum"], f"{name}: enum differs from the seed"
        if info["default"] is not None:
            default = options["default"]
            if isinstance(default, bool):
                assert str(default).lower() == info["default"].lower()
            elif isinstance(default, (int, float)):
                assert float(default) == float(info["default"]), name
            else:
                assert default == info["default"], name
        elif info["enum"]:
            # No fal default: optional enums offer "fal default" (sends nothing);
            # required ones have a sensible default of their own.
            assert options["default"] == FAL_DEFAULT or field.required, name
        if name == "seed":
            assert kind == "INT" and options.get("control_after_generate")
    # Nothing the node offers is unknown to fal: its API page or its newest published types
    # (the catalogue: inputs fal added after the pages were saved, such as enhance_prompt).
    published = catalogue.entry(endpoint_id)["input"]
    for name in widgets:
        if widgets[name][0] in ("IMAGE", "FAL_SETTINGS"):
            continue
        assert name in seed_fields or name in published, \
            f"{endpoint.node_name} offers {name}, which fal does not list"


def test_descriptions_name_the_endpoint_and_every_input_has_a_tooltip():
    for endpoint in ENDPOINTS:
        node_class = pack.NODE_CLASS_MAPPINGS[endpoint.node_name]
        assert endpoint.endpoint_id in node_class.DESCRIPTION
        assert node_class.CATEGORY.startswith("fal")
        inputs = node_class.INPUT_TYPES()
        for section in ("required", "optional"):
            for name, (kind, options) in inputs.get(section, {}).items():
                assert options.get("tooltip"), f"{endpoint.node_name}.{name} has no tooltip"
        assert pack.NODE_DISPLAY_NAME_MAPPINGS[endpoint.node_name].startswith("fal ")
