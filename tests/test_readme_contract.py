"""What the README promises, checked against the code and fal's published pages."""

from __future__ import annotations

import re

from conftest import ROOT, pack

from comfyui_fal_edit.nodes.endpoints import ENDPOINTS
from comfyui_fal_edit.nodes.runtime import build_payload
from test_contract import SEED_FILE, parse_seed

README = (ROOT / "README.md").read_text(encoding="utf-8")


def section(title: str) -> str:
    """The README text from a heading or bold lead-in to the next heading."""
    start = README.index(title)
    end = README.find("\n## ", start + len(title))
    return README[start:end if end > 0 else None]


def test_the_install_section_says_the_pack_is_not_published_and_what_works_today():
    install = section("## Install")
    assert "not published yet" in install
    assert "custom_nodes/" in install and "comfy node pack" in install
    # Nothing that does not exist yet: no registry search, no repository URL to clone.
    assert "git clone" not in install and "search for" not in install


def seed_outputs() -> dict[str, str]:
    """{endpoint_id: the Output part of its fal API page}."""
    text = SEED_FILE.read_text(encoding="utf-8")
    outputs = {}
    for block in re.split(r"^model \d+\s+-- ", text, flags=re.M)[1:]:
        endpoint_id = block.split("\n", 1)[0].strip()
        outputs[endpoint_id] = block.split("\nOutput\n", 1)[1].split("\nOther types", 1)[0]
    return outputs


def test_exactly_the_endpoints_whose_output_has_nsfw_flags_are_named():
    reporters = [e for e in ENDPOINTS if e.nsfw_field]
    if SEED_FILE.exists():    # fal's pages: the node table reads the flag where fal sends one
        outputs = seed_outputs()
        assert {e.endpoint_id for e in reporters} == {
            e.endpoint_id for e in ENDPOINTS if "has_nsfw_concepts" in outputs[e.endpoint_id]}
    nsfw = " ".join(README[README.index("**NSFW flags.**"):].split("\n\n", 1)[0].split())
    for endpoint in ENDPOINTS:
        name = endpoint.display_name.removeprefix("fal ")
        assert name in nsfw, f"the README's NSFW paragraph does not mention {name}"
    reporting, others = nsfw.split("The other", 1)
    assert all(e.display_name.removeprefix("fal ") in reporting for e in reporters)
    assert not any(e.display_name.removeprefix("fal ") in reporting
                   for e in ENDPOINTS if not e.nsfw_field)
    tooltip = pack.NODE_CLASS_MAPPINGS["FalSettings"].INPUT_TYPES()["required"]["nsfw_policy"][1]
    assert all(e.display_name in tooltip["tooltip"] for e in reporters)


def test_every_value_sent_where_fal_has_no_default_is_documented():
    seed = parse_seed(SEED_FILE.read_text(encoding="utf-8")) if SEED_FILE.exists() else None
    if seed is None:
        return
    own = {name for e in ENDPOINTS for name in build_payload(e, {})
           if seed[e.endpoint_id].get(name, {}).get("default") is None}
    assert "seed" in own                      # fal picks a random seed; the nodes send one
    defaults = README[README.index("Where fal has no default"):README.index("**NSFW flags.**")]
    for name in own:
        assert f"`{name}`" in defaults, f"the README does not say where the {name} default comes from"
    assert "a fixed seed makes a rerun" in defaults
