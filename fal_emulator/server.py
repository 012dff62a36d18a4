"""The aiohttp application: fal's queue, run, storage/CDN and file routes.

URL layout (``base`` = http://127.0.0.1:PORT/), mirroring the hosts that
fal-client's module globals point at once redirected:

  POST {base}queue/{endpoint_id}                          submit
  GET  {base}queue/{owner}/{alias}/requests/{id}/status   status (?logs=1)
  GET  {base}queue/{owner}/{alias}/requests/{id}          result
  PUT  {base}queue/{owner}/{alias}/requests/{id}/cancel   cancel
  POST {base}run/{endpoint_id}                            synchronous run
  POST {base}rest/storage/auth/token?storage_type=fal-cdn-v3
  POST {base}rest/storage/upload/initiate?storage_type=gcs (fallback path)
  PUT  {base}rest/storage/upload/put/{file_id}            (fallback path)
  POST {base}cdn/files/upload                             v3 CDN upload
  GET  {base}files/{file_id}/{name}                       stored files
  GET/POST {base}_emulator/config, GET {base}_emulator/log[?since=N], POST {base}_emulator/reset
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import io
import json
import math
import mimetypes
import random
import re
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import unquote, urlparse

from aiohttp import web
from PIL import Image, UnidentifiedImageError

from . import billing, imageops
from .specs import ENDPOINTS, PRICES, EndpointSpec, field_error, validate
from .state import JOB_OUTCOME_KINDS, EmulatorState, FaultRule

_NSFW_RE = re.compile(r"\bnsfw\b", re.IGNORECASE)
_FILE_PATH_RE = re.compile(r"^/files/([0-9a-f]{32})(?:/|$)")

# What real nginx answers with; fal-client only retries 502/503/504 when the
# body mentions nginx and there is no x-fal-request-id (_is_ingress_error).
_NGINX_BODY = ("<html><head><title>{code} {reason}</title></head><body>"
               "<center><h1>{code} {reason}</h1></center><hr><center>nginx</center>"
               "</body></html>")
_FORBIDDEN_DETAIL = ("User is locked. Reason: Exhausted balance. "
                     "Top up your balance at fal.ai/dashboard/billing.")


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat()


def _json(body: Any, status: int = 200, **headers: str) -> web.Response:
    return web.json_response(body, status=status, headers=headers or None)


# ----- file store ---------------------------------------------------------


@dataclass
class StoredFile:
    data: bytes
    content_type: str
    name: str


class FileStore:
    """In-memory CDN. Written from job worker threads, hence the lock."""

    def __init__(self) -> None:
        self._files: dict[str, StoredFile] = {}
        self._lock = threading.Lock()

    def put(self, data: bytes, content_type: str, name: str, file_id: str | None = None) -> str:
        file_id = file_id or uuid.uuid4().hex
        with self._lock:
            self._files[file_id] = StoredFile(data, content_type, name)
        return file_id

    def get(self, file_id: str) -> StoredFile | None:
        with self._lock:
            return self._files.get(file_id)

    def forget_all(self) -> None:
        """Every stored file expires at once (what a restarted CDN looks like)."""
        with self._lock:
            self._files.clear()

    @staticmethod
    def url(base: str, file_id: str, name: str) -> str:
        return f"{base}files/{file_id}/{name}"


# ----- jobs ----------------------------------------------------------------


class RequestError(Exception):
    """A job failure with the HTTP answer its result URL should give."""

    def __init__(self, status: int, body: Any, message: str, error_type: str):
        super().__init__(message)
        self.status, self.body, self.message, self.error_type = status, body, message, error_type


def _validation_error(errors: list[dict]) -> RequestError:
    first = errors[0]
    return RequestError(422, {"detail": errors},
                        f"{'.'.join(str(x) for x in first['loc'][1:])}: {first['msg']}",
                        "validation_error")


@dataclass
class Job:
    id: str
    spec: EndpointSpec
    payload: Any
    base: str
    outcome: str | None            # job-outcome fault kind, if any
    created: float = field(default_factory=time.monotonic)
    status: str = "IN_QUEUE"
    queue_until: float = 0.0
    logs: list = field(default_factory=list)
    result: dict | None = None
    error: RequestError | None = None
    cancelled: bool = False
    started: float | None = None
    finished: float | None = None
    task: asyncio.Task | None = None
    _changed: asyncio.Event | None = None
    made: tuple | None = None                 # (params, output files): what fal bills
    billable_units: float | None = None

    @property
    def urls(self) -> dict:
        owner, alias = self.spec.endpoint_id.split("/")[:2]
        root = f"{self.base}queue/{owner}/{alias}/requests/{self.id}"
        return {"response_url": root, "status_url": root + "/status",
                "cancel_url": root + "/cancel"}

    def log(self, message: str, level: str = "INFO") -> None:
        self.logs.append({"message": message, "level": level, "source": "USER",
                          "timestamp": _now_iso()})
        self.changed()

    def changed(self) -> None:
        """Wake the status streams watching this job (call on the server's loop)."""
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def wait_for_change(self, timeout: float) -> None:
        if self._changed is None:
            self._changed = asyncio.Event()
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except asyncio.TimeoutError:
            pass


class ConcurrencyGate:
    """FIFO admission limited by state.max_concurrency.

    Waiters are woken on every release, and also re-check every 50 ms because
    tests change the limit in-process from another thread, which cannot
    notify an asyncio Condition.
    """

    def __init__(self, state: EmulatorState) -> None:
        self.state = state
        self.running = 0
        self.waiting: list[Job] = []
        self._changed = asyncio.Condition()

    def _may_start(self, job: Job) -> bool:
        limit = self.state.max_concurrency
        return self.waiting[0] is job and (limit is None or self.running < limit)

    async def acquire(self, job: Job) -> None:
        async with self._changed:
            self.waiting.append(job)
            try:
                while not self._may_start(job):
                    try:
                        await asyncio.wait_for(self._changed.wait(), 0.05)
                    except asyncio.TimeoutError:
                        pass
            finally:
                self.waiting.remove(job)
                self._changed.notify_all()  # the next in line may now be head
            self.running += 1

    async def release(self) -> None:
        async with self._changed:
            self.running -= 1
            self._changed.notify_all()


# ----- image input / output -------------------------------------------------


def _decode_data_uri(url: str) -> bytes:
    header, _, data = url.partition(",")
    if ";base64" in header:
        return base64.b64decode(data, validate=False)
    return unquote(data).encode("latin-1")


def load_image(url: str, loc: list, store: FileStore,
               spec: EndpointSpec) -> Image.Image:
    """Fetch an input image from a data: URI or this server's /files/ store."""
    try:
        if url.startswith("data:"):
            data = _decode_data_uri(url)
        else:
            parsed = urlparse(url)
            match = _FILE_PATH_RE.match(parsed.path)
            stored = store.get(match.group(1)) if parsed.scheme in ("http", "https") and match else None
            if stored is None:
                raise LookupError(url)
            data = stored.data
        img = Image.open(io.BytesIO(data))
        img.load()
    except (LookupError, ValueError, binascii.Error):
        raise _validation_error([field_error(
            loc, "Failed to download the file. Please check if the URL is accessible.",
            "file_download_error", url[:200])])
    except (UnidentifiedImageError, OSError):
        raise _validation_error([field_error(loc, "Could not decode the image file.",
                                             "image_load_error", url[:200])])
    limits = spec.image_limits
    if limits and (img.width * img.height >= limits.max_pixels
                   or max(img.size) >= limits.max_side or len(data) >= limits.max_bytes):
        raise _validation_error([field_error(
            loc, f"Image too large: must be under {limits.max_pixels} pixels, "
                 f"{limits.max_side}px per side and {limits.max_bytes} bytes.",
            "image_too_large", url[:200])])
    return img.convert("RGB")


def _convert_mode(img: Image.Image, mode: str) -> Image.Image:
    if mode == "P":
        return img.convert("P", palette=Image.Palette.ADAPTIVE, colors=256)
    return img.convert(mode)


def encode_image(img: Image.Image, fmt: str, result_mode: str | None) -> tuple[bytes, str, str]:
    """Encode to bytes; returns (data, content_type, extension).

    result_mode forces odd Pillow modes so clients' decoders get exercised;
    the container follows what the mode can be stored in (CMYK -> JPEG,
    alpha/palette -> PNG).
    """
    if result_mode:
        img = _convert_mode(img, result_mode)
        if result_mode == "CMYK":
            fmt = "jpeg"
        elif result_mode in ("RGBA", "LA", "P"):
            fmt = "png"
    buf = io.BytesIO()
    if fmt == "jpeg":
        img = img if img.mode in ("RGB", "L", "CMYK") else img.convert("RGB")
        img.save(buf, format="JPEG", quality=92)
        return buf.getvalue(), "image/jpeg", "jpg"
    if fmt in ("webp", "gif"):   # both keep a cut-out's transparency
        img.save(buf, format=fmt.upper(), **({"lossless": True} if fmt == "webp" else {}))
        return buf.getvalue(), f"image/{fmt}", fmt
    img.save(buf, format="PNG")
    return buf.getvalue(), "image/png", "png"


# Inputs that multiply the images a request makes, as fal's endpoints document them:
# num_images; Seedream's max_images ("up to" that many per generation: the emulator makes
# the most); FASHN's num_samples; Omni Zero's number_of_images; Bria's num_results; Qwen
# Image Layered's num_layers (4 by default).
_COUNT_FIELDS = ("num_images", "max_images", "num_samples", "number_of_images", "num_results",
                 "num_layers")
# Bria product shot: "num_results x 10 results when placement_type=automatic".
_CHOICE_COUNTS = {("placement_type", "automatic"): 10}


def _images_to_make(spec: EndpointSpec, params: dict) -> int:
    """How many images the job makes: one when the endpoint answers with a single image
    (IP-Adapter's num_samples is samples of the face, not outputs)."""
    if spec.from_catalogue and spec.output_fields[:1] != ("images",):
        return 1
    count = 1
    for name in _COUNT_FIELDS:
        value = params.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 1:
            count *= math.ceil(value)
    for (name, choice), factor in _CHOICE_COUNTS.items():
        if params.get(name) == choice:
            count *= factor
    return count


# fal's image_size presets, width x height.
_SIZE_PRESETS = {"square_hd": (1024, 1024), "square": (512, 512), "portrait_4_3": (768, 1024),
                 "portrait_16_9": (576, 1024), "landscape_4_3": (1024, 768),
                 "landscape_16_9": (1024, 576), "auto_2K": (2048, 2048), "auto_4K": (4096, 4096)}
_MAX_SIDE = 4096


def _output_size(params: dict, img: Image.Image) -> tuple[int, int] | None:
    """The size a catalogue endpoint's arguments ask for: image_size (a preset or
    {width, height}) or the input `img` times scale_factor; None to keep the op's size."""
    size = params.get("image_size")
    if isinstance(size, dict) and all(isinstance(size.get(k), (int, float)) for k in
                                      ("width", "height")):
        wanted = (size["width"], size["height"])
    elif isinstance(size, str) and size in _SIZE_PRESETS:
        wanted = _SIZE_PRESETS[size]
    elif isinstance(params.get("scale_factor"), (int, float)) and params["scale_factor"] > 1:
        wanted = (img.width * params["scale_factor"], img.height * params["scale_factor"])
    else:
        return None
    return (max(1, min(_MAX_SIDE, round(wanted[0]))), max(1, min(_MAX_SIDE, round(wanted[1]))))


def _payload_seed(payload: Any) -> int:
    """Seed for endpoints without a seed input: derived from the inputs so the
    output is still deterministic."""
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:4], "big") & 0x7FFFFFFF


