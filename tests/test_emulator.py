"""Tests of the local fal.ai emulator, driven by the real fal-client."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

# The repo root is a ComfyUI package (has __init__.py); import the emulator as
# a top-level package rather than through the root package.
REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import fal_client  # noqa: E402
import fal_client.client as fal_client_module  # noqa: E402

from fal_emulator import ENDPOINTS, EmulatorState, FalEmulator, client_globals  # noqa: E402

KEY = "test-key-0000"
FLUX = "fal-ai/flux/dev/image-to-image"
SEEDEDIT = "fal-ai/bytedance/seededit/v3/edit-image"
BG = "fal-ai/image-editing/background-change"

# ----- fixtures ---------------------------------------------------------------


@pytest.fixture(scope="module")
def emulator():
    with FalEmulator() as emu:
        yield emu


@pytest.fixture
def state(emulator) -> EmulatorState:
    emulator.reset()
    yield emulator.state
    emulator.reset()


@pytest.fixture
def fal(emulator, state, monkeypatch):
    """A real AsyncClient whose hosts point at the emulator."""
    for name, value in client_globals(emulator.base_url).items():
        monkeypatch.setattr(fal_client_module, name, value)
    return fal_client.AsyncClient(key=KEY)


def make_image(w: int = 64, h: int = 48) -> Image.Image:
    """Grey background with a red square: has a border colour and a subject."""
    arr = np.full((h, w, 3), 190, np.uint8)
    arr[:, :, 2] = np.linspace(150, 230, w, dtype=np.uint8)[None, :]
    arr[h // 4: 3 * h // 4, w // 3: 2 * w // 3] = (200, 40, 40)
    return Image.fromarray(arr)


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


async def upload(fal, img: Image.Image | None = None) -> str:
    return await fal.upload(png_bytes(img or make_image()), "image/png", "input.png")


async def fetch_image(url: str) -> Image.Image:
    if url.startswith("data:"):
        data = base64.b64decode(url.split(",", 1)[1])
    else:
        async with httpx.AsyncClient() as http:
            response = await http.get(url)
            response.raise_for_status()
            data = response.content
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def first_image(result: dict) -> dict:
    image = result["images"][0] if "images" in result else result["image"]
    return image[0] if isinstance(image, list) else image


def args_for(endpoint: str, url: str, **extra) -> dict:
    """Minimal valid arguments for each endpoint."""
    args = {"image_url": url, "prompt": "a red cat"}
    if endpoint.endswith("/multi"):
        args = {"image_urls": [url, url], "prompt": "a red cat"}
    if "luma" in endpoint:
        args.update(strength=0.6, aspect_ratio="16:9")
    if "recraft" in endpoint:
        args["colors"] = [{"r": 20, "g": 20, "b": 120}, {"r": 240, "g": 220, "b": 40}]
    if "prompt" not in ENDPOINTS[endpoint].fields:   # the emulator refuses unknown fields
        del args["prompt"]
    return {**args, **extra}


# ----- upload & files ---------------------------------------------------------


@pytest.mark.asyncio
async def test_upload_v3_and_file_serving(fal, state, emulator):
    data = png_bytes(make_image())
    url = await fal.upload(data, "image/png", "input.png")
    assert url.startswith(emulator.base_url + "files/") and url.endswith("/input.png")
    async with httpx.AsyncClient() as http:
        response = await http.get(url)
    assert response.content == data and response.headers["content-type"] == "image/png"

    assert state.count("token") == 1
    (entry,) = state.entries("upload")
    assert entry["bytes"] == len(data) and entry["content_type"] == "image/png"
    assert entry["key_hint"] == "0000" and len(entry["sha256"]) == 64
    assert KEY not in json.dumps(state.log, default=str)  # only the hint is logged


@pytest.mark.asyncio
async def test_token_fault_falls_back_to_storage_upload(fal, state):
    state.add_fault("token", 500)
    url = await upload(fal)
    assert (await fetch_image(url)).size == (64, 48)
    assert state.count("upload_initiate") == 1 and state.count("upload") == 1


# ----- every endpoint ----------------------------------------------------------

OUTPUT_KEYS = {
    "images_seed": {"images", "seed"},
    "images": {"images"},
    "files": {"images"},
    "flux": {"images", "seed", "has_nsfw_concepts", "prompt", "timings"},
    "seededit": {"image", "seed"},
}


@pytest.mark.parametrize("endpoint", sorted(e for e, s in ENDPOINTS.items() if not s.from_catalogue))
@pytest.mark.asyncio
async def test_endpoint_roundtrip(fal, state, endpoint):
    source = make_image()
    url = await upload(fal, source)
    handle = await fal.submit(endpoint, args_for(endpoint, url))
    result = await handle.get()
    status = await handle.status(with_logs=True)

    assert isinstance(status, fal_client.Completed) and status.error is None
    assert set(result) == OUTPUT_KEYS[ENDPOINTS[endpoint].output]
    meta = first_image(result)
    out = await fetch_image(meta["url"])
    assert meta["file_size"] > 0 and meta["content_type"] == Image.MIME[out.format]
    if "width" in meta:
        assert (meta["width"], meta["height"]) == out.size
    if "luma" in endpoint:
        assert abs(out.width / out.height - 16 / 9) < 0.05
    elif endpoint.endswith("/multi"):
        assert out.size == (128, 48)  # two references side by side
    else:
        assert out.size == source.size
    reference = source.resize(out.size) if out.size != source.size else source
    diff = np.abs(np.asarray(out.convert("RGB"), float) - np.asarray(reference, float)).mean()
    assert diff > 1.0, "the endpoint must actually change the image"
    assert state.count("submit", endpoint) == 1 and state.count("result", endpoint) == 1


@pytest.mark.asyncio
async def test_deterministic_per_seed_and_distinct_num_images(fal, state):
    url = await upload(fal)
    a = await (await fal.submit(FLUX, args_for(FLUX, url, seed=7, num_images=2))).get()
    b = await (await fal.submit(FLUX, args_for(FLUX, url, seed=7))).get()
    c = await (await fal.submit(FLUX, args_for(FLUX, url, seed=8))).get()
    pix = [np.asarray(await fetch_image(m["url"])) for m in
           (a["images"][0], a["images"][1], b["images"][0], c["images"][0])]
    assert a["seed"] == 7 and len(a["images"]) == 2 and a["has_nsfw_concepts"] == [False] * 2
    assert np.array_equal(pix[0], pix[2])
    assert not np.array_equal(pix[0], pix[1]) and not np.array_equal(pix[0], pix[3])


@pytest.mark.asyncio
async def test_sharpen_modes_increase_detail(fal, state):
    url = await upload(fal, make_image().resize((64, 48)))
    src = np.asarray(make_image().convert("L"), float)
    for mode in ("basic", "smart", "cas"):
        result = await fal.run("fal-ai/post-processing/sharpen",
                               {"image_url": url, "sharpen_mode": mode})
        out = np.asarray((await fetch_image(result["images"][0]["url"])).convert("L"), float)
        assert np.abs(np.diff(out, axis=1)).sum() > np.abs(np.diff(src, axis=1)).sum(), mode
    assert state.count("run") == 3


# ----- queue behaviour ----------------------------------------------------------


@pytest.mark.asyncio
async def test_queue_positions_and_progress_logs(fal, state):
    state.queue_delay_s, state.latency_s = 0.4, 0.3
    url = await upload(fal)
    handle = await fal.submit(FLUX, args_for(FLUX, url))
    events = [e async for e in handle.iter_events(with_logs=True, interval=0.05)]

    positions = [e.position for e in events if isinstance(e, fal_client.Queued)]
    assert positions and positions[0] >= 2 and positions == sorted(positions, reverse=True)
    in_progress = [e for e in events if isinstance(e, fal_client.InProgress)]
    assert in_progress and any("step" in log["message"] for log in in_progress[-1].logs)
    done = events[-1]
    assert isinstance(done, fal_client.Completed) and done.metrics["inference_time"] >= 0.25
    assert {"message", "level", "source", "timestamp"} <= set(done.logs[0])


@pytest.mark.asyncio
async def test_max_concurrency_queues_extra_requests(fal, state):
    state.max_concurrency, state.latency_s = 1, 0.15
    url = await upload(fal)
    handles = [await fal.submit(FLUX, args_for(FLUX, url)) for _ in range(3)]
    third = await handles[2].status()
    assert isinstance(third, fal_client.Queued) and third.position >= 1
    results = await asyncio.gather(*(h.get() for h in handles))
    assert all(r["images"] for r in results)


@pytest.mark.asyncio
async def test_cancel(fal, state):
    state.latency_s = 5
    url = await upload(fal)
    handle = await fal.submit(FLUX, args_for(FLUX, url))
    await handle.cancel()
    status = await handle.status()
    assert isinstance(status, fal_client.Completed) and status.error == "Request was cancelled"
    with pytest.raises(fal_client.client.FalClientHTTPError) as exc:
        await handle.get()
    assert exc.value.status_code == 400
    with pytest.raises(fal_client.client.FalClientHTTPError) as exc:
        await handle.cancel()
    assert exc.value.status_code == 400 and "ALREADY_COMPLETED" in exc.value.response.text
    with pytest.raises(fal_client.client.FalClientHTTPError) as exc:
        await fal.cancel(FLUX, "00000000-0000-0000-0000-000000000000")
    assert exc.value.status_code == 404
    assert state.count("cancel") == 3


@pytest.mark.asyncio
async def test_result_before_completion_is_400(fal, state, emulator):
    state.latency_s = 5
    url = await upload(fal)
    handle = await fal.submit(FLUX, args_for(FLUX, url))
    async with httpx.AsyncClient(headers={"Authorization": f"Key {KEY}"}) as http:
        response = await http.get(handle.response_url)
    assert response.status_code == 400
    assert response.json() == {"detail": "Request is still in progress"}
    await handle.cancel()


# ----- validation & auth ----------------------------------------------------------


@pytest.mark.asyncio
async def test_enum_and_required_fields_give_422(fal, state):
    url = await upload(fal)
    handle = await fal.submit(BG, {"image_url": url, "output_format": "webp"})
    with pytest.raises(fal_client.client.FalClientHTTPError) as exc:
        await handle.get()
    assert exc.value.status_code == 422
    (err,) = exc.value.message
    assert err["loc"] == ["body", "output_format"] and err["type"] == "literal_error"
    status = await handle.status()
    assert isinstance(status, fal_client.Completed) and "output_format" in status.error

    with pytest.raises(fal_client.client.FalClientHTTPError) as exc:
        await fal.run("fal-ai/luma-photon/modify", {"image_url": url, "prompt": "hi"})
    locs = {tuple(e["loc"]) for e in exc.value.message}
    # Luma's prompt is optional at fal (its node still asks for 3 characters or more).
    assert locs == {("body", "strength"), ("body", "aspect_ratio")}


@pytest.mark.asyncio
async def test_bad_image_url_and_recraft_size_limit(fal, state, emulator):
    missing = emulator.base_url + "files/" + "0" * 32 + "/gone.png"
    with pytest.raises(fal_client.client.FalClientHTTPError) as exc:
        await fal.run(BG, {"image_url": missing})
    assert exc.value.status_code == 422 and exc.value.message[0]["loc"] == ["body", "image_url"]

    wide = await upload(fal, Image.new("RGB", (4096, 8)))
    with pytest.raises(fal_client.client.FalClientHTTPError) as exc:
        await fal.run("fal-ai/recraft/v3/image-to-image", {"image_url": wide, "prompt": "x"})
    assert exc.value.message[0]["type"] == "image_too_large"


@pytest.mark.asyncio
async def test_auth_errors(fal, state, emulator):
    async with httpx.AsyncClient() as http:
        response = await http.post(emulator.base_url + "queue/" + FLUX, json={})
    assert response.status_code == 401 and response.json() == {"detail": "No credentials"}

    state.rejected_keys = {"bad-key"}
    state.forbidden_keys = {"broke-key"}
    for key, code in (("bad-key", 401), ("broke-key", 403)):
        client = fal_client.AsyncClient(key=key)
        with pytest.raises(fal_client.client.FalClientHTTPError) as exc:
            await client.submit(FLUX, {"prompt": "x", "image_url": "data:,"})
        assert exc.value.status_code == code


# ----- faults --------------------------------------------------------------------

RETRIED = [("submit", 429), ("status", 502), ("result", 503), ("submit", 504),
           ("status", "reset"), ("result", "truncate"), ("upload", "reset"),
           ("cancel", 429)]


@pytest.mark.parametrize("stage,kind", RETRIED)
@pytest.mark.asyncio
async def test_retryable_fault_is_retried_by_fal_client(fal, state, stage, kind):
    if stage == "cancel":
        state.latency_s = 5
    url = await upload(fal) if stage != "upload" else None
    state.add_fault(stage, kind, times=1, endpoint=None if stage == "upload" else FLUX)
    if stage == "upload":
        url = await upload(fal)
    handle = await fal.submit(FLUX, args_for(FLUX, url))
    if stage == "cancel":
        await handle.cancel()
    else:
        assert (await handle.get())["images"]
    attempts = [e for e in state.entries(stage)]
    faulted = [e for e in attempts if e.get("fault") == kind]
    assert len(faulted) == 1 and len(attempts) >= 2, "one failure, then a retry"
    assert state.faults[0].times == 0


@pytest.mark.parametrize("stage,kind", [("submit", 500), ("status", 401), ("submit", 403),
                                        ("submit", 422), ("result", 500)])
@pytest.mark.asyncio
async def test_non_retryable_http_faults_surface(fal, state, stage, kind):
    url = await upload(fal)
    state.add_fault(stage, kind)
    with pytest.raises(fal_client.client.FalClientHTTPError) as exc:
        await (await fal.submit(FLUX, args_for(FLUX, url))).get()
    assert exc.value.status_code == kind and state.count(stage) == 1


@pytest.mark.asyncio
async def test_429_carries_retry_after(fal, state, emulator):
    state.add_fault("submit", 429, retry_after=2)
    async with httpx.AsyncClient(headers={"Authorization": f"Key {KEY}"}) as http:
        response = await http.post(emulator.base_url + "queue/" + FLUX, json={})
    assert response.status_code == 429 and response.headers["Retry-After"] == "2"


@pytest.mark.asyncio
async def test_malformed_json_and_stall(fal, state):
    url = await upload(fal)
    state.add_fault("result", "malformed_json")
    with pytest.raises(json.JSONDecodeError):
        await (await fal.submit(FLUX, args_for(FLUX, url))).get()

    state.stall_s = 0.3
    state.add_fault("status", "stall")
    started = time.monotonic()
    assert (await (await fal.submit(FLUX, args_for(FLUX, url))).get())["images"]
    assert time.monotonic() - started >= 0.3


@pytest.mark.asyncio
async def test_job_outcome_faults(fal, state):
    url = await upload(fal)
    state.add_fault("result", "no_images")
    assert (await fal.run(FLUX, args_for(FLUX, url)))["images"] == []

    state.add_fault("result", "app_error", endpoint=FLUX)
    handle = await fal.submit(FLUX, args_for(FLUX, url))
    with pytest.raises(fal_client.client.FalClientHTTPError) as exc:
        await handle.get()
    assert exc.value.status_code == 500
    assert (await handle.status()).error_type == "app_error"


@pytest.mark.asyncio
async def test_lost_answer_makes_the_job_and_loses_its_answer(fal, state, monkeypatch):
    """fal accepted the submit (the job runs, and is billed), the connection is reset before
    the answer: fal-client's submit posts again, and each post is another job."""
    monkeypatch.setattr(fal_client_module, "MAX_ATTEMPTS", 4)
    url = await upload(fal)
    state.add_fault("submit", "lost_answer", times=2, endpoint=FLUX)
    handle = await fal.submit(FLUX, args_for(FLUX, url))
    assert (await handle.get())["images"]
    lost = [e["request_id"] for e in state.entries("answer_lost")]
    assert len(lost) == 2 and state.count("submit") == 3
    await asyncio.sleep(0.2)
    finished = {e["request_id"] for e in state.entries("finished") if e["error_type"] is None}
    assert set(lost) <= finished, "the jobs whose answers were lost still ran"


