"""What fal calls cost: unit prices, estimates before a run, a ledger after it.

Prices come from fal's Platform API (GET {api}/v1/models/pricing), or from the
server the owner chose instead of fal (egress.py), fetched after start-up (never
at import), kept on disk for a day, with a shipped table as the offline
fallback. A price that is negative or not a finite number is refused. One
refresh at a time for the whole process, whoever asks (routes or runs); after a
failure, one warning and no new fetch for PRICE_RETRY_S. The ledger lists this
ComfyUI session's calls.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import math
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger("comfyui_fal_edit")

FAL_PRICING_URL = "https://api.fal.ai/v1/models/pricing"
PRICE_TTL_S = 24 * 3600
FETCH_TIMEOUT_S = 5.0
# After a failed refresh, wait this long before the next one (fal down, bad key).
PRICE_RETRY_S = 600.0

# Offline fallback, USD, as listed on fal's model pages on the date below.
# Shown as estimates: fal's Platform API is the authority when reachable.
FALLBACK_DATE = "2026-11-26"
FALLBACK_PRICES: dict[str, tuple[float, str]] = {
    "fal-ai/image-editing/background-change": (0.04, "image"),
    "fal-ai/image-editing/face-enhancement": (0.04, "image"),
    "fal-ai/image-editing/color-correction": (0.04, "image"),
    "fal-ai/image-editing/object-removal": (0.04, "image"),
    "fal-ai/post-processing/sharpen": (0.001, "image"),
    "fal-ai/flux/dev/image-to-image": (0.025, "megapixel"),
    "fal-ai/recraft/v3/image-to-image": (0.04, "image"),
    "fal-ai/luma-photon/modify": (0.019, "megapixel"),
    "fal-ai/bytedance/seededit/v3/edit-image": (0.03, "image"),
    "fal-ai/flux-pro/kontext/max/multi": (0.08, "image"),
}


@dataclass(frozen=True)
class PriceRule:
    """An input that changes what one request costs, as data.

    Either `per_value`: the request buys that many units (num_images: fal bills every image
    it makes), or a `multiplier` on the unit price when the input's value is one of `equals`
    or starts with `prefix` (Recraft's vector styles cost twice as much; Bria's automatic
    placement makes ten results). An input left out counts as `default` (fal's default,
    None: the rule does not apply); a count that can't be read counts as `most`. The
    runtime (estimate, ledger, spend guard) and the front end's badge (web/lib/price.js,
    from GET /fal/prices) apply the same rules.
    """
    field: str
    per_value: bool = False
    multiplier: float = 1.0
    equals: tuple[str, ...] = ()
    prefix: str = ""
    why: str = ""
    default: Any = None
    most: int = 1

    def matches(self, value: Any) -> bool:
        text = str(value)
        return text in self.equals or bool(self.prefix) and text.startswith(self.prefix)

    def value_in(self, payload: Mapping[str, Any]) -> Any:
        return payload.get(self.field, self.default)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"field": self.field}
        if self.per_value:
            out.update(per_value=True, why=self.why, most=self.most)
        else:
            out.update(multiplier=self.multiplier, why=self.why)
        if self.equals:
            out["equals"] = list(self.equals)
        if self.prefix:
            out["prefix"] = self.prefix
        if self.default is not None:
            out["default"] = self.default
        return out


# Every endpoint: fal bills each image a request makes.
COMMON_PRICE_RULES: tuple[PriceRule, ...] = (
    PriceRule("num_images", per_value=True, why="images per request", default=1, most=4),
)
# Endpoints whose price depends on an input, by endpoint id (fal's model pages).
PRICE_RULES: dict[str, tuple[PriceRule, ...]] = {
    # "Vector images cost 2X as much": `vector_illustration` and its sub-styles.
    "fal-ai/recraft/v3/image-to-image": (
        PriceRule("style", multiplier=2.0, prefix="vector_illustration", why="vector style"),
    ),
}


def price_rules(endpoint_id: str) -> tuple[PriceRule, ...]:
    return _count_rules(endpoint_id) + PRICE_RULES.get(endpoint_id, ())


@functools.lru_cache(maxsize=None)
def _count_rules(endpoint_id: str) -> tuple[PriceRule, ...]:
    """An endpoint that returns a list of images: every input that multiplies the images it
    makes (Endpoint.count_fields: num_images, Seedream's max_images, Bria's num_results,
    Qwen Image Layered's num_layers, ...; Endpoint.count_choices: Bria's automatic
    placement) multiplies what fal bills, an input left out counting as fal's default.
    The ten nodes' endpoints are described without the catalogue, which is then not read
    for them."""
    endpoint = _endpoint(endpoint_id)
    if endpoint is None or endpoint.output_field != "images":
        return COMMON_PRICE_RULES
    counts = tuple(PriceRule(name, per_value=True, why="images per request", default=default,
                             most=most) for name, default, most in endpoint.count_fields)
    choices = tuple(PriceRule(name, multiplier=float(factor), equals=(choice,), default=default,
                              why=f"{name} {choice}: {factor} results")
                    for name, default, choice, factor in endpoint.count_choices)
    return counts + choices


def _endpoint(endpoint_id: str):
    from . import catalogue
    from .endpoints import BY_ENDPOINT

    endpoint = BY_ENDPOINT.get(endpoint_id)
    if endpoint is None and catalogue.entry(endpoint_id) is not None:
        endpoint = catalogue.endpoint_for(endpoint_id)
    return endpoint


@dataclass(frozen=True)
class Price:
    unit_price: float
    unit: str            # "image", "megapixel", ...
    source: str          # "fal" (Platform API), "fallback" (shipped) or "assumed" (unknown)
    note: str = ""       # an assumed price: why fal's could not be used

    @property
    def per_megapixel(self) -> bool:
        return self.unit.lower() in ("megapixel", "megapixels", "mp")

    @property
    def countable(self) -> bool:
        """Billed per image or per megapixel: what a run will cost can be counted before
        it runs (not per second of GPU time, per token, ...)."""
        return self.per_megapixel or self.unit.lower() in ("image", "images")


# An endpoint whose price nobody could tell us (fal's price list has no entry for it, or
# could not be reached), or that fal bills in a unit no one can count before the run, is
# still counted against the spend limits, at about three times the dearest per-image
# price among the ten nodes' endpoints ($0.08): otherwise a shared workflow could pick
# such an endpoint and spend past the owner's ceilings unseen. The status says so.
UNPRICED = Price(0.25, "image", "assumed", "price unknown")


def price_for_guard(price: Price | None) -> Price:
    """The price runs are counted with: fal's (or the shipped one) when it is per image or
    per megapixel, else UNPRICED, noting what fal bills."""
    if price is None:
        return UNPRICED
    if price.countable:
        return price
    return replace(UNPRICED, note=f"fal bills ${price.unit_price:g} per {price.unit}, which "
                                  f"can't be counted before the run")


@dataclass
class Estimate:
    total: float
    units: float
    price: Price | None
    cached_items: int = 0
    multipliers: tuple[float, ...] = ()   # the price rules' factors, one per distinct value
    why: str = ""                          # what made the price differ, e.g. "vector style"

    @property
    def exact(self) -> bool:
        """Per-image prices from fal are exact; per-megapixel and fallback ones are estimates."""
        return bool(self.price) and self.price.source == "fal" and not self.price.per_megapixel

    def describe(self) -> str:
        if self.price is None:
            return "price unknown"
        if self.price.source == "learned":
            return (f"≈ ${self.total:.3f} · {self.units:g} request × ${self.price.unit_price:g}, "
                    f"what fal last billed for these inputs")
        if self.price.source == "assumed":
            return (f"{self.price.note}: counted as ≈ ${self.total:.3f} "
                    f"(${self.price.unit_price:g} an image) against the spend limits until "
                    f"fal's bill")
        mark = "" if self.exact else " (estimate)"
        unit = "MP" if self.price.per_megapixel else "image"
        each = f"${self.price.unit_price:g}"
        factors = [m for m in self.multipliers if m != 1.0]
        if len(self.multipliers) == 1 and factors:
            each = (f"${self.price.unit_price * factors[0]:g} ({self.why}: {factors[0]:g} × "
                    f"${self.price.unit_price:g})")
        elif factors:
            each += f", up to × {max(factors):g} ({self.why})"
        return f"≈ ${self.total:.3f}{mark} · {self.units:g} {unit} × {each}"


def request_price(endpoint_id: str, payload: Mapping[str, Any], megapixels: float,
                  per_megapixel: bool) -> tuple[float, float, str]:
    """One request -> (units fal bills, multiplier on the unit price, why it differs).
    `megapixels`: the request's first input image (0 when it is given by URL)."""
    from .spec import image_count

    units, multiplier, why = 1.0, 1.0, []
    for rule in price_rules(endpoint_id):
        value = rule.value_in(payload)
        if value is None and rule.field not in payload:
            continue
        if rule.per_value:
            units *= image_count(value, rule.most)
        elif rule.matches(value):
            multiplier *= rule.multiplier
            why.append(rule.why or f"{rule.field} {value}")
    if per_megapixel:
        # fal bills each image's megapixels, rounded up to a whole one (fal's pricing
        # pages), of the output: sized by the arguments where they set it.
        units *= max(1, math.ceil(output_megapixels(endpoint_id, payload, megapixels) - 1e-9))
    return units, multiplier, ", ".join(why)


