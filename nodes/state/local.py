"""The local-files backend: one ComfyUI's state on its own disk (today's behaviour).

- results, uploads, journal: one SQLite index with the result files beside it, under
  ComfyUI's user directory (or COMFYUI_FAL_CACHE_DIR). Any trouble with it (corrupt or
  locked database, missing files) is a miss with one warning, never a failed graph.
- today's spend: spend_by_day.json beside the keys, under a file lock; the holds of runs
  under way are this process's own.
- the owner's settings (server_settings.json beside the keys) and the price book
  (prices.json beside the cache folder).
- leases: this process is the only worker, and Caches.claim already makes identical
  requests of one process wait for each other, so a lease is always granted.

The folder and everything in it is private (0700 / 0600) from the start: the index holds
the upload URLs of the user's images.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Callable

from .. import keystore
from .base import (SPEND_DAYS_KEPT, CeilingReached, SpendFileUnreadable, StateStore, days_ago,
                   today)

log = logging.getLogger("comfyui_fal_edit")

SPEND_FILE_NAME = "spend_by_day.json"
SETTINGS_FILE_NAME = "server_settings.json"
PRICES_FILE_NAME = "prices.json"
_UNREADABLE = object()


def spend_path() -> Path:
    return keystore.key_file().parent / SPEND_FILE_NAME


def _read_days(target: Path) -> dict[str, Any]:
    """The spend file's days; SpendFileUnreadable when it, or today's figure, is not what
    this pack writes (truncated, a string, a list, NaN, a negative amount): such a file
    must neither read as $0 nor be overwritten, which would lose the day."""
    try:
        data = keystore.read_json(target)
    except keystore.KeyStoreError:
        data = _UNREADABLE
    if data is None:
        return {}
    day = data.get(today(), 0.0) if isinstance(data, dict) else None
    if data is _UNREADABLE or not isinstance(data, dict) or isinstance(day, bool) or \
            not isinstance(day, (int, float)) or not math.isfinite(day) or day < 0:
        raise SpendFileUnreadable(
            f"today's fal spend can't be read from {target} (it is damaged), so the daily "
            f"ceiling counts as reached; this ComfyUI's owner can correct or delete that file")
    return data


class LocalStore(StateStore):
    """SQLite index + files (every result, upload and journal method swallows disk trouble:
    -> None), the spend file, the documents, this process's holds."""

    kind = "local"

    SCHEMA = """
    CREATE TABLE IF NOT EXISTS results (
        key TEXT PRIMARY KEY, endpoint TEXT, meta TEXT, files TEXT,
        bytes INTEGER, created REAL, used REAL);
    CREATE TABLE IF NOT EXISTS uploads (
        server TEXT, digest TEXT, url TEXT, expires REAL, PRIMARY KEY (server, digest));
    CREATE TABLE IF NOT EXISTS journal (
        key TEXT PRIMARY KEY, endpoint TEXT, request_id TEXT, submitted REAL);
    """

    def __init__(self, directory: Path | None) -> None:
        # None: outside ComfyUI with no COMFYUI_FAL_CACHE_DIR there is no safe place for
        # results, which then stay in memory; spend and settings still go beside the keys.
        self.directory = directory
        self.where = str(directory) if directory is not None else "memory"
        self.files = directory / "files" if directory is not None else Path()
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._broken = directory is None
        self.max_bytes_override = None
        self._holds: dict[str, float] = {}
        self._holds_lock = threading.Lock()
        self._tokens = itertools.count(1)

    def _db(self) -> sqlite3.Connection:
        assert self.directory is not None
        if self._conn is None:
            keystore.private_dir(self.files)
            if self.directory.parent.name == keystore.KEY_DIR_NAME:   # the pack's own folder
                os.chmod(self.directory.parent, 0o700)
            index = self.directory / "index.sqlite"
            os.close(os.open(index, os.O_RDWR | os.O_CREAT, 0o600))   # private before SQLite
            os.chmod(index, 0o600)                                      # writes a byte to it
            conn = sqlite3.connect(index, timeout=2.0,
                                   check_same_thread=False, isolation_level=None)
            conn.executescript(self.SCHEMA)
            self._conn = conn
        return self._conn

    def _guard(self, action: str, fn):
        if self._broken:
            return None
        try:
            with self._lock:
                return fn(self._db())
        except sqlite3.OperationalError as exc:
            # Locked or busy: this once is a miss; the next call tries again.
            log.warning("fal result cache: %s skipped (%s); calling fal instead", action, exc)
            return None
        except (sqlite3.DatabaseError, OSError) as exc:
            self._broken = True
            log.warning("fal result cache at %s is unusable (%s: %s); results are not cached "
                        "on disk until ComfyUI restarts (delete the folder to reset it)",
                        self.directory, type(exc).__name__, exc)
            return None

    # results --------------------------------------------------------------
    def get_result(self, key: str) -> tuple[dict, list[bytes]] | None:
        def read(db: sqlite3.Connection):
            row = db.execute("SELECT meta, files FROM results WHERE key = ?", (key,)).fetchone()
            if row is None:
                return None
            try:
                blobs = [(self.files / name).read_bytes() for name in json.loads(row[1])]
            except OSError:
                db.execute("DELETE FROM results WHERE key = ?", (key,))
                return None   # files gone: a miss, and fal is called again
            db.execute("UPDATE results SET used = ? WHERE key = ?", (time.time(), key))
            return json.loads(row[0]), blobs
        return self._guard("read", read)

    def put_result(self, key: str, endpoint: str, meta: dict, blobs: list[bytes],
                   extensions: list[str]) -> None:
        def write(db: sqlite3.Connection):
            names = []
            for n, (blob, ext) in enumerate(zip(blobs, extensions)):
                name = f"{key[:40]}-{n}.{ext}"
                # A temp name of its own (two processes may write the same entry), 0600.
                keystore.write_private_bytes(self.files / name, blob, prefix=f".{name}-")
                names.append(name)
            now = time.time()
            db.execute("INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (key, endpoint, json.dumps(meta), json.dumps(names),
                        sum(len(b) for b in blobs), now, now))
            self._evict(db)
        self._guard("write", write)

    def _evict(self, db: sqlite3.Connection) -> None:
        total = db.execute("SELECT COALESCE(SUM(bytes), 0) FROM results").fetchone()[0]
        while total > self.max_bytes:
            row = db.execute("SELECT key, files, bytes FROM results ORDER BY used LIMIT 1").fetchone()
            if row is None:
                break
            for name in json.loads(row[1]):
                try:
                    (self.files / name).unlink()
                except OSError:
                    pass
            db.execute("DELETE FROM results WHERE key = ?", (row[0],))
            total -= row[2]

    # uploads --------------------------------------------------------------
    def get_upload(self, server: str, digest: str) -> str | None:
        def read(db: sqlite3.Connection):
            row = db.execute("SELECT url, expires FROM uploads WHERE server = ? AND digest = ?",
                             (server, digest)).fetchone()
            return row[0] if row and row[1] > time.time() else None
        return self._guard("read", read)

    def put_upload(self, server: str, digest: str, url: str, ttl_s: float) -> None:
        self._guard("write", lambda db: db.execute(
            "INSERT OR REPLACE INTO uploads VALUES (?, ?, ?, ?)",
            (server, digest, url, time.time() + ttl_s)))

    def forget_upload(self, server: str, digest: str) -> None:
        self._guard("write", lambda db: db.execute(
            "DELETE FROM uploads WHERE server = ? AND digest = ?", (server, digest)))

    # requests in flight -----------------------------------------------------
    def get_journal(self, key: str) -> tuple[str, str, float] | None:
        row = self._guard("read", lambda db: db.execute(
            "SELECT endpoint, request_id, submitted FROM journal WHERE key = ?",
            (key,)).fetchone())
        return tuple(row) if row else None

    def put_journal(self, key: str, endpoint: str, request_id: str) -> None:
        self._guard("write", lambda db: db.execute(
            "INSERT OR REPLACE INTO journal VALUES (?, ?, ?, ?)",
            (key, endpoint, request_id, time.time())))

    def drop_journal(self, key: str) -> None:
        self._guard("write", lambda db: db.execute("DELETE FROM journal WHERE key = ?", (key,)))

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # single flight: this process is the only worker ------------------------------
    def acquire_lease(self, key: str, owner: str, ttl_s: float) -> bool:
        return True

    def release_lease(self, key: str, owner: str) -> None:
        pass

    # today's spend: the file beside the keys; holds: this process's --------------------
    def spent_today(self) -> float:
        return float(_read_days(spend_path()).get(today(), 0.0))

    def held(self) -> float:
        with self._holds_lock:
            return sum(self._holds.values())

    def reserve(self, usd: float, ceiling: float, expires_at: float) -> str:
        with self._holds_lock:
            if ceiling > 0:
                try:
                    spent = self.spent_today() + sum(self._holds.values())
                except SpendFileUnreadable:
                    if usd > 0:
                        raise
                    spent = 0.0
                if spent + usd > ceiling + 1e-9:
                    raise CeilingReached(spent)
            token = str(next(self._tokens))
            self._holds[token] = usd
            return token

    def charge(self, token: str | None, delta: float) -> None:
        if not math.isfinite(delta) or delta == 0:
            return
        self._adjust_file(delta)
        with self._holds_lock:
            if token in self._holds:
                self._holds[token] = max(0.0, self._holds[token] - delta)

    def release(self, token: str | None) -> None:
        with self._holds_lock:
            self._holds.pop(token, None)

    @staticmethod
    def _adjust_file(delta: float) -> None:
        """Today's total += delta (never below 0; a week kept); a damaged file is left as
        it is: it counts as the ceiling reached."""
        from .. import server_settings
        target = spend_path()
        try:
            with keystore.locked(target):
                days = _read_days(target)
                day = today()
                previous = float(days.get(day, 0.0))
                days = {d: v for d, v in days.items()
                        if isinstance(d, str) and d >= days_ago(SPEND_DAYS_KEPT - 1)}
                days[day] = round(max(0.0, previous + delta), 6)
                keystore.write_private_json(target, days, prefix=".spend-")
        except SpendFileUnreadable as exc:
            server_settings.warn(str(exc))
        except (OSError, keystore.KeyStoreError) as exc:
            server_settings.warn(f"today's fal spend could not be saved ({type(exc).__name__})")

    # documents: JSON files -----------------------------------------------------------
    def _doc_path(self, name: str) -> Path | None:
        if name == "server_settings":
            return keystore.key_file().parent / SETTINGS_FILE_NAME
        if name == "prices":
            return self.directory.parent / PRICES_FILE_NAME if self.directory else None
        raise ValueError(name)

    def read_doc(self, name: str) -> Any:
        target = self._doc_path(name)
        return keystore.read_json(target) if target is not None else None

    def update_doc(self, name: str, change: Callable[[Any], Any]) -> Any:
        target = self._doc_path(name)
        assert target is not None
        with keystore.locked(target):
            value = change(self.read_doc(name))
            keystore.write_private_json(target, value, prefix=f".{name}-")
        return value

    def write_doc(self, name: str, value: Any) -> None:
        target = self._doc_path(name)
        if target is not None:
            keystore.write_private_json(target, value, prefix=f".{name}-")
