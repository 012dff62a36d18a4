"""Reliability and security (#8): faults, interrupts, bad inputs, key leaks, load.

Every fault is injected by the local emulator and met by the real fal-client.
fal-client retries 429/408/409, nginx 502-504 and transport errors itself, up to
fal_client.client.MAX_ATTEMPTS times with exponential backoff (~30 s in all);
the tests shorten that to 3 attempts (`short_retries`) so the suite stays fast -
the retry *logic* is fal-client's own, only the count changes.

The module keeps a tally and prints, at its end, one line:
    reliability: faults tried N / recovered N / clear errors N / hangs 0 / lost items 0 / key occurrences 0
(also saved to /tmp/comfyui_fal_reliability_summary.txt).

The BUG_* texts name bugs this suite found (all fixed); the cases that showed
them keep the text as documentation.
"""

from __future__ import annotations

import asyncio
import gc
import io
import json
import os
import secrets
import socket
import stat
import sys
import time
import traceback
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import reliability_helpers as rh
from conftest import TEST_KEY, pack, sample_image
from reliability_helpers import TALLY, guarded, run_guarded, sentence_problems

from comfyui_fal_edit.nodes import keystore
from comfyui_fal_edit.nodes.stages import queue as queue_stage
from comfyui_fal_edit.nodes.stages import results as results_stage
from comfyui_fal_edit.nodes.endpoints import BY_NODE, ENDPOINTS
from comfyui_fal_edit.nodes.errors import FalNodeError
from comfyui_fal_edit.nodes.host import Interrupted, host
from comfyui_fal_edit.nodes.settings import FalKeyRef, FalSettings

NODE = "FalColorCorrection"
DISPLAY = BY_NODE[NODE].display_name
BOUND_S = 8.0          # any fault ends well within this (fal-client alone would take ~30 s)


def image_inputs(name: str, images) -> dict:
    return {"image_1": images} if BY_NODE[name].multi_image_sockets else {"image": images}


# -- the summary line ------------------------------------------------------------------

@pytest.fixture(scope="module", autouse=True)
def reliability_summary(request):
    yield
    line = rh.summary_line()
    extra = "\n".join(f"reliability: {f}" for f in rh.FIGURES)
    Path(rh.SUMMARY_FILE).write_text(line + "\n" + extra + "\n")
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():   # visible in plain `pytest -q`
            reporter.write_line("")
            reporter.write_line(line)
            reporter.write_line(extra)
    else:
        print(line, extra, sep="\n", file=sys.__stdout__)


@pytest.fixture
def short_retries(monkeypatch):
    import fal_client.client as fc
    # fal-client's own retry budget (10 attempts, ~30 s), shortened to keep the suite fast.
    monkeypatch.setattr(fc, "MAX_ATTEMPTS", 3)
    # The runtime's download retries (4 attempts: 0.2 + 0.4 + 0.8 s of backoff), shortened.
    monkeypatch.setattr(results_stage, "DOWNLOAD_ATTEMPTS", 3)
    # Poll the emulator's instant jobs a little faster (the runtime starts at 0.1 s).
    monkeypatch.setattr(queue_stage, "POLL_FIRST_S", 0.02)


def check_clean_output(images: torch.Tensor, expected: int) -> None:
    """A passed-on result is a real image: right count, not black, not empty, not flat."""
    assert images.shape[0] == expected and images.numel() > 0
    for frame in images:
        assert float(frame.max()) > 0.05, "a black image was passed on"
        assert float(frame.std()) > 0.01, "a flat image was passed on"


# -- faults ----------------------------------------------------------------------------

STAGES = ("upload", "token", "submit", "status", "result", "file")
RETRYABLE = (429, 502, 503, 504, "reset", "truncate")    # fal-client (or the runtime) retries
PERSISTENT = (429, 500, 502, 503, 504, "reset", "truncate", "malformed_json", "expired", 401,
              403, 422)

BUG_IDEMPOTENT = "bug: one 5xx or unreadable answer to a status poll or result GET fails the item " \
                 "(and the result fal already made and billed is lost); they are plain GETs and " \
                 "should be retried like downloads"
