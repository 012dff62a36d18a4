"""Writes example_workflows/: one template per fal node and three hybrid pipelines.

    python tools/make_workflows.py               # the JSON files and the sample inputs
    python tools/make_workflows.py --thumbnails  # ...and a <title>.jpg beside each, made
                                                 # from a real run on the local fal emulator

The files are ComfyUI's UI ("workflow") format, version 0.4, laid out the way
ComfyUI's front end (1.27) saves them: socket inputs first, then one input per
widget, `widgets_values` in widget order (a seed stores its value and then its
"control after generate" mode). Our nodes' widgets come from the pack's own
INPUT_TYPES, so a renamed or reordered field shows up here; core nodes are
described in CORE below. No workflow carries a key: fal Key nodes say
"environment FAL_KEY".
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "example_workflows"
INPUT_DIR = OUT / "input"          # copies of the sample images, for ComfyUI/input
SAMPLES = ("sample_portrait.png", "sample_duckling.png")
PORTRAIT, DUCKLING = SAMPLES

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tools.pack_loader import load_pack  # noqa: E402

pack = load_pack()

WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN")
SEED_CONTROL = "fixed"   # the seed tooltip's advice: a rerun only pays for failed items
ENV_KEY_CHOICE = "environment FAL_KEY"

# Core ComfyUI nodes used here: (socket inputs, widgets, outputs), as ComfyUI
# 0.3.64's /object_info and front end 1.27 describe them. A socket is
# (name, type, optional); a widget (name, front-end type, default).
CORE: dict[str, dict[str, list]] = {
    "LoadImage": {"sockets": [], "widgets": [("image", "COMBO", "example.png"),
                                             ("upload", "IMAGEUPLOAD", "image")],
                  "outputs": [("IMAGE", "IMAGE"), ("MASK", "MASK")]},
    "PreviewImage": {"sockets": [("images", "IMAGE", False)], "widgets": [], "outputs": []},
    "SaveImage": {"sockets": [("images", "IMAGE", False)],
                  "widgets": [("filename_prefix", "STRING", "ComfyUI")], "outputs": []},
    "ImageCrop": {"sockets": [("image", "IMAGE", False)],
                  "widgets": [("width", "INT", 512), ("height", "INT", 512), ("x", "INT", 0),
                              ("y", "INT", 0)],
                  "outputs": [("IMAGE", "IMAGE")]},
    "ImageScale": {"sockets": [("image", "IMAGE", False)],
                   "widgets": [("upscale_method", "COMBO", "nearest-exact"), ("width", "INT", 512),
                               ("height", "INT", 512), ("crop", "COMBO", "disabled")],
                   "outputs": [("IMAGE", "IMAGE")]},
    "ImageBatch": {"sockets": [("image1", "IMAGE", False), ("image2", "IMAGE", False)],
                   "widgets": [], "outputs": [("IMAGE", "IMAGE")]},
    "ImageCompositeMasked": {"sockets": [("destination", "IMAGE", False), ("source", "IMAGE", False),
                                         ("mask", "MASK", True)],
                             "widgets": [("x", "INT", 0), ("y", "INT", 0),
                                         ("resize_source", "BOOLEAN", False)],
                             "outputs": [("IMAGE", "IMAGE")]},
    "SolidMask": {"sockets": [], "widgets": [("value", "FLOAT", 1.0), ("width", "INT", 512),
                                             ("height", "INT", 512)],
                  "outputs": [("MASK", "MASK")]},
    "FeatherMask": {"sockets": [("mask", "MASK", False)],
                    "widgets": [("left", "INT", 0), ("top", "INT", 0), ("right", "INT", 0),
                                ("bottom", "INT", 0)],
                    "outputs": [("MASK", "MASK")]},
    "MaskComposite": {"sockets": [("destination", "MASK", False), ("source", "MASK", False)],
                      "widgets": [("x", "INT", 0), ("y", "INT", 0), ("operation", "COMBO", "multiply")],
                      "outputs": [("MASK", "MASK")]},
    # A front-end-only node (never sent to the server): the template's instructions.
    "Note": {"sockets": [], "widgets": [("text", "STRING", "")], "outputs": []},
}


def describe(node_type: str) -> dict[str, list]:
    """Sockets, widgets and outputs of a node type, ours from INPUT_TYPES."""
    if node_type in CORE:
        return CORE[node_type]
    cls = pack.NODE_CLASS_MAPPINGS[node_type]
    spec = cls.INPUT_TYPES()
    sockets, widgets = [], []
    for section in ("required", "optional"):
        for name, value in spec.get(section, {}).items():
            kind, opts = value[0], (value[1] if len(value) > 1 else {})
            if isinstance(kind, (list, tuple)):
                widgets.append((name, "COMBO", opts.get("default", kind[0])))
            elif kind in WIDGET_TYPES:
                widgets.append((name, kind, opts.get("default")))
                if kind == "INT" and opts.get("control_after_generate"):
                    widgets.append((name + ":control", "CONTROL", SEED_CONTROL))
            else:
                sockets.append((name, kind, section == "optional"))
    outputs = list(zip(cls.RETURN_NAMES, cls.RETURN_TYPES))
    return {"sockets": sockets, "widgets": widgets, "outputs": outputs}


class Node:
    def __init__(self, graph: "Graph", node_id: int, node_type: str, pos, size, values: dict,
                 title: str | None, color: str | None):
        self.graph, self.id, self.type = graph, node_id, node_type
        self.pos, self.size, self.title, self.color = list(pos), list(size), title, color
        self.desc = describe(node_type)
        names = {w[0] for w in self.desc["widgets"]}
        unknown = set(values) - names
        if unknown:
            raise ValueError(f"{node_type} has no widget {sorted(unknown)}")
        self.values = values
        self.input_links: dict[str, int] = {}
        self.output_links: dict[int, list[int]] = {}

    def out(self, name: str) -> tuple["Node", int]:
        names = [o[0] for o in self.desc["outputs"]]
        return self, names.index(name)

    def widget_values(self) -> list:
        return [self.values.get(name, default) for name, _, default in self.desc["widgets"]]

    def to_json(self, order: int) -> dict[str, Any]:
        inputs = []
        for name, kind, optional in self.desc["sockets"]:
            entry: dict[str, Any] = {"localized_name": name, "name": name, "type": kind}
            if optional:
                entry["shape"] = 7
            entry["link"] = self.input_links.get(name)
            inputs.append(entry)
        for name, kind, _ in self.desc["widgets"]:
            if kind == "CONTROL":
                continue
            inputs.append({"localized_name": "choose file to upload" if kind == "IMAGEUPLOAD"
                           else name, "name": name, "type": kind, "widget": {"name": name},
                           "link": None})
        outputs = []
        for slot, (name, kind) in enumerate(self.desc["outputs"]):
            links = self.output_links.get(slot)
            entry = {"localized_name": name, "name": name, "type": kind, "links": links or None}
            if links:
                entry["slot_index"] = slot
            outputs.append(entry)
        data: dict[str, Any] = {
            "id": self.id, "type": self.type, "pos": self.pos, "size": self.size, "flags": {},
            "order": order, "mode": 0, "inputs": inputs, "outputs": outputs,
            "properties": {"Node name for S&R": self.type},
            "widgets_values": self.widget_values(),
        }
        if self.type == "Note":
            data["properties"] = {}
        if self.title:
            data["title"] = self.title
        if self.color:
            data["color"], data["bgcolor"] = self.color
        return data


NOTE_COLORS = ("#432", "#653")


class Graph:
    def __init__(self) -> None:
        self.nodes: list[Node] = []
        self.links: list[list] = []
        self.groups: list[dict] = []

    def add(self, node_type: str, pos, size, title: str | None = None, color=None,
            **values) -> Node:
        node = Node(self, len(self.nodes) + 1, node_type, pos, size, values, title, color)
        self.nodes.append(node)
        return node

    def note(self, pos, size, text: str) -> Node:
        return self.add("Note", pos, size, color=NOTE_COLORS, text=text)

    def link(self, source: tuple[Node, int], target: Node, input_name: str) -> None:
        src, slot = source
        sockets = [s[0] for s in target.desc["sockets"]]
        if input_name not in sockets:
            raise ValueError(f"{target.type} has no socket {input_name}")
        link_id = len(self.links) + 1
        kind = src.desc["outputs"][slot][1]
        want = target.desc["sockets"][sockets.index(input_name)][1]
        if kind != want:
            raise ValueError(f"{src.type}.{slot} is {kind}, {target.type}.{input_name} wants {want}")
        self.links.append([link_id, src.id, slot, target.id, sockets.index(input_name), kind])
        target.input_links[input_name] = link_id
        src.output_links.setdefault(slot, []).append(link_id)

    def group(self, title: str, members: list[Node], color: str) -> None:
        pad, title_h = 20, 50
        x0 = min(n.pos[0] for n in members) - pad
        y0 = min(n.pos[1] for n in members) - 30 - title_h    # node title bar sits above pos
        x1 = max(n.pos[0] + n.size[0] for n in members) + pad
        y1 = max(n.pos[1] + n.size[1] for n in members) + pad
        self.groups.append({"title": title, "bounding": [x0, y0, x1 - x0, y1 - y0],
                            "color": color, "font_size": 24, "flags": {}})

    def order(self) -> dict[int, int]:
        """A topological execution order, as the front end stores it in `order`."""
        deps = {n.id: {link[1] for link in self.links if link[3] == n.id} for n in self.nodes}
        done: list[int] = []
        while len(done) < len(self.nodes):
            ready = [i for i in sorted(deps) if i not in done and deps[i] <= set(done)]
            if not ready:
                raise ValueError("the graph has a cycle")
            done.append(ready[0])
        return {node_id: index for index, node_id in enumerate(done)}

    def to_json(self) -> dict[str, Any]:
        order = self.order()
        xs = [n.pos[0] for n in self.nodes] + [n.pos[0] + n.size[0] for n in self.nodes]
        ys = [n.pos[1] - 30 for n in self.nodes] + [n.pos[1] + n.size[1] for n in self.nodes]
        for g in self.groups:
            x, y, w, h = g["bounding"]
            xs += [x, x + w]
            ys += [y, y + h]
        width, height = max(xs) - min(xs), max(ys) - min(ys)
        scale = round(min(1.0, 1350 / width, 820 / height), 2)
        return {
            "last_node_id": max(n.id for n in self.nodes),
            "last_link_id": len(self.links),
            "nodes": [n.to_json(order[n.id]) for n in self.nodes],
            "links": self.links,
            "groups": self.groups,
            "config": {},
            "extra": {"ds": {"scale": scale,
                             "offset": [round(40 / scale - min(xs)), round(60 / scale - min(ys))]}},
            "version": 0.4,
        }


# ---------------------------------------------------------------------------
# Layout: columns 460 px apart; heights follow what the front end computes.

FAL_SIZE = {"FalBackgroundChange": [400, 330], "FalFaceEnhancement": [400, 260],
            "FalColorCorrection": [400, 260], "FalObjectRemoval": [400, 330],
            "FalSharpen": [400, 290], "FalFluxDevImageToImage": [400, 380],
            "FalRecraftV3ImageToImage": [400, 330], "FalLumaPhotonModify": [400, 240],
            "FalSeedEditV3": [400, 250], "FalFluxKontextMaxMulti": [400, 380]}
LOAD_SIZE, VIEW_SIZE = [320, 360], [420, 380]
KEY_SIZE, SETTINGS_SIZE = [300, 60], [300, 290]
COL = 460


def key_and_settings(g: Graph, x: float, y: float, **settings) -> Node:
    """fal Key ("environment FAL_KEY") -> fal Settings; returns the settings node."""
    key = g.add("FalKey", [x, y], KEY_SIZE, key_name=ENV_KEY_CHOICE)
    node = g.add("FalSettings", [x, y + KEY_SIZE[1] + 70], SETTINGS_SIZE, **settings)
    g.link(key.out("key"), node, "key")
    return node


KEY_NOTE = ("Needs a fal key. Easiest: Settings → fal → add a key, then pick its name in a fal "
            "Key node connected through fal Settings. Or set FAL_KEY before starting ComfyUI: "
            "it is used wherever no key is picked. The sample images are put into ComfyUI's "
            "input folder when the pack loads.")


def save_images(g: Graph, images: Any, pos: list[float], prefix: str) -> Node:
    """SaveImage of `images` (an IMAGE output) under ComfyUI's output/<prefix>."""
    save = g.add("SaveImage", pos, VIEW_SIZE, filename_prefix=prefix)
    g.link(images, save, "images")
    return save


