"""Compares the pack's catalogue with fal's own descriptions, and prints the mismatches.

    python tools/compare_catalogue.py --fal-js PATH_TO_FAL_JS_GIT_DIR   # reads fal's sources
    python tools/compare_catalogue.py                                   # the kept copy of them
    python tools/compare_catalogue.py --show field_missing              # the lines of one kind

With --fal-js it runs tools/fal_sources.mjs (fal-js's per-endpoint JSON Schemas, fal-js's
newest types and @fal-ai/client's from npm) into a temporary file; without, it reads
tests/data/fal_sources.json.gz, the copy the catalogue was built from. Each endpoint is
compared with its truth: its own JSON Schema where fal publishes one, else the newest
types that have it. It checks the checkout it sits in (its catalogue file and its
`nodes/catalogue.py`, which says where its sockets go and whether it accepts null), so
the same script, copied into a checkout of main, gives the counts before a change.

tests/test_catalogue_drift.py runs the same comparison on the kept copy: a change in
fal's sources (once fetched into it) or in the catalogue shows as a failing test.
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tools import build_catalogue as policy  # noqa: E402  (what counts as an image field)

# Roles of an image that are not the image being edited (the `image` socket's), and the
# masks that are a reference's own (not the `mask` socket's).
SECONDARY = re.compile(r"(reference|background)", re.I)

# Each kind of mismatch, and what a user meets when it is there.
KINDS = {
    "endpoint_missing": "takes an image and returns images at fal, not in the catalogue",
    "endpoint_not_current": "live in the catalogue, in no current source of fal's",
    "endpoint_wrongly_retired": "marked retired, still in a current source",
    "field_missing": "a field fal accepts is refused",
    "field_extra": "a field fal lacks is accepted",
    "required": "required differs",
    "type": "type differs (integer/number, text/list/object...)",
    "union_unchecked": "a union (preset or object...) is not checked",
    "enum": "the set of allowed values differs",
    "default": "the default shown differs",
    "range": "a numeric range (min/max, exclusive) differs",
    "length": "a text length limit differs",
    "list_items": "a list's length limits or item type differ",
    "nullable": "null accepted where fal refuses it, or refused where fal takes it",
    "image_routing": "a socket's image goes into a field that does not take it",
}


@dataclass(frozen=True)
class Mismatch:
    kind: str
    endpoint: str
    field: str
    detail: str

    def line(self) -> str:
        where = f"{self.endpoint}: `{self.field}`" if self.field else self.endpoint
        return f"{where}: {self.detail}"


def read_sources(fal_js: str | None) -> dict[str, Any]:
    if not fal_js:
        return policy.load_sources()
    with tempfile.TemporaryDirectory() as work:
        out = Path(work) / "sources.json.gz"
        subprocess.run(["node", str(ROOT / "tools" / "fal_sources.mjs"), "--fal-js", fal_js,
                        "--out", str(out)], check=True, stdout=subprocess.DEVNULL)
        return policy.load_sources(out)


# -- the truth for one endpoint --------------------------------------------------------

def truth_of(sources: dict[str, Any], described: dict[str, Any]) -> tuple[str, bool]:
    return policy.best_source(sources, described)


def _unwrap(schema: dict[str, Any]) -> tuple[list[dict[str, Any]], bool]:
    """(the non-null alternatives, whether null is allowed)."""
    alternatives = schema.get("anyOf") or schema.get("oneOf")
    if not alternatives:
        kind = schema.get("type")
        if isinstance(kind, list):
            return [{**schema, "type": k} for k in kind if k != "null"], "null" in kind
        return [schema], False
    real = [a for a in alternatives if a.get("type") != "null"]
    return real, len(real) != len(alternatives)


def _kind(schema: dict[str, Any]) -> str:
    if "enum" in schema or "const" in schema:
        return "enum"
    return {"string": "string", "integer": "integer", "number": "number", "boolean": "boolean",
            "array": "list", "object": "object"}.get(schema.get("type"),
                                                     "object" if "properties" in schema else "any")


def _merged(schema: dict[str, Any]) -> tuple[dict[str, Any], bool, list[dict[str, Any]]]:
    """(the schema a value must match with its limits, nullable, union alternatives)."""
    real, nullable = _unwrap(schema)
    if len(real) == 1:
        return {**real[0], **{k: v for k, v in schema.items() if k not in ("anyOf", "oneOf")}}, \
            nullable, []
    if real and all(_kind(a) == "enum" for a in real):
        values = [v for a in real for v in (a.get("enum") or [a.get("const")])]
        return {**schema, "enum": values}, nullable, []
    return schema, nullable, real


LIMITS = {"range": (("minimum", "min"), ("maximum", "max"), ("exclusiveMinimum", "gt"),
                    ("exclusiveMaximum", "lt")),
          "length": (("minLength", "min_length"), ("maxLength", "max_length")),
          "list_items": (("minItems", "min_items"), ("maxItems", "max_items"))}


def compare_field(module, endpoint: str, name: str, truth: dict[str, Any], required: bool,
                  ours: dict[str, Any]) -> list[Mismatch]:
    found: list[Mismatch] = []

    def add(kind: str, detail: str) -> None:
        found.append(Mismatch(kind, endpoint, name, detail))

    merged, nullable, union = _merged(truth)
    if bool(ours.get("required")) != required:
        add("required", f"fal: {'required' if required else 'optional'}, catalogue: "
                        f"{'required' if ours.get('required') else 'optional'}")
    kind = "union" if union else _kind(merged)
    theirs_kind = ours.get("type")
    if kind == "union":
        if theirs_kind != "union":
            add("union_unchecked", f"fal takes {' | '.join(_kind(a) for a in union)}, "
                                   f"catalogue: {theirs_kind}")
        elif sorted(_kind(a) for a in union) != sorted(
                "string" if a["type"] == "url" else a["type"] for a in ours["any_of"]):
            add("type", f"fal: {[_kind(a) for a in union]}, catalogue: "
                        f"{[a['type'] for a in ours['any_of']]}")
    elif (theirs_kind == "url" and kind != "string") or \
            (theirs_kind != "url" and theirs_kind != kind and kind != "any"):
        add("type", f"fal: {kind}, catalogue: {theirs_kind}")
    if kind == "enum" and theirs_kind == "enum" and \
            sorted(map(json.dumps, merged.get("enum") or [merged.get("const")])) != \
            sorted(map(json.dumps, ours.get("enum", []))):
        add("enum", f"fal: {merged.get('enum')}, catalogue: {ours.get('enum')}")
    fal_default = truth.get("default")
    if fal_default != ours.get("default") and not (
            isinstance(fal_default, (int, float)) and not isinstance(fal_default, bool) and
            isinstance(ours.get("default"), (int, float)) and float(fal_default) == float(ours["default"])):
        add("default", f"fal: {json.dumps(fal_default)}, catalogue: {json.dumps(ours.get('default'))}")
    for group, pairs in LIMITS.items():
        for source, target in pairs:
            if merged.get(source) != ours.get(target):
                add(group, f"{target}: fal {merged.get(source)}, catalogue {ours.get(target)}")
    if kind == "list":
        items_truth, _, items_union = _merged(merged.get("items") or {})
        item_kind = "union" if items_union else _kind(items_truth)
        ours_item = (ours.get("items") or {}).get("type")
        ours_item = "string" if ours_item == "url" else ours_item
        if item_kind not in ("any", ours_item) and not (item_kind == "union" and ours_item == "union"):
            add("list_items", f"item type: fal {item_kind}, catalogue {ours_item}")
        elif item_kind == "enum" and sorted(map(json.dumps, items_truth.get("enum", []))) != \
                sorted(map(json.dumps, (ours.get("items") or {}).get("enum", []))):
            add("enum", f"items: fal {items_truth.get('enum')}, catalogue {ours['items'].get('enum')}")
    accepts_null = module.value_problem(ours, None) is None
    if accepts_null != nullable:
        add("nullable", f"fal {'takes' if nullable else 'refuses'} null, catalogue "
                        f"{'takes' if accepts_null else 'refuses'} it")
    return found


def compare_endpoint(module, endpoint: str, truth: dict[str, Any],
                     ours: dict[str, Any]) -> list[Mismatch]:
    found: list[Mismatch] = []
    properties = truth.get("properties") or {}
    required = set(truth.get("required") or [])
    for name, schema in properties.items():
        if name not in ours["input"]:
            found.append(Mismatch("field_missing", endpoint, name, "fal accepts it, the catalogue "
                                  "refuses it"))
            continue
        found += compare_field(module, endpoint, name, schema, name in required, ours["input"][name])
    for name in ours["input"]:
        if name not in properties:
            found.append(Mismatch("field_extra", endpoint, name, "the catalogue accepts it, fal "
                                  "has no such field"))
    return found


def routing_mismatches(module, endpoint: str, truth: dict[str, Any]) -> list[Mismatch]:
    """Sockets whose images go where fal's schema does not take an image."""
    fields = policy.fields_of(truth)
    images = policy.image_paths(fields)
    found = []
    slots = module.endpoint_for(endpoint).slots
    main_single = [p for p, k in images.items() if k == "url" and not _secondary(module, fields, p)]
    for slot in slots:
        if slot.field not in images:
            found.append(Mismatch("image_routing", endpoint, slot.field,
                                  f"socket {', '.join(slot.sockets)} fills it; fal's schema "
                                  f"says it holds no image"))
        elif slot.sockets[0] == "mask" and _secondary(module, fields, slot.field) and \
                images[slot.field] == "masks":
            found.append(Mismatch("image_routing", endpoint, slot.field,
                                  "the mask socket fills the references' own masks"))
        elif slot.sockets[0] == "image" and _secondary(module, fields, slot.field) and main_single:
            found.append(Mismatch("image_routing", endpoint, slot.field,
                                  f"the image socket fills a {_role(fields, slot.field)} field while "
                                  f"`{main_single[0]}` takes the image itself"))
    return found


