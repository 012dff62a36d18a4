"""The one runtime every fal node shares: validate, upload, queue, wait, download, decode.

A node call becomes a list of work items (one per input frame, or one for a
multi-image endpoint). Items run concurrently under a bound; each is uploaded,
submitted to fal's queue, polled until done, and its result files are fetched and
decoded. Nothing is lost: an item that fails fails the node with a sentence naming
it, and every item that arrived is remembered so a rerun only pays for the rest.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from . import imaging
from .caches import ItemResult, caches, request_key
from .endpoints import Endpoint
from .errors import FalNodeError, redact, translate
from .fal_transport import close_fal_client, fal_client_for_run, http_client, point_fal_client_at
from .host import host
from .pricing import LedgerEntry, estimate, ledger, prices
from .settings import DEFAULT_SETTINGS, FalSettings, MissingKey, resolve_key
from .spec import MATCH_INPUT, InputProblem

log = logging.getLogger("comfyui_fal_edit")

FAL_HOSTS = "https://fal.run"              # cache namespace when no base URL is set
POLL_FIRST_S = 0.1                         # learn of completion within 0.1 s...
POLL_MAX_S = 0.25                          # ...and within 0.25 s on long jobs,
POLL_FAST_FOR_S = 10.0                     # once they have run this long
WATCH_S = 0.25                             # interrupt flag and status cadence
STATUS_EVERY_S = 1.0
CANCEL_GRACE_S = 5.0
DOWNLOAD_ATTEMPTS = 4
RESULT_ATTEMPTS = 3


@dataclass
class WorkItem:
    index: int                               # position in the node's output order
    images: list[imaging.PreparedImage]
    payload: dict[str, Any]
    key: str = ""                            # request identity for the result memory
    state: str = "waiting"
    detail: str = ""
    started: float | None = None
    request_id: str | None = None
    handle: Any = None
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


@dataclass
class RunOutcome:
    images: torch.Tensor
    seed: int
    urls: list[str]
    request_ids: list[str]
    notes: list[str] = field(default_factory=list)
    status: str = ""
    estimated_usd: float = 0.0       # the fal calls this run paid for; cached items: $0
    items: int = 0                   # fal requests this run needed (cached ones included)
    cached_items: int = 0
    megapixels: float = 0.0          # input megapixels per request, on average


class ItemFailed(Exception):
    pass


# -- building the work ------------------------------------------------------

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
    """Split the inputs into requests and fit every image into the endpoint's limits."""
    socket_names = ["image"] if not endpoint.multi_image_sockets else \
        [f"image_{i + 1}" for i in range(len(image_inputs))]
    groups: list[list[imaging.PreparedImage]] = []
    for name, tensor in zip(socket_names, image_inputs):
        if tensor is None:
            continue
        frames = imaging.frames_to_uint8(tensor, name)
        prepared = [imaging.prepare(f, endpoint.limits) for f in frames]
        groups.append(prepared)
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


# -- the run ----------------------------------------------------------------