def paste_through_mask(g: Graph, pos: list[float], title: str, destination: Any, source: Any,
                       mask: Any) -> Node:
    """ImageCompositeMasked: `source` over `destination` where `mask` is white, at 0, 0."""
    comp = g.add("ImageCompositeMasked", pos, [320, 170], title=title, x=0, y=0,
                 resize_source=False)
    g.link(destination, comp, "destination")
    g.link(source, comp, "source")
    g.link(mask, comp, "mask")
    return comp


def single(node_type: str, image: str, values: dict, note: str, *, save: str | None = None,
           with_settings: dict | None = None, image_input: str = "image") -> Graph:
    """LoadImage -> fal node -> PreviewImage (or SaveImage), plus a note; with_settings adds
    fal Key -> fal Settings above the fal node."""
    g = Graph()
    load = g.add("LoadImage", [40, 140], LOAD_SIZE, image=image)
    fal = g.add(node_type, [40 + COL * 0.85, 140], FAL_SIZE[node_type], **values)
    g.link(load.out("IMAGE"), fal, image_input)
    view_x = fal.pos[0] + fal.size[0] + 60
    if save:
        view = g.add("SaveImage", [view_x, 140], VIEW_SIZE, filename_prefix=save)
    else:
        view = g.add("PreviewImage", [view_x, 140], VIEW_SIZE)
    g.link(fal.out("images"), view, "images")
    note_y = 140 + max(LOAD_SIZE[1], fal.size[1], VIEW_SIZE[1]) + 70
    if with_settings is not None:
        settings = key_and_settings(g, 40, note_y, **with_settings)
        g.link(settings.out("settings"), fal, "settings")
        g.note([40 + SETTINGS_SIZE[0] + 60, note_y], [560, 200], note + "\n\n" + KEY_NOTE)
    else:
        g.note([40, note_y], [700, 160], note + "\n\n" + KEY_NOTE)
    return g


