"""The table of emulated endpoints and fal/pydantic-style input validation.

Each endpoint is described by data only (fields with types, enums, defaults,
ranges, plus the output shape); the image work lives in ``imageops`` and is
referenced by name so this module stays a readable catalogue.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from . import imageops

ASPECT_RATIOS = ("21:9", "16:9", "4:3", "3:2", "1:1", "2:3", "3:4", "9:16", "9:21")
LUMA_ASPECT_RATIOS = ("1:1", "16:9", "9:16", "4:3", "3:4", "21:9", "9:21")
SAFETY_TOLERANCES = ("1", "2", "3", "4", "5", "6")
OUTPUT_FORMATS = ("jpeg", "png")
ACCELERATIONS = ("none", "regular", "high")
RECRAFT_STYLE_ROOTS = ("any", "realistic_image", "digital_illustration", "vector_illustration")


@dataclass(frozen=True)
class Field:
    # str | int | float | bool | enum | image_url | image_urls | colors | recraft_style
    # | list | object | any
    kind: str
    default: Any = None          # used when the field is absent
    required: bool = False
    choices: tuple = ()
    ge: float | None = None
    le: float | None = None
    min_length: int | None = None
    max_length: int | None = None
    nullable: bool = False
    gt: float | None = None
    lt: float | None = None
    items: str | None = None     # list: the kind of each item (str | int | float | bool | enum)


@dataclass(frozen=True)
class ImageLimits:
    """Reject inputs at or above these (recraft's documented limits)."""
    max_pixels: int
    max_side: int
    max_bytes: int


@dataclass(frozen=True)
class EndpointSpec:
    endpoint_id: str
    fields: dict
    op: Callable                  # imageops function: (images, params, seed) -> Image
    # images_seed | images | flux | files | seededit (see server.build_output)
    output: str
    default_format: str = "jpeg"  # when the endpoint has no output_format field
    nsfw_check: bool = False      # output carries has_nsfw_concepts
    image_limits: ImageLimits | None = None
    # Endpoints made from the catalogue: where the images go in the answer ("images" or
    # "image"), the answer's other fields, and which input fields are masks.
    from_catalogue: bool = False
    output_fields: tuple = ()
    mask_fields: tuple = ()

    @property
    def image_fields(self) -> list[str]:
        """Image inputs in the order the op gets them: pictures first, masks last."""
        names = [n for n, f in self.fields.items() if f.kind in ("image_url", "image_urls")]
        return [n for n in names if n not in self.mask_fields] + \
            [n for n in names if n in self.mask_fields]


def _str(default=None, **kw) -> Field:
    return Field("str", default, **kw)


def _float(default=None, **kw) -> Field:
    return Field("float", default, **kw)


def _int(default=None, **kw) -> Field:
    return Field("int", default, **kw)


def _enum(choices, default=None, **kw) -> Field:
    return Field("enum", default, choices=tuple(choices), **kw)


REQUIRED_IMAGE = Field("image_url", required=True)
REQUIRED_PROMPT = _str(required=True)
SEED = _int(ge=0)
SYNC_MODE = Field("bool", False)
OUTPUT_FORMAT = _enum(OUTPUT_FORMATS, "jpeg")


def _image_editing(prompt_default: str | None = None) -> dict:
    fields = {
        "image_url": REQUIRED_IMAGE,
        "guidance_scale": _float(3.5, ge=0, le=20),
        "num_inference_steps": _int(30, ge=1, le=50),
        "safety_tolerance": _enum(SAFETY_TOLERANCES, "2"),
        "output_format": OUTPUT_FORMAT,
        "aspect_ratio": _enum(ASPECT_RATIOS),
        "seed": SEED,
        "sync_mode": SYNC_MODE,
    }
    if prompt_default is not None:
        fields["prompt"] = _str(prompt_default)
    return fields


_SPECS = [
    EndpointSpec("fal-ai/image-editing/background-change",
                 _image_editing("beach sunset with palm trees"),
                 imageops.background_change, "images_seed"),
    EndpointSpec("fal-ai/image-editing/face-enhancement", _image_editing(),
                 imageops.face_enhancement, "images_seed"),
    EndpointSpec("fal-ai/image-editing/color-correction", _image_editing(),
                 imageops.color_correction, "images_seed"),
    EndpointSpec("fal-ai/image-editing/object-removal",
                 _image_editing("background people"),
                 imageops.object_removal, "images_seed"),
    EndpointSpec("fal-ai/post-processing/sharpen", {
        "image_url": REQUIRED_IMAGE,
        "sharpen_mode": _enum(("basic", "smart", "cas"), "basic"),
        "sharpen_radius": _int(1, ge=1, le=15),
        "sharpen_alpha": _float(1.0, ge=0.1, le=5),
        "noise_radius": _int(7, ge=1, le=25),
        "preserve_edges": _float(0.75, ge=0, le=1),
        "smart_sharpen_strength": _float(5.0, ge=0, le=25),
        "smart_sharpen_ratio": _float(0.5, ge=0, le=1),
        "cas_amount": _float(0.8, ge=0, le=1),
    }, imageops.sharpen, "images", default_format="png"),
    EndpointSpec("fal-ai/flux/dev/image-to-image", {
        "image_url": REQUIRED_IMAGE,
        "prompt": REQUIRED_PROMPT,
        "strength": _float(0.95, ge=0.01, le=1),
        "num_inference_steps": _int(40, ge=10, le=50),
        "seed": SEED,
        "guidance_scale": _float(3.5, ge=1, le=20),
        "sync_mode": SYNC_MODE,
        "num_images": _int(1, ge=1, le=4),
        "enable_safety_checker": Field("bool", True),
        "output_format": OUTPUT_FORMAT,
        "acceleration": _enum(ACCELERATIONS, "none"),
    }, imageops.flux_image_to_image, "flux", nsfw_check=True),
    EndpointSpec("fal-ai/recraft/v3/image-to-image", {
        "prompt": REQUIRED_PROMPT,
        "image_url": REQUIRED_IMAGE,
        "strength": _float(0.5, ge=0, le=1),
        "style": Field("recraft_style", "realistic_image"),
        "colors": Field("colors", []),
        "style_id": _str(nullable=True),
        "negative_prompt": _str(),
        "sync_mode": SYNC_MODE,
    }, imageops.recraft_posterize, "files", default_format="png",
        # "less than 5 MB": the stricter reading, 5,000,000 bytes (5 MiB is 5,242,880).
        image_limits=ImageLimits(16_000_000, 4096, 5_000_000)),
    EndpointSpec("fal-ai/luma-photon/modify", {
        "prompt": _str(),
        "image_url": REQUIRED_IMAGE,
        "strength": _float(required=True, ge=0, le=1),
        "aspect_ratio": _enum(LUMA_ASPECT_RATIOS, required=True),
    }, imageops.luma_modify, "files"),
    EndpointSpec("fal-ai/bytedance/seededit/v3/edit-image", {
        "prompt": REQUIRED_PROMPT,
        "image_url": REQUIRED_IMAGE,
        "guidance_scale": _float(0.5, ge=0, le=1),
        "seed": SEED,
        "enable_safety_checker": Field("bool", True),
        "sync_mode": SYNC_MODE,
    }, imageops.seededit, "seededit"),
    EndpointSpec("fal-ai/flux-pro/kontext/max/multi", {
        "prompt": REQUIRED_PROMPT,
        "image_urls": Field("image_urls", required=True, min_length=1),
        "seed": SEED,
        "guidance_scale": _float(3.5, ge=1, le=20),
        "sync_mode": SYNC_MODE,
        "num_images": _int(1, ge=1, le=4),
        "output_format": OUTPUT_FORMAT,
        "safety_tolerance": _enum(SAFETY_TOLERANCES, "2"),
        "aspect_ratio": _enum(ASPECT_RATIOS),
        "enhance_prompt": Field("bool", False),
    }, imageops.kontext_multi, "flux", nsfw_check=True),
]

CATALOGUE_FILE = Path(__file__).resolve().parents[1] / "nodes" / "data" / "catalogue.json"
_KINDS = {"string": "str", "url": "str", "integer": "int", "number": "float", "boolean": "bool",
          "enum": "enum", "list": "list", "object": "object", "any": "any"}


def _catalogue_field(schema: dict) -> Field:
    """One input field of the pack's catalogue (fal's published types) as an emulator Field."""
    image = schema.get("image")
    kind = ("image_urls" if image in ("urls", "masks") else "image_url") if image else \
        _KINDS.get(schema["type"], "any")
    items = schema.get("items") or {}
    return Field(kind, schema.get("default"), required=bool(schema.get("required")),
                 choices=tuple(schema.get("enum") or items.get("enum") or ()),
                 ge=schema.get("min"), le=schema.get("max"), gt=schema.get("gt"), lt=schema.get("lt"),
                 min_length=schema.get("min_length", schema.get("min_items")),
                 max_length=schema.get("max_length", schema.get("max_items")),
                 nullable=bool(schema.get("nullable")),
                 items=_KINDS.get(items.get("type")) if kind == "list" else None)


def _catalogue_spec(endpoint_id: str, entry: dict) -> EndpointSpec:
    fields = {name: _catalogue_field(f) for name, f in entry["input"].items()}
    masks = tuple(n for n, f in entry["input"].items() if f.get("image") in ("mask", "masks"))
    kind = imageops.op_kind(endpoint_id, bool(masks))
    output = entry["output"]
    return EndpointSpec(endpoint_id, fields, imageops.catalogue_op(kind), "catalogue",
                        default_format="png" if kind == "cutout" else "jpeg",
                        nsfw_check=bool(output.get("nsfw")), from_catalogue=True,
                        output_fields=(output["images"], *output.get("fields", ())),
                        mask_fields=masks)


def _all_specs() -> dict[str, EndpointSpec]:
    """The ten hand-written specs, then every other endpoint of the catalogue."""
    specs = {s.endpoint_id: s for s in _SPECS}
    with open(CATALOGUE_FILE, encoding="utf-8") as handle:
        for endpoint_id, entry in json.load(handle)["endpoints"].items():
            specs.setdefault(endpoint_id, _catalogue_spec(endpoint_id, entry))
    return specs


ENDPOINTS: dict[str, EndpointSpec] = _all_specs()


# ----- validation -------------------------------------------------------

def field_error(loc: list, msg: str, type_: str, input_: Any = None, **ctx: Any) -> dict:
    """One entry of a 422 body, in the shape fal (FastAPI + pydantic v2) uses."""
    err = {"loc": ["body", *loc], "msg": msg, "type": type_}
    if input_ is not None:
        err["input"] = input_
    if ctx:
        err["ctx"] = ctx
    return err


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_kind(name: str, f: Field, v: Any) -> tuple[Any, list[dict]]:
    """Type-check (and lightly coerce) one present value."""
    loc = [name]
    if f.kind in ("str", "image_url"):
        if not isinstance(v, str):
            return v, [field_error(loc, "Input should be a valid string", "string_type", v)]
        if f.kind == "image_url" and not v:
            return v, [field_error(loc, "Input should be a valid URL", "url_parsing", v)]
    elif f.kind == "int":
        if _is_number(v) and float(v).is_integer():
            return int(v), []
        return v, [field_error(loc, "Input should be a valid integer", "int_type", v)]
    elif f.kind == "float":
        if not _is_number(v):
            return v, [field_error(loc, "Input should be a valid number", "float_type", v)]
        return float(v), []
    elif f.kind == "bool":
        if not isinstance(v, bool):
            return v, [field_error(loc, "Input should be a valid boolean", "bool_type", v)]
    elif f.kind == "enum":
        if v not in f.choices:
            quoted = [repr(c) for c in f.choices]
            expected = quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"
            return v, [field_error(loc, f"Input should be {expected}", "literal_error", v,
                                   expected=expected)]
    elif f.kind == "recraft_style":
        ok = isinstance(v, str) and (v in RECRAFT_STYLE_ROOTS or any(
            v.startswith(root + "/") for root in RECRAFT_STYLE_ROOTS[1:]))
        if not ok:
            return v, [field_error(loc, "Input should be a valid recraft style", "literal_error", v,
                                   expected=", ".join(RECRAFT_STYLE_ROOTS) + " or a sub-style")]
    elif f.kind == "list":
        if not isinstance(v, list):
            return v, [field_error(loc, "Input should be a valid list", "list_type", v)]
        item = Field(f.items or "any", choices=f.choices)
        for i, element in enumerate(v):
            _, errs = _check_kind(name, item, element)
            if errs:
                return v, [dict(e, loc=["body", name, i]) for e in errs]
    elif f.kind == "object":
        if not isinstance(v, dict):
            return v, [field_error(loc, "Input should be a valid dictionary", "dict_type", v)]
    elif f.kind == "image_urls":
        if not isinstance(v, list):
            return v, [field_error(loc, "Input should be a valid list", "list_type", v)]
        errs = [field_error([name, i], "Input should be a valid string", "string_type", u)
                for i, u in enumerate(v) if not isinstance(u, str) or not u]
        return v, errs
    elif f.kind == "colors":
        if not isinstance(v, list):
            return v, [field_error(loc, "Input should be a valid list", "list_type", v)]
        errs = []
        for i, c in enumerate(v):
            if not isinstance(c, dict):
                errs.append(field_error([name, i], "Input should be a valid dictionary",
                                        "dict_type", c))
                continue
            for ch in ("r", "g", "b"):
                x = c.get(ch, 0)  # fal's RGBColor defaults each channel to 0
                if not (_is_number(x) and float(x).is_integer() and 0 <= x <= 255):
                    errs.append(field_error([name, i, ch],
                                            "Input should be an integer between 0 and 255",
                                            "int_range", x))
        return v, errs
    return v, []


def _check_bounds(name: str, f: Field, v: Any) -> list[dict]:
    loc = [name]
    if f.ge is not None and _is_number(v) and v < f.ge:
        return [field_error(loc, f"Input should be greater than or equal to {f.ge:g}",
                            "greater_than_equal", v, ge=f.ge)]
    if f.le is not None and _is_number(v) and v > f.le:
        return [field_error(loc, f"Input should be less than or equal to {f.le:g}",
                            "less_than_equal", v, le=f.le)]
    if f.gt is not None and _is_number(v) and v <= f.gt:
        return [field_error(loc, f"Input should be greater than {f.gt:g}", "greater_than", v,
                            gt=f.gt)]
    if f.lt is not None and _is_number(v) and v >= f.lt:
        return [field_error(loc, f"Input should be less than {f.lt:g}", "less_than", v, lt=f.lt)]
    if isinstance(v, (str, list)):
        what = "characters" if isinstance(v, str) else "items"
        if f.min_length is not None and len(v) < f.min_length:
            return [field_error(loc, f"Value should have at least {f.min_length} {what}",
                                "too_short", v, min_length=f.min_length)]
        if f.max_length is not None and len(v) > f.max_length:
            return [field_error(loc, f"Value should have at most {f.max_length} {what}",
                                "too_long", None, max_length=f.max_length)]
    return []


def validate(spec: EndpointSpec, payload: Any) -> tuple[dict, list[dict]]:
    """Return (params with defaults applied, list of 422 error entries)."""
    if not isinstance(payload, dict):
        return {}, [{"loc": ["body"], "msg": "Input should be a valid dictionary",
                     "type": "dict_type"}]
    params: dict = {}
    # Stricter than fal (which ignores unknown fields): a misspelt field fails a test
    # instead of passing silently.
    errors: list[dict] = [field_error([name], "Extra inputs are not permitted", "extra_forbidden",
                                      payload[name])
                          for name in payload if name not in spec.fields]
    for name, f in spec.fields.items():
        if name not in payload:
            if f.required:
                errors.append(field_error([name], "Field required", "missing"))
            params[name] = f.default
            continue
        value = payload[name]
        if value is None and (f.nullable or not f.required and f.default is None):
            params[name] = None
            continue
        value, errs = _check_kind(name, f, value)
        errs = errs or _check_bounds(name, f, value)
        errors.extend(errs)
        params[name] = value
    return params, errors


# What the emulator's Platform API quotes (USD): deliberately not the pack's own
# fallback figures, so tests can tell a fetched price from a shipped one.
PRICES: dict[str, tuple[float, str]] = {
    "fal-ai/image-editing/background-change": (0.05, "image"),
    "fal-ai/image-editing/face-enhancement": (0.05, "image"),
    "fal-ai/image-editing/color-correction": (0.05, "image"),
    "fal-ai/image-editing/object-removal": (0.05, "image"),
    "fal-ai/post-processing/sharpen": (0.002, "image"),
    "fal-ai/flux/dev/image-to-image": (0.03, "megapixel"),
    "fal-ai/recraft/v3/image-to-image": (0.05, "image"),
    "fal-ai/luma-photon/modify": (0.02, "megapixel"),
    "fal-ai/bytedance/seededit/v3/edit-image": (0.04, "image"),
    "fal-ai/flux-pro/kontext/max/multi": (0.09, "image"),
    # Catalogue endpoints, for fal Image Endpoint's estimate, spend guard and bill.
    "fal-ai/birefnet": (0.003, "image"),
    "fal-ai/bytedance/seedream/v4.5/edit": (0.04, "image"),
    "fal-ai/fast-lcm-diffusion/image-to-image": (0.025, "megapixel"),   # image_size, num_images
    "clarityai/crystal-upscaler": (0.016, "megapixel"),                 # scale_factor up to 200
    "fal-ai/bria/product-shot": (0.04, "image"),            # num_results, automatic placement
    "fal-ai/qwen-image-layered": (0.05, "image"),           # num_layers, 4 by default
    "fal-ai/aura-sr": (0.0009, "second"),                   # billed per second it runs
    "fal-ai/image-editing/cartoonify": (0.2, "units"),      # a vague unit
}
