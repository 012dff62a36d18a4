"""What the pack remembers, so the user never pays twice.

- Uploads by pixel digest: rerunning a graph on an unchanged image uploads
  nothing, and a fal result fed into another fal node is sent by its result URL.
- Results by request (endpoint + payload with images named by their pixels): the
  same node with the same inputs and seed never calls fal twice, and after a
  partial failure a rerun only pays for the items that failed.

Both live in memory for speed and in the owner's state store (state/): by default one
SQLite index with the result files beside it under ComfyUI's user directory, or Redis
shared by several workers, so they survive a restart. fal's URLs expire; the stored
files don't, so a cached result never depends on a URL that may be dead. Its size is the
owner's setting (server_settings.cache_max_gb), never a workflow's.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from . import state
from .state import ENV_CACHE_DIR, cache_directory  # noqa: F401
from .state.local import LocalStore as DiskStore  # noqa: F401  (its old name)

log = logging.getLogger("comfyui_fal_edit")
# fal keeps uploaded and result files for a while; after this we upload again
# rather than risk handing fal a dead URL.
UPLOAD_TTL_S = 24 * 3600


@dataclass
class ItemResult:
    # H x W x 3 uint8, in fal's order; None where the frame is kept only as its file in
    # `files` (a fresh result: it is decoded straight into the node's output batch, so a
    # batch's decoded frames and the batch itself are never all in memory at once).
    frames: list[np.ndarray | None]
    urls: list[str]
    flagged: list[bool | str]   # fal's NSFW flags; a str where fal sent none (results.py)
    seed: int | None = None
    request_id: str | None = None
    # fal Image Endpoint only: each frame's alpha (None where opaque) and the answer's
    # other JSON fields (no image payloads).
    alphas: list[np.ndarray | None] | None = None
    extra: dict | None = None
    files: list[bytes] | None = None             # the result files, where frames are None
    sizes: list[tuple[int, int]] | None = None   # (height, width) of each frame
    notes: list[str] | None = None               # what the status should say (a fresh result)

    def frame(self, n: int) -> np.ndarray:
        """Frame n, decoded from its file if it is not held decoded."""
        held = self.frames[n]
        if held is not None:
            return held
        from .imaging import decode
        assert self.files is not None
        return decode(self.files[n])

    def size(self, n: int) -> tuple[int, int]:
        """(height, width) of frame n, without decoding it."""
        held = self.frames[n]
        if held is not None:
            return held.shape[0], held.shape[1]
        assert self.sizes is not None
        return self.sizes[n]

    @property
    def nbytes(self) -> int:
        return sum(f.nbytes for f in self.frames if f is not None) + \
            sum(len(b) for b in self.files or []) + \
            sum(a.nbytes for a in self.alphas or [] if a is not None)


def request_key(endpoint_id: str, payload: dict, image_digests: list[str], server: str) -> str:
    """Identity of a request: the server that answers it (a result from one server never
    answers for another, so an emulator's or a stranger's result never comes back as
    fal's), endpoint, and payload with images named by their pixels (upload URLs change
    from run to run; pixels don't)."""
    canonical = json.dumps({"server": server, "endpoint": endpoint_id, "payload": payload,
                            "images": image_digests},
                           sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


class Caches:
    """Memory in front of the disk store; plus the requests in flight right now."""

    def __init__(self, memory_bytes: int = 1 << 30) -> None:
        self._results: OrderedDict[str, ItemResult] = OrderedDict()
        self._result_bytes = 0
        self._memory_bytes = memory_bytes
        self._uploads: dict[tuple[str, str], tuple[str, float]] = {}
        self._inflight: dict[str, concurrent.futures.Future] = {}
        self._lock = threading.Lock()

    @staticmethod
    def disk() -> state.StateStore:
        """The owner's state store (local files or Redis; it follows the environment)."""
        return state.store()

    def set_max_bytes(self, max_bytes: int | None) -> None:
        """Override the owner's cache size (tests); None goes back to it."""
        self.disk().max_bytes_override = max_bytes

    # uploads --------------------------------------------------------------
    def upload_url(self, server: str, digest: str) -> str | None:
        with self._lock:
            hit = self._uploads.get((server, digest))
        if hit is not None and hit[1] > time.time():
            return hit[0]
        url = self.disk().get_upload(server, digest)
        if url is not None:
            with self._lock:
                self._uploads[(server, digest)] = (url, time.time() + UPLOAD_TTL_S)
        return url

    def remember_upload(self, server: str, digest: str, url: str) -> None:
        if url.startswith("data:"):
            return  # inline results are not URLs fal can fetch
        with self._lock:
            self._uploads[(server, digest)] = (url, time.time() + UPLOAD_TTL_S)
        self.disk().put_upload(server, digest, url, UPLOAD_TTL_S)

    def forget_upload(self, server: str, digest: str) -> None:
        with self._lock:
            self._uploads.pop((server, digest), None)
        self.disk().forget_upload(server, digest)

    # results --------------------------------------------------------------
    def result(self, key: str) -> ItemResult | None:
        with self._lock:
            item = self._results.get(key)
            if item is not None:
                self._results.move_to_end(key)
                return item
        stored = self.disk().get_result(key)
        if stored is None:
            return None
        meta, blobs = stored
        from .imaging import decode, decode_alpha
        try:
            frames = [decode(b) for b in blobs]
            alphas = [decode_alpha(b) for b in blobs] if "extra" in meta else None
        except Exception:
            return None   # unreadable file: a miss
        item = ItemResult(frames, meta["urls"], meta["flagged"], meta.get("seed"),
                          meta.get("request_id"), alphas, meta.get("extra"))
        self._keep_in_memory(key, item)
        return item

    def remember_result(self, key: str, endpoint_id: str, item: ItemResult,
                        blobs: list[bytes] | None = None) -> None:
        self._keep_in_memory(key, item)
        if blobs is not None:
            blobs = [as_stored(blob, frame) if frame is not None else blob   # else: done
                     for blob, frame in zip(blobs, item.frames)]                # by collect
            exts = [_extension(b) for b in blobs]
            meta = {"urls": item.urls, "flagged": item.flagged, "seed": item.seed,
                    "request_id": item.request_id}
            if item.extra is not None:
                meta["extra"] = item.extra
            self.disk().put_result(key, endpoint_id, meta, blobs, exts)

    def _keep_in_memory(self, key: str, item: ItemResult) -> None:
        with self._lock:
            old = self._results.pop(key, None)
            if old is not None:
                self._result_bytes -= old.nbytes
            self._results[key] = item
            self._result_bytes += item.nbytes
            while self._result_bytes > self._memory_bytes and len(self._results) > 1:
                _, dropped = self._results.popitem(last=False)
                self._result_bytes -= dropped.nbytes

    # the journal of requests submitted and not yet answered ------------------
    # Written right after fal accepts a submit and dropped once the item is over, so a
    # run after a crash (ComfyUI killed mid-job), or another worker taking over the
    # request's lease, picks the job up instead of paying again. Only in the state store:
    # it exists for the process that comes after this one.
    def in_flight_request(self, key: str) -> tuple[str, str, float] | None:
        """(endpoint, request id, submitted at) of a request a run submitted and never saw end."""
        return self.disk().get_journal(key)

    def note_submitted(self, key: str, endpoint_id: str, request_id: str) -> None:
        self.disk().put_journal(key, endpoint_id, request_id)

    def note_over(self, key: str) -> None:
        self.disk().drop_journal(key)

    # one fal call per identical request, whichever prompt or item asks ------
    def claim(self, key: str) -> tuple[bool, concurrent.futures.Future]:
        """(True, future) for the caller that must call fal; (False, future) for one
        that should wait for it. Thread-safe: prompts run on their own loops."""
        with self._lock:
            future = self._inflight.get(key)
            if future is not None:
                return False, future
            future = concurrent.futures.Future()
            self._inflight[key] = future
            return True, future

    def release(self, key: str, result: ItemResult | None) -> None:
        with self._lock:
            future = self._inflight.pop(key, None)
        if future is not None and not future.done():
            future.set_result(result)

    def forget_memory(self) -> None:
        """Drop what is held in memory (what a ComfyUI restart does)."""
        with self._lock:
            self._results.clear()
            self._result_bytes = 0
            self._uploads.clear()

    def clear(self) -> None:
        self.forget_memory()
        with self._lock:
            self._inflight.clear()
        state.reset()


def as_stored(blob: bytes, frame: np.ndarray) -> bytes:
    """The file as fal sent it when it is no bigger than its pixels, else the pixels that
    were decoded from it (a small image padded with hundreds of MB is kept small)."""
    if len(blob) <= frame.nbytes + 65536:
        return blob
    from .imaging import png_bytes
    return png_bytes(frame)


def _extension(blob: bytes) -> str:
    if blob[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if blob[:3] == b"\xff\xd8\xff":
        return "jpg"
    if blob[:4] == b"RIFF" and blob[8:12] == b"WEBP":
        return "webp"
    return "bin"


caches = Caches()