@pytest.mark.asyncio
async def test_locked_account_refuses_submits_but_not_uploads(fal, state):
    state.locked_keys = {KEY}
    url = await upload(fal)
    with pytest.raises(fal_client.client.FalClientHTTPError) as exc:
        await fal.submit(FLUX, args_for(FLUX, url))
    assert exc.value.status_code == 403 and "User is locked" in str(exc.value.message)
    assert not state.entries("finished")


@pytest.mark.asyncio
async def test_start_timeout_ends_a_queued_job_unstarted(fal, state):
    """X-Fal-Request-Timeout: a job that has not started by then ends on fal's side with
    504 request_timeout (X-Fal-Request-Timeout-Type: user) and never runs."""
    url = await upload(fal)
    state.queue_delay_s = 5.0
    handle = await fal.submit(FLUX, args_for(FLUX, url), start_timeout=1.2)
    assert state.entries("submit")[-1]["request_id"] == handle.request_id
    with pytest.raises(fal_client.client.FalClientHTTPError) as exc:
        await handle.get()
    assert exc.value.status_code == 504
    assert exc.value.response_headers.get("x-fal-request-timeout-type") == "user"
    assert (await handle.status()).error_type == "request_timeout"
    [finished] = state.entries("finished")
    assert finished["started"] is False and finished["error_type"] == "request_timeout"

    state.queue_delay_s = 0.0      # started in time: the deadline no longer applies
    state.latency_s = 1.5
    handle = await fal.submit(FLUX, args_for(FLUX, url), start_timeout=1.2)
    assert (await handle.get())["images"]