# fal's image_size presets (fal's ImageSize enum and Seedream's auto sizes), width x height.
IMAGE_SIZE_PRESETS: dict[str, tuple[int, int]] = {
    "square_hd": (1024, 1024), "square": (512, 512), "portrait_4_3": (768, 1024),
    "portrait_16_9": (576, 1024), "landscape_4_3": (1024, 768), "landscape_16_9": (1024, 576),
    "auto_2K": (2048, 2048), "auto_4K": (4096, 4096),
}
# An output size that can't be read (an unknown preset, a malformed object): the largest
# fal's image endpoints make.
LARGEST_OUTPUT = (4096, 4096)
# An input image given by URL in `arguments`: its size is not known before the run.
URL_IMAGE_MEGAPIXELS = LARGEST_OUTPUT[0] * LARGEST_OUTPUT[1] / 1e6
# Inputs that scale the output from the input: crystal-upscaler's scale_factor (up to
# 200), aura-sr's upscale_factor, esrgan's scale...
SCALE_FIELDS = ("scale_factor", "upscale_factor", "upscaling_factor", "scale")
# `resolution` choices (nano-banana's 1K/2K/4K, chrono-edit's 480p/720p, Bria's 1MP/4MP).
_RESOLUTION = {"k": lambda n: (n * 1024) ** 2, "p": lambda n: n * n * 16 / 9,
               "mp": lambda n: n * 1e6}


