"""The catalogue against fal's own descriptions (kept in tests/data/fal_sources.json.gz,
made by tools/fal_sources.mjs; no network): each endpoint's JSON Schema where fal-js
publishes one, the newest types where not. When fal's sources are fetched again and
differ, or the catalogue is edited by hand, these fail with the differing lines."""

from __future__ import annotations

import copy

import pytest

from nodes import catalogue
from tools import build_catalogue, compare_catalogue

NANO_PRO_EDIT = "fal-ai/nano-banana-pro/edit"


@pytest.fixture(scope="module")
def sources():
    return build_catalogue.load_sources()


def readable(found: list[compare_catalogue.Mismatch], limit: int = 60) -> str:
    lines = [f"{m.kind}: {m.line()}" for m in found[:limit]]
    more = [f"... and {len(found) - limit} more"] if len(found) > limit else []
    return "\n".join(lines + more)


def test_the_catalogue_matches_every_endpoints_own_schema(sources):
    found = compare_catalogue.compare(catalogue, catalogue.load(), sources)
    assert not found, "the catalogue differs from fal's sources (rebuild it: " \
        f"{build_catalogue.REGENERATE}):\n{readable(found)}"


def test_the_catalogue_is_what_the_builder_makes_of_the_kept_sources(sources):
    built = build_catalogue.build(sources)
    shipped = catalogue.load()
    assert built["catalogue"]["sources"] == shipped["catalogue"]["sources"]
    changed = sorted(set(built["endpoints"]) ^ set(shipped["endpoints"])) + sorted(
        i for i in set(built["endpoints"]) & set(shipped["endpoints"])
        if built["endpoints"][i] != shipped["endpoints"][i])
    assert not changed, f"rebuild the catalogue ({build_catalogue.REGENERATE}): {changed[:20]}"


def test_every_endpoint_names_its_source_and_date(sources):
    dated = {s["name"]: s["date"] for s in sources["sources"]}
    for endpoint_id, item in catalogue.endpoints().items():
        assert item["source"]["date"] == dated[item["source"]["name"]], endpoint_id
    by_source = compare_catalogue.by_source(catalogue.load(), sources)
    assert by_source["schemas"] > 350 and "none" not in by_source


def test_a_change_at_fal_shows_as_a_failing_comparison_with_readable_lines(sources):
    changed = copy.deepcopy(sources)
    schema = changed["endpoints"][NANO_PRO_EDIT]["schemas"]["input"]
    schema["properties"]["thinking_level"] = {"type": "string", "enum": ["low", "high"]}
    schema["properties"]["num_images"]["maximum"] = 8
    schema["properties"]["resolution"]["enum"].append("8K")
    schema["properties"]["seed"] = {"type": "integer"}           # no longer nullable
    changed["endpoints"]["fal-ai/new-model/edit"] = copy.deepcopy(
        changed["endpoints"][NANO_PRO_EDIT])
    found = compare_catalogue.compare(catalogue, catalogue.load(), changed)
    assert sorted(m.line() for m in found) == sorted([
        "fal-ai/new-model/edit: in schemas",
        f"{NANO_PRO_EDIT}: `thinking_level`: fal accepts it, the catalogue refuses it",
        f"{NANO_PRO_EDIT}: `num_images`: max: fal 8, catalogue 4",
        f"{NANO_PRO_EDIT}: `resolution`: fal: ['1K', '2K', '4K', '8K'], catalogue: ['1K', '2K', '4K']",
        f"{NANO_PRO_EDIT}: `seed`: fal refuses null, catalogue takes it",
    ])
    report = compare_catalogue.report(found, catalogue.load(), changed)
    assert "field_missing                  1 on    1" in report
    assert "endpoint_missing               1 on    1" in report


def test_a_retired_endpoint_is_gone_from_every_current_source(sources):
    current = set(build_catalogue.current_source_names(sources))
    for endpoint_id, item in catalogue.endpoints().items():
        in_current = current & set(sources["endpoints"][endpoint_id])
        assert bool(item.get("retired")) == (not in_current), endpoint_id
    # Five the types alone had retired are back: fal still publishes their schemas.
    for endpoint_id in ("fal-ai/flux/dev/redux", "fal-ai/object-removal/bbox",
                        "fal-ai/post-processing/blur"):
        assert not catalogue.entry(endpoint_id).get("retired")


def test_the_readme_gives_the_endpoint_count_and_each_sources_share():
    import re
    from pathlib import Path
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    counts = catalogue.load()["catalogue"]["counts"]
    assert f"runs any of the {counts['live']} fal endpoints" in readme
    assert f"plus {counts['by_source']['retired']} that fal has dropped" in readme
    rows = dict(re.findall(r"^\| .*?(schemas|newest types|1\.10\.1's types|1\.9\.5's types).*\| (\d+) \|$",
                           readme, re.M))
    assert rows == {"schemas": str(counts["by_source"]["schemas"]),
                    "newest types": str(counts["by_source"]["types-main"]),
                    "1.10.1's types": str(counts["by_source"]["types-1.10.1"]),
                    "1.9.5's types": str(counts["by_source"]["retired"])}
