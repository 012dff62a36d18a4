"""The one interface every piece of the pack's remembered state goes through.

Two implementations: local files (state/local.py, one ComfyUI: today's files, nothing to
install) and Redis (state/redis_store.py, several ComfyUI workers sharing one result
cache, one journal, one daily ceiling). The owner picks one on the server
(COMFYUI_FAL_REDIS_URL); a workflow never does. What goes through it:

  results    result cache: request key -> (meta, result files), least recently used
             out first once past the owner's size budget
  uploads    upload memory: (server, pixel digest) -> fal URL, until fal's expiry
  journal    requests submitted and not yet answered: request key -> (endpoint, request
             id, submitted at), so a run after a crash picks the job up
  leases     single flight across workers: one worker holds a request key while it calls
             fal; the lease expires if that worker dies
  spend      today's spend and the holds of runs that passed the daily ceiling, changed
             in one atomic step each (reserve / charge / release)
  ledger     (Redis only) today's requests of every worker, a row each
  documents  the owner's settings and the price book (small JSON documents)

Keys never go through it: each worker keeps its own fal key (FAL_KEY or its key file).
"""

from __future__ import annotations

import time
from typing import Any, Callable

JOURNAL_MAX_AGE_S = 24 * 3600        # fal keeps a request's result about this long
SPEND_DAYS_KEPT = 8


class StateUnavailable(Exception):
    """The shared state store cannot be used; the message is one sentence naming it (never
    a password) and what to check."""


class SpendFileUnreadable(Exception):
    """Today's spend can't be trusted (damaged): the message is one sentence naming where
    it is; the daily ceiling then counts as reached."""


class CeilingReached(Exception):
    """A reservation refused: `spent` is today's spend plus what runs hold."""

    def __init__(self, spent: float) -> None:
        super().__init__(f"${spent:.3f} spent or under way today")
        self.spent = spent


def today() -> str:
    return time.strftime("%Y-%m-%d")


def days_ago(days: int) -> str:
    return time.strftime("%Y-%m-%d", time.localtime(time.time() - days * 86400))


class StateStore:
    """What each backend implements. Calls block (files, a socket): callers on the event
    loop run them in a worker thread."""

    kind = "?"
    where = ""                 # for messages: a folder, or redis://host:port (no password)
    max_bytes_override: int | None = None     # tests; else the owner's cache_max_gb

    @property
    def max_bytes(self) -> int:
        if self.max_bytes_override is not None:
            return self.max_bytes_override
        from .. import server_settings
        return int(server_settings.load()["cache_max_gb"] * 1024**3)

    # results ------------------------------------------------------------------
    def get_result(self, key: str) -> tuple[dict, list[bytes]] | None:
        raise NotImplementedError

    def put_result(self, key: str, endpoint: str, meta: dict, blobs: list[bytes],
                   extensions: list[str]) -> None:
        raise NotImplementedError

    # uploads ------------------------------------------------------------------
    def get_upload(self, server: str, digest: str) -> str | None:
        raise NotImplementedError

    def put_upload(self, server: str, digest: str, url: str, ttl_s: float) -> None:
        raise NotImplementedError

    def forget_upload(self, server: str, digest: str) -> None:
        raise NotImplementedError

    # journal of requests in flight ----------------------------------------------
    def get_journal(self, key: str) -> tuple[str, str, float] | None:
        raise NotImplementedError

    def put_journal(self, key: str, endpoint: str, request_id: str) -> None:
        raise NotImplementedError

    def drop_journal(self, key: str) -> None:
        raise NotImplementedError

    # single flight across workers -------------------------------------------------
    def acquire_lease(self, key: str, owner: str, ttl_s: float) -> bool:
        """True if `owner` now holds the request key (or already did: the lease is
        extended); False while another live worker holds it."""
        raise NotImplementedError

    def release_lease(self, key: str, owner: str) -> None:
        raise NotImplementedError

    # spend and the daily ceiling ------------------------------------------------------
    def spent_today(self) -> float:
        """Today's spend. SpendFileUnreadable when what is stored is damaged."""
        raise NotImplementedError

    def held(self) -> float:
        """What runs that passed the daily ceiling hold and have not sent yet."""
        raise NotImplementedError

    def reserve(self, usd: float, ceiling: float, expires_at: float) -> str:
        """In one atomic step: refuse (CeilingReached) when today's spend + every hold +
        `usd` would pass `ceiling` (0 = none), else hold `usd` until `expires_at` and
        return the hold's token."""
        raise NotImplementedError

    def charge(self, token: str | None, delta: float) -> None:
        """In one atomic step: today's spend += delta (never below 0), the hold `token`
        -= delta (a request sent: + its estimate; one that never reached fal: - it; fal's
        bill replacing the estimate: + the difference, with no token)."""
        raise NotImplementedError

    def release(self, token: str | None) -> None:
        """The run is over: what it still holds is let go."""
        raise NotImplementedError

    # the fleet's ledger: every request sent today, by any worker ----------------------
    def note_request(self, entry_id: str, row: dict[str, Any]) -> None:
        """Write (or overwrite) one request's ledger row: endpoint, request id, estimate,
        fal's bill, worker. Local files keep none (the worker's session ledger is the
        record, as before)."""

    def requests_today(self) -> list[dict[str, Any]] | None:
        """Today's rows of every worker; None where the store keeps none."""
        return None

    # small documents (owner's settings, price book) --------------------------------
    def read_doc(self, name: str) -> Any:
        """The document, None when there is none; raises on a damaged one."""
        raise NotImplementedError

    def update_doc(self, name: str, change: Callable[[Any], Any]) -> Any:
        """Write change(current) in one step (no other writer in between); returns it."""
        raise NotImplementedError

    def write_doc(self, name: str, value: Any) -> None:
        raise NotImplementedError

    # housekeeping -------------------------------------------------------------------
    def close(self) -> None:
        pass
