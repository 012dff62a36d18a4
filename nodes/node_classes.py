"""ComfyUI node classes: the ten endpoint nodes are made from the table, plus
the fal Key and fal Settings nodes they share."""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

from . import keystore
from .endpoints import ENDPOINTS, Endpoint
from .runtime import RunOutcome, run_endpoint
from .settings import (CACHE_MODES, DEFAULT_SETTINGS, NSFW_POLICIES, UPLOAD_FORMATS, FalKeyRef,
                       FalSettings)

CATEGORY = "fal/image editing"
ENV_CHOICE = "environment FAL_KEY"

SETTINGS_TOOLTIP = ("Optional: a fal Settings node (key, concurrency, timeout, NSFW policy, cache). "
                    "Without it the node uses the FAL_KEY environment variable and defaults.")


def endpoint_node(endpoint: Endpoint) -> type:
    """A classic (V1) ComfyUI node class for one endpoint, all behaviour in the runtime."""
    image_names = [f"image_{i + 1}" for i in range(endpoint.multi_image_sockets)] or ["image"]

    def input_types(cls) -> dict[str, Any]:
        first = image_names[0]
        required: dict[str, Any] = {first: ("IMAGE", {"tooltip": (
            "Images to edit; every frame of a batch is its own fal request."
            if not endpoint.multi_image_sockets else
            "Reference images; every frame of every connected input is sent, in order.")})}
        for field in endpoint.fields:
            required[field.name] = field.comfy_input()
        optional: dict[str, Any] = {name: ("IMAGE", {"tooltip": "More reference images, sent after "
                                                    "the ones before, in order."})
                                    for name in image_names[1:]}
        optional["settings"] = ("FAL_SETTINGS", {"tooltip": SETTINGS_TOOLTIP})
        return {"required": required, "optional": optional,
                "hidden": {"unique_id": "UNIQUE_ID"}}

    async def run(self, settings: FalSettings | None = None, unique_id: str | None = None,
                  **values: Any) -> tuple:
        images = [values.pop(name, None) for name in image_names]
        outcome = await run_endpoint(endpoint, values, images, settings or DEFAULT_SETTINGS,
                                     node_id=unique_id)
        return {"ui": run_panel(outcome),
                "result": (outcome.images, outcome.seed, "\n".join(outcome.urls))}

    return type(endpoint.node_name, (), {
        "INPUT_TYPES": classmethod(input_types),
        "RETURN_TYPES": ("IMAGE", "INT", "STRING"),
        "RETURN_NAMES": ("images", "seed", "urls"),
        "OUTPUT_TOOLTIPS": ("Every result, in input order, as one batch.",
                            "The seed fal used for the first item (item i used seed + i); "
                            "-1 for endpoints without a seed.",
                            "The result URLs, one per line (fal keeps them for a limited time)."),
        "FUNCTION": "run",
        "CATEGORY": CATEGORY,
        "DESCRIPTION": endpoint.description,
        "ENDPOINT": endpoint,
        "run": run,
        "__doc__": endpoint.description,
    })


def run_panel(outcome: RunOutcome) -> dict[str, list]:
    """What web/fal_edit.js shows on a fal node after a run; inline results (data URIs) are
    cut to their type. fal_items / fal_cost / fal_cached / fal_megapixels: the price badge's
    real request count and this run's estimated cost (cached items cost nothing); fal_billed:
    what fal billed (None where it sent no bill); fal_counted: what the ceilings counted."""
    shown = [u[:u.find(",") + 1] if u.startswith("data:") else u for u in outcome.urls]
    return {"fal_urls": shown, "fal_request_ids": list(outcome.request_ids),
            "fal_status": [outcome.status], "fal_items": [outcome.items],
            "fal_cost": [round(outcome.estimated_usd, 6)], "fal_cached": [outcome.cached_items],
            "fal_billed": [outcome.billed_usd], "fal_counted": [outcome.counted_usd],
            "fal_megapixels": [outcome.megapixels]}


