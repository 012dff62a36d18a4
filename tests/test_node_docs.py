"""The help pages in web/docs/: one per node, made by tools/make_node_docs.py from the
nodes' own tooltips, and the committed pages are exactly what the tool writes."""

from __future__ import annotations

from pathlib import Path

from tools import make_node_docs
from comfyui_fal_edit import NODE_CLASS_MAPPINGS

ROOT = Path(__file__).resolve().parents[1]


def test_committed_pages_match_the_generator():
    wanted = make_node_docs.pages()
    stale = [str(p.relative_to(ROOT)) for p, text in wanted.items()
             if not p.exists() or p.read_text(encoding="utf-8") != text]
    assert not stale, ("help pages out of date; run `python tools/make_node_docs.py` and commit "
                       f"web/docs/: {stale}")
    extra = [p for p in (ROOT / "web" / "docs").glob("*/en.md") if p not in wanted]
    assert not extra, f"help pages for nodes that do not exist: {extra}"


def test_every_node_has_a_page_where_the_front_end_looks():
    # The front end asks for /extensions/<pack>/docs/<NodeClass>/<lang>.md; web/ is served there.
    for name in NODE_CLASS_MAPPINGS:
        assert (ROOT / "web" / "docs" / name / "en.md").is_file(), name


def test_pages_carry_each_input_and_its_tooltip():
    pages = make_node_docs.pages()
    for name, cls in NODE_CLASS_MAPPINGS.items():
        text = pages[ROOT / "web" / "docs" / name / "en.md"]
        for section in ("required", "optional"):
            for field, spec in make_node_docs.input_types(cls).get(section, {}).items():
                assert f"**{field}**" in text, (name, field)
                tooltip = (spec[1] if len(spec) > 1 else {}).get("tooltip", "")
                assert tooltip.strip() in text, (name, field)
        for output in getattr(cls, "RETURN_NAMES", ()):
            assert f"**{output}**" in text, (name, output)


def test_endpoint_pages_give_the_endpoint_and_its_price():
    from comfyui_fal_edit.nodes import pricing
    pages = make_node_docs.pages()
    for name, cls in NODE_CLASS_MAPPINGS.items():
        endpoint = getattr(cls, "ENDPOINT", None)
        if endpoint is None:
            continue
        text = pages[ROOT / "web" / "docs" / name / "en.md"]
        assert f"https://fal.ai/models/{endpoint.endpoint_id}" in text
        if endpoint.endpoint_id in pricing.FALLBACK_PRICES:
            price, unit = pricing.FALLBACK_PRICES[endpoint.endpoint_id]
            assert f"${price:g} per {unit}" in text, name


def test_no_saved_key_name_leaks_into_the_pages(monkeypatch, tmp_path):
    # The fal Key node lists this server's saved keys; its page must not.
    from comfyui_fal_edit.nodes import keystore
    keys = tmp_path / "keys.json"
    monkeypatch.setenv(keystore.ENV_KEY_FILE, str(keys))
    keystore.add("secret-project-name", "abcd-1234:efgh5678")
    assert "secret-project-name" in NODE_CLASS_MAPPINGS["FalKey"].INPUT_TYPES()["required"]["key_name"][0]
    text = "\n".join(make_node_docs.pages().values())
    assert "secret-project-name" not in text


def test_check_mode_finds_a_stale_page(tmp_path, monkeypatch):
    monkeypatch.setattr(make_node_docs, "DOCS", tmp_path / "docs")
    monkeypatch.setattr(make_node_docs, "ROOT", tmp_path)
    assert make_node_docs.main(["--check"]) == 1          # nothing written yet
    assert make_node_docs.main([]) == 0
    assert make_node_docs.main(["--check"]) == 0
    page = tmp_path / "docs" / "FalSharpen" / "en.md"
    page.write_text(page.read_text(encoding="utf-8") + "hand edit\n", encoding="utf-8")
    assert make_node_docs.main(["--check"]) == 1