BUG_HTML = "bug: a proxy's 502/503/504 HTML page is pasted into the error sentence"
BUG_DECODE = "bug: a result file that is not an image fails with 'UnidentifiedImageError: ... " \
             "<_io.BytesIO object at 0x...>' instead of a sentence with a fix"
BUG_SENTENCES = "bug: fal's own multi-sentence `detail` msg is pasted in, so the error is two " \
                "sentences with broken punctuation ('...accessible.; change that input')"
BUG_CLOSE = "bug: the run's fal-client close read `._value`, but fal-client's cached client sits in " \
            "asyncstdlib's AwaitableValue `.value`; fal-client's httpx client is never closed, " \
            "so every node run leaves its connections to fal open in ComfyUI's loop"
BUG_ELLIPSIS = "bug: an enum list cut with ', ...' ends the sentence in '..'"
BUG_BYTES_NOTE = "bug: an image shrunk to fit max_bytes (at encode time) is not mentioned in the " \
                 "status; the note is built before encoding"
BUG_STALL = "bug: a stalled fal answer ignores timeout_s; the node waits for the socket " \
            "(fal-client: 120 s x 10 attempts), i.e. hangs"


def _case(stage, kind, times, expect, retry_after=None, bug=None):
    ra = f"-retry-after-{retry_after:g}" if retry_after is not None else ""
    marks = []   # `bug` names the fixed bug a case once showed, for the reader
    return pytest.param(stage, kind, times, retry_after, expect,
                        id=f"{stage}-{kind}{ra}-{'once' if times == 1 else 'always'}", marks=marks)


def fault_table():
    cases = []
    for stage in STAGES:
        # Transient: one bad answer, then fal is fine again.
        for kind in RETRYABLE:
            cases.append(_case(stage, kind, 1, "recover"))
        cases.append(_case(stage, 429, 1, "recover", retry_after=1))
        if stage in ("upload", "token", "file"):
            # upload falls back to fal's storage API; downloads are retried by the runtime
            cases.append(_case(stage, 500, 1, "recover"))
            cases.append(_case(stage, "malformed_json", 1,
                               "recover" if stage != "file" else "clear",
                               bug=BUG_DECODE if stage == "file" else None))
        elif stage == "submit":
            # Not idempotent: a retried submit could start (and bill) a second job.
            cases.append(_case(stage, 500, 1, "clear"))
            cases.append(_case(stage, "malformed_json", 1, "clear"))
        else:  # status, result
            cases.append(_case(stage, 500, 1, "recover", bug=BUG_IDEMPOTENT))
            cases.append(_case(stage, "malformed_json", 1, "recover", bug=BUG_IDEMPOTENT))
        # Persistent: fal keeps failing; the node must end in one clear sentence.
        # (The token call is one step of an upload: a few kinds are enough there.)
        for kind in PERSISTENT if stage != "token" else (500, 401, 403, "malformed_json"):
            bug = None
            if kind in (502, 503, 504) and stage != "file":
                bug = BUG_HTML
            if kind == "malformed_json" and stage == "file":
                bug = BUG_DECODE
            if kind == "malformed_json" and stage == "upload":
                # fal_v3 fails, the storage fallback "uploads" into the void, and fal
                # answers 422 "Failed to download the file. Please check ..."
                bug = BUG_SENTENCES
            cases.append(_case(stage, kind, -1, "clear", bug=bug))
    # How a job ends (consumed when fal accepts it).
    for kind in ("no_images", "app_error"):
        cases.append(_case("submit", kind, 1, "clear"))
    return cases


def _record(out: rh.Outcome, expect: str, n_items: int = 1) -> None:
    TALLY["tried"] += 1
    if out.hung:
        TALLY["hangs"] += 1
    elif out.error is None:
        TALLY["recovered"] += 1
    elif isinstance(out.error, FalNodeError) and not sentence_problems(str(out.error), DISPLAY):
        TALLY["clear"] += 1