def output_megapixels(endpoint_id: str, payload: Mapping[str, Any],
                      input_megapixels: float) -> float:
    """The megapixels of each image one request makes: `image_size` (a preset or
    {width, height}) or `resolution` where the arguments (or fal's defaults) set it, else
    the input's size times any scale factor squared."""
    given = {**_size_defaults(endpoint_id), **payload}
    size = given.get("image_size")
    if size is not None:
        if isinstance(size, Mapping):
            width, height = size.get("width"), size.get("height")
            if all(isinstance(v, (int, float)) and not isinstance(v, bool) and
                   math.isfinite(v) and v > 0 for v in (width, height)):
                return width * height / 1e6
        width, height = IMAGE_SIZE_PRESETS.get(str(size), LARGEST_OUTPUT)
        return width * height / 1e6
    resolution = given.get("resolution")
    if isinstance(resolution, str):
        text = resolution.strip().lower()
        for suffix, pixels in _RESOLUTION.items():
            number = text[:-len(suffix)]
            if text.endswith(suffix) and number.replace(".", "", 1).isdigit():
                return max(pixels(float(number)) / 1e6, input_megapixels)
    megapixels = input_megapixels if input_megapixels > 0 else URL_IMAGE_MEGAPIXELS
    for name in SCALE_FIELDS:
        factor = given.get(name)
        if isinstance(factor, (int, float)) and not isinstance(factor, bool) and \
                math.isfinite(factor) and factor > 1:
            megapixels *= factor * factor
    return megapixels


