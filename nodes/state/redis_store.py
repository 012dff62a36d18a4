"""The Redis backend: state shared by several ComfyUI workers (Redis or Valkey).

Keys, below the owner's namespace prefix (COMFYUI_FAL_REDIS_PREFIX, or ?prefix= in the
URL; default "comfyui-fal:"):

  result:<request key>    hash: meta (JSON), n, bytes, f0..f<n-1> (the result files)
  results:lru             sorted set: request key -> last used (eviction order)
  results:bytes           the result files' total size (the owner's cache_max_gb)
  upload:<server>:<digest>  fal URL, expiring with fal's files
  journal:<request key>   hash: endpoint, request_id, submitted (expires after a day)
  lease:<request key>     the worker calling fal for it (expires unless renewed)
  spend:<day>             today's spend in USD (kept 8 days)
  holds:usd, holds:expiry what runs that passed the daily ceiling hold, and until when
  requests:<day>          hash: one ledger row (JSON) per request sent, by any worker
  doc:<name>              the owner's settings, the price book (JSON)

The ceiling is kept by Lua scripts: a reservation reads today's spend and every hold and
adds its own in one step, so N workers racing at the ceiling never both pass on the same
headroom. Nothing here ever holds a fal key.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
import time
import uuid
from typing import Any, Callable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .base import (JOURNAL_MAX_AGE_S, SPEND_DAYS_KEPT, CeilingReached, SpendFileUnreadable,
                   StateStore, StateUnavailable, today)

log = logging.getLogger("comfyui_fal_edit")

DEFAULT_PREFIX = "comfyui-fal:"
CONNECT_TIMEOUT_S = 2.0
SOCKET_TIMEOUT_S = 10.0
# With COMFYUI_FAL_REDIS_FALLBACK=local: after a failure, Redis is tried again this much later.
RETRY_AFTER_S = 30.0

# Removes expired holds, then refuses or holds. KEYS: spend:<day>, holds:usd, holds:expiry.
# ARGV: usd, ceiling, now, expires_at, token. Returns {status, spent+held}: 1 held,
# 0 refused, -1 today's spend is not a number (damaged: the ceiling counts as reached).
_RESERVE = """
local expired = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', ARGV[3])
for _, t in ipairs(expired) do
  redis.call('HDEL', KEYS[2], t)
  redis.call('ZREM', KEYS[3], t)
end
local raw = redis.call('GET', KEYS[1])
local spent = 0
if raw then
  spent = tonumber(raw)
  if spent == nil or spent ~= spent or spent < 0 then return {-1, raw} end
end
local held = 0
for _, v in ipairs(redis.call('HVALS', KEYS[2])) do held = held + tonumber(v) end
local usd = tonumber(ARGV[1])
local ceiling = tonumber(ARGV[2])
if ceiling > 0 and spent + held + usd > ceiling + 1e-9 then
  return {0, string.format('%.9f', spent + held)}
end
redis.call('HSET', KEYS[2], ARGV[5], string.format('%.9f', usd))
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[5])
return {1, string.format('%.9f', spent + held)}
"""

# Today's spend += delta (never below 0), the hold -= delta. KEYS: spend:<day>, holds:usd.
# ARGV: delta, token ('' for none), seconds to keep the day.
_CHARGE = """
local raw = redis.call('GET', KEYS[1])
local spent = 0
if raw then
  spent = tonumber(raw)
  if spent == nil or spent ~= spent or spent < 0 then return -1 end
end
local delta = tonumber(ARGV[1])
local now = spent + delta
if now < 0 then now = 0 end
redis.call('SET', KEYS[1], string.format('%.9f', now), 'EX', ARGV[3])
if ARGV[2] ~= '' then
  local h = redis.call('HGET', KEYS[2], ARGV[2])
  if h then
    local left = tonumber(h) - delta
    if left < 0 then left = 0 end
    redis.call('HSET', KEYS[2], ARGV[2], string.format('%.9f', left))
  end