def kontext_multi() -> Graph:
    g = Graph()
    portrait = g.add("LoadImage", [40, 140], LOAD_SIZE, image=PORTRAIT)
    duck = g.add("LoadImage", [40, 140 + LOAD_SIZE[1] + 70], LOAD_SIZE, image=DUCKLING)
    fal = g.add("FalFluxKontextMaxMulti", [420, 140], FAL_SIZE["FalFluxKontextMaxMulti"],
                prompt="Put the little yellow duckling from the second image on the person's "
                       "shoulder in the first image. Keep the street, the person's face and "
                       "the lighting of the first image; the duckling casts a soft shadow.",
                guidance_scale=3.5, num_images=1, output_format="jpeg", safety_tolerance="2",
                aspect_ratio="3:2", seed=1234)
    g.link(portrait.out("IMAGE"), fal, "image_1")
    g.link(duck.out("IMAGE"), fal, "image_2")
    settings = key_and_settings(g, 420, 140 + FAL_SIZE["FalFluxKontextMaxMulti"][1] + 70)
    g.link(settings.out("settings"), fal, "settings")
    save_images(g, fal.out("images"), [880, 140], "fal_edit/kontext_multi")
    g.note([880, 140 + VIEW_SIZE[1] + 70], [420, 250],
           "FLUX.1 Kontext [max] Multi sends every connected reference image in one request, "
           "in socket order (image_1, image_2, ...; each socket may carry a batch), and "
           "combines them as the prompt says. Refer to the images by what they show.\n\n"
           + KEY_NOTE)
    return g