class FalImageEndpoint:
    """Any fal endpoint that takes an image and returns images, from fal's published schemas."""

    DISPLAY = "fal Image Endpoint"
    DESCRIPTION = ("Runs any fal endpoint that takes an image and returns images (the catalogue "
                   "of fal's published types). `arguments` is the JSON fal gets: only the fields "
                   "you set are sent, fal's defaults apply to the rest. Images go to the "
                   "endpoint's image fields: a single-image field gets one request per frame of "
                   "`image`, a list field gets every frame of every connected image at once, "
                   "`mask` goes to the mask field.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE", "MASK", "STRING", "STRING")
    RETURN_NAMES = ("images", "mask", "urls", "result_json")
    OUTPUT_TOOLTIPS = ("Every result, in input order, as one batch.",
                       "Each result's transparency as a mask (1 - alpha, as Load Image makes "
                       "it): the cut-out of background-removal endpoints; empty where opaque.",
                       "The result URLs, one per line (fal keeps them for a limited time).",
                       "fal's answer for each request (a JSON list) without the images: text, "
                       "boxes, seeds…")
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        from . import catalogue   # a local file, read once and only when ComfyUI asks
        ids = catalogue.ids()
        image_tip = ("Goes to the endpoint's image fields by its schema (see the node's "
                     "description); connecting an image the endpoint has no field for is an error.")
        return {
            "required": {
                "endpoint": (ids, {"default": "fal-ai/bytedance/seedream/v4.5/edit"
                                   if "fal-ai/bytedance/seedream/v4.5/edit" in ids else ids[0],
                                   "tooltip": "The fal endpoint to call (type to search)."}),
                "arguments": ("STRING", {"default": "{}", "multiline": True, "tooltip":
                              'The endpoint\'s inputs as JSON, e.g. {"prompt": "a red hat"}. '
                              "Only these are sent; checked against fal's schema before any "
                              "upload."}),
            },
            "optional": {
                "image": ("IMAGE", {"tooltip": image_tip}),
                "image_2": ("IMAGE", {"tooltip": image_tip}),
                "image_3": ("IMAGE", {"tooltip": image_tip}),
                "image_4": ("IMAGE", {"tooltip": image_tip}),
                "mask": ("MASK", {"tooltip": "Goes to the endpoint's mask field (white: the area "
                                  "to change)."}),
                "settings": ("FAL_SETTINGS", {"tooltip": SETTINGS_TOOLTIP}),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    async def run(self, endpoint: str, arguments: str = "", settings: FalSettings | None = None,
                  unique_id: str | None = None, **sockets: Any) -> dict[str, Any]:
        from . import catalogue
        from .errors import FalNodeError
        from .spec import InputProblem

        connected = {name: t for name, t in sockets.items() if t is not None}
        await asyncio.to_thread(catalogue.load)   # read once, off the loop (usually already)
        try:
            values = catalogue.parse_arguments(self.DISPLAY, arguments)
            if catalogue.entry(endpoint) is None:   # says so, naming the closest id
                catalogue.check_arguments(self.DISPLAY, endpoint, values)
            described = catalogue.endpoint_for(endpoint)
            where = f"{self.DISPLAY} on {endpoint}"
            for slot in described.slots:
                fed = any(name in connected for name in slot.sockets)
                if slot.required and not fed and slot.field not in values:
                    what = "a MASK" if slot.kind.startswith("mask") else "an IMAGE"
                    raise InputProblem(f"{where}: `{slot.field}` is required by fal but nothing "
                                       f"is connected to `{slot.sockets[0]}`; connect {what} to it")
            filled = tuple(s.field for s in described.slots
                           if any(name in connected for name in s.sockets))
            catalogue.check_arguments(self.DISPLAY, endpoint, values, filled)
        except InputProblem as exc:
            raise FalNodeError(f"{str(exc).rstrip('.')}.") from None
        outcome = await run_endpoint(described, values, connected, settings or DEFAULT_SETTINGS,
                                     node_id=unique_id)
        result_json = json.dumps(outcome.results or [], indent=1, ensure_ascii=False)
        return {"ui": run_panel(outcome),
                "result": (outcome.images, outcome.masks, "\n".join(outcome.urls), result_json)}


class FalKey:
    """Chooses which fal key to use, by name: the key itself never enters the graph."""

    DESCRIPTION = ("Chooses a fal key saved on this ComfyUI server (by name), or the FAL_KEY "
                   "environment variable. Only the name is stored in the workflow.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("FAL_KEY",)
    RETURN_NAMES = ("key",)
    OUTPUT_TOOLTIPS = ("A reference to the key (its name only); connect it to fal Settings.",)
    FUNCTION = "choose"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        # A local file read, no network: cheap enough for ComfyUI's start-up.
        return {"required": {"key_name": ([ENV_CHOICE] + keystore.names(), {
            "default": ENV_CHOICE,
            "tooltip": "A key saved with `python nodes/keystore.py add NAME` (or the fal "
                       "settings panel), or the FAL_KEY environment variable."})}}

    @classmethod
    def VALIDATE_INPUTS(cls, key_name: str) -> bool | str:
        """A shared workflow may name a key this server lacks. Naming `key_name` here makes
        ComfyUI skip its own "Value not in list" check for it, so the user reads which key
        is missing and how to add it instead."""
        if key_name == ENV_CHOICE or key_name in keystore.names():
            return True
        env = ("this server's FAL_KEY environment variable" if os.environ.get(keystore.ENV_KEY)
               else "the FAL_KEY environment variable once it is set")
        return (f"this workflow uses a fal key named '{key_name}', which is not saved on "
                f"this ComfyUI server; add your key under that name in Settings → fal, or pick "
                f"'{ENV_CHOICE}' in this node to use {env}.")

    def choose(self, key_name: str) -> tuple:
        return (FalKeyRef(None if key_name == ENV_CHOICE else key_name),)


# The endpoints whose published output carries fal's NSFW flags (the others have none).
NSFW_REPORTERS = " and ".join(e.display_name for e in ENDPOINTS if e.nsfw_field)


class FalSettingsNode:
    """Shared settings for fal nodes: connect its output to any number of them."""

    DESCRIPTION = ("Settings shared by fal nodes: which key, how many requests at once, timeout, "
                   "what to do with NSFW-flagged results, upload format, result cache, and an "
                   "optional fal-compatible base URL (a proxy or the local emulator).")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("FAL_SETTINGS",)
    RETURN_NAMES = ("settings",)
    OUTPUT_TOOLTIPS = ("Connect to the settings input of fal nodes.",)
    FUNCTION = "build"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        d = DEFAULT_SETTINGS
        return {
            "required": {
                "concurrency": ("INT", {"default": d.concurrency, "min": 1, "max": 128, "tooltip":
                                        "How many fal requests may be in flight at once, counting "
                                        "every fal node call in ComfyUI (a list input calls a "
                                        "node once per item). Past your fal account's own limit, "
                                        "fal queues requests itself."}),
                "timeout_s": ("INT", {"default": int(d.timeout_s), "min": 10, "max": 7200,
                                      "tooltip": "Seconds one request may take (queue + run) "
                                                 "before it is cancelled and the node fails."}),
                "nsfw_policy": (list(NSFW_POLICIES), {"default": d.nsfw_policy, "tooltip":
                                "When fal flags a result as NSFW (it sends a black image): fail "
                                "the node naming the items, keep them, or drop them. All three "
                                "say so in the node's status. Only " + NSFW_REPORTERS + " report "
                                "fal's flags; other nodes pass on what fal returns."}),
                "upload_format": (list(UPLOAD_FORMATS), {"default": d.upload_format, "tooltip":
                                  "png is lossless; jpeg (quality 95) uploads faster."}),
                "inline_results": ("BOOLEAN", {"default": d.inline_results, "tooltip":
                                   "fal's sync_mode: results come back inside the answer as data "
                                   "URIs instead of CDN links (not kept in fal's history). Only "
                                   "endpoints that support it use it."}),
                "cache": (list(CACHE_MODES), {"default": d.cache, "tooltip":
                          "use: the same request is never paid twice; refresh: call fal and "
                          "overwrite; off: always call fal."}),
                "base_url": ("STRING", {"default": "", "tooltip":
                             "Empty: fal's own hosts, or the server this ComfyUI's owner set. "
                             "Otherwise one of the servers the owner allowed in Settings → fal "
                             "(your key goes to it); any other server is refused before "
                             "anything is sent."}),
                "max_usd_per_prompt": ("FLOAT", {"default": d.max_usd_per_prompt, "min": 0.0,
                                                 "max": 10000.0, "step": 0.01, "tooltip":
                                                 "Spend guard: a node whose estimate would take "
                                                 "this prompt's fal spend past this many dollars "
                                                 "fails before uploading anything. 0: no limit "
                                                 "of its own; the owner's ceilings in Settings → "
                                                 "fal apply either way."}),
                "max_usd_per_session": ("FLOAT", {"default": d.max_usd_per_session, "min": 0.0,
                                                  "max": 100000.0, "step": 0.01, "tooltip":
                                                  "Spend guard for this ComfyUI session (since "
                                                  "start-up). 0: no limit."}),
            },
            "optional": {"key": ("FAL_KEY", {"tooltip": "From a fal Key node; without it the "
                                             "FAL_KEY environment variable is used."})},
        }

    def build(self, concurrency: int, timeout_s: int, nsfw_policy: str, upload_format: str,
              inline_results: bool, cache: str, base_url: str,
              max_usd_per_prompt: float = 0.0, max_usd_per_session: float = 0.0,
              key: FalKeyRef | None = None) -> tuple:
        return (FalSettings(key=key or FalKeyRef(), concurrency=int(concurrency),
                            timeout_s=float(timeout_s), nsfw_policy=nsfw_policy,
                            upload_format=upload_format, inline_results=bool(inline_results),
                            base_url=base_url.strip(), cache=cache,
                            max_usd_per_prompt=float(max_usd_per_prompt),
                            max_usd_per_session=float(max_usd_per_session)),)


class FalSpend:
    """This session's fal calls: what each was estimated at and what fal billed, what the
    cache saved, the total."""

    DESCRIPTION = ("Lists this ComfyUI session's fal requests — endpoint, request id, state, "
                   "the estimate and what fal billed (its billable units × the unit price; "
                   "'estimate' where fal sent no bill) — and the total, which counts fal's "
                   "bill where it came, else the estimate. Runs every time the prompt runs.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("STRING", "FLOAT")
    RETURN_NAMES = ("report", "total_usd")
    OUTPUT_TOOLTIPS = ("One line per request, then the total.",
                       "Dollars this session: fal's bill where it came, else the estimate.")
    FUNCTION = "report"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {}, "optional": {"after": ("*", {"tooltip": "Connect any output "
                                             "here so the report is made after that node ran."})}}

    @classmethod
    def IS_CHANGED(cls, **_: Any) -> float:
        return float("nan")   # the ledger changes between runs; never reuse an old report

    def report(self, after: Any = None) -> dict[str, Any]:
        from .pricing import ledger
        text = ledger.report()
        return {"ui": {"text": [text]}, "result": (text, round(ledger.spent(), 6))}


ENDPOINT_NODES = {e.node_name: endpoint_node(e) for e in ENDPOINTS}

NODE_CLASS_MAPPINGS: dict[str, type] = {
    "FalKey": FalKey,
    "FalSettings": FalSettingsNode,
    "FalSpend": FalSpend,
    "FalImageEndpoint": FalImageEndpoint,
    **ENDPOINT_NODES,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "FalKey": "fal Key",
    "FalSettings": "fal Settings",
    "FalSpend": "fal Spend",
    "FalImageEndpoint": FalImageEndpoint.DISPLAY,
    **{e.node_name: e.display_name for e in ENDPOINTS},
}
