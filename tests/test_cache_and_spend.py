"""Never pay twice, know the price first: the persistent cache, prices, the spend guard."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time

import pytest
import torch

from conftest import pack, run_node, sample_image

from comfyui_fal_edit.nodes import caches as caches_mod
from comfyui_fal_edit.nodes import pricing, server_settings
from fal_emulator import billing
from comfyui_fal_edit.nodes.endpoints import BY_NODE
from comfyui_fal_edit.nodes.errors import FalNodeError
from comfyui_fal_edit.nodes.runtime import run_endpoint
from comfyui_fal_edit.nodes.settings import FalSettings

COLOR = "fal-ai/image-editing/color-correction"


def restart():
    """What a ComfyUI restart does to the pack: everything in memory is gone."""
    caches_mod.caches.forget_memory()
    caches_mod.caches.clear()


def test_rerun_after_restart_makes_no_submit_and_no_upload(fal, statuses):
    image = sample_image(64, 48, batch=2, seed=21)
    first, _, _ = run_node("FalColorCorrection", image=image, seed=3)
    assert fal.state.count("submit") == 2 and fal.state.count("upload") == 2
    restart()
    again, _, _ = run_node("FalColorCorrection", image=image, seed=3)
    assert torch.equal(first, again)
    assert fal.state.count("submit") == 2 and fal.state.count("upload") == 2
    assert "2 of 2 from cache (no charge)" in statuses[-1]


def test_upload_cache_survives_a_restart(fal):
    image = sample_image(64, 48, seed=22)
    run_node("FalSharpen", image=image)
    restart()
    run_node("FalSharpen", image=image, sharpen_radius=3)   # a new request, same pixels
    assert fal.state.count("upload") == 1 and fal.state.count("submit") == 2


def test_a_dead_remembered_upload_url_is_uploaded_again_once(fal):
    image = sample_image(64, 48, seed=31)
    run_node("FalSharpen", image=image)
    fal.server.files.forget_all()            # fal no longer has the uploaded file
    images, _, _ = run_node("FalSharpen", image=image, sharpen_radius=2)
    assert images.shape[0] == 1
    assert fal.state.count("upload") == 2 and fal.state.count("submit") == 3
    run_node("FalSharpen", image=image, sharpen_radius=3)   # the new URL is remembered
    assert fal.state.count("upload") == 2


def test_refresh_calls_fal_once_and_overwrites(fal):
    image = sample_image(64, 48, seed=23)
    run_node("FalColorCorrection", image=image)
    refresh = FalSettings(cache="refresh")
    run_node("FalColorCorrection", image=image, settings=refresh)
    assert fal.state.count("submit") == 2
    restart()
    run_node("FalColorCorrection", image=image)
    assert fal.state.count("submit") == 2


def test_cached_result_does_not_depend_on_fal_urls(fal):
    image = sample_image(64, 48, seed=24)
    first, _, _ = run_node("FalFaceEnhancement", image=image)
    fal.state.add_fault("file", "expired", times=-1)     # every fal file URL is now dead
    restart()
    again, _, _ = run_node("FalFaceEnhancement", image=image)
    assert torch.equal(first, again)
    assert fal.state.count("submit") == 1


def test_entry_whose_files_are_gone_is_a_miss(fal, tmp_path):
    image = sample_image(64, 48, seed=25)
    run_node("FalFaceEnhancement", image=image)
    for file in (tmp_path / "cache" / "files").iterdir():
        file.unlink()
    restart()
    images, _, _ = run_node("FalFaceEnhancement", image=image)
    assert images.shape[0] == 1
    assert fal.state.count("submit") == 2


def test_corrupt_database_degrades_to_a_miss_with_one_warning(fal, tmp_path, caplog):
    image = sample_image(64, 48, seed=26)
    run_node("FalColorCorrection", image=image)
    restart()
    (tmp_path / "cache" / "index.sqlite").write_bytes(b"this is not a database" * 100)
    for name in ("index.sqlite-wal", "index.sqlite-shm"):
        (tmp_path / "cache" / name).unlink(missing_ok=True)
    images, _, _ = run_node("FalColorCorrection", image=image)
    images2, _, _ = run_node("FalColorCorrection", image=image, seed=9)
    assert images.shape[0] == 1 and images2.shape[0] == 1
    assert fal.state.count("submit") == 3
    warnings = [r for r in caplog.records if "cache" in r.getMessage() and r.levelname == "WARNING"]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]


def test_locked_database_is_a_miss_not_a_failure(fal, tmp_path):
    image = sample_image(64, 48, seed=27)
    run_node("FalColorCorrection", image=image)
    restart()
    lock = sqlite3.connect(tmp_path / "cache" / "index.sqlite", isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        images, _, _ = run_node("FalColorCorrection", image=image)
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    assert images.shape[0] == 1 and fal.state.count("submit") == 2


def test_two_concurrent_identical_prompts_make_one_fal_call(fal):
    fal.state.latency_s = 0.5
    image = sample_image(64, 48, seed=28)
    outputs = []

    def prompt():  # each ComfyUI prompt runs on its own thread's fresh loop
        outputs.append(run_node("FalColorCorrection", image=image, seed=4)[0])

    threads = [threading.Thread(target=prompt) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(outputs) == 2 and torch.equal(outputs[0], outputs[1])
    assert fal.state.count("submit") == 1


def test_identical_frames_in_one_batch_are_one_call(fal):
    frame = sample_image(48, 48, seed=29)
    images, _, _ = run_node("FalSharpen", image=torch.cat([frame, frame, frame]))
    assert images.shape[0] == 3
    assert fal.state.count("submit") == 1


# -- prices, estimate, guard, ledger ---------------------------------------------

def test_prices_come_from_fal_and_fall_back_with_a_warning(fal, caplog):
    key = "price-test-key-1234"
    assert asyncio.run(pricing.prices.refresh(key, fal.base_url)) is True
    flux = pricing.prices.price("fal-ai/flux/dev/image-to-image")
    assert (flux.unit_price, flux.unit, flux.source) == (0.03, "megapixel", "fal")
    pricing.prices.clear()   # a restart: the prices fetched today come back from disk
    assert pricing.prices.fresh() and pricing.prices.price("fal-ai/flux/dev/image-to-image").source == "fal"
    pricing.prices.path().unlink()
    pricing.prices.clear()
    fal.state.add_fault("pricing", 500, times=1)
    assert asyncio.run(pricing.prices.refresh(key, fal.base_url)) is False
    fallback = pricing.prices.price("fal-ai/flux/dev/image-to-image")
    assert fallback.source == "fallback" and fallback.unit_price == 0.025
    assert any("prices could not be fetched" in r.getMessage() for r in caplog.records)


def test_estimate_for_batch_of_three_with_two_images_each(fal):
    asyncio.run(pricing.prices.refresh("price-test-key-1234", fal.base_url))
    endpoint = BY_NODE["FalFluxDevImageToImage"]
    batch = torch.rand(3, 1000, 1000, 3)          # 1 MP each
    outcome = asyncio.run(run_endpoint(endpoint, {"num_images": 2}, [batch], FalSettings()))
    assert outcome.images.shape[0] == 6
    assert outcome.estimated_usd == pytest.approx(6 * 0.03)
    per_image = pricing.estimate(COLOR, [({"num_images": 2}, 1.0)] * 3,
                                 pricing.prices.price(COLOR))
    assert per_image.total == pytest.approx(6 * 0.05) and per_image.exact


def test_spend_guard_blocks_before_any_request(fal):
    asyncio.run(pricing.prices.refresh("price-test-key-1234", fal.base_url))
    fal.reset()
    guarded = FalSettings(max_usd_per_prompt=0.12)
    with pytest.raises(FalNodeError) as err:
        run_node("FalColorCorrection", image=sample_image(32, 32, batch=3), settings=guarded)
    message = str(err.value)
    assert message.startswith("fal Color Correction: the spend guard stopped this run")
    assert "$0.150" in message and "$0.12 limit" in message and "max_usd_per_prompt" in message
    assert fal.state.log == []
    run_node("FalColorCorrection", image=sample_image(32, 32, batch=2), settings=guarded)
    session = FalSettings(max_usd_per_session=0.12)
    with pytest.raises(FalNodeError, match="this session"):
        run_node("FalColorCorrection", image=sample_image(32, 32, seed=5), settings=session)


def test_cached_items_cost_nothing_and_the_ledger_says_so(fal):
    image = sample_image(32, 32, seed=30)
    run_node("FalColorCorrection", image=image)
    run_node("FalColorCorrection", image=image)
    entries = pricing.ledger.entries()
    assert [e.cached for e in entries] == [False, True]
    assert entries[0].estimated_usd > 0 and entries[1].estimated_usd == 0
    report, total = pack.NODE_CLASS_MAPPINGS["FalSpend"]().report()["result"]
    assert "cached (no charge)" in report and "billed" in report
    assert total == pytest.approx(entries[0].estimated_usd)


# -- never pay twice, even across a crash ------------------------------------------

CRASHING_RUN = """
import sys
sys.path.insert(0, {root!r}); sys.path.insert(0, {tests!r})
from conftest import run_node, sample_image
run_node("FalColorCorrection", image=sample_image(64, 48, seed=41), seed=7)
"""


def test_a_run_after_a_crash_picks_up_the_job_instead_of_paying_again(fal, capture_logs):
    """ComfyUI killed after its submit: the next process resumes the same fal request."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    fal.state.latency_s = 3.0
    tests = Path(__file__).resolve().parent
    script = CRASHING_RUN.format(root=str(tests.parent), tests=str(tests))
    crashing = subprocess.Popen([sys.executable, "-c", script], env=dict(os.environ))
    try:
        deadline = time.monotonic() + 60
        # The journal is written right after the submit, before the status stream opens.
        while fal.state.count("status_stream") == 0 and time.monotonic() < deadline:
            assert crashing.poll() is None, "the first run ended on its own"
            time.sleep(0.02)
        assert fal.state.count("submit") == 1
    finally:
        crashing.kill()                       # no cancel, no cleanup: a crash
        crashing.wait()
    restart()
    images, _, _ = run_node("FalColorCorrection", image=sample_image(64, 48, seed=41), seed=7)
    assert images.shape == (1, 48, 64, 3)
    assert fal.state.count("submit") == 1, "the job was paid for twice"
    assert fal.state.count("cancel") == 0
    assert any("picking up request" in line for line in capture_logs)
    assert caches_mod.caches.in_flight_request(fal_request_key(fal)) is None
    # Today's spend holds at least fal's bill: the process that sent it entered its estimate
    # (at the price it knew, $0.04 shipped), the one that picked it up adds fal's bill.
    [entry] = pricing.ledger.entries()
    assert entry.billed_usd == pytest.approx(billing.total_usd(fal.state))
    assert entry.billed_usd > 0
    assert server_settings.spent_today() >= entry.billed_usd