def hybrid_crop_remove_sharpen() -> Graph:
    """Local crop -> fal Object Removal -> fal Sharpen -> local save: the fal result goes
    to the second fal node by URL, with no second upload."""
    g = Graph()
    load = g.add("LoadImage", [40, 160], LOAD_SIZE, image=PORTRAIT)
    # Upscale Image with crop "center" cuts the 768x512 photo to 640x512 (x 64..704), as
    # Crop Image did; Crop Image is "(DEPRECATED)" on ComfyUI 0.27 and its replacement
    # (ImageCropV2) does not exist on 0.3.64. This node is current on both.
    crop = g.add("ImageScale", [40, 160 + LOAD_SIZE[1] + 70], [320, 160],
                 title="Crop to 640x512 (centre)", upscale_method="lanczos", width=640,
                 height=512, crop="center")
    g.link(load.out("IMAGE"), crop, "image")
    remove = g.add("FalObjectRemoval", [480, 160], FAL_SIZE["FalObjectRemoval"],
                   prompt="the two small people standing in front of the houses in the background",
                   guidance_scale=3.5, num_inference_steps=30, safety_tolerance="2",
                   output_format="png", aspect_ratio="fal default", seed=7)
    sharpen = g.add("FalSharpen", [940, 160], FAL_SIZE["FalSharpen"],
                    sharpen_mode="cas", cas_amount=0.6)
    settings = key_and_settings(g, 480, 160 + FAL_SIZE["FalObjectRemoval"][1] + 70)
    g.link(crop.out("IMAGE"), remove, "image")
    g.link(remove.out("images"), sharpen, "image")
    g.link(settings.out("settings"), remove, "settings")
    g.link(settings.out("settings"), sharpen, "settings")
    middle = g.add("PreviewImage", [940, 160 + FAL_SIZE["FalSharpen"][1] + 70], [400, 330],
                   title="Preview (people removed)")
    g.link(remove.out("images"), middle, "images")
    save = save_images(g, sharpen.out("images"), [1460, 160], "fal_edit/cleaned")
    note = g.note([1460, 160 + VIEW_SIZE[1] + 70], [420, 230],
                  "Crop locally (free), let fal remove the background people, then sharpen on "
                  "fal. The Object Removal result reaches fal Sharpen by its fal URL: it is not "
                  "uploaded again. The result is saved locally under output/fal_edit/.\n\n"
                  + KEY_NOTE)
    g.group("local: crop", [load, crop], "#3f789e")
    g.group("fal: remove people, then sharpen (remote, paid)", [remove, settings, sharpen, middle],
            "#a1309b")
    g.group("local: save", [save, note], "#3f789e")
    return g