end
return 1
"""

# Stores one result and evicts the least recently used past the budget.
# KEYS: result:<key>, results:lru, results:bytes. ARGV: key, now, max_bytes, size, meta,
# n, key prefix of results, files...
_PUT_RESULT = """
local old = redis.call('HGET', KEYS[1], 'bytes')
if old then redis.call('DECRBY', KEYS[3], old) end
redis.call('DEL', KEYS[1])
local n = tonumber(ARGV[6])
redis.call('HSET', KEYS[1], 'meta', ARGV[5], 'n', ARGV[6], 'bytes', ARGV[4])
for i = 1, n do redis.call('HSET', KEYS[1], 'f' .. (i - 1), ARGV[7 + i]) end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
local total = redis.call('INCRBY', KEYS[3], ARGV[4])
local budget = tonumber(ARGV[3])
while total > budget do
  local oldest = redis.call('ZRANGE', KEYS[2], 0, 0)
  if #oldest == 0 then break end
  local victim = ARGV[7] .. oldest[1]
  local size = tonumber(redis.call('HGET', victim, 'bytes') or '0')
  redis.call('DEL', victim)
  redis.call('ZREM', KEYS[2], oldest[1])
  total = redis.call('DECRBY', KEYS[3], size)
end
return total
"""

# A lease: taken when free, extended when ours. KEYS: lease:<key>. ARGV: owner, ttl ms.
_ACQUIRE = """
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""
_RELEASE_LEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def split_url(url: str) -> tuple[str, str | None]:
    """(the URL redis-py is given, the prefix named in it by ?prefix=, if any)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefix = next((v for k, v in query if k == "prefix"), None)
    rest = urlencode([(k, v) for k, v in query if k != "prefix"])
    return urlunsplit(parts._replace(query=rest)), prefix


def public_name(url: str) -> str:
    """redis://host:port/db for messages: never the user name or password."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return f"unix:{parts.path}"
    host = parts.hostname or "localhost"
    port = parts.port or 6379
    return f"{parts.scheme}://{host}:{port}{parts.path if parts.path not in ('', '/') else ''}"