@pytest.mark.asyncio
async def test_expired_file(fal, state):
    url = await upload(fal)
    state.add_fault("file", "expired")
    async with httpx.AsyncClient() as http:
        assert (await http.get(url)).status_code == 404
        assert (await http.get(url)).status_code == 200
    assert state.count("file") == 2


# ----- output variants --------------------------------------------------------------


@pytest.mark.asyncio
async def test_sync_mode_returns_data_uri(fal, state):
    url = await upload(fal)
    result = await fal.run(BG, {"image_url": url, "sync_mode": True, "output_format": "png"})
    meta = result["images"][0]
    assert meta["url"].startswith("data:image/png;base64,")
    assert (await fetch_image(meta["url"])).size == (64, 48)


@pytest.mark.asyncio
async def test_seededit_list_form(fal, state):
    url = await upload(fal)
    assert isinstance((await fal.run(SEEDEDIT, args_for(SEEDEDIT, url)))["image"], dict)
    state.seededit_image_as_list = True
    image = (await fal.run(SEEDEDIT, args_for(SEEDEDIT, url)))["image"]
    assert isinstance(image, list) and image[0]["url"]


@pytest.mark.parametrize("mode,fmt", [("RGBA", "PNG"), ("LA", "PNG"), ("P", "PNG"),
                                      ("L", "JPEG"), ("CMYK", "JPEG")])
