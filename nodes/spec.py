"""How an endpoint's inputs are described: one small, declarative vocabulary.

Every fal endpoint the pack offers is a list of `Field`s plus a few facts about
its images (see `endpoints.py`). The node classes, their ComfyUI widgets, the
validation that runs before any money is spent, and the request payload are all
derived from these descriptions, so an endpoint differs from another in data only.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

# A combo value that means "send nothing and let fal apply its own default".
FAL_DEFAULT = "fal default"
# A combo value for aspect ratios that means "the ratio closest to the input image".
MATCH_INPUT = "match input"

SEED_MAX = 2**31 - 1
# Inputs that multiply how many images one request returns (and fal bills): num_images on
# most endpoints; Seedream's max_images (up to that many per generation, fal's docs),
# FASHN's num_samples, Omni Zero's number_of_images, Bria's num_results, Qwen Image
# Layered's num_layers (one image per layer, 4 by default).
RESULT_COUNT_FIELDS = ("num_images", "max_images", "num_samples", "number_of_images",
                       "num_results", "num_layers")
# Of those, the ones that say "up to": the answer may hold fewer.
UP_TO_COUNT_FIELDS = ("max_images",)
# Choices that multiply the images a request makes: Bria product shot's automatic placement
# makes num_results x 10 results (its schema's description).
CHOICE_COUNTS = {("placement_type", "automatic"): 10}


def image_count(value: Any, unknown: int = 1) -> int:
    """A count input's value (num_images...): a whole number, also when sent as 4.0 (fal
    reads it as 4); a fraction counts up; `unknown` for anything else (the field's most)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not math.isfinite(value) or value <= 0:
        return unknown
    return max(1, math.ceil(value - 1e-9))


class InputProblem(ValueError):
    """A user input that cannot be sent; the message names field, cause and fix."""


@dataclass(frozen=True)
class Field:
    """One fal input field and the ComfyUI widget that edits it.

    kind: "int" | "float" | "bool" | "enum" | "text" | "seed" | "colors".
    default: the widget default; for fal-optional fields without a fal default
        the widget offers a value that sends nothing (FAL_DEFAULT or "").
    required: fal requires the field (the widget then always sends a value).
    """

    name: str
    kind: str
    default: Any
    tooltip: str
    required: bool = False
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    multiline: bool = False
    min_length: int | None = None
    max_length: int | None = None
    # Values the user may pick that are turned into a real value at run time.
    derived_choices: tuple[str, ...] = ()
    # Enum values fal expects as JSON numbers rather than strings.
    numeric_enum: bool = False

    # -- ComfyUI -------------------------------------------------------------
    def comfy_input(self) -> tuple:
        tip = self.tooltip + (" Required by fal." if self.required else "")
        if self.kind == "enum":
            values = list(self.derived_choices) + list(self.choices)
            if not self.required and self.default == FAL_DEFAULT:
                values = [FAL_DEFAULT] + values
            return (values, {"default": self.default, "tooltip": tip})
        if self.kind in ("int", "seed"):
            opts: dict[str, Any] = {"default": self.default, "tooltip": tip,
                                    "min": int(self.minimum if self.minimum is not None else 0),
                                    "max": int(self.maximum if self.maximum is not None else SEED_MAX)}
            if self.kind == "seed":
                opts["control_after_generate"] = True
            return ("INT", opts)
        if self.kind == "float":
            opts = {"default": self.default, "tooltip": tip, "step": self.step or 0.01,
                    "round": False}
            if self.minimum is not None:
                opts["min"] = self.minimum
            if self.maximum is not None:
                opts["max"] = self.maximum
            return ("FLOAT", opts)
        if self.kind == "bool":
            return ("BOOLEAN", {"default": self.default, "tooltip": tip})
        # text and colors are strings
        return ("STRING", {"default": self.default, "tooltip": tip,
                           "multiline": self.multiline})

    # -- validation and payload ---------------------------------------------
    def to_payload(self, value: Any) -> tuple[bool, Any]:
        """Check a widget value and turn it into fal's JSON value.

        Returns (send, json_value). Raises InputProblem naming the field.
        """
        if self.kind == "enum":
            value = str(value)
            if value == FAL_DEFAULT and not self.required:
                return False, None
            if value in self.derived_choices:
                return True, value  # resolved per item by the runtime
            if value not in self.choices:
                shown = ", ".join(self.choices[:8]) + (", …" if len(self.choices) > 8 else "")
                raise InputProblem(
                    f"`{self.name}` is '{value}', which fal does not accept; pick one of: {shown}")
            return True, (float(value) if "." in value else int(value)) if self.numeric_enum else value
        if self.kind in ("int", "seed"):
            number = _number(self, value, int)
            return True, number
        if self.kind == "float":
            return True, _number(self, value, float)
        if self.kind == "bool":
            return True, bool(value)
        if self.kind == "colors":
            colors = parse_colors(str(value or ""), self.name)
            return bool(colors), colors
        text = "" if value is None else str(value)
        if not text.strip():
            if self.required:
                raise InputProblem(f"`{self.name}` is empty but fal needs it; type a {self.name}")
            return False, None
        if self.min_length is not None and len(text.strip()) < self.min_length:
            raise InputProblem(f"`{self.name}` has {len(text.strip())} characters but fal needs "
                               f"at least {self.min_length}; write a longer {self.name}")
        if self.max_length is not None and len(text) > self.max_length:
            raise InputProblem(f"`{self.name}` has {len(text)} characters but fal takes at most "
                               f"{self.max_length}; shorten it")
        return True, text


def _number(spec: Field, value: Any, kind: type) -> Any:
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise InputProblem(f"`{spec.name}` is '{value}', not a number; enter a number") from None
    if isinstance(number, float) and not math.isfinite(number):
        raise InputProblem(f"`{spec.name}` is {number}; enter a finite number")
    if spec.minimum is not None and number < spec.minimum or \
            spec.maximum is not None and number > spec.maximum:
        raise InputProblem(f"`{spec.name}` is {number}, outside fal's range "
                           f"{_fmt(spec.minimum)}..{_fmt(spec.maximum)}; pick a value inside it")
    return number


def _fmt(x: float | None) -> str:
    if x is None:
        return ""
    return str(int(x)) if float(x).is_integer() else str(x)


_HEX = re.compile(r"^#?([0-9a-fA-F]{6}|[0-9a-fA-F]{3})$")
_RGB = re.compile(r"^(?:rgb)?\(?\s*(\d{1,3})\s*[, ]\s*(\d{1,3})\s*[, ]\s*(\d{1,3})\s*\)?$")


def parse_colors(text: str, field_name: str = "colors") -> list[dict[str, int]]:
    """'#ff8800, #223344' (or 'rgb(255,136,0); 34 51 68') -> [{"r","g","b"}, ...]."""
    colors = []
    # Commas separate colours unless they sit inside an rgb(...) triple.
    for part in re.split(r";|\n|,(?![^()]*\))", text):
        part = part.strip()
        if not part:
            continue
        hex_match = _HEX.match(part)
        rgb_match = _RGB.match(part)
        if hex_match:
            digits = hex_match.group(1)
            if len(digits) == 3:
                digits = "".join(c * 2 for c in digits)
            colors.append({"r": int(digits[0:2], 16), "g": int(digits[2:4], 16),
                           "b": int(digits[4:6], 16)})
        elif rgb_match and all(0 <= int(v) <= 255 for v in rgb_match.groups()):
            r, g, b = (int(v) for v in rgb_match.groups())
            colors.append({"r": r, "g": g, "b": b})
        else:
            raise InputProblem(f"`{field_name}` has '{part}', which is not a colour; write colours "
                               f"as #rrggbb separated by commas, e.g. #ff8800, #223344")
    return colors


@dataclass(frozen=True)
class ImageLimits:
    """An endpoint's documented input limits; larger inputs are downscaled."""

    max_side: int | None = None          # every side must be <= this
    max_pixels: int | None = None        # width * height must be <= this
    max_bytes: int | None = None         # encoded file must be <= this


@dataclass(frozen=True)
class ImageSlot:
    """One fal input field that carries images, and the node sockets that feed it.

    kind: "url" (one image; each frame of the first such slot is its own request),
    "urls" (every frame of every socket, in order, in one request), "mask" or "masks".
    """

    field: str
    kind: str
    sockets: tuple[str, ...]
    required: bool = False

    @property
    def is_list(self) -> bool:
        return self.kind in ("urls", "masks")


@dataclass(frozen=True)
class Endpoint:
    """Everything the pack knows about one fal endpoint."""

    endpoint_id: str
    node_name: str            # NODE_CLASS_MAPPINGS key
    display_name: str
    summary: str              # one sentence: what it does
    fields: tuple[Field, ...]
    image_field: str = "image_url"      # or "image_urls" for multi-image endpoints
    multi_image_sockets: int = 0        # >0: one request takes all images in order
    output_field: str = "images"        # "images" (list) or "image" (one, sometimes a list)
    nsfw_field: str | None = None       # e.g. "has_nsfw_concepts"
    supports_sync_mode: bool = True
    limits: ImageLimits = field(default_factory=ImageLimits)
    # Endpoints described by the catalogue (fal Image Endpoint): the payload is the user's
    # checked `arguments` as they are, images go where `image_slots` say, and results keep
    # their alpha (for the mask output) and their other JSON fields.
    image_slots: tuple[ImageSlot, ...] = ()
    takes_arguments: bool = False
    # This endpoint's RESULT_COUNT_FIELDS, each with what it counts when left out (fal's
    # default) and when its value can't be read (its maximum).
    count_fields: tuple[tuple[str, int, int], ...] = (("num_images", 1, 4),)
    # CHOICE_COUNTS this endpoint has: (field, its default, the choice, images it multiplies by).
    count_choices: tuple[tuple[str, Any, str, int], ...] = ()

    def most_images(self, payload: dict[str, Any]) -> int:
        """The most result images one request with `payload` may bring: more than this in
        an answer is refused (a hostile server's 200 files), never a paid result fal made."""
        return self._images(payload, self.count_fields)

    def expected_images(self, payload: dict[str, Any]) -> int:
        """The images one request brings when all goes well (an "up to" count may bring
        fewer): the slots the output batch sets aside for it."""
        return self._images(payload, tuple(count for count in self.count_fields
                                           if count[0] not in UP_TO_COUNT_FIELDS))

    def _images(self, payload: dict[str, Any],
                count_fields: tuple[tuple[str, int, int], ...]) -> int:
        images = 1
        for name, default, most in count_fields:
            images *= image_count(payload.get(name, default), most)
        for name, default, choice, factor in self.count_choices:
            if payload.get(name, default) == choice:
                images *= factor
        return images

    @property
    def slots(self) -> tuple[ImageSlot, ...]:
        if self.image_slots:
            return self.image_slots
        sockets = tuple(f"image_{i + 1}" for i in range(self.multi_image_sockets)) or ("image",)
        return (ImageSlot(self.image_field, "urls" if self.multi_image_sockets else "url",
                          sockets, True),)

    @property
    def description(self) -> str:
        return f"{self.summary} Calls fal endpoint `{self.endpoint_id}` once per input image."\
            if not self.multi_image_sockets else \
            f"{self.summary} Calls fal endpoint `{self.endpoint_id}` once with every connected image."

    def field_named(self, name: str) -> Field | None:
        return next((f for f in self.fields if f.name == name), None)
