"""The one runtime every fal node shares: one node call, from IMAGE in to IMAGE out.

An item's path, stage by stage (each stage a module in `stages/`):

  plan      widget values and IMAGE tensors -> work items, one per fal request
  (cache)   an item whose request was answered before is taken from the result cache
  upload    each image -> a URL fal can read (remembered images are not uploaded again)
  queue     submit to fal's queue, watch its status, fetch the result JSON
  results   download and decode the result files; then all items -> one IMAGE batch

`Run` drives the items through those stages concurrently under a bound, watches
ComfyUI's interrupt flag, reports status on the node, guards spending and keeps
the ledger. Nothing is lost: an item that fails fails the node with a sentence
naming it, and every item that arrived is remembered so a rerun only pays for the rest.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import socket
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from . import egress, imaging, server_settings, state
from .caches import caches, request_key
from .concurrency import budget, loop_clients, within
from .endpoints import Endpoint
from .errors import FalNodeError, redact
from .fal_transport import close_fal_client, fal_client_for_run, http_client, tls_context
from .host import host
from .pricing import (Estimate, LedgerEntry, Price, estimate, learned, ledger, price_for_guard,
                      price_refresh, prices)
from .settings import DEFAULT_SETTINGS, FalSettings, MissingKey, resolve_key
from .spec import InputProblem
from .stages.plan import WorkItem, build_payload, plan_items, with_image_urls
from .stages.queue import FalQueue, ItemFailed, timed_out_sentence, timing_phrase
from .stages.submit import lost_answers_phrase
from .stages.results import OutputBatch, ResultFiles, assemble
from .stages.upload import Uploads

log = logging.getLogger("comfyui_fal_edit")

WATCH_S = 0.25                             # interrupt flag and status cadence
STATUS_EVERY_S = 1.0
# A price refresh started by a run may finish this long after the run's own work; then it
# is cancelled with the run's loop (the next run or the server's start-up tries again).
PRICE_REFRESH_GRACE_S = 1.0
# A run's hold against the daily ceiling outlives its items' deadlines by this much, then
# expires (a worker that died mid-run must not keep the ceiling's headroom).
HOLD_GRACE_S = 120.0
# Single flight across workers: a request's lease lasts this long unless its holder renews
# it (every third of it); a worker waiting for another's answer looks this often.
LEASE_S = 10.0
LEASE_POLL_S = 0.2
# This worker, as the holder of leases (host, process, and a random part for restarts).
WORKER_ID = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
# The longest a run waits for a catalogue endpoint's price (within its own timeout_s): a
# price list that drips its answer must not hold the node.
PRICE_LOOKUP_S = 10.0


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
    billed_usd: float | None = None  # what fal billed (x-fal-billable-units); None: no bill came
    counted_usd: float = 0.0         # what counts against the ceilings: billed, else estimated
    masks: torch.Tensor | None = None      # catalogue endpoints: 1 - alpha per image
    results: list[dict] | None = None      # catalogue endpoints: answers without images


class Run:
    """One node execution."""

    def __init__(self, endpoint: Endpoint, settings: FalSettings, node_id: str | None) -> None:
        self.endpoint = endpoint
        self.settings = settings
        self.node_id = node_id
        self.name = endpoint.display_name
        self.items: list[WorkItem] = []
        self.key = ""
        self.destination = self.owner_default = egress.FAL
        self.hold: int | None = None     # what this run holds in the ledger until sent
        self.day_hold: str | None = None  # ... and against the daily ceiling, in the store
        self.server = ""                 # the destination's name: what caches are keyed on
        self.t0 = time.monotonic()
        self.last_status = 0.0
        self.prompt_id = host.prompt_id()
        self.uploads: Uploads | None = None
        self.queue: FalQueue | None = None
        self.results: ResultFiles | None = None
        self.cost = estimate(endpoint.endpoint_id, [], None)
        self.unit_price = None           # the endpoint's price as fal (or the owner's server) quotes it
        self._per_item: dict[int, float] = {}   # each pending item's estimate, by index
        self._resends: set[int] = set()          # ledger entries (by id) sent again after a lost answer

    # the run, top to bottom -----------------------------------------------
    async def execute(self, payload: dict[str, Any], image_inputs: list[Any]) -> RunOutcome:
        try:
            return await self._execute(payload, image_inputs)
        except state.StateUnavailable as exc:   # already a sentence naming the store
            raise self.fail(str(exc)) from None
        finally:
            self._release_inputs()

    async def _execute(self, payload: dict[str, Any], image_inputs: list[Any]) -> RunOutcome:
        try:
            self.items = plan_items(self.endpoint, payload, image_inputs, self.settings)
            # Every input named by its pixels (what caches and uploads go by), in parallel.
            await imaging.identify_all([img for item in self.items for img in item.images])
            # Where the requests (and the key) go: fal, or a server the owner allowed.
            self.destination, self.owner_default = await asyncio.to_thread(
                _destinations, self.settings.base_url)
            # Through a proxy the pack sends no key: the proxy adds its own. (Off the loop:
            # a named key is read from the key file.)
            self.key = await asyncio.to_thread(resolve_key, self.settings.key) \
                if self.destination.sends_key else ""
        except (InputProblem, MissingKey, egress.EgressRefused) as exc:
            raise self.fail(str(exc)) from None
        self.server = self.destination.name

        pending = await self._answer_from_cache()
        if pending and self.endpoint.takes_arguments and \
                prices.price(self.endpoint.endpoint_id, self.owner_default) is None:
            # A catalogue endpoint's price is asked for on first use: the estimate, the
            # spend guard and the ledger then cover it like the ten nodes' endpoints. Only
            # of fal or the owner's own server (never of one a workflow picked), under the
            # run's deadline and its Cancel.
            try:
                await self._watching(within(self._fetch_price(), min(
                    self.settings.timeout_s, PRICE_LOOKUP_S)))
            except asyncio.TimeoutError:   # a price list that answers too slowly: counted as
                pass                       # unpriced (pricing.UNPRICED) below
        self.cost = self._estimate(pending)
        # Off the loop: the owner's ceilings and today's spend are files, or on Redis.
        self.hold = await asyncio.to_thread(ledger.hold_if, self.prompt_id, self.cost.total,
                                            lambda: self._hold_day(len(pending)))
        try:
            if pending:
                await self._call_fal(pending)
        finally:
            ledger.release(self.hold)
            await asyncio.to_thread(_let_go, self.day_hold)

        # The frames are decoded into the batch on the pixel threads, off the loop; fresh
        # ones were placed as they arrived.
        answer = await assemble(self.items, self.settings, self.fail,
                                self.results.batch if self.results else None)
        outcome = self._outcome(answer.images, answer.urls, answer.notes)
        outcome.masks, outcome.results = answer.masks, answer.results
        self.report(force=True, final=outcome.status)
        return outcome

    def _release_inputs(self) -> None:
        """Let go of input pixels kept for uploads that did not happen (cached, failed,
        stopped): they count against a process-wide budget."""
        for item in self.items:
            for img in item.images:
                img.release()

    async def _answer_from_cache(self) -> list[WorkItem]:
        """Name each item's request; take remembered answers; return the items fal must do."""
        pending = []
        for item in self.items:
            digests = [img.digest for img in item.images]
            if self.endpoint.takes_arguments:   # several image fields: which image went where
                digests = [f"{name}:{d}" for (name, _), d in zip(item.targets or [], digests)]
            item.key = request_key(self.endpoint.endpoint_id, item.payload, digests, self.server)
            remembered = await asyncio.to_thread(caches.result, item.key) \
                if self.settings.cache == "use" else None
            if remembered is not None:
                item.result, item.cached, item.finished = remembered, True, True
                item.state = "from cache (no charge)"
                ledger.add(LedgerEntry(self.endpoint.endpoint_id, remembered.request_id or "",
                                       True, 0.0, self.prompt_id))
            else:
                pending.append(item)
        return pending

    async def _fetch_price(self) -> None:
        default = self.owner_default
        key = self.key if default == self.destination else \
            await asyncio.to_thread(_key_for, default, self.settings)
        await prices.fetch_one(key, default, self.endpoint.endpoint_id)

    async def _watching(self, work) -> Any:
        """Await `work`, stopping it when the user presses Cancel (ComfyUI's interrupt)."""
        task = asyncio.ensure_future(work)
        try:
            while True:
                done, _ = await asyncio.wait([task], timeout=WATCH_S)
                if done:
                    return task.result()
                if host.interrupted():
                    raise _InterruptRequested()
        finally:
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    def _estimate(self, pending: list[WorkItem]):
        # The payload, not only the count: the price rules read its inputs (num_images, style).
        asked = [(i.payload, i.megapixels) for i in pending]
        # Prices from fal or the owner's own server only: what the run's server quotes
        # never prices anything.
        self.unit_price = prices.price(self.endpoint.endpoint_id, self.owner_default)
        price = price_for_guard(self.unit_price)   # always counted
        cached = len(self.items) - len(pending)
        if price.source == "assumed" and pending:
            # Billed per second or in a vague unit (or unpriced): once fal has billed these
            # inputs, the last bill counts instead of the conservative UNPRICED.
            costs = [learned.last(self.endpoint.endpoint_id, i.payload, self.owner_default.name,
                                  input_megapixels(i))
                     for i in pending]
            if all(c is not None for c in costs):
                self._per_item = {i.index: c for i, c in zip(pending, costs)}
                return Estimate(round(sum(costs), 6), len(costs),
                                Price(max(costs), "request", "learned", "fal's last bill"),
                                cached)
        self._per_item = {i.index: estimate(self.endpoint.endpoint_id,
                                            [(i.payload, i.megapixels)], price).total
                          for i in pending}
        return estimate(self.endpoint.endpoint_id, asked, price, cached)

    def _hold_day(self, requests: int) -> None:
        self.day_hold = self._guard_spend(requests, self.cost.total)

    def _guard_spend(self, requests: int, usd: float, resend: bool = False) -> str:
        """Fail before any upload when `usd` more (this node's estimate, or a resend's)
        would take spending past a limit: the workflow's own (fal Settings), or the owner's
        ceilings on the server, which a workflow can only lower. What runs that passed the
        guard are about to spend counts as spent (the calls of a list input run at once).
        The daily ceiling is checked and held last, in one step of the state store: with
        Redis, every worker's runs count. Returns that hold's token. A `resend` (after a
        lost answer) that would pass a limit is not sent: ItemFailed, saying so."""
        owner = server_settings.load()
        prompt_spent = ledger.spent(self.prompt_id, held=True)
        limits = [(self.settings.max_usd_per_prompt, prompt_spent, "this prompt",
                   "raise max_usd_per_prompt in fal Settings (0 means no limit)"),
                  (self.settings.max_usd_per_session, ledger.spent(held=True), "this session",
                   "raise max_usd_per_session in fal Settings (0 means no limit)"),
                  (owner["max_usd_per_prompt"], prompt_spent, "this prompt",
                   "this ComfyUI's owner can raise the per-prompt ceiling in Settings → fal")]
        for limit, spent, scope, fix in limits:
            if limit > 0 and spent + usd > limit + 1e-9:
                raise self._over(usd, limit, spent, scope, fix, resend)
        # A run that dies keeps its hold no longer than its items could take.
        rounds = -(-requests // max(1, self.settings.concurrency)) if requests else 0
        expires = time.time() + HOLD_GRACE_S + rounds * max(self.settings.timeout_s, 60.0)
        try:
            return state.store().reserve(usd, owner["max_usd_per_day"], expires)
        except state.SpendFileUnreadable as exc:
            raise (ItemFailed if resend else self.fail)(
                f"the spend guard stopped this run before any upload: {exc}")
        except state.CeilingReached as exc:
            raise self._over(usd, owner["max_usd_per_day"], exc.spent, "today",
                             "this ComfyUI's owner can raise the daily ceiling in Settings → fal",
                             resend)

    def _over(self, usd: float, limit: float, spent: float, scope: str, fix: str,
              resend: bool = False) -> Exception:
        if resend:
            return ItemFailed(
                f"fal's answer to its submit was lost, and the spend guard did not send it "
                f"again: ${usd:.3f} more plus ${spent:.3f} spent or under way in {scope} "
                f"would pass the ${limit:.2f} limit; {fix}, or run again")
        return self.fail(
            f"the spend guard stopped this run before any upload: its estimate "
            f"${usd:.3f} plus ${spent:.3f} spent or under way in {scope} "
            f"would pass the ${limit:.2f} limit; {fix}, or make the batch smaller")

    async def _call_fal(self, pending: list[WorkItem]) -> None:
        """Run the pending items through upload, queue and results, within the process's
        budget of requests in flight, cancelling every fal request still running if the run
        is stopped. Clients are shared with the other calls on this loop (a list input)."""
        # Stale prices are refreshed alongside the work, never in front of it (one refresh
        # and one back-off for the whole process), from fal or the owner's own server: not
        # from a server a workflow picked, even an allowed one.
        pricing = price_refresh.start(self.key, self.destination) \
            if self.destination == self.owner_default else None
        async with loop_clients() as shared:
            # One client per key and destination: each sends only where its run may.
            identity = hashlib.sha256(f"{self.key}\n{self.server}".encode()).hexdigest()
            destination = self.destination
            client = await shared.get(("fal", identity),
                                      lambda: fal_client_for_run(self.key, destination),
                                      close_fal_client)
            http = await shared.get(("downloads", self.server),
                                    lambda: _download_client(destination), lambda c: c.aclose())
            self.uploads = Uploads(client, self.server, self.settings.upload_format,
                                   self.endpoint.limits)
            self.queue = FalQueue(client, self.endpoint.endpoint_id, self.settings.timeout_s,
                                  self.name, on_sent=self._on_sent, on_unsent=self._on_unsent)
            self.results = ResultFiles(http, self.server, self.endpoint, self.destination,
                                       OutputBatch(self.items, self.endpoint))
            tasks = [asyncio.create_task(self._run_item(item)) for item in pending]
            try:
                await self._supervise(tasks)
            except BaseException:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                await self.queue.cancel(pending)
                raise
            finally:
                await self.uploads.close()
                if pricing is not None:   # a task of this loop: it ends with it
                    await asyncio.wait([pricing], timeout=PRICE_REFRESH_GRACE_S)
                    pricing.cancel()

    async def _supervise(self, tasks: list[asyncio.Task]) -> None:
        """Wait for the items while watching ComfyUI's interrupt flag and reporting status."""
        self.report(force=True)
        remaining = set(tasks)
        while remaining:
            done, remaining = await asyncio.wait(remaining, timeout=WATCH_S)
            if host.interrupted():
                raise _InterruptRequested()
            self.report()

    # one item ---------------------------------------------------------------
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
            async with self._lease(item) as answered:
                if not answered:
                    try:
                        await self._call_for(item)
                    finally:   # out of the journal before the lease goes to another worker
                        if self.queue is not None:
                            await self.queue.forget(item)
        except state.StateUnavailable as exc:   # taking or waiting for the lease
            if not item.finished:
                item.error, item.state, item.finished = exc, "failed", True
        finally:
            caches.release(item.key, item.result)

    @asynccontextmanager
    async def _lease(self, item: WorkItem):
        """Single flight across workers sharing one state store: hold the request's lease
        while calling fal (renewed as long as this worker lives). While another worker
        holds it, wait for its answer in the result cache; if that worker dies, its lease
        expires, this one takes it over and picks the fal job up by the request id in the
        journal (FalQueue.resume). Yields True when another worker's answer was taken."""
        store = state.store()
        waited = False
        while not await asyncio.to_thread(store.acquire_lease, item.key, WORKER_ID, LEASE_S):
            if not waited:
                waited = True
                item.state = "waiting for another worker's identical request"
            if self.settings.cache == "use":
                found = await asyncio.to_thread(caches.result, item.key)
                if found is not None:
                    item.result, item.cached, item.finished = found, True, True
                    item.state = "from another worker (no charge)"
                    yield True
                    return
            await asyncio.sleep(LEASE_POLL_S)
        if waited and self.settings.cache == "use":
            # The holder may have answered just before letting go.
            found = await asyncio.to_thread(caches.result, item.key)
            if found is not None:
                item.result, item.cached, item.finished = found, True, True
                item.state = "from another worker (no charge)"
                await asyncio.to_thread(store.release_lease, item.key, WORKER_ID)
                yield True
                return
        renew = asyncio.create_task(self._renew_lease(store, item.key))
        try:
            yield False
        finally:
            renew.cancel()
            await asyncio.gather(renew, return_exceptions=True)
            try:
                await asyncio.to_thread(store.release_lease, item.key, WORKER_ID)
            except state.StateUnavailable:
                pass   # it expires on its own

    @staticmethod
    async def _renew_lease(store: state.StateStore, key: str) -> None:
        while True:
            await asyncio.sleep(LEASE_S / 3)
            try:
                await asyncio.to_thread(store.acquire_lease, key, WORKER_ID, LEASE_S)
            except state.StateUnavailable as exc:
                log.warning("%s", exc)

    async def _call_for(self, item: WorkItem) -> None:
        assert self.queue is not None
        try:
            async with budget.slot(self.settings.concurrency):
                item.deadline = time.monotonic() + self.settings.timeout_s
                try:
                    await within(self._stages(item), self.settings.timeout_s)
                except asyncio.TimeoutError:
                    raise ItemFailed(timed_out_sentence(item, self.settings.timeout_s)) from None
        except Exception as exc:  # recorded and reported together with the other items
            if item.handle is not None and item.result is None:
                await self.queue.cancel([item])   # don't leave a job running unseen
            elif item.handle is None:
                # fal refused the account before this item was queued (its upload or
                # submit): the loop's other items stay unsent.
                self.queue.note_failure(exc)
            item.error, item.state, item.finished = exc, "failed", True
        finally:
            await self._settle(item)

    async def _stages(self, item: WorkItem) -> None:
        """Upload, queue, results: one item, under one deadline (a stalled answer must not
        outlive timeout_s)."""
        assert self.results is not None
        result_json = await self._upload_and_queue(item)
        item.state = "downloading"
        item.result = await self.results.collect(item, result_json)
        await asyncio.to_thread(caches.remember_result, item.key,
                                self.endpoint.endpoint_id, item.result, item.blobs)
        item.blobs = None
        item.state, item.finished = "done", True

    async def _upload_and_queue(self, item: WorkItem) -> dict[str, Any]:
        """Upload (or reuse) the item's images and run it on fal.

        A remembered URL can be dead (fal expired the file early, or the base URL now
        points elsewhere); fal then answers 422 for the image field. Forget those
        URLs, upload again and retry once, rather than fail until the memory expires.
        """
        import fal_client

        assert self.uploads is not None and self.queue is not None
        if await self.queue.resume(item):
            return await self.queue.finish(item)
        self.queue.check_account()
        for attempt in (1, 2):
            item.state = "uploading"
            found = await self.uploads.urls_for(item.images)
            payload = with_image_urls(self.endpoint, item.payload, [url for url, _ in found],
                                      item.targets)
            try:
                return await self.queue.run(item, payload)
            except fal_client.FalClientHTTPError as exc:
                reused = [img for img, (_, remembered) in zip(item.images, found) if remembered]
                if attempt == 2 or exc.status_code != 422 or not reused or \
                        not any(s.field.split(".")[-1] in str(exc.message)
                                for s in self.endpoint.slots):
                    raise
                log.info("%s: fal could not read a remembered upload URL; uploading again",
                         self.name)
                await self.uploads.forget(reused)
                item.handle = item.request_id = None
        raise AssertionError("unreachable")

    # the ledger: a request counts from the moment it is sent -------------------
    def _request_estimate(self, item: WorkItem) -> float:
        """One request's estimate, as the run's estimate counted it."""
        if item.index in self._per_item:
            return self._per_item[item.index]
        return estimate(self.endpoint.endpoint_id, [(item.payload, item.megapixels)],
                        price_for_guard(self.unit_price)).total

    async def _on_sent(self, item: WorkItem) -> None:
        """A submit is about to go out: from now on fal may bill it, whatever becomes of
        its answer, so it is entered at its estimate in the ledger and today's spend. The
        file first: until the ledger takes it over, the run's hold still counts it."""
        entry = LedgerEntry(self.endpoint.endpoint_id, "", False, self._request_estimate(item),
                            self.prompt_id)
        # A bill fal sent for the item's previous request (an error answer before a resubmit)
        # is that request's, not the next one's.
        previous = item.charges[-1] if item.charges else None
        change = self._bill(previous, item) if previous is not None else 0.0
        item.billed_units = None
        if change:   # that request's bill: today's spend only, not this run's hold
            await asyncio.to_thread(state.store().charge, None, change)
            await asyncio.to_thread(self._note, previous)
        hold, day_hold = self.hold, self.day_hold
        if previous is not None:
            # Sent again after a lost answer: a second request fal may bill, which the run's
            # hold (one request per item) does not cover. It must fit the ceilings itself.
            tokens: list[str] = []
            hold = await asyncio.to_thread(
                ledger.hold_if, self.prompt_id, entry.estimated_usd,
                lambda: tokens.append(self._guard_spend(1, entry.estimated_usd, resend=True)))
            day_hold = tokens[0]
            self._resends.add(id(entry))
        try:
            await asyncio.to_thread(state.store().charge, day_hold, entry.estimated_usd)
            item.charges.append(entry)
            ledger.enter_sent(entry, hold)
        finally:
            if previous is not None:
                ledger.release(hold)
                await asyncio.to_thread(_let_go, day_hold)
        await asyncio.to_thread(self._note, entry)

    async def _on_unsent(self, item: WorkItem) -> None:
        """That submit provably never reached fal: its charge is taken back."""
        if not item.charges:
            return
        entry = item.charges.pop()
        # A resend's own hold was let go once it was sent: nothing of the run's to give back.
        resend = id(entry) in self._resends
        ledger.take_back(entry, None if resend else self.hold)
        await asyncio.to_thread(state.store().charge, None if resend else self.day_hold,
                                -entry.estimated_usd)

    async def _settle(self, item: WorkItem) -> None:
        """The item is over: its last submit gets the request id, and what it counts
        becomes what fal made of it: for an "up to" count (Seedream's max_images), the
        images that came back."""
        if item.cached:
            return
        resumed = not item.charges and bool(item.request_id)
        if resumed:
            # Picked up from an earlier process, which counted it when it sent it.
            item.charges.append(LedgerEntry(self.endpoint.endpoint_id, item.request_id, False,
                                            self._request_estimate(item), self.prompt_id))
            ledger.add(item.charges[-1])
        if not item.charges:
            return
        entry = item.charges[-1]
        entry.request_id = item.request_id or entry.request_id
        entry.queue_s, entry.run_s = getattr(item, "queue_s", None), getattr(item, "run_s", None)
        before = entry.counted_usd
        # Like a bill, the images an answer brought lower what it counts only when the
        # answer is fal's or the owner's own server's, never one a workflow picked.
        if item.result is not None and self.destination == self.owner_default:
            most = self.endpoint.most_images(item.payload)
            came = min(len(item.result.urls), most)
            entry.estimated_usd = round(entry.estimated_usd * came / most, 6)
        change = entry.counted_usd - before          # an "up to" count that brought fewer
        change += self._bill(entry, item)            # fal's bill, where it sent one
        if resumed:
            # What the earlier process entered in today's spend for it is not known here (its
            # price may have been another): fal's bill is added in full, so the day counts at
            # least what fal billed, never less.
            change = entry.billed_usd or 0.0
        item.cost = sum(c.estimated_usd for c in item.charges)
        try:
            if change:   # kept by the store until it is back
                await asyncio.to_thread(state.store().charge, None, change)
            await asyncio.to_thread(self._note, entry)
        except state.StateUnavailable as exc:
            log.warning("%s", exc)

    def _bill(self, entry: LedgerEntry, item: WorkItem) -> float:
        """fal's bill for `entry`'s request, if it sent one (its billable units times the
        endpoint's unit price), replaces its estimate; returns the change in what it counts.

        Only a bill from fal, or from the server the owner sends every run to, is believed:
        like a price, a bill from a server a workflow picked (even an allowed one) could say
        0 units and take the request out of the owner's ceilings; its estimate stays."""
        if item.billed_units is None or self.unit_price is None or \
                self.destination != self.owner_default:
            return 0.0
        before = entry.counted_usd
        entry.billed_units = item.billed_units
        entry.billed_usd = round(item.billed_units * self.unit_price.unit_price, 6)
        # What such a unit costs is learned, from a request that made what it was asked
        # for: a failed one's bill (often 0) says nothing of what the next one costs.
        if not self.unit_price.countable and item.result is not None and entry.billed_usd > 0:
            learned.note(self.endpoint.endpoint_id, item.payload, entry.billed_usd,
                         self.owner_default.name, input_megapixels(item))
        return entry.counted_usd - before

    def _note(self, entry: LedgerEntry) -> None:
        """The request's row in the fleet's ledger (Redis: every worker's requests today)."""
        state.store().note_request(f"{WORKER_ID}:{id(entry)}", {
            "endpoint": entry.endpoint_id, "request_id": entry.request_id,
            "estimated_usd": entry.estimated_usd, "billed_usd": entry.billed_usd,
            "prompt_id": entry.prompt_id, "at": entry.at, "worker": WORKER_ID})

    # the node's answer and status ------------------------------------------
    def _outcome(self, images: torch.Tensor, urls: list[str], notes: list[str]) -> RunOutcome:
        total = len(self.items)
        cached = sum(1 for i in self.items if i.cached)
        first_seed = self.items[0].result.seed if self.items[0].result else None
        summary = f"done in {time.monotonic() - self.t0:.1f}s · {images.shape[0]} image(s)"
        lost = sum(i.lost_submits for i in self.items)
        if lost:   # first: the panel shows one line, and this is about money
            summary += f" · {lost_answers_phrase(lost)}"
        spent = sum(i.cost for i in self.items)
        # fal's bill first, then the estimate beside it (the node shows the first line's start).
        charges = [c for i in self.items for c in i.charges]
        billed = [c.billed_usd for c in charges if c.billed_usd is not None]
        if charges:
            summary += " · " + billed_phrase(sum(billed), len(billed), len(charges))
        if self.cost.price is not None and total > cached:
            if spent < self.cost.total - 1e-9:   # an "up to" count brought fewer images
                summary += (f" · ≈ ${spent:.3f} for the images fal made (≈ "
                            f"${self.cost.total:.3f} if it had made all it was allowed)")
            else:
                summary += " · " + self.cost.describe()
        if cached:
            summary += f" · {cached} of {total} from cache (no charge)"
        if timing := timing_phrase(self.items):
            summary += f" · {timing}"
        request_ids = [i.result.request_id or "" for i in self.items if i.result]
        return RunOutcome(
            images, first_seed if first_seed is not None else -1, urls, request_ids, notes,
            status="\n".join([summary] + notes), estimated_usd=spent, items=total,
            cached_items=cached,
            megapixels=round(sum(i.megapixels for i in self.items) / total, 4),
            billed_usd=round(sum(billed), 6) if billed else None,
            counted_usd=round(sum(c.counted_usd for c in charges), 6))

    def status_text(self, final: str | None = None) -> str:
        total = len(self.items)
        done = sum(1 for i in self.items if i.result is not None)
        elapsed = time.monotonic() - self.t0
        head = final or f"{done}/{total} done · {elapsed:.1f}s"
        uploads = self.uploads
        if final is None and uploads is not None and uploads.done < uploads.started:
            head += f" · uploading {uploads.done + 1} of {uploads.started}"
        if final is None and total:
            lines = []
            for item in self.items:
                if item.finished:
                    continue
                text = f"#{item.index + 1} {item.state}"
                if item.started and item.state == "running":
                    text += f" {time.monotonic() - item.started:.1f}s"
                    if item.queue_s is not None:
                        text += f" (queued {item.queue_s:.1f}s)"
                elif item.submitted_at and item.state == "queued":
                    text += f" {time.monotonic() - item.submitted_at:.1f}s"
                if item.detail:
                    text += f" · {item.detail[:60]}"
                if item.lost_submits:
                    text += f" · {lost_answers_phrase(item.lost_submits)}"
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


def billed_phrase(billed_usd: float, billed: int, sent: int) -> str:
    """What fal billed, beside the estimate: "billed $0.060 by fal", or which part of the
    requests fal's bill covers; "estimate" where fal sent none."""
    if not billed:
        return "billed: estimate (fal sent no bill)"
    # Fractions of a cent (per-second bills) keep their figures: $0.0018, not $0.002.
    usd = f"${billed_usd:.3f}" if billed_usd >= 0.01 or billed_usd == 0 else f"${billed_usd:.2g}"
    if billed == sent:
        return f"billed {usd} by fal"
    return f"billed {usd} by fal for {billed} of {sent} requests (the rest: estimate)"


def _destinations(base_url: str) -> tuple[egress.Destination, egress.Destination]:
    """(where this run goes, where the owner sends runs that name no server). Reads the
    owner's settings; run in a worker thread, which also reads what the run needs from disk
    the first time (the price file, the TLS certificates), so the loop never waits on it."""
    default = egress.owner_default()
    prices.fresh(default)
    tls_context()
    return egress.resolve(base_url), default


def _key_for(destination: egress.Destination, settings: FalSettings) -> str | None:
    """The key to ask `destination` (the owner's default) for a price: none through a
    proxy; the run's key otherwise, if it has one (read from the key file: a worker thread)."""
    if not destination.sends_key:
        return None
    try:
        return resolve_key(settings.key)
    except MissingKey:
        return None


def input_megapixels(item: WorkItem) -> float:
    """All of an item's input images, in megapixels: what a learned cost is kept with."""
    return sum(img.size[0] * img.size[1] for img in item.images) / 1e6


def _let_go(day_hold: str | None) -> None:
    """What a run still holds against the daily ceiling is let go (a store that can't be
    reached lets it expire on its own)."""
    if day_hold is not None:
        try:
            state.store().release(day_hold)
        except state.StateUnavailable as exc:
            log.warning("%s", exc)


class _InterruptRequested(Exception):
    pass


def _download_client(destination: egress.Destination):
    import httpx
    # Shared by every call on the loop: room for a large list's downloads at once. Result
    # files only from fal's file hosts or the destination, every redirect checked.
    limits = httpx.Limits(max_connections=64)
    return http_client(follow_redirects=True, timeout=60.0,
                       transport=egress.download_transport(destination, limits=limits))


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