# ----- the server -------------------------------------------------------------


class EmulatorServer:
    def __init__(self, state: EmulatorState) -> None:
        self.state = state
        self.files = FileStore()
        self.jobs: dict[str, Job] = {}
        self.cdn_tokens: dict[str, str] = {}          # token -> API key that got it
        self.pending_uploads: dict[str, tuple] = {}   # file_id -> (content_type, name)
        self.gate = ConcurrencyGate(state)
        self.stopping = asyncio.Event()

    # --- plumbing shared by all routes ---------------------------------------

    @staticmethod
    def _key(request: web.Request) -> str | None:
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        return key.strip() if scheme.lower() == "key" and key.strip() else None

    def _auth_error(self, key: str | None) -> web.Response | None:
        if key is None:
            return _json({"detail": "No credentials"}, 401)
        if key in self.state.rejected_keys:
            return _json({"detail": "Invalid credentials"}, 401)
        if key in self.state.forbidden_keys:
            return _json({"detail": _FORBIDDEN_DETAIL}, 403)
        return None

    async def _sleep(self, seconds: float) -> bool:
        """Sleep, but wake at once when the server stops. True if stopping."""
        try:
            await asyncio.wait_for(self.stopping.wait(), timeout=max(seconds, 0))
        except asyncio.TimeoutError:
            return False
        return True

    async def _enter(self, request: web.Request, kind: str, stage: str, *,
                     endpoint: str | None = None, request_id: str | None = None,
                     auth: bool = True, key_hint: str | None = None,
                     **extra: Any) -> web.StreamResponse | None:
        """Log the request, apply an injected fault, check the API key.

        Returns a response to send instead of the normal one, or None. Only
        the key's last 4 characters are ever logged.
        """
        key = self._key(request)
        if key_hint is None and key:
            key_hint = key[-4:]
        entry = self.state.record(kind, endpoint=endpoint, request_id=request_id,
                                  key_hint=key_hint, path=request.path, **extra)
        rule = self.state.take_fault(stage, endpoint)
        if rule is not None:
            entry["fault"] = rule.kind
            response = await self._fault_response(request, rule)
            if response is not None:
                return response
        return self._auth_error(key) if auth else None

    async def _fault_response(self, request: web.Request,
                              rule: FaultRule) -> web.StreamResponse | None:
        kind = rule.kind
        if kind == "stall":
            if await self._sleep(self.state.stall_s):
                return _json({"detail": "Server shutting down"}, 503)
            return None  # then answer normally, just late
        if kind == "reset":
            request.transport.abort()  # connection dies with no response at all
            return web.Response(status=599)  # never reaches the wire
        if kind == "truncate":
            # Promise more bytes than we send, then close: the client sees a
            # premature end of body (httpx RemoteProtocolError).
            body = b'{"detail": "partial'
            raw = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                   b"Content-Length: %d\r\n\r\n" % (len(body) + 512)) + body
            request.transport.write(raw)
            request.transport.close()
            return web.Response(status=599)  # never reaches the wire
        if kind == "malformed_json":
            return web.Response(status=200, text='{"request_id": "oops", "status": ',
                                content_type="application/json")
        if kind == "expired":
            return _json({"detail": "File not found or expired"}, 404)
        if kind in (502, 503, 504):
            reason = {502: "Bad Gateway", 503: "Service Temporarily Unavailable",
                      504: "Gateway Time-out"}[kind]
            return web.Response(status=kind, content_type="text/html",
                                text=_NGINX_BODY.format(code=kind, reason=reason))
        if kind == 429:
            headers = {}
            if rule.retry_after is not None:
                headers["Retry-After"] = f"{rule.retry_after:g}"
            return _json({"detail": "Rate limit exceeded"}, 429, **headers)
        if kind == 401:
            return _json({"detail": "Invalid credentials"}, 401)
        if kind == 403:
            return _json({"detail": _FORBIDDEN_DETAIL}, 403)
        if kind == 422:
            return _json({"detail": [field_error([], "Injected validation error",
                                                 "value_error")]}, 422)
        return _json({"detail": "Internal Server Error"}, 500)

    @staticmethod
    def _base(request: web.Request) -> str:
        return str(request.url.origin()) + "/"

    # --- storage / CDN ----------------------------------------------------------

    async def token(self, request: web.Request) -> web.StreamResponse:
        if (r := await self._enter(request, "token", "token")) is not None:
            return r
        token = secrets.token_urlsafe(24)
        self.cdn_tokens[token] = self._key(request)
        expires = datetime.now(timezone.utc) + timedelta(hours=1)
        return _json({"token": token, "token_type": "Bearer",
                      "base_url": self._base(request) + "cdn",
                      "expires_at": expires.isoformat()})

    def _upload_name(self, request: web.Request, content_type: str) -> str:
        name = request.headers.get("X-Fal-File-Name")
        if name:
            return name.replace("/", "_")
        ext = mimetypes.guess_extension(content_type.split(";")[0].strip()) or ".bin"
        return "upload" + ext

    async def cdn_upload(self, request: web.Request) -> web.StreamResponse:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        key = self.cdn_tokens.get(token) if scheme.lower() == "bearer" else None
        data = await request.read()
        content_type = request.headers.get("Content-Type", "application/octet-stream")
        r = await self._enter(request, "upload", "upload", auth=False,
                              key_hint=key[-4:] if key else None,
                              bytes=len(data), sha256=hashlib.sha256(data).hexdigest(),
                              content_type=content_type)
        if r is not None:
            return r
        if key is None:
            return _json({"detail": "Invalid or missing CDN token"}, 401)
        name = self._upload_name(request, content_type)
        file_id = self.files.put(data, content_type, name)
        return _json({"access_url": FileStore.url(self._base(request), file_id, name),
                      "content_type": content_type, "file_name": name,
                      "file_size": len(data)})

    async def upload_initiate(self, request: web.Request) -> web.StreamResponse:
        if (r := await self._enter(request, "upload_initiate", "token")) is not None:
            return r
        body = await request.json()
        content_type = body.get("content_type") or "application/octet-stream"
        name = (body.get("file_name") or "upload.bin").replace("/", "_")
        file_id = uuid.uuid4().hex
        self.pending_uploads[file_id] = (content_type, name)
        base = self._base(request)
        return _json({"upload_url": f"{base}rest/storage/upload/put/{file_id}",
                      "file_url": FileStore.url(base, file_id, name)})

    async def upload_put(self, request: web.Request) -> web.StreamResponse:
        data = await request.read()
        file_id = request.match_info["file_id"]
        content_type, name = self.pending_uploads.get(file_id, (None, None))
        r = await self._enter(request, "upload", "upload", auth=False,
                              bytes=len(data), sha256=hashlib.sha256(data).hexdigest(),
                              content_type=request.headers.get("Content-Type", content_type))
        if r is not None:
            return r
        if name is None:
            return _json({"detail": "Unknown upload"}, 404)
        self.files.put(data, request.headers.get("Content-Type", content_type), name, file_id)
        return web.Response(status=200)

    async def file_get(self, request: web.Request) -> web.StreamResponse:
        file_id = request.match_info["file_id"]
        if (r := await self._enter(request, "file", "file", auth=False,
                                   request_id=file_id)) is not None:
            return r
        stored = self.files.get(file_id)
        if stored is None:
            return _json({"detail": "File not found"}, 404)
        return web.Response(body=stored.data, content_type=stored.content_type.split(";")[0])

    # --- queue ------------------------------------------------------------------

    def _new_job(self, request: web.Request, job_id: str, spec: EndpointSpec,
                 payload: Any) -> Job:
        outcome = self.state.take_fault("submit", spec.endpoint_id, kinds=JOB_OUTCOME_KINDS)
        job = Job(id=job_id, spec=spec, payload=payload, base=self._base(request),
                  outcome=outcome.kind if outcome else None)
        self.jobs[job.id] = job
        job.task = asyncio.get_running_loop().create_task(self._run_job(job))
        return job

    async def _read_payload(self, request: web.Request) -> Any:
        try:
            return await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None

    async def _accept(self, request: web.Request, kind: str) -> Job | web.StreamResponse:
        """Log, fault-check and authorise a new request (queue submit or sync run); start its job."""
        endpoint = request.match_info["endpoint"].strip("/")
        payload = await self._read_payload(request)
        job_id = str(uuid.uuid4())  # chosen up front so the log entry carries it
        if (r := await self._enter(request, kind, kind, endpoint=endpoint,
                                   request_id=job_id, payload=payload)) is not None:
            return r
        spec = ENDPOINTS.get(endpoint)
        if spec is None or endpoint in self.state.retired_endpoints:
            return _json({"detail": f"Application '{endpoint}' not found"}, 404)
        return self._new_job(request, job_id, spec, payload)

    async def submit(self, request: web.Request) -> web.StreamResponse:
        job = await self._accept(request, "submit")
        if not isinstance(job, Job):
            return job
        return _json({"request_id": job.id, **job.urls,
                      "queue_position": self._queue_position(job)},
                     **{"x-fal-request-id": job.id})

    async def run(self, request: web.Request) -> web.StreamResponse:
        job = await self._accept(request, "run")
        if not isinstance(job, Job):
            return job
        await asyncio.shield(job.task)
        return self._result_response(job)

    def _lookup(self, request: web.Request) -> Job | None:
        job = self.jobs.get(request.match_info["request_id"])
        if job is None:
            return None
        owner, alias = job.spec.endpoint_id.split("/")[:2]
        if (request.match_info["owner"], request.match_info["alias"]) != (owner, alias):
            return None
        return job

    async def _enter_job(self, request: web.Request, kind: str) -> tuple:
        job = self._lookup(request)
        r = await self._enter(request, kind, kind, request_id=request.match_info["request_id"],
                              endpoint=job.spec.endpoint_id if job else None)
        if r is None and job is None:
            r = _json({"detail": "Request not found"}, 404)
        return job, r

    def _queue_position(self, job: Job) -> int:
        ahead = sum(1 for j in self.jobs.values()
                    if j.status == "IN_QUEUE" and j.created < job.created)
        delay, remaining = self.state.queue_delay_s, job.queue_until - time.monotonic()
        if delay > 0 and remaining > 0:
            ahead += math.ceil(remaining / delay * self.state.queue_delay_positions)
        return ahead

    async def status(self, request: web.Request) -> web.StreamResponse:
        job, r = await self._enter_job(request, "status")
        if r is not None:
            return r
        with_logs = request.query.get("logs", "").lower() in ("1", "true")
        return _json(self._status_body(job, with_logs), **{"x-fal-request-id": job.id})

    async def status_stream(self, request: web.Request) -> web.StreamResponse:
        """fal's server-sent status events: the status object on every change, until
        COMPLETED. `status_stream` in the state plays a server that does not serve it
        ("off": 404), drops it after the first event ("drop") or buffers it like a proxy
        that holds the body until the end ("buffer")."""
        job = self._lookup(request)
        # Faults injected for "status" hit the stream too: it is the same information.
        r = await self._enter(request, "status_stream", "status",
                              request_id=request.match_info["request_id"],
                              endpoint=job.spec.endpoint_id if job else None)
        if r is not None:
            return r
        mode = self.state.status_stream
        if job is None or mode == "off":
            return _json({"detail": "Not Found"}, 404)
        with_logs = request.query.get("logs", "").lower() in ("1", "true")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                               "Cache-Control": "no-cache",
                                               "x-fal-request-id": job.id})
        await response.prepare(request)
        try:
            await self._stream_statuses(request, response, job, mode, with_logs)
        except ConnectionResetError:
            pass    # the client went away (a run cancelled or interrupted): nothing to say
        return response

    async def _stream_statuses(self, request: web.Request, response: web.StreamResponse,
                               job: Job, mode: str, with_logs: bool) -> None:
        sent, held = None, []
        while True:
            body = self._status_body(job, with_logs)
            if body != sent:
                event = b"data: " + json.dumps(body).encode() + b"\n\n"
                if mode == "buffer":
                    held.append(event)
                else:
                    await response.write(event)
                sent = body
                if mode == "drop":
                    request.transport.abort()
                    return
            if job.status == "COMPLETED":
                break
            # Queue positions count down without an event of their own: look again soon.
            await job.wait_for_change(0.25 if job.status == "IN_QUEUE" else 5.0)
            if self.stopping.is_set():
                break
        for event in held:
            await response.write(event)
        await response.write_eof()

    def _status_body(self, job: Job, with_logs: bool) -> dict:
        body: dict = {"status": job.status, "request_id": job.id, **job.urls}
        if job.status == "IN_QUEUE":
            body["queue_position"] = self._queue_position(job)
        else:
            body["logs"] = list(job.logs) if with_logs else None
        if job.status == "COMPLETED":
            body["metrics"] = {"inference_time": round((job.finished or 0) - (job.started or job.finished or 0), 4)}
            if job.error is not None:
                body["error"], body["error_type"] = job.error.message, job.error.error_type
        return body

    def _bill(self, job: Job) -> None:
        """Enter what fal bills for this job (once), for its result's header and the bill."""
        if job.billable_units is not None or job.made is None:
            return
        params, files = job.made
        run_s = time.monotonic() - (job.started or time.monotonic())
        job.billable_units = billing.billable_units(job.spec.endpoint_id, params, files, run_s)
        billing.bill(self.state, job.spec.endpoint_id, job.id, job.billable_units)

    def _result_response(self, job: Job) -> web.Response:
        headers = {"x-fal-request-id": job.id}
        if job.billable_units is not None:   # fal's billed quantity for this request
            headers["x-fal-billable-units"] = f"{job.billable_units:g}"
        if job.status != "COMPLETED":
            return _json({"detail": "Request is still in progress"}, 400, **headers)
        if job.error is not None:
            return _json(job.error.body, job.error.status, **headers)
        return _json(job.result, **headers)

    async def result(self, request: web.Request) -> web.StreamResponse:
        job, r = await self._enter_job(request, "result")
        return r if r is not None else self._result_response(job)

    async def cancel(self, request: web.Request) -> web.StreamResponse:
        job, r = await self._enter_job(request, "cancel")
        if r is not None:
            return r
        headers = {"x-fal-request-id": job.id}
        if job.status == "COMPLETED":
            return _json({"status": "ALREADY_COMPLETED"}, 400, **headers)
        # Mark now (not when the task notices) so the next status poll agrees.
        self._finish(job, RequestError(400, {"detail": "Request was cancelled"},
                                       "Request was cancelled", "request_cancelled"))
        job.cancelled = True
        job.task.cancel()
        return _json({"status": "CANCELLATION_REQUESTED"}, 202, **headers)

    # --- job execution -----------------------------------------------------------

    def _finish(self, job: Job, error: RequestError | None = None,
                result: dict | None = None) -> None:
        if job.status == "COMPLETED":
            return
        job.error, job.result = error, result
        job.finished = time.monotonic()
        job.status = "COMPLETED"
        job.changed()
        # Lets out-of-process clients (the benchmark) see when fal finished a job.
        self.state.record("finished", endpoint=job.spec.endpoint_id, request_id=job.id,
                          error_type=error.error_type if error else None)

    async def _run_job(self, job: Job) -> None:
        state = self.state
        acquired = False
        work = None
        try:
            job.queue_until = time.monotonic() + state.queue_delay_s
            await asyncio.sleep(state.queue_delay_s)
            await self.gate.acquire(job)
            acquired = True
            job.status, job.started = "IN_PROGRESS", time.monotonic()
            job.changed()
            # The image work runs during the processing time, not after it: latency_s is
            # how long fal takes for a request, as real fal's parallel workers would.
            work = asyncio.get_running_loop().run_in_executor(None, self._process, job)
            # If the job is cancelled or fails first, its outcome is not wanted (nor warned of).
            work.add_done_callback(lambda f: f.cancelled() or f.exception())
            steps = max(1, state.progress_steps)
            for i in range(1, steps + 1):
                job.log(f"step {i}/{steps}")
                await asyncio.sleep(state.latency_s / steps)
            if job.outcome == "app_error":
                raise RequestError(500, {"detail": "Internal error in the application (injected)"},
                                   "Internal error in the application (injected)", "app_error")
            result = await work
            job.log("done")
            self._bill(job)
            self._finish(job, result=result)
        except RequestError as exc:
            job.log(exc.message, "ERROR")
            self._finish(job, error=exc)
        except asyncio.CancelledError:
            self._finish(job, RequestError(400, {"detail": "Request was cancelled"},
                                           "Request was cancelled", "request_cancelled"))
            if job.started is not None and work is not None:   # fal finishes it, and bills it
                work.add_done_callback(lambda f: f.cancelled() or f.exception() or self._bill(job))
        except Exception as exc:  # a bug in an op should look like an app crash, not hang
            self._finish(job, RequestError(500, {"detail": f"Emulator error: {exc!r}"},
                                           str(exc), "app_error"))
        finally:
            if acquired:
                await self.gate.release()

    def _process(self, job: Job) -> dict:
        """Validate, fetch inputs, run the op, encode and store outputs.

        Runs on a worker thread so image work does not block the event loop.
        """
        spec, state = job.spec, self.state
        params, errors = validate(spec, job.payload)
        if errors:
            raise _validation_error(errors)
        images, masks = [], 0
        for name in spec.image_fields:
            # An optional image field left out: fal would use its example default, if any.
            if params.get(name) is None or name not in job.payload:
                continue
            urls = params[name] if isinstance(params[name], list) else [params[name]]
            locs = [[name, i] for i in range(len(urls))] if isinstance(params[name], list) else [[name]]
            images += [load_image(u, loc, self.files, spec) for u, loc in zip(urls, locs)]
            masks += len(urls) if name in spec.mask_fields else 0

        has_seed = "seed" in spec.fields
        seed = params.get("seed")
        if seed is None:
            seed = random.randint(0, 2**31 - 1) if has_seed else _payload_seed(job.payload)
        prompt = params.get("prompt") or ""
        nsfw = (spec.nsfw_check and bool(_NSFW_RE.search(prompt))
                and params.get("enable_safety_checker", True))
        size = state.next_output_size()
        fmt = params.get("output_format") or spec.default_format

        files, flags = [], []
        for i in range(_images_to_make(spec, params)):
            img = spec.op(images, params, seed + i, masks) if spec.from_catalogue else \
                spec.op(images, params, seed + i)
            wanted = size or (_output_size(params, images[0] if images else img)
                              if spec.from_catalogue else None)
            if wanted and wanted != img.size:
                img = img.resize(wanted, Image.Resampling.LANCZOS)
            if nsfw:  # fal blacks out flagged images
                img = Image.new("RGB", img.size)
            flags.append(nsfw)
            files.append(self._store_output(job, img, fmt, params.get("sync_mode")))
        if job.outcome == "no_images":
            files, flags = [], []
        job.made = (params, files)   # what fal bills: the images it made
        return self._build_output(spec, files, flags, seed, prompt, params, job, images)

    def _store_output(self, job: Job, img: Image.Image, fmt: str, sync_mode: bool) -> dict:
        data, content_type, ext = encode_image(img, fmt, self.state.result_mode)
        name = f"{uuid.uuid4().hex[:12]}.{ext}"
        if sync_mode:  # fal returns data URIs and keeps nothing on the CDN
            url = f"data:{content_type};base64,{base64.b64encode(data).decode()}"
        else:
            url = FileStore.url(job.base, self.files.put(data, content_type, name), name)
        return {"url": url, "content_type": content_type, "file_name": name,
                "file_size": len(data), "width": img.width, "height": img.height}

    def _build_output(self, spec: EndpointSpec, files: list, flags: list, seed: int,
                      prompt: str, params: dict, job: Job, images: list | None = None) -> dict:
        shape = spec.output
        if shape == "images":
            return {"images": files}
        if shape == "images_seed":
            return {"images": files, "seed": seed}
        if shape == "files":  # fal "File" objects carry no dimensions
            return {"images": [{k: v for k, v in f.items() if k not in ("width", "height")}
                               for f in files]}
        if shape == "flux":
            return {"images": files, "timings": {"inference": round(time.monotonic() - job.started, 4)},
                    "seed": seed, "has_nsfw_concepts": flags, "prompt": prompt}
        if shape == "catalogue":   # the output shape the catalogue gives for the endpoint
            where = spec.output_fields[0]
            out: dict = {where: files if where == "images" else (files[0] if files else None)}
            if spec.nsfw_check:
                out["has_nsfw_concepts"] = flags
            if "seed" in spec.output_fields:
                out["seed"] = seed
            if "prompt" in spec.output_fields:
                out["prompt"] = prompt
            if "timings" in spec.output_fields:
                out["timings"] = {"inference": round(time.monotonic() - job.started, 4)}
            if "mask_image" in spec.output_fields and params.get("output_mask") and images:
                # Background removal's optional matte: white where the subject is.
                matte = Image.fromarray(imageops.cutout_matte(*images[0].size), "L")
                out["mask_image"] = self._store_output(job, matte, "png", params.get("sync_mode"))
            return out
        if shape == "seededit":
            if self.state.seededit_image_as_list:
                return {"image": files, "seed": seed}
            return {"image": files[0] if files else None, "seed": seed}
        raise ValueError(f"unknown output shape {shape}")

    # --- fal Platform API ---------------------------------------------------------

    async def pricing(self, request: web.Request) -> web.StreamResponse:
        """GET /v1/models/pricing?endpoint_id=a&endpoint_id=b, as fal's Platform API."""
        wanted = request.query.getall("endpoint_id", [])
        response = await self._enter(request, "pricing", "pricing", endpoints=wanted)
        if response is not None:
            return response
        unknown = [e for e in wanted if e not in PRICES]
        if unknown:
            return _json({"error": {"type": "not_found",
                                    "message": f"Unknown endpoint: {unknown[0]}"}}, 404)
        return self._json_prices({e: PRICES[e] for e in (wanted or sorted(PRICES))})

    @staticmethod
    def _json_prices(quotes: dict) -> web.Response:
        """fal's price list answer for {endpoint_id: (unit price, unit)}."""
        prices = [{"endpoint_id": e, "unit_price": price, "unit": unit, "currency": "USD"}
                  for e, (price, unit) in quotes.items()]
        return _json({"prices": prices, "next_cursor": None, "has_more": False})

    # --- emulator control ------------------------------------------------------

    async def get_config(self, request: web.Request) -> web.Response:
        return _json(self.state.snapshot())

    async def set_config(self, request: web.Request) -> web.Response:
        try:
            self.state.configure(**await request.json())
        except (ValueError, TypeError) as exc:
            return _json({"detail": str(exc)}, 400)
        return _json(self.state.snapshot())

    async def get_log(self, request: web.Request) -> web.Response:
        """The log; ?since=N gives only entries N.. (X-Log-Length: the full length)."""
        try:
            since = max(0, int(request.query.get("since", 0)))
        except ValueError:
            return _json({"detail": "since must be an integer"}, 400)
        with self.state._lock:
            entries, length = list(self.state.log[since:]), len(self.state.log)
        return _json(entries, **{"X-Log-Length": str(length)})

    async def reset(self, request: web.Request) -> web.Response:
        self.state.reset()
        return _json({"ok": True})

    async def shutdown(self) -> None:
        """Wake stalled handlers and stop jobs so the server can exit promptly."""
        self.stopping.set()
        for job in self.jobs.values():
            if job.task and not job.task.done():
                job.task.cancel()


