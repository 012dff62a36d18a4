"""Requests for catalogue endpoints, made from the catalogue itself (for tests)."""

from __future__ import annotations

from typing import Any

from comfyui_fal_edit.nodes import catalogue


def sample_value(schema: dict[str, Any]) -> Any:
    """A value fal's schema accepts for one non-image field."""
    if "default" in schema and schema["default"] is not None:
        return schema["default"]
    kind = schema["type"]
    if kind == "union":
        return sample_value(schema["any_of"][0])
    if kind == "enum":
        return schema["enum"][0]
    if kind in ("integer", "number"):
        low = schema.get("min", schema.get("gt", 1))
        value = max(low, 1) if schema.get("max", 1) >= 1 else low
        return int(value) + (1 if "gt" in schema and "min" not in schema else 0) \
            if kind == "integer" else float(value)
    if kind == "boolean":
        return False
    if kind == "list":
        return [sample_value(schema.get("items") or {"type": "string"})] * schema.get("min_items", 0)
    if kind == "object":
        return {name: sample_value(field) for name, field in (schema.get("fields") or {}).items()
                if field.get("required")}
    text = "a red cat"
    return (text * (1 + schema.get("min_length", 0) // len(text)))[:schema.get("max_length", 10**6)]


def minimal_arguments(endpoint_id: str, url: str) -> dict[str, Any]:
    """Every required field of the endpoint with an accepted value; images get `url`."""
    args: dict[str, Any] = {}
    for name, schema in catalogue.entry(endpoint_id)["input"].items():
        if not schema.get("required"):
            continue
        if schema.get("image"):
            args[name] = [url] if schema["image"] in ("urls", "masks") else url
        else:
            args[name] = sample_value(schema)
    return args


def endpoints_by_shape() -> dict[str, list[str]]:
    """Live catalogue endpoints by the shape of their image fields: single, list, mask."""
    shapes: dict[str, list[str]] = {"single": [], "list": [], "mask": []}
    for endpoint_id, entry in catalogue.endpoints().items():
        if entry.get("retired"):
            continue
        kinds = set(catalogue.image_fields(entry).values())
        if "mask" in kinds:
            shapes["mask"].append(endpoint_id)
        elif kinds == {"url"}:
            shapes["single"].append(endpoint_id)
        elif kinds == {"urls"}:
            shapes["list"].append(endpoint_id)
    return shapes
