"""Stage 4, results: fal's result JSON -> decoded frames, then all items -> one IMAGE batch.

`ResultFiles` fetches and decodes one item's result files and reads fal's NSFW
flags; `assemble` puts every item's frames together in input order, applies the
NSFW policy, and fails naming each item that did not arrive (nothing is dropped
silently).

An answer is checked before it costs memory or disk: no deeper than the pack
reads, no more files than were asked for, result URLs only from fal's file hosts or
the run's own server, downloads capped (unpacked) while they stream, each file's
format told from its first bytes and its size read from its header before decoding,
and the run's pixels together within MAX_RUN_PIXELS. Every refusal here says that fal
billed the request: the answer came after fal finished it.

NSFW: fal's flags are believed. Where an endpoint that reports them sent none (or not a
clear list of booleans), each image is looked at instead: an all-black one is what fal
returns for a flagged result, so it counts as flagged, and the node says so.
"""

from __future__ import annotations

import asyncio
import math
import threading
from typing import Any, Callable
from urllib.parse import urlsplit

import numpy as np
import torch
from PIL import Image

from .. import egress, imaging, svg
from ..caches import ItemResult, as_stored, caches
from ..endpoints import Endpoint
from ..errors import translate
from ..settings import FalSettings
from .plan import WorkItem
from .queue import ItemFailed
from .submit import AccountRefused, lost_answers_phrase

DOWNLOAD_ATTEMPTS = 4
RETRY_STATUSES = (408, 429, 500, 502, 503, 504)
MAX_FILE_BYTES = 64 << 20          # one result file, as it streams in
MAX_RUN_BYTES = 1 << 30            # all result files of one run together
# All result images of one run together, in pixels, from their headers before any is
# decoded; also the most the output batch may hold (a float IMAGE of 256 MP is 3 GB).
MAX_RUN_PIXELS = 256_000_000
# What `ItemResult.flagged` holds where fal's answer carried no usable NSFW flags: the
# image was looked at. FLAGGED_BLACK (truthy) counts as flagged; NOT_FLAGGED_NO_FLAGS
# (falsy) passes as clean, with a note.
FLAGGED_BLACK = "all black, no flags"
NOT_FLAGGED_NO_FLAGS = ""
FORMATS_OPENED = "PNG, JPEG, WebP, GIF, TIFF and SVG"


def refused(sentence: str) -> ItemFailed:
    """An item refused after fal finished (and billed) it: the sentence says so."""
    return ItemFailed(sentence if egress.BILLED in sentence else egress.with_billed(sentence))


