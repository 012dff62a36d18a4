"""Stage 2, upload: each input image -> a URL fal can read.

An image fal already has (uploaded by an earlier run, or a fal result fed back in)
is sent by its remembered URL and not uploaded again; an image two items share is
uploaded once. The upload token is fetched while the first image is encoded.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from .. import imaging
from ..caches import caches
from ..spec import ImageLimits

log = logging.getLogger("comfyui_fal_edit")


class Uploads:
    """The uploads of one run: in flight, counted for the status line, remembered by pixels."""

    def __init__(self, client: Any, server: str, upload_format: str, limits: ImageLimits) -> None:
        self.client = client
        self.server = server                  # remembered URLs are valid for this server only
        self.upload_format = upload_format
        self.limits = limits
        self.started = 0
        self.done = 0
        self._in_flight: dict[str, asyncio.Task] = {}   # by pixel digest
        self._token: asyncio.Task | None = None
        self._remembering: set[asyncio.Task] = set()    # upload memory writes under way

    async def urls_for(self, images: list[imaging.PreparedImage]) -> list[tuple[str, bool]]:
        """(URL fal can read, whether it was remembered from an earlier run), per image."""
        return list(await asyncio.gather(*(self._url_for(img) for img in images)))

    async def forget(self, images: list[imaging.PreparedImage]) -> None:
        """fal could not read these remembered URLs: the next request uploads them again."""
        for img in images:
            await asyncio.to_thread(caches.forget_upload, self.server, img.digest)

    async def close(self) -> None:
        tasks = list(self._in_flight.values()) + ([self._token] if self._token else [])
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # Finished uploads are remembered even if the run was stopped: fal has the files.
        await asyncio.gather(*self._remembering, return_exceptions=True)

    async def _url_for(self, image: imaging.PreparedImage) -> tuple[str, bool]:
        # Off the loop: the lookup may wait on the cache's SQLite file.
        url = await asyncio.to_thread(caches.upload_url, self.server, image.digest)
        if url is not None:
            return url, True
        task = self._in_flight.get(image.digest)
        if task is None:
            self.started += 1
            task = asyncio.create_task(self._upload(image))
            self._in_flight[image.digest] = task
        return await asyncio.shield(task), False

    async def _upload(self, image: imaging.PreparedImage) -> str:
        digest = image.digest   # encode() may shrink the pixels; remember the input's identity
        if self._token is None and hasattr(self.client, "prefetch_upload_token"):
            # The upload token's round trip overlaps the encoding instead of following it.
            self._token = asyncio.create_task(self.client.prefetch_upload_token())
        fmt = self.upload_format
        data, mime = await imaging.pixel_work(imaging.encode, image, fmt, self.limits.max_bytes)
        image.release()       # a batch's pixels are never all held at once
        name = f"comfyui-{image.digest[:12]}.{'jpg' if fmt == 'jpeg' else 'png'}"
        url = await self.client.upload(data, mime, file_name=name)
        self.done += 1
        # Written to the upload memory beside the submit, not in front of it (a SQLite
        # write off the loop); close() waits for it.
        remembering = asyncio.create_task(
            asyncio.to_thread(caches.remember_upload, self.server, digest, url))
        self._remembering.add(remembering)
        remembering.add_done_callback(self._remembering.discard)
        return url