async def _on_shutdown(app: web.Application) -> None:
    await app[EMULATOR].shutdown()


EMULATOR = web.AppKey("emulator", EmulatorServer)


def create_app(state: EmulatorState | None = None) -> web.Application:
    server = EmulatorServer(state or EmulatorState())
    app = web.Application(client_max_size=256 * 1024 * 1024)
    app[EMULATOR] = server
    app.on_shutdown.append(_on_shutdown)
    q = "/queue/{owner}/{alias}/requests/{request_id}"
    app.router.add_get(q + "/status", server.status)
    app.router.add_get(q + "/status/stream", server.status_stream)
    app.router.add_put(q + "/cancel", server.cancel)
    app.router.add_get(q, server.result)
    app.router.add_post("/queue/{endpoint:.+}", server.submit)
    app.router.add_post("/run/{endpoint:.+}", server.run)
    app.router.add_post("/rest/storage/auth/token", server.token)
    app.router.add_post("/rest/storage/upload/initiate", server.upload_initiate)
    app.router.add_put("/rest/storage/upload/put/{file_id}", server.upload_put)
    app.router.add_post("/cdn/files/upload", server.cdn_upload)
    app.router.add_get("/files/{file_id}/{name}", server.file_get)
    app.router.add_get("/v1/models/pricing", server.pricing)
    app.router.add_get("/_emulator/config", server.get_config)
    app.router.add_post("/_emulator/config", server.set_config)
    app.router.add_get("/_emulator/log", server.get_log)
    app.router.add_post("/_emulator/reset", server.reset)
    return app