class ResultFiles:
    """Downloads and decodes result files for one run (one HTTP client, one server)."""

    def __init__(self, http: Any, server: str, endpoint: Endpoint,
                 destination: egress.Destination = egress.FAL,
                 batch: "OutputBatch | None" = None) -> None:
        self.http = http
        self.server = server
        self.endpoint = endpoint
        self.destination = destination
        self.batch = batch             # where each frame goes as soon as it is decoded
        self.downloaded = 0            # bytes of result files this run, against MAX_RUN_BYTES
        self.pixels = 0                # pixels of result images this run, against MAX_RUN_PIXELS

    async def collect(self, item: WorkItem, result: dict[str, Any]) -> ItemResult:
        problem = egress.answer_shape_problem(result)
        if problem:
            raise refused(problem)
        files = result.get(self.endpoint.output_field)
        if isinstance(files, dict):
            files = [files]
        files = [f for f in (files or []) if isinstance(f, dict) and f.get("url")]
        if not files:
            raise refused("fal returned no image; run again, and if it persists change the "
                          "prompt or settings")
        asked = self.endpoint.most_images(item.payload)
        if len(files) > asked:
            raise refused(f"the answer lists {len(files)} result files where {asked} "
                          f"{'was' if asked == 1 else 'were'} asked for, so none were "
                          f"downloaded; run again, and check base_url if it persists")
        urls = [str(f["url"]) for f in files]
        for url in urls:
            if not url.startswith("data:") and not self.destination.accepts_result_url(url):
                raise refused(f"a result URL points to {_where(url)}, which is neither one "
                              f"of fal's file hosts nor the server this run used, so it was "
                              f"not fetched; run again, and check base_url if it persists")
        try:
            blobs = await asyncio.gather(*(self._download(u) for u in urls))
        except egress.EgressRefused as exc:
            raise refused(str(exc)) from None
        flags = read_flags(result.get(self.endpoint.nsfw_field)
                           if self.endpoint.nsfw_field else None, len(files), self.endpoint)
        try:
            # Headers only: the format from the first bytes, the size, the run's budget.
            sizes = await asyncio.gather(*(imaging.pixel_work(imaging.stated_size, b)
                                           for b in blobs))
            self._count_pixels(sizes)
            decoded = await asyncio.gather(*(imaging.pixel_work(self._decode, b, u, item.index, n,
                                                                flags is None)
                                             for n, (b, u) in enumerate(zip(blobs, urls))))
        except imaging.TooManyPixels as exc:
            raise refused(f"a result image claims {exc} pixels, more than the "
                          f"{imaging.MAX_RESULT_PIXELS // 1_000_000} MP the pack decodes, "
                          f"so it was refused before decoding; ask for a smaller output "
                          f"size") from None
        except imaging.UnsupportedFormat as exc:
            raise refused(f"a result file is {exc}, which the pack does not open (it opens "
                          f"{FORMATS_OPENED}), so it was refused before decoding; choose "
                          f"PNG or JPEG as output_format where the endpoint has one, and "
                          f"check base_url if it persists") from None
        except svg.SvgRefused as exc:
            raise refused(f"{exc}, so it was not drawn; {exc.fix}") from None
        except (OSError, ValueError, Image.DecompressionBombError):
            # PIL.UnidentifiedImageError is an OSError
            raise refused("fal sent a result file that is not a readable image; run the node "
                          "again") from None
        if flags is None:   # no usable flags from fal: each image was looked at
            flags = [FLAGGED_BLACK if black else NOT_FLAGGED_NO_FLAGS for _, _, black in decoded]
        files = [file for file, _, _ in decoded]
        item.blobs = files
        alphas = extra = None
        if self.endpoint.takes_arguments:
            alphas = list(await asyncio.gather(*(imaging.pixel_work(imaging.decode_alpha, b)
                                                 for b in files)))
            extra = without_image_payloads(result, self.endpoint.output_field)
            extra.update(svg_texts(blobs))
        notes = [note for blob in blobs if imaging.result_format(blob) == "SVG"
                 and (note := svg.scaled_note(blob, imaging.MAX_RESULT_PIXELS))]
        return ItemResult([None] * len(files), urls, flags,
                          _first_seed(result.get("seed"), item.payload.get("seed")),
                          item.request_id, alphas, extra,
                          files=files, sizes=[size for _, size, _ in decoded], notes=notes)

    def _count_pixels(self, sizes: list[tuple[int, int]]) -> None:
        """Add one item's result images (from their headers) to the run's pixels; refused
        past MAX_RUN_PIXELS before any of them is decoded."""
        self.pixels += sum(width * height for width, height in sizes)
        if self.pixels > MAX_RUN_PIXELS:
            raise refused(f"this run's result images come to {self.pixels / 1e6:,.0f} MP, "
                          f"more than the {MAX_RUN_PIXELS // 1_000_000} MP one run decodes, so "
                          f"they were refused before decoding; ask for fewer or smaller "
                          f"images, or split the batch over several runs")

    def _decode(self, blob: bytes, url: str, index: int, n: int,
                look_for_black: bool = False) -> tuple[bytes, tuple[int, int], bool]:
        """Check one result file by decoding it (in a worker thread), remember its URL by
        its pixels (a result fed into another fal node is then sent by URL, not uploaded
        again), put the pixels in their place in the node's output batch, and return the
        file to keep (a file padded far past its pixels is kept as those pixels) with the
        frame's size, and (if asked) whether it is all black. The decoded pixels are not
        kept beyond that."""
        frame = imaging.decode(blob)
        caches.remember_upload(self.server, imaging.pixel_digest(frame), url)
        if self.batch is not None:
            self.batch.offer(index, n, frame)
        black = look_for_black and imaging.is_black(frame)
        return as_stored(blob, frame), (frame.shape[0], frame.shape[1]), black

    async def _download(self, url: str) -> bytes:
        import httpx

        if url.startswith("data:"):
            if len(url) > MAX_FILE_BYTES * 4 // 3 + 1024:
                raise refused(_too_big("an inline result", MAX_FILE_BYTES))
            blob = imaging.decode_data_uri(url)
            self._count(len(blob))
            return blob
        delay = 0.2
        for attempt in range(1, DOWNLOAD_ATTEMPTS + 1):
            try:
                async with self.http.stream("GET", url) as response:
                    if response.status_code in RETRY_STATUSES and attempt < DOWNLOAD_ATTEMPTS:
                        raise httpx.HTTPStatusError("retry", request=response.request,
                                                    response=response)
                    response.raise_for_status()
                    return await self._read_capped(response, url)
            except (httpx.TransportError, httpx.HTTPStatusError) as exc:
                retryable = isinstance(exc, httpx.TransportError) or \
                    exc.response.status_code in RETRY_STATUSES
                if not retryable or attempt == DOWNLOAD_ATTEMPTS:
                    raise
                await asyncio.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    async def _read_capped(self, response: Any, url: str) -> bytes:
        """The body, refused as soon as it (decompressed) passes the caps."""
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_FILE_BYTES:
            raise refused(_too_big(f"the result file from {_where(url)}", MAX_FILE_BYTES))
        chunks, size = [], 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > MAX_FILE_BYTES:
                raise refused(_too_big(f"the result file from {_where(url)}",
                                          MAX_FILE_BYTES))
            self._count(len(chunk))
            chunks.append(chunk)
        return b"".join(chunks)

    def _count(self, size: int) -> None:
        self.downloaded += size
        if self.downloaded > MAX_RUN_BYTES:
            raise refused(_too_big("this run's result files together", MAX_RUN_BYTES))