class Run:
    """One node execution."""

    def __init__(self, endpoint: Endpoint, settings: FalSettings, node_id: str | None) -> None:
        self.endpoint = endpoint
        self.settings = settings
        self.node_id = node_id
        self.name = endpoint.display_name
        self.items: list[WorkItem] = []
        self.key = ""
        self.server = ""
        self.t0 = time.monotonic()
        self.last_status = 0.0
        self.prompt_id = host.prompt_id()
        self.uploads_started = 0
        self.uploads_done = 0
        self.cost = estimate(endpoint.endpoint_id, [], None)

    # status ---------------------------------------------------------------
    def status_text(self, final: str | None = None) -> str:
        total = len(self.items)
        done = sum(1 for i in self.items if i.result is not None)
        elapsed = time.monotonic() - self.t0
        head = final or f"{done}/{total} done · {elapsed:.1f}s"
        if final is None and self.uploads_done < self.uploads_started:
            head += f" · uploading {self.uploads_done + 1} of {self.uploads_started}"
        if final is None and total:
            lines = []
            for item in self.items:
                if item.finished:
                    continue
                text = f"#{item.index + 1} {item.state}"
                if item.started and item.state == "running":
                    text += f" {time.monotonic() - item.started:.1f}s"
                if item.detail:
                    text += f" · {item.detail[:60]}"
                lines.append(text)
            shown = lines[:6] + ([f"… {len(lines) - 6} more"] if len(lines) > 6 else [])
            return "\n".join([head] + shown)
        return head

    def report(self, force: bool = False, final: str | None = None) -> None:
        now = time.monotonic()
        if not force and now - self.last_status < STATUS_EVERY_S:
            return
        self.last_status = now
        text = redact(self.status_text(final), self.key)
        host.show_status(self.node_id, text)
        host.progress(self.node_id, sum(1 for i in self.items if i.finished), len(self.items) or 1)

    def fail(self, cause: str) -> FalNodeError:
        sentence = redact(f"{self.name}: {cause}.", self.key)
        return FalNodeError(sentence.replace("..", "."))

    # main -----------------------------------------------------------------
    async def execute(self, payload: dict[str, Any], image_inputs: list[Any]) -> RunOutcome:
        try:
            self.items = plan_items(self.endpoint, payload, image_inputs, self.settings)
            self.key = resolve_key(self.settings.key)
        except (InputProblem, MissingKey) as exc:
            raise self.fail(str(exc)) from None
        self.server = self.settings.resolved_base_url() or FAL_HOSTS

        caches.set_max_bytes(int(self.settings.cache_max_gb * 1024**3))
        pending = []
        for item in self.items:
            item.key = request_key(self.endpoint.endpoint_id, item.payload,
                                   [img.digest for img in item.images])
            remembered = await asyncio.to_thread(caches.result, item.key) \
                if self.settings.cache == "use" else None
            if remembered is not None:
                item.result, item.cached, item.finished = remembered, True, True
                item.state = "from cache (no charge)"
                ledger.add(LedgerEntry(self.endpoint.endpoint_id, remembered.request_id or "",
                                       True, 0.0, self.prompt_id))
            else:
                pending.append(item)

        self.cost = self._estimate(pending)
        self._guard_spend()
        if pending:
            await self._call_fal(pending)

        outcome = self._assemble()
        outcome.estimated_usd = self.cost.total
        outcome.items = len(self.items)
        outcome.cached_items = sum(1 for i in self.items if i.cached)
        outcome.megapixels = round(sum(i.megapixels for i in self.items) / len(self.items), 4)
        self.report(force=True, final=outcome.status)
        return outcome

    def _estimate(self, pending: list[WorkItem]):
        asked = [(int(i.payload.get("num_images", 1)), i.megapixels) for i in pending]
        return estimate(self.endpoint.endpoint_id, asked, prices.price(self.endpoint.endpoint_id),
                        len(self.items) - len(pending))

    def _guard_spend(self) -> None:
        """Fail before any upload when this node would take spending past a limit."""
        limits = [(self.settings.max_usd_per_prompt, ledger.spent(self.prompt_id),
                   "this prompt", "max_usd_per_prompt"),
                  (self.settings.max_usd_per_session, ledger.spent(), "this session",
                   "max_usd_per_session")]
        for limit, spent, scope, setting in limits:
            if limit > 0 and spent + self.cost.total > limit + 1e-9:
                raise self.fail(
                    f"the spend guard stopped this run before any upload: its estimate "
                    f"${self.cost.total:.3f} plus ${spent:.3f} already spent in {scope} would "
                    f"pass the ${limit:.2f} limit; raise {setting} in fal Settings (0 means no "
                    f"limit) or make the batch smaller")

    async def _call_fal(self, pending: list[WorkItem]) -> None:
        import httpx

        point_fal_client_at(self.settings.resolved_base_url())
        _quiet_httpx()
        client = fal_client_for_run(self.key)
        # Stale prices are refreshed alongside the work, never in front of it.
        pricing = None if prices.fresh() else asyncio.create_task(
            prices.refresh(self.key, self.settings.resolved_base_url()))
        limits = httpx.Limits(max_connections=max(4, self.settings.concurrency * 2))
        async with http_client(follow_redirects=True, timeout=60.0, limits=limits) as http:
            self.http = http
            self.client = client
            self.gate = asyncio.Semaphore(max(1, self.settings.concurrency))
            self.uploads: dict[str, asyncio.Task] = {}
            self.token: asyncio.Task | None = None
            tasks = [asyncio.create_task(self._run_item(item)) for item in pending]
            try:
                await self._supervise(tasks)
            except BaseException:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                await self._cancel_in_flight(pending)
                raise
            finally:
                for task in self.uploads.values():
                    task.cancel()
                await asyncio.gather(*self.uploads.values(), return_exceptions=True)
                if self.token is not None:
                    self.token.cancel()
                    await asyncio.gather(self.token, return_exceptions=True)
                if pricing is not None:
                    await asyncio.wait([pricing], timeout=1.0)
                    pricing.cancel()
                await close_fal_client(client)

    async def _supervise(self, tasks: list[asyncio.Task]) -> None:
        """Wait for the items while watching ComfyUI's interrupt flag and reporting status."""
        self.report(force=True)
        remaining = set(tasks)
        while remaining:
            done, remaining = await asyncio.wait(remaining, timeout=WATCH_S)
            if host.interrupted():
                raise _InterruptRequested()
            self.report()

    async def _cancel_in_flight(self, items: list[WorkItem]) -> None:
        """Tell fal to stop every request that has not finished, so nothing more is billed."""
        live = [i for i in items if i.handle is not None and not i.finished and not i.cancel_sent]

        async def cancel(item: WorkItem) -> None:
            item.cancel_sent = True
            try:
                await asyncio.wait_for(item.handle.cancel(), CANCEL_GRACE_S)
                item.state = "cancelled"
            except Exception as exc:  # already finished, or fal unreachable
                log.info("%s: could not cancel request %s: %s", self.name, item.request_id,
                         type(exc).__name__)

        if live:
            await asyncio.gather(*(cancel(i) for i in live))

    # one item -------------------------------------------------------------
    async def _run_item(self, item: WorkItem) -> None:
        leader, shared = caches.claim(item.key)
        while not leader:
            # The same request is already on its way to fal (another item, node or
            # prompt): wait for that one rather than pay twice.
            item.state = "waiting for an identical request"
            result = await asyncio.wrap_future(shared)
            if result is not None:
                item.result, item.cached, item.finished = result, True, True
                item.state = "shared (no charge)"
                return
            leader, shared = caches.claim(item.key)   # that one failed: our turn
        try:
            await self._call_for(item)
        finally:
            caches.release(item.key, item.result)

    async def _call_for(self, item: WorkItem) -> None:
        try:
            async with self.gate:
                try:
                    await asyncio.wait_for(self._steps(item), self.settings.timeout_s)
                except asyncio.TimeoutError:
                    raise ItemFailed(f"did not finish within {self.settings.timeout_s:g}s and "
                                     f"was cancelled; raise the timeout in fal Settings") from None
        except Exception as exc:  # recorded and reported together with the other items
            if item.handle is not None and item.result is None:
                await self._cancel_in_flight([item])   # don't leave a job running unseen
            item.error, item.state, item.finished = exc, "failed", True

    async def _steps(self, item: WorkItem) -> None:
        """Upload, queue, wait, download: one item, under one deadline (a stalled
        answer must not outlive timeout_s)."""
        result_json = await self._submit_with_fresh_urls(item)
        item.state = "downloading"
        item.result = await self._collect(item, result_json)
        await asyncio.to_thread(caches.remember_result, item.key,
                                self.endpoint.endpoint_id, item.result, item.blobs)
        item.blobs = None
        ledger.add(LedgerEntry(self.endpoint.endpoint_id, item.request_id or "", False,
                               self._item_cost(item), self.prompt_id))
        item.state, item.finished = "done", True

    def _item_cost(self, item: WorkItem) -> float:
        return estimate(self.endpoint.endpoint_id,
                        [(int(item.payload.get("num_images", 1)), item.megapixels)],
                        self.cost.price).total

    async def _submit_with_fresh_urls(self, item: WorkItem) -> dict[str, Any]:
        """Upload (or reuse) the item's images and run it on fal.

        A remembered URL can be dead (fal expired the file early, or the base URL now
        points elsewhere); fal then answers 422 for the image field. Forget those
        URLs, upload again and retry once, rather than fail until the memory expires.
        """
        import fal_client

        for attempt in (1, 2):
            item.state = "uploading"
            found = await asyncio.gather(*(self._url_for(img) for img in item.images))
            urls = [url for url, _ in found]
            payload = dict(item.payload)
            payload[self.endpoint.image_field] = urls if self.endpoint.multi_image_sockets \
                else urls[0]
            try:
                return await self._queue(item, payload)
            except fal_client.FalClientHTTPError as exc:
                reused = [img for img, (_, remembered) in zip(item.images, found) if remembered]
                if attempt == 2 or exc.status_code != 422 or not reused or \
                        self.endpoint.image_field not in str(exc.message):
                    raise
                log.info("%s: fal could not read a remembered upload URL; uploading again",
                         self.name)
                for img in reused:
                    await asyncio.to_thread(caches.forget_upload, self.server, img.digest)
                item.handle = item.request_id = None
        raise AssertionError("unreachable")

    async def _url_for(self, image: imaging.PreparedImage) -> tuple[str, bool]:
        """(URL fal can read, whether it was remembered from an earlier run)."""
        # Off the loop: the lookup may wait on the cache's SQLite file.
        url = await asyncio.to_thread(caches.upload_url, self.server, image.digest)
        if url is not None:
            return url, True
        task = self.uploads.get(image.digest)
        if task is None:
            self.uploads_started += 1
            task = asyncio.create_task(self._upload(image))
            self.uploads[image.digest] = task
        return await asyncio.shield(task), False

    async def _upload(self, image: imaging.PreparedImage) -> str:
        digest = image.digest   # encode() may shrink the pixels; remember the input's identity
        if self.token is None and hasattr(self.client, "prefetch_upload_token"):
            # The upload token's round trip overlaps the encoding instead of following it.
            self.token = asyncio.create_task(self.client.prefetch_upload_token())
        fmt = self.settings.upload_format
        data, mime = await asyncio.to_thread(imaging.encode, image, fmt,
                                             self.endpoint.limits.max_bytes)
        name = f"comfyui-{image.digest[:12]}.{'jpg' if fmt == 'jpeg' else 'png'}"
        url = await self.client.upload(data, mime, file_name=name)
        self.uploads_done += 1
        await asyncio.to_thread(caches.remember_upload, self.server, digest, url)
        return url

    async def _queue(self, item: WorkItem, payload: dict[str, Any]) -> dict[str, Any]:
        import fal_client

        item.state = "submitting"
        # Shielded: if the user interrupts mid-submit we still learn the request id,
        # so the job can be cancelled rather than run (and billed) unseen.
        submit = asyncio.ensure_future(self.client.submit(self.endpoint.endpoint_id, payload))
        try:
            item.handle = await asyncio.shield(submit)
        except asyncio.CancelledError:
            try:
                item.handle = await asyncio.wait_for(submit, CANCEL_GRACE_S)
            except BaseException:
                pass
            raise
        item.request_id = item.handle.request_id
        item.state = "queued"
        submitted = time.monotonic()
        deadline = submitted + self.settings.timeout_s
        interval = POLL_FIRST_S
        while True:
            status = await _again_on_5xx(lambda: item.handle.status(with_logs=True))
            if isinstance(status, fal_client.Queued):
                item.state, item.detail = "queued", f"position {status.position + 1}"
            elif isinstance(status, fal_client.InProgress):
                if item.state != "running":
                    item.state, item.started = "running", time.monotonic()
                item.detail = _last_log(status.logs) or item.detail
            elif isinstance(status, fal_client.Completed):
                if status.error:
                    # fal reports app failures here; the result call answers with the details.
                    item.detail = str(status.error)
                break
            if time.monotonic() > deadline:
                await self._cancel_in_flight([item])
                raise ItemFailed(f"did not finish within {self.settings.timeout_s:g}s and was "
                                 f"cancelled; raise the timeout in fal Settings")
            await asyncio.sleep(interval)
            if time.monotonic() - submitted > POLL_FAST_FOR_S:
                interval = min(POLL_MAX_S, interval * 1.25)
        item.detail = ""
        return await _again_on_5xx(item.handle.get)

    async def _collect(self, item: WorkItem, result: dict[str, Any]) -> ItemResult:
        files = result.get(self.endpoint.output_field)
        if isinstance(files, dict):
            files = [files]
        files = [f for f in (files or []) if isinstance(f, dict) and f.get("url")]
        if not files:
            raise ItemFailed("fal returned no image; run again, and if it persists change the "
                             "prompt or settings")
        urls = [f["url"] for f in files]
        blobs = await asyncio.gather(*(self._download(u) for u in urls))
        try:
            frames = await asyncio.gather(*(asyncio.to_thread(self._decode_result, b, u)
                                            for b, u in zip(blobs, urls)))
        except (OSError, ValueError):   # PIL.UnidentifiedImageError is an OSError
            raise ItemFailed("fal sent a result file that is not a readable image; run the node "
                             "again") from None
        flags = result.get(self.endpoint.nsfw_field) if self.endpoint.nsfw_field else None
        flagged = [bool(flags[i]) if isinstance(flags, list) and i < len(flags) else False
                   for i in range(len(frames))]
        item.blobs = list(blobs)
        seed = result.get("seed", item.payload.get("seed"))
        return ItemResult(list(frames), urls, flagged,
                          int(seed) if isinstance(seed, (int, float)) else None, item.request_id)

    def _decode_result(self, blob: bytes, url: str) -> np.ndarray:
        """Decode one result file (in a worker thread) and remember its URL by its pixels,
        so a result fed into another fal node is sent by URL, not uploaded again."""
        frame = imaging.decode(blob)
        caches.remember_upload(self.server, imaging.pixel_digest(frame), url)
        return frame

    async def _download(self, url: str) -> bytes:
        import httpx

        if url.startswith("data:"):
            return imaging.decode_data_uri(url)
        delay = 0.2
        for attempt in range(1, DOWNLOAD_ATTEMPTS + 1):
            try:
                response = await self.http.get(url)
                if response.status_code in (408, 429, 500, 502, 503, 504) and \
                        attempt < DOWNLOAD_ATTEMPTS:
                    raise httpx.HTTPStatusError("retry", request=response.request,
                                                response=response)
                response.raise_for_status()
                return response.content
            except (httpx.TransportError, httpx.HTTPStatusError) as exc:
                retryable = isinstance(exc, httpx.TransportError) or \
                    exc.response.status_code in (408, 429, 500, 502, 503, 504)
                if not retryable or attempt == DOWNLOAD_ATTEMPTS:
                    raise
                await asyncio.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    # the node's answer ----------------------------------------------------
    def _assemble(self) -> RunOutcome:
        total = len(self.items)
        notes: list[str] = []
        for item in self.items:   # after encoding: max_bytes may have shrunk an image too
            for img in item.images:
                if img.downscaled_from:
                    notes.append(f"input {img.downscaled_from[0]}x{img.downscaled_from[1]} "
                                 f"downscaled to {img.size[0]}x{img.size[1]} to fit the "
                                 f"endpoint's limits")
        failed = [i for i in self.items if i.error is not None or i.result is None]
        if failed:
            first = failed[0]
            cause = (str(first.error) if isinstance(first.error, ItemFailed)
                     else translate(first.error, self.settings.key.label)
                     if first.error is not None else "no result arrived")
            which = _items_phrase([i.index for i in failed], total)
            kept = total - len(failed)
            tail = (f" ({kept} of {total} arrived and are kept, so a rerun with the same inputs "
                    f"only pays for the failed ones)") if kept else ""
            raise self.fail(f"{which} failed — {cause}{tail}")

        frames: list[np.ndarray] = []
        urls: list[str] = []
        flagged_at: list[str] = []
        for item in self.items:
            assert item.result is not None
            for n, (frame, url, flag) in enumerate(zip(item.result.frames, item.result.urls,
                                                      item.result.flagged)):
                if flag:
                    flagged_at.append(f"item {item.index + 1}" +
                                      (f" image {n + 1}" if len(item.result.frames) > 1 else ""))
                    if self.settings.nsfw_policy == "drop flagged":
                        continue
                frames.append(frame)
                urls.append(url)
        if flagged_at:
            listed = ", ".join(flagged_at)
            if self.settings.nsfw_policy == "error":
                raise self.fail(f"fal flagged {listed} as NSFW (fal returns those as black "
                                f"images); change the prompt or seed, or set the NSFW policy "
                                f"in fal Settings to keep or drop flagged images")
            if not frames:
                raise self.fail(f"fal flagged every result as NSFW ({listed}) and the NSFW "
                                f"policy drops them, so nothing is left to output; change the "
                                f"prompt or seed")
            verb = "dropped" if self.settings.nsfw_policy == "drop flagged" else "kept"
            notes.append(f"{verb} NSFW-flagged {listed}")

        height, width = frames[0].shape[:2]
        resized = sum(1 for f in frames if f.shape[:2] != (height, width))
        if resized:
            frames = [imaging.fit_like_batch_images(f, width, height) for f in frames]
            notes.append(f"{resized} result(s) of another size were cropped and resized to "
                         f"{width}x{height} to form one batch")
        tensor = _stack(frames)
        cached = sum(1 for i in self.items if i.cached)
        first_seed = self.items[0].result.seed if self.items[0].result else None
        seed = first_seed if first_seed is not None else -1
        elapsed = time.monotonic() - self.t0
        summary = f"done in {elapsed:.1f}s · {len(frames)} image(s)"
        if self.cost.price is not None and total > cached:
            summary += " · " + self.cost.describe()
        if cached:
            summary += f" · {cached} of {total} from cache (no charge)"
        status = "\n".join([summary] + notes)
        request_ids = [i.result.request_id or "" for i in self.items if i.result]
        return RunOutcome(tensor, seed, urls, request_ids, notes, status)