def test_a_journalled_request_fal_no_longer_knows_is_submitted_anew(fal):
    image = sample_image(64, 48, seed=42)
    run_node("FalColorCorrection", image=image, seed=8)
    key = fal_request_key(fal)
    caches_mod.caches.note_submitted(key, "fal-ai/image-editing/color-correction", "gone-123")
    restart()
    run_node("FalColorCorrection", image=image, seed=8, settings=FalSettings(cache="refresh"))
    assert fal.state.count("submit") == 2
    assert caches_mod.caches.in_flight_request(key) is None


def fal_request_key(fal) -> str:
    """The request key the runtime gave the last submitted item (from the result cache)."""
    disk = caches_mod.caches.disk()
    rows = disk._db().execute("SELECT key FROM results ORDER BY created DESC").fetchall()
    return rows[0][0]


# -- the files on disk -------------------------------------------------------------

def test_cache_folder_and_files_are_private_from_the_start(fal, monkeypatch, tmp_path):
    """Only FAL_KEY in use (no key file ever written): the pack's folder, the index (it
    holds the upload URLs of the user's images) and result files are the user's only."""
    import os
    import stat
    pack_dir = tmp_path / "user" / "comfyui-fal-edit"
    monkeypatch.setenv("COMFYUI_FAL_CACHE_DIR", str(pack_dir / "cache"))
    restart()
    run_node("FalColorCorrection", image=sample_image(64, 48, seed=41))
    modes = {}
    for folder, dirs, files in os.walk(pack_dir):
        modes[folder] = stat.S_IMODE(os.stat(folder).st_mode)
        for name in files:
            modes[os.path.join(folder, name)] = stat.S_IMODE(os.stat(os.path.join(folder,
                                                                                  name)).st_mode)
    assert any(p.endswith("index.sqlite") for p in modes)
    assert any("/files/" in p for p in modes)
    assert {p: m for p, m in modes.items() if m & 0o077} == {}