def hybrid_batch_color_correction() -> Graph:
    """Two photos batched locally, one fal Color Correction node, the batch kept whole."""
    g = Graph()
    a = g.add("LoadImage", [40, 160], LOAD_SIZE, image=PORTRAIT)
    b = g.add("LoadImage", [40, 160 + LOAD_SIZE[1] + 70], LOAD_SIZE, image=DUCKLING)
    batch = g.add("ImageBatch", [420, 160], [220, 60])
    g.link(a.out("IMAGE"), batch, "image1")
    g.link(b.out("IMAGE"), batch, "image2")
    before = g.add("PreviewImage", [420, 300], [300, 300], title="Preview (before)")
    g.link(batch.out("IMAGE"), before, "images")
    fal = g.add("FalColorCorrection", [800, 160], FAL_SIZE["FalColorCorrection"],
                guidance_scale=3.5, num_inference_steps=30, safety_tolerance="2",
                output_format="png", aspect_ratio="fal default", seed=100)
    g.link(batch.out("IMAGE"), fal, "image")
    save = save_images(g, fal.out("images"), [1260, 160], "fal_edit/color_corrected")
    note = g.note([800, 160 + VIEW_SIZE[1] + 70], [880, 210],
                  "Batch Images makes one batch of the two photos (the second is scaled and "
                  "centre-cropped to the first one's size). fal Color Correction sends every "
                  "frame as its own request, concurrently, and returns the whole batch in input "
                  "order; frame i uses seed + i. With the seed on 'fixed', a rerun after a failure "
                  "only pays for the frames that failed. ComfyUI 0.27 and later label Batch Images "
                  "'(DEPRECATED)': it still works there; its replacement does not exist on 0.3.64."
                  "\n\n" + KEY_NOTE)
    g.group("local: load and batch", [a, b, batch, before], "#3f789e")
    g.group("fal: colour correction (remote, paid)", [fal], "#a1309b")
    g.group("local: save", [save], "#3f789e")
    del note
    return g


def hybrid_background_keep_subject() -> Graph:
    """fal Background Change, then a local masked composite pastes the original subject back
    so the person stays pixel for pixel as shot."""
    g = Graph()
    load = g.add("LoadImage", [40, 160], LOAD_SIZE, image=PORTRAIT)
    fal = g.add("FalBackgroundChange", [420, 160], FAL_SIZE["FalBackgroundChange"],
                prompt="a quiet beach at golden hour, palm trees and gentle waves, warm light",
                guidance_scale=3.5, num_inference_steps=30, safety_tolerance="2",
                output_format="png", aspect_ratio="fal default", seed=21)
    g.link(load.out("IMAGE"), fal, "image")
    raw = g.add("PreviewImage", [420, 160 + FAL_SIZE["FalBackgroundChange"][1] + 70], [400, 300],
                title="Preview (fal result)")
    g.link(fal.out("images"), raw, "images")
    fit = g.add("ImageScale", [880, 160], [320, 160], title="Match the original size",
                upscale_method="lanczos", width=768, height=512, crop="center")
    g.link(fal.out("images"), fit, "image")
    canvas = g.add("SolidMask", [880, 390], [320, 130], title="Mask canvas (0 = new background)",
                   value=0.0, width=768, height=512)
    subject = g.add("SolidMask", [880, 590], [320, 130], title="Subject box (1 = keep original)",
                    value=1.0, width=240, height=400)
    feather = g.add("FeatherMask", [880, 790], [320, 160], left=24, top=24, right=24, bottom=0)
    g.link(subject.out("MASK"), feather, "mask")
    place = g.add("MaskComposite", [1260, 390], [320, 160], x=264, y=112, operation="add")
    g.link(canvas.out("MASK"), place, "destination")
    g.link(feather.out("MASK"), place, "source")
    comp = paste_through_mask(g, [1260, 160], "Original subject over the new background",
                              fit.out("IMAGE"), load.out("IMAGE"), place.out("MASK"))
    save = save_images(g, comp.out("IMAGE"), [1640, 160], "fal_edit/new_background")
    note = g.note([1640, 160 + VIEW_SIZE[1] + 70], [420, 260],
                  "fal changes the background; the local nodes then paste the original person "
                  "back through a feathered box mask (x 264, y 112, 240 x 400 on the 768 x 512 "
                  "sample), so the face and clothes stay exactly as shot. For your own photo, "
                  "set the box to your subject, or feed any MASK (e.g. from a segmentation node) "
                  "into ImageCompositeMasked.\n\n" + KEY_NOTE)
    g.group("local: photo", [load], "#3f789e")
    g.group("fal: new background (remote, paid)", [fal, raw], "#a1309b")
    g.group("local: mask and composite", [fit, canvas, subject, feather, place, comp], "#3f789e")
    g.group("local: save", [save, note], "#3f789e")
    return g


