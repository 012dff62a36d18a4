"""The templates in example_workflows/: they load, name only real nodes, carry the right
widget values and no key, and their fal part runs end to end on the local emulator.

`execute_workflow` runs a UI-format workflow the way ComfyUI would after the front end
turned it into a prompt: nodes in link (topological) order, widget values mapped back
to input names. LoadImage reads the PNG from example_workflows/input/; the core image
and mask nodes the templates use are implemented minimally below (none is skipped);
our nodes are called through their class FUNCTION; PreviewImage/SaveImage record the
IMAGE they receive. tools/make_workflows.py uses it to draw the thumbnails.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from conftest import pack

from comfyui_fal_edit.nodes.endpoints import BY_NODE, ENDPOINTS

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW_DIR = ROOT / "example_workflows"
INPUT_DIR = WORKFLOW_DIR / "input"
WORKFLOWS = sorted(WORKFLOW_DIR.glob("*.json"))
IDS = [p.stem for p in WORKFLOWS]

WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN")
CONTROL_MODES = ("fixed", "increment", "decrement", "randomize")

# Core node types the templates may use: their widget names in widgets_values order and
# the enum values of their combo widgets (ComfyUI 0.3.64 /object_info; LoadImage's second
# value is the front end's upload button, which always stores "image"). "Note" is a
# front-end-only node: the front end never sends it to the server.
CORE_WIDGETS: dict[str, list[str]] = {
    "LoadImage": ["image", "upload"],
    "PreviewImage": [],
    "SaveImage": ["filename_prefix"],
    "ImageCrop": ["width", "height", "x", "y"],
    "ImageScale": ["upscale_method", "width", "height", "crop"],
    "ImageBatch": [],
    "ImageCompositeMasked": ["x", "y", "resize_source"],
    "SolidMask": ["value", "width", "height"],
    "FeatherMask": ["left", "top", "right", "bottom"],
    "MaskComposite": ["x", "y", "operation"],
    "Note": ["text"],
}
CORE_ENUMS: dict[tuple[str, str], tuple] = {
    ("LoadImage", "upload"): ("image",),
    ("ImageScale", "upscale_method"): ("nearest-exact", "bilinear", "area", "bicubic", "lanczos"),
    ("ImageScale", "crop"): ("disabled", "center"),
    ("MaskComposite", "operation"): ("multiply", "add", "subtract", "and", "or", "xor"),
}
FRONTEND_ONLY = {"Note"}
OUTPUT_NODES = {"PreviewImage", "SaveImage"}

KEY_PATTERNS = [
    re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-", re.I),            # uuid-ish (fal keys start so)
    re.compile(r"FAL_KEY\s*[:=]", re.I),                      # FAL_KEY=..., "FAL_KEY": ...
    re.compile(r"\b(?:key|token|secret)\s*[:=]\s*\S{8,}", re.I),
    re.compile(r"[0-9a-f]{32,}", re.I),                       # a long hex secret
]


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def widget_names(node_type: str) -> list[str]:
    """widgets_values order for a node type: ours from INPUT_TYPES (every non-socket input,
    required then optional, and one extra value after an INT with control_after_generate)."""
    if node_type in CORE_WIDGETS:
        return CORE_WIDGETS[node_type]
    spec = pack.NODE_CLASS_MAPPINGS[node_type].INPUT_TYPES()
    names = []
    for section in ("required", "optional"):
        for name, value in spec.get(section, {}).items():
            kind, opts = value[0], (value[1] if len(value) > 1 else {})
            if isinstance(kind, (list, tuple)) or kind in WIDGET_TYPES:
                names.append(name)
                if kind == "INT" and opts.get("control_after_generate"):
                    names.append(f"{name}:control")
    return names


def widget_spec(node_type: str, name: str):
    spec = pack.NODE_CLASS_MAPPINGS[node_type].INPUT_TYPES()
    value = {**spec.get("required", {}), **spec.get("optional", {})}[name]
    return value[0], (value[1] if len(value) > 1 else {})


def widget_values(node: dict) -> dict:
    names = widget_names(node["type"])
    values = node.get("widgets_values") or []
    assert len(values) == len(names), (
        f"node {node['id']} {node['type']}: {len(values)} widget values, expected "
        f"{len(names)} ({names})")
    return {n: v for n, v in zip(names, values) if not n.endswith(":control")}


# ---------------------------------------------------------------------------
# The executor


def _load_image(name: str) -> tuple:
    img = Image.open(INPUT_DIR / name).convert("RGB")
    image = torch.from_numpy(np.asarray(img, np.float32) / 255.0)[None]
    return image, torch.zeros(1, img.height, img.width)


def _resize(image: torch.Tensor, width: int, height: int, crop: str = "disabled") -> torch.Tensor:
    """comfy.utils.common_upscale on [B,H,W,C]; every method is bilinear here."""
    s = image.movedim(-1, 1)
    if crop == "center":
        old_h, old_w = s.shape[-2:]
        old_aspect, new_aspect = old_w / old_h, width / height
        x = round((old_w - old_w * (new_aspect / old_aspect)) / 2) if old_aspect > new_aspect else 0
        y = round((old_h - old_h * (old_aspect / new_aspect)) / 2) if old_aspect < new_aspect else 0
        s = s[..., y:old_h - y, x:old_w - x]
    return F.interpolate(s, size=(height, width), mode="bilinear").movedim(1, -1)


def _image_scale(image, upscale_method, width, height, crop):
    if width == 0 and height == 0:
        return (image,)
    h, w = image.shape[1:3]
    width = width or max(1, round(w * height / h))
    height = height or max(1, round(h * width / w))
    return (_resize(image, width, height, crop),)


def _image_crop(image, width, height, x, y):
    h, w = image.shape[1:3]
    x, y = min(x, w - 1), min(y, h - 1)
    return (image[:, y:y + height, x:x + width, :],)


def _image_batch(image1, image2):
    if image1.shape[1:] != image2.shape[1:]:
        image2 = _resize(image2, image1.shape[2], image1.shape[1], "center")
    return (torch.cat((image1, image2), dim=0),)


def _paste(destination, source, x, y, mask, combine):
    """Paste source (B,H,W[,C]) into destination at x, y, clipped, with combine(d, s, m)."""
    out = destination.clone()
    h = min(source.shape[1], out.shape[1] - y)
    w = min(source.shape[2], out.shape[2] - x)
    if h > 0 and w > 0:
        region = out[:, y:y + h, x:x + w]
        out[:, y:y + h, x:x + w] = combine(region, source[:, :h, :w], None if mask is None
                                           else mask[:, :h, :w])
    return out


def _composite_masked(destination, source, x, y, resize_source, mask=None):
    if resize_source:
        source = _resize(source, destination.shape[2], destination.shape[1])
    if mask is not None:
        m = F.interpolate(mask.reshape(-1, 1, *mask.shape[-2:]), size=source.shape[1:3],
                          mode="bilinear")[:, 0, :, :, None]
    else:
        m = torch.ones(*source.shape[:3], 1)
    return (_paste(destination, source, x, y, m, lambda d, s, k: k * s + (1 - k) * d),)


_MASK_OPS = {"multiply": lambda d, s: d * s, "add": lambda d, s: d + s,
             "subtract": lambda d, s: d - s, "and": lambda d, s: torch.minimum(d, s),
             "or": lambda d, s: torch.maximum(d, s), "xor": lambda d, s: (d - s).abs()}


def _mask_composite(destination, source, x, y, operation):
    op = _MASK_OPS[operation]
    out = _paste(destination.reshape(-1, *destination.shape[-2:]),
                 source.reshape(-1, *source.shape[-2:]), x, y, None, lambda d, s, _: op(d, s))
    return (out.clamp(0.0, 1.0),)


def _feather(mask, left, top, right, bottom):
    out = mask.reshape(-1, *mask.shape[-2:]).clone()
    h, w = out.shape[-2:]
    for i in range(min(left, w)):
        out[:, :, i] *= (i + 1) / left
    for i in range(min(right, w)):
        out[:, :, w - 1 - i] *= (i + 1) / right
    for i in range(min(top, h)):
        out[:, i, :] *= (i + 1) / top
    for i in range(min(bottom, h)):
        out[:, h - 1 - i, :] *= (i + 1) / bottom
    return (out,)


CORE_OPS = {
    "LoadImage": lambda image, upload: _load_image(image),
    "ImageScale": _image_scale,
    "ImageCrop": _image_crop,
    "ImageBatch": _image_batch,
    "ImageCompositeMasked": _composite_masked,
    "SolidMask": lambda value, width, height: (torch.full((1, height, width), float(value)),),
    "MaskComposite": _mask_composite,
    "FeatherMask": _feather,
}


@dataclass
class Run:
    workflow: dict
    outputs: dict[int, tuple] = field(default_factory=dict)
    received: dict[int, torch.Tensor] = field(default_factory=dict)   # output node -> IMAGE
    order: list[int] = field(default_factory=list)
    loads: list[int] = field(default_factory=list)                     # LoadImage ids, in order

    def node(self, node_id: int) -> dict:
        return next(n for n in self.workflow["nodes"] if n["id"] == node_id)

    def final_images(self) -> list[torch.Tensor]:
        """What the SaveImage nodes got, or else the PreviewImage nodes."""
        saves = [i for i in self.received if self.node(i)["type"] == "SaveImage"]
        return [self.received[i] for i in (saves or list(self.received))]


def link_order(workflow: dict) -> list[dict]:
    nodes = {n["id"]: n for n in workflow["nodes"] if n["type"] not in FRONTEND_ONLY}
    deps = {i: {link[1] for link in workflow["links"] if link[3] == i} for i in nodes}
    ordered: list[int] = []
    while len(ordered) < len(nodes):
        ready = [i for i in sorted(nodes) if i not in ordered and deps[i] <= set(ordered)]
        assert ready, "the workflow has a cycle"
        ordered.append(ready[0])
    return [nodes[i] for i in ordered]


def execute_workflow(workflow: dict, after_node=None) -> Run:
    run = Run(workflow)
    links = {link[0]: link for link in workflow["links"]}
    for node in link_order(workflow):
        kwargs = widget_values(node)
        for slot in node.get("inputs", []):
            if slot.get("link") is not None and "widget" not in slot:
                _, src, src_slot, dst, _, _ = links[slot["link"]]
                assert dst == node["id"]
                kwargs[slot["name"]] = run.outputs[src][src_slot]
        kind = node["type"]
        if kind in OUTPUT_NODES:
            image = kwargs["images"]
            assert isinstance(image, torch.Tensor) and image.ndim == 4 and image.shape[-1] == 3
            run.received[node["id"]] = image
            result: tuple = ()
        elif kind in CORE_OPS:
            result = CORE_OPS[kind](**kwargs)
            if kind == "LoadImage":
                run.loads.append(node["id"])
        else:
            instance = pack.NODE_CLASS_MAPPINGS[kind]()
            result = getattr(instance, instance.FUNCTION)(**kwargs)
            if asyncio.iscoroutine(result):
                result = asyncio.run(result)
            if isinstance(result, dict):      # {"ui": ..., "result": (...)}, as ComfyUI takes it
                result = result["result"]
        run.outputs[node["id"]] = result
        run.order.append(node["id"])
        if after_node:
            after_node(node, result)
    return run


# ---------------------------------------------------------------------------
# The tests


def test_the_templates_are_there():
    names = set(IDS)
    assert len([n for n in names if n.startswith("fal ")]) == len(ENDPOINTS)
    # and three hybrid pipelines, and two with fal Image Endpoint
    assert len(names) == len(ENDPOINTS) + 5
    for path in WORKFLOWS:
        assert path.with_suffix(".jpg").is_file(), f"{path.name} has no thumbnail"
        with Image.open(path.with_suffix(".jpg")) as thumb:
            assert thumb.format == "JPEG" and thumb.width >= 200


@pytest.mark.parametrize("name", IDS)
def test_template_file_names_are_human_titles(name):
    # ComfyUI's front end (1.27 and 1.58) shows a pack's template by its file name: as the
    # title, and with - and _ turned into spaces as the description. No index file exists.
    assert "_" not in name and "-" not in name, "the description would differ from the title"
    assert " " in name and name[0].isalpha() and len(name) <= 30, "a short title of words"
    # Safe in a URL path (the front end does not encode it) and as a Windows file name.
    assert re.fullmatch(r"[A-Za-z0-9 .,]+", name) and not name.endswith((".", " "))


def test_template_notes_point_to_settings_fal():
    for path in WORKFLOWS:
        notes = [n["widgets_values"][0] for n in load(path)["nodes"] if n["type"] == "Note"]
        assert any("Settings → fal" in note for note in notes), path.name
        assert not any("Copy example_workflows" in note for note in notes), path.name


def test_every_endpoint_node_appears_in_a_workflow():
    used = {n["type"] for p in WORKFLOWS for n in load(p)["nodes"]}
    for endpoint in ENDPOINTS:
        assert endpoint.node_name in used, f"no workflow uses {endpoint.node_name}"


@pytest.mark.parametrize("path", WORKFLOWS, ids=IDS)
def test_workflow_is_well_formed(path):
    wf = load(path)
    assert wf["version"] == 0.4
    for key in ("last_node_id", "last_link_id", "nodes", "links", "groups", "config", "extra"):
        assert key in wf
    nodes = {n["id"]: n for n in wf["nodes"]}
    assert len(nodes) == len(wf["nodes"]), "duplicate node ids"
    assert wf["last_node_id"] == max(nodes)
    assert wf["last_link_id"] == max((link[0] for link in wf["links"]), default=0)
    assert sorted(n["order"] for n in nodes.values()) == list(range(len(nodes)))
    for node in nodes.values():
        for key in ("id", "type", "pos", "size", "flags", "order", "mode", "inputs", "outputs",
                    "properties", "widgets_values"):
            assert key in node, f"node {node['id']} lacks {key}"
        assert node["mode"] == 0
        if node["type"] not in FRONTEND_ONLY:
            assert node["properties"]["Node name for S&R"] == node["type"]
    # Links agree with the slots at both ends, in type and id.
    for link_id, src, src_slot, dst, dst_slot, kind in wf["links"]:
        out = nodes[src]["outputs"][src_slot]
        inp = nodes[dst]["inputs"][dst_slot]
        assert link_id in (out["links"] or []) and inp["link"] == link_id
        assert out["type"] == inp["type"] == kind
    linked = {link[0] for link in wf["links"]}
    for node in nodes.values():
        for inp in node["inputs"]:
            assert inp["link"] is None or inp["link"] in linked
        for out in node["outputs"]:
            assert all(i in linked for i in out["links"] or [])
    # Every required socket of a server node is connected.
    for node in nodes.values():
        if node["type"] in pack.NODE_CLASS_MAPPINGS:
            required = pack.NODE_CLASS_MAPPINGS[node["type"]].INPUT_TYPES()["required"]
            for inp in node["inputs"]:
                if inp["name"] in required and "widget" not in inp:
                    assert inp["link"] is not None, f"{node['type']}.{inp['name']} is unconnected"
        elif node["type"] in OUTPUT_NODES | {"ImageBatch", "ImageCrop", "ImageScale"}:
            assert all(i["link"] is not None for i in node["inputs"] if "widget" not in i)


@pytest.mark.parametrize("path", WORKFLOWS, ids=IDS)
def test_nodes_do_not_overlap(path):
    boxes = []
    for node in load(path)["nodes"]:
        (x, y), (w, h) = node["pos"], node["size"]
        boxes.append((node["id"], x, y - 30, x + w, y + h))   # the title bar sits above pos
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            apart = a[3] <= b[1] or b[3] <= a[1] or a[4] <= b[2] or b[4] <= a[2]
            assert apart, f"nodes {a[0]} and {b[0]} overlap"
    groups = [(g["title"], g["bounding"]) for g in load(path)["groups"]]
    for i, (ta, (ax, ay, aw, ah)) in enumerate(groups):
        for tb, (bx, by, bw, bh) in groups[i + 1:]:
            apart = ax + aw <= bx or bx + bw <= ax or ay + ah <= by or by + bh <= ay
            assert apart, f"groups '{ta}' and '{tb}' overlap"


@pytest.mark.parametrize("path", WORKFLOWS, ids=IDS)
def test_node_types_and_widget_values_match_the_nodes(path):
    for node in load(path)["nodes"]:
        kind = node["type"]
        assert kind in CORE_WIDGETS or kind in pack.NODE_CLASS_MAPPINGS, f"unknown node {kind}"
        values = widget_values(node)          # asserts the count
        if kind in CORE_WIDGETS:
            for name, value in values.items():
                allowed = CORE_ENUMS.get((kind, name))
                assert allowed is None or value in allowed, f"{kind}.{name} = {value!r}"
            if kind == "LoadImage":
                assert (INPUT_DIR / values["image"]).is_file(), \
                    f"{values['image']} is not in example_workflows/input/"
            continue
        raw = node["widgets_values"]
        names = widget_names(kind)
        for i, name in enumerate(names):
            if name.endswith(":control"):
                assert raw[i] in CONTROL_MODES, f"{kind} seed control is {raw[i]!r}"
                continue
            spec, opts = widget_spec(kind, name)
            value = raw[i]
            if isinstance(spec, (list, tuple)):
                assert value in spec, f"{kind}.{name} = {value!r} is not one of its choices"
            elif spec == "INT":
                assert isinstance(value, int) and not isinstance(value, bool)
                assert opts.get("min", value) <= value <= opts.get("max", value), (kind, name)
            elif spec == "FLOAT":
                assert isinstance(value, (int, float)) and not isinstance(value, bool)
                assert opts.get("min", value) <= value <= opts.get("max", value), (kind, name)
            elif spec == "BOOLEAN":
                assert isinstance(value, bool)
            elif spec == "STRING":
                assert isinstance(value, str)
        # Socket inputs come first, in INPUT_TYPES order, as the front end lays them out.
        sockets = [i["name"] for i in node["inputs"] if "widget" not in i]
        spec = pack.NODE_CLASS_MAPPINGS[kind].INPUT_TYPES()
        expected = [n for s in ("required", "optional") for n, v in spec.get(s, {}).items()
                    if not isinstance(v[0], (list, tuple)) and v[0] not in WIDGET_TYPES]
        assert sockets == expected


@pytest.mark.parametrize("path", WORKFLOWS, ids=IDS)
def test_no_key_in_the_workflow(path):
    text = path.read_text(encoding="utf-8")
    for pattern in KEY_PATTERNS:
        assert not pattern.search(text), f"{path.name} matches {pattern.pattern}"
    for node in load(path)["nodes"]:
        if node["type"] == "FalKey":
            assert node["widgets_values"] == ["environment FAL_KEY"]
        if node["type"] == "FalSettings":
            assert widget_values(node)["base_url"] == "", "a template must not pin a server"


def test_sample_inputs_ship_with_the_templates():
    for name in ("sample_portrait.png", "sample_duckling.png"):
        assert (INPUT_DIR / name).read_bytes() == (ROOT / "assets" / name).read_bytes()


@pytest.mark.parametrize("path", WORKFLOWS, ids=IDS)
def test_workflow_runs_end_to_end_on_the_emulator(fal, path):
    wf = load(path)
    run = execute_workflow(wf)
    fal_nodes = [n for n in wf["nodes"] if n["type"] in BY_NODE]
    for node in fal_nodes:
        endpoint = BY_NODE[node["type"]].endpoint_id
        assert fal.state.count("submit", endpoint) >= 1, f"{node['type']} never reached fal"
        images = run.outputs[node["id"]][0]
        assert images.ndim == 4 and images.shape[-1] == 3 and float(images.std()) > 0.01
    outputs = [n for n in wf["nodes"] if n["type"] in OUTPUT_NODES]
    assert outputs and all(n["id"] in run.received for n in outputs)


def test_fal_to_fal_chain_uploads_once(fal):
    wf = load(WORKFLOW_DIR / "Crop, Remove People, Sharpen.json")
    uploads: dict[str, int] = {}
    run = execute_workflow(wf, after_node=lambda node, _: uploads.__setitem__(
        node["type"], fal.state.count("upload")))
    assert uploads["FalObjectRemoval"] == 1           # the cropped photo
    assert uploads["FalSharpen"] == uploads["FalObjectRemoval"], \
        "fal Sharpen uploaded the Object Removal result again"
    removal_url = run.outputs[next(n["id"] for n in wf["nodes"]
                                   if n["type"] == "FalObjectRemoval")][2]
    sent = fal.state.entries("submit", "fal-ai/post-processing/sharpen")[0]["payload"]
    assert sent["image_url"] == removal_url.strip()
    # The crop is Upscale Image with crop "center" (current on 0.3.64 and 0.27, unlike Crop Image).
    crop = next(n for n in wf["nodes"] if n["type"] == "ImageScale")
    assert widget_values(crop)["crop"] == "center"
    w, h = widget_values(crop)["width"], widget_values(crop)["height"]
    assert [img.shape[1:3] for img in run.final_images()] == [(h, w)]


def test_batch_workflow_keeps_the_batch_whole(fal):
    wf = load(WORKFLOW_DIR / "Batch Color Correction.json")
    run = execute_workflow(wf)
    (result,) = run.final_images()
    assert result.shape[0] == 2
    submits = fal.state.entries("submit", "fal-ai/image-editing/color-correction")
    assert sorted(s["payload"]["seed"] for s in submits) == [100, 101]
    assert fal.state.count("upload") == 2


def test_composite_workflow_keeps_the_subject_as_shot(fal):
    wf = load(WORKFLOW_DIR / "New Background, Same Person.json")
    run = execute_workflow(wf)
    (result,) = run.final_images()
    original, _ = _load_image("sample_portrait.png")
    assert result.shape == original.shape
    # Inside the box (away from its feathered edge) the pixels are the original's...
    assert torch.allclose(result[0, 200:500, 300:460], original[0, 200:500, 300:460], atol=1e-5)
    # ...and outside it the background is fal's.
    fal_id = next(n["id"] for n in wf["nodes"] if n["type"] == "FalBackgroundChange")
    assert torch.allclose(result[0, :100, :200], run.outputs[fal_id][0][0, :100, :200], atol=0.02)
    assert not torch.allclose(result[0, :100, :200], original[0, :100, :200], atol=0.02)


def test_the_template_section_has_one_name():
    # Front end 1.27 titles the cards with the folder name and cannot translate it, while its
    # side list used templateWorkflows.category.<folder> from locales/<lang>/main.json: the
    # section was "fal image editing" on the left and "comfyui-fal-edit" above the cards. No
    # translation of the category: both places (and 1.58's Extensions list, and the node
    # source badge) show the folder name.
    for main in ROOT.glob("locales/*/main.json"):
        assert "category" not in json.loads(main.read_text()).get("templateWorkflows", {}), main