@pytest.mark.asyncio
async def test_result_mode(fal, state, mode, fmt):
    state.result_mode = mode
    url = await upload(fal)
    meta = (await fal.run(BG, {"image_url": url}))["images"][0]
    out = await fetch_image(meta["url"])
    assert (out.mode, out.format) == (mode, fmt)


@pytest.mark.asyncio
async def test_output_sizes_cycle(fal, state):
    state.output_sizes = [[32, 32], [40, 20]]
    url = await upload(fal)
    sizes = [(await fetch_image((await fal.run(BG, {"image_url": url}))["images"][0]["url"])).size
             for _ in range(3)]
    assert sizes == [(32, 32), (40, 20), (32, 32)]


@pytest.mark.asyncio
async def test_nsfw_prompt(fal, state):
    url = await upload(fal)
    result = await fal.run(FLUX, args_for(FLUX, url, prompt="something NSFW here"))
    assert result["has_nsfw_concepts"] == [True]
    assert np.asarray(await fetch_image(result["images"][0]["url"])).max() <= 8  # black (jpeg)
    # Endpoints without has_nsfw_concepts ignore it.
    result = await fal.run(BG, {"image_url": url, "prompt": "nsfw"})
    assert "has_nsfw_concepts" not in result


# ----- control API & lifecycle -----------------------------------------------------------