def _check(out: rh.Outcome, expect: str, bound: float, n_items: int = 1) -> None:
    assert not out.hung, f"the node hung (no answer within {bound:g}s)"
    assert out.elapsed < bound
    assert not out.leftover_tasks, f"tasks left behind: {out.leftover_tasks}"
    if expect == "recover":
        assert out.error is None, f"did not recover: {out.error!r}"
        check_clean_output(out.value[0], n_items)
    else:
        if out.error is None:          # recovering is always fine too
            check_clean_output(out.value[0], n_items)
            return
        assert isinstance(out.error, FalNodeError), repr(out.error)
        assert sentence_problems(str(out.error), DISPLAY) == [], str(out.error)


@pytest.mark.parametrize("stage, kind, times, retry_after, expect", fault_table())
def test_fault(fal, short_retries, request, statuses, capture_logs, stage, kind, times,
               retry_after, expect):
    fal.state.add_fault(stage, kind, times=times, retry_after=retry_after)
    out = run_guarded(NODE, BOUND_S, image=sample_image(seed=3))
    _record(out, expect)
    # Every error path is also a key-leak probe (the full scan is test_key_never_leaves_...).
    texts = statuses + capture_logs + (_exception_texts(out.error) if out.error else [])
    TALLY["key"] += _occurrences(texts, TEST_KEY)
    _check(out, expect, BOUND_S)
    if out.error is not None:
        # The failed request was not left running on fal: every submitted job is done or cancelled.
        for job in fal.server.jobs.values():
            if job.id in {e["request_id"] for e in fal.state.entries("submit")}:
                assert job.status == "COMPLETED"


STALL_STAGES = ("upload", "submit", "status", "result", "file")


@pytest.mark.parametrize("stage", STALL_STAGES)
def test_stalled_answer_ends_within_the_timeout(fal, short_retries, monkeypatch, stage):
    """fal stops answering mid-exchange (the socket stays open). timeout_s must bound it."""
    monkeypatch.setattr(queue_stage, "CANCEL_GRACE_S", 1.0)   # the wait for a stalled submit
    fal.state.stall_s = 3.0           # stands for "forever": far past timeout_s
    fal.state.add_fault(stage, "stall", times=1)
    timeout_s, bound = 0.6, 2.0
    out = run_guarded(NODE, bound, image=sample_image(seed=4),
                      settings=FalSettings(timeout_s=timeout_s))
    _record(out, "clear")
    _check(out, "clear", bound)
    assert out.error is not None and "did not finish within" in str(out.error)


def test_connection_refused_is_one_clear_sentence(fal, short_retries, monkeypatch):
    with socket.socket() as s:                     # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("COMFYUI_FAL_BASE_URL", f"http://127.0.0.1:{port}/")
    out = run_guarded(NODE, BOUND_S, image=sample_image(seed=5))
    _record(out, "clear")
    _check(out, "clear", BOUND_S)
    assert out.error is not None and "could not connect to fal" in str(out.error)


@pytest.mark.parametrize("stage, kind", [("submit", 422), ("submit", "no_images"),
                                         ("status", 401), ("result", 422), ("file", "expired")])
def test_batch_keeps_the_others_and_a_rerun_pays_only_for_the_failed_one(fal, short_retries,
                                                                         stage, kind):
    batch = sample_image(48, 40, batch=3, seed=21)
    fal.state.add_fault(stage, kind, times=1)
    out = run_guarded(NODE, BOUND_S, image=batch, seed=7, settings=FalSettings(concurrency=1))
    _record(out, "clear")
    _check(out, "clear", BOUND_S, n_items=3)
    message = str(out.error)
    assert "of 3 failed" in message and "2 of 3 arrived and are kept" in message, message
    failed = int(message.split("item ", 1)[1].split(" ", 1)[0])
    submits = fal.state.count("submit")
    again = run_guarded(NODE, BOUND_S, image=batch, seed=7)
    assert again.error is None, again.error
    images = again.value[0]
    check_clean_output(images, 3)
    assert fal.state.count("submit") == submits + 1, "the rerun paid for items that had arrived"
    resent = fal.state.entries("submit")[-1]["payload"]["seed"]
    assert resent == 7 + failed - 1, "the rerun resent another item than the failed one"
    # In order: item i is the result of frame i (compare with uncached single runs).
    for i in range(3):
        single = run_guarded(NODE, BOUND_S, image=batch[i:i + 1], seed=7 + i,
                             settings=FalSettings(cache="off"))
        if not torch.equal(single.value[0][0], images[i]):
            TALLY["lost"] += 1
    assert TALLY["lost"] == 0


