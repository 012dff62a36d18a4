"""Builds nodes/data/catalogue.json: every fal endpoint that takes an image and returns
images, from fal's own descriptions as `tools/fal_sources.mjs` collects them.

    node tools/fal_sources.mjs --fal-js PATH_TO_FAL_JS_GIT_DIR   # -> tests/data/fal_sources.json.gz
    python tools/build_catalogue.py                              # -> nodes/data/catalogue.json

Each endpoint comes from the best source that has it: its own JSON Schema (fal-js
libs/schemas) where one exists, else the newest TypeScript types that have it. Its entry
records which (`source`, with the date). An endpoint is `retired` when only older types
have it (it is gone from every current source).

A field is {type, enum?, default?, required?, nullable?, min/max/gt/lt?, min_length?,
max_length?, min_items?, max_items?, items?, fields?, any_of?, image?, description?}:
type is string | url (a file fal fetches) | integer | number | boolean | enum | list |
object | union | any; `any_of` lists a union's alternatives, `fields` an object's fields,
`items` a list's item. `image` (url | urls | mask | masks) marks the fields that take
images, at any depth, decided by what fal's schema says the field holds (its description,
and its file marker), never by its name alone.
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import json
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SOURCES_FILE = ROOT / "tests" / "data" / "fal_sources.json.gz"
CATALOGUE_FILE = ROOT / "nodes" / "data" / "catalogue.json"
REGENERATE = ("node tools/fal_sources.mjs --fal-js PATH_TO_FAL_JS_GIT_DIR && "
              "python tools/build_catalogue.py")

# Descriptions are fal's hints in the form; long ones are cut (the catalogue is shipped).
# Inside objects only image fields keep theirs (the form edits objects as JSON).
DESCRIPTION_CHARS = 240
NESTED_DESCRIPTION_CHARS = 120
# Objects inside objects are described this deep (fal's image fields sit at most 2 down).
MAX_DEPTH = 3

# What a file field holds, read from its description: these are never images (a LoRA or
# an embedding is not either, but "the image for the control LoRA" is one).
NOT_IMAGE = re.compile(r"\b(zip|archive|tar|safetensors|checkpoint|weights?|"
                       r"config|json|video|audio|mesh|glb|3d|hugging ?face|"
                       # "URL of the IC Light model", not "... model background image"
                       r"(url|id|path|name) of (the |a )?[\w .-]{0,40}?model(?!\s+(\w+\s+)?images?))\b",
                       re.I)
IMAGE = re.compile(r"\b(images?|photos?|pictures?|masks?|maps?|faces?|portraits?|selfies?|"
                   r"sketch|frames?|backgrounds?|garments?|clothing|product)\b", re.I)
# A string field holds a file fal fetches when fal marks it so, or says so.
URL = re.compile(r"\b(urls?|uris?|links?)\b", re.I)
URL_NAME = re.compile(r"_urls?$", re.I)


def load_sources(path: Path = SOURCES_FILE) -> dict[str, Any]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return json.load(handle)


def current_source_names(sources: dict[str, Any]) -> list[str]:
    """The sources fal still publishes, best first: schemas, then types newest first."""
    listed = [s for s in sources["sources"] if not s.get("older")]
    return [s["name"] for s in sorted(listed, key=lambda s: (s["kind"] != "schema",
                                                             s["date"]), reverse=False)
            if s["kind"] == "schema"] + \
        [s["name"] for s in sorted((s for s in listed if s["kind"] != "schema"),
                                   key=lambda s: s["date"], reverse=True)]


def best_source(sources: dict[str, Any], endpoint: dict[str, Any]) -> tuple[str, bool]:
    """(the source this endpoint is read from, whether it is retired)."""
    for name in current_source_names(sources):
        if name in endpoint:
            return name, False
    older = [s["name"] for s in sorted(sources["sources"], key=lambda s: s["date"], reverse=True)
             if s.get("older") and s["name"] in endpoint]
    return older[0], True


# -- JSON Schema -> catalogue field ------------------------------------------------

def _alternatives(schema: dict[str, Any]) -> list[dict[str, Any]] | None:
    return schema.get("anyOf") or schema.get("oneOf")


def field_of(schema: dict[str, Any], depth: int = 0) -> dict[str, Any]:
    """One JSON Schema property -> a catalogue field (without required/image)."""
    field: dict[str, Any] = {}
    alternatives = _alternatives(schema)
    body = {k: v for k, v in schema.items() if k not in ("anyOf", "oneOf")}
    if alternatives:
        real = [a for a in alternatives if a.get("type") != "null"]
        if len(real) != len(alternatives):
            field["nullable"] = True
        if len(real) == 1:
            body = {**real[0], **body}
        elif real and all(_is_enum(a) for a in real):
            body = {**body, "type": real[0].get("type", "string"),
                    "enum": [v for a in real for v in (a.get("enum") or [a.get("const")])]}
        elif real:
            field.update(type="union", any_of=[_describe(a, depth) for a in real])
    if isinstance(body.get("type"), list):        # {"type": ["string", "null"]}
        kinds = [k for k in body["type"] if k != "null"]
        if len(kinds) != len(body["type"]):
            field["nullable"] = True
        body["type"] = kinds[0] if len(kinds) == 1 else None
    if "type" not in field:
        field.update(_describe(body, depth))
    if "default" in schema:
        field["default"] = schema["default"]
    return {"type": field.pop("type"), **field}


def _is_enum(schema: dict[str, Any]) -> bool:
    return "enum" in schema or "const" in schema


def _describe(schema: dict[str, Any], depth: int) -> dict[str, Any]:
    """The type and limits of one (non-union) schema."""
    kind = schema.get("type")
    out: dict[str, Any] = {}
    if _is_enum(schema):
        out.update(type="enum", enum=list(schema.get("enum") or [schema.get("const")]))
    elif kind == "string":
        out["type"] = "url" if schema.get("x-fal-file-input") else "string"
    elif kind in ("integer", "number", "boolean"):
        out["type"] = kind
    elif kind == "array":
        out["type"] = "list"
        items = schema.get("items")
        out["items"] = field_of(items, depth) if isinstance(items, dict) and items else {"type": "any"}
    elif kind == "object" or "properties" in schema:
        out["type"] = "object"
        if schema.get("properties") and depth < MAX_DEPTH:
            out["fields"] = fields_of(schema, depth + 1)
    elif _alternatives(schema):
        out.update(field_of(schema, depth))
    else:
        out["type"] = "any"
    for source, target in (("minimum", "min"), ("maximum", "max"), ("exclusiveMinimum", "gt"),
                           ("exclusiveMaximum", "lt"), ("minLength", "min_length"),
                           ("maxLength", "max_length"), ("minItems", "min_items"),
                           ("maxItems", "max_items")):
        if isinstance(schema.get(source), (int, float)) and not isinstance(schema[source], bool):
            out[target] = schema[source]
    return out


def fields_of(schema: dict[str, Any], depth: int = 0) -> dict[str, dict[str, Any]]:
    """An object schema's properties in fal's order, each with required and description."""
    properties = schema.get("properties") or {}
    order = [n for n in schema.get("x-fal-order-properties") or [] if n in properties]
    order += [n for n in properties if n not in order]
    required = set(schema.get("required") or [])
    limit = DESCRIPTION_CHARS if depth == 0 else NESTED_DESCRIPTION_CHARS
    fields = {}
    for name in order:
        prop = properties[name]
        field = field_of(prop, depth)
        if name in required:
            field["required"] = True
        kind = image_kind(name, prop, field)
        if kind:
            field["image"] = kind
        description = " ".join(str(prop.get("description") or "").split())
        if description and (depth == 0 or kind):
            field["description"] = description if len(description) <= limit else \
                description[:limit - 1].rstrip() + "…"
        fields[name] = field
    return fields


# -- which fields take images --------------------------------------------------------

def _is_file(schema: dict[str, Any]) -> bool:
    if schema.get("x-fal-file-input"):
        return True
    return any(_is_file(a) for a in _alternatives(schema) or []) or \
        (isinstance(schema.get("items"), dict) and _is_file(schema["items"]))


def image_kind(name: str, schema: dict[str, Any], field: dict[str, Any]) -> str | None:
    """url | urls | mask | masks when the field takes images (one, or a list), else None.

    The value must be a URL string (or a list of them): fal marks it as a file, or its
    description or name says URL. What it holds is read from fal's schema: a file field
    whose title names an image ("Image URL"), else its description (archives, models,
    videos and the like are not images). The name only tells a mask from a picture."""
    if field["type"] in ("string", "url"):
        many = False
    elif field["type"] == "list" and field["items"].get("type") in ("string", "url"):
        many = True
    else:
        return None
    text, title = str(schema.get("description") or ""), str(schema.get("title") or "")
    if not (_is_file(schema) or URL.search(text) or URL_NAME.search(name)):
        return None     # text, not a file fal fetches
    titled = _is_file(schema) and IMAGE.search(title) and not NOT_IMAGE.search(title)
    if not titled and (NOT_IMAGE.search(text) or not IMAGE.search(text)):
        return None
    mask = "mask" in name.lower()
    return ("masks" if mask else "urls") if many else ("mask" if mask else "url")


def image_paths(fields: dict[str, dict[str, Any]], prefix: str = "") -> dict[str, str]:
    """{path: kind} of every image field, as nodes/catalogue.py's `image_fields` reads the
    catalogue: `image_url`, `ip_adapter.image_url`, `reference_images[].image_url` (a list
    kind). Kept here too, so tools/compare_catalogue.py can measure a checkout whose
    nodes/catalogue.py predates image paths (main before issue 22)."""
    found: dict[str, str] = {}
    for name, field in fields.items():
        path = f"{prefix}{name}"
        if field.get("image"):
            found[path] = field["image"]
        elif field["type"] == "object" and field.get("fields"):
            found.update(image_paths(field["fields"], f"{path}."))
        elif field["type"] == "list" and (field.get("items") or {}).get("fields"):
            inner = image_paths(field["items"]["fields"], f"{path}[].")
            found.update({p: "masks" if k.startswith("mask") else "urls" for p, k in inner.items()})
    return found


# -- endpoints --------------------------------------------------------------------------

def title_of(endpoint_id: str) -> str:
    words = [w for w in re.split(r"[/_-]", re.sub(r"^fal-ai/", "", endpoint_id)) if w]
    return " ".join(w.upper() if re.match(r"^v\d", w) else w[:1].upper() + w[1:] for w in words)


def entry_of(endpoint_id: str, described: dict[str, Any], source: dict[str, Any],
             retired: bool) -> dict[str, Any] | None:
    fields = fields_of(described["input"])
    if not image_paths(fields):
        return None
    output = described["output"]
    out: dict[str, Any] = {"images": output["images"]}
    if "has_nsfw_concepts" in output["fields"]:
        out["nsfw"] = "has_nsfw_concepts"
    out["fields"] = [n for n in output["fields"] if n not in (output["images"], "has_nsfw_concepts")]
    item: dict[str, Any] = {"title": title_of(endpoint_id), "input": fields, "output": out,
                            "source": {"name": source["name"], "date": source["date"]}}
    if retired:
        item["retired"] = f"gone from every current source; last in {source['what']}"
    return item


def build(sources: dict[str, Any]) -> dict[str, Any]:
    by_name = {s["name"]: s for s in sources["sources"]}
    endpoints: dict[str, Any] = {}
    for endpoint_id, described in sorted(sources["endpoints"].items()):
        name, retired = best_source(sources, described)
        item = entry_of(endpoint_id, described[name], by_name[name], retired)
        if item:
            endpoints[endpoint_id] = item
    counts: dict[str, int] = {}
    for item in endpoints.values():
        key = "retired" if item.get("retired") else item["source"]["name"]
        counts[key] = counts.get(key, 0) + 1
    header = {
        "generated": datetime.date.today().isoformat(),
        "sources": [{k: s[k] for k in ("name", "kind", "what", "date", "endpoints")}
                    for s in sources["sources"]],
        "counts": {"endpoints": len(endpoints),
                   "live": sum(1 for e in endpoints.values() if not e.get("retired")),
                   "by_source": counts},
        "regenerate": REGENERATE,
    }
    return {"catalogue": header, "endpoints": endpoints}


def write(catalogue: dict[str, Any], path: Path) -> None:
    # One endpoint per line: compact, and a regeneration diffs line by line.
    compact = dict(separators=(",", ":"), ensure_ascii=False)
    lines = [f"{json.dumps(i, **compact)}:{json.dumps(e, **compact)}"
             for i, e in catalogue["endpoints"].items()]
    path.write_text(f'{{"catalogue":{json.dumps(catalogue["catalogue"], **compact)},\n'
                    f'"endpoints":{{\n' + ",\n".join(lines) + "\n}}\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sources", type=Path, default=SOURCES_FILE)
    parser.add_argument("--out", type=Path, default=CATALOGUE_FILE)
    args = parser.parse_args(argv)
    catalogue = build(load_sources(args.sources))
    write(catalogue, args.out)
    header = catalogue["catalogue"]
    print(f"{header['counts']['endpoints']} endpoints ({header['counts']['live']} live) -> {args.out}")
    for name, count in sorted(header["counts"]["by_source"].items()):
        print(f"  {name}: {count}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