def _where(url: str) -> str:
    return urlsplit(url).netloc or url[:40]


def _too_big(what: str, limit: int) -> str:
    return (f"{what} passed {limit >> 20} MiB, so it was refused while downloading; ask for "
            f"fewer or smaller images")


def read_flags(flags: Any, count: int, endpoint: Endpoint) -> list[bool] | None:
    """fal's NSFW flags, one per image; None where an endpoint that reports them sent
    anything but a list of `count` booleans: fal said nothing usable, so the images are
    looked at instead (an all-black one counts as flagged; see FLAGGED_BLACK)."""
    if not endpoint.nsfw_field:
        return [False] * count
    if isinstance(flags, list) and len(flags) == count and \
            all(isinstance(flag, bool) for flag in flags):
        return list(flags)
    return None


def read_seed(seed: Any) -> int | None:
    """The seed fal reports; None for one that is not a finite number (NaN, Infinity), so
    a paid result is kept rather than lost to a conversion error."""
    if isinstance(seed, bool) or not isinstance(seed, (int, float)):
        return None
    if isinstance(seed, float) and not math.isfinite(seed):
        return None
    return int(seed)


def _first_seed(*candidates: Any) -> int | None:
    for candidate in candidates:
        seed = read_seed(candidate)
        if seed is not None:
            return seed
    return None


def without_image_payloads(result: dict[str, Any], output_field: str) -> dict[str, Any]:
    """fal's answer minus its images (they are the node's images and urls outputs), with any
    inline file (a data URI) cut to its type: what is left is text, numbers, boxes..."""
    def clean(value: Any) -> Any:
        if isinstance(value, str) and value.startswith("data:"):
            return value[:value.find(",") + 1] + "…"
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value
    return {k: clean(v) for k, v in result.items() if k != output_field}