# -- interrupts -------------------------------------------------------------------------

INTERRUPT_STAGES = {
    # stage: (how to make it last, the emulator log entry that says we are in it)
    "uploading": (lambda s: (setattr(s, "stall_s", 3.0), s.add_fault("upload", "stall")), "upload"),
    "queued": (lambda s: setattr(s, "queue_delay_s", 5.0), "submit"),
    "running": (lambda s: setattr(s, "latency_s", 5.0), "status_stream"),
    "downloading": (lambda s: (setattr(s, "stall_s", 3.0), s.add_fault("file", "stall")), "file"),
}


@pytest.mark.parametrize("stage", [
    # One item while uploading: nothing reaches fal's queue, so nothing is submitted at all.
    "uploading",
    "queued", "running", "downloading"])
def test_interrupt_cancels_everything_and_leaves_nothing_behind(fal, stage):
    make_slow, marker = INTERRUPT_STAGES[stage]
    make_slow(fal.state)
    port = fal.port
    batch = sample_image(48, 48, batch=1 if stage == "uploading" else 2, seed=31)
    figures = {}

    async def main():
        # Earlier tests' garbage is collected first; then no collection may close this
        # run's sockets behind its back (a leak must show, not depend on GC timing).
        gc.collect()
        gc.disable()
        try:
            return await measured()
        finally:
            gc.enable()

    async def measured():
        sockets_before, fds_before = rh.client_sockets(port), rh.fd_count()
        node = pack.NODE_CLASS_MAPPINGS[NODE]()
        task = asyncio.create_task(node.run(image=batch, seed=1))
        t_stop = time.monotonic() + 5
        while len(fal.state.entries(marker)) < (2 if stage in ("queued", "running") else 1):
            assert time.monotonic() < t_stop, f"never reached {stage}"
            await asyncio.sleep(0.01)
        if stage == "running":
            await asyncio.sleep(0.3)
        t_flag = time.monotonic()
        host.interrupt_requested = True
        with pytest.raises(Interrupted):
            await asyncio.wait_for(task, 3.0)
        figures["raised_s"] = time.monotonic() - t_flag
        await rh.settle()
        figures["tasks"] = [repr(t.get_coro()) for t in rh.other_tasks()]
        await asyncio.sleep(0.05)
        figures["sockets"] = rh.client_sockets(port) - sockets_before
        figures["fds"] = rh.fd_count() - fds_before
        return t_flag

    t_flag = asyncio.run(main())
    assert not figures["tasks"], f"tasks left behind: {figures['tasks']}"
    assert figures["sockets"] <= 0, f"{figures['sockets']} connection(s) to fal left open"
    assert figures["fds"] <= 0, f"{figures['fds']} file descriptor(s) left open"
    assert figures["raised_s"] < 1.0
    submitted = {e["request_id"] for e in fal.state.entries("submit")}
    cancelled = {e["request_id"]: e["t"] for e in fal.state.entries("cancel")}
    for job in fal.server.jobs.values():       # nothing is left running (and billing) on fal
        if job.id in submitted:
            assert job.status == "COMPLETED", f"job {job.id} still {job.status}"
    if stage in ("queued", "running"):
        assert submitted and set(cancelled) == submitted, "an in-flight request was not cancelled"
        assert max(cancelled.values()) - t_flag < 1.0, "cancel was sent late"
        for job in fal.server.jobs.values():
            if job.id in submitted:
                assert job.cancelled and job.status == "COMPLETED"
    rh.FIGURES.append(f"interrupt while {stage}: node raised in {figures['raised_s']:.2f}s, "
                      f"{len(cancelled)}/{len(submitted)} fal requests cancelled")
    # A rerun afterwards works (and the emulator is healthy again).
    fal.reset()
    again = run_guarded(NODE, BOUND_S, image=batch, seed=1)
    assert again.error is None, again.error
    check_clean_output(again.value[0], batch.shape[0])
    if stage == "uploading":
        assert not submitted, "a job was submitted after the interrupt"