ENDPOINT_SIZE = [460, 640]     # fal Image Endpoint with its form


def endpoint_arguments(**fields) -> str:
    """fal Image Endpoint's `arguments` as the form writes them."""
    return json.dumps(fields, indent=2)


def seedream_two_photos() -> Graph:
    """fal Image Endpoint on a list-image edit endpoint: both photos in one request."""
    g = Graph()
    portrait = g.add("LoadImage", [40, 140], LOAD_SIZE, image=PORTRAIT)
    duck = g.add("LoadImage", [40, 140 + LOAD_SIZE[1] + 70], LOAD_SIZE, image=DUCKLING)
    fal = g.add("FalImageEndpoint", [420, 140], ENDPOINT_SIZE,
                endpoint="fal-ai/bytedance/seedream/v4.5/edit",
                arguments=endpoint_arguments(
                    prompt="Put the little yellow duckling from the second image on the person's "
                           "shoulder in the first image; keep the street and the light.",
                    seed=1234))
    g.link(portrait.out("IMAGE"), fal, "image")
    g.link(duck.out("IMAGE"), fal, "image_2")
    settings = key_and_settings(g, 420, 140 + ENDPOINT_SIZE[1] + 70)
    g.link(settings.out("settings"), fal, "settings")
    save_images(g, fal.out("images"), [940, 140], "fal_edit/seedream_edit")
    g.note([940, 140 + VIEW_SIZE[1] + 70], [460, 300],
           "fal Image Endpoint runs any fal endpoint that takes an image and returns images. "
           "Seedream 4.5 Edit takes a list of images (image_urls): every frame of image, "
           "image_2, ... goes into one request, in order. The form under the node edits "
           "`arguments`: only the fields you set are sent, fal's defaults apply to the rest. "
           "Pick another endpoint in the list; the form follows.\n\n" + KEY_NOTE)
    return g


def inpaint_box_keep_rest() -> Graph:
    """Local mask -> an inpainting endpoint -> local composite: only the box changes."""
    g = Graph()
    load = g.add("LoadImage", [40, 160], LOAD_SIZE, image=PORTRAIT)
    canvas = g.add("SolidMask", [40, 160 + LOAD_SIZE[1] + 70], [320, 130],
                   title="Mask canvas (0 = keep)", value=0.0, width=768, height=512)
    box = g.add("SolidMask", [40, 160 + LOAD_SIZE[1] + 270], [320, 130],
                title="Box to repaint (1)", value=1.0, width=300, height=170)
    place = g.add("MaskComposite", [40, 160 + LOAD_SIZE[1] + 470], [320, 160], x=440, y=10,
                  operation="add")
    g.link(canvas.out("MASK"), place, "destination")
    g.link(box.out("MASK"), place, "source")
    fal = g.add("FalImageEndpoint", [480, 160], ENDPOINT_SIZE, endpoint="fal-ai/flux-pro/v1/fill",
                arguments=endpoint_arguments(
                    prompt="a red hot air balloon floating in the sky", output_format="png",
                    seed=7))
    g.link(load.out("IMAGE"), fal, "image")
    g.link(place.out("MASK"), fal, "mask")
    settings = key_and_settings(g, 480, 160 + ENDPOINT_SIZE[1] + 70)
    g.link(settings.out("settings"), fal, "settings")
    fit = g.add("ImageScale", [1000, 160], [320, 160], title="Match the original size",
                upscale_method="lanczos", width=768, height=512, crop="center")
    g.link(fal.out("images"), fit, "image")
    comp = paste_through_mask(g, [1000, 390], "Repainted box over the original",
                              load.out("IMAGE"), fit.out("IMAGE"), place.out("MASK"))
    save = save_images(g, comp.out("IMAGE"), [1380, 160], "fal_edit/inpainted")
    note = g.note([1380, 160 + VIEW_SIZE[1] + 70], [440, 280],
                  "The mask is made locally (a box in the sky of the 768 x 512 sample; any MASK "
                  "works, e.g. from a segmentation node or the mask editor). fal Image Endpoint "
                  "sends it to FLUX.1 Fill's mask_url with the photo; white is repainted. The "
                  "local composite then pastes only the box back over the original, so every "
                  "pixel outside it stays as shot.\n\n" + KEY_NOTE)
    g.group("local: photo and mask", [load, canvas, box, place], "#3f789e")
    g.group("fal: inpaint the box (remote, paid)", [fal, settings], "#a1309b")
    g.group("local: composite and save", [fit, comp, save, note], "#3f789e")
    return g