@functools.lru_cache(maxsize=None)
def _size_defaults(endpoint_id: str) -> dict[str, Any]:
    """fal's defaults of a catalogue endpoint's size inputs (what it makes when they are
    left out)."""
    from . import catalogue
    from .endpoints import BY_ENDPOINT
    if endpoint_id in BY_ENDPOINT:
        return {}
    entry = catalogue.entry(endpoint_id)
    if entry is None:
        return {}
    return {name: field["default"] for name, field in entry["input"].items()
            if name in ("image_size", "resolution", *SCALE_FIELDS) and
            field.get("default") is not None}


class PriceBook:
    """Unit prices by server and endpoint id: from fal (or the owner's own server in its
    place) when fresh, else the shipped table. Prices are only ever asked of the owner's
    default destination (never of a server a workflow picked, even an allowed one), and
    kept under that server's name: a quote from one server never prices requests to
    another. A price of 0, negative or not finite is refused (it would switch the guard
    off)."""

    def __init__(self) -> None:
        self._prices: dict[str, dict[str, Price]] = {}     # server name -> endpoint -> price
        self._fetched_at: dict[str, float] = {}
        self._lock = threading.Lock()
        self._loaded_disk = False
        self._asked: set[tuple[str, str]] = set()   # (server, catalogue endpoint) asked for

    def path(self) -> Path | None:
        """Where the local-files store keeps the price book."""
        from .state import cache_directory
        directory = cache_directory()
        return directory.parent / "prices.json" if directory is not None else None

    def _load_disk(self) -> None:
        if self._loaded_disk:
            return
        self._loaded_disk = True
        from . import state
        try:   # the owner's state store: prices.json beside the cache, or Redis
            data = state.store().read_doc("prices")
            if data is None:
                return
            server = str(data["server"])
            prices = {k: Price(_unit_price(v["unit_price"]), str(v["unit"]), "fal")
                      for k, v in data["prices"].items()}
            with self._lock:
                self._prices.setdefault(server, {}).update(prices)
                self._fetched_at[server] = float(data["fetched_at"])
        except (OSError, ValueError, KeyError, TypeError, state.StateUnavailable):
            pass

    @staticmethod
    def _server(server: Any = None) -> str:
        """A server's name (egress.Destination.name); None: the owner's default (reads the
        owner's settings: call it off the loop)."""
        from . import egress
        if server is None:
            try:
                return egress.owner_default().name
            except egress.EgressRefused:
                return egress.FAL.name
        return server if isinstance(server, str) else server.name

    def fresh(self, server: Any = None) -> bool:
        self._load_disk()
        name = self._server(server)
        return time.time() - self._fetched_at.get(name, 0.0) < PRICE_TTL_S

    def price(self, endpoint_id: str, server: Any = None) -> Price | None:
        """The price of `endpoint_id` as `server` (a Destination or its name; None: the
        owner's default) quoted it, else the shipped one, else None."""
        self._load_disk()
        with self._lock:
            found = self._prices.get(self._server(server), {}).get(endpoint_id)
        if found is not None:
            return found
        if endpoint_id in FALLBACK_PRICES:
            unit_price, unit = FALLBACK_PRICES[endpoint_id]
            return Price(unit_price, unit, "fallback")
        return None

    def table(self, server: Any = None) -> dict[str, dict[str, Any]]:
        """Every known price, for the front end's badges (the ten nodes' endpoints and any
        catalogue endpoint the price list answered for)."""
        from .endpoints import ENDPOINTS
        self._load_disk()
        name = self._server(server)
        with self._lock:
            fetched = list(self._prices.get(name, {}))
        out = {}
        for endpoint_id in dict.fromkeys([e.endpoint_id for e in ENDPOINTS] + fetched):
            price = self.price(endpoint_id, name)
            if price is not None:
                out[endpoint_id] = {"unit_price": price.unit_price, "unit": price.unit,
                                    "source": price.source, "countable": price.countable,
                                    "rules": [r.as_json() for r in price_rules(endpoint_id)]}
        return out

    async def refresh(self, key: str, destination: Any = None,
                      endpoint_ids: list[str] | None = None,
                      timeout: float = FETCH_TIMEOUT_S) -> bool:
        """Fetch prices from fal's Platform API (or the owner's server in its place:
        `destination`, an egress.Destination or a server URL); on any failure keep what
        we have and log one warning."""
        from .endpoints import ENDPOINTS
        destination = _as_destination(destination)
        ids = endpoint_ids or [e.endpoint_id for e in ENDPOINTS]
        try:
            rows = await _price_rows(key, destination, ids, timeout)
            prices = {str(row["endpoint_id"]): Price(_unit_price(row["unit_price"]),
                                                     str(row["unit"]), "fal")
                      for row in rows}
        except Exception as exc:
            status = getattr(getattr(exc, "response", None), "status_code", None)
            why = "a price that is 0, negative or not a number" if isinstance(exc, BadPrice) \
                else type(exc).__name__ + (f" HTTP {status}" if status else "")
            log.warning("fal prices could not be fetched from %s (%s); using the prices shipped "
                        "with the pack (%s), marked as estimates, and trying again in %d "
                        "minutes", destination.label, why, FALLBACK_DATE, PRICE_RETRY_S // 60)
            return False
        server = destination.name
        with self._lock:
            self._prices.setdefault(server, {}).update(prices)
            self._fetched_at[server] = time.time()
            fetched_at = self._fetched_at[server]
        from . import state
        try:   # off the loop: this may run on ComfyUI's own
            await asyncio.to_thread(lambda: state.store().write_doc("prices", {
                "server": server, "fetched_at": fetched_at,
                "prices": {k: {"unit_price": v.unit_price, "unit": v.unit}
                           for k, v in prices.items()}}))
        except (OSError, state.StateUnavailable):
            pass
        return True

    async def fetch_one(self, key: str | None, destination: Any, endpoint_id: str,
                        timeout: float = FETCH_TIMEOUT_S) -> Price | None:
        """The price of one catalogue endpoint (fal Image Endpoint), asked once per session
        of `destination` (fal, or the owner's server in its place: the caller passes the
        owner's default, never a server a workflow picked) and kept under its name beside
        the table; None when the price list has none (or quotes one that is refused)."""
        destination = _as_destination(destination)
        server = destination.name
        with self._lock:
            if (server, endpoint_id) in self._asked:
                return self._prices.get(server, {}).get(endpoint_id)
            self._asked.add((server, endpoint_id))
        try:
            rows = await _price_rows(key, destination, [endpoint_id], timeout)
            found = [Price(_unit_price(row["unit_price"]), str(row["unit"]), "fal")
                     for row in rows if row.get("endpoint_id") == endpoint_id]
        except asyncio.CancelledError:
            with self._lock:          # not answered: the next run asks again
                self._asked.discard((server, endpoint_id))
            raise
        except Exception as exc:
            log.info("no fal price for %s (%s)", endpoint_id, type(exc).__name__)
            return None
        if not found:
            return None
        with self._lock:
            self._prices.setdefault(server, {})[endpoint_id] = found[0]
        return found[0]

    def not_listed(self) -> list[str]:
        """Catalogue endpoints asked for this session that got no price (fal's list lacks
        them, or the call failed)."""
        with self._lock:
            return sorted({endpoint for server, endpoint in self._asked
                           if endpoint not in self._prices.get(server, {})})

    def clear(self) -> None:
        with self._lock:
            self._prices.clear()
            self._asked.clear()
            self._fetched_at.clear()
            self._loaded_disk = False


def _as_destination(destination: Any):
    from . import egress
    if destination is None or isinstance(destination, str):
        return egress.Destination("server", egress.normalize(destination)) \
            if destination else egress.FAL
    return destination


async def _price_rows(key: str | None, destination: Any, endpoint_ids: list[str],
                      timeout: float) -> list[dict[str, Any]]:
    """fal's price list rows for `endpoint_ids`, from `destination` (the key only where the
    destination takes one)."""
    from . import egress
    from .fal_transport import http_client, tls_context
    headers = {"Authorization": f"Key {key}"} if key and destination.sends_key else {}
    await asyncio.to_thread(tls_context)   # read from disk the first time: off the loop
    async with http_client(timeout=timeout,
                           transport=egress.egress_transport(destination)) as http:
        response = await http.get(FAL_PRICING_URL, headers=headers,
                                  params=[("endpoint_id", i) for i in endpoint_ids])
        response.raise_for_status()
        rows = response.json().get("prices", [])
    return [row for row in rows if isinstance(row, dict)]


class BadPrice(ValueError):
    pass


def _unit_price(value: Any) -> float:
    """A unit price as fal sends it; BadPrice for one that is 0, negative or not finite (a
    price of 0 would switch the spend guard off; NaN would never trip it)."""
    if isinstance(value, bool):
        raise BadPrice(value)
    price = float(value)
    if not math.isfinite(price) or price <= 0:
        raise BadPrice(value)
    return price


class PriceRefresh:
    """The one price refresh of the process: at most one fetch at a time, and after a
    failure no new fetch for PRICE_RETRY_S, whoever asks (routes or runs)."""

    def __init__(self) -> None:
        self.task: asyncio.Task | None = None
        self.failed_at = 0.0
        self.no_key_logged = False
        self._lock = threading.Lock()   # prompts run on their own threads and loops

    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    def reset(self) -> None:
        if self.running():
            assert self.task is not None
            self.task.cancel()
        self.task, self.failed_at, self.no_key_logged = None, 0.0, False

    def backing_off(self) -> bool:
        return bool(self.failed_at) and time.monotonic() - self.failed_at < PRICE_RETRY_S

    def start(self, key: str | None, destination: Any, force: bool = False) -> asyncio.Task | None:
        """Start a background refresh on the running loop when prices are stale. Returns
        the task (the running one if it runs on this loop), or None when nothing is needed
        or possible (or the refresh runs on another loop, which only that loop may await)."""
        with self._lock:
            return self._start(key, destination, force)

    def _start(self, key: str | None, destination: Any, force: bool) -> asyncio.Task | None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return None
        if self.running():
            assert self.task is not None
            return self.task if self.task.get_loop() is loop else None
        if not force and (prices.fresh(destination or None) or self.backing_off()):
            return None
        if not key and getattr(destination, "sends_key", True):
            if not self.no_key_logged:
                self.no_key_logged = True
                log.info("fal prices: no fal key (FAL_KEY or a saved key) to ask fal's price "
                         "list with; showing the prices shipped with the pack, marked as "
                         "estimates")
            return None
        self.task = loop.create_task(self._run(key or "", destination),
                                     name="comfyui-fal-edit price refresh")
        return self.task

    async def _run(self, key: str, destination: Any) -> bool:
        try:
            ok = await prices.refresh(key, destination)
        except Exception as exc:  # refresh() catches fetch errors; this is a last resort
            log.warning("fal prices: refresh failed (%s)", type(exc).__name__)
            ok = False
        self.failed_at = 0.0 if ok else time.monotonic()
        if ok:
            log.info("fal prices: fetched from %s", getattr(destination, "label", "fal"))
        return ok


def estimate(endpoint_id: str, requests: Iterable[tuple[Mapping[str, Any], float]],
             price: Price | None, cached_items: int = 0) -> Estimate:
    """requests: (payload, input megapixels) per request that will be paid; the endpoint's
    price rules (num_images, Recraft's vector styles, ...) read the payload."""
    if price is None:
        return Estimate(0.0, 0.0, None, cached_items)
    units = total = 0.0
    multipliers: list[float] = []
    whys: list[str] = []
    for payload, megapixels in requests:
        n, multiplier, why = request_price(endpoint_id, payload, megapixels, price.per_megapixel)
        units += n
        total += n * price.unit_price * multiplier
        if multiplier not in multipliers:
            multipliers.append(multiplier)
        if why and why not in whys:
            whys.append(why)
    return Estimate(round(total, 6), round(units, 4), price, cached_items, tuple(multipliers),
                    ", ".join(whys))


@dataclass
class LedgerEntry:
    """One fal request (or one the cache answered). Entered when the request is sent, at its
    estimate: from then on it may be billed, whatever becomes of its answer (refused, failed,
    timed out, lost). `billed_usd` replaces the estimate once fal's bill for it is known
    (the result's x-fal-billable-units × the unit price)."""
    endpoint_id: str
    request_id: str
    cached: bool
    estimated_usd: float
    prompt_id: str | None
    at: float = field(default_factory=time.time)
    billed_usd: float | None = None
    billed_units: float | None = None
    queue_s: float | None = None      # time in fal's queue, when known
    run_s: float | None = None        # time running on fal, when known

    @property
    def counted_usd(self) -> float:
        """What this request counts against the ceilings: fal's bill once known, else the
        estimate; a cached answer costs nothing."""
        if self.cached:
            return 0.0
        return self.billed_usd if self.billed_usd is not None else self.estimated_usd


class Ledger:
    """This ComfyUI session's fal requests (and the ones the cache saved), plus what runs
    that passed the spend guard hold until their requests are sent: the calls of a list
    input run at once, and each must see what the others are about to spend."""

    def __init__(self) -> None:
        self._entries: list[LedgerEntry] = []
        self._held: dict[int, tuple[str | None, float]] = {}
        self._tokens = 0
        self._lock = threading.RLock()

    def hold_if(self, prompt_id: str | None, usd: float, check: Callable[[], None]) -> int:
        """Run `check` (it raises when `usd` more would pass a limit) and hold `usd` for this
        prompt, in one step: two runs never both pass on the same headroom."""
        with self._lock:
            check()
            self._tokens += 1
            self._held[self._tokens] = (prompt_id, usd)
            return self._tokens

    def enter_sent(self, entry: LedgerEntry, token: int | None) -> None:
        """A request is about to be sent: enter it at its estimate, and hold that much less
        for its run, in one step (it is counted once, as spent)."""
        with self._lock:
            self._entries.append(entry)
            if token is not None:
                self.settle(token, entry.estimated_usd)

    def take_back(self, entry: LedgerEntry, token: int | None) -> None:
        """The request provably never reached fal: out of the ledger, and held again for its
        run (the item may still be sent)."""
        with self._lock:
            if entry in self._entries:
                self._entries.remove(entry)
                if token is not None:
                    self.settle(token, -entry.estimated_usd)

    def settle(self, token: int, usd: float) -> None:
        """A held run's request was sent (and entered): hold that much less."""
        with self._lock:
            if token in self._held:
                prompt_id, held = self._held[token]
                self._held[token] = (prompt_id, max(0.0, held - usd))

    def release(self, token: int) -> None:
        with self._lock:
            self._held.pop(token, None)

    def held(self, prompt_id: str | None = None) -> float:
        with self._lock:
            return sum(usd for p, usd in self._held.values()
                       if prompt_id is None or p == prompt_id)

    def add(self, entry: LedgerEntry) -> None:
        with self._lock:
            self._entries.append(entry)

    def entries(self) -> list[LedgerEntry]:
        with self._lock:
            return list(self._entries)

    def spent(self, prompt_id: str | None = None, held: bool = False) -> float:
        """What the requests sent cost (fal's bill where known, else the estimate), of one
        prompt or the session; with `held`, plus what runs that passed the guard are about
        to send."""
        with self._lock:
            return sum(e.counted_usd for e in self._entries
                       if prompt_id is None or e.prompt_id == prompt_id) + \
                (self.held(prompt_id) if held else 0.0)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._held.clear()

    def report(self) -> str:
        rows = self.entries()
        if not rows:
            return "No fal calls in this session yet."
        lines = ["endpoint | request id | state | estimate (USD) | billed (USD) | time on fal"]
        for e in rows:
            lines.append(f"{e.endpoint_id} | {e.request_id or '-'} | {entry_state(e)} | "
                         f"{0.0 if e.cached else e.estimated_usd:.4f} | {billed_text(e)} | "
                         f"{fal_times(e) or '-'}")
        sent = [e for e in rows if not e.cached]
        billed = [e for e in sent if e.billed_usd is not None]
        lines.append(f"total this session: ${self.spent():.4f} "
                     f"(${sum(e.billed_usd or 0.0 for e in billed):.4f} billed by fal for "
                     f"{len(billed)} request(s), ${sum(e.estimated_usd for e in sent if e.billed_usd is None):.4f} "
                     f"estimated for {len(sent) - len(billed)}; {len(rows) - len(sent)} from cache)")
        return "\n".join(lines)


def entry_state(entry: LedgerEntry) -> str:
    if entry.cached:
        return "cached (no charge)"
    if entry.billed_usd is not None:
        return "billed"
    return "sent (estimate)" if entry.request_id else "sent, answer lost (estimate)"


def fal_times(entry: LedgerEntry) -> str:
    """fal's queue and run times of a request, where known: "queue 1.2s, run 3.4s"."""
    parts = [f"{name} {value:.1f}s" for name, value in (("queue", entry.queue_s),
                                                          ("run", entry.run_s))
             if value is not None]
    return ", ".join(parts)


def billed_text(entry: LedgerEntry) -> str:
    if entry.cached:
        return "0.0000"
    return f"{entry.billed_usd:.4f}" if entry.billed_usd is not None else "estimate"


# Inputs that don't change what a request costs: left out of a learned cost's inputs.
UNPRICED_INPUTS = ("seed", "sync_mode", "prompt", "negative_prompt", "enable_safety_checker",
                   "output_format")


def cost_inputs(payload: Mapping[str, Any]) -> str:
    """The inputs a learned cost is kept under: the payload without its images (they are
    added later) and the inputs that don't change the price, as canonical JSON."""
    kept = {k: v for k, v in payload.items() if k not in UNPRICED_INPUTS}
    return json.dumps(kept, sort_keys=True, separators=(",", ":"), default=str)


class LearnedCosts:
    """The last cost fal billed for one request of an endpoint with given inputs, per
    server: what an endpoint billed per second or in a vague unit costs, learned from its
    runs (the badge shows it, marked as such; the guard counts it instead of the
    conservative UNPRICED once it exists). A cost is kept with the input megapixels it was
    billed for, and counts only for inputs no larger: a second of GPU time on a 16x16
    image says nothing of a 4 MP one."""

    MAX_PER_ENDPOINT = 20

    def __init__(self) -> None:
        self._costs: dict[tuple[str, str], dict[str, tuple[float, float]]] = {}
        self._lock = threading.Lock()

    def note(self, endpoint_id: str, payload: Mapping[str, Any], usd: float,
             server: str, megapixels: float = 0.0) -> None:
        with self._lock:
            rows = self._costs.setdefault((server, endpoint_id), {})
            rows.pop(cost_inputs(payload), None)
            rows[cost_inputs(payload)] = (usd, megapixels)
            while len(rows) > self.MAX_PER_ENDPOINT:
                rows.pop(next(iter(rows)))

    def last(self, endpoint_id: str, payload: Mapping[str, Any], server: str,
             megapixels: float = 0.0) -> float | None:
        """The last bill for these inputs, if its images were at least `megapixels`."""
        with self._lock:
            usd, learned_on = self._costs.get((server, endpoint_id), {}).get(
                cost_inputs(payload), (None, 0.0))
            return usd if usd is not None and megapixels <= learned_on + 1e-9 else None

    def table(self, server: str) -> dict[str, list[dict[str, Any]]]:
        """{endpoint: [{"inputs": {...}, "usd": last billed for one request}]} for the badges."""
        with self._lock:
            return {endpoint: [{"inputs": json.loads(inputs), "usd": usd}
                               for inputs, (usd, _) in rows.items()]
                    for (where, endpoint), rows in self._costs.items() if where == server}

    def clear(self) -> None:
        with self._lock:
            self._costs.clear()


prices = PriceBook()
price_refresh = PriceRefresh()
ledger = Ledger()
learned = LearnedCosts()