# -- bad inputs, refused before any request ----------------------------------------------

def test_a_finished_node_leaves_no_connection_open(fal):
    """ComfyUI keeps its event loop: whatever a node opens must be closed when it returns."""
    async def main():
        gc.collect()
        gc.disable()       # a leak must show, not depend on when the GC runs
        try:
            before = rh.client_sockets(fal.port)
            out = await guarded(NODE, BOUND_S, image=sample_image(seed=50))
            await asyncio.sleep(0.05)
            return out, rh.client_sockets(fal.port) - before
        finally:
            gc.enable()
    out, left = asyncio.run(main())
    assert out.error is None and not out.leftover_tasks
    assert left == 0, f"{left} connection(s) to fal left open after the node returned"


BAD_INPUTS = [
    ("empty batch", "FalSharpen", dict(image=torch.zeros((0, 8, 8, 3))), "holds no image"),
    ("zero-height image", "FalSharpen", dict(image=torch.zeros((1, 0, 8, 3))), "holds no image"),
    ("no image", "FalSharpen", dict(image=None), "no image is connected"),
    ("not a tensor", "FalSharpen", dict(image=np.zeros((1, 8, 8, 3))), "not an IMAGE"),
    ("NaN pixels", "FalSharpen", dict(image=torch.full((1, 8, 8, 3), float("nan"))), "NaN"),
    ("+inf pixels", "FalSharpen",
     dict(image=torch.where(torch.arange(64).reshape(1, 8, 8, 1) == 5, float("inf"),
                            torch.rand(1, 8, 8, 3))), "infinite"),
    ("-inf pixels", "FalColorCorrection", dict(image=torch.full((2, 4, 4, 3), float("-inf"))),
     "infinite"),
    ("5 channels", "FalSharpen", dict(image=torch.zeros((1, 8, 8, 5))), "5 channels"),
    ("stale enum (Luma ratio)", "FalLumaPhotonModify",
     dict(image=sample_image(), aspect_ratio="5:4"), "`aspect_ratio` is '5:4'"),
    ("stale enum (Recraft style)", "FalRecraftV3ImageToImage",
     dict(image=sample_image(), style="realistic_image/old_style"), "`style` is"),
    ("stale enum (safety)", "FalBackgroundChange",
     dict(image=sample_image(), safety_tolerance="7"), "`safety_tolerance` is '7'"),
    ("empty prompt (SeedEdit)", "FalSeedEditV3", dict(image=sample_image(), prompt=""),
     "`prompt` is empty"),
    ("empty prompt (Kontext multi)", "FalFluxKontextMaxMulti",
     dict(image_1=sample_image(), prompt="\n\t "), "`prompt` is empty"),
    ("colour: 5 hex digits", "FalRecraftV3ImageToImage",
     dict(image=sample_image(), colors="#ff880"), "`colors` has '#ff880'"),
    ("colour: rgb out of range", "FalRecraftV3ImageToImage",
     dict(image=sample_image(), colors="rgb(300, 0, 0)"), "not a colour"),
    ("colour: a name", "FalRecraftV3ImageToImage",
     dict(image=sample_image(), colors="#ffffff, red"), "`colors` has 'red'"),
    ("prompt over Luma's 5000", "FalLumaPhotonModify",
     dict(image=sample_image(), prompt="x" * 5001), "at most 5000"),
    ("prompt over Recraft's 1000", "FalRecraftV3ImageToImage",
     dict(image=sample_image(), prompt="y" * 1001), "at most 1000"),
    ("negative prompt over Recraft's 1000", "FalRecraftV3ImageToImage",
     dict(image=sample_image(), negative_prompt="z" * 1001), "at most 1000"),
    ("NaN number widget", "FalFluxDevImageToImage",
     dict(image=sample_image(), strength=float("nan")), "finite"),
]


@pytest.mark.parametrize("case, name, inputs, expected", BAD_INPUTS,
                         ids=[(c.values if hasattr(c, "values") else c)[0] for c in BAD_INPUTS])