def svg_texts(blobs: list[bytes]) -> dict[str, list[str]]:
    """{"svg": [the text of each SVG result file]} where there are any: the SVG itself
    goes on in result_json (the IMAGE output holds it drawn)."""
    texts = [blob.decode("utf-8", "replace") for blob in blobs
             if imaging.result_format(blob) == "SVG"]
    return {"svg": texts} if texts else {}


class Assembled:
    """What the node outputs, before status and costs are added."""

    def __init__(self, images: torch.Tensor, urls: list[str], notes: list[str],
                 masks: torch.Tensor | None = None, results: list[dict] | None = None) -> None:
        self.images = images
        self.urls = urls
        self.notes = notes
        self.masks = masks          # 1 - alpha per image, as ComfyUI's Load Image makes it
        self.results = results      # each item's answer without image payloads


class OutputBatch:
    """The node's IMAGE batch, filled while the results arrive.

    Each fresh frame is copied into its slot as soon as it is decoded (on a pixel thread),
    so when the last result lands only its own frame is left to convert, and no frame is
    decoded twice. Slots follow the items in input order, as many per item as it asked
    for; the batch takes the size of the first frame that arrives. `assemble` uses it when
    the answer fits that layout (every image arrived, none dropped, the first item's size)
    and otherwise builds the batch afresh from the kept files."""

    def __init__(self, items: list[WorkItem], endpoint: Endpoint) -> None:
        self.slots: dict[int, range] = {}       # item index -> the slots set aside for it
        total = 0
        for item in items:
            expected = endpoint.expected_images(item.payload)
            self.slots[item.index] = range(total, total + expected)
            total += expected
        self.total = total
        self.tensor: torch.Tensor | None = None
        self.placed: set[int] = set()
        self._lock = threading.Lock()

    def slot(self, index: int, n: int) -> int:
        """Frame n of item `index`'s slot, or -1: an "up to" count that brought more than
        expected has no slot, and the batch is then built afresh."""
        slots = self.slots.get(index, range(0))
        return slots[n] if n < len(slots) else -1

    def offer(self, index: int, n: int, frame: np.ndarray) -> None:
        """Frame n of item `index` into its slot, if it has the batch's size (pixel thread).
        No batch is set aside that would pass MAX_RUN_PIXELS (assemble then refuses it)."""
        slot = self.slot(index, n)
        if slot < 0 or self.total * frame.shape[0] * frame.shape[1] > MAX_RUN_PIXELS:
            return
        with self._lock:
            if self.tensor is None:
                # Made on a pixel thread: ComfyUI runs nodes under torch.inference_mode(),
                # which is per thread, and a tensor made under it can't be written from here.
                self.tensor = torch.empty((self.total, *frame.shape[:2], 3),
                                          dtype=torch.float32)
            tensor = self.tensor
        if tuple(frame.shape[:2]) != tuple(tensor.shape[1:3]):
            return
        fill(tensor[slot], frame)
        with self._lock:
            self.placed.add(slot)

    def take(self, slots: list[int], height: int, width: int) -> torch.Tensor | None:
        """The filled batch if the output is exactly its slots in order at its size, else
        None (and it is let go, so a batch built afresh is not held beside it)."""
        tensor, self.tensor = self.tensor, None
        if tensor is None or slots != list(range(self.total)) or \
                tuple(tensor.shape[1:3]) != (height, width):
            return None
        return tensor


