"""Stage 3, queue: a complete payload -> fal's result JSON, through fal's queue.

Submit, watch the request's status until it completes (queue position and fal's
latest log line go to the item's status), then fetch the result. A request that
has been submitted can always be cancelled, so an interrupt or a timeout never
leaves a job running (and billed) unseen.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from typing import Any, Awaitable, Callable

from ..caches import caches
from ..concurrency import within
from .plan import WorkItem

log = logging.getLogger("comfyui_fal_edit")

# Polling, where the status stream cannot be used: a few quick looks, then fal-js's 0.5 s.
POLL_FIRST_S = 0.1
POLL_MAX_S = 0.5
# A status stream silent this long is checked once by a poll (fal pushes each change, but a
# long step can be quiet; a proxy that buffers the stream is silent until the end).
STREAM_SILENCE_S = 15.0
CANCEL_GRACE_S = 5.0
RESULT_ATTEMPTS = 3
# A journalled request older than this is submitted anew rather than picked up: fal keeps
# a request's result for a limited time, and a day-old job is not worth a surprise.
JOURNAL_MAX_AGE_S = 24 * 3600


def _stream_timeout():
    import httpx
    # Reads may wait as long as a job runs: the run's own deadline bounds them.
    return httpx.Timeout(10.0, read=None)


class ItemFailed(Exception):
    """An item failed for a reason the message already says in the user's words."""


