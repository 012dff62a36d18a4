"""Stage 1, plan: widget values and IMAGE tensors -> one work item per fal request.

A node call becomes a list of work items: one per input frame, or one for a
multi-image endpoint. Each item carries the payload fal will get (images still
missing), its images fitted to the endpoint's limits, and the per-item state the
later stages fill in.
"""

from __future__ import annotations

from dataclasses import dataclass
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
    error: BaseException | None = None
    blobs: list[bytes] | None = None         # the result files as fal sent them

    @property
    def megapixels(self) -> float:
        """The first input's size: what per-megapixel prices are estimated from."""
        width, height = self.images[0].size
        return width * height / 1e6


def build_payload(endpoint: Endpoint, values: dict[str, Any]) -> dict[str, Any]:
    """Widget values -> fal JSON (images excluded). Raises InputProblem."""
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


def plan_items(endpoint: Endpoint, payload: dict[str, Any], image_inputs: list[Any],
               settings: FalSettings) -> list[WorkItem]:
    """Split the inputs into requests and fit every image into the endpoint's limits.
    CPU work (every frame converted and hashed): run it with imaging.pixel_work."""
    socket_names = ["image"] if not endpoint.multi_image_sockets else \
        [f"image_{i + 1}" for i in range(len(image_inputs))]
    groups: list[list[imaging.PreparedImage]] = []
    for name, tensor in zip(socket_names, image_inputs):
        if tensor is None:
            continue
        groups.append(imaging.prepare_frames(tensor, name, endpoint.limits))
    if not groups:
        raise InputProblem("no image is connected; connect an IMAGE to `image_1`")
    if endpoint.multi_image_sockets:
        batches = [[img for group in groups for img in group]]
    else:
        batches = [[img] for img in groups[0]]

    items = []
    for index, images in enumerate(batches):
        item_payload = dict(payload)
        if "seed" in item_payload:
            item_payload["seed"] = (int(item_payload["seed"]) + index) % (2**31)
        for spec in endpoint.fields:
            if item_payload.get(spec.name) == MATCH_INPUT:
                w, h = images[0].size
                item_payload[spec.name] = imaging.closest_ratio(w, h, spec.choices)
        if settings.inline_results and endpoint.supports_sync_mode:
            item_payload["sync_mode"] = True
        items.append(WorkItem(index, images, item_payload))
    return items


def with_image_urls(endpoint: Endpoint, payload: dict[str, Any], urls: list[str]) -> dict[str, Any]:
    """The item's payload with its images, as fal reads them, in the endpoint's image field."""
    complete = dict(payload)
    complete[endpoint.image_field] = urls if endpoint.multi_image_sockets else urls[0]
    return complete