def test_two_writers_of_the_same_entry_do_not_share_a_temp_file(tmp_path, monkeypatch):
    """Two processes (two stores on one folder) write one entry at once: each has written
    its temporary file before either renames it."""
    import os
    stores = [caches_mod.DiskStore(tmp_path / "cache") for _ in range(2)]
    blob = b"\x89PNG\r\n\x1a\n" + b"x" * 1000
    both_written = threading.Barrier(2, timeout=5)
    rename = os.replace

    def replace_when_both_wrote(src, dst):
        both_written.wait()
        return rename(src, dst)

    monkeypatch.setattr(os, "replace", replace_when_both_wrote)
    threads = [threading.Thread(target=s.put_result, args=("k" * 64, COLOR, {"urls": [],
               "flagged": [False]}, [blob], ["png"])) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    monkeypatch.setattr(os, "replace", rename)
    assert [s._broken for s in stores] == [False, False]
    assert stores[0].get_result("k" * 64)[1] == [blob]
    assert [p.name for p in (tmp_path / "cache" / "files").iterdir()] == ["k" * 40 + "-0.png"]
    for store in stores:
        store.close()


def test_a_padded_result_is_stored_as_its_pixels(fal, tmp_path):
    """A 64x64 PNG with 30 MB after its end decodes fine; the cache keeps what was decoded."""
    import io

    import numpy as np
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(buf, "PNG")
    padded = buf.getvalue() + b"\0" * (30 << 20)
    frame = np.full((64, 64, 3), 90, np.uint8)
    result = caches_mod.ItemResult([frame], ["https://v3.fal.media/files/x.png"], [False])
    caches_mod.caches.remember_result("p" * 64, COLOR, result, [padded])
    stored = sum(p.stat().st_size for p in (tmp_path / "cache" / "files").iterdir())
    assert stored < 100_000
    restart()
    again = caches_mod.caches.result("p" * 64)
    assert again is not None and np.array_equal(again.frames[0], frame)


@pytest.mark.parametrize("bad", [-5.0, float("nan"), float("inf"), "free", True])
def test_a_negative_or_non_finite_price_is_refused(fal, monkeypatch, caplog, bad):
    from fal_emulator.server import PRICES
    monkeypatch.setitem(PRICES, COLOR, (bad, "image"))
    assert asyncio.run(pricing.prices.refresh("price-test-key-1234", fal.base_url)) is False
    assert pricing.prices.price(COLOR).source == "fallback"
    assert not pricing.prices.path().exists()
    assert any("negative or not a number" in r.getMessage() or "ValueError" in r.getMessage()
               for r in caplog.records)
    # Nor from a prices.json someone edited.
    pricing.prices.path().parent.mkdir(parents=True, exist_ok=True)
    pricing.prices.path().write_text('{"fetched_at": 9e15, "prices": {"%s": '
                                     '{"unit_price": -5, "unit": "image"}}}' % COLOR)
    pricing.prices.clear()
    assert pricing.prices.price(COLOR).source == "fallback"



def test_runs_after_a_failed_price_fetch_ask_once_and_warn_once(fal, caplog):
    """One back-off for the whole process: after a failure no new fetch for 10 minutes,
    whichever run (or route) asks."""
    fal.state.add_fault("pricing", 503, times=100)
    for seed in range(4):
        run_node("FalColorCorrection", image=sample_image(32, 32, seed=60 + seed))
    assert fal.state.count("pricing") == 1
    warnings = [r for r in caplog.records if "prices could not be fetched" in r.getMessage()]
    assert len(warnings) == 1


# -- what the owner decides on the server ------------------------------------------

def test_the_owners_ceiling_holds_whatever_the_workflow_says(fal):
    """A shared workflow with no limit of its own (0) and a batch of 500: the owner's
    default $5 a prompt stops it before any upload; the owner can lower or raise it."""
    from comfyui_fal_edit.nodes import server_settings
    asyncio.run(pricing.prices.refresh("price-test-key-1234", fal.base_url))
    fal.reset()
    no_limit = FalSettings(max_usd_per_prompt=0.0, max_usd_per_session=0.0)
    with pytest.raises(FalNodeError) as err:
        run_node("FalColorCorrection", image=sample_image(8, 8, batch=500), settings=no_limit)
    message = str(err.value)
    assert "$25.000" in message and "$5.00 limit" in message and "Settings → fal" in message
    assert fal.state.log == []
    server_settings.update({"max_usd_per_prompt": 0.1})
    generous = FalSettings(max_usd_per_prompt=100.0)       # a workflow can only lower it
    with pytest.raises(FalNodeError, match=r"\$0.10 limit; this ComfyUI's owner can raise"):
        run_node("FalColorCorrection", image=sample_image(8, 8, batch=3), settings=generous)
    assert fal.state.log == []
    with pytest.raises(FalNodeError, match=r"\$0.07 limit; raise max_usd_per_prompt"):
        run_node("FalColorCorrection", image=sample_image(8, 8, batch=2),
                 settings=FalSettings(max_usd_per_prompt=0.07))
    run_node("FalColorCorrection", image=sample_image(8, 8, batch=2), settings=generous)
    assert fal.state.count("submit") == 2


def test_the_daily_ceiling_counts_across_a_restart(fal):
    from comfyui_fal_edit.nodes import server_settings
    asyncio.run(pricing.prices.refresh("price-test-key-1234", fal.base_url))
    server_settings.update({"max_usd_per_day": 0.12})
    run_node("FalColorCorrection", image=sample_image(8, 8, batch=2, seed=70))   # $0.10
    restart()
    pricing.ledger.clear()                                                      # a new session
    with pytest.raises(FalNodeError, match=r"spent or under way in today would pass the \$0.12"):
        run_node("FalColorCorrection", image=sample_image(8, 8, seed=71))
    assert server_settings.spent_today() == pytest.approx(0.10)


def test_a_result_from_one_server_never_answers_for_another(fal):
    """The cache and the identical-request check key on the server too: what the emulator
    (or anyone) answered never comes back 'from cache' in a run against another server."""
    from comfyui_fal_edit.nodes import server_settings
    from fal_emulator import FalEmulator
    image = sample_image(32, 32, seed=72)
    with FalEmulator() as other:
        server_settings.update({"allowed_servers": [other.base_url]})
        run_node("FalColorCorrection", image=image, settings=FalSettings(base_url=other.base_url))
        assert other.state.count("submit") == 1
    run_node("FalColorCorrection", image=image)
    assert fal.state.count("submit") == 1
    run_node("FalColorCorrection", image=image)            # same server: from cache
    assert fal.state.count("submit") == 1


def test_the_cache_size_is_the_owners(fal):
    from comfyui_fal_edit.nodes import server_settings
    inputs = pack.NODE_CLASS_MAPPINGS["FalSettings"].INPUT_TYPES()["required"]
    assert "cache_max_gb" not in inputs
    run_node("FalColorCorrection", image=sample_image(32, 32, seed=73))
    disk = caches_mod.caches.disk()
    assert disk.max_bytes == 2 * 1024**3
    server_settings.update({"cache_max_gb": 0.5})
    assert disk.max_bytes == 512 * 1024**2


def test_a_price_refresh_on_another_prompts_loop_is_left_to_it(fal, monkeypatch):
    """Prompts run on their own threads and loops: one started the refresh, another must
    neither start a second one nor await a task of a loop that is not its own."""
    release = threading.Event()
    calls = []

    async def slow_refresh(key, destination):
        calls.append(key)
        while not release.is_set():
            await asyncio.sleep(0.01)
        return True

    monkeypatch.setattr(pricing.prices, "refresh", slow_refresh)
    started = threading.Event()

    async def first_prompt():
        task = pricing.price_refresh.start("key-a-12345678", None)
        started.set()
        await task

    thread = threading.Thread(target=asyncio.run, args=(first_prompt(),), daemon=True)
    thread.start()
    assert started.wait(5)

    async def second_prompt():
        return pricing.price_refresh.start("key-b-12345678", None)

    try:
        assert asyncio.run(second_prompt()) is None
    finally:
        release.set()
        thread.join(5)
    assert calls == ["key-a-12345678"]


def test_the_calls_of_a_list_input_share_the_ceiling(fal):
    """A list input runs the node once per item, all at once on one loop: each call must
    count what the others are about to spend, or each passes on the same headroom."""
    from comfyui_fal_edit.nodes import server_settings
    asyncio.run(pricing.prices.refresh("price-test-key-1234", fal.base_url))
    server_settings.update({"max_usd_per_prompt": 0.12})
    fal.state.latency_s = 0.3
    node = pack.NODE_CLASS_MAPPINGS["FalColorCorrection"]()

    async def list_input():
        return await asyncio.gather(*(node.run(image=sample_image(8, 8, seed=80 + i))
                                      for i in range(4)), return_exceptions=True)

    outcomes = asyncio.run(list_input())
    refused = [o for o in outcomes if isinstance(o, FalNodeError)]
    assert len(refused) == 2 and all("$0.12 limit" in str(o) for o in refused)
    assert fal.state.count("submit") == 2
    assert pricing.ledger.spent() == pytest.approx(0.10) and pricing.ledger.held() == 0
