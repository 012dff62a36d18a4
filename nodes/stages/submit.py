"""Stage 3a, submit: one request into fal's queue, sent again only when it provably never
reached fal.

fal's queue has no idempotency key: a submit that reached fal is a job, billed whether or
not its answer comes back. fal-client's own submit posts again on any transport error or
timeout (up to 10 times), so a connection that drops answers made one billed job per
attempt. Here the POST goes out through the run's own HTTP client (the egress transport
and key handling of fal_transport.py), and each failed attempt is one of:

- unsent: provably never reached a fal job. The connection was never made (refused,
  DNS, TLS handshake, connect or pool timeout), or fal's ingress turned it away
  (408/502/503/504 without a fal request id, or any 429). Sent again, with backoff.
  Through a proxy, a 502 or 504 is the proxy saying fal's answer did not reach it:
  ambiguous, below.
- refused: fal answered with its own error (a 4xx): no job was made; the answer says why.
- server error: fal itself answered 5xx. fal bills no request that ends in a server
  error, but a job is not proven absent: the charge stays counted, nothing is resent
  (as fal-client does).
- ambiguous: the request went out and no usable answer came back (reset or timeout while
  reading, a cut-off or unreadable answer): a job may exist and may be billed. It counts in `item.lost_submits`, and the item is submitted at most
  once more in this run.

`on_sent` is awaited before every POST (the ledger counts it as possibly billed from that
moment) and `on_unsent` after an attempt that made no job (unsent or refused: its charge
is taken back).

An account fal refuses (401 bad key, 403 locked or forbidden) would refuse every request
the same way: the first submit per account on a loop goes alone, and once one is
refused, the loop's other items (the batch, the calls of a list input) are not sent.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any, Awaitable, Callable

from ..concurrency import within
from .plan import WorkItem

# After an ambiguous attempt, the item may be submitted this many more times in a run.
RESUBMITS_AFTER_LOST_ANSWER = 1
# fal's ingress answers these without a request id when the request never reached a job.
INGRESS_STATUSES = (408, 429, 502, 503, 504)
# A proxy (or any gateway) answers these, without a fal request id, when fal's answer did
# not come back to it: the job may exist, as after a reset.
GATEWAY_STATUSES = (502, 504)
# These say "not taken, come back later" whoever sends them: no job is made by a 429
# (fal-client retries it in every case, and so does the pack).
TRY_LATER_STATUSES = (429,)
REQUEST_ID_HEADER = "x-fal-request-id"
START_TIMEOUT_HEADER = "X-Fal-Request-Timeout"     # fal-client's start_timeout
# fal's start timeout must be above 1 s (fal-client refuses less).
MIN_START_TIMEOUT_S = 1.5
# The share of the item's remaining time fal may keep it queued: a job that starts later
# would be cancelled by the node's own deadline while it runs, and be billed.
START_SHARE = 0.9
RETRY_AFTER_MAX_S = 10.0

Callback = Callable[[WorkItem], Awaitable[None]] | None


class ItemFailed(Exception):
    """An item failed for a reason the message already says in the user's words."""


class AccountRefused(Exception):
    """fal refused the account of this key earlier on this loop (`refusal`, fal's answer
    then), so this item was not sent: it would have been refused the same way."""

    def __init__(self, refusal: BaseException) -> None:
        super().__init__(str(refusal))
        self.refusal = refusal


def lost_answers_phrase(count: int) -> str:
    """What the user is told about submits whose answer was lost."""
    return (f"fal may have billed {count} request{'s' if count != 1 else ''} whose "
            f"answer{'s were' if count != 1 else ' was'} lost")


def start_timeout_s(remaining_s: float) -> float:
    """fal's start deadline for a request the node will wait `remaining_s` more for."""
    return max(MIN_START_TIMEOUT_S, round(remaining_s * START_SHARE, 1))


# -- what a loop learned about an account -------------------------------------------------