@pytest.mark.asyncio
async def test_http_control_api(fal, state, emulator):
    async with httpx.AsyncClient(base_url=emulator.base_url) as http:
        config = (await http.post("_emulator/config", json={
            "latency_s": 0.01, "faults": [{"stage": "file", "kind": "expired"}],
            "forbidden_keys": ["k"]})).json()
        assert config["latency_s"] == 0.01 and config["faults"][0]["kind"] == "expired"
        assert state.forbidden_keys == {"k"}
        assert (await http.post("_emulator/config", json={"nope": 1})).status_code == 400
        await upload(fal)
        log = (await http.get("_emulator/log")).json()
        assert [e["kind"] for e in log] == ["token", "upload"]
        await http.post("_emulator/reset")
    assert state.log == [] and state.faults == [] and state.latency_s == 0


def test_stop_is_prompt_with_stalled_handler():
    emu = FalEmulator(EmulatorState(stall_s=30)).start()
    emu.state.add_fault("file", "stall")
    box = {}
    thread = threading.Thread(target=lambda: box.update(
        r=httpx.get(emu.base_url + "files/x/y", timeout=10)))
    thread.start()
    time.sleep(0.2)
    started = time.monotonic()
    emu.stop()
    thread.join(5)
    assert time.monotonic() - started < 3 and box["r"].status_code == 503


def test_cli_prints_base_url_and_exits_on_sigterm():
    proc = subprocess.Popen([sys.executable, "-m", "fal_emulator", "--port", "0"],
                            cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    try:
        base = proc.stdout.readline().strip()
        assert base.startswith("http://127.0.0.1:") and base.endswith("/")
        assert httpx.get(base + "_emulator/config").status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