class RedisStore(StateStore):
    kind = "redis"

    def __init__(self, url: str, prefix: str | None = None, fallback: StateStore | None = None
                 ) -> None:
        import redis

        client_url, named = split_url(url)
        self.prefix = prefix or named or DEFAULT_PREFIX
        self.where = public_name(url)
        self.max_bytes_override = None
        self.fallback = fallback         # the owner opted in to local files when Redis is down
        self._redis = redis.Redis.from_url(
            client_url, socket_connect_timeout=CONNECT_TIMEOUT_S,
            socket_timeout=SOCKET_TIMEOUT_S, health_check_interval=30)
        self._scripts = {name: self._redis.register_script(body) for name, body in (
            ("reserve", _RESERVE), ("charge", _CHARGE), ("put_result", _PUT_RESULT),
            ("acquire", _ACQUIRE), ("release_lease", _RELEASE_LEASE))}
        self._checked = False
        self._down_until = 0.0          # with the fallback: Redis failed, local files until then
        self._warned: set[str] = set()
        self._lock = threading.Lock()
        # Settlements of today's spend (fal's bill replacing an estimate) that came while
        # Redis could not be reached: added as soon as it can (this process's memory).
        self._unsaved: list[tuple[str, float]] = []
        self._unsaved_rows: list[tuple[str, str, dict[str, Any]]] = []

    # every call goes through here: faults become one sentence -------------------------
    def _call(self, what: str, fn: Callable[[], Any], fallback: Callable[[], Any] | None = None):
        import redis

        if fallback is not None and self.fallback is not None and \
                time.monotonic() < self._down_until:
            return fallback()   # Redis failed a moment ago: don't wait on it for every call
        try:
            if not self._checked:
                self._first_contact()
            return fn()
        except redis.AuthenticationError as exc:
            if "required" in str(exc).lower() or "noauth" in str(exc).lower():
                problem = "asks for a password"
                check = "give it in COMFYUI_FAL_REDIS_URL (redis://:PASSWORD@host:port)"
            else:
                problem = "refused the password in COMFYUI_FAL_REDIS_URL"
                check = "check the password (or user name) given there"
        except redis.ResponseError as exc:
            said = str(exc)
            if isinstance(exc, getattr(redis.exceptions, "OutOfMemoryError", ())) or \
                    said.startswith("OOM"):
                problem = "is full (its maxmemory is reached)"
                check = ("raise Redis's maxmemory, or lower cache_max_gb in Settings → fal: "
                         "the result cache lives in Redis's memory")
            elif "NOAUTH" in said or "WRONGPASS" in said:
                problem = "asks for a password"
                check = "give it in COMFYUI_FAL_REDIS_URL (redis://:PASSWORD@host:port)"
            else:
                raise
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            problem = f"could not be reached ({type(exc).__name__})"
            check = ("check that redis-server is running there and reachable from this "
                     "worker, and COMFYUI_FAL_REDIS_URL")
        if self.fallback is not None and fallback is not None:
            self._down_until = time.monotonic() + RETRY_AFTER_S
            self._warn_once("fallback", "fal: Redis at %s %s; this worker uses its own local "
                            "files instead (COMFYUI_FAL_REDIS_FALLBACK=local), so its spend "
                            "is not counted against the shared ceiling", self.where, problem)
            return fallback()
        raise StateUnavailable(f"the shared fal state on Redis at {self.where} {problem} "
                               f"while {what}, so nothing more was sent to fal; {check}")

    def _first_contact(self) -> None:
        """Once: the connection works, and a warning if Redis keeps nothing on disk."""
        self._redis.ping()
        self._checked = True
        try:
            save = self._redis.config_get("save").get("save", "")
            aof = self._redis.config_get("appendonly").get("appendonly", "no")
        except Exception:   # CONFIG is often switched off on managed Redis: nothing to say
            return
        if not str(save).strip() and str(aof) == "no":
            self._warn_once("persistence", "fal: Redis at %s keeps nothing on disk (save and "
                            "appendonly are off): a restart of it forgets today's spend, the "
                            "journal of requests in flight and the result cache; turn on "
                            "appendonly (redis-server --appendonly yes)", self.where)

    def _warn_once(self, topic: str, message: str, *args: Any) -> None:
        with self._lock:
            if topic in self._warned:
                return
            self._warned.add(topic)
        log.warning(message, *args)

    def _k(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def _fb(self, name: str, *args: Any) -> Callable[[], Any] | None:
        if self.fallback is None:
            return None
        return lambda: getattr(self.fallback, name)(*args)

    # results ------------------------------------------------------------------------
    def get_result(self, key: str) -> tuple[dict, list[bytes]] | None:
        def read():
            found = self._redis.hgetall(self._k("result", key))
            if not found:
                return None
            self._redis.zadd(self._k("results", "lru"), {key: time.time()}, xx=True)
            n = int(found[b"n"])
            return json.loads(found[b"meta"]), [found[f"f{i}".encode()] for i in range(n)]
        return self._call("reading the result cache", read, self._fb("get_result", key))

    def put_result(self, key: str, endpoint: str, meta: dict, blobs: list[bytes],
                   extensions: list[str]) -> None:
        size = sum(len(b) for b in blobs)
        budget = self.max_bytes

        def write():
            self._scripts["put_result"](
                keys=[self._k("result", key), self._k("results", "lru"),
                      self._k("results", "bytes")],
                args=[key, time.time(), budget, size, json.dumps(meta), len(blobs),
                      self._k("result", "")] + list(blobs))
        self._call("writing the result cache", write,
                   self._fb("put_result", key, endpoint, meta, blobs, extensions))

    # uploads --------------------------------------------------------------------------
    def _upload_key(self, server: str, digest: str) -> str:
        return self._k("upload", hashlib.sha256(server.encode()).hexdigest()[:16], digest)

    def get_upload(self, server: str, digest: str) -> str | None:
        def read():
            url = self._redis.get(self._upload_key(server, digest))
            return url.decode() if url else None
        return self._call("reading the upload memory", read, self._fb("get_upload", server, digest))

    def put_upload(self, server: str, digest: str, url: str, ttl_s: float) -> None:
        self._call("writing the upload memory",
                   lambda: self._redis.set(self._upload_key(server, digest), url,
                                           ex=max(1, int(ttl_s))),
                   self._fb("put_upload", server, digest, url, ttl_s))

    def forget_upload(self, server: str, digest: str) -> None:
        self._call("writing the upload memory",
                   lambda: self._redis.delete(self._upload_key(server, digest)),
                   self._fb("forget_upload", server, digest))

    # journal ------------------------------------------------------------------------------
    def get_journal(self, key: str) -> tuple[str, str, float] | None:
        def read():
            endpoint, request_id, submitted = self._redis.hmget(
                self._k("journal", key), "endpoint", "request_id", "submitted")
            if request_id is None:
                return None
            return endpoint.decode(), request_id.decode(), float(submitted)
        return self._call("reading the journal of requests in flight", read,
                          self._fb("get_journal", key))

    def put_journal(self, key: str, endpoint: str, request_id: str) -> None:
        def write():
            with self._redis.pipeline() as pipe:
                pipe.hset(self._k("journal", key), mapping={
                    "endpoint": endpoint, "request_id": request_id, "submitted": time.time()})
                pipe.expire(self._k("journal", key), JOURNAL_MAX_AGE_S)
                pipe.execute()
        self._call("writing the journal of requests in flight", write,
                   self._fb("put_journal", key, endpoint, request_id))

    def drop_journal(self, key: str) -> None:
        self._call("writing the journal of requests in flight",
                   lambda: self._redis.delete(self._k("journal", key)),
                   self._fb("drop_journal", key))

    # leases -------------------------------------------------------------------------------
    def acquire_lease(self, key: str, owner: str, ttl_s: float) -> bool:
        return bool(self._call("taking a request's lease", lambda: self._scripts["acquire"](
            keys=[self._k("lease", key)], args=[owner, int(ttl_s * 1000)]),
            self._fb("acquire_lease", key, owner, ttl_s)))

    def release_lease(self, key: str, owner: str) -> None:
        self._call("letting a request's lease go", lambda: self._scripts["release_lease"](
            keys=[self._k("lease", key)], args=[owner]),
            self._fb("release_lease", key, owner))

    # spend ----------------------------------------------------------------------------------
    def _spend_key(self) -> str:
        return self._k("spend", today())

    def _damaged(self, raw: Any) -> SpendFileUnreadable:
        return SpendFileUnreadable(
            f"today's fal spend can't be read from {self._spend_key()} on Redis at "
            f"{self.where} (it holds {str(raw)[:40]!r}), so the daily ceiling counts as "
            f"reached; this ComfyUI's owner can correct or delete that key")

    def spent_today(self) -> float:
        def read():
            self._save_unsaved()
            raw = self._redis.get(self._spend_key())
            if raw is None:
                return 0.0
            try:
                value = float(raw)
            except ValueError:
                raise self._damaged(raw.decode("utf-8", "replace")) from None
            if not math.isfinite(value) or value < 0:
                raise self._damaged(value)
            return value
        return self._call("reading today's spend", read, self._fb("spent_today"))

    def held(self) -> float:
        def read():
            now = time.time()
            live = set(self._redis.zrangebyscore(self._k("holds", "expiry"), now, "+inf"))
            return sum(float(v) for t, v in self._redis.hgetall(self._k("holds", "usd")).items()
                       if t in live)
        return self._call("reading today's spend", read, self._fb("held"))

    def reserve(self, usd: float, ceiling: float, expires_at: float) -> str:
        token = uuid.uuid4().hex

        def hold():
            self._save_unsaved()
            status, figure = self._scripts["reserve"](
                keys=[self._spend_key(), self._k("holds", "usd"), self._k("holds", "expiry")],
                args=[repr(float(usd)), repr(float(ceiling)), time.time(), expires_at, token])
            status = int(status)
            if status == -1:
                raise self._damaged(figure.decode("utf-8", "replace"))
            if status == 0:
                raise CeilingReached(float(figure))
            return token
        return self._call("checking the daily ceiling", hold,
                          self._fb("reserve", usd, ceiling, expires_at))

    def charge(self, token: str | None, delta: float) -> None:
        if not math.isfinite(delta) or delta == 0:
            return
        day = today()

        def change():
            self._save_unsaved()
            self._charge(day, token, delta)
        try:
            self._call("counting a request in today's spend", change,
                       self._fb("charge", token, delta))
        except StateUnavailable:
            if token is None:   # a request already sent: its bill must not be lost
                with self._lock:
                    self._unsaved.append((day, delta))
            raise

    def _charge(self, day: str, token: str | None, delta: float) -> None:
        done = self._scripts["charge"](
            keys=[self._k("spend", day), self._k("holds", "usd")],
            args=[repr(float(delta)), token or "", SPEND_DAYS_KEPT * 86400])
        if int(done) == -1:
            log.warning("fal: %s", self._damaged("not a number"))

    def _save_unsaved(self) -> None:
        """What came while Redis was away (bills, ledger rows), first, in order."""
        with self._lock:
            pending, self._unsaved = self._unsaved, []
            rows, self._unsaved_rows = self._unsaved_rows, []
        try:
            while pending:
                self._charge(pending[0][0], None, pending[0][1])
                pending.pop(0)
            while rows:
                self._note(*rows[0])
                rows.pop(0)
        finally:
            if pending or rows:
                with self._lock:
                    self._unsaved = pending + self._unsaved
                    self._unsaved_rows = rows + self._unsaved_rows

    def release(self, token: str | None) -> None:
        if token is None:
            return

        def drop():
            with self._redis.pipeline() as pipe:
                pipe.hdel(self._k("holds", "usd"), token)
                pipe.zrem(self._k("holds", "expiry"), token)
                pipe.execute()
        self._call("letting a run's hold go", drop, self._fb("release", token))

    # the fleet's ledger --------------------------------------------------------------------------
    def note_request(self, entry_id: str, row: dict[str, Any]) -> None:
        day = today()

        def write():
            self._save_unsaved()
            self._note(day, entry_id, row)
        try:
            self._call("writing the ledger", write, self._fb("note_request", entry_id, row))
        except StateUnavailable:   # kept, like a bill, and written once Redis is back
            with self._lock:
                self._unsaved_rows.append((day, entry_id, row))
            raise

    def _note(self, day: str, entry_id: str, row: dict[str, Any]) -> None:
        key = self._k("requests", day)
        with self._redis.pipeline() as pipe:
            pipe.hset(key, entry_id, json.dumps(row))
            pipe.expire(key, SPEND_DAYS_KEPT * 86400)
            pipe.execute()

    def requests_today(self) -> list[dict[str, Any]] | None:
        def read():
            self._save_unsaved()
            rows = self._redis.hgetall(self._k("requests", today()))
            return sorted((json.loads(v) for v in rows.values()), key=lambda r: r.get("at", 0))
        return self._call("reading the ledger", read, self._fb("requests_today"))

    # documents ---------------------------------------------------------------------------------
    def read_doc(self, name: str) -> Any:
        def read():
            raw = self._redis.get(self._k("doc", name))
            return json.loads(raw) if raw is not None else None
        return self._call(f"reading {name.replace('_', ' ')}", read, self._fb("read_doc", name))

    def update_doc(self, name: str, change: Callable[[Any], Any]) -> Any:
        import redis

        def write():
            key = self._k("doc", name)
            with self._redis.pipeline() as pipe:
                while True:
                    try:
                        pipe.watch(key)
                        raw = pipe.get(key)
                        value = change(json.loads(raw) if raw is not None else None)
                        pipe.multi()
                        pipe.set(key, json.dumps(value))
                        pipe.execute()
                        return value
                    except redis.WatchError:
                        continue
        return self._call(f"writing {name.replace('_', ' ')}", write,
                          self._fb("update_doc", name, change))

    def write_doc(self, name: str, value: Any) -> None:
        self._call(f"writing {name.replace('_', ' ')}",
                   lambda: self._redis.set(self._k("doc", name), json.dumps(value)),
                   self._fb("write_doc", name, value))

    def close(self) -> None:
        try:
            self._redis.close()
        except Exception:
            pass
