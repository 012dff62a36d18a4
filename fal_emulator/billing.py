"""What the emulator bills, the way fal does: the billable units of each request, sent in
the result's `x-fal-billable-units` header and kept in a bill tests can read.

fal's rules, as its pricing pages state them: per image, every image a request made
(Recraft's vector styles count twice); per megapixel, each image's megapixels rounded up to
a whole one; per second, the seconds the request ran, rounded up; any other unit, one per
image. A request that ran is billed even if it was cancelled while running (fal finishes
it); one that failed or never started is not.
"""

from __future__ import annotations

import math
from typing import Any

from .specs import PRICES


def unit_of(endpoint_id: str) -> tuple[float | None, str]:
    """(unit price, unit) the emulator's price list quotes; (None, "image") when unpriced."""
    price, unit = PRICES.get(endpoint_id, (None, "image"))
    return (price if isinstance(price, (int, float)) and not isinstance(price, bool)
            else None), str(unit).lower()


def billable_units(endpoint_id: str, params: dict, files: list[dict], run_s: float) -> float:
    """The units fal bills for one request that made `files` in `run_s` seconds."""
    _, unit = unit_of(endpoint_id)
    if unit in ("megapixel", "megapixels", "mp"):
        return float(sum(max(1, math.ceil(f.get("width", 1) * f.get("height", 1) / 1e6 - 1e-9))
                         for f in files))
    if unit in ("second", "seconds", "gpu second", "compute second"):
        return float(max(1, math.ceil(run_s - 1e-9)))
    per_image = 2.0 if str(params.get("style") or "").startswith("vector_illustration") and \
        "recraft" in endpoint_id else 1.0
    return per_image * len(files)


def bill(state: Any, endpoint_id: str, request_id: str, units: float) -> None:
    """Enter one request's units (and their cost, where priced) in the emulator's bill."""
    price, unit = unit_of(endpoint_id)
    state.record("billed", endpoint=endpoint_id, request_id=request_id, units=units, unit=unit,
                 usd=round(units * price, 6) if price is not None else None)


def total_usd(state: Any) -> float:
    """What the emulator billed since its log was last cleared, in USD."""
    return round(sum(e.get("usd") or 0.0 for e in state.entries("billed")), 6)