class AccountWatch:
    """One fal account (a client: one key and server) as this loop has seen it. Until fal
    has accepted a submit, submits go one at a time, so a locked account costs one."""

    def __init__(self) -> None:
        self.accepted = False
        self.lock = asyncio.Lock()
        # endpoint (None: every endpoint) -> fal's refusal
        self._refused: dict[str | None, BaseException] = {}

    def refuse(self, endpoint_id: str | None, refusal: BaseException) -> None:
        self._refused.setdefault(endpoint_id, refusal)

    def check(self, endpoint_id: str) -> None:
        """Raise AccountRefused if fal refused this account (or this endpoint to it)."""
        refusal = self._refused.get(None) or self._refused.get(endpoint_id)
        if refusal is not None:
            raise AccountRefused(refusal)


def account_of(client: Any) -> AccountWatch:
    """The watch kept on the run's fal client: the calls on one loop share that client
    (concurrency.LoopClients), so they share what it learned. Kept on the instance:
    fal-client's clients compare (and hash) equal by key, across loops too."""
    return vars(client).setdefault("_fal_account_watch", AccountWatch())


# -- the submit ---------------------------------------------------------------------------

UNSENT, REFUSED, SERVER_ERROR, AMBIGUOUS = "unsent", "refused", "server error", "ambiguous"


class _Failed(Exception):
    """One POST failed: `kind` (UNSENT, REFUSED, SERVER_ERROR or AMBIGUOUS), `cause` what
    was raised."""

    def __init__(self, kind: str, cause: BaseException, retry_after: float | None = None):
        super().__init__(str(cause))
        self.kind, self.cause, self.retry_after = kind, cause, retry_after


async def submit(client: Any, endpoint_id: str, payload: dict[str, Any], item: WorkItem, *,
                 headers: dict[str, str] | None = None, on_sent: Callback = None,
                 on_unsent: Callback = None, cancel_grace_s: float = 5.0) -> Any:
    """Put `payload` into fal's queue for `endpoint_id`; fal-client's request handle.

    Raises what fal answered (FalClientHTTPError), the last connection error, ItemFailed
    once the answers of two submits were lost, or AccountRefused without sending. If the
    run is stopped mid-POST, its answer is awaited `cancel_grace_s` more, into
    `item.handle`, so a job fal made can be cancelled rather than run (and billed) unseen."""
    args = (client, endpoint_id, payload, item, headers or {}, on_sent, on_unsent,
            cancel_grace_s)
    account = account_of(client)
    account.check(endpoint_id)
    if not account.accepted:
        async with account.lock:      # the first submit per account goes alone
            account.check(endpoint_id)
            if not account.accepted:
                return await _submit(*args)
    return await _submit(*args)


async def _submit(client: Any, endpoint_id: str, payload: dict[str, Any], item: WorkItem,
                  headers: dict[str, str], on_sent: Callback, on_unsent: Callback,
                  cancel_grace_s: float) -> Any:
    from fal_client import client as fc

    unsent = 0
    while True:
        if on_sent is not None:
            await on_sent(item)
        try:
            handle = await _attempt(client, endpoint_id, payload, item, headers, cancel_grace_s)
        except _Failed as failure:
            if failure.kind == SERVER_ERROR:    # fal failed it (fal bills no 5xx); no resend
                raise failure.cause from None
            if failure.kind != AMBIGUOUS:       # no job was made: take its charge back
                if on_unsent is not None:
                    await on_unsent(item)
                if failure.kind == REFUSED:
                    note_refusal(client, endpoint_id, failure.cause)
                    raise failure.cause from None
                unsent += 1
                if unsent >= getattr(fc, "MAX_ATTEMPTS", 10):
                    raise failure.cause from None
                await asyncio.sleep(_backoff(unsent, failure.retry_after))
                continue
            item.lost_submits += 1
            if item.lost_submits > RESUBMITS_AFTER_LOST_ANSWER:
                raise ItemFailed(
                    f"fal's answer to its submit was lost {_times(item.lost_submits)} (the "
                    f"connection broke after the request went out), so it was not sent "
                    f"again; check your network and run again") from failure.cause
            item.detail = "fal's answer was lost; sending it once more"
            await asyncio.sleep(_backoff(1, None))
            continue
        account_of(client).accepted = True
        return handle