async def assemble(items: list[WorkItem], settings: FalSettings,
                   fail: Callable[[str], Exception],
                   batch: OutputBatch | None = None) -> Assembled:
    """Every item's frames as one batch in input order, or `fail(cause)` naming what is missing.
    Frames already placed in `batch` as they arrived stay there; the rest are decoded (or
    taken) straight into their place, on the pixel threads, so the decoded frames of a
    batch are never all held beside the batch."""
    total = len(items)
    notes: list[str] = []
    for item in items:   # after encoding: max_bytes may have shrunk an image too
        for img in item.images:
            if img.downscaled_from:
                notes.append(f"input {img.downscaled_from[0]}x{img.downscaled_from[1]} "
                             f"downscaled to {img.size[0]}x{img.size[1]} to fit the "
                             f"endpoint's limits")
        notes.extend(item.result.notes or [] if item.result is not None else [])
    failed = [i for i in items if i.error is not None or i.result is None]
    if failed:
        first = failed[0]
        error = first.error.refusal if isinstance(first.error, AccountRefused) else first.error
        cause = (str(error) if isinstance(error, ItemFailed)
                 else translate(error, settings.key.label)
                 if error is not None else "no result arrived")
        which = items_phrase([i.index for i in failed], total)
        kept = total - len(failed)
        tails = []
        unsent = sum(1 for i in failed if isinstance(i.error, AccountRefused))
        if unsent:
            tails.append(f"{unsent} of them {'was' if unsent == 1 else 'were'} not sent, as fal "
                         f"would refuse {'it' if unsent == 1 else 'them'} the same way")
        lost = sum(i.lost_submits for i in items)
        if lost:
            tails.append(lost_answers_phrase(lost))
        if kept:
            tails.append(f"{kept} of {total} arrived and are kept, so a rerun with the same "
                         f"inputs only pays for the failed ones")
        tail = f" ({', '.join(tails)})" if tails else ""
        raise fail(f"{which} failed — {cause}{tail}")

    chosen: list[tuple[ItemResult, int]] = []
    slots: list[int] = []               # each chosen frame's slot in `batch`
    alphas: list[np.ndarray | None] = []
    urls: list[str] = []
    reported: list[str] = []            # flagged by fal
    black: list[str] = []               # no flags from fal, and all black
    unflagged: list[str] = []           # no flags from fal, and not black
    for item in items:
        result = item.result
        assert result is not None
        count = len(result.urls)
        item_alphas = result.alphas or [None] * count
        for n, (url, flag, alpha) in enumerate(zip(result.urls, result.flagged, item_alphas)):
            where = f"item {item.index + 1}" + (f" image {n + 1}" if count > 1 else "")
            if flag == NOT_FLAGGED_NO_FLAGS:   # (False == '' is false)
                unflagged.append(where)
            if flag:
                (black if flag == FLAGGED_BLACK else reported).append(where)
                if settings.nsfw_policy == "drop flagged":
                    continue
            chosen.append((result, n))
            slots.append(batch.slot(item.index, n) if batch else -1)
            alphas.append(alpha)
            urls.append(url)
    if unflagged:
        notes.append(f"fal's answer carried no NSFW flags for {', '.join(unflagged)}; not "
                     f"all black, so passed on as not flagged")
    if reported or black:
        what = nsfw_cause(reported, black)
        if settings.nsfw_policy == "error":
            raise fail(f"{what}; change the prompt or seed, or set the NSFW policy in fal "
                       f"Settings to keep or drop flagged images")
        if not chosen:
            raise fail(f"{what}, and the NSFW policy drops flagged results, so nothing is "
                       f"left to output; change the prompt or seed")
        verb = "dropped" if settings.nsfw_policy == "drop flagged" else "kept"
        notes.append(f"{verb} NSFW-flagged {', '.join(reported + black)}")

    height, width = chosen[0][0].size(chosen[0][1])
    if len(chosen) * height * width > MAX_RUN_PIXELS:
        raise fail(f"the {len(chosen)} results would make a {len(chosen)} x {width}x{height} "
                   f"IMAGE batch ({len(chosen) * height * width / 1e6:,.0f} MP), more than the "
                   f"{MAX_RUN_PIXELS // 1_000_000} MP one run outputs (fal billed these "
                   f"requests); ask for fewer or smaller images, or split the batch over "
                   f"several runs")
    out = batch.take(slots, height, width) if batch is not None else None
    placed = batch.placed if out is not None and batch is not None else set()
    if out is None:
        # Made and filled on the pixel threads: ComfyUI runs nodes under
        # torch.inference_mode(), which is per thread, and a tensor made under it cannot
        # be written from another thread.
        out = await imaging.pixel_work(
            lambda: torch.empty((len(chosen), height, width, 3), dtype=torch.float32))
    resized = sum(await asyncio.gather(*(imaging.pixel_work(_place, out, i, result, n)
                                         for i, (result, n) in enumerate(chosen)
                                         if i not in placed)))
    if resized:
        notes.append(f"{resized} result(s) of another size were cropped and resized to "
                     f"{width}x{height} to form one batch")
    if not any(i.result.extra is not None for i in items):
        return Assembled(out, urls, notes)
    return Assembled(out, urls, notes, stack_masks(alphas, width, height),
                     [i.result.extra or {} for i in items])