async def _again_on_5xx(call, attempts: int = RESULT_ATTEMPTS) -> Any:
    """A status poll or result GET changes nothing on fal: a 5xx or an unreadable answer is
    retried (fal-client retries only 429 and nginx 502-504), so a made result is not lost."""
    import fal_client

    delay = 0.2
    for attempt in range(1, attempts + 1):
        try:
            return await call()
        except (fal_client.FalClientHTTPError, ValueError) as exc:
            transient = not isinstance(exc, fal_client.FalClientHTTPError) or \
                exc.status_code >= 500
            if not transient or attempt == attempts:
                raise
        await asyncio.sleep(delay)
        delay *= 2


class _InterruptRequested(Exception):
    pass


def _quiet_httpx() -> None:
    """httpx logs every request at INFO: one console line per status poll. Unless the
    user configured that logger, keep only its warnings."""
    httpx_log = logging.getLogger("httpx")
    if httpx_log.level == logging.NOTSET:
        httpx_log.setLevel(logging.WARNING)


def _stack(frames: list[np.ndarray]) -> torch.Tensor:
    """Equal-sized uint8 frames -> one [B,H,W,3] float32 tensor, without an extra batch copy."""
    h, w = frames[0].shape[:2]
    out = torch.empty((len(frames), h, w, 3), dtype=torch.float32)
    for i, frame in enumerate(frames):
        out[i].copy_(torch.from_numpy(frame)).div_(255.0)
    return out