async def _attempt(client: Any, endpoint_id: str, payload: dict[str, Any], item: WorkItem,
                   headers: dict[str, str], cancel_grace_s: float) -> Any:
    """One POST. Shielded: if the run is stopped mid-POST, the answer is still awaited for
    a moment, so a job fal made can be cancelled rather than run (and billed) unseen."""
    post = asyncio.ensure_future(_post(client, endpoint_id, payload, headers))
    try:
        return await asyncio.shield(post)
    except asyncio.CancelledError:
        try:
            item.handle = await within(post, cancel_grace_s)
        except _Failed as failure:
            item.lost_submits += failure.kind == AMBIGUOUS
        except BaseException:           # no answer in time: it may have made a job
            item.lost_submits += 1
        raise


async def _post(client: Any, endpoint_id: str, payload: dict[str, Any],
                headers: dict[str, str]) -> Any:
    """The POST itself; a failure is raised as _Failed, sorted by what it proves."""
    import fal_client
    import httpx
    from fal_client import client as fc

    http = await client._client
    request = http.build_request("POST", fc.QUEUE_URL_FORMAT + endpoint_id, json=payload,
                                 headers=headers, timeout=client.default_timeout)
    try:
        response = await http.send(request, stream=True)
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
        raise _Failed(UNSENT, exc) from None           # no connection: nothing was sent
    except httpx.TransportError as exc:
        raise _Failed(AMBIGUOUS, exc) from None        # sent (maybe in part); no answer
    try:
        request_id = response.headers.get(REQUEST_ID_HEADER)
        try:
            await response.aread()
        except httpx.HTTPError as exc:
            if response.status_code == 200 and request_id:   # the id arrived: not lost
                return await client.get_handle(endpoint_id, request_id)
            raise _Failed(AMBIGUOUS, exc) from None
    finally:
        await response.aclose()
    if response.status_code >= 400:
        try:
            fc._raise_for_status(response)
        except fal_client.FalClientHTTPError as exc:
            error: BaseException = exc
        else:   # a fal-client that changed inside
            error = httpx.HTTPStatusError(f"HTTP {response.status_code}", request=request,
                                          response=response)
        if response.status_code in TRY_LATER_STATUSES:
            raise _Failed(UNSENT, error, _retry_after(response))
        if response.status_code in INGRESS_STATUSES and not request_id:
            if getattr(client, "through_proxy", False) and \
                    response.status_code in GATEWAY_STATUSES:
                raise _Failed(AMBIGUOUS, error) from None
            raise _Failed(UNSENT, error, _retry_after(response))
        if response.status_code >= 500:
            raise _Failed(SERVER_ERROR, error)
        raise _Failed(REFUSED, error)
    try:
        data = response.json()
        return fc.AsyncRequestHandle(request_id=data["request_id"],
                                     response_url=data["response_url"],
                                     status_url=data["status_url"],
                                     cancel_url=data["cancel_url"], client=http)
    except (ValueError, KeyError, TypeError) as exc:
        if request_id:
            return await client.get_handle(endpoint_id, request_id)
        raise _Failed(AMBIGUOUS, exc) from None


def note_refusal(client: Any, endpoint_id: str, exc: BaseException) -> None:
    """If `exc` is fal refusing the account (401, 403), the loop's other items of it are
    not sent. A locked account or a bad key refuses every endpoint; another 403 this one."""
    from ..errors import account_scope

    scope = account_scope(exc)
    if scope is not None:
        account_of(client).refuse(None if scope == "account" else endpoint_id, exc)


def _retry_after(response: Any) -> float | None:
    try:
        return min(RETRY_AFTER_MAX_S, max(0.0, float(response.headers.get("retry-after", ""))))
    except ValueError:
        return None


def _backoff(attempt: int, retry_after: float | None) -> float:
    """fal-client's schedule (0.1 s doubling, at most 10 s, with jitter), or Retry-After."""
    if retry_after is not None:
        return retry_after
    return min(0.1 * 2 ** (attempt - 1), 10.0) * random.uniform(0.5, 1.5)


def _times(count: int) -> str:
    return {1: "once", 2: "twice"}.get(count, f"{count} times")