def nsfw_cause(reported: list[str], black: list[str]) -> str:
    """What made results count as flagged: fal's flags, or (where fal sent none) an
    all-black image, which is what fal returns for a flagged result."""
    parts = []
    if reported:
        parts.append(f"fal flagged {', '.join(reported)} as NSFW (fal returns those as black "
                     f"images)")
    if black:
        parts.append(f"{', '.join(black)} came back all black and fal's answer carried no NSFW "
                     f"flags, so {'it counts' if len(black) == 1 else 'they count'} as "
                     f"flagged (fal returns a flagged result as a black image)")
    return " and ".join(parts)


def _place(out: torch.Tensor, i: int, result: ItemResult, n: int) -> bool:
    """Frame n of `result` into out[i] ([H,W,3] float), fitted as ComfyUI's Batch Images
    does if its size differs; True if it was."""
    slot = out[i]
    frame = result.frame(n)
    height, width = slot.shape[:2]
    fitted = frame.shape[:2] != (height, width)
    if fitted:
        frame = imaging.fit_like_batch_images(frame, width, height)
    fill(slot, frame)
    return fitted


def stack_masks(alphas: list[np.ndarray | None], width: int, height: int) -> torch.Tensor:
    """[B,H,W] float masks: 1 - alpha, as ComfyUI's Load Image makes them; an opaque
    result gives an empty (all-zero) mask. Resized like the images they belong to."""
    out = torch.zeros((len(alphas), height, width), dtype=torch.float32)
    for i, alpha in enumerate(alphas):
        if alpha is None:
            continue
        if alpha.shape != (height, width):
            alpha = imaging.fit_like_batch_images(np.repeat(alpha[..., None], 3, axis=2),
                                                  width, height)[..., 0]
        out[i] = 1.0 - torch.from_numpy(alpha.astype(np.float32)) / 255.0
    return out


def fill(slot: torch.Tensor, frame: np.ndarray) -> None:
    """An H x W x 3 uint8 frame into its [H,W,3] float slot of a batch, as 0..1 values."""
    slot.copy_(torch.from_numpy(frame)).div_(255.0)


def stack(frames: list[np.ndarray]) -> torch.Tensor:
    """Equal-sized uint8 frames -> one [B,H,W,3] float32 tensor, without an extra batch copy."""
    h, w = frames[0].shape[:2]
    out = torch.empty((len(frames), h, w, 3), dtype=torch.float32)
    for i, frame in enumerate(frames):
        fill(out[i], frame)
    return out


def items_phrase(indices: list[int], total: int) -> str:
    numbers = [str(i + 1) for i in indices]
    if len(numbers) == 1:
        return f"item {numbers[0]} of {total}"
    shown = ", ".join(numbers[:8]) + (", …" if len(numbers) > 8 else "")
    return f"items {shown} of {total}"
