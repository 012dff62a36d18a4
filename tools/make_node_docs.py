"""Writes web/docs/<NodeClass>/en.md: the help page ComfyUI's front end shows for a node.

    python tools/make_node_docs.py           # write the pages
    python tools/make_node_docs.py --check   # exit 1 when a page differs from what it writes

Made from the same data as the tooltips (each class's DESCRIPTION, INPUT_TYPES,
RETURN_NAMES and OUTPUT_TOOLTIPS) and, for an endpoint node, the endpoint's id and
fal's list price shipped with the pack, so a page never says something the node does
not do. Every class in NODE_CLASS_MAPPINGS gets a page; the front end looks for
/extensions/<pack>/docs/<NodeClass>/<lang>.md (web/ is served as /extensions/<pack>/).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "web" / "docs"

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TEMPLATES_HINT = ("The pack's templates have one workflow per node: *Templates → Custom Nodes → "
                  "comfyui-fal-edit* (front end 1.27) or *Templates → Extensions → comfyui-fal-edit* "
                  "(1.5x).")

# What a page of a non-endpoint node shows as its example (endpoint nodes get theirs
# from their own fields).
EXAMPLES = {
    "FalKey": "fal Key (`key_name` = a saved key's name) → `key` of **fal Settings** → "
              "`settings` of any fal node. Add keys in *Settings → fal*.",
    "FalSettings": "fal Key → **fal Settings** → `settings` of every fal node of a workflow; "
                   "one node sets the key, concurrency and limits for all of them.",
    "FalSpend": "Connect the last fal node's `images` to `after`, and the `report` output to a "
                "text display (or read it in *Settings → fal → Spend*).",
}


# Inputs whose choices are this server's own data (documented in words, not as a list).
CHOICE_NOTES = {
    ("FalKey", "key_name"): "`environment FAL_KEY` or the name of a key saved on this server",
}
MAX_LISTED_CHOICES = 12


def load_classes() -> dict[str, type]:
    from tools.pack_loader import load_pack
    return load_pack().NODE_CLASS_MAPPINGS


def input_types(cls: type) -> dict[str, Any]:
    """cls.INPUT_TYPES() as it is on a server with no saved key (the fal Key node lists them)."""
    name = "COMFYUI_FAL_KEYS_FILE"
    before = os.environ.get(name)
    with tempfile.TemporaryDirectory() as empty:
        os.environ[name] = str(Path(empty) / "keys.json")
        try:
            return cls.INPUT_TYPES()
        finally:
            if before is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = before


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def describe_input(spec: tuple, note: str | None = None) -> str:
    """('INT', {...}) -> 'whole number 1–50, default 30'."""
    kind, options = spec[0], (spec[1] if len(spec) > 1 else {})
    if note:
        text = note
    elif isinstance(kind, list) and len(kind) > MAX_LISTED_CHOICES:
        shown = ", ".join(f"`{v}`" for v in kind[:MAX_LISTED_CHOICES])
        text = f"one of {len(kind)} choices ({shown}, …)"
    elif isinstance(kind, list):
        shown = ", ".join(f"`{v}`" for v in kind)
        text = f"one of {shown}"
    elif kind in ("INT", "FLOAT"):
        text = "whole number" if kind == "INT" else "number"
        low, high = options.get("min"), options.get("max")
        if low is not None and high is not None:
            text += f" {_number(low)}–{_number(high)}"
        elif low is not None:
            text += f" ≥ {_number(low)}"
    elif kind == "BOOLEAN":
        text = "on/off"
    elif kind == "STRING":
        text = "text" + (" (several lines)" if options.get("multiline") else "")
    elif kind == "*":
        text = "any output"
    else:
        text = f"`{kind}` input"
    if "default" in options:
        default = options["default"]
        if isinstance(default, bool):
            default = "on" if default else "off"
        elif default == "":
            default = "empty"
        elif isinstance(default, str):
            default = f"`{default}`"
        else:
            default = _number(default)
        text += f", default {default}"
    if options.get("control_after_generate"):
        text += "; *control after generate* sets what the next run uses"
    return text


def input_lines(node_name: str, inputs: dict[str, Any]) -> list[str]:
    lines = []
    for section in ("required", "optional"):
        for name, spec in inputs.get(section, {}).items():
            options = spec[1] if len(spec) > 1 else {}
            tip = str(options.get("tooltip", "")).strip()
            optional = " (optional)" if section == "optional" else ""
            described = describe_input(spec, CHOICE_NOTES.get((node_name, name)))
            lines.append(f"- **{name}**{optional} — {described}. {tip}".rstrip())
    return lines


def output_lines(cls: type) -> list[str]:
    names = getattr(cls, "RETURN_NAMES", None) or getattr(cls, "RETURN_TYPES", ())
    types = getattr(cls, "RETURN_TYPES", ())
    tips = getattr(cls, "OUTPUT_TOOLTIPS", ()) or ()
    lines = []
    for i, name in enumerate(names):
        tip = tips[i] if i < len(tips) else ""
        lines.append(f"- **{name}** (`{types[i]}`) — {tip}".rstrip(" —"))
    return lines


def cost_lines(cls: type) -> list[str]:
    endpoint = getattr(cls, "ENDPOINT", None)
    if endpoint is None:
        return []
    from comfyui_fal_edit.nodes import pricing
    listed = pricing.FALLBACK_PRICES.get(endpoint.endpoint_id)
    if listed:
        unit_price, unit = listed
        price = (f"fal's list price is ${unit_price:g} per {unit} (as of {pricing.FALLBACK_DATE}; "
                 f"the node asks fal for the current price when a key is set).")
    else:
        price = "fal's price for this endpoint is read from fal's price list when a key is set."
    return [
        "## Cost",
        "",
        price + " The chip on the node shows the estimate for its current settings before a "
        "run (`≈ $…`) and what the last run cost (`last $…`; results answered from the cache "
        "cost nothing). *Settings → fal → Spend* lists every call of the session.",
        "",
    ]


def example_lines(node_name: str, cls: type, title: str) -> list[str]:
    endpoint = getattr(cls, "ENDPOINT", None)
    if endpoint is None:
        example = EXAMPLES.get(node_name)
        return ["## Example", "", example, ""] if example else []
    images = "`image_1`…" if endpoint.multi_image_sockets else "`image`"
    settings = [f"`{f.name}` = `{f.default}`" for f in endpoint.fields
                if f.kind not in ("seed",) and f.default not in ("", None)][:3]
    chosen = f" (for instance {', '.join(settings)})" if settings else ""
    return [
        "## Example",
        "",
        f"Load Image → {images} of **{title}**{chosen} → `images` → Save Image. Queue it; the "
        f"node shows its status while it runs, then the result URLs and fal request ids. "
        + TEMPLATES_HINT,
        "",
    ]


def page(node_name: str, cls: type, title: str) -> str:
    description = str(getattr(cls, "DESCRIPTION", "") or cls.__doc__ or "").strip()
    lines = [f"# {title}", "", description, ""]
    endpoint = getattr(cls, "ENDPOINT", None)
    if endpoint is not None:
        lines += [f"fal model page: <https://fal.ai/models/{endpoint.endpoint_id}>", ""]
    inputs = input_lines(node_name, input_types(cls))
    if inputs:
        lines += ["## Inputs", "", *inputs, ""]
    outputs = output_lines(cls)
    if outputs:
        lines += ["## Outputs", "", *outputs, ""]
    lines += cost_lines(cls)
    lines += example_lines(node_name, cls, title)
    lines += ["*Generated by `tools/make_node_docs.py` from the node's own tooltips.*", ""]
    return "\n".join(lines)


def pages() -> dict[Path, str]:
    classes = load_classes()
    from comfyui_fal_edit import NODE_DISPLAY_NAME_MAPPINGS as titles
    return {DOCS / name / "en.md": page(name, cls, titles.get(name, name))
            for name, cls in classes.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    args = parser.parse_args(argv)
    wanted = pages()
    if args.check:
        stale = [str(p.relative_to(ROOT)) for p, text in wanted.items()
                 if not p.exists() or p.read_text(encoding="utf-8") != text]
        extra = [str(p.relative_to(ROOT)) for p in DOCS.glob("*/en.md") if p not in wanted]
        for path in stale + extra:
            print(f"out of date: {path}")
        return 1 if stale or extra else 0
    for path, text in wanted.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    print(f"wrote {len(wanted)} pages under {DOCS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