def _items_phrase(indices: list[int], total: int) -> str:
    numbers = [str(i + 1) for i in indices]
    if len(numbers) == 1:
        return f"item {numbers[0]} of {total}"
    shown = ", ".join(numbers[:8]) + (", …" if len(numbers) > 8 else "")
    return f"items {shown} of {total}"


def _last_log(logs: Any) -> str:
    if isinstance(logs, list):
        for entry in reversed(logs):
            if isinstance(entry, dict) and entry.get("message"):
                return str(entry["message"]).strip()
    return ""


async def run_endpoint(endpoint: Endpoint, values: dict[str, Any], image_inputs: list[Any],
                       settings: FalSettings | None = None,
                       node_id: str | None = None) -> RunOutcome:
    """Everything a fal node does, in one call (the node classes are thin wrappers)."""
    settings = settings or DEFAULT_SETTINGS
    run = Run(endpoint, settings, node_id)
    try:
        payload = build_payload(endpoint, values)
    except InputProblem as exc:
        raise run.fail(str(exc)) from None
    try:
        return await run.execute(payload, image_inputs)
    except (_InterruptRequested, asyncio.CancelledError) as exc:
        run.report(force=True, final="interrupted · fal requests cancelled")
        if isinstance(exc, _InterruptRequested):
            host.raise_interrupt()
        raise
    except FalNodeError as exc:
        run.report(force=True, final=f"failed · {exc}")
        raise