class FalQueue:
    """fal's queue for one endpoint, as one run uses it."""

    def __init__(self, client: Any, endpoint_id: str, timeout_s: float, name: str, *,
                 on_sent: Callable[[WorkItem], Awaitable[None]] | None = None,
                 on_unsent: Callable[[WorkItem], Awaitable[None]] | None = None) -> None:
        self.client = client
        self.endpoint_id = endpoint_id
        self.timeout_s = timeout_s
        self.name = name                      # the node's display name, for the log
        self._said_fallback = False
        # Awaited right before each submit goes out (it may be billed from then on), and
        # when that submit provably never reached fal (its charge is taken back).
        self.on_sent = on_sent
        self.on_unsent = on_unsent

    async def run(self, item: WorkItem, payload: dict[str, Any]) -> dict[str, Any]:
        """Submit, wait for completion, return the result JSON."""
        await self._submit(item, payload)
        return await self.finish(item)

    async def finish(self, item: WorkItem) -> dict[str, Any]:
        """Wait for a submitted (or resumed) request to complete; return the result JSON."""
        await self._wait(item)
        return await again_on_5xx(lambda: fetch_result(item.handle, item))

    async def resume(self, item: WorkItem) -> bool:
        """Pick up this item's request if an earlier process submitted it and never saw it
        end (ComfyUI was killed mid-job): True if fal still knows it. A request fal no
        longer knows, or older than fal keeps results, is forgotten and submitted anew."""
        import fal_client

        entry = await asyncio.to_thread(caches.in_flight_request, item.key)
        if entry is None:
            return False
        endpoint_id, request_id, submitted = entry
        if endpoint_id != self.endpoint_id or time.time() - submitted > JOURNAL_MAX_AGE_S:
            await asyncio.to_thread(caches.note_over, item.key)
            return False
        handle = await self.client.get_handle(self.endpoint_id, request_id)
        try:
            await again_on_5xx(lambda: handle.status(with_logs=False))
        except fal_client.FalClientHTTPError as exc:
            if exc.status_code not in (404, 410):
                raise
            await asyncio.to_thread(caches.note_over, item.key)
            return False
        item.handle, item.request_id, item.state = handle, request_id, "resumed"
        log.info("%s: picking up request %s, submitted by an earlier run that did not see it "
                 "end", self.name, request_id)
        return True

    async def forget(self, item: WorkItem) -> None:
        """The item is over (answered, failed or cancelled): a later run must not resume it."""
        if item.handle is not None:
            await asyncio.to_thread(caches.note_over, item.key)

    async def cancel(self, items: list[WorkItem]) -> None:
        """Tell fal to stop every request that has not finished, so nothing more is billed."""
        live = [i for i in items if i.handle is not None and not i.finished and not i.cancel_sent]

        async def cancel(item: WorkItem) -> None:
            item.cancel_sent = True
            try:
                await within(item.handle.cancel(), CANCEL_GRACE_S)
                item.state = "cancelled"
            except Exception as exc:  # already finished, or fal unreachable
                log.info("%s: could not cancel request %s: %s", self.name, item.request_id,
                         type(exc).__name__)

        if live:
            await asyncio.gather(*(cancel(i) for i in live))

    async def _submit(self, item: WorkItem, payload: dict[str, Any]) -> None:
        import fal_client

        item.state = "submitting"
        if self.on_sent is not None:
            await self.on_sent(item)
        # Shielded: if the user interrupts mid-submit we still learn the request id,
        # so the job can be cancelled rather than run (and billed) unseen.
        submit = asyncio.ensure_future(self.client.submit(self.endpoint_id, payload))
        try:
            item.handle = await asyncio.shield(submit)
        except Exception as exc:
            if self.on_unsent is not None and never_reached_fal(exc):
                await self.on_unsent(item)
            if not isinstance(exc, fal_client.FalClientHTTPError):
                raise
            said = str(exc.message).lower()
            if exc.status_code == 404 and "application" in said and "not found" in said:
                raise ItemFailed(retired_sentence(self.endpoint_id)) from None
            raise
        except asyncio.CancelledError:
            try:
                item.handle = await within(submit, CANCEL_GRACE_S)
            except BaseException:
                pass
            raise
        item.request_id = item.handle.request_id
        item.state = "queued"
        await asyncio.to_thread(caches.note_submitted, item.key, self.endpoint_id,
                                item.request_id)

    async def _wait(self, item: WorkItem) -> None:
        """Until fal says the request completed: follow fal's status stream, where fal
        pushes each change; on any trouble with the stream, poll instead."""
        try:
            if await self._follow_stream(item):
                return
        except (_StreamUnusable, OSError, ValueError, LookupError) as exc:
            reason = str(exc) if isinstance(exc, _StreamUnusable) else type(exc).__name__
        else:
            reason = "it ended before the request completed"
        if not self._said_fallback:
            self._said_fallback = True
            log.debug("%s: fal's status stream is not usable here (%s); polling instead",
                      self.name, reason)
        await self._poll(item)

    async def _follow_stream(self, item: WorkItem) -> bool:
        """Show each status fal pushes; True once COMPLETED arrives, False if the stream ends
        first. A stream that stays silent is checked with one poll: if fal's status has
        moved on from what the stream last said, something (a buffering proxy) is holding
        the stream back."""
        import httpx

        events: asyncio.Queue = asyncio.Queue()
        reader = asyncio.create_task(self._read_stream(item, events))
        last = None
        try:
            while True:
                try:
                    status = await within(events.get(), STREAM_SILENCE_S)
                except asyncio.TimeoutError:
                    polled = await again_on_5xx(lambda: item.handle.status(with_logs=False))
                    if type(polled) is not type(last):
                        raise _StreamUnusable("it is held back: a poll is ahead of it")
                    continue
                if isinstance(status, BaseException):
                    raise status
                if status is None:
                    return False
                last = status
                self._show(item, status)
                if _is_completed(status):
                    return True
        except httpx.HTTPError as exc:
            raise _StreamUnusable(type(exc).__name__) from None
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)

    async def _read_stream(self, item: WorkItem, events: asyncio.Queue) -> None:
        """Parse fal's server-sent events into statuses; None marks the stream's end."""
        handle = item.handle
        try:
            async with handle.client.stream(
                    "GET", handle.status_url + "/stream", params={"logs": "1"},
                    headers={"Accept": "text/event-stream"},
                    timeout=_stream_timeout()) as response:
                kind = response.headers.get("content-type", "")
                if response.status_code in (401, 403):
                    # The key itself was refused: polling would be refused too.
                    await response.aread()
                    _raise_like_fal(response)
                if response.status_code != 200 or "text/event-stream" not in kind:
                    raise _StreamUnusable(f"it answered {response.status_code} {kind}".strip())
                data: list[str] = []
                async for line in response.aiter_lines():
                    if line.startswith("data:"):
                        data.append(line[5:].strip())
                    elif not line and data:
                        events.put_nowait(_parse_status(json.loads("\n".join(data))))
                        data = []
            events.put_nowait(None)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            events.put_nowait(exc)

    async def _poll(self, item: WorkItem) -> None:
        """Ask for the request's status until it completed, fal-js's way: every 0.5 s once
        the first quick looks have passed."""
        submitted = time.monotonic()
        deadline = submitted + self.timeout_s
        interval = POLL_FIRST_S
        while True:
            status = await again_on_5xx(lambda: item.handle.status(with_logs=True))
            self._show(item, status)
            if _is_completed(status):
                return
            if time.monotonic() > deadline:
                await self.cancel([item])
                raise ItemFailed(f"did not finish within {self.timeout_s:g}s and was "
                                 f"cancelled; raise the timeout in fal Settings")
            await asyncio.sleep(interval)
            interval = min(POLL_MAX_S, interval * 1.5)

    @staticmethod
    def _show(item: WorkItem, status: Any) -> None:
        """A status from fal -> the item's state and detail in the node's status text."""
        import fal_client

        if isinstance(status, fal_client.Queued):
            item.state, item.detail = "queued", f"position {status.position + 1}"
        elif isinstance(status, fal_client.InProgress):
            if item.state != "running":
                item.state, item.started = "running", time.monotonic()
            item.detail = last_log(status.logs) or item.detail
        elif isinstance(status, fal_client.Completed):
            # fal reports app failures here; the result call answers with the details.
            item.detail = str(status.error) if status.error else ""


