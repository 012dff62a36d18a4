"""Every node end to end against the local fal emulator, through the real fal-client."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import torch

from conftest import TEST_KEY, interrupt_after_submits, pack, run_node, sample_image

from comfyui_fal_edit.nodes.endpoints import BY_NODE, ENDPOINTS
from comfyui_fal_edit.nodes.errors import FalNodeError
from comfyui_fal_edit.nodes.host import Interrupted
from comfyui_fal_edit.nodes.settings import FalKeyRef, FalSettings
from comfyui_fal_edit.nodes import keystore

SINGLE = [e.node_name for e in ENDPOINTS if not e.multi_image_sockets]


def image_inputs(name: str, images: torch.Tensor) -> dict:
    return {"image_1": images} if BY_NODE[name].multi_image_sockets else {"image": images}


def settings(**changes) -> FalSettings:
    return FalSettings(**changes)


@pytest.mark.parametrize("name", [e.node_name for e in ENDPOINTS])
def test_every_node_runs_end_to_end(fal, name, statuses):
    images, seed, urls = run_node(name, **image_inputs(name, sample_image(80, 60)))
    endpoint = BY_NODE[name]
    assert images.dtype == torch.float32 and images.ndim == 4 and images.shape[-1] == 3
    assert images.shape[0] == 1
    assert 0.0 <= float(images.min()) and float(images.max()) <= 1.0
    assert float(images.std()) > 0.01, "the result is flat: no real image came back"
    assert len(urls.splitlines()) == 1 and urls.startswith(fal.base_url)
    submits = fal.state.entries("submit", endpoint.endpoint_id)
    assert len(submits) == 1
    payload = submits[0]["payload"]
    assert endpoint.image_field in payload
    # Widget defaults travel as fal's defaults; "fal default" choices send nothing.
    for field in endpoint.fields:
        if field.name in payload and field.kind not in ("seed", "enum"):
            assert payload[field.name] == field.default
        if field.default == "fal default":
            assert field.name not in payload
    if endpoint.field_named("seed"):
        assert payload["seed"] == 0 and seed == 0
    else:
        assert seed == -1
    assert statuses and statuses[-1].startswith("done in")


def test_batch_is_one_request_per_frame_in_order_with_seed_plus_index(fal):
    batch = sample_image(64, 48, batch=3, seed=7)
    images, seed, urls = run_node("FalColorCorrection", image=batch, seed=100)
    assert images.shape == (3, 48, 64, 3)
    submits = fal.state.entries("submit", "fal-ai/image-editing/color-correction")
    assert sorted(s["payload"]["seed"] for s in submits) == [100, 101, 102]
    # Each output is the result of its own input frame: compare with single runs
    # that bypass every cache.
    for i in range(3):
        single, _, _ = run_node("FalColorCorrection", image=batch[i:i + 1], seed=100 + i,
                                settings=settings(cache="off"))
        assert torch.equal(single[0], images[i])
    assert len(urls.splitlines()) == 3


def test_batch_runs_concurrently_with_a_bound(fal):
    """Told by the order of events at the emulator, not by a stopwatch."""
    fal.state.latency_s = 0.3
    run_node("FalSharpen", image=sample_image(32, 32, batch=4))
    kinds = [e["kind"] for e in fal.state.log if e["kind"] in ("submit", "result")]
    assert kinds[:4] == ["submit"] * 4, f"not all four were in flight at once: {kinds}"
    fal.reset()
    run_node("FalSharpen", image=sample_image(32, 32, batch=3, seed=1),
             settings=settings(concurrency=1))
    kinds = [e["kind"] for e in fal.state.log if e["kind"] in ("submit", "result")]
    assert kinds == ["submit", "result"] * 3, f"concurrency=1 overlapped requests: {kinds}"


def test_num_images_keeps_every_image_in_order(fal):
    images, _, urls = run_node("FalFluxDevImageToImage", image=sample_image(64, 64, batch=2),
                               num_images=3, seed=5)
    assert images.shape[0] == 6
    assert len(urls.splitlines()) == 6
    assert not torch.equal(images[0], images[1]), "num_images gave identical images"


def test_results_of_different_sizes_are_fitted_to_the_first(fal, statuses):
    fal.state.output_sizes = [[64, 48], [100, 40], [30, 90]]
    images, _, _ = run_node("FalSharpen", image=sample_image(64, 48, batch=3),
                            settings=settings(concurrency=1))
    assert images.shape == (3, 48, 64, 3)
    assert "resized" in statuses[-1]


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P", "L", "CMYK"])
def test_result_modes_decode_to_rgb(fal, mode):
    fal.state.result_mode = mode
    images, _, _ = run_node("FalColorCorrection", image=sample_image(40, 30))
    assert images.shape == (1, 30, 40, 3)


def test_rerun_on_unchanged_image_uploads_nothing(fal):
    image = sample_image(64, 64, seed=3)
    run_node("FalSharpen", image=image)
    assert fal.state.count("upload") == 1
    run_node("FalSharpen", image=image, sharpen_radius=2)   # a new request, same pixels
    assert fal.state.count("upload") == 1
    assert fal.state.count("submit") == 2


def test_result_of_one_fal_node_feeds_another_without_upload(fal):
    first, _, urls = run_node("FalObjectRemoval", image=sample_image(64, 64, seed=4))
    uploads_before = fal.state.count("upload")
    run_node("FalSharpen", image=first)
    assert fal.state.count("upload") == uploads_before
    sent = fal.state.entries("submit", "fal-ai/post-processing/sharpen")[0]["payload"]["image_url"]
    assert sent == urls.strip()


def test_identical_request_is_served_from_memory_without_charge(fal, statuses):
    image = sample_image(48, 48, seed=9)
    a, _, _ = run_node("FalFaceEnhancement", image=image, seed=1)
    b, _, _ = run_node("FalFaceEnhancement", image=image, seed=1)
    assert torch.equal(a, b)
    assert fal.state.count("submit") == 1
    assert "from cache (no charge)" in statuses[-1]
    run_node("FalFaceEnhancement", image=image, seed=1, settings=settings(cache="refresh"))
    assert fal.state.count("submit") == 2


def test_partial_failure_names_the_item_and_a_rerun_pays_only_for_it(fal):
    batch = sample_image(48, 48, batch=3, seed=11)
    fal.state.add_fault("submit", 500, times=1)   # the first submit fails, the others succeed
    with pytest.raises(FalNodeError) as err:
        run_node("FalColorCorrection", image=batch, seed=1, settings=settings(concurrency=1))
    message = str(err.value)
    assert message.startswith("fal Color Correction: item 1 of 3 failed")
    assert "2 of 3 arrived and are kept" in message
    submits_before = fal.state.count("submit")
    images, _, _ = run_node("FalColorCorrection", image=batch, seed=1)
    assert images.shape[0] == 3
    assert fal.state.count("submit") == submits_before + 1


def test_kontext_multi_sends_every_frame_of_every_socket_in_order(fal):
    a = sample_image(64, 64, seed=1)
    b = sample_image(64, 64, batch=2, seed=2)
    images, _, _ = run_node("FalFluxKontextMaxMulti", image_1=a, image_3=b, num_images=2)
    assert images.shape[0] == 2
    submit = fal.state.entries("submit", "fal-ai/flux-pro/kontext/max/multi")
    assert len(submit) == 1
    sent = submit[0]["payload"]["image_urls"]
    assert len(sent) == 3
    uploads = fal.state.entries("upload")
    assert len(uploads) == 3


@pytest.mark.parametrize("as_list", [False, True])
def test_seededit_single_image_or_list(fal, as_list):
    fal.state.seededit_image_as_list = as_list
    images, seed, _ = run_node("FalSeedEditV3", image=sample_image(48, 48), seed=42)
    assert images.shape[0] == 1 and seed == 42


def test_luma_match_input_sends_the_closest_ratio(fal):
    run_node("FalLumaPhotonModify", image=sample_image(768, 512))
    payload = fal.state.entries("submit", "fal-ai/luma-photon/modify")[0]["payload"]
    assert payload["aspect_ratio"] == "4:3" and payload["strength"] == 0.8


def test_recraft_colours_from_text(fal):
    run_node("FalRecraftV3ImageToImage", image=sample_image(48, 48),
             colors="#ff8800, #223344; rgb(1, 2, 3)")
    payload = fal.state.entries("submit", "fal-ai/recraft/v3/image-to-image")[0]["payload"]
    assert payload["colors"] == [{"r": 255, "g": 136, "b": 0}, {"r": 34, "g": 51, "b": 68},
                                 {"r": 1, "g": 2, "b": 3}]
    assert "style_id" not in payload and "negative_prompt" not in payload


def test_recraft_downscales_an_input_over_its_limits(fal, statuses):
    wide = torch.rand(1, 300, 4300, 3)
    run_node("FalRecraftV3ImageToImage", image=wide)
    assert "downscaled" in statuses[-1]
    upload = fal.state.entries("upload")[0]
    assert upload["bytes"] <= 5 * 1024 * 1024


def test_inline_results_use_data_uris_without_downloads(fal):
    images, _, urls = run_node("FalColorCorrection", image=sample_image(40, 40),
                               settings=settings(inline_results=True))
    assert urls.startswith("data:image/")
    assert fal.state.count("file") == 0
    assert images.shape == (1, 40, 40, 3)


@pytest.mark.parametrize("inline", [False, True])
def test_seededit_sync_mode_follows_inline_results_and_safety_checker_is_sent(fal, inline):
    run_node("FalSeedEditV3", image=sample_image(40, 40), enable_safety_checker=False,
             settings=settings(inline_results=inline))
    payload = fal.state.entries("submit", "fal-ai/bytedance/seededit/v3/edit-image")[0]["payload"]
    assert payload["enable_safety_checker"] is False
    assert payload.get("sync_mode", False) is inline


def test_kontext_multi_sends_enhance_prompt(fal):
    run_node("FalFluxKontextMaxMulti", image_1=sample_image(40, 40), enhance_prompt=True)
    payload = fal.state.entries("submit", "fal-ai/flux-pro/kontext/max/multi")[0]["payload"]
    assert payload["enhance_prompt"] is True


# -- errors, each one sentence naming node, cause and fix ----------------------

def test_bad_inputs_fail_before_any_request(fal):
    cases = [
        (dict(image=sample_image(), sharpen_radius=99), "`sharpen_radius` is 99"),
        (dict(image=sample_image(), sharpen_mode="ultra"), "`sharpen_mode` is 'ultra'"),
        (dict(image=torch.full((1, 8, 8, 3), float("nan"))), "NaN"),
        (dict(image=torch.zeros((0, 8, 8, 3))), "holds no image"),
        (dict(image=torch.zeros((1, 8, 8, 5))), "5 channels"),
    ]
    for inputs, expected in cases:
        with pytest.raises(FalNodeError) as err:
            run_node("FalSharpen", **inputs)
        assert str(err.value).startswith("fal Sharpen: ") and expected in str(err.value)
    with pytest.raises(FalNodeError, match="`colors` has 'orange'"):
        run_node("FalRecraftV3ImageToImage", image=sample_image(), colors="#ff8800, orange")
    with pytest.raises(FalNodeError, match="`prompt` is empty"):
        run_node("FalFluxDevImageToImage", image=sample_image(), prompt="   ")
    with pytest.raises(FalNodeError, match="at least 3"):
        run_node("FalLumaPhotonModify", image=sample_image(), prompt="hi")
    assert fal.state.log == [], "a bad input reached fal"


def test_missing_key_is_one_clear_sentence(fal, monkeypatch):
    monkeypatch.delenv("FAL_KEY")
    with pytest.raises(FalNodeError) as err:
        run_node("FalSharpen", image=sample_image())
    assert "no fal key is set" in str(err.value) and "FAL_KEY" in str(err.value)
    with pytest.raises(FalNodeError, match="no fal key named 'work' is saved"):
        run_node("FalSharpen", image=sample_image(),
                 settings=settings(key=FalKeyRef("work")))
    assert fal.state.log == []


def test_named_key_is_used_and_rejected_keys_are_explained(fal, monkeypatch):
    keystore.add("work", "named-key-abcdef123456")
    run_node("FalSharpen", image=sample_image(), settings=settings(key=FalKeyRef("work")))
    assert fal.state.entries("submit")[0]["key_hint"] == "3456"
    fal.state.rejected_keys = {TEST_KEY}
    with pytest.raises(FalNodeError, match=r"rejected the key from the FAL_KEY .*HTTP 401"):
        run_node("FalSharpen", image=sample_image(seed=5))
    fal.state.rejected_keys = set()
    fal.state.forbidden_keys = {TEST_KEY}
    with pytest.raises(FalNodeError, match="HTTP 403"):
        run_node("FalSharpen", image=sample_image(seed=6))


def test_validation_error_from_fal_names_the_field(fal):
    fal.state.add_fault("result", 422, times=1)
    with pytest.raises(FalNodeError) as err:
        run_node("FalSharpen", image=sample_image())
    assert "fal refused the input — `" in str(err.value)


def test_rate_limit_after_retries(fal, monkeypatch):
    import fal_client.client as fc
    monkeypatch.setattr(fc, "MAX_ATTEMPTS", 2)  # fal-client's own retries, shortened
    fal.state.add_fault("submit", 429, times=-1)
    with pytest.raises(FalNodeError, match="rate-limiting"):
        run_node("FalSharpen", image=sample_image())


def test_expired_result_url(fal):
    fal.state.add_fault("file", "expired", times=-1)
    with pytest.raises(FalNodeError, match="expired or is unreadable"):
        run_node("FalSharpen", image=sample_image())


def test_timeout_cancels_the_request(fal):
    fal.state.latency_s = 5
    t0 = time.monotonic()
    with pytest.raises(FalNodeError, match="did not finish within 1s"):
        run_node("FalSharpen", image=sample_image(), settings=settings(timeout_s=1))
    assert time.monotonic() - t0 < 5, "the timeout did not stop the wait"
    assert fal.state.count("cancel") == 1


def test_nsfw_policy(fal):
    image = sample_image(48, 48)
    with pytest.raises(FalNodeError, match=r"flagged item 1 as NSFW"):
        run_node("FalFluxDevImageToImage", image=image, prompt="an nsfw scene")
    kept, _, _ = run_node("FalFluxDevImageToImage", image=image, prompt="an nsfw scene",
                          settings=settings(nsfw_policy="keep flagged"))
    assert kept.shape[0] == 1
    assert fal.state.count("submit") == 1, "the flagged result was paid for already"
    with pytest.raises(FalNodeError, match="nothing is left"):
        run_node("FalFluxDevImageToImage", image=image, prompt="an nsfw scene",
                 settings=settings(nsfw_policy="drop flagged"))


# -- interrupts ------------------------------------------------------------------

def test_comfy_interrupt_cancels_remote_requests(fal):
    fal.state.latency_s = 10
    interrupt_after_submits(fal, 2)
    t0 = time.monotonic()
    with pytest.raises(Interrupted):
        run_node("FalSharpen", image=sample_image(batch=2))
    assert time.monotonic() - t0 < 5, "the interrupt did not stop the wait"
    assert fal.state.count("cancel") == 2


def test_task_cancellation_cancels_remote_requests(fal):
    fal.state.latency_s = 10

    async def main():
        node = pack.NODE_CLASS_MAPPINGS["FalColorCorrection"]()
        task = asyncio.create_task(node.run(image=sample_image()))
        while fal.state.count("submit") == 0:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert fal.state.count("cancel") == 1


# -- the key stays secret -----------------------------------------------------------

def test_key_never_appears_in_outputs_errors_statuses_or_logs(fal, statuses, capture_logs):
    produced: list[str] = []
    for endpoint in ENDPOINTS:
        out = run_node(endpoint.node_name, **image_inputs(endpoint.node_name, sample_image()))
        produced += [repr(out[1]), out[2]]
    for stage, kind in [("submit", 500), ("result", 422), ("file", "expired"), ("submit", 401)]:
        fal.reset()
        fal.state.add_fault(stage, kind, times=-1)
        with pytest.raises(FalNodeError) as err:
            run_node("FalSharpen", image=sample_image(seed=len(produced)))
        produced.append(str(err.value))
    haystack = "\n".join(produced + statuses + capture_logs)
    assert capture_logs, "no log records were captured: the scan would prove nothing"
    assert TEST_KEY not in haystack
    assert TEST_KEY[-12:] not in haystack


def test_recraft_stays_under_5_mb_read_as_bytes_and_as_mib(fal, statuses):
    # Recraft's "less than 5 MB" may mean 5,000,000 bytes: noise of 1300x1300 is ~5.07 MB as
    # PNG, under 5 MiB but over 5,000,000 bytes (the emulator takes the stricter reading).
    limit = BY_NODE["FalRecraftV3ImageToImage"].limits.max_bytes
    assert limit < min(5_000_000, 5 * 1024 * 1024)
    noise = torch.rand(1, 1300, 1300, 3, generator=torch.Generator().manual_seed(0))
    run_node("FalRecraftV3ImageToImage", image=noise)
    assert "downscaled" in statuses[-1]
    assert fal.state.entries("upload")[0]["bytes"] < 5_000_000


def test_runs_under_comfyuis_inference_mode(fal):
    """ComfyUI executes nodes under torch.inference_mode() (per thread); the batch the node
    assembles on its worker threads must not be an inference tensor written from another."""
    with torch.inference_mode():
        images, _, _ = run_node("FalColorCorrection", image=sample_image(48, 32, batch=3),
                                settings=settings(cache="off"))
    assert images.shape == (3, 32, 48, 3) and float(images.max()) > 0


# -- nothing waits on a file on the event loop -------------------------------------------

_audited_loop_thread: list[int] = []     # the thread being watched, while a test watches
_file_work_on_loop: list[str] = []
_audit_hook_added: list[bool] = []       # audit hooks can't be removed: added once


def _note_file_work(event: str, args: tuple) -> None:
    if not _audited_loop_thread or _audited_loop_thread[0] != threading.get_ident():
        return
    if event in ("open", "sqlite3.connect", "os.rename", "os.replace", "os.remove", "os.mkdir"):
        path = str(args[0]) if args else ""
        # Python's own imports (a module used for the first time) are not the pack's files.
        if not path.endswith((".py", ".pyc", ".so")):
            _file_work_on_loop.append(f"{event} {path}")


def test_a_run_leaves_its_file_work_to_worker_threads(fal, tmp_path, monkeypatch):
    """A run's loop is shared by every call of a list input (and a route's by the whole
    server): the price file, the owner's settings, the key file, the catalogue and the
    caches are read and written in worker threads. Watched with Python's audit hook (every file Python
    opens on the loop's thread), on a first run with nothing read yet. (OpenSSL reads the
    TLS certificates itself, unseen by the hook: the runtime builds them off the loop too.)"""
    import sys

    from comfyui_fal_edit.nodes import catalogue, pricing, runtime

    if not _audit_hook_added:
        sys.addaudithook(_note_file_work)
        _audit_hook_added.append(True)
    pricing.prices.clear()                        # the price file is read on first use
    monkeypatch.setattr(runtime, "PRICE_REFRESH_GRACE_S", 30.0)   # its write is watched too
    keystore.add("studio", "fal-key-studio-0000")

    # The catalogue too, read on fal Image Endpoint's first use.
    for cached in (catalogue.load, catalogue.endpoint_for, pricing._count_rules):
        cached.cache_clear()

    async def runs_with_a_saved_key():
        _audited_loop_thread[:] = [threading.get_ident()]
        try:
            sharpen = pack.NODE_CLASS_MAPPINGS["FalSharpen"]()
            for _ in range(2):   # the second answered from the cache
                await sharpen.run(image=sample_image(32, 32, batch=2),
                                  settings=FalSettings(key=FalKeyRef("studio")))
            await pack.NODE_CLASS_MAPPINGS["FalImageEndpoint"]().run(
                endpoint="fal-ai/birefnet", arguments="{}", image=sample_image(32, 32),
                settings=FalSettings(key=FalKeyRef("studio")))
        finally:
            _audited_loop_thread.clear()

    _file_work_on_loop.clear()
    asyncio.run(runs_with_a_saved_key())
    assert fal.state.count("submit") == 3 and fal.state.count("pricing") >= 1
    assert (tmp_path / "prices.json").exists()     # the refresh did write it
    assert _file_work_on_loop == []
