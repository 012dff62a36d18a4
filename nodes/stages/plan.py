"""Stage 1, plan: widget values and IMAGE tensors -> one work item per fal request.

A node call becomes a list of work items: one per input frame, or one for a
multi-image endpoint. Each item carries the payload fal will get (images still
missing), its images fitted to the endpoint's limits, and the per-item state the
later stages fill in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .. import imaging
from ..caches import ItemResult
from ..endpoints import Endpoint
from ..settings import FalSettings
from ..spec import MATCH_INPUT, InputProblem


@dataclass
class WorkItem:
    index: int                               # position in the node's output order
    images: list[imaging.PreparedImage]
    payload: dict[str, Any]
    key: str = ""                            # request identity for the result memory
    state: str = "waiting"                   # shown in the node's status text
    detail: str = ""
    started: float | None = None
    request_id: str | None = None
    handle: Any = None                       # fal-client's request handle, once submitted
    finished: bool = False
    cancel_sent: bool = False
    result: ItemResult | None = None
    cached: bool = False
    cost: float = 0.0                        # what its requests count: billed, else estimated
    charges: list = field(default_factory=list)      # its ledger entries, one per submit sent
    billed_units: float | None = None        # fal's x-fal-billable-units for its request
    error: BaseException | None = None
    blobs: list[bytes] | None = None         # the result files as fal sent them
    targets: list[tuple[str, bool]] | None = None   # per image: (fal field, is a list field)

    @property
    def megapixels(self) -> float:
        """The first input's size: what per-megapixel prices are estimated from."""
        if not self.images:   # every image given by URL in `arguments`
            return 0.0
        width, height = self.images[0].size
        return width * height / 1e6


def build_payload(endpoint: Endpoint, values: dict[str, Any]) -> dict[str, Any]:
    """Widget values -> fal JSON (images excluded). Raises InputProblem.

    A catalogue endpoint's values are the user's `arguments`, already checked against
    fal's schema: they are sent as they are, and nothing else (fal's defaults apply)."""
    if endpoint.takes_arguments:
        return dict(values)
    payload: dict[str, Any] = {}
    for spec in endpoint.fields:
        if spec.name not in values:
            value = spec.default
        else:
            value = values[spec.name]
        send, json_value = spec.to_payload(value)
        if send:
            payload[spec.name] = json_value
    return payload


def plan_items(endpoint: Endpoint, payload: dict[str, Any],
               image_inputs: list[Any] | dict[str, Any], settings: FalSettings) -> list[WorkItem]:
    """Split the inputs into requests and fit every image into the endpoint's limits.

    `image_inputs` maps node sockets to IMAGE (or MASK) tensors; a list is taken in the
    order of the endpoint's sockets. Each image slot of the endpoint takes its sockets'
    frames: the first single-image slot that has frames makes one request per frame (the
    others give frame i to request i, or their one frame to every request); list slots
    send every frame of every socket in each request.
    Cheap: sizes come from tensor shapes; the pixels are converted and hashed later
    (imaging.identify_all)."""
    slots = endpoint.slots
    if not isinstance(image_inputs, dict):
        names = [name for slot in slots for name in slot.sockets]
        image_inputs = dict(zip(names, image_inputs))
    connected = {name: t for name, t in image_inputs.items() if t is not None}
    fed = {name for slot in slots for name in slot.sockets}
    stray = [name for name in connected if name not in fed]
    if stray:
        fields = ", ".join(f"`{slot.field}`" for slot in slots) or "none"
        raise InputProblem(f"`{stray[0]}` is connected but the endpoint has no image field for "
                           f"it (its image fields: {fields}); disconnect it")

    frames: dict[str, list[imaging.PreparedImage]] = {}
    for slot in slots:
        prepared: list[imaging.PreparedImage] = []
        for name in slot.sockets:
            if name in connected:
                tensor = connected[name]
                if slot.kind.startswith("mask") and getattr(tensor, "ndim", 0) in (2, 3):
                    tensor = tensor.reshape(-1, *tensor.shape[-2:]).unsqueeze(-1)  # MASK -> grey
                prepared += imaging.prepare_frames(tensor, name, endpoint.limits)
        if prepared:
            frames[slot.field] = prepared
        elif slot.required and slot.field not in payload:
            raise InputProblem(f"no image is connected; connect an IMAGE to `{slot.sockets[0]}`"
                               if not slot.kind.startswith("mask") else
                               f"`{slot.field}` needs a mask; connect a MASK to `{slot.sockets[0]}`")
    for slot in slots:
        if slot.field in frames and slot.field in payload:
            raise InputProblem(f"`{slot.field}` is set in `arguments` and also fed by a connected "
                               f"socket; remove it from `arguments` or disconnect the socket")

    per_frame = [s for s in slots if not s.is_list and s.field in frames]
    count = len(frames[per_frame[0].field]) if per_frame else 1
    for slot in per_frame[1:]:
        if len(frames[slot.field]) not in (1, count):
            raise InputProblem(f"`{slot.sockets[0]}` has {len(frames[slot.field])} frames but "
                               f"`{per_frame[0].sockets[0]}` has {count}; give it 1 frame (used "
                               f"for every request) or {count}")

    items = []
    for index in range(count):
        images: list[imaging.PreparedImage] = []
        targets: list[tuple[str, bool]] = []
        for slot in slots:
            if slot.field not in frames:
                continue
            mine = frames[slot.field] if slot.is_list else \
                [frames[slot.field][index if len(frames[slot.field]) > 1 else 0]]
            images += mine
            targets += [(slot.field, slot.is_list)] * len(mine)
        item_payload = dict(payload)
        if "seed" in item_payload and isinstance(item_payload["seed"], (int, float)):
            item_payload["seed"] = (int(item_payload["seed"]) + index) % (2**31)
        for spec in endpoint.fields:
            if item_payload.get(spec.name) == MATCH_INPUT:
                w, h = images[0].size
                item_payload[spec.name] = imaging.closest_ratio(w, h, spec.choices)
        if settings.inline_results and endpoint.supports_sync_mode:
            item_payload.setdefault("sync_mode", True)
        items.append(WorkItem(index, images, item_payload, targets=targets))
    return items


def with_image_urls(endpoint: Endpoint, payload: dict[str, Any], urls: list[str],
                    targets: list[tuple[str, bool]] | None = None) -> dict[str, Any]:
    """The item's payload with its images, as fal reads them, in the endpoint's image fields."""
    complete = dict(payload)
    if targets is None:
        slot = endpoint.slots[0]
        targets = [(slot.field, slot.is_list)] * len(urls)
    for (name, is_list), url in zip(targets, urls):
        if is_list:
            complete.setdefault(name, []).append(url)
        else:
            complete[name] = url
    return complete