def workflows() -> dict[str, Graph]:
    """File name -> graph. The front end shows a pack's template by its file name (as the
    title, and with - and _ as spaces as the description): the names are the titles."""
    return {
        "fal Background Change": single(
            "FalBackgroundChange", PORTRAIT,
            dict(prompt="a quiet beach at golden hour, palm trees and gentle waves, warm rim "
                        "light on the person", aspect_ratio="fal default", seed=21),
            "fal Background Change keeps the subject and paints the background the prompt "
            "describes. The fal Key / fal Settings pair is optional: without it the node uses "
            "FAL_KEY and default settings.", with_settings={}),
        "fal Face Enhancement": single(
            "FalFaceEnhancement", PORTRAIT, dict(guidance_scale=3.5, seed=5),
            "fal Face Enhancement cleans up faces (skin, eyes, detail) and keeps a natural look; "
            "it takes no prompt.", save="fal_edit/face_enhanced"),
        "fal Color Correction": single(
            "FalColorCorrection", PORTRAIT, dict(seed=3),
            "fal Color Correction fixes white balance, exposure and colour: the sample's "
            "washed-out yellow sky is a good test. Every frame of a batch is its own request."),
        "fal Object Removal": single(
            "FalObjectRemoval", PORTRAIT,
            dict(prompt="the two small people standing in front of the houses in the background",
                 seed=7),
            "fal Object Removal removes what the prompt names and fills in what was behind it."),
        "fal Sharpen": single(
            "FalSharpen", DUCKLING,
            dict(sharpen_mode="smart", sharpen_radius=2, noise_radius=7, preserve_edges=0.75,
                 smart_sharpen_strength=5.0, smart_sharpen_ratio=0.5),
            "fal Sharpen: 'basic' is an unsharp mask (radius, alpha), 'smart' is edge-aware "
            "(noise radius, preserve edges, strength, ratio), 'cas' is contrast-adaptive "
            "(amount). Each mode only reads its own widgets.", save="fal_edit/sharpened"),
        "fal FLUX.1 dev Image to Image": single(
            "FalFluxDevImageToImage", DUCKLING,
            dict(prompt="a watercolor painting of a fluffy yellow duckling by a pond, soft "
                        "morning mist, lily pads, loose brush strokes on textured paper",
                 strength=0.85, num_inference_steps=28, guidance_scale=3.5, num_images=2,
                 enable_safety_checker=True, output_format="jpeg", acceleration="regular",
                 seed=42),
            "FLUX.1 [dev] redraws the image as the prompt says; strength sets how far it may "
            "move from the input. num_images 2 returns two variations as one batch. fal "
            "Settings' nsfw_policy decides what happens to results fal flags.",
            with_settings=dict(nsfw_policy="error")),
        "fal Recraft V3 Image to Image": single(
            "FalRecraftV3ImageToImage", PORTRAIT,
            dict(prompt="the same street on a snowy winter evening, warm lights in the windows",
                 strength=0.5, style="digital_illustration/hand_drawn",
                 colors="#1d3557, #457b9d, #a8dadc, #f1faee, #e63946",
                 style_id="", negative_prompt="text, watermark, blurry"),
            "Recraft V3 restyles the image: pick a style and, optionally, a colour palette "
            "(#rrggbb, comma separated). Vector styles cost twice as much.",
            save="fal_edit/recraft"),
        "fal Luma Photon Modify": single(
            "FalLumaPhotonModify", DUCKLING,
            dict(prompt="a vintage children's book illustration: the duckling in a wide spring "
                        "meadow with daisies, soft pastel colours",
                 strength=0.7, aspect_ratio="16:9"),
            "Luma Photon Modify edits and reframes: here the square duckling becomes a 16:9 "
            "scene. 'match input' keeps the ratio closest to the input."),
        "fal SeedEdit 3.0 Edit Image": single(
            "FalSeedEditV3", PORTRAIT,
            dict(prompt="Give the person a red knitted scarf and a woolly hat, and make it snow "
                        "softly on the street.",
                 guidance_scale=0.5, seed=11),
            "SeedEdit 3.0 follows an instruction: say what to change, the rest is kept.",
            save="fal_edit/seededit"),
        "fal FLUX.1 Kontext max Multi": kontext_multi(),
        "Crop, Remove People, Sharpen": hybrid_crop_remove_sharpen(),
        "Batch Color Correction": hybrid_batch_color_correction(),
        "New Background, Same Person": hybrid_background_keep_subject(),
        "Seedream Edit, Two Photos": seedream_two_photos(),
        "Inpaint a Box, Keep the Rest": inpaint_box_keep_rest(),
    }