def never_reached_fal(exc: BaseException) -> bool:
    """A submit that provably made no job on fal (so it can't be billed): the connection
    was never made (refused, DNS, TLS handshake), or fal's ingress answered with an error
    and no request id."""
    import fal_client
    import httpx

    if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
        return True
    if isinstance(exc, fal_client.FalClientHTTPError):
        headers = {k.lower() for k in (getattr(exc, "response_headers", None) or {})}
        return "x-fal-request-id" not in headers
    return False


def _raise_like_fal(response: Any) -> None:
    """Raise what fal-client raises for this error answer, so it is translated as usual."""
    import fal_client
    from fal_client import client as fc

    raise_for_status = getattr(fc, "_raise_for_status", None)
    if raise_for_status is not None:
        raise_for_status(response)
    raise fal_client.FalClientHTTPError(response.text, response.status_code,
                                        dict(response.headers), response=response)


class _StreamUnusable(Exception):
    """fal's status stream cannot be followed here; the message says why."""


def _is_completed(status: Any) -> bool:
    import fal_client
    return isinstance(status, fal_client.Completed)


def _parse_status(data: dict[str, Any]) -> Any:
    """One status object (the same JSON a status poll returns) -> fal-client's Status."""
    import fal_client

    state = data["status"]
    if state == "IN_QUEUE":
        return fal_client.Queued(position=int(data.get("queue_position") or 0))
    if state == "IN_PROGRESS":
        return fal_client.InProgress(logs=data.get("logs"))
    if state == "COMPLETED":
        return fal_client.Completed(logs=data.get("logs"), metrics=data.get("metrics") or {},
                                    error=data.get("error"), error_type=data.get("error_type"))
    raise ValueError(f"unknown status {state!r}")


async def fetch_result(handle: Any, item: WorkItem | None = None) -> Any:
    """The result of a request fal said has completed, in one GET: `handle.get()` would ask
    for the status once more first. Uses fal-client's own retrying request and its error
    type, so fal's errors are translated as everywhere else. What fal billed for it (the
    x-fal-billable-units header, on a result or an error answer) goes to the item."""
    import fal_client
    from fal_client import client as fc

    request = getattr(fc, "_async_maybe_retry_request", None)
    raise_for_status = getattr(fc, "_raise_for_status", None)
    if request is None or raise_for_status is None:   # a fal-client that changed inside
        return await handle.get()
    try:
        response = await request(handle.client, "GET", handle.response_url,
                                 timeout=getattr(fc, "QUEUE_POLL_TIMEOUT", 60.0))
    except fal_client.FalClientHTTPError as exc:   # an error answer may say what fal billed
        _note_bill(item, getattr(exc, "response_headers", None))
        raise
    _note_bill(item, response.headers)
    raise_for_status(response)
    return response.json()


def _note_bill(item: WorkItem | None, headers: Any) -> None:
    units = billable_units(headers)
    if item is not None and units is not None:
        item.billed_units = units


BILLABLE_UNITS_HEADER = "x-fal-billable-units"


def billable_units(headers: Any) -> float | None:
    """fal's billed quantity from an answer's headers; None when absent or not a finite,
    non-negative number (a malformed header is no bill: the estimate stays)."""
    if headers is not None and not hasattr(headers, "get"):
        return None
    text = headers.get(BILLABLE_UNITS_HEADER) if headers is not None else None
    try:
        units = float(text) if text is not None else None
    except ValueError:
        return None
    return units if units is not None and math.isfinite(units) and units >= 0 else None


def retired_sentence(endpoint_id: str) -> str:
    """fal answers 404 application-not-found for an endpoint it no longer serves: say so,
    and name catalogue endpoints that do the same job."""
    from .. import catalogue

    others = catalogue.alternatives(endpoint_id)
    instead = (f"; pick one that does the same job in a fal Image Endpoint node: "
               f"{', '.join(others)}" if others else
               "; pick a current endpoint in a fal Image Endpoint node")
    return f"fal retired `{endpoint_id}` (it answers: application not found){instead}"


async def again_on_5xx(call, attempts: int = RESULT_ATTEMPTS) -> Any:
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


def last_log(logs: Any) -> str:
    if isinstance(logs, list):
        for entry in reversed(logs):
            if isinstance(entry, dict) and entry.get("message"):
                return str(entry["message"]).strip()
    return ""