def test_bad_input_is_refused_before_any_request(fal, case, name, inputs, expected):
    out = run_guarded(name, BOUND_S, **inputs)
    assert isinstance(out.error, FalNodeError), repr(out.error)
    message = str(out.error)
    assert expected in message, message
    assert sentence_problems(message, BY_NODE[name].display_name) == [], message
    assert fal.state.log == [], "a bad input reached fal"


@pytest.mark.parametrize("value", ["", "   ", "\t\n"])
def test_missing_or_blank_key_is_refused_before_any_request(fal, monkeypatch, value):
    monkeypatch.setenv("FAL_KEY", value)
    out = run_guarded("FalSharpen", BOUND_S, image=sample_image())
    assert isinstance(out.error, FalNodeError)
    assert "no fal key is set" in str(out.error)
    assert sentence_problems(str(out.error), "fal Sharpen") == []
    assert fal.state.log == []


def _uploaded(fal) -> Image.Image:
    url = fal.state.entries("submit")[-1]["payload"]
    url = url.get("image_url") or url.get("image_urls")[0]
    file_id = url.split("/files/", 1)[1].split("/", 1)[0]
    return Image.open(io.BytesIO(fal.server.files.get(file_id).data))


def test_values_outside_0_1_are_clipped_like_comfyui_saves(fal):
    rng = np.random.default_rng(1)
    raw = torch.from_numpy(rng.uniform(-0.6, 1.6, (1, 24, 32, 3)).astype(np.float32))
    out = run_guarded("FalSharpen", BOUND_S, image=raw)
    assert out.error is None, out.error
    sent = np.asarray(_uploaded(fal).convert("RGB"))
    expected = np.clip(np.clip(raw[0].numpy(), 0, 1) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    assert np.array_equal(sent, expected)
    assert sent.min() == 0 and sent.max() == 255


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_1_2_3_4_channel_images_are_sent_as_rgb(fal, channels):
    image = sample_image(40, 30, seed=channels)[..., :1].expand(1, 30, 40, channels).clone()
    if channels in (2, 4):
        image[..., -1] = 0.0       # alpha/second channel: dropped, not mixed into colour
    out = run_guarded("FalColorCorrection", BOUND_S, image=image)
    assert out.error is None, out.error
    check_clean_output(out.value[0], 1)
    assert out.value[0].shape == (1, 30, 40, 3)
    sent = _uploaded(fal)
    assert sent.mode == "RGB"
    px = np.asarray(sent)
    assert np.array_equal(px[..., 0], px[..., 1]) and np.array_equal(px[..., 1], px[..., 2])
    assert px.max() > 0, "the alpha channel replaced the colour"


def test_1x1_image_works(fal):
    out = run_guarded("FalColorCorrection", BOUND_S, image=torch.full((1, 1, 1, 3), 0.5))
    assert out.error is None, out.error
    assert out.value[0].shape == (1, 1, 1, 3)


def test_image_over_recraft_side_limit_is_downscaled_and_says_so(fal, statuses):
    out = run_guarded("FalRecraftV3ImageToImage", 30.0, image=torch.rand(1, 64, 4200, 3))
    assert out.error is None, out.error
    assert "input 4200x64 downscaled to 4095x62" in statuses[-1], statuses[-1]


def test_image_over_recraft_byte_limit_is_downscaled_and_says_so(fal, statuses):
    # Noise does not compress: 1400x1300 RGB is ~5.5 MB as PNG, over Recraft's 5 MB.
    noise = torch.rand(1, 1300, 1400, 3, generator=torch.Generator().manual_seed(0))
    out = run_guarded("FalRecraftV3ImageToImage", 30.0, image=noise)
    assert out.error is None, out.error
    assert "downscaled" in statuses[-1], statuses[-1]
    assert fal.state.entries("upload")[0]["bytes"] < 5 * 1024 * 1024


# -- the key stays secret -------------------------------------------------------------------

def _fake_key() -> str:
    return "RELKEY-" + secrets.token_hex(12) + "-Zq9"


def _occurrences(texts: list[str], key: str) -> int:
    """The key, or any 8-character piece of it, anywhere (hints show 4 characters)."""
    pieces = {key[i:i + 8] for i in range(len(key) - 7)}
    return sum(text.count(p) for text in texts for p in pieces)


def _exception_texts(exc: BaseException) -> list[str]:
    return [str(exc), repr(exc), "".join(traceback.format_exception(type(exc), exc,
                                                                    exc.__traceback__))]


def _prompt_json(name: str, inputs: dict) -> str:
    """What ComfyUI keeps of a run: the prompt's inputs (also in PNG metadata)."""
    def default(o):
        if isinstance(o, (FalSettings, FalKeyRef)):
            return asdict(o)
        return f"<{type(o).__name__}>"
    return json.dumps({"1": {"class_type": name, "inputs": inputs}}, default=default)


def test_key_never_leaves_the_key_store(fal, short_retries, monkeypatch, statuses, capture_logs,
                                        tmp_path):
    env_key, named_key = _fake_key(), _fake_key()
    monkeypatch.setenv("FAL_KEY", env_key)
    keystore.add("reliability", named_key)
    produced: list[str] = []

    def run(name, **inputs):
        out = run_guarded(name, BOUND_S, **inputs)
        produced.append(_prompt_json(name, inputs))
        if out.error is not None:
            produced.extend(_exception_texts(out.error))
        else:
            produced.extend([repr(out.value[1]), str(out.value[2]), repr(out.value),
                             json.dumps(out.ui, default=str)])
        return out

    # Every node, with the env key and with the named key.
    for e in ENDPOINTS:
        assert run(e.node_name, **image_inputs(e.node_name, sample_image(seed=40))).error is None
        ref = FalSettings(key=FalKeyRef("reliability"), cache="off")
        assert run(e.node_name, settings=ref,
                   **image_inputs(e.node_name, sample_image(seed=41))).error is None
    # Every error path of the fault table, with both keys.
    # Error paths with both keys (test_fault scans every fault's texts for the test key too).
    for i, (stage, kind) in enumerate([("upload", 401), ("token", 403), ("submit", 500),
                                       ("submit", 422), ("status", "reset"), ("status", 429),
                                       ("result", 422), ("result", "malformed_json"),
                                       ("file", "expired"), ("file", 500),
                                       ("submit", "no_images"), ("submit", "app_error")]):
        fal.reset()
        fal.state.add_fault(stage, kind, times=-1)
        settings = FalSettings(key=FalKeyRef("reliability")) if i % 2 else FalSettings()
        run("FalSharpen", image=sample_image(24, 24, seed=100 + i), settings=settings)
    fal.reset()
    fal.state.rejected_keys = {env_key, named_key}
    run("FalSharpen", image=sample_image(24, 24, seed=300))
    run("FalSharpen", image=sample_image(24, 24, seed=301),
        settings=FalSettings(key=FalKeyRef("reliability")))
    fal.reset()
    # Interrupt and bad-input paths.
    run("FalSharpen", image=torch.full((1, 4, 4, 3), float("nan")))
    run("FalSharpen", image=sample_image(), settings=FalSettings(key=FalKeyRef("nobody")))
    # The key routes, if they exist.
    produced.extend(_key_routes_texts(named_key))

    produced += statuses + capture_logs
    assert capture_logs and statuses, "nothing was captured: the scan would prove nothing"
    # The result cache on disk and the key file itself.
    cache_dir = Path(os.environ["COMFYUI_FAL_CACHE_DIR"])
    disk_bytes = b"".join(p.read_bytes() for p in cache_dir.rglob("*") if p.is_file()) \
        if cache_dir.exists() else b""
    found = _occurrences(produced, env_key) + _occurrences(produced, named_key)
    found += disk_bytes.count(env_key.encode()) + disk_bytes.count(named_key.encode())
    TALLY["key"] += found
    rh.FIGURES.append(f"key scan: {len(produced)} texts, {len(capture_logs)} log records, "
                      f"{len(statuses)} status texts, {len(disk_bytes)} cache bytes scanned")
    assert found == 0
    key_file = keystore.key_file()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_file.parent.stat().st_mode) == 0o700
    assert named_key in key_file.read_text(), "the scan looked at the wrong key file"