def write_json() -> list[Path]:
    OUT.mkdir(exist_ok=True)
    INPUT_DIR.mkdir(exist_ok=True)
    for name in SAMPLES:
        shutil.copyfile(ROOT / "assets" / name, INPUT_DIR / name)
    graphs = workflows()
    for stale in OUT.glob("*.json"):     # a renamed template leaves no old copy behind
        if stale.stem not in graphs:
            stale.unlink()
            stale.with_suffix(".jpg").unlink(missing_ok=True)
    paths = []
    for name, graph in graphs.items():
        path = OUT / f"{name}.json"
        path.write_text(json.dumps(graph.to_json(), indent=2) + "\n", encoding="utf-8")
        paths.append(path)
    return paths


# ---------------------------------------------------------------------------
# Thumbnails: run each workflow on the local emulator, draw inputs -> outputs.

def contact_sheet(inputs: list, outputs: list, height: int = 220):
    """inputs/outputs: lists of PIL images; returns one RGB image: inputs -> outputs."""
    from PIL import Image, ImageDraw

    def fit(img):
        img = img.convert("RGB")
        return img.resize((max(1, round(img.width * height / img.height)), height), Image.LANCZOS)

    left, right = [fit(i) for i in inputs], [fit(o) for o in outputs]
    gap, arrow, margin = 10, 60, 16
    width = (sum(i.width for i in left + right) + gap * (len(left) + len(right) - 2)
             + arrow + 2 * margin)
    sheet = Image.new("RGB", (width, height + 2 * margin), (32, 32, 36))
    x = margin
    for group_index, group in enumerate((left, right)):
        for i, img in enumerate(group):
            sheet.paste(img, (x, margin))
            x += img.width + (gap if i < len(group) - 1 else 0)
        if group_index == 0:
            draw = ImageDraw.Draw(sheet)
            y = margin + height // 2
            draw.line([(x + 12, y), (x + arrow - 14, y)], fill=(230, 230, 230), width=5)
            draw.polygon([(x + arrow - 10, y), (x + arrow - 24, y - 12), (x + arrow - 24, y + 12)],
                         fill=(230, 230, 230))
            x += arrow
    if sheet.width > 1024:
        sheet = sheet.resize((1024, round(sheet.height * 1024 / sheet.width)), Image.LANCZOS)
    return sheet


def write_thumbnails() -> None:
    import os

    import numpy as np
    from PIL import Image

    sys.path.insert(0, str(ROOT / "tests"))
    from test_workflows import execute_workflow  # the test's UI-format executor
    from fal_emulator import FalEmulator

    def pil(tensor):
        return [Image.fromarray((np.clip(f.numpy(), 0, 1) * 255).round().astype(np.uint8))
                for f in tensor]

    with FalEmulator() as emulator:
        os.environ["COMFYUI_FAL_BASE_URL"] = emulator.base_url
        os.environ.setdefault("FAL_KEY", "emulator-only-placeholder")
        for path in sorted(OUT.glob("*.json")):
            workflow = json.loads(path.read_text(encoding="utf-8"))
            run = execute_workflow(workflow)
            inputs = [img for node_id in run.loads for img in pil(run.outputs[node_id][0])]
            finals = run.final_images()
            outputs = [img for tensor in finals for img in pil(tensor)]
            contact_sheet(inputs, outputs).save(path.with_suffix(".jpg"), quality=85)
            print(f"{path.with_suffix('.jpg').name}: {len(inputs)} in -> {len(outputs)} out")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--thumbnails", action="store_true",
                        help="also run every workflow on the local emulator and draw <name>.jpg")
    args = parser.parse_args(argv)
    for path in write_json():
        print(path.relative_to(ROOT))
    if args.thumbnails:
        write_thumbnails()


if __name__ == "__main__":
    main()