def _field(fields: dict[str, Any], path: str) -> dict[str, Any]:
    field: dict[str, Any] = {}
    for part in path.split("."):
        field = fields[part.removesuffix("[]")]
        fields = ((field.get("items") if part.endswith("[]") else field) or {}).get("fields") or {}
    return field


def _role(fields: dict[str, Any], path: str) -> str:
    text = f"{path} {_field(fields, path).get('description', '')}"
    match = SECONDARY.search(text)
    return match.group(1).lower() if match else ""


def _secondary(module, fields: dict[str, Any], path: str) -> bool:
    return bool(_role(fields, path))


def compare(module, catalogue: dict[str, Any], sources: dict[str, Any]) -> list[Mismatch]:
    endpoints = catalogue["endpoints"]
    found: list[Mismatch] = []
    current = set(policy.current_source_names(sources))
    for endpoint, described in sorted(sources["endpoints"].items()):
        name, retired = truth_of(sources, described)
        truth = described[name]
        takes_images = bool(policy.image_paths(policy.fields_of(truth["input"])))
        ours = endpoints.get(endpoint)
        in_current = bool(current & set(described))
        if ours is None:
            if takes_images and in_current:
                found.append(Mismatch("endpoint_missing", endpoint, "", f"in {name}"))
            continue
        if ours.get("retired") and in_current:
            found.append(Mismatch("endpoint_wrongly_retired", endpoint, "", f"still in {name}"))
        if not ours.get("retired") and not in_current:
            found.append(Mismatch("endpoint_not_current", endpoint, "", f"only in {name}"))
        found += compare_endpoint(module, endpoint, truth["input"], ours)
        if takes_images:
            found += routing_mismatches(module, endpoint, truth["input"])
    for endpoint in endpoints:
        if endpoint not in sources["endpoints"]:
            found.append(Mismatch("endpoint_not_current", endpoint, "", "in no source of fal's"))
    return found