def _key_routes_texts(named_key: str) -> list[str]:
    try:
        from comfyui_fal_edit.nodes import routes
    except ImportError:
        return []
    from aiohttp.test_utils import TestClient, TestServer

    texts: list[str] = []

    async def main():
        async with TestClient(TestServer(routes.make_app())) as client:
            async def call(method, path, body=None):
                response = await client.request(method, path, json=body)
                texts.append(f"{response.status} {dict(response.headers)} {await response.text()}")
            await call("GET", "/fal/keys")
            await call("POST", "/fal/keys", {"name": "route-key", "key": named_key})
            await call("POST", "/fal/keys", {"name": "route-key", "key": named_key + "x"})
            await call("POST", "/fal/keys", {"name": "bad name!", "key": named_key})
            await call("POST", "/fal/keys", {"name": "short", "key": named_key[:5]})
            await call("POST", "/fal/keys/test", {"name": "route-key"})
            await call("POST", "/fal/keys/test", {"name": "reliability"})
            await call("POST", "/fal/keys/test", {"name": "environment FAL_KEY"})
            await call("GET", "/fal/keys")
            await call("DELETE", "/fal/keys/route-key")
    asyncio.run(main())
    return texts


# -- load ---------------------------------------------------------------------------------

def test_32_nodes_at_once_twice_without_leaks(fal):
    fal.state.latency_s = 0.3
    port = fal.port
    n = 32
    rounds = []

    async def one_round(r: int):
        # Distinct sizes: every output can be matched to its own input.
        images = [sample_image(32 + i, 24 + (i % 5), seed=1000 * r + i) for i in range(n)]
        peak = {"sockets": 0}
        done = asyncio.Event()

        async def sample():
            while not done.is_set():
                peak["sockets"] = max(peak["sockets"], rh.client_sockets(port))
                await asyncio.sleep(0.02)

        sampler = asyncio.create_task(sample())
        nodes = [pack.NODE_CLASS_MAPPINGS["FalSharpen"]() for _ in range(n)]
        t0 = time.monotonic()
        results = await asyncio.wait_for(
            asyncio.gather(*(node.run(image=img) for node, img in zip(nodes, images)),
                           return_exceptions=True), 60)
        elapsed = time.monotonic() - t0
        done.set()
        await sampler
        await rh.settle()
        results = [r if isinstance(r, BaseException) else rh.result_of(r) for r in results]
        failures = [r for r in results if isinstance(r, BaseException)]
        lost = 0
        for img, result in zip(images, results):
            if isinstance(result, BaseException) or tuple(result[0].shape) != (1, *img.shape[1:3], 3):
                lost += 1
            else:
                check_clean_output(result[0], 1)
        return dict(elapsed=elapsed, failures=failures, lost=lost, peak=peak["sockets"],
                    tasks=len(rh.other_tasks()))

    for r in range(2):
        stats = asyncio.run(one_round(r))
        gc.collect()
        stats.update(fds=rh.fd_count(), sockets=rh.client_sockets(port), rss=rh.rss_mb())
        rounds.append(stats)
        TALLY["lost"] += stats["lost"]

    a, b = rounds
    rh.FIGURES.append(
        "load: 32 nodes at once x2 (0.3 s latency): " + "; ".join(
            f"round {i + 1} {s['elapsed']:.2f}s, {len(s['failures'])} failures, peak "
            f"{s['peak']} connections, {s['tasks']} tasks, {s['sockets']} sockets and "
            f"{s['fds']} fds after, RSS {s['rss']:.0f} MB" for i, s in enumerate(rounds)))
    for s in rounds:
        assert not s["failures"], s["failures"][:3]
        assert s["lost"] == 0 and s["tasks"] == 0 and s["sockets"] == 0
        assert s["elapsed"] < 20, "32 concurrent nodes were serialised"
        assert s["peak"] <= n * 4, f"{s['peak']} connections for {n} nodes: unbounded"
    assert b["fds"] <= a["fds"] + 2, f"file descriptors leak: {a['fds']} -> {b['fds']}"
    assert b["rss"] - a["rss"] < 64, f"memory grows: {a['rss']:.0f} -> {b['rss']:.0f} MB"
