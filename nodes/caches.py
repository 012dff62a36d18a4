"""What the pack remembers for the life of the ComfyUI process.

- Upload URLs by pixel digest: rerunning a graph on an unchanged image uploads
  nothing, and a fal result fed into another fal node is sent by its result URL.
- Results by request: every item that arrived is kept, so after a partial failure
  a rerun only pays for the items that failed.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np


@dataclass
class ItemResult:
    frames: list[np.ndarray]             # H x W x 3 uint8, in fal's order
    urls: list[str]
    flagged: list[bool]
    seed: int | None = None
    request_id: str | None = None

    @property
    def nbytes(self) -> int:
        return sum(f.nbytes for f in self.frames)


def request_key(endpoint_id: str, payload: dict, image_digests: list[str]) -> str:
    """Identity of a request: endpoint + payload with images named by their pixels
    (upload URLs change from run to run; pixels don't)."""
    canonical = json.dumps({"endpoint": endpoint_id, "payload": payload, "images": image_digests},
                           sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


class UploadCache:
    """(server, pixel digest) -> URL fal can read."""

    def __init__(self, max_entries: int = 4096) -> None:
        self._urls: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._max = max_entries
        self._lock = threading.Lock()

    def get(self, server: str, digest: str) -> str | None:
        with self._lock:
            url = self._urls.get((server, digest))
            if url is not None:
                self._urls.move_to_end((server, digest))
            return url

    def put(self, server: str, digest: str, url: str) -> None:
        if url.startswith("data:"):
            return  # inline results are not URLs fal can fetch cheaply
        with self._lock:
            self._urls[(server, digest)] = url
            self._urls.move_to_end((server, digest))
            while len(self._urls) > self._max:
                self._urls.popitem(last=False)

    def forget(self, server: str, digest: str) -> None:
        with self._lock:
            self._urls.pop((server, digest), None)

    def clear(self) -> None:
        with self._lock:
            self._urls.clear()


class ResultMemory:
    """request key -> ItemResult, least recently used dropped past a byte budget."""

    def __init__(self, max_bytes: int = 1 << 30) -> None:
        self._items: OrderedDict[str, ItemResult] = OrderedDict()
        self._bytes = 0
        self._max = max_bytes
        self._lock = threading.Lock()

    def get(self, key: str) -> ItemResult | None:
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
            return item

    def put(self, key: str, item: ItemResult) -> None:
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
            self._items[key] = item
            self._bytes += item.nbytes
            while self._bytes > self._max and len(self._items) > 1:
                _, dropped = self._items.popitem(last=False)
                self._bytes -= dropped.nbytes

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0


@dataclass
class Caches:
    uploads: UploadCache = field(default_factory=UploadCache)
    results: ResultMemory = field(default_factory=ResultMemory)

    def clear(self) -> None:
        self.uploads.clear()
        self.results.clear()


caches = Caches()