def by_source(catalogue: dict[str, Any], sources: dict[str, Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for endpoint in catalogue["endpoints"]:
        described = sources["endpoints"].get(endpoint)
        name = truth_of(sources, described)[0] if described else "none"
        counts[name] = counts.get(name, 0) + 1
    return counts


def report(found: list[Mismatch], catalogue: dict[str, Any], sources: dict[str, Any]) -> str:
    lines = ["fal's sources:"]
    lines += [f"  {s['name']}: {s['what']}, {s['date']}, {s['endpoints']} endpoints"
              for s in sources["sources"]]
    endpoints = catalogue["endpoints"]
    live = sum(1 for e in endpoints.values() if not e.get("retired"))
    lines.append(f"catalogue: {len(endpoints)} endpoints, {live} live; by the source of their "
                 f"truth: " + ", ".join(f"{k} {v}" for k, v in sorted(by_source(catalogue, sources).items())))
    lines.append("mismatches by kind (count, endpoints):")
    for kind, meaning in KINDS.items():
        mine = [m for m in found if m.kind == kind]
        lines.append(f"  {kind:26} {len(mine):5} on {len({m.endpoint for m in mine}):4}   {meaning}")
    lines.append(f"  {'total':26} {len(found):5}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fal-js", help="fal-js git directory: read fal's sources afresh")
    parser.add_argument("--sources", type=Path, help="a sources file made by fal_sources.mjs")
    parser.add_argument("--show", action="append", default=[], help="list the mismatches of a kind")
    args = parser.parse_args(argv)
    sources = policy.load_sources(args.sources) if args.sources else read_sources(args.fal_js)
    module = importlib.import_module("nodes.catalogue")
    catalogue = module.load()
    found = compare(module, catalogue, sources)
    print(report(found, catalogue, sources))
    for kind in args.show:
        print(f"\n{kind}:")
        print("\n".join(f"  {m.line()}" for m in found if m.kind == kind) or "  none")
    return 0


if __name__ == "__main__":
    sys.exit(main())
