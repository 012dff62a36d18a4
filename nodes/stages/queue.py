"""Stage 3, queue: a complete payload -> fal's result JSON, through fal's queue.

Submit, watch the request's status until it completes (queue position and fal's
latest log line go to the item's status), then fetch the result. A request that
has been submitted can always be cancelled, so an interrupt or a timeout never
leaves a job running (and billed) unseen.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from .plan import WorkItem

log = logging.getLogger("comfyui_fal_edit")

POLL_FIRST_S = 0.1                         # learn of completion within 0.1 s...
POLL_MAX_S = 0.25                          # ...and within 0.25 s on long jobs,
POLL_FAST_FOR_S = 10.0                     # once they have run this long
CANCEL_GRACE_S = 5.0
RESULT_ATTEMPTS = 3


class ItemFailed(Exception):
    """An item failed for a reason the message already says in the user's words."""


class FalQueue:
    """fal's queue for one endpoint, as one run uses it."""

    def __init__(self, client: Any, endpoint_id: str, timeout_s: float, name: str) -> None:
        self.client = client
        self.endpoint_id = endpoint_id
        self.timeout_s = timeout_s
        self.name = name                      # the node's display name, for the log

    async def run(self, item: WorkItem, payload: dict[str, Any]) -> dict[str, Any]:
        """Submit, wait for completion, return the result JSON."""
        await self._submit(item, payload)
        await self._wait(item)
        return await again_on_5xx(item.handle.get)

    async def cancel(self, items: list[WorkItem]) -> None:
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

    async def _submit(self, item: WorkItem, payload: dict[str, Any]) -> None:
        item.state = "submitting"
        # Shielded: if the user interrupts mid-submit we still learn the request id,
        # so the job can be cancelled rather than run (and billed) unseen.
        submit = asyncio.ensure_future(self.client.submit(self.endpoint_id, payload))
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

    async def _wait(self, item: WorkItem) -> None:
        """Poll the request's status until fal says it completed."""
        import fal_client

        submitted = time.monotonic()
        deadline = submitted + self.timeout_s
        interval = POLL_FIRST_S
        while True:
            status = await again_on_5xx(lambda: item.handle.status(with_logs=True))
            if isinstance(status, fal_client.Queued):
                item.state, item.detail = "queued", f"position {status.position + 1}"
            elif isinstance(status, fal_client.InProgress):
                if item.state != "running":
                    item.state, item.started = "running", time.monotonic()
                item.detail = last_log(status.logs) or item.detail
            elif isinstance(status, fal_client.Completed):
                if status.error:
                    # fal reports app failures here; the result call answers with the details.
                    item.detail = str(status.error)
                break
            if time.monotonic() > deadline:
                await self.cancel([item])
                raise ItemFailed(f"did not finish within {self.timeout_s:g}s and was "
                                 f"cancelled; raise the timeout in fal Settings")
            await asyncio.sleep(interval)
            if time.monotonic() - submitted > POLL_FAST_FOR_S:
                interval = min(POLL_MAX_S, interval * 1.25)
        item.detail = ""


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
